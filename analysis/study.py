"""What every study script shares: run a training (or any) script in its own process, reuse a finished run,
read its metrics, summarize seeds, draw figures without a display. A study script is then about its study only.

    sys.path.insert(0, ROOT)   # the repository root, then:
    from analysis.study import ROOT, run_script, train_run, in_parallel, read_metrics, curve, mean_std

(Named study.py, not common.py: the top-level common.py is what train.py imports as `common`.)

A run either goes to an explicit directory (out_dir/run_name), so a study knows where each run is
before it starts and a finished run (train_end in metrics.jsonl, made by the same arguments) is reused,
not redone; or train.py names it from its config (versioned _v2, _v3... when a different config used
the name) and the directory is read from the run's train_end marker.
"""
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from configurator import UserError  # noqa: E402

ECHO = ('step ', '{"event": "evaluate"', '{"event": "train_end"', 'init_from', 'wrote', 'error')


def check_seeds(seeds):
    """Seeds name runs and go to train.py's --seed: distinct integers (the declaration has checked the count and
    the range; a float or a repeat would pass it)."""
    if len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"--seeds={list(seeds)!r}: the seeds must be distinct integers, e.g. --seeds=[1, 2, 3]")


def _forked(args, env, cwd, base_path, stdin, stdout, stderr):
    """A child of the fork server: `python <args>` as a new interpreter would run it (environment, working
    folder, argv, sys.path, stdin/stdout/stderr on the given pipes; stderr None: onto stdout). Uncaught
    SystemExit/exceptions become the exit code (and the script's traceback) through multiprocessing's
    bootstrap; the exit handlers run as at an interpreter's exit (multiprocessing's children skip them)."""
    import atexit
    import runpy
    import torch
    for fd, conn in ((0, stdin), (1, stdout), (2, stderr or stdout)):
        os.dup2(conn.fileno(), fd)
    for conn in (stdin, stdout, stderr):
        conn and conn.close()
    sys.stdin = open(0, closefd=False)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(env)  # the caller's environment now, not the server's at its start
    if 'OMP_NUM_THREADS' in env:
        torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    os.chdir(cwd)
    sys.argv = list(args)
    sys.path[:] = [os.path.dirname(os.path.abspath(args[0]))] + base_path  # as `python <script>` sees it
    try:
        runpy.run_path(args[0], run_name='__main__')
    except SystemExit:
        raise
    except BaseException as e:  # the traceback the interpreter prints: the script's frames, not runpy's or ours
        import traceback
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if f.filename not in (__file__, runpy.__file__, '<frozen runpy>')]
        print('Traceback (most recent call last):\n', *traceback.format_list(frames), *traceback.format_exception_only(e),
              sep='', end='', file=sys.stderr)
        raise SystemExit(1)
    finally:
        atexit._run_exitfuncs()


_FORK_SERVER = []  # (multiprocessing context, a new interpreter's sys.path[1:]), made on first use


def _fork_server():
    """Every run pays Python's start and the torch + torch._dynamo imports (torch.optim's first step imports
    the latter), 3-8 s of CPU on a 2-core machine, often more than a short run itself. A fork server imports
    them once; each script then runs in its own fresh fork of it (own globals, own process, own exit code).
    None where the platform has no fork server (Windows): plain subprocesses there."""
    import multiprocessing as mp
    if not _FORK_SERVER:
        ctx, base_path = None, None
        if 'forkserver' in mp.get_all_start_methods():
            ctx = mp.get_context('forkserver')
            ctx.set_forkserver_preload(['torch', 'torch._dynamo', 'numpy'])
            base_path = json.loads(subprocess.check_output(
                [sys.executable, '-c', 'import json, sys; print(json.dumps(sys.path[1:]))'], text=True))
        _FORK_SERVER.append((ctx, base_path))
    return _FORK_SERVER[0]


class _Forked:
    """The part of subprocess.Popen that run_script and the tests use (stdin/stdout/stderr text pipes,
    wait(), returncode, communicate()), for a script running in a fork of the server."""

    def __init__(self, ctx, base_path, args, env, cwd, merge):
        ins, outs = ctx.Pipe(duplex=False), [ctx.Pipe(duplex=False) for _ in range(1 if merge else 2)]
        child = (ins[0], outs[0][1], None if merge else outs[1][1])
        self._p = ctx.Process(target=_forked, args=(args, env, cwd, base_path, *child))
        self._p.start()
        for conn in child:
            conn and conn.close()
        self.stdin = os.fdopen(os.dup(ins[1].fileno()), 'w')
        self.stdout, self.stderr = [os.fdopen(os.dup(r.fileno()), 'r', errors='replace') for r, _ in outs] + [None] * merge
        for r, _ in [ins[::-1], *outs]:
            r.close()
        self.returncode = None

    def wait(self, timeout=None):
        self._p.join(timeout)
        if self._p.exitcode is None:
            self._p.kill()
            self._p.join()
            raise subprocess.TimeoutExpired(self._p.name, timeout)
        self.returncode = self._p.exitcode
        return self.returncode

    def communicate(self, input=None, timeout=None):
        """(stdout text, stderr text), as subprocess.Popen.communicate."""
        import threading
        got = {}
        readers = [threading.Thread(target=lambda k=k, f=f: got.__setitem__(k, f.read()), daemon=True)
                   for k, f in (('out', self.stdout), ('err', self.stderr)) if f]
        for t in readers:
            t.start()
        try:
            self.stdin.write(input or '')
            self.stdin.close()
        except BrokenPipeError:  # the script ended without reading all of it, as a process may
            pass
        self.wait(timeout)
        for t in readers:
            t.join()
        for f in (self.stdout, self.stderr):
            f and f.close()
        return got.get('out'), got.get('err')


