"""Faults: kill -9, SIGTERM, failed checkpoint writes, non-finite losses, interrupted prepare."""
import errno
import glob
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests import inproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--data=tiny', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=8',
        '--log_tensorboard=False', '--log_figures=False', '--eval_iters=2', '--warmup_iters=5', '--log_interval=1',
        '--dropout=0.1']


def cmd(data_root, out_dir, args):
    return [sys.executable, 'train.py', *TINY, f'--data_root={data_root}', f'--out_dir={out_dir}', *args]


def run(data_root, out_dir, args):
    return inproc.run(cmd(data_root, out_dir, args))  # a fork of the suite's torch-loaded server (tests/inproc.py)


def the_run_dir(out_dir):
    return glob.glob(os.path.join(out_dir, '*'))[0]


def last_step(out_dir):
    """Highest step in metrics.jsonl so far (0 if none)."""
    paths = glob.glob(os.path.join(out_dir, '*', 'metrics.jsonl'))
    if not paths:
        return 0
    steps = []
    for line in open(paths[0]):
        try:
            steps.append(json.loads(line).get('step', 0))
        except ValueError:
            pass  # a line being written
    return max(steps, default=0)


def start_and_wait(data_root, out_dir, args, until_step):
    p = subprocess.Popen(cmd(data_root, out_dir, args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    t0 = time.time()
    while last_step(out_dir) < until_step and p.poll() is None and time.time() - t0 < 600:
        time.sleep(0.05)
    return p


def final_state(out_dir):
    d = the_run_dir(out_dir)
    w = torch.load(os.path.join(d, 'ckpt', 'last.pt'), weights_only=True)['model']
    ev = [json.loads(l) for l in open(os.path.join(d, 'metrics.jsonl'))]
    ev = [{k: e[k] for k in ('event', 'step', 'loss', 'val_loss') if k in e} for e in ev
          if e['event'] in ('train', 'evaluate')]
    return w, ev


def assert_same(a, b):
    (wa, ea), (wb, eb) = a, b
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert ea == eb


def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(tiny_data, tmp_path):
    args = ['--max_iters=30', '--eval_interval=10', '--ckpt_interval=3']
    r = run(tiny_data, tmp_path / 'a', args)
    assert r.returncode == 0, r.stderr
    rng = random.Random(0)
    kills = sorted(rng.sample(range(2, 29), 3))
    out = tmp_path / 'b'
    for target in kills:
        resume = ['--init_from=resume'] if glob.glob(os.path.join(out, '*', 'ckpt', 'last.pt')) else []
        p = start_and_wait(tiny_data, out, args + resume, target)
        p.send_signal(signal.SIGKILL)
        p.wait()
        # a kill in the middle of a save leaves at most a temporary file, never a half last.pt
        junk = glob.glob(os.path.join(out, '*', 'ckpt'))
        if junk:
            with open(os.path.join(junk[0], 'last.pt.tmp'), 'wb') as f:
                f.write(b'half written')
    r = run(tiny_data, out, args + ['--init_from=resume'])
    assert r.returncode == 0, r.stderr
    assert_same(final_state(tmp_path / 'a'), final_state(out))


def test_sigterm_checkpoints_exits_0_and_resumes_exactly(tiny_data, tmp_path):
    args = ['--max_iters=30', '--eval_interval=10', '--ckpt_interval=1000']
    r = run(tiny_data, tmp_path / 'a', args)
    assert r.returncode == 0, r.stderr
    for attempt in range(3):  # on a loaded machine the run may finish before the signal lands: try again
        out = tmp_path / f'b{attempt}'
        p = start_and_wait(tiny_data, out, args, 2)
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, stderr
        if 'received SIGTERM at step' in stdout:
            break
    assert 'received SIGTERM at step' in stdout and 'init_from=resume' in stdout, stdout[-2000:]
    step = torch.load(glob.glob(os.path.join(out, '*', 'ckpt', 'last.pt'))[0], weights_only=True)['step']
    assert 2 <= step < 30
    r = run(tiny_data, out, args + ['--init_from=resume'])
    assert r.returncode == 0, r.stderr
    assert_same(final_state(tmp_path / 'a'), final_state(out))


def test_failed_checkpoint_write_keeps_previous_and_is_one_line(tiny_data, tmp_path):
    args = ['--max_iters=8', '--eval_interval=4']
    assert run(tiny_data, tmp_path, args + ['--stop_after=4']).returncode == 0
    ckpt = os.path.join(the_run_dir(tmp_path), 'ckpt')
    os.mkdir(os.path.join(ckpt, 'last.pt.tmp'))  # the next write fails (as a full disk would)
    r = run(tiny_data, tmp_path, args + ['--init_from=resume'])
    assert r.returncode == 1
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and 'could not write checkpoint' in err[0] and 'intact' in err[0], r.stderr
    assert torch.load(os.path.join(ckpt, 'last.pt'), weights_only=True)['step'] == 4


@pytest.mark.parametrize('err,advice,not_advice', [
    (PermissionError(errno.EACCES, 'Permission denied'), 'writable', 'disk space'),
    (OSError(errno.ENOSPC, 'No space left on device'), 'free disk space', 'writable'),
])
def test_checkpoint_write_error_says_the_true_cause(tmp_path, monkeypatch, err, advice, not_advice):
    """A failed save raises the OSError; save_error_message turns it into advice that fits its errno."""
    import checkpoint
    path = str(tmp_path / 'ckpt' / 'last.pt')
    checkpoint.save_checkpoint(path, {'step': 1})

    def failing_replace(src, dst):
        raise err
    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(OSError) as e:
        checkpoint.save_checkpoint(path, {'step': 2})
    msg = checkpoint.save_error_message(path, e.value)
    assert msg.startswith(f"could not write checkpoint {path} ({err.strerror}); the previous checkpoint is intact; ")
    assert advice in msg and not_advice not in msg and msg.endswith('continue with --init_from=resume')
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)['step'] == 1


def test_checkpoint_write_under_a_file_is_not_a_disk_problem(tmp_path):
    """A real failure (no chmod: tests run as root): the checkpoint folder's parent is a file."""
    import checkpoint
    (tmp_path / 'run').write_text('a file where the run folder should be')
    path = str(tmp_path / 'run' / 'ckpt' / 'last.pt')
    with pytest.raises(OSError) as e:
        checkpoint.save_checkpoint(path, {'step': 1})
    msg = checkpoint.save_error_message(path, e.value)
    assert 'a file stands where a folder' in msg and 'disk space' not in msg


@pytest.mark.parametrize('policy', ['stop', 'skip'])
def test_nonfinite_loss(tiny_data, tmp_path, policy):
    args = ['--max_iters=8', '--eval_interval=8', '--learning_rate=1e9', '--grad_clip=0.0', '--warmup_iters=0',
            '--lr_schedule=constant', f'--nonfinite={policy}']
    r = run(tiny_data, tmp_path, args)
    ckpts = glob.glob(os.path.join(tmp_path, '*', 'ckpt', 'last.pt'))
    if policy == 'stop':
        assert r.returncode == 1
        err = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(err) == 1 and 'non-finite training loss' in err[0] and 'last good checkpoint' in err[0]
        assert not ckpts  # nothing non-finite was saved
    else:
        assert r.returncode == 0, r.stderr
        assert 'step skipped' in r.stdout
        w = torch.load(ckpts[0], weights_only=True)['model']
        assert all(torch.isfinite(t).all() for t in w.values())


def shard_digest(d):
    return {os.path.basename(p): hashlib.sha256(open(p, 'rb').read()).hexdigest()
            for p in sorted(glob.glob(os.path.join(d, '*.bin')))}


def test_kill_9_during_prepare_then_rerun_gives_same_shards(tmp_path):
    import sysconfig
    src = sysconfig.get_paths()['stdlib']
    base = [sys.executable, 'prepare/stdlib.py', f'--source={src}', '--tokenizer=byte', '--shard_tokens=4000000']
    # kill at two moments given by progress on disk, not by the clock: as soon as the work folder
    # exists, and once a shard has been written into it
    for moment in ('*', '*.bin'):
        p = subprocess.Popen(base + [f'--out_dir={tmp_path}/b'], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        while p.poll() is None and not glob.glob(os.path.join(tmp_path, 'b.tmp', moment)):
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        # either absent or complete: meta.json marks a complete set, and no half shard is ever in out_dir
        if os.path.exists(tmp_path / 'b'):
            assert os.path.exists(tmp_path / 'b' / 'meta.json')
    assert subprocess.run(base + [f'--out_dir={tmp_path}/b'], cwd=ROOT, capture_output=True).returncode == 0
    assert subprocess.run(base + [f'--out_dir={tmp_path}/a'], cwd=ROOT, capture_output=True).returncode == 0
    da, db = shard_digest(tmp_path / 'a'), shard_digest(tmp_path / 'b')
    assert da == db and len(da) >= 2


def test_ddp_rank_killed_takes_the_job_down(tiny_data, tmp_path):
    """kill -9 of one DDP worker: torchrun ends the job (non-zero exit) instead of hanging."""
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
    args = cmd(tiny_data, tmp_path, ['--max_iters=100000', '--eval_interval=1000', '--ddp_timeout_s=30'])[1:]
    p = subprocess.Popen(launcher + args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while last_step(tmp_path) < 3 and p.poll() is None and time.time() - t0 < 600:
        time.sleep(0.1)
    assert last_step(tmp_path) >= 3, f"the DDP job never reached step 3:\n{p.stdout.read() if p.poll() is not None else ''}"
    workers = subprocess.run(['pgrep', '-P', str(p.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    os.kill(int(workers[1]), signal.SIGKILL)
    try:
        out, _ = p.communicate(timeout=600)
    finally:
        p.kill()
    assert p.returncode != 0
    assert 'FAILED' in out or 'failed' in out.lower()
