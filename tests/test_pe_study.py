"""pe_study end to end in quick mode (through the launcher): seeds, mean ± std cells, reuse, bad settings."""
import json
import os
import re
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def launch(*args):
    return subprocess.run(['./launcher.sh', 'pe_study', *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=ENV)


def check_cell(text, values, digits):
    """A table cell 'm ± s' is the mean and sample std of the per-seed values (to its rounding)."""
    m, s = map(float, re.fullmatch(r'(\S+) ± (\S+)', text.strip()).groups())
    assert abs(m - statistics.mean(values)) <= 0.51 * 10 ** -digits, (text, values)
    assert abs(s - statistics.stdev(values)) <= 0.51 * 10 ** -digits, (text, values)


def test_pe_study_quick_seeds_table_reuse(tiny_data, tmp_path):
    args = ['--quick=True', "--encodings=['learned', 'rope']", '--data=tiny', f'--data_root={tiny_data}',
            f'--out_dir={tmp_path}', '--jobs=2']
    r = launch(*args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = tmp_path / 'quick'  # --quick writes under <out_dir>/quick/, figures in <out_dir>/quick/figures
    res = json.load(open(out / 'results.json'))
    assert res['seeds'] == [1, 2] and list(res['results']) == ['learned', 'rope']
    rope, learned = res['results']['rope'], res['results']['learned']
    assert list(rope) == ['1', '2']
    # the seeds are different trainings: different run dirs, different val losses
    assert res['runs']['rope']['1'] != res['runs']['rope']['2']
    assert rope['1']['val_loss'] != rope['2']['val_loss']
    assert all(rope[s]['ppl']['4x'] is not None and learned[s]['ppl']['2x'] is None for s in ('1', '2'))
    assert len(rope['1']['tasks']) == 6 and 0 <= rope['1']['id_acc'] <= 1
    md = open(out / 'results.md').read()
    assert md.count('| rope |') == 2 and md.count('| learned |') == 2
    row = lambda enc: [l for l in md.splitlines() if l.startswith(f'| {enc} |')][0].split('|')[2:-1]  # main table
    main = row('rope')
    check_cell(main[1], [rope[s]['val_loss'] for s in rope], 3)
    for col, key in ((2, '1x'), (3, '2x'), (4, '4x')):
        check_cell(main[col], [rope[s]['ppl'][key] for s in rope], 1)
    check_cell(main[5], [rope[s]['id_acc'] for s in rope], 3)
    assert row('learned')[3].strip() == 'n/a'  # learned positions cannot go past block_size
    for f in ('loss_curves.png', 'ppl_by_position.png', 'task_accuracy.png', 'encodings.png'):
        assert (out / 'figures' / f).stat().st_size > 1000, f
    assert open(out / 'figures' / 'results.md').read() == md
    # each run was evaluated by eval_tasks.py algorithmic (its JSON next to the checkpoint)
    ev = json.load(open(os.path.join(res['runs']['rope']['1'], 'eval_algorithmic.json')))
    assert [e['task'] for e in ev][:6] == ['passkey', 'copy_distance', 'reverse', 'sort', 'no_carry_add', 'simple_copy']
    assert len(ev[-1]['loss_by_position']) == 4 * 32

    # a re-run reuses every finished run (and its evaluation): same files, same numbers
    stamps = {d: os.path.getmtime(os.path.join(d, 'metrics.jsonl')) for e in res['runs'].values() for d in e.values()}
    r2 = launch(*args)
    assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-2000:]
    assert r2.stdout.count(': reusing ') == 4 and '== training pe_' not in r2.stdout
    assert all(os.path.getmtime(os.path.join(d, 'metrics.jsonl')) == t for d, t in stamps.items())
    assert json.load(open(out / 'results.json'))['results'] == res['results']


@pytest.mark.parametrize('bad, message', [
    ('--seeds=[1, 1]', 'seeds=[1, 1]: give distinct non-negative integers'),
    ('--seeds=[]', "--seeds=[] is not accepted: seeds takes a list of 1+ items, each a number >= 0"),
    ("--seeds=[1, 'a']", "--seeds=[1, 'a'] is not accepted: seeds takes a list of 1+ items"),
    ('--jobs=0', '--jobs=0 is not accepted: jobs takes a number >= 1'),
    ("--encodings=['rope', 'no_such_encoding']", "encodings takes a list of 1+ items, each one of 'none', 'learned'")])
def test_pe_study_bad_settings_exit_2_nothing_written(tmp_path, bad, message):
    r = launch('--quick=True', f'--out_dir={tmp_path / "out"}', f'--figures_dir={tmp_path / "figs"}',
               f'--data_root={tmp_path / "data"}', bad)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_encoding_of_a_kind_the_figure_cannot_draw_is_refused(monkeypatch):
    """The study checks, before training, that its encodings figure can draw every encoding by its kind."""
    import model
    from analysis import pe_encodings
    from configurator import UserError
    pe_encodings.refuse_undrawable(model.POS_EMBS)  # every declared encoding can be drawn
    monkeypatch.setitem(model.POS_EMB_KINDS, 'future_encoding', 'future_kind')  # (alibi made 'bias' drawable)
    with pytest.raises(UserError, match="pos_emb 'future_encoding' is of kind 'future_kind', which analysis/pe_encodings.py "
                                        "does not handle"):
        pe_encodings.refuse_undrawable(['rope', 'future_encoding'])
