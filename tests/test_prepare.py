"""prepare/ scripts end to end on data the test writes itself (run as subprocesses, like a user)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402

EOT = '<|endoftext|>'


def run(script, *args):
    return subprocess.run([sys.executable, f'prepare/{script}.py', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def decoded_docs(out):
    """All documents of a prepared data set, decoded from its shards."""
    meta = data.load_meta(out)
    tok = data.get_tokenizer(meta['tokenizer'])
    docs = {}
    for split in meta['splits']:
        shards = data.open_split(out, split, model_vocab_size=meta['vocab_size'])
        ids = np.concatenate([np.asarray(s) for s in shards]) if shards else np.zeros(0, np.int64)
        assert len(ids) == 0 or ids[-1] == meta['eot_id']
        docs[split] = tok.decode(ids).split(EOT)[:-1]
    return meta, docs


@pytest.fixture
def py_source(tmp_path):
    src = tmp_path / 'src'
    (src / 'pkg').mkdir(parents=True)
    (src / 'site-packages').mkdir()
    (src / 'pkg' / '__pycache__').mkdir()
    files = {
        'a.py': "import os\n\ndef main():\n    print('hello world')\n" * 5,
        'b.py': "class Foo:\n    '''Docs with ünïcödé.'''\n    x = 1\n" * 5,
        'README.txt': "This is a small readme.\n" * 3,
        'pkg/__init__.py': "from .c import *\n",
        'pkg/c.py': "def add(a, b):\n    return a + b\n" * 8,
        'pkg/notes.rst': "Title\n=====\n\nSome *rst* text.\n",
    }
    for name, text in files.items():
        (src / name).write_text(text, encoding='utf-8')
    (src / 'pkg' / 'latin1.py').write_bytes(b"s = '\xe9t\xe9'\n")  # not UTF-8: replaced, no crash
    files['pkg/latin1.py'] = "s = '\ufffdt\ufffd'\n"
    (src / 'site-packages' / 'skip.py').write_text('SKIPPED = 1\n')
    (src / 'pkg' / '__pycache__' / 'skip.py').write_text('SKIPPED = 2\n')
    (src / 'other.c').write_text('int main;\n')
    return src, files


@pytest.mark.parametrize('tokenizer', ['byte', 'bpe'])
def test_stdlib_prepare(tmp_path, py_source, tokenizer):
    src, files = py_source
    out = str(tmp_path / 'stdlib_out')
    r = run('stdlib', f'--source={src}', f'--out_dir={out}', f'--tokenizer={tokenizer}', '--vocab_size=300',
            '--shard_tokens=50', '--val_fraction=0.2')
    assert r.returncode == 0, r.stderr
    meta, docs = decoded_docs(out)
    assert meta['files'] == len(files) and meta['tokenizer']['kind'] == tokenizer
    assert meta['vocab_size'] == (259 if tokenizer == 'byte' else 300)
    assert sorted(docs['train'] + docs['val']) == sorted(files.values())
    assert docs['train'] and docs['val']
    assert meta['splits']['train']['shards'] > 1  # shard_tokens=50 forces several shards
    assert os.path.exists(os.path.join(out, 'tokenizer.bpe')) == (tokenizer == 'bpe')
    assert not os.path.exists(out + '.tmp') and 'wrote' in r.stdout
    # complete data set: re-running with the same settings does nothing; --force rebuilds identically (deterministic)
    before = {f: open(os.path.join(out, f), 'rb').read() for f in os.listdir(out) if f.endswith('.bin')}
    same = (f'--source={src}', f'--out_dir={out}', f'--tokenizer={tokenizer}', '--vocab_size=300',
            '--shard_tokens=50', '--val_fraction=0.2')
    r = run('stdlib', *same)
    assert r.returncode == 0 and 'already prepared' in r.stdout, r.stderr
    r = run('stdlib', *same, '--force=True')
    assert r.returncode == 0, r.stderr
    assert before == {f: open(os.path.join(out, f), 'rb').read() for f in os.listdir(out) if f.endswith('.bin')}


def test_stdlib_exclude_tests(tmp_path, py_source):
    src, files = py_source
    (src / 'test').mkdir()
    (src / 'test' / 'test_x.py').write_text('assert True\n')
    out = str(tmp_path / 'o')
    r = run('stdlib', f'--source={src}', f'--out_dir={out}', '--tokenizer=byte', '--include_tests=False')
    assert r.returncode == 0, r.stderr
    assert data.load_meta(out)['files'] == len(files)


DOCS = [f"Story {i}: a fox named F{i} met {i % 7} rabbits. ünïcödé ok." for i in range(60)]


def write_jsonl(path):
    with open(path, 'w') as f:
        for i, d in enumerate(DOCS):
            f.write(json.dumps({'id': i, 'text': d}) + '\n')


def write_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({'id': list(range(len(DOCS))), 'text': DOCS}), path)


@pytest.mark.parametrize('kind', ['jsonl', 'parquet'])
def test_text_prepare_local(tmp_path, kind):
    path = str(tmp_path / f'stories.{kind}')
    (write_jsonl if kind == 'jsonl' else write_parquet)(path)
    out = str(tmp_path / 'stories')
    r = run('text', f'--source={path}', f'--out_dir={out}', '--tokenizer=bpe', '--vocab_size=320',
            '--val_fraction=0.1')
    assert r.returncode == 0, r.stderr
    meta, docs = decoded_docs(out)
    assert meta['documents'] == len(DOCS) and meta['source'] == path
    assert sorted(docs['train'] + docs['val']) == sorted(DOCS)
    assert 1 <= len(docs['val']) < 20
    r = run('text', f'--source={path}', f'--out_dir={out}', '--tokenizer=byte', '--max_docs=10', '--force=True')
    assert r.returncode == 0, r.stderr
    meta, docs = decoded_docs(out)
    assert sorted(docs['train'] + docs['val']) == sorted(DOCS[:10]) and meta['vocab_size'] == 259


def test_text_prepare_txt_folder_and_bad_field(tmp_path):
    src = tmp_path / 'corpus'
    src.mkdir()
    (src / 'a.txt').write_text('first document\n')
    (src / 'b.txt').write_bytes(b'second \xff document\n')
    write_jsonl(str(src / 'c.jsonl'))
    out = str(tmp_path / 'out')
    r = run('text', f'--source={src}', f'--out_dir={out}', '--tokenizer=byte')
    assert r.returncode == 0, r.stderr
    assert 'not valid UTF-8' in r.stderr
    _, docs = decoded_docs(out)
    assert sorted(docs['train'] + docs['val']) == sorted(DOCS + ['first document\n', 'second \ufffd document\n'])
    r = run('text', f'--source={src / "c.jsonl"}', f'--out_dir={tmp_path / "o2"}', '--field=body')
    assert r.returncode == 2 and "no field 'body'" in r.stderr and not os.path.exists(tmp_path / 'o2')


@pytest.mark.parametrize('script', ['stdlib', 'text'])
def test_empty_source_fails_cleanly(tmp_path, script):
    src = tmp_path / 'empty'
    src.mkdir()
    out = tmp_path / 'out'
    r = run(script, f'--source={src}', f'--out_dir={out}', '--tokenizer=byte')
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith('error: ') and str(src) in r.stderr
    assert not os.path.exists(out) and not os.path.exists(str(out) + '.tmp')


def test_bad_setting_fails_cleanly(tmp_path):
    r = run('stdlib', '--vocab_sise=300', f'--out_dir={tmp_path / "o"}')
    assert r.returncode == 2 and "did you mean 'vocab_size'" in r.stderr
    assert not os.path.exists(tmp_path / 'o')


def test_prepare_with_other_settings_is_refused(tmp_path, py_source):
    """The issue's case: a data set made with bpe is never reused silently for --tokenizer=byte."""
    src, _ = py_source
    out = str(tmp_path / 'stdlib')
    r = run('stdlib', f'--source={src}', f'--out_dir={out}', '--tokenizer=bpe', '--vocab_size=300')
    assert r.returncode == 0, r.stderr
    meta_before = open(os.path.join(out, 'meta.json')).read()
    r = run('stdlib', f'--source={src}', f'--out_dir={out}', '--tokenizer=byte', '--vocab_size=300')
    assert r.returncode == 2 and 'already prepared' not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in r.stderr
    assert f"{out} was made with other settings: tokenizer='bpe' (now 'byte')" in lines[0]
    assert '--force=True' in lines[0] and '--out_dir=' in lines[0]
    assert open(os.path.join(out, 'meta.json')).read() == meta_before  # untouched
    r = run('stdlib', f'--source={src}', f'--out_dir={out}', '--tokenizer=byte', '--vocab_size=300', '--force=True')
    assert r.returncode == 0, r.stderr
    assert data.load_meta(out)['tokenizer']['kind'] == 'byte'


