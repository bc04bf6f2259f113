"""data.py: shard format, validation, batches, records, tokenizers. CPU, a few seconds."""
import os
import struct
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402

TEXT = ("def hello(name):\n    return f'Hello, {name}!'\n\n"
        "The quick brown fox jumps over the lazy dog. Ünïcödé and emoji 🐍 too.\n") * 20


def make_dataset(path, splits, vocab_size=259, spec=None):
    """A minimal data set folder written through data.py, as a prepare script would."""
    os.makedirs(path, exist_ok=True)
    counts = {}
    for split, shards in splits.items():
        for i, toks in enumerate(shards):
            data.write_shard(os.path.join(path, data.shard_name(split, i)), toks, vocab_size)
        counts[split] = {'shards': len(shards), 'tokens': sum(len(t) for t in shards)}
    data.write_meta(path, {'tokenizer': spec or {'kind': 'byte'}, 'vocab_size': vocab_size, 'eot_id': 256,
                           'pad_id': 257, 'sep_id': 258, 'splits': counts, 'source': 'test',
                           'made_by': 'test', 'created': 'now'})
    return str(path)


# ---------------------------------------------------------------------------- shards

@pytest.mark.parametrize('vocab_size,itemsize', [(259, 2), (65536, 2), (65537, 4), (200_000, 4)])
def test_shard_round_trip(tmp_path, vocab_size, itemsize):
    toks = np.random.default_rng(0).integers(0, vocab_size, size=1000)
    toks[0] = vocab_size - 1
    p = str(tmp_path / 'train_000000.bin')
    data.write_shard(p, toks, vocab_size)
    assert os.path.getsize(p) == 32 + 1000 * itemsize
    m = data.read_shard(p)
    assert isinstance(m, np.memmap) and m.ndim == 1 and m.dtype.itemsize == itemsize
    assert not m.flags.writeable
    np.testing.assert_array_equal(m, toks)
    assert not os.path.exists(p + '.tmp')


def test_empty_shard(tmp_path):
    p = str(tmp_path / 'x.bin')
    data.write_shard(p, [], 259)
    assert len(data.read_shard(p)) == 0


def test_token_outside_vocab(tmp_path):
    with pytest.raises(data.DataError, match='outside the vocabulary'):
        data.write_shard(str(tmp_path / 'x.bin'), [1, 2, 259], 259)


def test_truncated_shard(tmp_path):
    p = str(tmp_path / 'train_000000.bin')
    data.write_shard(p, np.arange(100), 259)
    with open(p, 'r+b') as f:
        f.truncate(32 + 2 * 50)
    with pytest.raises(data.DataError, match='truncated') as e:
        data.read_shard(p)
    assert p in str(e.value) and 're-run the prepare script' in str(e.value) and '\n' not in str(e.value)
    with open(p, 'r+b') as f:
        f.truncate(10)  # not even a header
    with pytest.raises(data.DataError, match='truncated'):
        data.read_shard(p)


def test_wrong_magic_and_version(tmp_path):
    p = str(tmp_path / 'a.bin')
    with open(p, 'wb') as f:
        f.write(b'x' * 64)
    with pytest.raises(data.DataError, match='wrong magic') as e:
        data.read_shard(p)
    assert p in str(e.value)
    with open(p, 'wb') as f:
        f.write(struct.pack('<8sIIQ8x', b'GPTLABSH', 99, 2, 0))
    with pytest.raises(data.DataError, match='version 99') as e:
        data.read_shard(p)
    assert p in str(e.value)
    with pytest.raises(data.DataError, match='not found'):
        data.read_shard(str(tmp_path / 'missing.bin'))


def test_interrupted_write_keeps_old_shard(tmp_path, monkeypatch):
    p = str(tmp_path / 'train_000000.bin')
    data.write_shard(p, np.arange(10), 259)

    def crash(fd):
        raise KeyboardInterrupt  # as if the process died after writing, before the rename
    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(KeyboardInterrupt):
        data.write_shard(p, np.arange(20), 259)
    monkeypatch.undo()
    np.testing.assert_array_equal(data.read_shard(p), np.arange(10))
    assert not os.path.exists(p + '.tmp')
    # even a leftover .tmp (from a hard kill) is never listed as a shard
    open(p + '.tmp', 'wb').write(b'garbage')
    assert data.shard_paths(str(tmp_path), 'train') == [p]


def test_shard_paths_sorted(tmp_path):
    for i in (2, 0, 1):
        data.write_shard(str(tmp_path / data.shard_name('train', i)), [i], 259)
    data.write_shard(str(tmp_path / data.shard_name('val', 0)), [0], 259)
    names = [os.path.basename(p) for p in data.shard_paths(str(tmp_path), 'train')]
    assert names == ['train_000000.bin', 'train_000001.bin', 'train_000002.bin']


# ---------------------------------------------------------------------------- meta / open_split

