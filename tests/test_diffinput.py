"""diff_input diagnostics, sliding-window perplexity, WikiText prepare, the offline pair."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import data as datalib
from eval_tasks import sliding_window_nll
from inproc import run_many
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_training_logs_delta_norms_to_metrics_tensorboard_and_figures(tiny_data, tmp_path):
    r = subprocess.run([sys.executable, 'train.py', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={tmp_path}',
                        '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
                        '--diff_input=True', '--max_iters=6', '--warmup_iters=0', '--log_interval=3', '--eval_interval=6',
                        '--eval_iters=1', '--log_tensorboard=True'], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = glob.glob(os.path.join(tmp_path, '*'))[0]
    events = [json.loads(l) for l in open(os.path.join(run_dir, 'metrics.jsonl'))]
    diag = [e for e in events if 'delta_norm_mean' in e]
    assert len(diag) == 2
    for e in diag:
        assert e['delta_norm_min'] <= e['delta_norm_mean'] <= e['delta_norm_max'] and e['delta_norm_std'] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(run_dir, 'tb'), size_guidance={'histograms': 0, 'images': 0})
    acc.Reload()
    tags = acc.Tags()
    assert 'train/delta_norm_mean' in tags['scalars'] and 'train/loss' in tags['scalars']
    assert [s.step for s in acc.Scalars('train/delta_norm_mean')] == [e['tokens'] for e in diag]
    assert 'diagnostics/delta_norm' in tags['histograms']
    assert 'figures/loss' in tags['images'] and 'figures/delta_norm_hist' in tags['images']
    for name in ('loss.png', 'delta_norm_hist.png'):
        assert os.path.getsize(os.path.join(run_dir, 'figures', name)) > 5000


def tiny_model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, **kw)).eval()


def test_sliding_window_equals_full_window_when_stride_is_window():
    model = tiny_model(pos_emb='rope')
    tokens = np.random.default_rng(0).integers(0, 64, size=16 * 5 + 1)
    nll, count = sliding_window_nll(model, tokens, window=16, stride=16, batch_size=3, device='cpu')
    assert count == len(tokens) - 1
    # the training loop's evaluation over the same non-overlapping windows
    shards = [tokens]
    losses = [model(x, y)[1].item() * y.numel() for x, y in datalib.iter_eval_batches(shards, 16, 2)]
    assert nll == pytest.approx(sum(losses), rel=1e-5)
    # smaller strides still score every token exactly once, and more context can only help on average
    for stride in (1, 5, 8):
        n2, c2 = sliding_window_nll(model, tokens, 16, stride, 4, 'cpu')
        assert c2 == len(tokens) - 1
    # a hand check of stride 8: token k is scored with context min(k, window-based) from its window
    n8, _ = sliding_window_nll(model, tokens[:25], 16, 8, 4, 'cpu')
    x = torch.tensor(tokens[:25], dtype=torch.long)
    ref = 0.0
    logits, _ = model(x[None, :16])
    ref += torch.nn.functional.cross_entropy(logits[0], x[1:17], reduction='sum').item()   # targets 1..16
    logits, _ = model(x[None, 8:24])
    ref += torch.nn.functional.cross_entropy(logits[0, 8:], x[17:25], reduction='sum').item()  # targets 17..24
    assert n8 == pytest.approx(ref, rel=1e-5)


def test_eval_tasks_ppl_cli(tiny_data, tmp_path):
    r = subprocess.run([sys.executable, 'train.py', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={tmp_path}',
                        '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
                        '--max_iters=2', '--warmup_iters=0', '--eval_interval=2', '--eval_iters=1',
                        '--log_tensorboard=False', '--log_figures=False', '--run_name=r'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, 'eval_tasks.py', 'ppl', f'--ckpt={tmp_path}/r', '--data=tiny',
                        f'--data_root={tiny_data}', '--stride=8', '--max_tokens=500'], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.load(open(tmp_path / 'r' / 'eval_ppl.json'))
    assert res['tokens'] >= 500 and res['stride'] == 8 and res['ppl'] > 1
    r = subprocess.run([sys.executable, 'eval_tasks.py', 'ppl', f'--ckpt={tmp_path}/r', '--data=tiny',
                        f'--data_root={tiny_data}', '--stride=99'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and 'stride' in r.stderr


def write_wikitext(folder):
    import pyarrow as pa
    import pyarrow.parquet as pq
    lines = {
        'train': ['', ' = Alpha = \n', '', ' Alpha is a letter . \n', ' = = History = = \n', ' It is old . \n',
                  ' = Beta = \n', ' Beta follows alpha . \n'],
        'validation': ['', ' = Gamma = \n', ' Gamma is third . \n'],
        'test': ['', ' = Delta = \n', ' Delta is fourth . \n'],
    }
    os.makedirs(folder, exist_ok=True)
    for split, ls in lines.items():
        pq.write_table(pa.table({'text': ls}), os.path.join(folder, f'{split}-00000-of-00001.parquet'))
    return lines


def test_prepare_wikitext_round_trip(tmp_path):
    lines = write_wikitext(tmp_path / 'src')
    out = tmp_path / 'wt'
    r = subprocess.run([sys.executable, 'prepare/wikitext103.py', f'--source={tmp_path}/src', f'--out_dir={out}',
                        '--tokenizer=byte'], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    meta = datalib.load_meta(str(out))
    assert set(meta['splits']) == {'train', 'val', 'test'}
    tok = datalib.get_tokenizer(meta['tokenizer'])
    train = tok.decode(list(datalib.open_split(str(out), 'train')[0]))
    docs = [d for d in train.split('<|endoftext|>') if d]
    assert docs == [''.join(lines['train'][1:6]), ''.join(lines['train'][6:])]  # two articles, subheading kept
    test = tok.decode(list(datalib.open_split(str(out), 'test')[0]))
    assert test == ''.join(lines['test']) + '<|endoftext|>'
    r = subprocess.run([sys.executable, 'prepare/wikitext103.py', f'--source={tmp_path}/nothing',
                        f'--out_dir={tmp_path}/x', '--tokenizer=byte'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and not os.path.exists(tmp_path / 'x')


def test_diffinput_quick_sweeps_then_seeds(tiny_data, tmp_path):
    """--quick: both models at 2 lrs (seed 1), then each one's best lr with 2 seeds; ppl per seed; figures."""
    sys.path.insert(0, ROOT)
    from analysis.study import final, mean_std
    r = subprocess.run(['./launcher.sh', 'diffinput_quick', '--quick=True', '--lrs=[1e-4, 2e-3, 1e-2]', '--lr_extend=0', '--data=tiny',
                        f'--data_root={tiny_data}', f'--out_dir={tmp_path}'], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = tmp_path / 'quick'
    res = json.load(open(out / 'results.json'))
    assert res['config']['lrs'] == [1e-4, 1e-2] and res['config']['seeds'] == [1, 2]  # quick: lowest, highest lr
    assert [row['variant'] for row in res['rows']] == ['baseline', 'diff_input']
    for name in ('baseline', 'diff_input'):
        sweep = {float(k): x for k, x in res['sweep'][name].items()}
        assert res['best_lr'][name] == min(sweep, key=sweep.get)
        for lr, x in sweep.items():
            assert x == final(str(out / f'{name}_lr{lr:g}_s1_6it'))
        dirs = res['runs'][name]
        cfgs = [json.load(open(os.path.join(d, 'config.json'))) for d in dirs]
        assert [c['seed'] for c in cfgs] == [1, 2] and {c['learning_rate'] for c in cfgs} == {res['best_lr'][name]}
        assert [c['diff_input'] for c in cfgs] == [name == 'diff_input'] * 2
        ppl = [p['16'] for p in res['ppl'][name]]
        assert len(ppl) == 2 and ppl[0] != ppl[1] and all(p > 1 for p in ppl)
        m, s = mean_std(ppl)
        assert res['rows'][list(res['best_lr']).index(name)]['ppl, stride 16 (mean ± std)'] == f'{m:.2f} ± {s:.2f}'
    assert res['target_val_loss'] == pytest.approx(sum(res['summary']['baseline']['final']) / 2)
    assert res['rows'][0]['final delta norm mean'] == '-' and res['rows'][1]['final delta norm mean'] != '-'
    md = open(out / 'results.md').read()
    assert 'n=2' in md and 'after 6 steps, seed 1' in md and md.count('| diff_input |') == 2
    for f in ('sweep_and_seeds.png', 'delta_norm_hist.png'):
        assert os.path.getsize(out / 'figures' / f) > 5000


WIKITEXT_PROBLEMS = ['wikitext_baseline', 'wikitext_diff', 'wikitext_baseline_learned', 'wikitext_diff_learned']


@pytest.fixture(scope='module')
def wikitext_runs(tiny_data, tmp_path_factory):
    """Each wikitext problem for one tiny step as `./launcher.sh <problem>` runs it on one CPU (`python train.py
    config/<problem>.py ...`), all in one process (tests/inproc.py; the launcher itself: tests/test_variants.py)."""
    outs = {p: tmp_path_factory.mktemp(p) for p in WIKITEXT_PROBLEMS}
    tiny = ['--data=tiny', f'--data_root={tiny_data}', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32',
            '--batch_size=2', '--max_iters=1', '--eval_interval=1', '--eval_iters=1', '--warmup_iters=0',
            '--log_tensorboard=False', '--log_figures=False']
    res = run_many([{'argv': ['train.py', f'config/{p}.py', *tiny, f'--out_dir={outs[p]}']} for p in WIKITEXT_PROBLEMS])
    return dict(zip(WIKITEXT_PROBLEMS, res)), outs


@pytest.mark.parametrize('problem', WIKITEXT_PROBLEMS)
def test_wikitext_problems_start_with_a_tiny_override(wikitext_runs, problem):
    res, outs = wikitext_runs
    tmp_path = outs[problem]
    assert res[problem]['rc'] == 0, res[problem]['stderr'][-2000:]
    cfg = json.load(open(glob.glob(os.path.join(tmp_path, '*', 'config.json'))[0]))
    assert cfg['diff_input'] == ('diff' in problem) and cfg['pos_emb'] == ('learned' if 'learned' in problem else 'rope')
