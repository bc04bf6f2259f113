"""WSD decay branches (decay_budgets, --branch), the WSD schedule at its boundaries, model_size presets."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import schedule
from configurator import UserError
from schedule import lr_at, MODEL_SIZES, decay_points, format_tokens
from test_train import run_train, run_dir, metrics, weights, ROOT

TPS = 8 * 32  # tokens per step of test_train's TINY settings (batch 8 x block 32)


def test_wsd_boundaries_and_branch_schedules_agree_before_decay():
    cfg = dict(learning_rate=1.0, min_lr=0.1, warmup_iters=4, lr_schedule='wsd', decay_frac=0.25, decay_shape='cosine')
    # 40 steps: decay over the last 10 (steps 30..39); cosine's first step is just below lr, the last is min_lr
    assert lr_at(29, cfg, 40) == 1.0
    assert lr_at(30, cfg, 40) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 10)))
    assert lr_at(39, cfg, 40) == pytest.approx(0.1)
    cfg['decay_shape'] = 'linear'
    assert lr_at(30, cfg, 40) == pytest.approx(0.1 + 0.9 * 0.9)
    cfg['decay_frac'] = 0.0
    assert lr_at(39, cfg, 40) == 1.0  # no decay at all
    cfg['decay_frac'] = 0.25
    # a short budget's schedule equals a long one's until the short budget's decay starts: the premise of branches
    for short, long in ((20, 40), (33, 100)):
        start = short - round(0.25 * short)
        assert [lr_at(s, cfg, short) for s in range(start)] == [lr_at(s, cfg, long) for s in range(start)]
        assert lr_at(start, cfg, short) < lr_at(start, cfg, long)


def test_decay_points_and_errors():
    cfg = dict(decay_budgets=[TPS * 20, TPS * 30.0], lr_schedule='wsd', decay_frac=0.2)
    assert decay_points(cfg, TPS) == {16: [TPS * 20], 24: [TPS * 30]}
    assert decay_points({**cfg, 'decay_budgets': []}, TPS) == {}
    with pytest.raises(Exception, match="lr_schedule='wsd'"):
        decay_points({**cfg, 'lr_schedule': 'cosine'}, TPS)
    with pytest.raises(Exception, match='too short'):
        decay_points({**cfg, 'decay_budgets': [TPS * 2]}, TPS)
    assert format_tokens(2_400_000_000) == '2.4B' and format_tokens(48_400_000_000) == '48.4B'


def test_decay_branches_resume_from_predecay_and_equal_plain_runs(tiny_data, tmp_path):
    short, long = TPS * 20, TPS * 30   # decay_frac 0.2: decays start at steps 16 and 24
    common = ['--lr_schedule=wsd', '--decay_frac=0.2', '--eval_interval=10', '--learning_rate=3e-3']
    r = run_train(common + [f'--decay_budgets=[{long}, {short}]', '--run_name=wsd'], tiny_data, tmp_path / 'b')
    d = run_dir(tmp_path / 'b')
    assert torch.load(os.path.join(d, 'ckpt', f'predecay_{short}.pt'), weights_only=True)['step'] == 16
    assert torch.load(os.path.join(d, 'ckpt', f'predecay_{long}.pt'), weights_only=True)['step'] == 24
    stable = [m for m in metrics(d) if m['event'] == 'train']
    assert stable[-1]['step'] == 24 and all(m['lr'] == 3e-3 for m in stable if m['step'] > 5)
    for budget, start in ((short, 16), (long, 24)):
        bd = os.path.join(d, f'decay_{budget}')
        ev = metrics(bd)
        assert ev[0]['event'] == 'train_begin' and ev[0]['step'] == start and ev[0]['tokens'] == start * TPS
        assert ev[-1]['event'] == 'train_end' and ev[-1]['tokens'] == budget
        assert torch.load(os.path.join(bd, 'ckpt', 'last.pt'), weights_only=True)['step'] == budget // TPS
        assert [m for m in ev if m['event'] == 'evaluate'][-1]['step'] == budget // TPS
    assert r.stdout.count('"train_begin"') == 3
    # the short branch equals a plain WSD run of that budget, bitwise (on CPU)
    run_train(common + [f'--max_tokens={short}', '--run_name=plain'], tiny_data, tmp_path / 'p')
    plain = weights(run_dir(tmp_path / 'p'))
    branch = weights(os.path.join(d, f'decay_{short}'))
    assert all(torch.equal(plain[k], branch[k]) for k in plain)
    # re-running one branch alone starts from its pre-decay checkpoint again (no stable steps) and agrees
    with open(os.path.join(d, f'decay_{short}', 'ckpt', 'last.pt'), 'r+b') as f:
        f.truncate(100)  # damage the old result: the re-run must not read it
    r = run_train(common + [f'--decay_budgets=[{long}, {short}]', '--run_name=wsd', f'--branch={short}'],
                  tiny_data, tmp_path / 'b')
    assert r.stdout.count('"train_begin"') == 1 and '"step": 16' in r.stdout
    again = weights(os.path.join(d, f'decay_{short}'))
    assert all(torch.equal(plain[k], again[k]) for k in plain)
    r = run_train(common + [f'--decay_budgets=[{long}]', '--run_name=wsd', f'--branch={short}'],
                  tiny_data, tmp_path / 'b', check=False)
    assert r.returncode == 2 and 'no pre-decay checkpoint' in r.stderr
    # the figure script's table: each branch's final val loss; over several runs mean ± std (here one run twice)
    fig = tmp_path / 'wsd.png'
    a = subprocess.run([sys.executable, 'analysis/wsd_branches.py', f'--run_dir={d}', f"--seed_runs=['{d}']",
                        f'--out={fig}'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert a.returncode == 0, a.stderr[-2000:]
    for budget in (short, long):
        last = [m for m in metrics(os.path.join(d, f'decay_{budget}')) if m['event'] == 'evaluate'][-1]['val_loss']
        assert f"{last:.4f} ± 0.0000 |" in a.stdout
    stable = {m['tokens']: m['val_loss'] for m in metrics(d) if m['event'] == 'evaluate'}
    assert f"| {stable[short]:.4f} ± 0.0000 |" in a.stdout and long not in stable and a.stdout.count('| n/a |') == 1
    assert 'mean ± std, 2 runs' in a.stdout and fig.stat().st_size > 5000
    bad = subprocess.run([sys.executable, 'analysis/wsd_branches.py', f'--run_dir={d}',
                          f"--seed_runs=['{run_dir(tmp_path / 'p')}']", f'--out={tmp_path / "bad.png"}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and 'same config' in bad.stderr and not (tmp_path / 'bad.png').exists()


def test_model_size_preset_with_explicit_values_winning(tiny_data, tmp_path):
    r = run_train(['--model_size=tiny', '--global_batch_tokens=0', f'--max_tokens={TPS * 3}', '--warmup_iters=0', '--eval_interval=3',
                   '--n_head=2', '--n_layer=2', '--block_size=32'], tiny_data, tmp_path)
    d = run_dir(tmp_path)
    cfg = json.load(open(os.path.join(d, 'config.json')))
    n_embd, n_layer, n_head, micro, batch_tokens, lr, budget = MODEL_SIZES['tiny']
    # explicit values (test_train's TINY settings and the ones above) win; the rest comes from the preset
    assert (cfg['n_layer'], cfg['n_embd'], cfg['block_size'], cfg['batch_size']) == (2, 32, 32, 8)
    assert cfg['learning_rate'] == lr and cfg['min_lr'] == pytest.approx(lr / 10)
    assert os.path.basename(d) == f'tiny_learned_{format_tokens(TPS * 3)}_s1337' == 'tiny_learned_768_s1337'
    assert 'model_size tiny' in r.stdout
    with pytest.raises(UserError, match="unknown model_size 'no_such_size'; valid values: '', tiny, small"):
        schedule.apply_model_size({'model_size': 'no_such_size'}, {})
