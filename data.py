"""Shard format, tokenizers and batch loaders: the only code that reads or writes shards.

A data set is a folder `data/<name>/` holding `<split>_<NNNNNN>.bin` token shards and `meta.json`
(tokenizer spec, vocab size, special ids, counts, source, how it was made). A shard is a 32-byte
header followed by the raw tokens, read with np.memmap:

    magic b'GPTLABSH' | format version (u32) | itemsize (u32) | n_tokens (u64) | 8 bytes padding

Everything is written to `<name>.tmp`, fsynced and renamed, so a reader never sees half a file.
A user-facing problem raises DataError: one line naming the file and the fix.
"""
import base64
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import struct
import sys
import time
import zlib

import numpy as np

import configurator

MAGIC = b'GPTLABSH'
FORMAT_VERSION = 1
HEADER = struct.Struct('<8sIIQ8x')  # 32 bytes
HEADER_SIZE = HEADER.size
_DTYPES = {2: np.dtype('<u2'), 4: np.dtype('<u4'), 8: np.dtype('<i8')}  # 8: records index only

# GPT-4 style split pattern (rustbpe's default); a bpe spec always stores its own pattern
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                r"""\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIALS = ('<|endoftext|>', '<|pad|>', '<|sep|>')  # eot, pad, sep: appended after the ranks
TOKENIZERS = ('bpe', 'byte', 'gpt2')  # what a prepare script's --tokenizer takes (build_tokenizer)
MIN_BPE_VOCAB = 256 + len(SPECIALS)  # a bpe's vocab_size: the 256 bytes and the specials at least


class DataError(configurator.UserError):
    """A data problem the user can fix (missing, truncated or mismatched data): one line."""


def first_line(e):
    """An exception as one line: its message's first line, or its type when it has none."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# ----------------------------------------------------------------------------------------------
# atomic writes

def _atomic_write(path, write_fn):
    """Write through `path + '.tmp'`, fsync, rename: an interrupted write leaves the old file."""
    tmp = path + '.tmp'
    try:
        with open(tmp, 'wb') as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_array(path, arr, itemsize):
    arr = np.ascontiguousarray(arr, dtype=_DTYPES[itemsize])

    def write(f):
        f.write(HEADER.pack(MAGIC, FORMAT_VERSION, itemsize, arr.size))
        f.write(arr.tobytes())
    _atomic_write(path, write)


def _read_array(path, itemsizes):
    if not os.path.isfile(path):
        raise DataError(f"shard '{path}' not found: re-run the prepare script")
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        raise DataError(f"truncated shard '{path}' ({size} bytes, no full header): re-run the prepare script")
    magic, version, itemsize, n = HEADER.unpack(head)
    if magic != MAGIC:
        raise DataError(f"'{path}' is not a shard (wrong magic): point data_dir at a folder made by prepare/")
    if version != FORMAT_VERSION:
        raise DataError(f"shard '{path}' has format version {version}, this code reads {FORMAT_VERSION}: "
                        f"re-run the prepare script")
    if itemsize not in itemsizes:
        raise DataError(f"shard '{path}' has itemsize {itemsize}, expected one of {sorted(itemsizes)}: "
                        f"re-run the prepare script")
    if size != HEADER_SIZE + n * itemsize:
        raise DataError(f"truncated shard '{path}' ({size} bytes, header says {n} tokens = "
                        f"{HEADER_SIZE + n * itemsize} bytes): re-run the prepare script")
    return np.memmap(path, dtype=_DTYPES[itemsize], mode='r', offset=HEADER_SIZE, shape=(n,))


# ----------------------------------------------------------------------------------------------
# token shards

def token_itemsize(vocab_size):
    """uint16 while every id fits (vocab_size <= 65536), else uint32."""
    return 2 if vocab_size <= 2 ** 16 else 4


def _check_ids(path, tokens, vocab_size):
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        bad = int(tokens.max()) if tokens.max() >= vocab_size else int(tokens.min())
        raise DataError(f"token id {bad} for '{path}' is outside the vocabulary [0, {vocab_size}): "
                        f"check the tokenizer's vocab_size")


def write_shard(path, tokens, vocab_size):
    """Write a 1-D sequence of token ids atomically (uint16, or uint32 for large vocabularies)."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    _check_ids(path, tokens, vocab_size)
    _write_array(path, tokens, token_itemsize(vocab_size))


def read_shard(path):
    """Validated read-only 1-D np.memmap of a shard's tokens."""
    return _read_array(path, (2, 4))


def shard_name(split, i):
    return f"{split}_{i:06d}.bin"


def shard_paths(data_dir, split):
    """Sorted shards of one split (a leftover `.bin.tmp` never matches)."""
    if not os.path.isdir(data_dir):
        return []
    pat = re.compile(re.escape(split) + r'_\d{6}\.bin')
    return sorted(os.path.join(data_dir, f) for f in os.listdir(data_dir) if pat.fullmatch(f))


# ----------------------------------------------------------------------------------------------
# meta.json

def write_meta(data_dir, meta):
    text = json.dumps(meta, indent=2) + '\n'
    _atomic_write(os.path.join(data_dir, 'meta.json'), lambda f: f.write(text.encode()))


