"""Multi-query associative recall (MQAR, Arora et al. 2023 "Zoology") as records for the 'records' objective.

    python prepare/mqar.py                                 # -> data/mqar_kv4 (4 pairs per sequence)
    python prepare/mqar.py --n_pairs=16                    # -> data/mqar_kv16

A sequence is n_pairs key-value pairs, then n_pairs queries, each a stored key followed by its value:

    [sep] k1 v1 k2 v2 ... kn vn  [sep] q1 v(q1) q2 v(q2) ... qn v(qn)

Queries are drawn with replacement from the sequence's keys (queries='with_replacement', the default), so
no answer follows from the others. queries='permutation' asks every key exactly once, in random order: then
the last answer is the one value not yet given (and the one before is one of two), a shortcut that needs no
recall: a 2-layer model at 4 pairs learns it first and sits at ~0.52 accuracy ((1/4+1/3+1/2+1)/4), which
looks like partial recall; kept to show that (docs/mqar.md).

Keys are distinct within a sequence and drawn from 0..n_keys-1, values from n_keys..n_keys+n_vals-1
(disjoint halves of the vocabulary, as in Zoology; values may repeat). Only the queried values carry
loss: field 'scored' is 1 exactly there (data.records_xy turns the rest into -100), so validation loss
and accuracy measure recall and nothing else. Zoology spaces its queries with random filler tokens;
here they follow each other (shorter sequences for a CPU), which keeps the task: every answer needs
the value stored next to the same key earlier in the sequence.

Tokens: data.NumericTokenizer(n_keys + n_vals) (numbers are their own ids, then eot, sep, pad). Record:
{'seq': tokens, 'scored': 0/1 per token}. Splits train/val/test are independent draws from one seed.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
import data  # noqa: E402

out_dir = ''               # '' = data/mqar_kv<n_pairs>
n_pairs = 4                # key-value pairs per sequence (= queries per sequence)
n_keys = 32                # key tokens 0..n_keys-1
n_vals = 32                # value tokens n_keys..n_keys+n_vals-1
queries = 'with_replacement'  # or 'permutation' (every key once: the last answers follow by elimination)
n_train = 20000            # sequences per split
n_val = 500
n_test = 1000
seed = 1337
force = False              # rebuild even if out_dir is already complete


QUERIES = ('with_replacement', 'permutation')


def example(rng, n_pairs, n_keys, n_vals, sep, queries='with_replacement'):
    """One MQAR sequence and its loss mask (1 on the queried values)."""
    keys = rng.choice(n_keys, size=n_pairs, replace=False)
    vals = n_keys + rng.integers(0, n_vals, size=n_pairs)
    order = rng.permutation(n_pairs) if queries == 'permutation' else rng.integers(0, n_pairs, size=n_pairs)
    seq = [sep] + [int(t) for kv in zip(keys, vals) for t in kv] + [sep]
    seq += [int(t) for i in order for t in (keys[i], vals[i])]
    scored = [0] * (2 * n_pairs + 2) + [0, 1] * n_pairs
    return seq, scored


def build(cfg):
    """{split: [records]}; a split's draws come from (seed, split number) alone."""
    from tqdm import tqdm
    sep = data.NumericTokenizer(cfg['n_keys'] + cfg['n_vals']).sep_id
    out = {}
    for i, (split, n) in enumerate((('train', cfg['n_train']), ('val', cfg['n_val']), ('test', cfg['n_test']))):
        rng = np.random.Generator(np.random.PCG64([cfg['seed'], i]))
        out[split] = []
        for _ in tqdm(range(n), desc=split, unit='seq', dynamic_ncols=True, leave=False):
            seq, scored = example(rng, cfg['n_pairs'], cfg['n_keys'], cfg['n_vals'], sep, cfg['queries'])
            out[split].append({'seq': seq, 'scored': scored})
    return out


def check(cfg):
    if cfg['queries'] not in QUERIES:
        raise configurator.UserError(f"queries={cfg['queries']!r} is not one of {', '.join(QUERIES)}")
    if not 1 <= cfg['n_pairs'] <= cfg['n_keys']:
        raise configurator.UserError(f"n_pairs={cfg['n_pairs']} needs 1 <= n_pairs <= n_keys={cfg['n_keys']} "
                                     f"(keys are distinct within a sequence): raise n_keys or lower n_pairs")
    if cfg['n_vals'] < 2:
        raise configurator.UserError(f"n_vals={cfg['n_vals']} is too small: use at least 2")
    if min(cfg['n_train'], cfg['n_val'], cfg['n_test']) < 1:
        raise configurator.UserError("n_train, n_val and n_test must each be >= 1")


def write(out, records, cfg):
    """Write the records sets through data.write_records in out.tmp, meta.json last, then rename."""
    tok = data.NumericTokenizer(cfg['n_keys'] + cfg['n_vals'])
    with data.building(out) as tmp:
        splits = {}
        for s, recs in records.items():
            data.write_records(os.path.join(tmp, f'{s}.bin'), recs, ['seq', 'scored'], tok.vocab_size)
            splits[s] = {'records': len(recs), 'tokens': sum(len(r['seq']) for r in recs)}
        meta = {'tokenizer': tok.spec, 'vocab_size': tok.vocab_size, 'eot_id': tok.eot_id, 'pad_id': tok.pad_id,
                'sep_id': tok.sep_id, 'splits': splits, 'format': 'records', 'task': 'mqar',
                'seq_len': 4 * cfg['n_pairs'] + 2,
                'fields': {'seq': '[sep] k v ... [sep] q v(q) ...', 'scored': '1 on the queried values'},
                'source': 'generated by prepare/mqar.py', 'config': cfg, **data.provenance()}
        data.write_meta(tmp, meta)
    return meta


def main():
    global out_dir
    cfg = configurator.configure(globals())
    out_dir = cfg['out_dir'] = out_dir or os.path.join('data', f'mqar_kv{n_pairs}')
    check(cfg)
    if data.is_prepared(out_dir) and not force:
        print(f"{out_dir} already prepared (use --force=True to rebuild)")
        return
    t0 = time.time()
    meta = write(out_dir, build(cfg), cfg)
    print(f"wrote {out_dir}: " + ', '.join(f"{s}: {v['records']:,} sequences" for s, v in meta['splits'].items())
          + f" of {meta['seq_len']} tokens; vocab {meta['vocab_size']} (numeric); {time.time() - t0:.1f}s")


if __name__ == '__main__':
    configurator.run_main(main)
