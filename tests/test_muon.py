"""optimizer='muon' (optim.py): the parameter split, the schedule on both optimizers, exact resume, DDP equals
one process, loss goes down for every variant and objective, bad settings, and the study's quick mode."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from inproc import run_many
from model import GPT, GPTConfig
from optim import MuonAdamW, build_optimizer, muon_params
from schedule import lr_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = dict(optimizer='muon', learning_rate=3e-3, weight_decay=0.1, beta1=0.9, beta2=0.95, muon_lr=0.02,
           muon_momentum=0.95, muon_weight_decay=0.0)
VARIANTS = {
    'default': dict(),
    'diff': dict(attn='diff'),
    'ngpt': dict(ngpt=True, bias=False, mlp='swiglu', pos_emb='rope', tie_embeddings=False),
    'linear': dict(attn='linear'),
    'encdec': dict(n_encoder_layer=2),
    'diff_input': dict(diff_input=True, pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False),
}
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--log_tensorboard=False', '--log_figures=False',
        '--eval_iters=2', '--warmup_iters=3', '--log_interval=5', '--optimizer=muon', '--sample_tokens=0']


def run(args, launcher=None, check=True, env=None):
    r = subprocess.run((launcher or [sys.executable]) + args, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def events(run_dir, kind='train'):
    return [e for e in map(json.loads, open(os.path.join(run_dir, 'metrics.jsonl'))) if e['event'] == kind]


def ckpt(run_dir):
    return torch.load(os.path.join(run_dir, 'ckpt', 'last.pt'), weights_only=True)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_every_parameter_in_exactly_one_group_and_muon_gets_only_block_matrices(variant):
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, **VARIANTS[variant]))
    opt = build_optimizer(model, CFG, 'cpu')
    assert isinstance(opt, MuonAdamW)
    seen = [id(p) for g in opt.param_groups for p in g['params']]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each exactly once (tied head counted once)
    # Muon: exactly the weights of the nn.Linear layers inside the blocks (q/k/v, out, MLP, cross attention)
    linear_in_blocks = {f'{n}.weight' for n, m in model.named_modules()
                        if isinstance(m, nn.Linear) and n.startswith(('h.', 'enc.'))}
    assert {n for n, _ in muon_params(model)} == linear_in_blocks
    assert [id(p) for g in opt.muon.param_groups for p in g['params']] == [id(p) for _, p in muon_params(model)]
    assert all(p.dim() == 2 for g in opt.muon.param_groups for p in g['params'])
    names = {id(p): n for n, p in model.named_parameters()}
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g['params']}
    assert 'wte.weight' in adamw and not any(n.startswith(('h.', 'enc.')) and n.endswith('.weight') and
                                             n in linear_in_blocks for n in adamw)
    if variant == 'diff':
        assert 'h.0.attn.lambda_q1' in adamw
    if variant == 'ngpt':
        assert {'h.0.attn_alpha', 'h.0.attn.sqk', 'h.0.mlp.suv', 'lm_head.sz', 'lm_head.weight'} <= adamw
    # weight decay only on AdamW's matrices (embeddings, untied head), as with optimizer='adamw'
    for g in opt.adamw.param_groups:
        assert g['weight_decay'] == (0.1 if all(p.dim() == 2 for p in g['params']) and g['params'] else 0.0)


def test_adamw_setting_builds_the_original_adamw():
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    opt = build_optimizer(model, {**CFG, 'optimizer': 'adamw'}, 'cpu')
    assert type(opt) is torch.optim.AdamW
    assert [[id(p) for p in g['params']] for g in opt.param_groups] == \
           [[id(p) for p in g['params']] for g in model.optimizer_groups(0.1)]


def test_resume_equals_uninterrupted_and_schedule_drives_muon(tiny_data, tmp_path):
    common = ['train.py', '--data=tiny', f'--data_root={tiny_data}', '--block_size=32', '--batch_size=8',
              '--max_iters=20', '--eval_interval=10', '--dropout=0.1', '--lr_schedule=cosine', '--run_name=r'] + TINY
    run(common + [f'--out_dir={tmp_path / "a"}'])
    run(common + [f'--out_dir={tmp_path / "b"}', '--stop_after=10'])
    mid = ckpt(tmp_path / 'b' / 'r')
    assert mid['step'] == 10 and set(mid['optimizer']) == {'muon', 'adamw'}
    assert mid['optimizer']['muon']['state']  # momentum buffers are saved
    # the schedule set both learning rates at step 10 (index 9): Muon's is AdamW's times muon_lr / learning_rate
    cfg = mid['config']
    lr = lr_at(9, cfg, 20)
    assert mid['optimizer']['adamw']['param_groups'][0]['lr'] == lr
    assert mid['optimizer']['muon']['param_groups'][0]['lr'] == pytest.approx(lr * 0.02 / cfg['learning_rate'])
    run(common + [f'--out_dir={tmp_path / "b"}', '--init_from=resume'])
    wa, wb = ckpt(tmp_path / 'a' / 'r')['model'], ckpt(tmp_path / 'b' / 'r')['model']
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise on CPU
    strip = lambda d: [{k: e[k] for k in ('step', 'loss', 'lr')} for e in events(d)]
    assert strip(tmp_path / 'a' / 'r') == strip(tmp_path / 'b' / 'r')
    # resuming with the other optimizer is a different run: refused with one line
    r = run(common + [f'--out_dir={tmp_path / "b"}', '--init_from=resume', '--optimizer=adamw'], check=False)
    assert r.returncode == 2 and 'optimizer' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_ddp_two_ranks_equals_one_process_with_accumulation(tiny_data, tmp_path):
    # torch's Muon orthogonalizes in bfloat16: all-reduced and accumulated fp32 gradients differ in the last bits,
    # which flips bf16 roundings, and 5 Newton-Schulz steps spread that to a few percent of the update. Measured
    # once: max weight difference 0.002 after 6 steps vs 4e-7 with float32 Newton-Schulz. So both runs use the
    # float32 iteration (tests/muon_fp32/sitecustomize.py, loaded through PYTHONPATH by every rank) and must agree
    # to fp32 tolerance: every other part (split, momentum, schedule, sync, accumulation) is the real code path.
    env = {'PYTHONPATH': os.path.join(ROOT, 'tests', 'muon_fp32')}
    common = ['train.py', '--data=tiny', f'--data_root={tiny_data}', '--block_size=32', '--batch_size=8',
              '--max_iters=6', '--eval_interval=6', '--run_name=r'] + TINY
    run(common + [f'--out_dir={tmp_path / "single"}', '--grad_accum=4'], env=env)
    run(common + [f'--out_dir={tmp_path / "ddp"}', '--grad_accum=2'], env=env,
        launcher=[sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'])
    ws, wd = ckpt(tmp_path / 'single' / 'r')['model'], ckpt(tmp_path / 'ddp' / 'r')['model']
    for k in ws:
        assert torch.allclose(ws[k], wd[k], atol=1e-5), (k, (ws[k] - wd[k]).abs().max())
    ls = [e['loss'] for e in events(tmp_path / 'single' / 'r')]
    assert ls == pytest.approx([e['loss'] for e in events(tmp_path / 'ddp' / 'r')], abs=1e-4)


def test_float32_newton_schulz_helper_matches_torch_up_to_bf16():
    import importlib.util
    import torch.optim._muon as m
    stock = m._zeropower_via_newtonschulz
    try:  # loading the helper patches torch's function (as sitecustomize does in the DDP test's processes)
        spec = importlib.util.spec_from_file_location('muon_fp32', os.path.join(ROOT, 'tests', 'muon_fp32',
                                                                                 'sitecustomize.py'))
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        g = torch.randn(96, 32, generator=torch.Generator().manual_seed(0))
        c = (3.4445, -4.775, 2.0315)
        ref, f32 = stock(g, c, 5, 1e-7).float(), m._zeropower_via_newtonschulz(g, c, 5, 1e-7)
        assert f32.dtype == torch.float32 and f32.shape == g.shape
        assert (ref - f32).abs().max() < 0.05 and (ref - f32).abs().mean() < 0.005  # same iteration, bf16 vs fp32
    finally:
        m._zeropower_via_newtonschulz = stock


def lm_args(tiny_data, out, name, *extra):
    return (['train.py', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={out}', f'--run_name={name}',
             '--block_size=32', '--batch_size=8', '--max_iters=30', '--eval_interval=30', '--learning_rate=3e-3']
            + TINY + list(extra))


def lm_run(tiny_data, out, name, *extra):
    run(lm_args(tiny_data, out, name, *extra))
    return os.path.join(out, name)


def assert_loss_goes_down(run_dir, margin):
    losses = [e['loss'] for e in events(run_dir)]
    assert losses[-1] < losses[0] - margin, losses


LOSS_VARIANTS = ['default', 'diff', 'ngpt', 'linear', 'diff_input']


@pytest.fixture(scope='module')
def variant_runs(tiny_data, tmp_path_factory):
    """A 30-step Muon run of each variant, all in one process (tests/inproc.py: the process starts cost more)."""
    out = tmp_path_factory.mktemp('variants')
    res = run_many([{'argv': lm_args(tiny_data, out, v, *[f'--{k}={x}' for k, x in VARIANTS[v].items()])}
                    for v in LOSS_VARIANTS])
    return out, dict(zip(LOSS_VARIANTS, res))


@pytest.mark.parametrize('variant', LOSS_VARIANTS)
def test_muon_lowers_the_loss_for_every_variant(variant_runs, variant):
    out, res = variant_runs
    assert res[variant]['rc'] == 0, res[variant]['stderr'][-3000:]
    # nGPT starts slower at this size with either optimizer (AdamW: 5.78 -> 5.48 in these 30 steps)
    assert_loss_goes_down(os.path.join(out, variant), 0.2 if variant == 'ngpt' else 0.5)


def test_muon_lowers_the_loss_for_seq2seq_records_and_dpo(tiny_data, tmp_path):
    # seq2seq with an encoder-decoder: src/tgt records made by prepare/samsum.py from a local file
    src = tmp_path / 'src'
    src.mkdir()
    names = ['Anna', 'Tom', 'Eve', 'Bob']
    for split, n in (('train', 40), ('validation', 8), ('test', 8)):
        rows = [{'id': str(i), 'dialogue': f"{names[i % 4]}: see you at {i} pm?\n{names[(i + 1) % 4]}: ok",
                 'summary': f"{names[i % 4]} and {names[(i + 1) % 4]} meet at {i} pm."} for i in range(n)]
        (src / f'{split}.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    root = tmp_path / 'data'
    run(['prepare/samsum.py', f'--source={src}', f'--out_dir={root / "ss"}', '--vocab_size=300'])
    run(['train.py', '--data=ss', f'--data_root={root}', f'--out_dir={tmp_path}', '--run_name=s2s',
         '--objective=seq2seq', '--n_encoder_layer=2', '--block_size=48', '--batch_size=8', '--max_iters=30',
         '--eval_interval=30'] + TINY)
    assert_loss_goes_down(tmp_path / 's2s', 0.5)
    # records (numeric sequences, prepare/numeric.py)
    run(['prepare/numeric.py', f'--out_dir={root / "numeric"}', '--n_train=300', '--n_val=50', '--n_test=50',
         '--n_test_long=25'])
    run(['train.py', 'config/numeric_softmax.py', f'--data_root={root}', f'--out_dir={tmp_path}', '--run_name=num',
         '--auto_prepare=False', '--batch_size=16', '--max_iters=30', '--eval_interval=30'] + TINY)
    assert_loss_goes_down(tmp_path / 'num', 0.3)
    # dpo: a Muon-trained SFT model, pairs from its data, then DPO with Muon from it
    sft = lm_run(tiny_data, tmp_path, 'sft', '--pos_emb=rope', '--block_size=96')
    run(['prepare/pairs.py', '--data=tiny', f'--data_root={tiny_data}', '--corruption=noise', '--train_pairs=-1',
         '--val_pairs=10', '--test_pairs=24', '--max_response_tokens=32', '--noise_frac=0.1',
         f'--out_dir={root / "pairs"}'])
    run(['train.py', '--objective=dpo', '--data=pairs', f'--data_root={root}', f'--out_dir={tmp_path}',
         '--run_name=dpo', f'--init_from={sft}', '--pos_emb=rope', '--block_size=96', '--batch_size=4',
         '--max_iters=24', '--eval_interval=24', '--beta=0.5', '--muon_lr=0.01'] + TINY)
    assert_loss_goes_down(tmp_path / 'dpo', 0.1)


def test_bad_optimizer_settings_are_one_line_errors(tiny_data, tmp_path):
    for bad, words in (('--optimizer=no_such_optimizer', "--optimizer='no_such_optimizer' is not accepted: optimizer takes one of 'adamw', 'muon'"),
                       ('--muon_momentum=1.5', 'is not accepted: muon_momentum takes a number in [0, 1)')):
        r = run(['train.py', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={tmp_path}', '--optimizer=muon',
                 bad], check=False)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.listdir(tmp_path)  # nothing written


def test_muon_compare_quick_mode(tiny_data, tmp_path):
    r = run(['analysis/muon_compare.py', 'config/muon_compare.py', '--quick=True', '--data=tiny',
             f'--data_root={tiny_data}', f'--out_dir={tmp_path}', f'--figure={tmp_path / "fig.png"}',
             '--adamw_lrs=[3e-3]', '--muon_lrs=[0.01, 0.02]', '--seeds=[1, 2]'])
    res = json.load(open(tmp_path / 'results.json'))
    sweep = {(o, lr): v for o, lr, v in res['sweep']}
    assert res['best']['adamw'] == 3e-3  # the best of each sweep goes on to the seeds
    assert sweep[('muon', res['best']['muon'])] == min(sweep[('muon', 0.01)], sweep[('muon', 0.02)])
    assert len(res['per_seed']) == 2 and all(r['step_time_ratio'] > 0 for r in res['per_seed'])
    for r in res['per_seed']:  # AdamW reaches its own final loss, by definition, within its run
        assert 0 < r['adamw_steps'] <= 8 and r['adamw_time'] > 0
    assert (tmp_path / 'fig.png').stat().st_size > 10000 and 'mean ± std' in open(tmp_path / 'results.md').read()
    again = run(['analysis/muon_compare.py', 'config/muon_compare.py', '--quick=True', '--data=tiny',
                 f'--data_root={tiny_data}', f'--out_dir={tmp_path}', f'--figure={tmp_path / "fig.png"}',
                 '--adamw_lrs=[3e-3]', '--muon_lrs=[0.01, 0.02]', '--seeds=[1, 2]'])
    assert again.stdout.count('reusing') == 7  # 3 sweep + 4 seed runs, none trained again
    assert '== training' not in again.stdout