def _prepare_hint(data_dir):
    """The command that makes `data_dir`, guessed from its name (prepare/<name>.py if it exists)."""
    name = os.path.basename(os.path.normpath(data_dir))
    root = os.path.dirname(os.path.abspath(__file__))
    if name and os.path.isfile(os.path.join(root, 'prepare', name + '.py')):
        return f"python prepare/{name}.py"
    return f"python prepare/text.py --source=<files or hub id> --out_dir={data_dir}"


def load_meta(data_dir):
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isdir(data_dir):
        raise DataError(f"data set '{data_dir}' not found: run `{_prepare_hint(data_dir)}` first")
    if not os.path.isfile(path):
        raise DataError(f"data set '{data_dir}' is incomplete (no meta.json): run `{_prepare_hint(data_dir)}` first")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read '{path}' ({e}): re-run `{_prepare_hint(data_dir)}`") from None
    missing = [k for k in ('tokenizer', 'vocab_size', 'eot_id', 'splits') if k not in meta]
    if missing:
        raise DataError(f"'{path}' lacks {missing}: re-run `{_prepare_hint(data_dir)}`")
    return meta


def _split_meta(data_dir, split, model_vocab_size=None):
    """meta.json of data_dir, checked to have `split` and to fit the model's vocabulary."""
    meta = load_meta(data_dir)
    if split not in meta['splits']:
        raise DataError(f"no '{split}' split in {data_dir}; available: {', '.join(meta['splits']) or 'none'}")
    if model_vocab_size is not None and meta['vocab_size'] > model_vocab_size:
        raise DataError(f"data vocabulary {meta['vocab_size']} is larger than the model's vocab_size "
                        f"{model_vocab_size} ({data_dir}): set --vocab_size={meta['vocab_size']} or larger")
    return meta


def open_split(data_dir, split, model_vocab_size=None):
    """Validated memmaps of every shard of `split`, checked against meta.json and the model."""
    meta = _split_meta(data_dir, split, model_vocab_size)
    paths = shard_paths(data_dir, split)
    expected = meta['splits'][split]
    if len(paths) != expected['shards']:
        raise DataError(f"{data_dir} has {len(paths)} '{split}' shards but meta.json lists "
                        f"{expected['shards']}: re-run `{_prepare_hint(data_dir)}`")
    shards = [read_shard(p) for p in paths]
    n = sum(len(s) for s in shards)
    if n != expected['tokens']:
        raise DataError(f"{data_dir} '{split}' shards hold {n} tokens but meta.json says "
                        f"{expected['tokens']}: re-run `{_prepare_hint(data_dir)}`")
    return shards


# ----------------------------------------------------------------------------------------------
# language-model batches

def _split_label(shards):
    name = getattr(shards[0], 'filename', None) if shards else None
    return os.path.basename(name).rsplit('_', 1)[0] if name else '?'


def _too_short(shards, block_size):
    n = max((len(s) for s in shards), default=0)
    return DataError(f"split '{_split_label(shards)}' has only {n} tokens in its longest shard, fewer than "
                     f"block_size+1={block_size + 1}; lower block_size or prepare more data")


def get_lm_batch(shards, block_size, batch_size, seed, index):
    """Random windows of block_size+1 tokens -> (x, y) int64 tensors of shape (B, T).

    (seed, index) alone fixes the batch: the trainer passes a global micro-batch index, so DDP on N
    ranks equals N-step accumulation and a resumed run draws the same batches. Every window start in
    the split is equally likely (shards weighted by their usable length); windows never cross shards.
    """
    import torch  # imported here so prepare scripts start fast (they never build batches)
    starts = np.array([max(len(s) - block_size, 0) for s in shards], dtype=np.int64)  # starts per shard
    total = int(starts.sum())
    if total == 0:
        raise _too_short(shards, block_size)
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    g = rng.integers(0, total, size=batch_size)
    ends = np.cumsum(starts)
    which = np.searchsorted(ends, g, side='right')
    offs = g - (ends[which] - starts[which])
    buf = np.stack([shards[w][o:o + block_size + 1] for w, o in zip(which, offs)]).astype(np.int64)
    buf = torch.from_numpy(buf)
    return buf[:, :-1], buf[:, 1:]


def iter_eval_batches(shards, block_size, batch_size, max_batches=None):
    """Deterministic non-overlapping windows from the start of the split (validation loss).

    Windows advance by block_size, so every target token is scored once; the last batch may be
    smaller. max_batches=None (or <= 0) walks the whole split."""
    import torch
    if not any(len(s) > block_size for s in shards):
        raise _too_short(shards, block_size)
    rows, done = [], 0
    for s in shards:
        for o in range(0, len(s) - block_size, block_size):
            rows.append(np.asarray(s[o:o + block_size + 1], dtype=np.int64))
            if len(rows) == batch_size:
                buf = torch.from_numpy(np.stack(rows))
                yield buf[:, :-1], buf[:, 1:]
                rows, done = [], done + 1
                if max_batches and done >= max_batches:
                    return
    if rows:
        buf = torch.from_numpy(np.stack(rows))
        yield buf[:, :-1], buf[:, 1:]


