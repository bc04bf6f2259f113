"""Numeric sequences: generator rules and determinism, records round trip and padded batches, the
'records' objective trains both attention kinds, eval metrics equal a hand count, analysis scripts draw."""
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
import numeric as gen  # noqa: E402  prepare/numeric.py
import data as datalib  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

SMALL = dict(out_dir='', n_values=40, min_len=6, max_len=10, long_min_len=14, long_max_len=18, n_train=300,
             n_val=50, n_test=50, n_test_long=25, max_step=4, max_ratio=5, max_period=4, max_walk_step=3,
             val_fraction=0.1, test_fraction=0.1, seed=7, force=False)


def follows_rule(kind, x, cfg):
    d = np.diff(x)
    if kind == 'counting':
        return all(d == 1)
    if kind == 'arithmetic':
        return len(set(d)) == 1 and d[0] not in (0, 1) and abs(d[0]) <= cfg['max_step']
    if kind == 'geometric':
        p = gen.largest_prime(cfg['n_values'])
        return any(all(x[t + 1] == r * x[t] % p for t in range(len(x) - 1)) for r in range(2, cfg['max_ratio'] + 1)) \
            and x[0] != 0
    if kind == 'alternating':
        return any(len(set(x[:k])) == k and all(x[t] == x[t - k] for t in range(k, len(x)))
                   for k in range(2, cfg['max_period'] + 1))
    if kind == 'random_walk':
        return all(abs(d) <= cfg['max_walk_step'])


@pytest.fixture(scope='module')
def numeric_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('numdata')
    gen.write(str(root / 'numeric'), gen.build(SMALL), SMALL)
    return str(root)


def test_generator_rules_splits_and_determinism():
    a, b = gen.build(SMALL), gen.build(SMALL)
    assert a == b  # deterministic from the seed
    assert gen.build({**SMALL, 'seed': 8})['train'] != a['train']
    sep = SMALL['n_values'] + 1
    seen = {}
    for split, recs in a.items():
        lo, hi = ((SMALL['long_min_len'], SMALL['long_max_len']) if split == 'test_long'
                  else (SMALL['min_len'], SMALL['max_len']))
        counts = np.bincount([r['type'][0] for r in recs], minlength=5)
        assert counts.min() >= len(recs) // 5  # every type, evenly
        for r in recs:
            assert r['seq'][0] == sep
            x = np.array(r['seq'][1:])
            kind = gen.TYPES[r['type'][0]]
            assert lo <= len(x) <= hi and x.min() >= 0 and x.max() < SMALL['n_values']
            assert follows_rule(kind, x, SMALL), (kind, x)
            seen.setdefault(tuple(x), set()).add(split)
    assert all(len(s) == 1 for s in seen.values())  # no sequence is in two splits
    # the rules are not trivially true: a counting sequence is not arithmetic, a random list breaks each
    assert not follows_rule('arithmetic', np.arange(5, 12), SMALL)
    assert not any(follows_rule(k, np.array([3, 9, 1, 30, 2, 17]), SMALL) for k in gen.TYPES)


