"""Preference pairs for DPO from ANY prepared LM data set (the embedded corpus, TinyStories, ...).

Each held-out document (or chunk of one) becomes one pair: its first prompt_frac of tokens is the
prompt, the true continuation is `chosen`, and `rejected` is a corrupted continuation:

  shuffle  the continuation's lines (>= 3 lines, e.g. code), else its sentences (>= 2), else its words,
           put in a different order (same tokens, broken order), then re-tokenized
  other    the continuation of another document of the same split (fluent, but not this prompt's)
  noise    noise_frac of the continuation's tokens replaced by tokens drawn from the split's own
           token distribution (same length)

Documents are read from from_split (default 'val': held out from SFT training) and assigned whole
to test, then val, then train, in an order fixed by a stable hash, so no document feeds two splits.
Writes <out_dir>/{train,val,test}_pairs.{bin,idx,json} (data.write_records) and meta.json.

    python prepare/pairs.py --data=stdlib --corruption=shuffle --chunk_tokens=96
    python prepare/pairs.py --data=tinystories --corruption=other --train_pairs=20000
"""
import os
import re
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data as datalib  # noqa: E402

CORRUPTIONS = ('shuffle', 'other', 'noise')

data: Text('prepared LM data set name') = 'stdlib'  # under data_root
data_root: Text('folder of data sets') = 'data'
from_split: Text('split of the LM data set') = 'val'  # its documents become pairs (held out from SFT)
out_dir: Text('output folder') = ''  # '' = <data_root>/<data>_pairs_<corruption>
corruption: OneOf(CORRUPTIONS) = 'shuffle'  # (see above)
chunk_tokens: Range(0) = 0  # > 0: cut documents into chunks of this many tokens, one pair per chunk (long
                           # documents such as source files); 0: one pair per document (stories)
max_per_doc: Range(0) = 0  # > 0: at most this many pairs (chunks) per document, so a split spans many documents
prompt_frac: Range(0, 1, lo_open=True, hi_open=True) = 0.5  # fraction of a document's (chunk's) tokens in the prompt
max_response_tokens: Range(1) = 128  # longer continuations are cut at their end (sequences stay within seq_max_len)
min_response_tokens: Range(1) = 8  # shorter continuations: the document is skipped
noise_frac: Range(0, 1, lo_open=True) = 0.25  # noise: fraction of the continuation's tokens replaced
train_pairs: Range(1, also=(-1,)) = 20000  # -1 = every remaining document
val_pairs: Range(1) = 500
test_pairs: Range(1) = 500
seed: Range(0) = 1337
force: bool = False  # rebuild out_dir (only a pairs set prepare/ made)
SETTINGS = ('from_split', 'corruption', 'chunk_tokens', 'max_per_doc', 'prompt_frac', 'max_response_tokens', 'min_response_tokens',
            'noise_frac', 'train_pairs', 'val_pairs', 'test_pairs', 'seed')
DEFAULTS = {k: globals()[k] for k in SETTINGS}


def documents(shards, eot_id):
    """Token arrays of the documents of a split (the <|endoftext|> separators dropped)."""
    from tqdm import tqdm
    docs, carry = [], np.zeros(0, np.int64)
    for s in tqdm(shards, desc='read', unit='shard', dynamic_ncols=True):
        s = np.concatenate([carry, np.asarray(s, np.int64)])  # a document may cross a shard boundary
        ends = np.flatnonzero(s == eot_id)
        start = 0
        for e in ends:
            if e > start:
                docs.append(s[start:e])
            start = e + 1
        carry = s[start:]
    if len(carry):
        docs.append(carry)
    return docs


def split_units(text):
    """(units, joiner) for the shuffle corruption: lines, else sentences, else words."""
    if text.count('\n') >= 2:
        lines = text.splitlines(keepends=True)
        return lines, ''
    sentences = [s for s in re.split(r'(?<=[.!?])\s+', text) if s]
    if len(sentences) >= 2:
        return sentences, ' '
    return text.split(' '), ' '


def shuffle_text(text, rng):
    """The text's units in a different order, or None when every order reads the same."""
    units, joiner = split_units(text)
    if joiner == '' and not units[-1].endswith('\n'):
        units[-1] += '\n'  # a last line without newline would glue onto the next one when moved
        tail_fix = True
    else:
        tail_fix = False
    for _ in range(10):
        out = joiner.join(units[i] for i in rng.permutation(len(units)))
        if tail_fix and out.endswith('\n'):
            out = out[:-1]
        if out != text:
            return out
    return None


def corrupt(kind, response, rng, tok, others, pool, cfg):
    """The rejected continuation for `response` (np.int64 array), or None when this one cannot be corrupted."""
    if kind == 'shuffle':
        out = shuffle_text(tok.decode(response), rng)
        return None if out is None else np.asarray(tok.encode(out)[:cfg['max_response_tokens']], np.int64)
    if kind == 'other':
        other = others[rng.integers(len(others))]  # another document's continuation, cut to this length
        return None if np.array_equal(other[:len(response)], response) else other[:len(response)]
    if kind == 'noise':
        out = response.copy()
        k = max(1, int(round(cfg['noise_frac'] * len(out))))
        pos = rng.choice(len(out), size=k, replace=False)
        for p in pos:
            for _ in range(20):  # a replacement equal to the original token changes nothing: draw again
                t = pool[rng.integers(len(pool))]
                if t != out[p]:
                    out[p] = t
                    break
        return None if np.array_equal(out, response) else out
    raise configurator.UserError(f"unknown corruption '{kind}'; valid values: {', '.join(CORRUPTIONS)}")