def unigram_entropy(shards, vocab_size):
    """Entropy of the split's token frequencies in nats/token: the loss of a model that ignores context."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for s in shards:
        counts += np.bincount(np.asarray(s), minlength=vocab_size)[:vocab_size]
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(-(p * np.log(p)).sum())


# ----------------------------------------------------------------------------------------------
# records: structured examples (src/tgt pairs, prompt/chosen/rejected, numeric sequences)
# `<name>.bin` holds the concatenated tokens (a normal shard), `<name>.idx` (same header, int64)
# holds per record len(fields)+1 offsets into it, `<name>.json` names the fields; the json is
# written last, so its presence marks a complete set.

def _records_paths(path):
    if not path.endswith('.bin'):
        raise DataError(f"records path '{path}' must end in .bin")
    return path, path[:-4] + '.idx', path[:-4] + '.json'


def write_records(path, records, fields, vocab_size):
    """records: list of dicts field -> list[int]. Writes .bin, .idx and .json atomically."""
    bin_path, idx_path, json_path = _records_paths(path)
    fields = list(fields)
    offsets = np.zeros((len(records), len(fields) + 1), dtype=np.int64)
    chunks, pos = [], 0
    for i, rec in enumerate(records):
        offsets[i, 0] = pos
        for j, f in enumerate(fields):
            if f not in rec:
                raise DataError(f"record {i} for '{path}' has no field '{f}' (fields: {fields})")
            toks = np.asarray(rec[f], dtype=np.int64).reshape(-1)
            chunks.append(toks)
            pos += toks.size
            offsets[i, j + 1] = pos
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    if os.path.exists(json_path):
        os.remove(json_path)  # the old set is invalid from here until the new json lands
    write_shard(bin_path, tokens, vocab_size)
    _write_array(idx_path, offsets.reshape(-1), 8)
    meta = json.dumps({'fields': fields, 'records': len(records), 'vocab_size': vocab_size}).encode()
    _atomic_write(json_path, lambda f: f.write(meta))


class Records:
    """Read-only view of a records set: len(r), r.fields, r[i] -> {field: np.ndarray of ids}."""

    def __init__(self, path):
        bin_path, idx_path, json_path = _records_paths(path)
        if not os.path.isfile(json_path):
            raise DataError(f"records '{path}' not found or incomplete (no {os.path.basename(json_path)}): "
                            f"re-run the prepare script")
        with open(json_path) as f:
            info = json.load(f)
        self.path, self.fields = path, list(info['fields'])
        self.tokens = read_shard(bin_path)
        idx = _read_array(idx_path, (8,))
        k = len(self.fields) + 1
        if idx.size != info['records'] * k or (idx.size and idx[-1] != len(self.tokens)):
            raise DataError(f"records index '{idx_path}' does not match '{bin_path}': re-run the prepare script")
        self.offsets = idx.reshape(-1, k)

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, i):
        o = self.offsets[i]  # numpy indexing: negative i works, out of range raises IndexError
        return {f: self.tokens[o[j]:o[j + 1]] for j, f in enumerate(self.fields)}


def read_records(path):
    return Records(path)


# ----------------------------------------------------------------------------------------------
# tokenizers: spec dicts (stored in meta.json and in checkpoints) -> Tokenizer objects

class ByteTokenizer:
    """UTF-8 bytes 0..255, then <|endoftext|>=256, <|pad|>=257, <|sep|>=258."""

    def __init__(self):
        self.spec = {'kind': 'byte'}
        self.eot_id, self.pad_id, self.sep_id = 256, 257, 258
        self.vocab_size = 259

    def encode(self, text):
        return list(text.encode('utf-8'))

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            i = int(i)
            if i < 256:
                out.append(i)
            elif i in (self.eot_id, self.sep_id):
                out += SPECIALS[i - 256].encode()
            # pad and ids beyond the vocabulary (padded model vocab) carry no text
        return out.decode('utf-8', errors='replace')


class TiktokenTokenizer:
    """One wrapper for every tiktoken.Encoding (gpt2 and our own bpe): specials are never parsed
    from text; decode skips pad and ids past the vocabulary."""

    def __init__(self, enc, spec):
        self.enc, self.spec = enc, spec
        special = enc._special_tokens
        self.eot_id, self.pad_id, self.sep_id = (special[s] for s in SPECIALS)
        self.vocab_size = enc.n_vocab

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts):
        return self.enc.encode_ordinary_batch(list(texts), num_threads=os.cpu_count() or 1)

    def decode(self, ids):
        ids = [int(i) for i in ids if 0 <= int(i) < self.vocab_size and int(i) != self.pad_id]
        return self.enc.decode_bytes(ids).decode('utf-8', errors='replace')


def parse_ranks(text):
    """tiktoken ranks-file text ('base64(bytes) rank' per line) -> {bytes: rank}."""
    ranks = {}
    for line in text.splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def format_ranks(ranks):
    return ''.join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda x: x[1]))


def _tiktoken(spec, name, pattern, ranks, specials):
    import tiktoken
    missing = [s for s in SPECIALS if s not in specials]
    if missing:
        raise DataError(f"tokenizer spec '{name}' lacks special tokens {missing}: re-run the prepare script")
    enc = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=dict(specials))
    return TiktokenTokenizer(enc, spec)


def get_tokenizer(spec):
    """spec: {'kind': 'byte'} | {'kind': 'gpt2'} | {'kind': 'bpe' or 'tiktoken', 'pattern', 'ranks',
    'specials'[, 'name']} (self-contained: a checkpoint with the spec never needs the data dir)."""
    kind = spec.get('kind')
    if kind == 'byte':
        return ByteTokenizer()
    if kind == 'gpt2':
        import tiktoken
        try:
            base = tiktoken.get_encoding('gpt2')
        except Exception as e:  # no network and no cached files: say so in one line
            msg = first_line(e)
            raise DataError(f"cannot load tiktoken's gpt2 encoding ({msg}): connect once or set "
                            f"TIKTOKEN_CACHE_DIR, or use --tokenizer=bpe / byte") from None
        # gpt2 keeps its eot (50256); pad and sep follow the vocabulary (50257, 50258)
        specials = {SPECIALS[0]: base.eot_token, SPECIALS[1]: base.n_vocab, SPECIALS[2]: base.n_vocab + 1}
        return _tiktoken(spec, 'gpt2_gptlab', base._pat_str, base._mergeable_ranks, specials)
    if kind in ('bpe', 'tiktoken'):
        return _tiktoken(spec, spec.get('name', kind), spec['pattern'], parse_ranks(spec['ranks']), spec['specials'])
    if kind == 'numeric':
        return NumericTokenizer(spec['n_values'])
    raise DataError(f"unknown tokenizer kind {kind!r}: use one of 'byte', 'gpt2', 'bpe'")


def train_bpe(text_iterator, vocab_size, pattern=GPT4_PATTERN):
    """Train a byte-level BPE with rustbpe on an iterator of strings -> self-contained bpe spec.

    vocab_size counts the three specials, which get the ids right after the learned ranks."""
    import rustbpe
    if vocab_size < MIN_BPE_VOCAB:
        raise DataError(f"bpe vocab_size {vocab_size} is too small: use at least {MIN_BPE_VOCAB}")
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(text_iterator), vocab_size - len(SPECIALS), pattern=pattern)
    ranks = dict(tok.get_mergeable_ranks())
    n = len(ranks)
    return {'kind': 'bpe', 'name': f'bpe{n + len(SPECIALS)}', 'pattern': tok.get_pattern(),
            'ranks': format_ranks(ranks), 'specials': {s: n + i for i, s in enumerate(SPECIALS)}}


def save_ranks_file(spec, path):
    """The tiktoken-compatible ranks file (tiktoken.load.load_tiktoken_bpe reads it) next to the shards."""
    _atomic_write(path, lambda f: f.write(spec['ranks'].encode()))


def build_tokenizer(kind, vocab_size, train_docs):
    """A prepare script's tokenizer: bpe is trained on train_docs (an iterable of strings)."""
    if kind == 'bpe':
        return get_tokenizer(train_bpe(train_docs, vocab_size))
    if kind in ('byte', 'gpt2'):
        return get_tokenizer({'kind': kind})
    raise DataError(f"--tokenizer={kind!r} is unknown: use bpe, byte or gpt2")