def test_records_round_trip_tokenizer_and_padded_batches(numeric_root):
    d = os.path.join(numeric_root, 'numeric')
    meta = datalib.load_meta(d)
    tok = datalib.get_tokenizer(meta['tokenizer'])
    assert meta['pad_id'] == meta['vocab_size'] - 1 == tok.pad_id  # pad is the last id
    assert meta['types'] == list(gen.TYPES)
    recs = datalib.open_records(d, 'train')
    assert len(recs) == SMALL['n_train'] and recs.pad_id == tok.pad_id
    assert tok.encode(tok.decode(recs[0]['seq'])) == list(recs[0]['seq'])
    with pytest.raises(datalib.DataError, match='not a number'):
        tok.encode('3 x 5')
    x, y = datalib.get_records_batch(recs, 'seq', 16, 8, 1, 0)
    x2, y2 = datalib.get_records_batch(recs, 'seq', 16, 8, 1, 0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    for r in range(8):
        n = int((y[r] != -100).sum())
        assert torch.all(x[r, n:] == tok.pad_id) and torch.all(y[r, n:] == -100)
        assert torch.equal(x[r, 1:n], y[r, :n - 1])  # next-token pairs of one sequence
    with pytest.raises(datalib.DataError, match='block_size'):
        datalib.get_records_batch(recs, 'seq', 4, 8, 1, 0)


def test_eval_metrics_equal_hand_count(numeric_root):
    from eval_tasks import numeric_scores, numeric_rows
    d = os.path.join(numeric_root, 'numeric')
    recs = datalib.open_records(d, 'test_long')
    recs.offsets = recs.offsets[:12]
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=64, block_size=24, n_layer=1, n_head=2, n_embd=16, pos_emb='rope')).eval()
    k = 3
    acc = numeric_scores(model, recs, 5, k, 5, 'cpu')
    hand = np.zeros((5, 5))
    with torch.no_grad():
        for i in range(len(recs)):
            s = torch.tensor(np.asarray(recs[i]['seq'], dtype=np.int64))
            t = int(recs[i]['type'][0])
            logits = model(s[None, :-1])[0][0]
            lp = torch.log_softmax(logits, -1)
            scored = range(k, len(s) - 1)  # predictions of s[k+1:]
            nll = -sum(lp[j, s[j + 1]].item() for j in scored)
            cor = sum(int(logits[j].argmax() == s[j + 1]) for j in scored)
            g = s[:k + 1]
            while len(g) < len(s):  # greedy continuation without any cache
                g = torch.cat((g, model(g[None])[0][0, -1].argmax().view(1)))
            hand[t] += [1, len(scored), nll, cor, int(torch.equal(g, s))]
    assert np.allclose(acc, hand, atol=1e-3)
    rows = numeric_rows(acc, gen.TYPES, 'test_long', '14-18')
    assert rows[-1]['sequences'] == 12 and rows[-1]['type'] == 'all'
    assert rows[-1]['next_acc'] == round(hand[:, 3].sum() / hand[:, 1].sum(), 4)


    class PlusOne(torch.nn.Module):
        """Always predicts previous + 1: right on every counting token, and on no arithmetic one."""
        config = GPTConfig(vocab_size=64, block_size=24, n_layer=1, n_head=1, n_embd=8)

        def forward(self, x):
            return torch.nn.functional.one_hot((x + 1).clamp(max=63), 64).float(), None

        def generate(self, x, n, temperature):
            for _ in range(n):
                x = torch.cat((x, x[:, -1:] + 1), 1)
            return x
    recs = datalib.open_records(d, 'test')
    acc = numeric_scores(PlusOne(), recs, 5, k, 7, 'cpu')
    counting, arithmetic = acc[gen.TYPES.index('counting')], acc[gen.TYPES.index('arithmetic')]
    assert counting[0] > 0 and counting[3] == counting[1] and counting[4] == counting[0]
    assert arithmetic[0] > 0 and arithmetic[3] == 0 and arithmetic[4] == 0


@pytest.fixture(scope='module')
def two_runs(numeric_root, tmp_path_factory):
    """A linear-attention run of 4 steps on the small numeric set (the records objective, in a subprocess)
    and a softmax checkpoint of an untrained model saved the way train.py saves them."""
    from checkpoint import save_checkpoint
    out = str(tmp_path_factory.mktemp('numout'))
    r = subprocess.run([sys.executable, 'train.py', 'config/numeric_linear.py', '--n_embd=32', '--n_head=2',
                        '--batch_size=8', '--max_iters=4', '--eval_interval=2', '--eval_iters=2', '--log_interval=1',
                        '--warmup_iters=1', f'--data_root={numeric_root}', f'--out_dir={out}', '--auto_prepare=False'],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    linear = json.loads([l for l in r.stdout.splitlines() if '"train_end"' in l][0])['run_dir']
    cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, pos_emb='rope')
    softmax = os.path.join(out, 'softmax.pt')
    save_checkpoint(softmax, {'model': GPT(cfg).state_dict(), 'model_config': cfg.to_dict(), 'step': 0,
                              'tokenizer': datalib.load_meta(os.path.join(numeric_root, 'numeric'))['tokenizer']})
    return {'softmax': softmax, 'linear': linear}