def units_of(doc, cfg):
    """(prompt, response) pairs of one document: one per chunk (chunk_tokens > 0) or one for the document."""
    n = cfg['chunk_tokens']
    chunks = [doc[i:i + n] for i in range(0, len(doc), n)] if n > 0 else [doc]
    out = []
    for c in chunks:
        p = int(round(cfg['prompt_frac'] * len(c)))
        resp = c[p:p + cfg['max_response_tokens']]
        if p >= 1 and len(resp) >= cfg['min_response_tokens']:
            out.append((c[:p], resp))
    return out


def build_pairs(lm_dir, pairs_dir, **overrides):
    """Build the pairs data set `pairs_dir` from the LM data set `lm_dir` (settings: DEFAULTS + overrides).
    Written in pairs_dir.tmp and renamed when complete. Returns meta."""
    from tqdm import tqdm
    cfg = {**DEFAULTS, **overrides}
    if cfg['corruption'] not in CORRUPTIONS:
        raise configurator.UserError(f"unknown corruption '{cfg['corruption']}'; valid values: {', '.join(CORRUPTIONS)}")
    if not 0 < cfg['prompt_frac'] < 1:
        raise configurator.UserError(f"prompt_frac must be in (0, 1), got {cfg['prompt_frac']}")
    if not 0 < cfg['noise_frac'] <= 1:
        raise configurator.UserError(f"noise_frac must be in (0, 1], got {cfg['noise_frac']}")
    meta = datalib.load_meta(lm_dir)
    tok = datalib.get_tokenizer(meta['tokenizer'])
    docs = documents(datalib.open_split(lm_dir, cfg['from_split']), meta['eot_id'])
    # documents in a stable hashed order fill test, then val, then train
    order = sorted(range(len(docs)), key=lambda i: zlib.crc32(f"{cfg['seed']}:{i}".encode()))
    want = {'test': cfg['test_pairs'], 'val': cfg['val_pairs'], 'train': cfg['train_pairs']}
    units = {s: [] for s in want}
    k = 0
    for split in ('test', 'val', 'train'):
        while k < len(order) and (want[split] < 0 or len(units[split]) < want[split]):
            u = units_of(docs[order[k]], cfg)[:cfg['max_per_doc'] or None]
            units[split] += [(order[k], p, r) for p, r in u][:None if want[split] < 0 else want[split] - len(units[split])]
            k += 1
    pool = np.concatenate(docs) if docs else np.zeros(0, np.int64)
    rng = np.random.Generator(np.random.PCG64([cfg['seed'], CORRUPTIONS.index(cfg['corruption'])]))
    with datalib.building(pairs_dir) as tmp:
        counts = {}
        for split in ('train', 'val', 'test'):
            u = units[split]
            if not u:
                raise datalib.DataError(f"no '{split}' pairs: split '{cfg['from_split']}' of {lm_dir} has {len(docs)} "
                                        f"documents, too few for test/val/train = {cfg['test_pairs']}/{cfg['val_pairs']}/"
                                        f"{cfg['train_pairs']}; lower the counts, set --chunk_tokens, or use more data")
            if len({d for d, _, _ in u}) < 2 and cfg['corruption'] == 'other':
                raise datalib.DataError(f"corruption 'other' needs >= 2 documents in the '{split}' split; "
                                        f"use more documents or another --corruption")
            recs, skipped = [], 0
            for d, prompt, resp in tqdm(u, desc=f"{split:>5}", unit='pair', dynamic_ncols=True):
                others = [r for dd, _, r in (u[j] for j in rng.integers(len(u), size=8)) if dd != d] \
                    if cfg['corruption'] == 'other' else None
                rej = corrupt(cfg['corruption'], resp, rng, tok, others or [resp], pool, cfg)
                if rej is None or len(rej) == 0:
                    skipped += 1
                    continue
                recs.append({'prompt': prompt, 'chosen': resp, 'rejected': rej})
            if not recs:
                raise datalib.DataError(f"every '{split}' pair failed to corrupt ({cfg['corruption']}): try another "
                                        f"--corruption or longer --max_response_tokens")
            datalib.write_records(os.path.join(tmp, f'{split}_pairs.bin'), recs, datalib.PAIR_FIELDS,
                                  meta['vocab_size'])
            counts[split] = {'pairs': len(recs), 'skipped': skipped, 'requested': want[split],
                             'tokens': int(sum(len(r[f]) for r in recs for f in datalib.PAIR_FIELDS))}
            if 0 <= want[split] and len(recs) < want[split]:
                print(f"warning: {split}: {len(recs)} pairs, fewer than the {want[split]} asked for "
                      f"({len(docs)} documents in '{cfg['from_split']}')", file=sys.stderr)
        out = {k: meta[k] for k in ('tokenizer', 'vocab_size', 'eot_id', 'pad_id', 'sep_id')}
        out.update(kind='pairs', splits=counts, source=os.path.abspath(lm_dir), config=cfg, **datalib.provenance())
        datalib.write_meta(tmp, out)
    return out


def main():
    config = configurator.configure(globals())
    print(config)
    lm_dir = os.path.join(data_root, data)
    dest = out_dir or os.path.join(data_root, f'{data}_pairs_{corruption}')
    settings = {**DEFAULTS, **{k: config[k] for k in SETTINGS}}
    if datalib.check_existing(dest, settings, force):
        print(f"{dest} already holds these pairs (use --force=True to rebuild)")
        return
    t0 = time.time()
    meta = build_pairs(lm_dir, dest, **settings)
    s = ', '.join(f"{k}: {v['pairs']:,} pairs ({v['skipped']} skipped)" for k, v in meta['splits'].items())
    print(f"wrote {dest}: {s}; corruption {corruption}; {time.time() - t0:.1f}s")


if __name__ == '__main__':
    configurator.run_main(main)
