"""Many script invocations in one Python process: the suite's cheap alternative to one process per case.

Starting Python and importing torch costs about 2 s of CPU, more than most cases themselves (a bad setting is
refused in milliseconds, a 2-step tiny training takes well under a second). run_many() starts ONE subprocess that
runs every case with runpy as `python <script> <args>` would: its own module globals, sys.argv, sys.path and
working folder, stdin from the case, stdout/stderr captured, SystemExit turned into the exit code; an escaping
exception becomes exit 1 with its traceback on stderr, as the interpreter would print it. Each case reports what
it left in its working folder when the case asks for that (`clean=True`: the folder is emptied again).

What a separate process still proves and this does not: the interpreter's own exit path; each test file keeps a
few real processes for that (e.g. tests/test_settings.py's test_real_exit_path)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def run_case(case):
    """Run one case in this process (see the module docstring); returns rc, stdout, stderr, written."""
    import contextlib, io, runpy, shutil, traceback
    path, cwd = case['argv'][0], case.get('cwd') or os.getcwd()
    base_path = [p for p in sys.path if p not in ('', '.', os.path.dirname(os.path.abspath(__file__)))]
    os.chdir(cwd)
    before = set(os.listdir('.'))
    sys.path[:] = [os.path.dirname(os.path.abspath(path))] + base_path  # as `python <script>` sees it
    sys.argv, stdin = list(case['argv']), sys.stdin
    sys.stdin = io.StringIO(case.get('stdin', ''))
    o, e, rc = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
            runpy.run_path(path, run_name='__main__')
    except SystemExit as x:
        rc = x.code if isinstance(x.code, int) else (0 if x.code is None else 1)
        if x.code is not None and not isinstance(x.code, int):
            e.write(str(x.code) + '\n')
    except BaseException:
        rc = 1
        e.write(traceback.format_exc())
    finally:
        sys.path[:], sys.stdin = base_path, stdin
    written = sorted(set(os.listdir('.')) - before)
    if case.get('clean'):
        for w in written:  # so that the next case starts from the same folder again
            shutil.rmtree(w) if os.path.isdir(w) else os.remove(w)
    return {'rc': rc, 'stdout': o.getvalue(), 'stderr': e.getvalue(), 'written': written}


def run_many(cases, env=None, timeout=900):
    """cases: dicts with 'argv' ([script path, args...], the script relative to cwd or absolute), optional 'cwd'
    (default ROOT), 'stdin' (text) and 'clean' (bool). Returns one dict per case: rc, stdout, stderr, written."""
    cases = [{**c, 'cwd': str(c.get('cwd') or ROOT), 'argv': [str(a) for a in c['argv']]} for c in cases]
    r = subprocess.run([sys.executable, os.path.abspath(__file__)], input=json.dumps(cases), cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.rstrip().splitlines()[-1])


def run(argv, cwd=ROOT, env=None, input=None, timeout=900):
    """subprocess.run(argv, cwd=cwd, env=env, input=input, timeout=timeout, capture_output=True, text=True) for
    `[sys.executable,] <script.py> args...`, run in a fork of analysis/study.py's server (torch imported once per
    test worker, not once per case; the same process semantics, tested in tests/test_analysis_study.py)."""
    from analysis.study import popen
    argv = [str(a) for a in argv]
    argv = argv[1:] if argv[0] == sys.executable else argv
    p = popen(argv, env=env, cwd=str(cwd), merge_stderr=False)
    out, err = p.communicate(input, timeout)
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def one_error_line(res):
    """The single stderr line of a refused case ('' when stderr is not exactly one 'error: ...' line)."""
    lines = [l for l in res['stderr'].splitlines() if l.strip()]
    return lines[0] if len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in res['stderr'] else ''


if __name__ == '__main__':  # the driver: JSON cases on stdin, JSON results as the last line of stdout
    results = [run_case(c) for c in json.load(sys.stdin)]
    print('\n' + json.dumps(results))
