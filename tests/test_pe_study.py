"""pe_study end to end in quick mode (through the launcher), and eval_tasks.py algorithmic on its checkpoints."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pe_study_quick_end_to_end_and_algorithmic_cli(tiny_data, tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    out, figs = tmp_path / 'out', tmp_path / 'figs'
    r = subprocess.run(['./launcher.sh', 'pe_study', '--quick=True', "--encodings=['learned', 'rope']", '--data=tiny',
                        f'--data_root={tiny_data}', f'--out_dir={out}', f'--figures_dir={figs}'],
                       cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.load(open(out / 'results.json'))
    assert list(res['results']) == ['learned', 'rope']
    rope, learned = res['results']['rope'], res['results']['learned']
    assert rope['ppl']['4x'] is not None and learned['ppl']['2x'] is None  # learned cannot go past block_size
    assert len(rope['tasks']) == 6 and 0 <= rope['id_acc'] <= 1
    md = open(out / 'results.md').read()
    assert md.count('| rope |') == 2 and md.count('| learned |') == 2
    for f in ('loss_curves.png', 'ppl_by_position.png', 'task_accuracy.png', 'encodings.png'):
        assert (figs / f).stat().st_size > 1000, f
    assert open(figs / 'results.md').read() == md
    e = subprocess.run([sys.executable, 'eval_tasks.py', 'algorithmic', f"--ckpt={res['runs']['rope']}", '--data=tiny',
                        f'--data_root={tiny_data}', '--algo_n=1', '--algo_ppl_windows=1', '--algo_fewshot=1'],
                       cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert e.returncode == 0, e.stderr[-2000:]
    assert '| no_carry_add |' in e.stdout and '| ppl_4x |' in e.stdout
    rows = json.load(open(os.path.join(res['runs']['rope'], 'eval_algorithmic.json')))
    assert [r['task'] for r in rows][:6] == ['passkey', 'copy_distance', 'reverse', 'sort', 'no_carry_add', 'simple_copy']
    assert len(rows[-1]['loss_by_position']) == 4 * 32
