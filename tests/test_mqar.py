"""MQAR: every query's key-value pair is earlier in its sequence and only the queried values carry loss;
the study's accuracy equals a hand count of an oracle's right answers; train.py's stop_at_val_acc stops a run
at the first evaluation that reaches it (and a run that never does ends at its cap), and the study reads both;
one recipe for every variant except nGPT's; the lr choice reads validation only; the quick study writes its
tables and figure and reuses its runs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inproc import run_many  # noqa: E402

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


def evals(run_dir):
    return [(e['step'], e['val_acc']) for e in map(json.loads, open(os.path.join(run_dir, 'metrics.jsonl')))
            if e['event'] == 'evaluate']


def test_stop_at_val_acc_stops_at_the_first_evaluation_that_reaches_it(tmp_path):
    """Two runs of the same training: A with target 1.0 (never reached in 16 steps here) trains to its cap; B with
    target 0.25 stops at the first evaluation where A had reached 0.25, with a checkpoint of that step, and is A
    until then. The study's run_record reads both: steps, cap, reached."""
    cfg = {**CFG, 'n_pairs': 1, 'n_keys': 2, 'n_vals': 2, 'n_train': 200, 'n_val': 20}
    gen.write(str(tmp_path / 'd' / 'mqar1'), gen.build(cfg), cfg)
    common = ['train.py', '--data=mqar1', f'--data_root={tmp_path}/d', '--objective=records', '--n_layer=1',
              '--n_head=1', '--n_embd=16', '--block_size=5', '--batch_size=8', '--max_iters=16', '--learning_rate=3e-3',
              '--warmup_iters=0', '--lr_schedule=constant', '--eval_interval=2', '--eval_iters=2', '--log_interval=4',
              '--ckpt_interval=16', '--device=cpu', '--log_tensorboard=False', '--log_figures=False',
              f'--out_dir={tmp_path}/runs']
    res = run_many([{'argv': common + ['--run_name=a', '--stop_at_val_acc=1.0']},
                    {'argv': common + ['--run_name=b', '--stop_at_val_acc=0.25']}])
    assert [r['rc'] for r in res] == [0, 0], res[0]['stderr'][-2000:] + res[1]['stderr'][-2000:]
    a_dir, b_dir = str(tmp_path / 'runs' / 'a'), str(tmp_path / 'runs' / 'b')
    ea = evals(a_dir)
    assert [s for s, _ in ea] == list(range(2, 17, 2)) and max(x for _, x in ea) < 1.0  # never reached: the cap
    stop = next(s for s, x in ea if x >= 0.25)
    assert 2 < stop < 16, ea  # (the scenario: B's target is reached after the first evaluation, before the cap)
    assert evals(b_dir) == [(s, x) for s, x in ea if s <= stop]  # A's run until the stop, nothing after it
    assert torch.load(os.path.join(b_dir, 'ckpt', 'last.pt'), weights_only=False)['step'] == stop
    assert 'stopped_early' in res[1]['stdout'] and 'stopped_early' not in res[0]['stdout']
    assert mqar_study.run_record(a_dir) | {'val_loss': 0, 'seconds': 0} == {
        'steps': 16, 'cap': 16, 'reached': False, 'val_acc': ea[-1][1], 'val_loss': 0, 'seconds': 0}
    assert mqar_study.run_record(b_dir) | {'val_loss': 0, 'seconds': 0} == {
        'steps': stop, 'cap': 16, 'reached': True, 'val_acc': dict(ea)[stop], 'val_loss': 0, 'seconds': 0}