def popen(args, env=None, cwd=ROOT, merge_stderr=True):
    """Start `python <args>` (args[0] a script path) with text pipes for stdin, stdout and stderr (merged into
    stdout by default): a fresh fork of the server (see _fork_server), or a new interpreter where there is no
    fork server, args[0] is not a .py file, or LAB_NO_FORKSERVER=1. env None: this process's environment."""
    args, env = [str(a) for a in args], dict(os.environ if env is None else env)
    ctx, base_path = _fork_server() if args[0].endswith('.py') else (None, None)
    if ctx is None or env.get('LAB_NO_FORKSERVER') == '1':
        return subprocess.Popen([sys.executable, *args], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True, env=env)
    return _Forked(ctx, base_path, args, env, cwd, merge_stderr)


def run_script(args, threads=1, echo=ECHO, quiet=False):
    """python <args...> from the repository root, printing the command and echoing the output lines that
    start with one of `echo` (echo=('',): every line); returns stdout+stderr as text. Scripts run in a fresh
    fork of a server that has imported torch (see popen).
    A failure raises one UserError line with the command and the last lines it printed."""
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'PYTHONUNBUFFERED': '1'}
    args = [str(a) for a in args]
    if not quiet:
        print('$ python ' + ' '.join(args), flush=True)
    p = popen(args, env)
    p.stdin.close()
    out = []
    for line in p.stdout:
        out.append(line)
        if not quiet and line.startswith(echo):
            print('   ' + line.rstrip()[:200], flush=True)
    rc = p.wait()
    p.stdout.close()
    if rc != 0:
        tail = ''.join(out[-15:]).rstrip()
        raise UserError(f"command failed (exit {rc}): {' '.join(args)}\n{tail}")
    return ''.join(out)


def is_finished(run_dir, args=None):
    """The run ended (train_end) and, when args are given, was made by exactly these arguments.
    A finished run without study_args.json (made before the study scripts recorded their arguments)
    counts as finished, as it did for them: a study's earlier runs are not redone."""
    try:
        ended = any(e.get('event') == 'train_end' for e in read_metrics(run_dir))
        path = os.path.join(run_dir, 'study_args.json')
        if args is None or not ended or not os.path.exists(path):
            return ended
        with open(path) as f:
            return json.load(f) == [str(a) for a in args]
    except (OSError, ValueError):
        return False


def train_run(args, out_dir=None, run_name=None, threads=1, reuse=True, quiet=False, echo=ECHO):
    """train.py <args> into out_dir/run_name; returns the run dir. Reuses a finished run of the same
    arguments; otherwise the directory is cleared first so the run name never gets a _v2 version.
    Without out_dir and run_name, train.py names (and versions) the run from <args>; returns the run dir
    of its first train_end marker (the run itself; decay branches end after it), as train.py printed it."""
    if out_dir is None and run_name is None:
        out = run_script(['train.py', *args], threads=threads, echo=echo, quiet=quiet)
        ends = [json.loads(l) for l in out.splitlines() if l.startswith('{"event": "train_end"')]
        if not ends:
            raise UserError(f"train.py {' '.join(map(str, args))} ended without a train_end marker")
        return ends[0]['run_dir']
    run_dir = os.path.join(out_dir, run_name)
    args = [*[str(a) for a in args], f'--out_dir={out_dir}', f'--run_name={run_name}']
    if reuse and is_finished(run_dir, args):
        if not quiet:
            print(f"== {run_name}: reusing {run_dir}", flush=True)
        return run_dir
    if os.path.exists(run_dir):
        import shutil
        shutil.rmtree(run_dir)
    if not quiet:
        print(f"== training {run_name}", flush=True)
    t0 = time.time()
    run_script(['train.py', *args], threads=threads, echo=echo, quiet=quiet)
    if not quiet:
        print(f"   {run_name}: {time.time() - t0:.0f}s", flush=True)
    with open(os.path.join(run_dir, 'study_args.json'), 'w') as f:
        json.dump(args, f)
    return run_dir


def in_parallel(fn, items, jobs=1):
    """[fn(x) for x in items], at most `jobs` at a time; the results in the order of items, the first error
    raised. fn is expected to wait on a subprocess (train_run), so threads suffice: on a 2-core CPU two
    1-thread trainings side by side take about as long as one, which halves a study's seed phase."""
    items = list(items)
    if jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(fn, items))


def read_metrics(run_dir):
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
        return [json.loads(l) for l in f if l.strip()]


def curve(run_dir, key='val_loss', event='evaluate', x='step'):
    """[(x, value)] of one metric over a run (x = 'step' or 'tokens')."""
    return [(e[x], e[key]) for e in read_metrics(run_dir) if e.get('event') == event and e.get(key) is not None]


def final(run_dir, key='val_loss', event='evaluate'):
    pts = curve(run_dir, key, event)
    return pts[-1][1] if pts else float('nan')


def mean_std(values):
    """(mean, sample std) of a list; std is 0 for one value."""
    v = [float(x) for x in values]
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def fmt(values, digits=3):
    """'mean ± std' for a table cell."""
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def machine():
    """One line naming the machine a study ran on, for its results page: OS, CPU, cores, torch, GPU."""
    import platform
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, dpi=110):
    """Write fig as a PNG (making its folder) and free it; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
