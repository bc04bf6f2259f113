"""Synthetic integer sequences of five types, as records for the 'records' objective and eval_tasks numeric.

    python prepare/numeric.py                                   # -> data/numeric
    python prepare/numeric.py --n_values=50 --max_len=12 --out_dir=data/numeric50

Types (every value stays in 0..n_values-1):
  counting     x, x+1, x+2, ...
  arithmetic   x, x+d, x+2d, ...          d in +-2..max_step or -1 (never 0 or +1: that is counting)
  geometric    x, r x, r^2 x, ... mod p   p = the largest prime <= n_values, r in 2..max_ratio, x != 0
  alternating  a, b, (c, ...), a, b, ...  2..max_period distinct values repeated in turn
  random_walk  x, x+e1, x+e1+e2, ...      steps e in -max_walk_step..max_walk_step (kept in range)
Tokens: the integers are their own ids, then <|endoftext|>, <|sep|>, <|pad|> (pad is the last id). A record
is {'seq': [sep, x1, ..., xL], 'type': [type id]}. Splits train/val/test hold sequences of
min_len..max_len values and test_long of long_min_len..long_max_len; the split of a sequence is a
hash of its values (stable, seeded), so no sequence is in two splits (test_long only takes sequences
whose hash says test). Everything is a function of `seed`.
"""
import os
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import Range, Text  # noqa: E402
import data  # noqa: E402

TYPES = ('counting', 'arithmetic', 'geometric', 'alternating', 'random_walk')

out_dir: Text('output folder') = 'data/numeric'
n_values: Range(8) = 100  # the numbers 0..n_values-1 are tokens
min_len: Range(2) = 8  # values per sequence in train/val/test
max_len: Range(2) = 16
long_min_len: Range(2) = 24  # values per sequence in test_long (length generalization)
long_max_len: Range(2) = 32
n_train: Range(len(TYPES)) = 20000  # sequences per split, spread evenly over the five types (one each at least)
n_val: Range(len(TYPES)) = 1000
n_test: Range(len(TYPES)) = 1000
n_test_long: Range(len(TYPES)) = 1000
max_step: Range(2) = 4  # arithmetic: |d| <= max_step
max_ratio: Range(2) = 5  # geometric: r in 2..max_ratio
max_period: Range(2) = 4  # alternating: 2..max_period values
max_walk_step: Range(1) = 3  # random_walk: |step| <= max_walk_step
val_fraction: Range(0, 1, lo_open=True, hi_open=True) = 0.1  # of the hash space; sets how many draws val/test need,
test_fraction: Range(0, 1, lo_open=True, hi_open=True) = 0.1  # not their sizes
seed: Range(0) = 1337
force: bool = False  # rebuild out_dir (only a data set prepare/ made)
RULES = [('min_len <= max_len and long_min_len <= long_max_len', 'a length range runs from min to max'),
         ('max_len <= n_values and long_max_len <= n_values', 'counting sequences must fit the n_values numbers'),
         ('max_period <= n_values', 'an alternating pattern takes max_period distinct values'),
         ('val_fraction + test_fraction < 1', 'train keeps the rest of the hash space')]


def largest_prime(n):
    for p in range(n, 1, -1):
        if all(p % q for q in range(2, int(p ** 0.5) + 1)):
            return p
    return 0


def generate(kind, length, rng, cfg):
    """One sequence (list of ints) of type `kind` with `length` values, from the numpy Generator rng."""
    n = cfg['n_values']
    if kind == 'counting':
        x = int(rng.integers(0, n - length + 1))
        return list(range(x, x + length))
    if kind == 'arithmetic':
        reach = (n - 1) // (length - 1)  # largest |d| that fits
        steps = [d for d in range(-min(cfg['max_step'], reach), min(cfg['max_step'], reach) + 1) if d not in (0, 1)]
        d = int(rng.choice(steps))
        span = abs(d) * (length - 1)
        x = int(rng.integers(0, n - span)) + (span if d < 0 else 0)
        return [x + d * t for t in range(length)]
    if kind == 'geometric':
        p = largest_prime(n)
        r = int(rng.integers(2, min(cfg['max_ratio'], p - 1) + 1))
        x = int(rng.integers(1, p))
        out = []
        for _ in range(length):
            out.append(x)
            x = x * r % p
        return out
    if kind == 'alternating':
        k = int(rng.integers(2, cfg['max_period'] + 1))
        vals = [int(v) for v in rng.choice(n, size=k, replace=False)]
        return [vals[t % k] for t in range(length)]
    if kind == 'random_walk':
        m = cfg['max_walk_step']
        x = int(rng.integers(0, n))
        out = [x]
        for _ in range(length - 1):
            x = int(rng.integers(max(0, x - m), min(n - 1, x + m) + 1))  # uniform over the steps kept in range
            out.append(x)
        return out
    raise ValueError(kind)