# ----------------------------------------------------------------------------------------------
# bits per byte: loss per UTF-8 byte of text, comparable across tokenizers (byte, gpt2, bpe of any size)

def token_bytes(tokenizer, n_ids):
    """UTF-8 bytes each token id 0..n_ids-1 decodes to, as an np.int64 array (None for a tokenizer of
    non-text values, e.g. numeric). Special tokens (<|endoftext|>, pad, sep) and ids past the tokenizer's
    vocabulary (a padded model vocabulary) count 0 bytes. Summed over a token sequence this is the byte
    length of the text the sequence decodes to (byte-level tokenizers: a token's bytes never overlap)."""
    out = np.zeros(n_ids, np.int64)
    if isinstance(tokenizer, ByteTokenizer):
        out[:min(256, n_ids)] = 1
    elif isinstance(tokenizer, TiktokenTokenizer):
        specials = set(tokenizer.enc._special_tokens.values())
        for i in range(min(n_ids, tokenizer.enc.n_vocab)):
            if i not in specials:
                out[i] = len(tokenizer.enc.decode_single_token_bytes(i))
    else:
        return None
    return out


def bpb_sums(logits, targets, byte_counts):
    """(nats, bytes) of one batch for bits per byte = nats / (ln 2 * bytes): the summed loss of the target
    tokens that stand for text, and their UTF-8 bytes (byte_counts from token_bytes). Targets of 0 bytes
    (special tokens, and -100 = not scored) are left out of both sums."""
    import torch
    tb = torch.as_tensor(byte_counts, device=targets.device)
    nb = torch.where(targets >= 0, tb[targets.clamp(min=0)], 0)
    loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100,
                                             reduction='none')
    return float((loss * (nb > 0)).sum()), int(nb.sum())


def bits_per_byte(nats, n_bytes):
    return nats / (math.log(2) * n_bytes) if n_bytes else float('nan')


# ----------------------------------------------------------------------------------------------
# the hub: one loader for every script that reads a Hugging Face data set (prepare/*.py, eval_tasks.py)

PARQUET_REVISION = 'refs/convert/parquet'  # the hub's automatic conversion: <config>/<split>/0000.parquet


