"""Every bad input: exit code 2, one line on stderr naming the bad thing and the fix, nothing written.

docs/reliability.md lists these cases; keep the two in step."""
import glob
import re
import os
import shutil
import subprocess
import sys

import pytest

import data as datalib
from inproc import one_error_line, run_many

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4', '--max_iters=2',
        '--warmup_iters=0', '--eval_interval=2', '--eval_iters=1', '--log_tensorboard=False', '--log_figures=False']


@pytest.fixture(scope='module')
def env(tiny_data, tmp_path_factory):
    """A data root with broken variants of 'tiny', a trained checkpoint, a truncated checkpoint."""
    root = tmp_path_factory.mktemp('bad')
    droot = root / 'data'
    shutil.copytree(tiny_data, droot)
    for name in ('trunc', 'magic', 'version', 'smallval'):
        shutil.copytree(droot / 'tiny', droot / name)
    shard = lambda name: sorted(glob.glob(str(droot / name / 'train_*.bin')))[0]
    with open(shard('trunc'), 'r+b') as f:
        f.truncate(os.path.getsize(shard('trunc')) - 7)
    with open(shard('magic'), 'r+b') as f:
        f.write(b'NOTASHRD')
    with open(shard('version'), 'r+b') as f:
        f.seek(8)
        f.write((99).to_bytes(4, 'little'))
    tok = datalib.get_tokenizer({'kind': 'byte'})
    datalib.write_lm_dataset(str(droot / 'smallval'), {'train': ['x' * 5000], 'val': ['tiny']}, tok)
    bpe = datalib.get_tokenizer(datalib.train_bpe(iter(['hello world, hello there'] * 50), 300))
    datalib.write_lm_dataset(str(droot / 'otherbpe'), {'train': ['hello world'] * 20, 'val': ['hello there'] * 20}, bpe)
    runs = root / 'runs'
    r = subprocess.run([sys.executable, 'train.py', '--data=tiny', f'--data_root={droot}', f'--out_dir={runs}',
                        '--run_name=good', *TINY], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ckpt = runs / 'good' / 'ckpt' / 'last.pt'
    shutil.copy(ckpt, root / 'truncated.pt')
    with open(root / 'truncated.pt', 'r+b') as f:
        f.truncate(100)
    return {'data': str(droot), 'runs': str(runs), 'ckpt': str(runs / 'good'), 'truncated': str(root / 'truncated.pt')}


T = ['python', 'train.py', '--data=tiny', '{data}', '{out}'] + TINY
CASES = [
    # (case, command, phrase expected in the one error line)
    ('unknown config key', T + ['--learnin_rate=1e-3'], "did you mean 'learning_rate'"),
    ('wrong value type', T + ['--batch_size=big'], '--batch_size expects an int'),
    ('key without value', T + ['--max_iters'], 'has no value'),
    ('missing config file', T + ['config/nope.py'], "config file 'config/nope.py' not found"),
    ('missing data set', T + ['--data=wikitext103'], 'python prepare/wikitext103.py'),
    ('auto_prepare without a prepare script', T + ['--data=zzz', '--auto_prepare=True'], 'no prepare/zzz.py'),
    ('truncated shard', T + ['--data=trunc'], 'truncated'),
    ('shard with wrong magic', T + ['--data=magic'], 'wrong magic'),
    ('shard with wrong format version', T + ['--data=version'], 'version'),
    ('data vocabulary larger than the model', T + ['--vocab_size=64'], "larger than the model's vocab_size"),
    ('validation split smaller than one window', T + ['--data=smallval'], 'fewer than block_size+1'),
    ('n_embd not divisible by n_head', T + ['--n_embd=31'], 'not divisible by n_head'),
    ('unknown pos_emb', T + ['--pos_emb=no_such_encoding'], "pos_emb takes one of 'none', 'learned'"),
    ('unknown norm', T + ['--norm=batchnorm'], "norm takes one of 'layernorm', 'rmsnorm'"),
    ('unknown mlp', T + ['--mlp=relu2'], "mlp takes one of 'gelu', 'swiglu'"),
    ('unknown attn', T + ['--attn=sparse'], "attn takes one of 'softmax'"),
    ('unknown lr_schedule', T + ['--lr_schedule=step'], "lr_schedule takes one of 'cosine', 'wsd', 'constant'"),
    ('unknown optimizer', T + ['--optimizer=no_such_optimizer'], "optimizer takes one of 'adamw', 'muon'"),
    ('muon momentum out of range', T + ['--optimizer=muon', '--muon_momentum=1.5'], 'muon_momentum takes a number in [0, 1)'),
    ('batch not divisible across ranks and accumulation', T + ['--global_batch_tokens=1000'], 'not divisible'),
    ('bad run_name placeholder', T + ['--run_name={nope}'], 'bad placeholder'),
    ('resume with no run', T + ['--init_from=resume', '--seed=99'], 'no run at'),
    ('init_from a missing checkpoint', T + ['--init_from=/nonexistent/ckpt.pt'], 'not found'),
    ('sample without a checkpoint', ['python', 'sample.py'], 'no checkpoint given'),
    ('sample from a missing checkpoint', ['python', 'sample.py', '--ckpt=/nonexistent'], 'not found'),
    ('sample from a truncated checkpoint', ['python', 'sample.py', '--ckpt={truncated}'], 'truncated'),
    ('max_new_tokens < 1', ['python', 'sample.py', '--ckpt={ckpt}', '--max_new_tokens=0'],
     'max_new_tokens takes a number >= 1'),
    ('negative temperature', ['python', 'sample.py', '--ckpt={ckpt}', '--temperature=-1'],
     '--temperature=-1.0 is not accepted: temperature takes a number >= 0'),
    ('negative top_k', ['python', 'sample.py', '--ckpt={ckpt}', '--top_k=-5'],
     '--top_k=-5 is not accepted: top_k takes a number >= 0'),
    ('empty prompt file', ['python', 'sample.py', '--ckpt={ckpt}', '--file={empty}_prompt.txt'],
     "prompt file '{empty}_prompt.txt' is empty"),
    ('export --force onto its own run', ['python', 'export_hf.py', '--ckpt={ckpt}', '--out={ckpt}', '--force=True'],
     'holds the checkpoint being exported'),
    ('unreadable prompt file', ['python', 'sample.py', '--ckpt={ckpt}', '--file=/nonexistent.txt'], 'cannot read prompt file'),
    ('unknown eval task', ['python', 'eval_tasks.py', 'flops', '--ckpt={ckpt}'], "unknown task 'flops'"),
    ('eval data with another tokenizer', ['python', 'eval_tasks.py', 'ppl', '--ckpt={ckpt}', '--data=otherbpe', '{data}'],
     'different tokenizer'),
    ('eval stride out of range', ['python', 'eval_tasks.py', 'ppl', '--ckpt={ckpt}', '--data=tiny', '{data}', '--stride=999'],
     'stride must be in'),
    ('unknown launcher problem', ['bash', 'launcher.sh', 'quikstart'], "nearest: quickstart"),
    ('unknown bench variant', ['python', 'bench.py', '--variants=gpt2,flashy'], "unknown variant 'flashy'"),
    ('empty prepare source', ['python', 'prepare/text.py', '--source={empty}', '--tokenizer=byte', '--out_dir={out}/x'],
     'no .txt/.jsonl/.parquet files'),
]


@pytest.fixture(scope='module')
def case_results(env, tmp_path_factory):
    """Every case's result, the Python ones run in one process (tests/inproc.py: a process start per case would
    cost more than the cases), each with its own folder; {case: (result, folder)}."""
    todo, results = [], {}
    for case, command, phrase in CASES:
        tmp = tmp_path_factory.mktemp('case')
        (tmp / 'empty').mkdir()
        (tmp / 'empty_prompt.txt').write_text('')
        subs = {'{data}': f"--data_root={env['data']}", '{out}': f'--out_dir={tmp}/out', '{ckpt}': env['ckpt'],
                '{truncated}': env['truncated'], '{empty}': str(tmp / 'empty')}
        args = []
        for a in command:
            for k, v in subs.items():
                a = a.replace(k, v) if k != '{out}' or a == '{out}' else a.replace(k, f'{tmp}/out')
            args.append(a)
        if args[0] == 'python':
            todo.append((case, tmp, {'argv': args[1:]}))
        else:  # (the launcher is a shell script)
            r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
            results[case] = ({'rc': r.returncode, 'stderr': r.stderr}, tmp)
    for (case, tmp, _), res in zip(todo, run_many([c for _, _, c in todo])):
        results[case] = (res, tmp)
    return results


@pytest.mark.parametrize('case,command,phrase', CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_results, case, command, phrase):
    res, tmp = case_results[case]
    assert res['rc'] == 2, (case, res['rc'], res['stderr'][-1500:])
    line = one_error_line(res)
    assert line, (case, res['stderr'][-1500:])
    assert phrase.replace('{empty}', str(tmp / 'empty')) in line, (case, line)
    assert not os.path.exists(tmp / 'out'), f'{case}: something was written'


def test_one_case_as_its_own_process(env, tmp_path):
    """The interpreter's own exit path, once: what run_many stands in for above."""
    r = subprocess.run([sys.executable, 'train.py', '--data=tiny', f"--data_root={env['data']}",
                        f'--out_dir={tmp_path}/out', *TINY, '--pos_emb=no_such_encoding'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and one_error_line({'stderr': r.stderr}), r.stderr[-1500:]
    assert not os.path.exists(tmp_path / 'out')


def test_resume_with_changed_flags_writes_nothing(env):
    before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(env['runs'], '**'), recursive=True)}
    r = subprocess.run([sys.executable, 'train.py', '--data=tiny', f"--data_root={env['data']}",
                        f"--out_dir={env['runs']}", '--run_name=good', *TINY, '--init_from=resume', '--mlp=swiglu'],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and 'cannot resume' in r.stderr and 'mlp' in r.stderr
    after = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(env['runs'], '**'), recursive=True)}
    assert before == after