def split_of(values, cfg):
    """'train' | 'val' | 'test' from a seeded crc32 of the values: equal sequences share a split."""
    h = zlib.crc32(f"{cfg['seed']}:{' '.join(map(str, values))}".encode()) / 2 ** 32
    return 'val' if h < cfg['val_fraction'] else 'test' if h < cfg['val_fraction'] + cfg['test_fraction'] else 'train'


def quotas(total):
    return [total // len(TYPES) + (i < total % len(TYPES)) for i in range(len(TYPES))]


def build(cfg):
    """{split: list of records} for train/val/test/test_long (deterministic from cfg['seed'])."""
    from tqdm import tqdm
    short = {'train': quotas(cfg['n_train']), 'val': quotas(cfg['n_val']), 'test': quotas(cfg['n_test'])}
    long_q = quotas(cfg['n_test_long'])
    sep = cfg['n_values'] + 1
    out = {s: [] for s in ('train', 'val', 'test', 'test_long')}
    total = cfg['n_train'] + cfg['n_val'] + cfg['n_test'] + cfg['n_test_long']
    bar = tqdm(total=total, desc='sequences', unit='seq', dynamic_ncols=True)
    for ti, kind in enumerate(TYPES):
        for is_long in (False, True):
            need = {'test_long': long_q[ti]} if is_long else {s: q[ti] for s, q in short.items()}
            lo, hi = ((cfg['long_min_len'], cfg['long_max_len']) if is_long else (cfg['min_len'], cfg['max_len']))
            rng = np.random.Generator(np.random.PCG64([cfg['seed'], ti, int(is_long)]))
            draws, limit = 0, 1000 * sum(need.values()) + 10_000
            while any(need.values()):
                draws += 1
                if draws > limit:
                    raise data.DataError(f"cannot find enough distinct {kind} sequences for {sorted(k for k, v in need.items() if v)} "
                                         f"after {limit} draws: raise n_values or the lengths, or lower the counts")
                vals = generate(kind, int(rng.integers(lo, hi + 1)), rng, cfg)
                s = split_of(vals, cfg)
                s = 'test_long' if is_long and s == 'test' else s
                if need.get(s, 0) > 0:
                    need[s] -= 1
                    out[s].append({'seq': [sep] + vals, 'type': [ti]})
                    bar.update(1)
    bar.close()
    for s, recs in out.items():  # mix the types (a fixed permutation)
        perm = np.random.Generator(np.random.PCG64([cfg['seed'], 99])).permutation(len(recs))
        out[s] = [recs[i] for i in perm]
    return out


def write(out, records, cfg):
    """Write the records sets through data.write_records in out.tmp, meta.json last, then rename."""
    tok = data.NumericTokenizer(cfg['n_values'])
    with data.building(out) as tmp:
        splits = {}
        for s, recs in records.items():
            data.write_records(os.path.join(tmp, f'{s}.bin'), recs, ['seq', 'type'], tok.vocab_size)
            splits[s] = {'records': len(recs), 'tokens': sum(len(r['seq']) for r in recs),
                         'per_type': {t: sum(r['type'][0] == i for r in recs) for i, t in enumerate(TYPES)}}
        meta = {'tokenizer': tok.spec, 'vocab_size': tok.vocab_size, 'eot_id': tok.eot_id, 'pad_id': tok.pad_id,
                'sep_id': tok.sep_id, 'splits': splits, 'types': list(TYPES), 'format': 'records',
                'fields': {'seq': '[sep] + values', 'type': '[index into types]'},
                'source': 'generated by prepare/numeric.py', 'config': cfg, **data.provenance()}
        data.write_meta(tmp, meta)
    return meta


def main():
    cfg = configurator.configure(globals())
    print(cfg)
    if data.check_existing(out_dir, cfg, force):
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
        return
    t0 = time.time()
    meta = write(out_dir, build(cfg), cfg)
    print(f"wrote {out_dir}: " + ', '.join(f"{s}: {v['records']:,} sequences" for s, v in meta['splits'].items())
          + f"; vocab {meta['vocab_size']} (numeric); {time.time() - t0:.1f}s")


if __name__ == '__main__':
    configurator.run_main(main)