def test_one_recipe_except_ngpt_and_batches_of_about_batch_tokens():
    cfg = {k: getattr(mqar_study, k) for k in ('data_root', 'n_layer', 'n_head', 'batch_tokens', 'batch_size',
                                              'max_iters', 'lr_schedule', 'stop_acc', 'eval_interval', 'eval_queries',
                                              'warmup_iters', 'weight_decay')}  # the study's defaults

    def args(v, n=16):
        return dict(a[2:].split('=', 1) for a in mqar_study.train_args(cfg, v, 32, n, 1e-3, 1))
    base = args('softmax')
    assert (base['weight_decay'], base['warmup_iters']) == (str(cfg['weight_decay']), str(cfg['warmup_iters']))
    for v in mqar_study.FLAGS:  # the same run but for the variant's own flags and, for nGPT's recipe, wd and warmup
        diff = {k for k in set(args(v)) | set(base) if args(v).get(k) != base.get(k)}
        expect = set(mqar_study.FLAGS[v]) | ({'n_head'} if 'attn' in mqar_study.FLAGS[v] and cfg['n_head'] > 1 else set())
        if v in mqar_study.NGPT_RECIPE:
            assert (args(v)['weight_decay'], args(v)['warmup_iters']) == ('0.0', '0')
            expect |= {'weight_decay', 'warmup_iters'}
        assert diff == expect, (v, diff)
    ngpt = args('ngpt')  # the ablation is softmax attention trained exactly as nGPT is
    assert args('softmax_ngpt_recipe') == {k: x for k, x in ngpt.items() if k != 'ngpt'} and ngpt['ngpt'] == 'True'
    for n in (4, 16, 64):  # about batch_tokens tokens and batch_tokens / 4 queries per step at every pair count
        a = args('softmax', n)
        tokens = int(a['batch_size']) * int(a['block_size'])
        assert abs(tokens - cfg['batch_tokens']) <= 4 * n + 1 and a['stop_at_val_acc'] == str(cfg['stop_acc'])
        assert int(a['eval_iters']) * int(a['batch_size']) * n >= cfg['eval_queries']


def test_lr_choice_reads_validation_only():
    """Most seeds reaching the target wins, then the lower median step, then the lower validation loss; the test
    accuracy is never read (rows here have none)."""
    row = lambda reached, steps, loss: {'reached': reached, 'steps': steps, 'val_loss': loss}
    two_fast = [row(True, 300, 0.1), row(True, 500, 0.1), row(False, 4000, 2.0)]
    three_slow = [row(True, 3000, 0.1)] * 3
    none = [row(False, 4000, 1.0)] * 3
    two_slow = [row(True, 900, 0.1), row(True, 1100, 0.1), row(False, 4000, 1.5)]
    ranked = sorted([two_fast, three_slow, none, two_slow], key=mqar_study.lr_score)
    assert ranked == [three_slow, two_fast, two_slow, none]
    assert mqar_study.lr_score([row(False, 4000, 1.0)] * 2) < mqar_study.lr_score([row(False, 4000, 1.2)] * 2)


def test_quick_study_writes_tables_and_figure_and_reuses_runs(tmp_path):
    """One variant, one seed, one width, pairs 1 (the lr choice) and 2 (the grid's other pair count): two runs,
    then the same command again, which trains nothing."""
    args = [sys.executable, 'analysis/mqar_study.py', 'config/mqar_study.py', '--quick=True',
            "--variants=['softmax']", '--seeds=[1]', f'--out_dir={tmp_path}/runs', f'--data_root={tmp_path}/data',
            f'--figures_dir={tmp_path}/fig']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.load(open(tmp_path / 'fig' / 'results.json'))
    assert [(r['width'], r['pairs']) for r in res['grid']] == [(16, 1), (16, 2)]
    for r in res['grid']:  # 6 steps are too few to reach 0.99: every run is a cap hit, and says so
        assert 0 <= r['accuracy'] <= 1 and (r['steps'], r['cap'], r['reached']) == (6, 6, False)
    assert res['best_lr'] == {'softmax_d16': 1e-2} and res['selection'] == res['grid'][:1]
    md = open(tmp_path / 'fig' / 'results.md').read()
    assert '| softmax | 1 |' in md and '| softmax | 2 |' in md and ' ± ' in md and '- (0/1), 1 cap' in md
    assert '| softmax | shared (0.1, 1) | 0/2 | 0/2 | 2 |' in md  # the recipe summary
    assert os.path.getsize(tmp_path / 'fig' / 'accuracy_vs_width.png') > 5000
    p2 = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert p2.returncode == 0, p2.stdout + p2.stderr
    assert '== training' not in p2.stdout and p2.stdout.count('reusing') == 2
    assert json.load(open(tmp_path / 'fig' / 'results.json'))['grid'] == res['grid']