def load_hub(src, config='', split=None, streaming=False, fields=()):
    """datasets.load_dataset(src, config, split, streaming) that survives today's hub.

    A script data set (refused by datasets >= 4: "Dataset scripts are no longer supported") is loaded
    from the hub's parquet conversion instead (revision refs/convert/parquet, the config as its folder),
    saying so in one line. A source that is gone (404), unreachable, or loads neither way is one
    DataError naming the --source alternatives: local files with the same `fields`."""
    import datasets
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(src, config or None, split=split, streaming=streaming)
    except Exception as e:
        err = e
    local = (f"pass --source=<a local .parquet/.jsonl file or folder with the fields "
             f"{', '.join(fields) or 'of the hub set'}> (e.g. downloaded where the hub is reachable)")
    if 'scripts are no longer supported' in str(err).lower():
        print(f"note: '{src}' is a script data set, which datasets {datasets.__version__} refuses; "
              f"loading the hub's parquet conversion (revision='{PARQUET_REVISION}'; of a split over 5 GB it holds the "
              f"first 5 GB only)", file=sys.stderr)
        try:
            return datasets.load_dataset(src, data_dir=config or None, split=split, streaming=streaming,
                                         revision=PARQUET_REVISION)
        except Exception as e2:
            raise DataError(f"'{src}' is a script data set and its parquet conversion did not load either "
                            f"({first_line(e2)}): {local}") from None
    if 'gated' in str(err).lower():
        local = f"accept its terms on https://huggingface.co/datasets/{src} and log in once (hf auth login), or {local}"
    gone = isinstance(err, FileNotFoundError) or '404' in str(err) or "doesn't exist" in str(err)
    raise DataError(f"cannot load '{src}' from the hub ({'gone, private or gated: ' if gone else ''}"
                    f"{first_line(err)}): {local}") from None


# ----------------------------------------------------------------------------------------------
# whole data sets (shared by every prepare/ script)

def is_prepared(out_dir):
    """A data set folder is complete once meta.json exists (it is written last, then renamed in)."""
    return os.path.isfile(os.path.join(out_dir, 'meta.json'))


def recorded_settings(out_dir):
    """The settings a prepare script recorded in out_dir ({} when it recorded none), or None when out_dir is not
    a data set this lab made: its meta.json (or prepare/fineweb_edu.py's progress.json, while it grows) is ours."""
    for name in ('meta.json', 'progress.json'):
        try:
            with open(os.path.join(out_dir, name)) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and ('tokenizer' in d or 'config' in d):
            return d.get('config') or {}
    return None


def _refuse_foreign(out_dir):
    if recorded_settings(out_dir) is None:
        raise DataError(f"out_dir '{out_dir}' exists and is not a data set made by prepare/ (no meta.json of ours); "
                        f"it is never replaced, not even with --force=True: choose another --out_dir")


