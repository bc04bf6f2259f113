"""Encoder-decoder (n_encoder_layer > 0), objective='seq2seq', its prepare scripts and transfer."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
import checkpoint
from model import GPT, GPTConfig, encdec_state_from_decoder_only, encode_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDS = {'pad': 61, 'sep': 62, 'eot': 63}


def encdec(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, n_encoder_layer=2)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


FLAVOURS = [dict(), dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', qk_norm=True, bias=False),
            dict(pos_emb='sinusoidal')]


@pytest.mark.parametrize('kw', FLAVOURS)
def test_encoder_bidirectional_decoder_causal(kw):
    m = encdec(**kw)
    g = torch.Generator().manual_seed(1)
    src, idx = torch.randint(0, 60, (2, 9), generator=g), torch.randint(0, 60, (2, 8), generator=g)
    mem = encode_source(m, src)['mem']
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] + 1) % 60            # the last source token...
    mem2 = encode_source(m, src2)['mem']
    assert (mem[:, 0] - mem2[:, 0]).abs().max() > 1e-4  # ...changes the first position: bidirectional
    logits = m(idx, src=src)[0]
    idx2 = idx.clone()
    idx2[:, 5] = (idx2[:, 5] + 1) % 60
    logits2 = m(idx2, src=src)[0]
    assert torch.allclose(logits[:, :5], logits2[:, :5], atol=1e-6)  # decoder: the past ignores the future
    assert (logits[:, 5:] - logits2[:, 5:]).abs().max() > 1e-4


def test_source_reaches_decoder_only_through_cross_attention():
    m = encdec()
    g = torch.Generator().manual_seed(2)
    src, src2 = torch.randint(0, 60, (2, 2, 9), generator=g)
    idx = torch.randint(0, 60, (2, 7), generator=g)
    assert (m(idx, src=src)[0] - m(idx, src=src2)[0]).abs().max() > 1e-4
    with torch.no_grad():
        for block in m.h:  # silence every cross-attention output
            block.cross.c_proj.weight.zero_()
            block.cross.c_proj.bias.zero_()
    assert torch.allclose(m(idx, src=src)[0], m(idx, src=src2)[0], atol=1e-6)


@pytest.mark.parametrize('kw', FLAVOURS)
def test_source_padding_changes_nothing(kw):
    m = encdec(**kw)
    g = torch.Generator().manual_seed(3)
    short, long_ = torch.randint(0, 60, (1, 5), generator=g), torch.randint(0, 60, (1, 11), generator=g)
    idx = torch.randint(0, 60, (2, 6), generator=g)
    batch = torch.full((2, 11), -1)
    batch[0, :5], batch[1] = short[0], long_[0]
    out = m(idx, src=batch)[0]
    assert torch.allclose(out[0], m(idx[:1], src=short)[0][0], atol=1e-5)
    assert torch.allclose(out[1], m(idx[1:], src=long_)[0][0], atol=1e-5)
    with m.record() as rec:
        m(idx, src=batch)
    assert rec['layer0.cross'][0, :, :, 5:].abs().max() == 0  # no attention on padding
    assert rec['enc0.attn'].shape == (2, 2, 11, 11) and rec['layer1.cross'].shape == (2, 2, 6, 11)


@pytest.mark.parametrize('kw', FLAVOURS[:2])
def test_cached_generation_equals_uncached(kw):
    m = encdec(**kw)
    g = torch.Generator().manual_seed(4)
    src = torch.full((2, 10), -1)
    src[0, :7] = torch.randint(0, 60, (7,), generator=g)
    src[1] = torch.randint(0, 60, (10,), generator=g)
    x = torch.randint(0, 60, (2, 3), generator=g)
    for bias in (0, 4):  # a peaked model makes greedy choices unambiguous
        with torch.no_grad():
            m.lm_head.weight.mul_(1 + bias)
        out = m.generate(x, 12, temperature=0, src=src)
        ref = x
        for _ in range(12):
            ref = torch.cat((ref, m(ref, src=src)[0][:, -1].argmax(-1, keepdim=True)), dim=1)
        assert torch.equal(out, ref)


def fake_records(tmp_path, n=6):
    rng = np.random.default_rng(0)
    recs = [{'src': rng.integers(0, 60, rng.integers(1, 9)), 'tgt': rng.integers(0, 60, rng.integers(1, 7))} for _ in range(n)]
    path = str(tmp_path / 'seq2seq_val.bin')
    data.write_records(path, recs, ['src', 'tgt'], 64)
    r = data.read_records(path)
    r.ids = IDS
    return recs, r


@pytest.mark.parametrize('form', data.SEQ2SEQ_FORMS)
def test_seq2seq_loss_counts_only_target_tokens(tmp_path, form):
    recs, r = fake_records(tmp_path)
    b = next(data.iter_seq2seq_eval_batches(r, form, 32, 6))
    for i, rec in enumerate(recs):  # exactly the target and its end token carry loss, in order
        assert b['y'][i][b['y'][i] != -100].tolist() == list(rec['tgt']) + [IDS['eot']]
    assert ('src' in b) == (form == 'encdec')
    m = encdec() if form == 'encdec' else encdec(n_encoder_layer=0)
    logits, loss = m(b['x'], b['y'], src=b.get('src'))
    mask = b['y'] != -100
    ref = torch.nn.functional.cross_entropy(logits[mask], b['y'][mask])
    assert torch.allclose(loss, ref, atol=1e-6)
    if form != 'encdec':  # the source is context, never a target; and the loss sees the source
        b2 = next(data.iter_seq2seq_eval_batches(r, form, 32, 6))
        k = 1 if form == 'lm' else 0
        b2['x'][:, k] = (b2['x'][:, k] + 1) % 60
        assert torch.equal(b2['y'], b['y'])


def test_seq2seq_truncation_keeps_target(tmp_path):
    x, y, s = data.seq2seq_row(list(range(20)), [40, 41, 42], 'concat', 10, IDS)
    assert len(x) == 10 and [t for t in y if t != -100] == [40, 41, 42, IDS['eot']] and x[:5] == [14, 15, 16, 17, 18]
    x, y, s = data.seq2seq_row(list(range(20)), [40, 41, 42], 'encdec', 10, IDS)
    assert s == list(range(10, 20)) and x == [IDS['sep'], 40, 41, 42] and y == [40, 41, 42, IDS['eot']]


def test_transfer_copies_exactly_the_listed_tensors():
    torch.manual_seed(5)
    dec = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, qk_norm=True))
    m = encdec(n_encoder_layer=3, qk_norm=True)
    state = dec.state_dict()
    extra = encdec_state_from_decoder_only(state, m.config)
    loaded, skipped, fresh = checkpoint.load_matching(m, {**state, **extra})
    own = m.state_dict()
    assert not skipped
    assert set(fresh) == {k for k in own if '.cross.' in k or '.ln_x.' in k}  # only cross-attention is new
    for k in loaded:
        src_key = k if k in state else ('ln_f.' + k[len('ln_enc.'):] if k.startswith('ln_enc.') else
                                        'h.{}.{}'.format(int(k.split('.')[1]) % 2, k.split('.', 2)[2]))
        assert torch.equal(own[k], state[src_key]), k
    assert {k.split('.')[1] for k in loaded if k.startswith('enc.')} == {'0', '1', '2'}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')


def run_prepare(script, *args):
    r = subprocess.run([sys.executable, f'prepare/{script}.py', *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_tiny_textbooks_midpoint_split_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    words = 'the energy of a cell comes from food and light in plants'.split()
    docs = [' '.join(rng.choice(words, n)) for n in (2, 3, 40, 60, 80, 100, 300, 50, 70, 90, 45, 65)]
    write_jsonl(tmp_path / 'src' / 'train.jsonl', [{'text': 'web text', 'textbook': d, 'idx': i} for i, d in enumerate(docs)])
    write_jsonl(tmp_path / 'src' / 'test.jsonl', [{'text': 'x', 'textbook': docs[5], 'idx': 99}])
    out = str(tmp_path / 'tb')
    run_prepare('tiny_textbooks', f'--source={tmp_path / "src"}', f'--out_dir={out}', '--tokenizer=byte',
                '--min_doc_tokens=20', '--max_doc_tokens=200', '--val_fraction=0.2')
    meta = data.load_meta(out)
    assert set(meta['splits']) == set(meta['seq2seq']) == {'train', 'val', 'test'}
    tok = data.get_tokenizer(meta['tokenizer'])
    pieces = []
    for split in ('train', 'val', 'test'):
        r = data.read_records(data.seq2seq_path(out, split))
        for i in range(len(r)):
            assert abs(len(r[i]['src']) - len(r[i]['tgt'])) <= 1 and len(r[i]['src']) <= len(r[i]['tgt'])  # midpoint
            assert len(r[i]['src']) + len(r[i]['tgt']) <= 200
            pieces.append(tok.decode(np.concatenate([r[i]['src'], r[i]['tgt']])))
    kept = [d for d in docs if len(d.encode()) >= 20]
    assert len(kept) == 10  # the two very short documents are dropped
    # every kept document is the concatenation of its pieces; long ones became several pieces
    joined = ''.join(pieces)
    assert all(d in joined for d in kept) and len(joined) == sum(len(d) for d in kept) + len(docs[5])
    assert len(pieces) == sum(-(-len(d.encode()) // 200) for d in kept + [docs[5]])
    lm = ''.join(tok.decode(np.asarray(s)) for sp in ('train', 'val', 'test') for s in data.open_split(out, sp))
    assert lm.count('<|endoftext|>') == 11  # raw LM shards hold the same kept documents, whole


def test_samsum_records_round_trip_and_train_with_transfer(tmp_path):
    names = ['Anna', 'Tom', 'Eve', 'Bob']
    rows = lambda n, o: [{'id': str(o + i), 'dialogue': f"{names[i % 4]}: see you at {i} pm?\r\n{names[(i + 1) % 4]}: ok",
                          'summary': f"{names[i % 4]} and {names[(i + 1) % 4]} meet at {i} pm."} for i in range(n)]
    train_rows = rows(40, 0) + [{'id': 'x', 'dialogue': '', 'summary': 'empty dialogue'}]
    for split, rs in (('train', train_rows), ('validation', rows(8, 100)), ('test', rows(8, 200))):
        write_jsonl(tmp_path / 'src' / f'{split}.jsonl', rs)
    root = tmp_path / 'data'
    out = str(root / 'ss')
    run_prepare('samsum', f'--source={tmp_path / "src"}', f'--out_dir={out}', '--vocab_size=300')
    meta = data.load_meta(out)
    tok = data.get_tokenizer(meta['tokenizer'])
    r = data.read_records(data.seq2seq_path(out, 'train'))
    assert len(r) == 40
    for i, row in enumerate(rows(40, 0)):
        assert tok.decode(r[i]['src']) == row['dialogue'].replace('\r\n', '\n')
        assert tok.decode(r[i]['tgt']) == row['summary']
    # objective='seq2seq': decoder-only, then an encoder-decoder initialized from it
    base = [sys.executable, 'train.py', '--data=ss', f'--data_root={root}', f'--out_dir={tmp_path / "out"}',
            '--objective=seq2seq', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=48', '--batch_size=8',
            '--max_iters=30', '--eval_interval=30', '--eval_iters=1', '--log_tensorboard=False', '--warmup_iters=3',
            '--learning_rate=3e-3']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r1 = subprocess.run(base + ['--run_name=dec'], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r1.returncode == 0, r1.stderr[-2000:]
    losses = [json.loads(l)['loss'] for l in open(tmp_path / 'out' / 'dec' / 'metrics.jsonl') if '"train"' in l]
    assert losses[-1] < losses[0]
    r2 = subprocess.run(base + ['--run_name=encdec', '--n_encoder_layer=2', '--max_iters=2', '--warmup_iters=2',
                                f'--init_from={tmp_path / "out" / "dec"}'], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env=env)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert 'enc.0 <- h.0, enc.1 <- h.1, ln_enc <- ln_f' in r2.stdout
    assert 'h.0.cross.c_attn.weight' in r2.stdout and 'not in this model: none' in r2.stdout
    # sample.py --src: the encoder reads the source; without it, one clear line
    s = subprocess.run([sys.executable, 'sample.py', f'--ckpt={tmp_path / "out" / "encdec"}',
                        '--src=Anna: see you at 3 pm?\nTom: ok', '--max_new_tokens=5', '--temperature=0'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert s.returncode == 0 and s.stdout.strip(), s.stderr
    s = subprocess.run([sys.executable, 'sample.py', f'--ckpt={tmp_path / "out" / "encdec"}', '--max_new_tokens=5'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert s.returncode == 2 and 'pass the source text with --src' in s.stderr


# ----------------------------------------------------------------------------- ./launcher.sh encdec_study

def run_study(tmp, *args):
    """analysis/encdec_study.py with everything it writes under tmp (data, runs, figures)."""
    return subprocess.run([sys.executable, 'analysis/encdec_study.py', 'config/encdec_study.py', f'--out_dir={tmp / "out"}',
                           f'--data_root={tmp / "data"}', f'--figures_dir={tmp / "fig"}', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200, env={**os.environ, 'OMP_NUM_THREADS': '1'})


@pytest.mark.parametrize('arg,word', [('--seeds=[]', 'seeds'), ('--seeds=[1,1]', 'seeds'), ("--seeds=[1,'a']", 'seeds'),
                                      ('--seed=1', 'seeds'), ('--jobs=0', 'jobs')])
def test_encdec_study_bad_settings_exit_2_one_line_nothing_written(tmp_path, arg, word):
    r = run_study(tmp_path, arg)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope='module')
def quick_study(tmp_path_factory):
    """The whole study at --quick=True (2 seeds, tiny models), run twice: the second run must reuse the first."""
    tmp = tmp_path_factory.mktemp('encdec_study')
    first = run_study(tmp, '--quick=True')
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = tmp / 'out' / 'quick'
    mtimes = {p: p.stat().st_mtime for p in out.glob('runs/*/metrics.jsonl')}
    with open(out / 'encdec_study.json') as f:
        res1 = json.load(f)
    second = run_study(tmp, '--quick=True')
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return tmp, out, first, second, mtimes, res1


def table_row(md, name):
    row = next(l for l in md.splitlines() if l.startswith(f'| {name} |'))
    return [c.strip() for c in row.strip('|').split('|')]


def test_encdec_study_quick_tables_are_mean_std_over_seeds(quick_study):
    tmp, out, first, second, mtimes, res = quick_study
    md = (out / 'encdec_study.md').read_text()
    assert res['seeds'] == [1, 2]  # --quick: the first two of the default seeds
    header = table_row(md, 'problem')
    for name in ('textbooks_deconly', 'textbooks_encdec', 'samsum_deconly', 'samsum_encdec', 'samsum_encdec_transfer'):
        per_seed = [res['eval'][str(s)][name]['target_ppl'] for s in (1, 2)]
        assert per_seed[0] != per_seed[1], name  # the seed reaches training: two different models
        m = sum(per_seed) / 2
        sd = abs(per_seed[0] - per_seed[1]) / 2 ** 0.5  # sample std of two values
        assert table_row(md, name)[header.index('target ppl')] == f'{m:.2f} ± {sd:.2f}'
        cfgs = [json.load(open(out / 'runs' / f'{name}_s{s}' / 'config.json')) for s in (1, 2)]
        assert [c['seed'] for c in cfgs] == [1, 2]  # each seed trained its own run with that seed...
        assert cfgs[0]['data'] == cfgs[1]['data'] and cfgs[0]['data'].endswith('_quick')  # ...on the same data
        if name.startswith('samsum'):
            assert ' ± ' in table_row(md, name)[header.index('ROUGE-L')]
    # transfer starts from the same seed's decoder-only run
    for s in (1, 2):
        with open(out / 'runs' / f'samsum_encdec_transfer_s{s}' / 'config.json') as f:
            assert json.load(f)['init_from'].endswith(f'samsum_deconly_s{s}')
    ratio = [res['eval'][str(s)]['textbooks_encdec']['target_ppl'] / res['eval'][str(s)]['textbooks_deconly']['target_ppl']
             for s in (1, 2)]
    assert res['ratios']['textbooks']['ppl'] == pytest.approx(ratio)  # per-seed ratios, not a ratio of means
    assert table_row(md, 'small')[-1].count(' ± ') == 1 and len(res['scaling']['small']['target_ppl']) == 2
    assert len(res['transfer']['scratch'][0]) == 2 and 'transfer - scratch' in md
    for png in ('curves', 'scaling', 'transfer', 'attention_samsum', 'attention_textbooks'):
        assert (out / 'figures' / f'{png}.png').stat().st_size > 10_000  # --quick never writes figures/encdec
    assert not (tmp / 'fig').exists()


def test_encdec_study_rerun_reuses_runs_and_evaluations(quick_study):
    tmp, out, first, second, mtimes, res1 = quick_study
    assert first.stdout.count('== training ') == 12 and second.stdout.count('== training ') == 0
    assert second.stdout.count(': reusing ') == 12 and 'eval_tasks.py' not in second.stdout
    assert {p: p.stat().st_mtime for p in out.glob('runs/*/metrics.jsonl')} == mtimes
    with open(out / 'encdec_study.json') as f:
        res2 = json.load(f)
    assert res2['eval'] == res1['eval'] and res2['train_seconds'] == res1['train_seconds']
