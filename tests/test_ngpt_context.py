"""analysis/ngpt_context.py (./launcher.sh ngpt_context): the --quick study end to end, its re-run, its bad settings."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def launch(*args, timeout=900):
    return subprocess.run(['./launcher.sh', 'ngpt_context', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def test_ngpt_context_quick_end_to_end_and_rerun(tiny_data, tmp_path):
    """--quick: every (variant, context) at one lr and 2 seeds, equal tokens per step, variants_compare's recipes;
    the table's cells are the per-seed values of results.json, which are the runs' own; a re-run trains nothing.
    nGPT is the baseline here because at 6 steps GPT gets ahead of it, so the speedup cells hold numbers."""
    from analysis.study import curve, final, fmt
    from analysis.lr_sweep import steps_cell, steps_to_reach
    cmd = ['--quick=True', "--variants=['nGPT', 'GPT']", '--lrs=[1e-2]', '--data=tiny', f'--data_root={tiny_data}',
           f'--out_dir={tmp_path}']
    r = launch(*cmd)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count('== training ') == 4 + 4    # 2 variants x 2 contexts: the sweep run (seed 1), seed 2
    out = tmp_path / 'quick'
    res = json.load(open(out / 'results.json'))
    assert res['config']['contexts'] == [8, 32] and res['config']['tokens_per_step'] == 64
    md = open(out / 'results.md').read()
    speedups = []
    for c, batch in ((8, 8), (32, 2)):
        ctx = res['contexts'][str(c)]
        finals = ctx['summary']['nGPT']['final']
        assert ctx['target'] == pytest.approx(sum(finals) / 2)
        for v, row in zip(('nGPT', 'GPT'), ctx['rows']):
            dirs = res['runs'][f'{v}_ctx{c}']
            cfgs = [json.load(open(os.path.join(d, 'config.json'))) for d in dirs]
            assert [(x['seed'], x['block_size'], x['batch_size'], x['max_iters']) for x in cfgs] == \
                   [(1, c, batch, 6), (2, c, batch, 6)]                        # equal tokens per step: 64
            ngpt = v == 'nGPT'
            assert all((x['ngpt'], x['weight_decay'], x['warmup_iters']) == ((True, 0.0, 0) if ngpt else (False, 0.1, 1))
                       for x in cfgs)                                          # variants_compare's recipes
            s = ctx['summary'][v]
            assert s['final'] == [final(d) for d in dirs] and s['final'][0] != s['final'][1]
            assert s['steps'] == [steps_to_reach(curve(d), ctx['target']) for d in dirs]
            assert s['speedup'] == [None if x is None else 6 / x for x in s['steps']]
            cells = list(row.values())
            assert cells[0] == v and cells[2] == fmt(s['final'], 4) and cells[3] == steps_cell(s['steps'])
            assert cells[4] == ('reference' if ngpt else steps_cell(s['speedup'], 2, 'x'))
            assert '| ' + ' | '.join(map(str, cells)) + ' |' in md            # the markdown shows the same cells
            speedups += [x for x in s['speedup'] if x is not None and not ngpt]
    assert speedups, 'no speedup cell holds a number: the test would not check the ratio'
    assert md.count('### Context') == 2 and 'arXiv 2410.01131' in md and 'Machine:' in md
    for f in ('speedup_vs_context.png', 'ctx8.png', 'ctx32.png'):
        assert (out / f).stat().st_size > 5000
    r2 = launch(*cmd, '--jobs=1')
    assert r2.returncode == 0 and '== training' not in r2.stdout, r2.stdout[-2000:]
    assert json.load(open(out / 'results.json'))['contexts'] == res['contexts']


@pytest.mark.parametrize('arg, says', [
    ('--contexts=[128, 100]', 'tokens_per_step=2048 is not a multiple of contexts [100]'),
    ('--contexts=[128]', 'contexts'),
    ("--variants=['GPT', 'XL']", 'variants'),
    ('--sweep_iters=500', 'sweep_iters <= max_iters'),
    ('--tokens_per_step=0', 'tokens_per_step'),
    ('--lrs=[0.0]', 'lrs'),
    ('--jobs=0', 'jobs'),
    ('--n_head=3', 'n_head'),  # only with a differential variant
])
def test_ngpt_context_bad_settings_exit_2_with_one_line(tmp_path, arg, says):
    extra = ["--variants=['GPT', 'DiffNGPT']"] if arg == '--n_head=3' else []
    r = launch(*extra, arg, f'--out_dir={tmp_path}/out', f'--figure={tmp_path}/fig.png', timeout=120)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith('error: ')
    assert os.listdir(tmp_path) == []                                          # nothing written
