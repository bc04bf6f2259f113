"""Algorithmic task examples (eval_tasks.ALGO_TASKS, in-distribution ranges only) as records to mix
into pretraining: python train.py ... --algo_data=algorithmic_stdlib_128 --algo_mix=0.1

They are tokenized with the tokenizer of the data set they are mixed into (--data), and the
distance tasks' filler comes from its train split (evaluation takes filler from its val split).
Each record is one example: prompt, answer, newline, <|endoftext|>.

    python prepare/algorithmic.py --data=stdlib --block_size=128   # -> data/algorithmic_stdlib_128
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text  # noqa: E402
import data as datalib  # noqa: E402
from eval_tasks import ALGO_TASKS, algo_example  # noqa: E402

data: Text('data set name under data_root') = 'stdlib'  # to mix into: its tokenizer, its train split as filler
data_root: Text('folder of data sets') = 'data'
out_dir: Text('output folder') = ''  # '' = <data_root>/algorithmic_<data>_<block_size>
block_size: Range(1) = 128  # the training context: distance tasks are sized as fractions of it
n_examples: Range(1) = 20000
tasks: Each(OneOf(tuple(ALGO_TASKS)), min_len=1) = list(ALGO_TASKS)  # a subset of the six, in equal shares
seed: Range(0) = 1337
force: bool = False  # rebuild out_dir (only a data set prepare/ made)


def main():
    global out_dir
    config = configurator.configure(globals())
    out_dir = out_dir or os.path.join(data_root, f'algorithmic_{data}_{block_size}')
    if datalib.check_existing(out_dir, config, force):
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
        return
    from tqdm import tqdm
    t0 = time.time()
    src = os.path.join(data_root, data)
    meta = datalib.load_meta(src)
    tok = datalib.get_tokenizer(meta['tokenizer'])
    filler = np.concatenate([np.asarray(s) for s in datalib.open_split(src, 'train')])
    rng = np.random.Generator(np.random.PCG64(seed))
    records, counts = [], {t: 0 for t in tasks}
    for _ in tqdm(range(n_examples), desc='examples', unit='ex', dynamic_ncols=True):
        task = tasks[int(rng.integers(len(tasks)))]
        prompt, answer = algo_example(task, 'id', rng, tok, block_size, filler)
        records.append({'tokens': prompt + tok.encode(answer + '\n') + [tok.eot_id]})
        counts[task] += 1
    n_tokens = sum(len(r['tokens']) for r in records)
    with datalib.building(out_dir) as tmp:  # renamed to out_dir when complete
        datalib.write_records(os.path.join(tmp, 'train.bin'), records, ['tokens'], tok.vocab_size)
        datalib.write_meta(tmp, {  # written last: its presence marks a complete set
            'tokenizer': meta['tokenizer'], 'vocab_size': meta['vocab_size'], 'eot_id': meta['eot_id'],
            'pad_id': meta.get('pad_id'), 'sep_id': meta.get('sep_id'), 'splits': {},
            'records': {'train': len(records)}, 'tokens': n_tokens, 'block_size': block_size, 'tasks': counts,
            'source': f'algorithmic tasks, filler from {src} (train)',
            'config': config, **datalib.provenance()})
    print(f"wrote {out_dir}: {len(records):,} examples, {n_tokens:,} tokens ({counts}); {time.time() - t0:.1f}s")


if __name__ == '__main__':
    configurator.run_main(main)