def test_empty_stdin_prompt_is_refused_but_explicit_empty_prompt_is_unconditional(env):
    r = subprocess.run([sys.executable, 'sample.py', f"--ckpt={env['ckpt']}", '--prompt=-', '--max_new_tokens=3'],
                       cwd=ROOT, capture_output=True, text=True, input='')
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: --prompt=- read an empty stdin'), r.stderr
    assert r.stdout == ''
    r = subprocess.run([sys.executable, 'sample.py', f"--ckpt={env['ckpt']}", '--prompt=', '--max_new_tokens=3'],
                       cwd=ROOT, capture_output=True, text=True, input='')
    assert r.returncode == 0 and r.stderr == '' and len(r.stdout) >= 1, r.stderr


def test_long_prompt_and_large_top_k_get_notices_not_errors(env):
    r = subprocess.run([sys.executable, 'sample.py', f"--ckpt={env['ckpt']}", '--prompt=' + 'a' * 100,
                        '--max_new_tokens=3', '--top_k=100000'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'more than block_size=32' in r.stderr and 'clamped' in r.stderr


def test_long_prompt_notice_for_every_position_scheme(tmp_path):
    """The prompt is cut to its last block_size tokens for any model, so the notice is shown for any model."""
    import io
    import torch
    import sample
    from model import GPT, GPTConfig
    tok = datalib.get_tokenizer({'kind': 'byte'})
    for pos_emb in ('learned', 'rope', 'none'):
        model = GPT(GPTConfig(vocab_size=320, block_size=8, n_layer=1, n_head=2, n_embd=16, pos_emb=pos_emb))
        err = io.StringIO()
        sys.stderr, saved = err, sys.stderr
        try:
            sample.stream_sample(model, tok, 'x' * 20, 2, out=io.StringIO())
        finally:
            sys.stderr = saved
        assert 'prompt has 20 tokens, more than block_size=8; using its last 8' in err.getvalue(), pos_emb


# Every setting is checked before the first side effect: on a checkout with no data/, the quickstart
# (auto_prepare=True) with one bad setting exits 2 with one line and leaves no data/ or out/ behind.
BAD_SETTINGS = [  # (settings, a phrase the one error line must hold); invalid names can never become valid
    ('--pos_emb=no_such_encoding', "pos_emb takes one of"), ('--norm=no_such_norm', "norm takes one of"),
    ('--mlp=no_such_mlp', "mlp takes one of"), ('--attn=no_such_attn', "attn takes one of"),
    ('--n_head=3', "not divisible by n_head=3"), ('--n_layer=0', "n_layer takes a number >= 1"),
    ('--dropout=1.5', "dropout takes a number in [0, 1)"), ('--ngpt=True --bias=True', "ngpt=True does not combine"),
    ('--attn=diff --n_head=128', "2*n_head"), ('--n_encoder_layer=-1', "n_encoder_layer takes a number >= 0"),
    ('--linear_chunk=0', "linear_chunk takes a number >= 1"), ('--objective=dpo', "objective='dpo' fine-tunes"),
    ('--algo_mix=2.0', "algo_mix takes a number in [0, 1]"), ('--global_batch_tokens=1000', "global_batch_tokens=1000"),
    ('--decay_budgets=[1000]', "decay budget 1000"), ('--run_name={nope}', "nope"),
    ('--optimizer=no_such_optimizer', "optimizer takes one of"), ('--optimizer=muon --muon_lr=0', "muon_lr takes")]


def test_bad_settings_fail_the_check():
    """The declarations and check_settings (run before anything is prepared or written) reject each bad setting."""
    import train
    from configurator import UserError, check_declared, parse_value
    for bad, phrase in BAD_SETTINGS:
        cfg = {**train.DEFAULTS, 'lr_schedule': 'wsd'}  # (decay_budgets needs wsd to reach its own check)
        cfg.update((kv[2:].split('=', 1)[0], parse_value(kv.split('=', 1)[1])) for kv in bad.split())
        with pytest.raises(UserError, match=re.escape(phrase)):
            check_declared(vars(train), cfg)
            train.check_settings(cfg)


def test_bad_settings_write_nothing(tmp_path):
    """Every bad setting end to end, from an empty folder (in one process: tests/inproc.py)."""
    cases = [{'argv': [os.path.join(ROOT, 'train.py'), os.path.join(ROOT, 'config', 'quickstart.py'), *bad.split()],
              'cwd': tmp_path} for bad, _ in BAD_SETTINGS]
    for (bad, phrase), res in zip(BAD_SETTINGS, run_many(cases)):
        assert res['rc'] == 2, f"{bad}: exit {res['rc']}\n{res['stdout'][-500:]}\n{res['stderr'][-1000:]}"
        assert phrase in one_error_line(res), f"{bad}: {res['stderr']}"
        assert res['written'] == [], f"{bad} left {res['written']} behind"
