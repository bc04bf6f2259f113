"""Configurator and launcher: strict keys and types, one-line errors, exit code 2, nothing written."""
import os
import subprocess
import sys

import pytest

import configurator
from configurator import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def defaults():
    return dict(learning_rate=6e-4, max_iters=100, compile=False, data='stdlib', decay_budgets=[1, 2], run_name='')


def test_overrides_and_types():
    g = defaults()
    cfg = configurator.configure(g, ['--learning_rate=1e-3', '--max_iters=5', '--compile=True', '--data=wikitext',
                                     '--decay_budgets=[3, 4, 5]', '--run_name=a b'])
    assert cfg == dict(learning_rate=1e-3, max_iters=5, compile=True, data='wikitext', decay_budgets=[3, 4, 5],
                       run_name='a b')
    assert g['max_iters'] == 5
    assert configurator.configure(defaults(), ['--learning_rate=1'])['learning_rate'] == 1.0  # int ok for float


@pytest.mark.parametrize('arg,match', [
    ('--learnin_rate=1e-3', "unknown config key 'learnin_rate' .*did you mean 'learning_rate'"),
    ('--max_iters=1.5', "--max_iters expects an int"),
    ('--compile=1', "--compile expects True or False"),
    ('--max_iters', "has no value"),
    ('config/nope_not_here.py', "config file 'config/nope_not_here.py' not found"),
])
def test_errors(arg, match):
    with pytest.raises(UserError, match=match):
        configurator.configure(defaults(), [arg])


def test_config_file_then_override(tmp_path):
    p = tmp_path / 'c.py'
    p.write_text('"""doc"""\nmax_iters = 7\nlearning_rate = 2e-3\n')
    cfg = configurator.configure(defaults(), [str(p), '--learning_rate=3e-3'])
    assert cfg['max_iters'] == 7 and cfg['learning_rate'] == 3e-3
    p.write_text('max_itters = 7\n')
    with pytest.raises(UserError, match="unknown config key 'max_itters'"):
        configurator.configure(defaults(), [str(p)])


def run(args, cwd):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('arg', ['--n_layr=2', '--max_iters=abc', 'config/missing.py', '--pos_emb=no_such_encoding',
                                 '--n_embd=30'])
def test_train_bad_input_exits_2_one_line_nothing_written(tmp_path, arg):
    r = run([sys.executable, os.path.join(ROOT, 'train.py'), f'--out_dir={tmp_path}/out',
             f'--data_root={tmp_path}/nodata', arg], cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    assert not os.path.exists(tmp_path / 'out')


def test_missing_data_names_prepare_script(tmp_path):
    r = run([sys.executable, os.path.join(ROOT, 'train.py'), f'--out_dir={tmp_path}/out',
             f'--data_root={tmp_path}/nodata', '--data=stdlib'], cwd=ROOT)
    assert r.returncode == 2 and 'prepare/stdlib.py' in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / 'out')


def test_launcher_list_and_unknown_problem():
    r = run(['bash', os.path.join(ROOT, 'launcher.sh'), 'list'], cwd=ROOT)
    assert r.returncode == 0 and 'quickstart' in r.stdout and 'gpt2_124m' in r.stdout
    r = run(['bash', os.path.join(ROOT, 'launcher.sh'), 'quikstart'], cwd=ROOT)
    assert r.returncode == 2 and "unknown problem 'quikstart'" in r.stderr and 'quickstart' in r.stderr


@pytest.mark.parametrize('text,line,what', [
    ('"""a config"""\nmax_iters = 10\nn_layer = (2\n', 3, "syntax error in config file: '(' was never closed"),
    ('max_iters = 10\n\nn_layer = int("two")\n', 3,
     "config file raised ValueError: invalid literal for int() with base 10: 'two'"),
])
def test_config_file_error_is_one_line_with_file_and_line(tmp_path, text, line, what):
    cfg = tmp_path / 'bad_config.py'
    cfg.write_text(text)
    r = run([sys.executable, os.path.join(ROOT, 'train.py'), str(cfg), f'--out_dir={tmp_path}/out',
             f'--data_root={tmp_path}/nodata'], cwd=ROOT)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert lines[0] == f"error: {cfg}:{line}: {what}; fix that line"
    assert sorted(os.listdir(tmp_path)) == ['bad_config.py']
