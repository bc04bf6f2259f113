"""The generated settings test: every script's every setting is declared, and an invalid value made from
each declaration is refused before anything runs (exit 2, one line naming the setting, nothing written).

Scripts are found, not listed: every .py at the top level, in prepare/ and in analysis/ that calls
configurator.configure(globals(), ...). One subprocess (cwd: an empty folder) runs them all in-process
with runpy, one case at a time, and reports JSON; then one plain process per top-level script proves
the real exit path."""
import ast
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# positional arguments a script takes before its --key=value settings (configure(globals(), sys.argv[2:]))
POSITIONAL = {'eval_tasks.py': ['ppl']}


def calls_configure(path):
    """True when the file calls configurator.configure(globals(), ...) (a docstring mention does not count)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == 'configure'
               and isinstance(n.func.value, ast.Name) and n.func.value.id == 'configurator' and n.args
               and isinstance(n.args[0], ast.Call) and getattr(n.args[0].func, 'id', '') == 'globals'
               for n in ast.walk(tree))


SCRIPTS = sorted(os.path.relpath(p, ROOT) for pattern in ('*.py', 'prepare/*.py', 'analysis/*.py')
                 for p in glob.glob(os.path.join(ROOT, pattern)) if calls_configure(p))

# Runs in the subprocess: argv[1] = ROOT, stdin = JSON list of scripts; prints JSON results.
DRIVER = r'''
import contextlib, importlib.util, io, json, os, sys, traceback
root, scripts = sys.argv[1], json.load(sys.stdin)
positional = json.loads(sys.argv[2])
base_path = [p for p in sys.path if p not in ('', '.')]
sys.path[:] = [root] + base_path
import configurator
sys.path.insert(0, os.path.join(root, 'tests'))
from inproc import run_case  # runs one case as `python <script> <arg>` would, in this process
sys.path.pop(0)
results = {}
for rel in scripts:
    path = os.path.join(root, rel)
    sys.path[:] = [os.path.dirname(path), root] + base_path  # as `python <script>` sees it
    res = results[rel] = {'missing': [], 'cases': [], 'load_error': None}
    try:
        spec = importlib.util.spec_from_file_location('_settings_' + rel.replace('/', '_')[:-3], path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            spec.loader.exec_module(mod)
    except BaseException:
        res['load_error'] = traceback.format_exc()[-1500:]
        continue
    g = vars(mod)
    decl = configurator.declarations(g)
    settable = configurator._settable(g)
    res['missing'] = sorted(k for k in settable if k not in decl)
    for key in sorted(decl):
        if key not in settable:
            continue
        bad = configurator.invalid_value(decl[key], settable[key])
        if bad is None:
            continue  # free text: checked where it is used
        arg = f'--{key}={bad!r}'
        r = run_case({'argv': [path] + positional.get(rel, []) + [arg], 'clean': True})
        res['cases'].append({'setting': key, 'arg': arg, 'rc': r['rc'], 'stderr': r['stderr'][-1500:],
                             'written': r['written']})
print(json.dumps(results))
'''


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('settings_cwd')
    r = subprocess.run([sys.executable, '-c', DRIVER, ROOT, json.dumps(POSITIONAL)], input=json.dumps(SCRIPTS),
                       cwd=cwd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.listdir(cwd) == [], f"the cases left {os.listdir(cwd)} in their working folder"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_scripts_are_found():
    """The discovery itself: the scripts every user runs are among them (a broken AST walk finds none)."""
    for s in ('train.py', 'sample.py', 'export_hf.py', 'prepare/stdlib.py', 'prepare/text.py'):
        assert s in SCRIPTS, s
    assert 'configurator.py' not in SCRIPTS  # it mentions configure(globals()) in its docstring only


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_setting_is_declared(results, script):
    res = results[script]
    assert res['load_error'] is None, f"{script} cannot be loaded without running main:\n{res['load_error']}"
    assert not res['missing'], (f"{script}: settings without a declaration (annotate them: Range, OneOf, Match, "
                                f"Text, Each or bool): {', '.join(res['missing'])}")


def refused_cleanly(case):
    """'' when the case exited 2 with one 'error:' line naming the setting and wrote nothing, else what went wrong."""
    lines = [l for l in case['stderr'].splitlines() if l.strip()]
    if case['rc'] != 2:
        return f"exit {case['rc']}"
    if 'Traceback' in case['stderr'] or len(lines) != 1 or not lines[0].startswith('error:'):
        return 'not one error line'
    if f"--{case['setting']}" not in lines[0]:
        return 'the line does not name the setting'
    if case['written']:
        return f"wrote {case['written']}"
    return ''


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_invalid_value_is_refused_before_anything_runs(results, script):
    cases = results[script]['cases']
    bad = [f"  {c['arg']}: {why}\n    stderr: {c['stderr'][-400:]!r}" for c in cases for why in [refused_cleanly(c)]
           if why]
    assert not bad, f"{script}: invalid values not refused cleanly:\n" + '\n'.join(bad)


@pytest.mark.parametrize('script', [s for s in SCRIPTS if '/' not in s])
def test_real_exit_path(results, tmp_path, script):
    """One plain process per top-level script, with the first generated invalid value."""
    cases = results[script]['cases']
    assert cases, f"{script}: no setting with a generated invalid value"
    case = cases[0]
    r = subprocess.run([sys.executable, os.path.join(ROOT, script), *POSITIONAL.get(script, []), case['arg']],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error:'), r.stderr[-2000:]
    assert f"--{case['setting']}" in lines[0] and os.listdir(tmp_path) == []
