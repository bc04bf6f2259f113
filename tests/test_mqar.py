"""MQAR: every query's key-value pair is earlier in its sequence and only the queried values carry loss;
the study's accuracy equals a hand count of an oracle's right answers; the quick study writes its table
and figure and reuses its runs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'prepare'))
sys.path.insert(0, os.path.join(ROOT, 'analysis'))
import mqar as gen  # noqa: E402  prepare/mqar.py
import mqar_study  # noqa: E402
import data as datalib  # noqa: E402

CFG = dict(out_dir='', n_pairs=5, n_keys=12, n_vals=10, n_train=60, n_val=10, n_test=40, seed=3, force=False,
           queries='with_replacement')


@pytest.mark.parametrize('queries', gen.QUERIES)
def test_generator_queries_follow_their_pairs(queries):
    cfg = {**CFG, 'queries': queries}
    recs = gen.build(cfg)
    assert recs == gen.build(cfg) and recs['train'] != gen.build({**cfg, 'seed': 4})['train']
    n, K, sep = CFG['n_pairs'], CFG['n_keys'], CFG['n_keys'] + CFG['n_vals'] + 1
    repeats = 0
    for r in recs['train'] + recs['test']:
        s, m = np.array(r['seq']), np.array(r['scored'])
        assert len(s) == len(m) == 4 * n + 2 and s[0] == sep and s[2 * n + 1] == sep
        keys, vals = s[1:2 * n + 1:2], s[2:2 * n + 1:2]
        assert len(set(keys)) == n and keys.max() < K and vals.min() >= K and vals.max() < K + CFG['n_vals']
        store = dict(zip(keys, vals))
        qk, qv = s[2 * n + 2::2], s[2 * n + 3::2]
        assert set(qk) <= set(keys) and len(qk) == n
        repeats += len(set(qk)) < n
        assert all(store[k] == v for k, v in zip(qk, qv))  # with the value stored next to it earlier
        assert list(np.flatnonzero(m)) == list(range(2 * n + 3, 4 * n + 2, 2))  # loss on the queried values only
    if queries == 'permutation':
        assert repeats == 0  # every key once: the last answer follows from the others (the shortcut)
    else:  # drawn with replacement: 1 - 5!/5^5 = 96% of sequences repeat a key
        assert repeats > 0.8 * (len(recs['train']) + len(recs['test']))


def elimination_accuracy(recs, n):
    """Expected accuracy of a model with no recall at all: it answers each query with a value of the sequence
    not yet given as an answer (multiset), uniformly at random, or any value of the sequence if none is left."""
    total = 0.0
    for r in recs:
        s = list(r['seq'])
        left, answers = list(s[2:2 * n + 1:2]), s[2 * n + 3::2]
        for a in answers:
            pool = left or list(s[2:2 * n + 1:2])
            total += pool.count(a) / len(pool)
            if a in left:
                left.remove(a)
    return total / (n * len(recs))


def test_with_replacement_removes_the_elimination_shortcut():
    """Asking every key once lets a model with no recall score ~(1/4+1/3+1/2+1)/4 = 0.52 at 4 pairs; queries drawn
    with replacement bring that strategy back to about 1/pairs."""
    cfg = {**CFG, 'n_pairs': 4, 'n_keys': 16, 'n_vals': 16, 'n_train': 400}
    perm = elimination_accuracy(gen.build({**cfg, 'queries': 'permutation'})['train'], 4)
    repl = elimination_accuracy(gen.build(cfg)['train'], 4)
    assert 0.45 < perm < 0.6 and repl < 0.35, (perm, repl)


def test_bad_queries_setting_exits_2(tmp_path):
    p = subprocess.run([sys.executable, 'prepare/mqar.py', f'--out_dir={tmp_path}/m', '--queries=sorted'],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and 'queries' in p.stderr and 'with_replacement' in p.stderr
    assert not os.path.exists(tmp_path / 'm')


def test_loader_masks_all_but_queried_values(tmp_path):
    out = str(tmp_path / 'mqar')
    gen.write(out, gen.build(CFG), CFG)
    recs = datalib.open_records(out, 'train')
    x, y = datalib.get_records_batch(recs, 'seq', 4 * CFG['n_pairs'] + 1, 6, 0, 0)
    n = CFG['n_pairs']
    for r in range(len(x)):
        scored = np.flatnonzero((y[r] != -100).numpy())
        assert list(scored) == list(range(2 * n + 2, 4 * n + 1, 2))  # y[t] is token t+1: the queried values
        assert all(int(y[r, t]) >= CFG['n_keys'] for t in scored)
        assert torch.equal(x[r, 1:], torch.where(y[r, :-1] == -100, x[r, 1:], y[r, :-1]))  # targets = next tokens


class Oracle(torch.nn.Module):
    """Looks each key up among the stored pairs and puts its value first, except (on purpose) for the
    keys in `wrong`; everywhere else it predicts token 0."""

    def __init__(self, n_pairs, vocab, wrong):
        super().__init__()
        self.config = type('C', (), {'block_size': 4 * n_pairs + 1})()
        self.n, self.vocab, self.wrong = n_pairs, vocab, wrong

    def forward(self, x):
        logits = torch.zeros(*x.shape, self.vocab)
        logits[..., 0] = 1
        for b in range(x.shape[0]):
            store = {int(x[b, i]): int(x[b, i + 1]) for i in range(1, 2 * self.n, 2)}
            for t in range(2 * self.n + 2, x.shape[1]):
                k = int(x[b, t])
                if k in store and k not in self.wrong:
                    logits[b, t, store[k]] = 2
        return logits, None


def test_accuracy_counts_queried_values_only(tmp_path):
    out = str(tmp_path / 'mqar')
    gen.write(out, gen.build(CFG), CFG)
    recs = datalib.open_records(out, 'test')
    vocab = CFG['n_keys'] + CFG['n_vals'] + 3
    assert mqar_study.mqar_accuracy(Oracle(CFG['n_pairs'], vocab, set()), recs, batch_size=7) == 1.0
    wrong = {0, 1, 2, 3, 4}
    queried = [int(k) for i in range(len(recs)) for k in recs[i]['seq'][2 * CFG['n_pairs'] + 2::2]]
    expected = sum(k not in wrong for k in queried) / len(queried)  # the reference: a hand count
    assert 0 < expected < 1
    assert mqar_study.mqar_accuracy(Oracle(CFG['n_pairs'], vocab, wrong), recs, batch_size=7) == expected


def test_quick_study_writes_table_and_figure_and_reuses_runs(tmp_path):
    args = [sys.executable, 'analysis/mqar_study.py', 'config/mqar_study.py', '--quick=True',
            "--variants=['softmax','diffngpt']", f'--out_dir={tmp_path}/runs', f'--data_root={tmp_path}/data',
            f'--figures_dir={tmp_path}/fig']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.load(open(tmp_path / 'fig' / 'results.json'))
    assert len(res['grid']) == 2 * 2 * 1 * 2  # variants x widths x pairs x seeds
    assert all(0 <= r['accuracy'] <= 1 for r in res['grid'])
    assert set(res['best_lr']) == {'softmax_d16', 'softmax_d32', 'diffngpt_d16', 'diffngpt_d32'}  # per width
    md = open(tmp_path / 'fig' / 'results.md').read()
    assert '| softmax | 2 |' in md and '| differential nGPT | 2 |' in md and ' ± ' in md
    assert os.path.getsize(tmp_path / 'fig' / 'accuracy_vs_width.png') > 5000
    p2 = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert p2.returncode == 0, p2.stdout + p2.stderr
    # per variant: the sweep (2 widths x 1 lr), its seed phase reusing those, then the grid (2 widths x 2 seeds)
    assert 'training' not in p2.stdout and p2.stdout.count('reusing') == 2 * (2 + 2 + 2 * 2)
    assert json.load(open(tmp_path / 'fig' / 'results.json'))['grid'] == res['grid']