@pytest.mark.parametrize('script,args', [('stdlib', ('--tokenizer=byte',)),
                                         ('mqar', ('--n_train=4', '--n_val=2', '--n_test=2')),
                                         ('lengen', ('--n_train=4', '--n_val=2', '--n_test=1'))])
@pytest.mark.parametrize('force', [False, True])
def test_prepare_never_replaces_a_folder_it_did_not_make(tmp_path, py_source, script, args, force):
    """A run directory given as --out_dir (by mistake) survives, with --force=True too."""
    run_dir = tmp_path / 'myrun'
    (run_dir / 'ckpt').mkdir(parents=True)
    files = {'config.json': '{"n_layer": 2}', 'metrics.jsonl': '{"step": 1}\n', 'ckpt/last.pt': 'weights'}
    for name, text in files.items():
        (run_dir / name).write_text(text)
    r = run(script, f'--source={py_source[0]}' if script == 'stdlib' else '--seed=1', f'--out_dir={run_dir}',
            *args, f'--force={force}')
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (f"error: out_dir '{run_dir}' exists and is not a data set made by prepare/ "
                                            f"(no meta.json of ours); it is never replaced, not even with --force=True: "
                                            f"choose another --out_dir")
    assert {n: (run_dir / n).read_text() for n in files} == files
    assert sorted(os.listdir(tmp_path)) == ['myrun', 'src']  # no .tmp left either
