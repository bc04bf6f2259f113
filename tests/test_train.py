"""The training loop: loss goes down, exact resume, DDP == accumulation, atomic checkpoints, quickstart."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import checkpoint
from tests import inproc
from configurator import UserError
from schedule import lr_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--data=tiny', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=8',
        '--log_tensorboard=False', '--eval_iters=2', '--warmup_iters=5', '--log_interval=5']


def run_train(args, data_root, out_dir, launcher=None, check=True):
    cmd = (launcher or [sys.executable]) + [os.path.join(ROOT, 'train.py')] + TINY + \
          [f'--data_root={data_root}', f'--out_dir={out_dir}'] + args
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = (subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env) if launcher else
         inproc.run(cmd, env=env))  # a fork of the suite's torch-loaded server: same process semantics, no import
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def run_dir(out_dir):
    dirs = [d for d in glob.glob(os.path.join(out_dir, '*')) if os.path.isdir(d)]
    assert len(dirs) == 1, dirs
    return dirs[0]


def metrics(d, keys=('loss', 'val_loss', 'lr', 'step', 'tokens')):
    out = []
    with open(os.path.join(d, 'metrics.jsonl')) as f:
        for line in f:
            rec = json.loads(line)
            out.append({k: rec[k] for k in ('event',) + keys if k in rec})
    return out


def weights(d):
    return torch.load(os.path.join(d, 'ckpt', 'last.pt'), weights_only=True)['model']


def test_loss_goes_down_and_run_dir_contents(tiny_data, tmp_path):
    r = run_train(['--max_iters=60', '--eval_interval=30', '--learning_rate=3e-3'], tiny_data, tmp_path)
    d = run_dir(tmp_path)
    assert os.path.basename(d) == 'tiny_2x32_learned_s1337'
    losses = [m['loss'] for m in metrics(d) if m['event'] == 'train']
    assert losses[-1] < losses[0] - 1.0, losses
    evals = [m['val_loss'] for m in metrics(d) if m['event'] == 'evaluate']
    assert len(evals) == 2 and evals[1] < evals[0]
    for marker in ('"train_begin"', '"evaluate"', '"train_end"'):
        assert marker in r.stdout
    assert 'step 60/60' in r.stdout
    cfg = json.load(open(os.path.join(d, 'config.json')))
    assert cfg['max_iters'] == 60 and cfg['vocab_size'] == 320  # 259 padded to a multiple of 64
    # every metrics event carries step and tokens
    assert all('step' in m and 'tokens' in m for m in metrics(d))


def test_resume_equals_uninterrupted(tiny_data, tmp_path):
    common = ['--max_iters=20', '--eval_interval=10', '--dropout=0.1', '--lr_schedule=cosine']
    run_train(common, tiny_data, tmp_path / 'a')
    run_train(common + ['--stop_after=10'], tiny_data, tmp_path / 'b')
    b = run_dir(tmp_path / 'b')
    assert torch.load(os.path.join(b, 'ckpt', 'last.pt'), weights_only=True)['step'] == 10
    run_train(common + ['--init_from=resume'], tiny_data, tmp_path / 'b')
    a = run_dir(tmp_path / 'a')
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise on CPU
    # the training and eval events are identical (train_begin/train_end mark each invocation)
    same = lambda d: [m for m in metrics(d) if m['event'] in ('train', 'evaluate')]
    assert same(a) == same(b) and len(same(a)) == 6


def test_resume_refuses_changed_flags_and_missing_run(tiny_data, tmp_path):
    run_train(['--max_iters=4', '--warmup_iters=0', '--eval_interval=4'], tiny_data, tmp_path)
    r = run_train(['--max_iters=4', '--warmup_iters=0', '--init_from=resume', '--mlp=swiglu'], tiny_data, tmp_path, check=False)
    assert r.returncode == 2 and 'cannot resume' in r.stderr
    r = run_train(['--max_iters=4', '--warmup_iters=0', '--init_from=resume', '--seed=7'], tiny_data, tmp_path, check=False)
    assert r.returncode == 2 and 'no run at' in r.stderr


def test_versioned_run_dirs_and_init_from_checkpoint(tiny_data, tmp_path):
    run_train(['--max_iters=4', '--warmup_iters=0', '--eval_interval=4'], tiny_data, tmp_path)
    run_train(['--max_iters=4', '--warmup_iters=0', '--eval_interval=4', '--learning_rate=1e-3'], tiny_data, tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert names == ['tiny_2x32_learned_s1337', 'tiny_2x32_learned_s1337_v2']
    src = os.path.join(tmp_path, names[0])
    r = run_train(['--max_iters=2', '--warmup_iters=0', '--eval_interval=2', f'--init_from={src}', '--pos_emb=rope',
                   '--run_name=ft'], tiny_data, tmp_path)
    assert 'wpe.weight' in r.stdout  # listed as not in this model


@pytest.mark.parametrize('accum', [1, 2])  # accum 2 exercises no_sync on the first micro step
def test_ddp_two_ranks_equals_one_process_with_accumulation(tiny_data, tmp_path, accum):
    common = ['--max_iters=6', '--eval_interval=6', '--learning_rate=3e-3']
    run_train(common + [f'--grad_accum={2 * accum}'], tiny_data, tmp_path / 'single')
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
    run_train(common + [f'--grad_accum={accum}'], tiny_data, tmp_path / 'ddp', launcher=torchrun)
    ws, wd = weights(run_dir(tmp_path / 'single')), weights(run_dir(tmp_path / 'ddp'))
    for k in ws:
        assert torch.allclose(ws[k], wd[k], atol=1e-5), (k, (ws[k] - wd[k]).abs().max())
    ls = [m['loss'] for m in metrics(run_dir(tmp_path / 'single')) if m['event'] == 'train']
    ld = [m['loss'] for m in metrics(run_dir(tmp_path / 'ddp')) if m['event'] == 'train']
    assert ls == pytest.approx(ld, abs=1e-4)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / 'ckpt' / 'last.pt')
    checkpoint.save_checkpoint(path, {'step': 1, 'w': torch.ones(3)})

    def broken_save(obj, f):
        f.write(b'half a checkpoint')
        raise OSError('No space left on device')
    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(path, {'step': 2, 'w': torch.zeros(3)})
    assert checkpoint.load_checkpoint(path)['step'] == 1
    with open(path, 'r+b') as f:  # a truncated checkpoint is a one-line user error
        f.truncate(10)
    with pytest.raises(UserError, match='truncated'):
        checkpoint.load_checkpoint(path)


def test_lr_schedules():
    cfg = dict(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_schedule='wsd', decay_frac=0.2,
               decay_shape='linear')
    assert lr_at(0, cfg, 100) == pytest.approx(0.1)
    assert lr_at(9, cfg, 100) == pytest.approx(1.0)
    assert lr_at(79, cfg, 100) == 1.0          # stable until the last 20%
    assert lr_at(80, cfg, 100) < 1.0
    assert lr_at(99, cfg, 100) == pytest.approx(0.1)  # ends at min_lr
    cfg['decay_shape'] = '1-sqrt'
    assert lr_at(89, cfg, 100) == pytest.approx(0.1 + 0.9 * (1 - 0.5 ** 0.5))
    cfg['lr_schedule'] = 'cosine'
    assert lr_at(10, cfg, 100) == pytest.approx(1.0)
    assert lr_at(55, cfg, 100) == pytest.approx(0.55)
    assert lr_at(100, cfg, 100) == pytest.approx(0.1)


def test_quickstart_config_runs_and_samples(tiny_data, tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), 'config/quickstart.py', '--data=tiny',
                        f'--data_root={tiny_data}', f'--out_dir={tmp_path}', '--max_iters=3', '--warmup_iters=0', '--eval_interval=3',
                        '--eval_iters=1', '--sample_tokens=20'], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '--- sample' in r.stdout
    d = run_dir(tmp_path)
    s = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), f'--ckpt={d}', '--prompt=def f(',
                        '--max_new_tokens=15', '--num_samples=2'], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert s.returncode == 0, s.stderr
    assert s.stdout.count('def f(') == 2
    s = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), f'--ckpt={d}', '--prompt=-',
                        '--max_new_tokens=5'], cwd=ROOT, capture_output=True, text=True, input='import os',
                       timeout=600)
    assert s.returncode == 0 and s.stdout.startswith('import os'), s.stderr


def test_runs_started_together_prepare_missing_data_once(tmp_path):
    """Two runs (a study's seeds side by side) that both find their data set missing: one prepares it, the
    other waits for it instead of building into the same temporary folder; no lock or .tmp is left."""
    root = tmp_path / 'data'
    cmd = [sys.executable, 'train.py', 'config/numeric_softmax.py', f'--data_root={root}', '--max_iters=2',
           '--n_layer=1', '--n_embd=16', '--n_head=2', '--batch_size=4', '--eval_interval=2', '--eval_iters=1',
           '--warmup_iters=1', '--log_interval=1', '--sample_tokens=0']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    ps = [subprocess.Popen(cmd + [f'--seed={s}', f'--out_dir={tmp_path / "out"}'], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for s in (1, 2)]
    outs = [p.communicate(timeout=600)[0] for p in ps]
    assert [p.returncode for p in ps] == [0, 0], '\n'.join(o[-1500:] for o in outs)
    assert sum(o.count('running prepare/numeric.py') for o in outs) == 1
    assert sorted(os.listdir(root)) == ['numeric']
