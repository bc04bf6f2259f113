"""parallel='fsdp' (FSDP2, torch's fully_shard) under torchrun, on CPU with two gloo processes: the same losses and
weights as one process with the same global batch (accumulation), the same checkpoint as without FSDP (sample.py
reads it, DDP resumes it), exact resume, and the settings check."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4', '--log_tensorboard=False',
        '--log_figures=False', '--eval_iters=1', '--warmup_iters=2', '--log_interval=1', '--learning_rate=3e-3',
        '--run_name=r']


def train(out, args, ranks=1, check=True, env=None):
    """train.py in one process with grad_accum=4, or on 2 ranks with grad_accum=2: the same global batch."""
    launcher = TORCHRUN if ranks == 2 else [sys.executable]
    r = subprocess.run(launcher + ['train.py', f'--out_dir={out}', f'--grad_accum={4 // ranks}'] + TINY + args,
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def losses(out):
    return [e['loss'] for e in map(json.loads, open(os.path.join(out, 'r', 'metrics.jsonl'))) if e['event'] == 'train']


def ckpt(out):
    return torch.load(os.path.join(out, 'r', 'ckpt', 'last.pt'), weights_only=True)


def assert_same_layout(a, b, path='ckpt'):
    """Same keys, types, shapes and dtypes all the way down (values may differ in the last bits)."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            if k != 'config':  # (the settings differ by grad_accum and parallel)
                assert_same_layout(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_layout(x, y, f'{path}[{i}]')
    elif isinstance(a, torch.Tensor):
        assert (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device), path
    elif path.endswith('.lr') or 'param_groups' in path:
        assert a == pytest.approx(b), path
    else:
        assert a == b, path


def assert_close(wa, wb):
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), (k, (wa[k] - wb[k]).abs().max())


def test_fsdp_equals_one_process_resumes_exactly_and_writes_the_same_checkpoint(tiny_data, tmp_path):
    # n_embd 33: weights with an odd number of rows (33, 99) get uneven shards (17 + 16, 50 + 49)
    common = [f'--data_root={tiny_data}', '--data=tiny', '--max_iters=6', '--eval_interval=6', '--n_embd=33',
              '--n_head=3']
    train(tmp_path / 'single', common)
    train(tmp_path / 'fsdp', common + ['--parallel=fsdp'], ranks=2)
    ls, lf = losses(tmp_path / 'single'), losses(tmp_path / 'fsdp')
    assert len(ls) == 6 and ls == pytest.approx(lf, abs=1e-4)  # every step's loss
    cs, cf = ckpt(tmp_path / 'single'), ckpt(tmp_path / 'fsdp')
    assert_close(cs['model'], cf['model'])
    assert_same_layout(cs, cf)  # whole tensors, optimizer state by index, RNG: as without FSDP
    assert cf['model']['lm_head.weight'].data_ptr() == cf['model']['wte.weight'].data_ptr()  # tied: stored once
    # interrupted under fsdp at step 2, continued under ddp to step 4, then under fsdp to the end
    train(tmp_path / 'chain', common + ['--parallel=fsdp', '--stop_after=2'], ranks=2)
    train(tmp_path / 'chain', common + ['--init_from=resume', '--stop_after=4'], ranks=2)
    train(tmp_path / 'chain', common + ['--parallel=fsdp', '--init_from=resume'], ranks=2)
    assert losses(tmp_path / 'chain') == pytest.approx(lf, abs=1e-5)
    assert_close(cf['model'], ckpt(tmp_path / 'chain')['model'])
    s = subprocess.run([sys.executable, 'sample.py', f'--ckpt={tmp_path / "fsdp" / "r"}', '--prompt=def f(',
                        '--max_new_tokens=8'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert s.returncode == 0 and s.stdout.startswith('def f('), s.stderr


def samsum_data(tmp_path):
    src, names = tmp_path / 'src', ['Anna', 'Tom', 'Eve', 'Bob']
    src.mkdir()
    for split, n in (('train', 40), ('validation', 8), ('test', 8)):
        rows = [{'id': str(i), 'dialogue': f"{names[i % 4]}: see you at {i} pm?\n{names[(i + 1) % 4]}: ok",
                 'summary': f"{names[i % 4]} and {names[(i + 1) % 4]} meet at {i} pm."} for i in range(n)]
        (src / f'{split}.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    r = subprocess.run([sys.executable, 'prepare/samsum.py', f'--source={src}', f'--out_dir={tmp_path / "data" / "ss"}',
                        '--vocab_size=300'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return ['--data=ss', f'--data_root={tmp_path / "data"}', '--objective=seq2seq', '--block_size=48']


@pytest.mark.parametrize('variant', ['ngpt_diff', 'encdec_muon'])
def test_fsdp_equals_one_process_for_variants_and_muon(tiny_data, tmp_path, variant):
    env = None
    if variant == 'ngpt_diff':  # normalize_weights() on the shards after every step; diff attention's lambdas
        args = [f'--data_root={tiny_data}', '--data=tiny', '--ngpt=True', '--attn=diff', '--bias=False',
                '--mlp=swiglu', '--pos_emb=rope', '--tie_embeddings=False']
    else:  # encoder blocks sharded too; Muon orthogonalizes the whole matrix of each sharded weight
        args = samsum_data(tmp_path) + ['--n_encoder_layer=2', '--optimizer=muon']
        # Muon's bf16 Newton-Schulz turns last-bit gradient differences into ~1e-3 (tests/test_muon.py): fp32 here
        env = {'PYTHONPATH': os.path.join(ROOT, 'tests', 'muon_fp32')}
    args += ['--max_iters=4', '--eval_interval=4']
    train(tmp_path / 'single', args, env=env)
    train(tmp_path / 'fsdp', args + ['--parallel=fsdp'], ranks=2, env=env)
    assert losses(tmp_path / 'single') == pytest.approx(losses(tmp_path / 'fsdp'), abs=1e-4)
    cs, cf = ckpt(tmp_path / 'single'), ckpt(tmp_path / 'fsdp')
    assert_close(cs['model'], cf['model'])
    assert_same_layout(cs, cf)


def test_bad_parallel_setting_is_one_line(tiny_data, tmp_path):
    r = train(tmp_path, [f'--data_root={tiny_data}', '--data=tiny', '--parallel=no_such_parallel'], check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "error: --parallel='no_such_parallel' is not accepted: parallel takes one of 'ddp', 'fsdp'" in r.stderr
    assert not os.path.exists(tmp_path / 'r')