def check_existing(out_dir, config, force, ignore=(), done_key=None):
    """The one rule for a prepare script's existing out_dir, called before anything is written.

    True: out_dir already holds this data set, made with the same settings (nothing to do). False: build it
    (absent, empty, unfinished, or --force=True on a set this lab made). A folder this lab did not make (a run,
    the user's files) is never replaced, not even with --force. A set made with other settings is not reused
    silently: one line naming what differs. `ignore`: settings that do not change the output; `done_key`: the
    meta.json key that marks a set complete when meta.json is rewritten after the shards (seq2seq records)."""
    if not os.path.exists(out_dir) or (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        return False
    _refuse_foreign(out_dir)
    old = recorded_settings(out_dir)
    if force:
        return False
    new = json.loads(json.dumps(config))  # as meta.json holds it (tuples are lists)
    skip = {'force', 'out_dir', *ignore}
    diff = [f"{k}={old[k]!r} (now {new[k]!r})" for k in new if k not in skip and k in old and old[k] != new[k]]
    if diff:
        raise DataError(f"{out_dir} was made with other settings: {', '.join(diff)}; rebuild it with --force=True "
                        f"or write elsewhere with --out_dir=...")
    if not is_prepared(out_dir):
        return False
    return done_key is None or done_key in load_meta(out_dir)


@contextlib.contextmanager
def building(out_dir):
    """with building(out_dir) as tmp: write a whole data set into tmp (meta.json last). It replaces out_dir
    only when the block completes; an error or interrupt removes tmp, so no half data set is ever seen, and
    leftovers of an earlier interrupted run are cleared first."""
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        _refuse_foreign(out_dir)  # the guard behind check_existing, for any caller
    tmp = os.path.normpath(out_dir) + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        shutil.rmtree(out_dir, ignore_errors=True)  # --force: the complete new set replaces the old one
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def provenance():
    """The meta.json fields that say how and when a data set was made (the exact command line, UTC time)."""
    return {'made_by': shlex.join([os.path.basename(sys.executable)] + sys.argv),
            'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}


def write_lm_dataset(out_dir, splits, tokenizer, meta_extra=None, shard_tokens=10_000_000, batch_docs=256):
    """Tokenize documents into `out_dir` with <|endoftext|> after each document.

    splits: {split: iterable of str}. Works in `out_dir.tmp` and renames it to out_dir at the end,
    so an interrupted run leaves no half data set (the next run starts over). Returns meta."""
    from tqdm import tqdm
    with building(out_dir) as tmp:
        vocab = tokenizer.vocab_size
        counts = {}
        for split, docs in splits.items():
            n_shards, n_tokens, buf, n_buf = 0, 0, [], 0
            hist = np.zeros(vocab, dtype=np.int64)

            def flush(final):
                nonlocal n_shards, buf, n_buf
                while n_buf >= shard_tokens or (final and n_buf):
                    arr = np.concatenate(buf)
                    write_shard(os.path.join(tmp, shard_name(split, n_shards)), arr[:shard_tokens], vocab)
                    hist[:] += np.bincount(arr[:shard_tokens], minlength=vocab)
                    n_shards += 1
                    buf = [arr[shard_tokens:]]
                    n_buf = buf[0].size

            def add(texts):
                nonlocal n_tokens, n_buf
                for ids in tokenizer.encode_batch(texts):
                    ids = np.asarray(ids + [tokenizer.eot_id], dtype=np.int64)
                    buf.append(ids)
                    n_buf += ids.size
                    n_tokens += ids.size
                flush(False)

            total = len(docs) if hasattr(docs, '__len__') else None
            batch = []
            for doc in tqdm(docs, total=total, desc=f"{split:>5}", unit='doc', dynamic_ncols=True):
                if doc:
                    batch.append(doc)
                if len(batch) == batch_docs:
                    add(batch)
                    batch = []
            if batch:
                add(batch)
            flush(True)
            p = hist[hist > 0] / max(n_tokens, 1)
            counts[split] = {'shards': n_shards, 'tokens': n_tokens,
                             'unigram_entropy': round(float(-(p * np.log(p)).sum()), 4)}
        meta = {'tokenizer': tokenizer.spec, 'vocab_size': vocab, 'eot_id': tokenizer.eot_id,
                'pad_id': tokenizer.pad_id, 'sep_id': tokenizer.sep_id, 'splits': counts,
                'source': '', **provenance()}
        meta.update(meta_extra or {})
        if tokenizer.spec['kind'] == 'bpe':
            save_ranks_file(tokenizer.spec, os.path.join(tmp, 'tokenizer.bpe'))
        write_meta(tmp, meta)
    return meta


def assign_splits(keys, val_fraction, seed):
    """Deterministic 'train'/'val' label per key (a file path, a document number) from a stable hash
    (zlib.crc32, not Python's salted hash()), so re-runs and other machines agree. With val_fraction
    > 0 and at least two keys, both splits get at least one key."""
    h = [zlib.crc32(f"{seed}:{k}".encode()) / 2 ** 32 for k in keys]
    labels = ['val' if x < val_fraction else 'train' for x in h]
    if val_fraction > 0 and len(keys) >= 2:
        if 'val' not in labels:
            labels[int(np.argmin(h))] = 'val'
        if 'train' not in labels:
            labels[int(np.argmax(h))] = 'train'
    return labels


def print_summary(out_dir, meta, n_docs, seconds):
    s = ', '.join(f"{k}: {v['tokens']:,} tokens in {v['shards']} shard(s)" for k, v in meta['splits'].items())
    print(f"wrote {out_dir}: {n_docs:,} documents; {s}; vocab {meta['vocab_size']} "
          f"({meta['tokenizer']['kind']}); {seconds:.1f}s")


# ----------------------------------------------------------------------------------------------
# seq2seq records (objective='seq2seq'): `seq2seq_<split>.bin/.idx/.json` with fields src, tgt,
# next to a data set's meta.json. The loader makes the padded batches, in one of three forms that
# all score the same tokens (the target, then <|endoftext|>):
#   'encdec'  src -> encoder (padded with -1); decoder x = [sep] tgt, y = tgt [eot]
#   'concat'  decoder-only x/y over  src [sep] tgt [eot], loss on tgt [eot] only
#   'lm'      decoder-only x/y over  [eot] src tgt [eot]: a model trained on raw text continues src

SEQ2SEQ_FORMS = ('encdec', 'concat', 'lm')


def seq2seq_path(data_dir, split):
    return os.path.join(data_dir, f'seq2seq_{split}.bin')


def open_seq2seq(data_dir, split, model_vocab_size=None):
    """Validated source/target records of one split (and meta's special ids)."""
    meta = load_meta(data_dir)
    path = seq2seq_path(data_dir, split)
    if not os.path.isfile(path[:-4] + '.json'):
        raise DataError(f"{data_dir} has no seq2seq records for split '{split}' (seq2seq_{split}.json): "
                        f"prepare it with prepare/tiny_textbooks.py or prepare/samsum.py")
    if model_vocab_size is not None and meta['vocab_size'] > model_vocab_size:
        raise DataError(f"data vocabulary {meta['vocab_size']} is larger than the model's vocab_size "
                        f"{model_vocab_size} ({data_dir}): set --vocab_size={meta['vocab_size']} or larger")
    recs = Records(path)
    if recs.fields != ['src', 'tgt']:
        raise DataError(f"'{path}' has fields {recs.fields}, expected ['src', 'tgt']: re-run the prepare script")
    if len(recs) == 0:
        raise DataError(f"'{path}' holds no records: prepare more data")
    recs.ids = {'pad': meta['pad_id'], 'sep': meta['sep_id'], 'eot': meta['eot_id']}
    return recs


def seq2seq_row(src, tgt, form, block_size, ids, score_source=False):
    """One example -> (x, y, src) lists; y is -100 where there is no loss. Too long: the source loses
    its start (the end is nearest the target), then the target its end."""
    src, tgt = [int(t) for t in src], [int(t) for t in tgt]
    if form == 'encdec':
        return [ids['sep']] + tgt[:block_size - 1], (tgt + [ids['eot']])[:block_size], src[-block_size:]
    prefix, mid = ([ids['eot']], []) if form == 'lm' else ([], [ids['sep']])
    keep = max(0, block_size + 1 - len(prefix) - len(mid) - len(tgt) - 1)
    src = src[len(src) - min(keep, len(src)):]
    seq = (prefix + src + mid + tgt + [ids['eot']])[:block_size + 1]
    first = 0 if score_source else len(prefix) + len(src) + len(mid) - 1  # position that predicts tgt[0]
    y = [t if i >= first else -100 for i, t in enumerate(seq[1:])]
    return seq[:-1], y, None


def seq2seq_collate(rows, pad_id):
    """Rows of (x, y, src) -> {'x', 'y'[, 'src']} right-padded to the longest row (x: pad, y: -100, src: -1)."""
    import torch
    T = max(len(x) for x, _, _ in rows)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), -100, dtype=torch.long)
    for r, (xr, yr, _) in enumerate(rows):
        x[r, :len(xr)] = torch.tensor(xr, dtype=torch.long)
        y[r, :len(yr)] = torch.tensor(yr, dtype=torch.long)
    b = {'x': x, 'y': y}
    if rows[0][2] is not None:
        S = max(max(len(s) for _, _, s in rows), 1)
        b['src'] = torch.full((len(rows), S), -1, dtype=torch.long)
        for r, (_, _, s) in enumerate(rows):
            b['src'][r, :len(s)] = torch.tensor(s, dtype=torch.long)
    return b


