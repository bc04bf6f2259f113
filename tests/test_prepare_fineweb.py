"""prepare/fineweb_edu.py on local parquet/jsonl with the hub's `text` field: held-out slice,
limits, resume after an interruption equals one uninterrupted run."""
import filecmp
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

import data as datalib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = 'the of students learn energy water cells history number light theory plants system data'.split()


def docs(n):
    rng = np.random.default_rng(0)
    return [f"doc{i:04d} " + ' '.join(rng.choice(WORDS, size=int(rng.integers(20, 60)))) + '.' for i in range(n)]


def prepare(args, monkeypatch, capsys):
    """Run the script's main() in this process (a fresh module each time: its settings start at the defaults)."""
    spec = importlib.util.spec_from_file_location('fineweb_edu_prepare', os.path.join(ROOT, 'prepare', 'fineweb_edu.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(sys, 'argv', ['fineweb_edu.py', '--tokenizer=bpe', '--vocab_size=300', '--bpe_docs=50',
                                      '--val_docs=20', '--shard_tokens=3000', '--batch_docs=16'] + args)
    mod.main()
    return capsys.readouterr().out


def test_fineweb_local_parquet_held_out_limits_and_resume(tmp_path, monkeypatch, capsys):
    import datasets
    texts = docs(300)
    src = str(tmp_path / 'fw.parquet')
    datasets.Dataset.from_dict({'text': texts, 'id': list(range(300))}).to_parquet(src)
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    prepare([f'--source={src}', f'--out_dir={a}', '--max_shards=3'], monkeypatch, capsys)
    meta = datalib.load_meta(a)
    assert meta['splits']['train']['shards'] == 3 and meta['held_out']['docs'] == 20
    tok = datalib.get_tokenizer(meta['tokenizer'])
    val = tok.decode(datalib.open_split(a, 'val')[0])
    train = tok.decode(np.concatenate([np.asarray(s) for s in datalib.open_split(a, 'train')]))
    assert 'doc0000 ' in val and 'doc0019 ' in val and 'doc0020 ' not in val    # the first 20 documents
    assert 'doc0019 ' not in train and train.startswith('doc0020 ')           # kept apart from training
    assert os.path.exists(os.path.join(a, 'tokenizer.bpe'))
    # interrupted while writing shard 4: no meta.json, a stray temporary; a re-run with a larger limit goes on
    os.remove(os.path.join(a, 'meta.json'))
    open(os.path.join(a, 'train_000003.bin.tmp'), 'wb').write(b'half a shard')
    out = prepare([f'--source={src}', f'--out_dir={a}', '--max_shards=5'], monkeypatch, capsys)
    assert 'training a bpe' not in out  # the tokenizer comes from progress.json
    prepare([f'--source={src}', f'--out_dir={b}', '--max_shards=5'], monkeypatch, capsys)
    names = sorted(f for f in os.listdir(b) if f.endswith('.bin'))
    assert len(names) == 6 and sorted(f for f in os.listdir(a) if f.endswith('.bin')) == names
    assert all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in names)
    assert datalib.load_meta(a)['splits'] == datalib.load_meta(b)['splits']
    # no limit: the stream runs out, every document is in exactly one split (jsonl source this time)
    src2 = str(tmp_path / 'fw.jsonl')
    with open(src2, 'w') as f:
        f.writelines(json.dumps({'text': t}) + '\n' for t in texts)
    c = str(tmp_path / 'c')
    prepare([f'--source={src2}', f'--out_dir={c}'], monkeypatch, capsys)
    m = datalib.load_meta(c)
    assert m['exhausted'] and m['held_out']['docs'] + m['train_docs'] == 300
    with pytest.raises(datalib.DataError, match="no field 'content'"):
        prepare([f'--source={src2}', f'--out_dir={tmp_path / "d"}', '--field=content'], monkeypatch, capsys)
    assert not os.path.exists(tmp_path / 'd')