def test_open_split_and_errors(tmp_path):
    d = make_dataset(tmp_path / 'toy', {'train': [np.arange(100) % 259, np.arange(50)], 'val': [np.arange(30)]})
    shards = data.open_split(d, 'train', model_vocab_size=320)
    assert [len(s) for s in shards] == [100, 50]
    with pytest.raises(data.DataError, match=r"no 'test' split in .*available: train, val"):
        data.open_split(d, 'test')
    with pytest.raises(data.DataError, match="data vocabulary 259 is larger than the model's vocab_size 128"):
        data.open_split(d, 'train', model_vocab_size=128)
    os.remove(os.path.join(d, 'train_000001.bin'))
    with pytest.raises(data.DataError, match='meta.json lists 2'):
        data.open_split(d, 'train')


def test_missing_data_dir_names_prepare_script(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load_meta('data/stdlib_nonexistent_xyz')
    assert 'prepare/text.py' in str(e.value)
    # a folder named like a prepare script points at that script
    with pytest.raises(data.DataError, match=r"data set '.*stdlib' not found: run `python prepare/stdlib.py` first"):
        data.load_meta(str(tmp_path / 'stdlib'))
    os.makedirs(tmp_path / 'stdlib')
    with pytest.raises(data.DataError, match='incomplete .*prepare/stdlib.py'):
        data.load_meta(str(tmp_path / 'stdlib'))


# ---------------------------------------------------------------------------- batches

def test_lm_batch_determinism(tmp_path):
    d = make_dataset(tmp_path / 'toy', {'train': [np.arange(200) % 259, (np.arange(80) * 7) % 259]})
    shards = data.open_split(d, 'train')
    x1, y1 = data.get_lm_batch(shards, 16, 8, seed=3, index=5)
    x2, y2 = data.get_lm_batch(shards, 16, 8, seed=3, index=5)
    x3, _ = data.get_lm_batch(shards, 16, 8, seed=3, index=6)
    x4, _ = data.get_lm_batch(shards, 16, 8, seed=4, index=5)
    assert x1.shape == y1.shape == (8, 16) and x1.dtype == y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    # every row is a contiguous window of one shard (never crossing shards)
    seqs = [np.asarray(s) for s in shards]
    for xr, yr in zip(x1.numpy(), y1.numpy()):
        row = np.concatenate([xr, yr[-1:]])
        assert any(any(np.array_equal(s[o:o + 17], row) for o in range(len(s) - 16)) for s in seqs)


def test_lm_batch_covers_both_shards_and_too_short(tmp_path):
    d = make_dataset(tmp_path / 'toy', {'train': [np.full(100, 1), np.full(100, 2), np.full(5, 3)]})
    shards = data.open_split(d, 'train')
    x, _ = data.get_lm_batch(shards, 8, 256, seed=0, index=0)
    assert set(np.unique(x.numpy())) == {1, 2}  # the 5-token shard is too short for a window
    with pytest.raises(data.DataError, match=r"split 'train' has only 100 tokens.*block_size\+1=101"):
        data.get_lm_batch(shards, 100, 2, seed=0, index=0)


def test_eval_batches(tmp_path):
    d = make_dataset(tmp_path / 'toy', {'val': [np.arange(45), np.arange(100, 121)]})
    shards = data.open_split(d, 'val')
    batches = list(data.iter_eval_batches(shards, 10, 2, max_batches=None))
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    # windows at 0,10,20,30 of shard 0 (45 tokens), at 0,10 of shard 1 (21 tokens)
    assert xs[:, 0].tolist() == [0, 10, 20, 30, 100, 110]
    assert torch.equal(xs[:, 1:], ys[:, :-1]) and [len(b[0]) for b in batches] == [2, 2, 2]
    assert len(list(data.iter_eval_batches(shards, 10, 2, max_batches=2))) == 2
    again = torch.cat([x for x, _ in data.iter_eval_batches(shards, 10, 2)])
    assert torch.equal(xs, again)


def test_unigram_entropy(tmp_path):
    d = make_dataset(tmp_path / 'toy', {'train': [np.array([0, 1, 2, 3] * 25)]})
    h = data.unigram_entropy(data.open_split(d, 'train'), 259)
    assert abs(h - np.log(4)) < 1e-9


# ---------------------------------------------------------------------------- records

def test_records_round_trip(tmp_path):
    recs = [{'src': [1, 2, 3], 'tgt': [4]}, {'src': [], 'tgt': [5, 6]}, {'src': [70000], 'tgt': [7, 8, 9]}]
    p = str(tmp_path / 'train_records.bin')
    data.write_records(p, recs, ['src', 'tgt'], vocab_size=100_000)
    r = data.read_records(p)
    assert len(r) == 3 and r.fields == ['src', 'tgt']
    for i, rec in enumerate(recs):
        got = r[i]
        assert set(got) == {'src', 'tgt'}
        for f in ('src', 'tgt'):
            assert isinstance(got[f], np.ndarray) and got[f].tolist() == rec[f]
    assert r[-1]['tgt'].tolist() == [7, 8, 9]
    assert os.path.exists(p[:-4] + '.idx')
    assert not any(f.endswith('.tmp') for f in os.listdir(tmp_path))
    with pytest.raises(IndexError):
        r[3]
    with pytest.raises(data.DataError, match="has no field 'tgt'"):
        data.write_records(str(tmp_path / 'bad.bin'), [{'src': [1]}], ['src', 'tgt'], 100)


# ---------------------------------------------------------------------------- tokenizers

def check_round_trip(tok, text=TEXT):
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    # specials are never parsed from text, decode renders eot/sep, skips pad and ids past the vocab
    assert tok.eot_id not in tok.encode('<|endoftext|>')
    assert tok.decode(tok.encode('a') + [tok.eot_id, tok.pad_id, tok.vocab_size + 5] + tok.encode('b')) \
        == 'a<|endoftext|>b'
    assert len({tok.eot_id, tok.pad_id, tok.sep_id}) == 3 and max(tok.eot_id, tok.pad_id, tok.sep_id) < tok.vocab_size
    assert data.get_tokenizer(tok.spec).encode(text) == ids  # the spec alone rebuilds it


def test_byte_tokenizer():
    tok = data.get_tokenizer({'kind': 'byte'})
    assert (tok.vocab_size, tok.eot_id, tok.pad_id, tok.sep_id) == (259, 256, 257, 258)
    check_round_trip(tok)
    assert tok.decode([0xff, ord('a')]) == '\ufffda'  # invalid UTF-8 is replaced, not an error


def test_bpe_tokenizer(tmp_path):
    spec = data.train_bpe([TEXT, TEXT[::-1]], 300)
    tok = data.get_tokenizer(spec)
    assert tok.vocab_size == 300 and (tok.eot_id, tok.pad_id, tok.sep_id) == (297, 298, 299)
    check_round_trip(tok)
    assert len(tok.encode(TEXT)) < len(TEXT.encode())  # merges were learned
    path = str(tmp_path / 'tokenizer.bpe')
    data.save_ranks_file(spec, path)
    import tiktoken.load
    assert tiktoken.load.load_tiktoken_bpe(path) == data.parse_ranks(spec['ranks'])
    with pytest.raises(data.DataError, match='too small'):
        data.train_bpe([TEXT], 100)


def local_encoding():
    """A small tiktoken.Encoding built here, standing in for gpt2 (which needs a download)."""
    import tiktoken
    ranks = data.parse_ranks(data.train_bpe([TEXT], 290)['ranks'])
    return tiktoken.Encoding(name='fake_gpt2', pat_str=data.GPT4_PATTERN, mergeable_ranks=ranks,
                             special_tokens={'<|endoftext|>': len(ranks)})


def test_gpt2_code_path_with_local_encoding(monkeypatch):
    import tiktoken
    base = local_encoding()
    monkeypatch.setattr(tiktoken, 'get_encoding', lambda name: base)
    tok = data.get_tokenizer({'kind': 'gpt2'})
    n = len(base._mergeable_ranks)  # real gpt2: n = 50256 -> eot 50256, pad 50257, sep 50258, vocab 50259
    assert (tok.eot_id, tok.pad_id, tok.sep_id, tok.vocab_size) == (n, n + 1, n + 2, n + 3)
    assert tok.encode(TEXT) == base.encode_ordinary(TEXT)
    check_round_trip(tok)


def test_tiktoken_spec_and_gpt2_unavailable(monkeypatch):
    base = local_encoding()
    spec = {'kind': 'tiktoken', 'name': 'local', 'pattern': base._pat_str,
            'ranks': data.format_ranks(base._mergeable_ranks),
            'specials': {'<|endoftext|>': 287, '<|pad|>': 288, '<|sep|>': 289}}
    tok = data.get_tokenizer(spec)
    assert isinstance(tok, data.TiktokenTokenizer) and tok.vocab_size == 290
    check_round_trip(tok)

    import tiktoken

    def offline(name):
        raise ConnectionError('no network\nsecond line')
    monkeypatch.setattr(tiktoken, 'get_encoding', offline)
    with pytest.raises(data.DataError, match=r'gpt2.*no network.*--tokenizer=bpe') as e:
        data.get_tokenizer({'kind': 'gpt2'})
    assert '\n' not in str(e.value)
    with pytest.raises(data.DataError, match='unknown tokenizer kind'):
        data.get_tokenizer({'kind': 'nope'})


def test_assign_splits_deterministic():
    keys = [f'file_{i}.py' for i in range(1000)]
    a = data.assign_splits(keys, 0.05, 1337)
    assert a == data.assign_splits(keys, 0.05, 1337)
    assert 20 < a.count('val') < 80
    assert data.assign_splits(['a', 'b'], 0.01, 0).count('val') == 1  # tiny inputs still get a val file