def get_seq2seq_batch(recs, form, block_size, batch_size, seed, index, score_source=False):
    """batch_size random records; (seed, index) alone fixes the batch (as in get_lm_batch)."""
    if form not in SEQ2SEQ_FORMS:
        raise DataError(f"unknown seq2seq form '{form}'; valid: {', '.join(SEQ2SEQ_FORMS)}")
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    rows = [seq2seq_row(recs[int(i)]['src'], recs[int(i)]['tgt'], form, block_size, recs.ids, score_source)
            for i in rng.integers(0, len(recs), size=batch_size)]
    return seq2seq_collate(rows, recs.ids['pad'])


def iter_seq2seq_eval_batches(recs, form, block_size, batch_size, max_batches=None, score_source=False):
    """Records in order, batch_size at a time (max_batches=None or <= 0: all of them)."""
    for n, i in enumerate(range(0, len(recs), batch_size)):
        if max_batches and n >= max_batches:
            return
        rows = [seq2seq_row(recs[j]['src'], recs[j]['tgt'], form, block_size, recs.ids, score_source)
                for j in range(i, min(i + batch_size, len(recs)))]
        yield seq2seq_collate(rows, recs.ids['pad'])


def write_seq2seq_records(data_dir, split_records, vocab_size):
    """{split: list of {'src': ids, 'tgt': ids}} -> seq2seq_<split> records; returns counts for meta."""
    counts = {}
    for split, recs in split_records.items():
        write_records(seq2seq_path(data_dir, split), recs, ['src', 'tgt'], vocab_size)
        counts[split] = {'records': len(recs), 'src_tokens': int(sum(len(r['src']) for r in recs)),
                         'tgt_tokens': int(sum(len(r['tgt']) for r in recs))}
    return counts


# records batches (objective 'records') and the numeric tokenizer (prepare/numeric.py)

def open_records(data_dir, split, model_vocab_size=None):
    """The records set `data_dir/<split>.bin`, checked against meta.json; .pad_id comes from meta."""
    meta = _split_meta(data_dir, split, model_vocab_size)
    recs = Records(os.path.join(data_dir, f'{split}.bin'))
    if len(recs) != meta['splits'][split].get('records'):
        raise DataError(f"{data_dir} '{split}' has {len(recs)} records but meta.json lists "
                        f"{meta['splits'][split].get('records')}: re-run `{_prepare_hint(data_dir)}`")
    recs.pad_id = meta['pad_id']
    return recs


def records_xy(seqs, pad_id, block_size, scored=None):
    """Next-token pairs of whole sequences, right-padded to the longest: x pads with pad_id, y with -100
    (no loss), so a padded position never changes a real one (the models are causal). scored: per
    sequence a 0/1 array as long as it; a token with 0 carries no loss (y = -100 where it is the target)."""
    import torch
    n = max(len(s) for s in seqs) - 1
    if n + 1 > block_size + 1:
        raise DataError(f"a record of {n + 1} tokens does not fit block_size={block_size}: "
                        f"set --block_size={n} or more")
    x = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), n), -100, dtype=torch.long)
    for r, s in enumerate(seqs):
        s = torch.from_numpy(np.asarray(s, dtype=np.int64))
        x[r, :len(s) - 1], y[r, :len(s) - 1] = s[:-1], s[1:]
        if scored is not None:
            y[r, :len(s) - 1][torch.from_numpy(np.asarray(scored[r][1:]) == 0)] = -100
    return x, y


def records_scored(recs, rows):
    """The 'scored' loss masks of these rows when the records set has that field (e.g. prepare/mqar.py:
    loss on the queried values only), else None (every token is scored)."""
    return [recs[int(i)]['scored'] for i in rows] if 'scored' in recs.fields else None


def get_records_batch(recs, field, block_size, batch_size, seed, index):
    """batch_size random records (field `field`) -> padded (x, y); (seed, index) alone fixes the batch."""
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    rows = rng.integers(0, len(recs), size=batch_size)
    return records_xy([recs[int(i)][field] for i in rows], recs.pad_id, block_size, records_scored(recs, rows))


def iter_records_batches(recs, field, block_size, batch_size, max_batches=None):
    """Deterministic batches of consecutive records from the start (validation loss)."""
    for b, i in enumerate(range(0, len(recs), batch_size)):
        if max_batches and b >= max_batches:
            return
        rows = range(i, min(i + batch_size, len(recs)))
        yield records_xy([recs[j][field] for j in rows], recs.pad_id, block_size, records_scored(recs, rows))


