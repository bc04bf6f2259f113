"""analysis/study.py, the study scripts' run helper: a finished run of the same arguments is reused, other
arguments retrain it, train.py's own (versioned) naming is followed, a failing step is one clear error."""
import math
import os

import pytest

from analysis.study import curve, final, fmt, is_finished, mean_std, read_metrics, train_run
from configurator import UserError

ARGS = ['--data=tiny', '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=2',
        '--max_iters=2', '--eval_interval=2', '--eval_iters=1', '--warmup_iters=0', '--log_interval=1',
        '--log_tensorboard=False', '--log_figures=False', '--sample_tokens=0', '--device=cpu']


def test_train_run_reuses_only_a_finished_run_of_the_same_arguments(tiny_data, tmp_path):
    args = ARGS + [f'--data_root={tiny_data}']
    d = train_run(args, str(tmp_path), 'r', quiet=True)
    assert d == os.path.join(str(tmp_path), 'r') and is_finished(d)
    assert [s for s, _ in curve(d)] == [2] and math.isfinite(final(d))
    events = open(os.path.join(d, 'metrics.jsonl')).read()
    assert train_run(args, str(tmp_path), 'r', quiet=True) == d
    assert open(os.path.join(d, 'metrics.jsonl')).read() == events  # reused: not trained again
    assert train_run(args + ['--max_iters=3'], str(tmp_path), 'r', quiet=True) == d
    assert [e['step'] for e in read_metrics(d) if e['event'] == 'train'][-1] == 3  # other arguments: retrained
    assert sorted(os.listdir(tmp_path)) == ['r']  # in place, never r_v2


def test_train_run_follows_train_py_naming_and_fails_in_one_error(tiny_data, tmp_path):
    args = ARGS + [f'--data_root={tiny_data}', f'--out_dir={tmp_path}', '--run_name=x_s{seed}']
    assert train_run(args, quiet=True) == os.path.join(str(tmp_path), 'x_s1337')
    assert train_run(args + ['--n_embd=8'], quiet=True) == os.path.join(str(tmp_path), 'x_s1337_v2')
    with pytest.raises(UserError) as e:
        train_run(args + ['--pos_emb=no_such_encoding'], quiet=True)
    assert str(e.value).startswith('command failed (exit 2): train.py')
    assert "--pos_emb='no_such_encoding' is not accepted: pos_emb takes one of 'none', 'learned'" in str(e.value)


def test_mean_std_and_fmt():
    assert mean_std([1, 2, 3]) == (2.0, 1.0) and mean_std([5]) == (5.0, 0.0)
    assert fmt([0.5, 1.5]) == '1.000 ± 0.707'


def test_in_parallel_keeps_order_runs_side_by_side_and_raises():
    import threading
    import time
    from analysis.study import in_parallel
    live, peak, lock = [0], [0], threading.Lock()

    def work(x):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05 * max(3 - x, 0))  # later items finish first: the result order must not follow
        with lock:
            live[0] -= 1
        if x == 99:
            raise UserError('bad item 99')
        return x * x
    assert in_parallel(work, [0, 1, 2], jobs=2) == [0, 1, 4]
    assert peak[0] == 2
    peak[0] = 0
    assert in_parallel(work, [0, 1, 2], jobs=1) == [0, 1, 4] and peak[0] == 1
    with pytest.raises(UserError, match='bad item 99'):
        in_parallel(work, [0, 99], jobs=2)


def test_run_script_in_a_fork_equals_a_new_interpreter(tiny_data, tmp_path, monkeypatch):
    """run_script's fork server (one torch import for a whole study) must be invisible: the same output, exit
    codes, traceback, environment (as the caller has it now), working folder, argv, sys.path, stdin, separate
    stderr, exit handlers as `python <script>`, and the same trained numbers. tests/inproc.run uses it too."""
    from analysis import study
    from tests.inproc import run
    script = tmp_path / 's.py'
    script.write_text(
        "import atexit, os, sys\n"
        "import torch\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        "print('argv', sys.argv[1:], 'cwd', os.getcwd(), 'env', os.environ.get('LAB_T'), 'threads',\n"
        "      torch.get_num_threads(), 'path', sys.path[0] == os.path.dirname(os.path.abspath(__file__)),\n"
        "      [p for p in sys.path if 'tests' in p or p in ('', '.')])\n"
        "print('to stderr', file=sys.stderr)\n"
        "if sys.argv[1] == 'exit': sys.exit(3)\n"
        "if sys.argv[1] == 'raise': raise ValueError('boom')\n"
        "if sys.argv[1] == 'stdin': print('read', repr(sys.stdin.read()))\n")
    assert study._fork_server()[0] is not None  # Linux: the fork path is what this test checks
    results = {}
    for mode in ('1', '0'):  # LAB_NO_FORKSERVER=1: a new interpreter, the reference
        monkeypatch.setenv('LAB_NO_FORKSERVER', mode)
        monkeypatch.setenv('LAB_T', 'old')
        study.run_script([script, 'ok'], quiet=True)  # the fork server runs from here on
        monkeypatch.setenv('LAB_T', 'set after the server started')
        out = study.run_script([script, 'ok', 'a b'], threads=1, quiet=True)
        errs = []
        for how in ('exit', 'raise'):
            with pytest.raises(UserError) as e:
                study.run_script([script, how], quiet=True)
            errs.append(str(e.value))
        r = run([script, 'stdin'], cwd=tmp_path, env={**os.environ, 'OMP_NUM_THREADS': '2'}, input='line 1\nline 2')
        d = train_run(ARGS + [f'--data_root={tiny_data}'], str(tmp_path / mode), 'r', quiet=True)
        results[mode] = (out, errs, (r.returncode, r.stdout, r.stderr), curve(d))
    assert results['0'] == results['1']
    out, errs, r, _ = results['0']
    assert out == (f"argv ['ok', 'a b'] cwd {study.ROOT} env set after the server started threads 1 path True []\n"
                   "to stderr\nexit handler ran\n")
    assert errs[0].startswith('command failed (exit 3):') and errs[0].endswith('exit handler ran')
    assert errs[1].startswith('command failed (exit 1):') and 'ValueError: boom' in errs[1]
    assert r == (0, f"argv ['stdin'] cwd {tmp_path} env set after the server started threads 2 path True []\n"
                    "read 'line 1\\nline 2'\nexit handler ran\n", 'to stderr\n')