def test_records_objective_trains_linear_attention(two_runs):
    run = two_runs['linear']
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        ev = [json.loads(l) for l in f]
    losses = [e['loss'] for e in ev if e['event'] == 'train']
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert json.load(open(os.path.join(run, 'config.json')))['attn'] == 'linear'


def test_analysis_scripts_write_pngs(two_runs, numeric_root, tmp_path, monkeypatch, capsys):
    import embedding_pca, attention_maps, neuron_selectivity, loss_curves
    import configurator
    paths = [two_runs['softmax'], two_runs['linear']]
    d = os.path.join(numeric_root, 'numeric')
    outs = [embedding_pca.plot_embedding_pca(paths, str(tmp_path / 'pca.png')),
            attention_maps.plot_attention_maps(paths, d, 'alternating', 8, str(tmp_path / 'att.png')),
            neuron_selectivity.plot_neuron_selectivity(paths, d, str(tmp_path / 'sel.png'), 'test', 5, 6)[0],
            loss_curves.plot_loss_curves([two_runs['linear']], str(tmp_path / 'loss.png'))]
    for p in outs:
        with open(p, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # selectivity index: a neuron that fires only on one type has a large index, a flat one has 0
    si, best = neuron_selectivity.selectivity(np.array([[0., 1.], [0., 1.], [3., 1.]]), np.array([1., 1.]))
    assert si[0] == pytest.approx(3.0, rel=1e-4) and best[0] == 2 and si[1] == pytest.approx(0.0)
    # a bad type is one line naming the valid ones, exit code 2, no figure
    monkeypatch.setattr(sys, 'argv', ['attention_maps.py', f'--ckpts={paths[0]}', f'--data_root={numeric_root}',
                                      '--seq_type=fibonacci', f'--out={tmp_path}/x.png'])
    with pytest.raises(SystemExit) as e:
        configurator.run_main(attention_maps.main)
    assert e.value.code == 2 and 'valid: counting' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'x.png')


def table_rows(summary):
    """The data rows of the summary's main table, split into cells."""
    return [[c.strip() for c in l.strip('|').split('|')] for l in summary.splitlines()
            if l.startswith('| test')]


def test_numeric_compare_from_two_checkpoints(two_runs, numeric_root, tmp_path, monkeypatch):
    import numeric_compare
    res = tmp_path / 'cmp'
    monkeypatch.setattr(sys, 'argv', ['numeric_compare.py', f"--softmax_ckpt={two_runs['softmax']}",
                                      f"--linear_ckpt={two_runs['linear']}", f'--data_root={numeric_root}',
                                      f'--results_dir={res}', '--attention_types=counting', '--attention_length=8',
                                      '--neuron_sequences=5', f'--out_dir={tmp_path}/runs'])
    monkeypatch.chdir(ROOT)
    numeric_compare.main()
    summary = (res / 'summary.md').read_text()
    assert '| test_long |' in summary and 'softmax next_acc' in summary and 'linear exact' in summary
    assert sorted(os.listdir(res / 'figures')) == ['attention_counting.png', 'embedding_pca.png',
                                                   'loss_curves.png', 'neuron_selectivity.png']
    assert not os.path.exists(tmp_path / 'runs')  # two given models: nothing trained
    ev = json.load(open(res / 'eval_numeric.json'))
    assert ev['seeds'] == {'softmax': [None], 'linear': [None]}
    one = ev['per_seed']['linear'][0]['rows']
    assert one[-1]['sequences'] == SMALL['n_test_long']
    # one model per kind: the mean is that model's number, the std 0
    assert [r['next_acc'] for r in ev['mean_std']['linear']] == [r['next_acc'] for r in one]
    assert all(r['next_acc_std'] == 0 for r in ev['mean_std']['linear'])