class NumericTokenizer:
    """Integers 0..n_values-1 are their own ids; then <|endoftext|>, <|sep|> and <|pad|> (pad is the last
    id). Text is numbers separated by spaces, '|' for sep: encode('| 3 5 7'), decode -> ' | 3 5 7'."""

    def __init__(self, n_values):
        self.n = int(n_values)
        self.spec = {'kind': 'numeric', 'n_values': self.n}
        self.eot_id, self.sep_id, self.pad_id = self.n, self.n + 1, self.n + 2
        self.vocab_size = self.n + 3

    def encode(self, text):
        ids = []
        for w in text.replace('|', ' | ').split():
            if w == '|':
                ids.append(self.sep_id)
            elif w.isdigit() and int(w) < self.n:
                ids.append(int(w))
            else:
                raise DataError(f"'{w}' is not a number in 0..{self.n - 1} or '|': "
                                f"a numeric prompt is numbers separated by spaces")
        return ids

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        # a leading space per token, so a streamed continuation reads '3 5 7' + ' 9 11'
        words = {self.sep_id: ' |', self.eot_id: '\n'}
        return ''.join(f' {int(i)}' if int(i) < self.n else words.get(int(i), '') for i in ids)


# ----------------------------------------------------------------------------------------------
# preference pairs (objective='dpo'): prompt/chosen/rejected records -> padded batches with response masks
# A pairs data set holds `<split>_pairs.{bin,idx,json}` records (made by prepare/pairs.py) and meta.json.

PAIR_FIELDS = ('prompt', 'chosen', 'rejected')


def open_pairs(data_dir, split):
    """The validated prompt/chosen/rejected records of one split of a pairs data set."""
    path = os.path.join(data_dir, f'{split}_pairs.bin')
    if not os.path.isfile(path[:-4] + '.json'):
        raise DataError(f"'{data_dir}' has no '{split}' preference pairs ({os.path.basename(path)}): build them with "
                        f"`python prepare/pairs.py --data=<prepared LM data set>` and pass its out_dir as data")
    recs = read_records(path)
    if recs.fields != list(PAIR_FIELDS):
        raise DataError(f"'{path}' has fields {recs.fields}, not {list(PAIR_FIELDS)}: rebuild with prepare/pairs.py")
    if len(recs) == 0:
        raise DataError(f"'{path}' holds no pairs: rebuild with prepare/pairs.py and more documents")
    return recs


def pair_sequence(prompt, response, seq_max_len):
    """prompt + response, at most seq_max_len tokens: prompt tokens are dropped from the left, never the
    response. Returns (tokens, start of the response)."""
    keep = seq_max_len - len(response)
    if len(prompt) < 1 or len(response) < 1:
        raise DataError(f"a pair has an empty prompt or response ({len(prompt)}/{len(response)} tokens): "
                        f"rebuild the pairs with prepare/pairs.py")
    if keep < 1:
        raise DataError(f"a response of {len(response)} tokens leaves no room for the prompt in seq_max_len="
                        f"{seq_max_len}: raise seq_max_len and block_size, or rebuild the pairs with a smaller "
                        f"--max_response_tokens")
    prompt = prompt[max(0, len(prompt) - keep):]
    return np.concatenate([np.asarray(prompt, np.int64), np.asarray(response, np.int64)]), len(prompt)


def collate_pairs(recs, seq_max_len, pad_id):
    """Records -> {'x', 'y'} of shape (2B, T): rows 0..B-1 are prompt+chosen, rows B..2B-1 prompt+rejected
    (one forward pass scores both). x = tokens[:-1] right-padded with pad_id (causal attention: padding
    after a sequence never reaches it); y = tokens[1:] where the target is a response token and -100
    elsewhere, so the response mask is exactly y != -100."""
    import torch
    seqs = [pair_sequence(r['prompt'], r[f], seq_max_len) for f in ('chosen', 'rejected') for r in recs]
    T = max(len(s) for s, _ in seqs) - 1
    x = np.full((len(seqs), T), pad_id, dtype=np.int64)
    y = np.full((len(seqs), T), -100, dtype=np.int64)
    for i, (s, start) in enumerate(seqs):
        x[i, :len(s) - 1] = s[:-1]
        y[i, start - 1:len(s) - 1] = s[start:]  # position start-1 (last prompt token) predicts the first response token
    return {'x': torch.from_numpy(x), 'y': torch.from_numpy(y)}


def get_pair_batch(recs, batch_size, seq_max_len, pad_id, seed, index):
    """Random pairs; (seed, index) alone fixes the batch, as in get_lm_batch. 'idx' holds the record numbers."""
    import torch
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    idx = rng.integers(0, len(recs), size=batch_size)
    b = collate_pairs([recs[i] for i in idx], seq_max_len, pad_id)
    b['idx'] = torch.from_numpy(idx.astype(np.int64))
    return b


def iter_pair_batches(recs, batch_size, seq_max_len, pad_id, max_batches=None):
    """Deterministic batches in record order (validation, scoring); max_batches None or <= 0 = all."""
    import torch
    for n, i in enumerate(range(0, len(recs), batch_size)):
        if max_batches and n >= max_batches:
            return
        idx = np.arange(i, min(i + batch_size, len(recs)))
        b = collate_pairs([recs[j] for j in idx], seq_max_len, pad_id)
        b['idx'] = torch.from_numpy(idx)
        yield b
