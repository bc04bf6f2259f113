"""The claims ledger (docs/claims.md) cannot silently rot: every relative link in it (pages, anchors,
figures) resolves, every study page links back to it and has a row in it, every row has a verdict,
and every page under docs/ is either a study page or a reference/tool page (a new or renamed page
fails until it is put in one list). No training; reads markdown only."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, 'docs')
LEDGER = os.path.join(DOCS, 'claims.md')

# Pages that report a study (a measurement set beside a claim): each needs rows in the ledger.
STUDY_PAGES = {
    'pe_study.md',    # positional encodings (CPU study), WSD decay branches
    'pe_lengen.md',   # length generalization from scratch (Ruoss, Kazemnejad)
    'variants.md',    # Differential Transformer / nGPT / DiffNGPT (variants_compare)
    'diffinput.md',   # differential input embeddings (diffinput_quick)
    'numeric.md',     # softmax vs linear attention on numeric sequences
    'mqar.md',        # associative recall (Zoology)
    'encdec.md',      # encoder-decoder vs decoder-only, the seed project's predictions
    'muon.md',        # Muon vs AdamW
    'dpo.md',         # DPO post-training
}
# Reference and tool pages: no claim from a source is tested on them, so no rows.
NOT_STUDY_PAGES = {
    'usage.md',        # usage reference
    'reliability.md',  # resume, signals, error handling
    'speed.md',        # measured times and bench.py speeds, no source claim
    'hf.md',           # Hugging Face interop; the logit check is a correctness test
    'explorer.md',     # attention explorer tool; screenshots are pictures, not measurements
}
VERDICTS = ('reproduced', 'not at this scale', 'contradicted', 'not yet tested')

LINK = re.compile(r'\]\(([^)\s]+)\)')


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation dropped (word characters, '-' and ' ' kept),
    spaces to '-'."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(path):
    """Every heading anchor of a markdown file (outside code fences), duplicates numbered as GitHub does."""
    seen, out, fence = {}, set(), False
    for line in read(path).splitlines():
        if line.lstrip().startswith('```'):
            fence = not fence
        m = None if fence else re.match(r'#{1,6} (.*)', line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f'{s}-{seen[s]}')
            seen[s] = seen.get(s, 0) + 1
    return out


def relative_links(text):
    return [t for t in LINK.findall(text) if not re.match(r'[a-z]+:', t)]


def table_rows(text):
    """(header cells, row cells) for every data row of every table."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith('|'):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if header is None:
            header = [c.lower() for c in cells]
        elif not set(''.join(cells)) <= set('-: '):
            rows.append((header, cells))
    return rows


def test_every_docs_page_is_classified():
    pages = {f for f in os.listdir(DOCS) if f.endswith('.md')} - {'claims.md'}
    assert not STUDY_PAGES & NOT_STUDY_PAGES
    assert pages == STUDY_PAGES | NOT_STUDY_PAGES, (
        f'unclassified: {sorted(pages - STUDY_PAGES - NOT_STUDY_PAGES)}, '
        f'gone: {sorted((STUDY_PAGES | NOT_STUDY_PAGES) - pages)}')


def test_ledger_links_resolve():
    links = relative_links(read(LEDGER))
    assert len(links) > 20
    bad = []
    for target in links:
        path, _, anchor = target.partition('#')
        full = os.path.normpath(os.path.join(DOCS, path)) if path else LEDGER
        if not os.path.isfile(full):
            bad.append(f'{target}: no file {os.path.relpath(full, ROOT)}')
        elif anchor and full.endswith('.md') and anchor not in anchors(full):
            bad.append(f'{target}: no heading with anchor #{anchor}')
    assert not bad, '\n'.join(bad)


def test_every_study_page_links_back():
    missing = [p for p in sorted(STUDY_PAGES) if '](claims.md)' not in read(os.path.join(DOCS, p))]
    assert not missing, f'study pages without a link to claims.md: {missing}'


def test_every_study_page_has_a_row():
    pages = set()
    for header, cells in table_rows(read(LEDGER)):
        assert 'page' in header, header
        pages |= {t.partition('#')[0] for t in relative_links(cells[header.index('page')])}
    missing = sorted(STUDY_PAGES - pages)
    assert not missing, f'study pages with no row in the ledger: {missing}'


def test_every_row_has_a_source_number_and_verdict():
    rows = table_rows(read(LEDGER))
    assert len(rows) >= 25
    for header, cells in rows:
        row = dict(zip(header, cells))
        assert set(row) >= {'claim', 'source', "source's number", 'verdict', 'page'}, header
        assert all(row[k] for k in ('claim', 'source', "source's number", 'verdict')), cells
        verdict = row['verdict']
        assert any(v in verdict for v in VERDICTS), f'no verdict in: {cells[0]}'
        if verdict.startswith('not yet tested'):
            assert 'issue' in verdict, f'"not yet tested" must name the issue (or "no open issue"): {cells[0]}'


def test_readme_links_the_ledger():
    readme = os.path.join(ROOT, 'README.md')
    assert '](docs/claims.md)' in read(readme)
    assert os.path.getsize(readme) <= 25 * 1024


def test_slug_and_anchor_check_can_fail(tmp_path):
    """The anchor check itself: GitHub's slugs, and a renamed heading is caught."""
    assert slug('Study: `./launcher.sh encdec_study` (3 seeds, mean ± std)') == \
        'study-launchersh-encdec_study-3-seeds-mean--std'
    assert slug('Step time, linear / softmax (bench.py)') == 'step-time-linear--softmax-benchpy'
    p = tmp_path / 'x.md'
    p.write_text('# Title\n```\n# not a heading\n```\n## What it shows\n## What it shows\n')
    assert anchors(str(p)) == {'title', 'what-it-shows', 'what-it-shows-1'}