def run_compare(args):
    return subprocess.run([sys.executable, 'analysis/numeric_compare.py', 'config/numeric_compare.py', *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_numeric_compare_quick_seeds_mean_std_and_reuse(numeric_root, tmp_path):
    """--quick=True end to end: 2 models x 2 seeds trained (2 side by side), the table is mean ± std over the
    seeds of the per-seed numbers in the json, and a second invocation reuses all four runs."""
    from analysis.study import fmt
    args = ['--quick=True', f'--data_root={numeric_root}', f'--out_dir={tmp_path}/runs',
            f'--results_dir={tmp_path}/res', '--attention_types=alternating', '--attention_length=8']
    r = run_compare(args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = {(k, s): tmp_path / 'runs' / 'quick' / f'numeric_{k}_s{s}' for k in ('softmax', 'linear') for s in (1, 2)}
    for (k, s), d in runs.items():
        cfg = json.load(open(d / 'config.json'))
        assert cfg['attn'] == k and cfg['seed'] == s
    res = tmp_path / 'res' / 'quick'
    ev = json.load(open(res / 'eval_numeric.json'))
    assert ev['seeds'] == {'softmax': [1, 2], 'linear': [1, 2]}
    summary = (res / 'summary.md').read_text()
    rows = table_rows(summary)
    assert len(rows) == 2 * (len(gen.TYPES) + 1)  # (5 types + all) x (test, test_long)
    for i, cells in enumerate(rows):
        assert len(cells) == 3 + 2 * 3 and all('±' in c for c in cells[3:])  # a ± cell per model and metric
        for j, (k, m) in enumerate((k, m) for k in ('softmax', 'linear') for m in ('next_acc', 'exact', 'loss')):
            per_seed = [e['rows'][i][m] for e in ev['per_seed'][k]]
            assert cells[3 + j] == fmt(per_seed)  # the cell is mean ± std of the json's per-seed numbers
    # different seeds are different models: their losses differ, so the std of the loss is not 0
    losses = [e['rows'][-1]['loss'] for e in ev['per_seed']['softmax']]
    assert losses[0] != losses[1] and ev['mean_std']['softmax'][-1]['loss_std'] > 0
    assert 'seed band' in summary or 'min-max band' in summary
    for f in ('loss_curves.png', 'attention_alternating.png', 'embedding_pca.png', 'neuron_selectivity.png'):
        assert (res / 'figures' / f).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    mtimes = {d: os.path.getmtime(d / 'metrics.jsonl') for d in runs.values()}
    r2 = run_compare(args)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.count(': reusing ') == 4 and '== training' not in r2.stdout
    assert {d: os.path.getmtime(d / 'metrics.jsonl') for d in runs.values()} == mtimes
    assert json.load(open(res / 'eval_numeric.json'))['mean_std'] == ev['mean_std']  # same models, same numbers


@pytest.mark.parametrize('bad, message', [('[]', 'seeds takes a list of 1+ items, each a number >= 0'),
                                          ('[1,1]', 'the seeds must be distinct integers, e.g. --seeds=[1, 2, 3]'),
                                          ("[1,'a']", 'seeds takes a list of 1+ items, each a number >= 0')])
def test_numeric_compare_bad_seeds_exit_2_write_nothing(numeric_root, tmp_path, bad, message):
    r = run_compare([f'--seeds={bad}', f'--data_root={numeric_root}', f'--out_dir={tmp_path}/runs',
                     f'--results_dir={tmp_path}/res'])
    assert r.returncode == 2 and r.stdout == ''
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: --seeds=') and message in err[0], err
    assert os.listdir(tmp_path) == []
