"""Length-generalization tasks on digit strings, as seq2seq records (objective='seq2seq', decoder-only
`src [SEP] tgt [EOT]`, loss on the target only) for analysis/pe_lengen.py.

    python prepare/lengen.py --task=copy --train_len=16        # -> data/lengen_copy_L16

Tasks (src = n random digits 0-9, n = the example's length):
  copy      tgt = src
  reverse   tgt = src reversed
  sort      tgt = src sorted ascending (repeated digits kept)
Tokenizer: the numeric one with n_values=10 (data.NumericTokenizer): the digits are ids 0-9, then
<|endoftext|>=10, <|sep|>=11, <|pad|>=12; a vocabulary of 13 that fits the tasks exactly.
Splits: train and val hold lengths 1..train_len (uniform); test holds n_test examples of every length
1..test_len (default 2 * train_len), in order of length, for exact match by length. Examples are drawn
independently, so a short test string can also occur in train (there are only 10 strings of length 1);
from length 6 on an overlap is rare (10^6 strings). Everything is a function of `seed`.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data  # noqa: E402

TASKS = ('copy', 'reverse', 'sort')

task: OneOf(TASKS) = 'copy'
train_len: Range(1) = 16  # L: training lengths are 1..L
test_len: Range(0) = 0  # test lengths are 1..test_len (0 = 2 * train_len)
n_train: Range(1) = 50000
n_val: Range(1) = 500
n_test: Range(1) = 50  # per test length
out_dir: Text('output folder') = ''  # '' = data/lengen_<task>_L<train_len>
seed: Range(0) = 1337
force: bool = False  # rebuild out_dir (only a data set prepare/ made)


def target(task_name, src):
    if task_name == 'copy':
        return list(src)
    if task_name == 'reverse':
        return list(src[::-1])
    if task_name == 'sort':
        return sorted(src)
    raise configurator.UserError(f"unknown task '{task_name}'; valid: {', '.join(TASKS)}")


def example(task_name, n, rng):
    src = [int(d) for d in rng.integers(0, 10, n)]
    return {'src': src, 'tgt': target(task_name, src)}


def build(cfg):
    """{split: list of {'src', 'tgt'}}; test is sorted by length (n_test per length)."""
    from tqdm import tqdm
    L, T = cfg['train_len'], cfg['test_len'] or 2 * cfg['train_len']
    out = {}
    for si, (split, n) in enumerate((('train', cfg['n_train']), ('val', cfg['n_val']))):
        rng = np.random.Generator(np.random.PCG64([cfg['seed'], si]))
        lens = rng.integers(1, L + 1, n)
        out[split] = [example(cfg['task'], int(k), rng) for k in tqdm(lens, desc=split, unit='ex', dynamic_ncols=True)]
    rng = np.random.Generator(np.random.PCG64([cfg['seed'], 2]))
    out['test'] = [example(cfg['task'], k, rng) for k in range(1, T + 1) for _ in range(cfg['n_test'])]
    return out


def main():
    global out_dir
    cfg = configurator.configure(globals())
    out_dir = out_dir or os.path.join('data', f'lengen_{task}_L{train_len}')
    if data.check_existing(out_dir, cfg, force):
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
        return
    t0 = time.time()
    tok = data.NumericTokenizer(10)
    splits = build(cfg)
    with data.building(out_dir) as tmp:  # renamed to out_dir when complete
        counts = data.write_seq2seq_records(tmp, splits, tok.vocab_size)
        data.write_meta(tmp, {  # written last: its presence marks a complete set
            'tokenizer': tok.spec, 'vocab_size': tok.vocab_size, 'eot_id': tok.eot_id, 'sep_id': tok.sep_id,
            'pad_id': tok.pad_id, 'splits': {}, 'seq2seq': counts, 'task': task, 'train_len': train_len,
            'test_len': test_len or 2 * train_len, 'n_test': n_test,
            'source': f'generated digit strings ({task})', 'config': cfg, **data.provenance()})
    print(f"wrote {out_dir}: " + ', '.join(f"{k} {v['records']:,}" for k, v in counts.items())
          + f" records; {time.time() - t0:.1f}s")


if __name__ == '__main__':
    configurator.run_main(main)
