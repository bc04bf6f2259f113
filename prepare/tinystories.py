"""TinyStories: LM shards for SFT (GPT-2 tokens, <|endoftext|> between stories) and DPO preference pairs.

The LM set is the train split (and the hub's validation split as val); the preference pairs are built
from the validation stories (held out from SFT) by prepare/pairs.py's builder: each story's first half
is the prompt, its true second half `chosen`, a corrupted one `rejected` (--corruption: shuffle | other
| noise), with disjoint train/val/test pairs.

    python prepare/tinystories.py                              # hub, all 2.1M stories -> data/tinystories
    python prepare/tinystories.py --limit=100000 --corruption=other
    python prepare/tinystories.py --source=TinyStoriesV2-GPT4-valid.txt --tokenizer=bpe --vocab_size=2048

--source: a hub id, or local files with the hub's shape: .txt with stories separated by <|endoftext|>
(the TinyStoriesV2 files), .jsonl / .parquet with a `text` field; a folder of them. Local files whose
name marks them as validation (valid, validation, val) form the val split; without any, val_fraction
of the stories is carved out by a stable hash.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data  # noqa: E402
import pairs as pairlib  # noqa: E402
import text as textlib  # noqa: E402

source: Text('hub id, or a local .txt/.jsonl/.parquet file or folder') = 'roneneldan/TinyStories'  # (see above)
limit: Range(1, also=(-1,)) = -1  # at most this many training stories (-1 = all)
val_limit: Range(1, also=(-1,)) = -1  # at most this many validation stories (they feed the val split and the pairs)
tokenizer: OneOf(data.TOKENIZERS) = 'gpt2'  # bpe: trained here on the train split; byte: offline tests
vocab_size: Range(data.MIN_BPE_VOCAB) = 8192  # bpe only; includes the 3 special tokens
val_fraction: Range(0, 1, hi_open=True) = 0.05  # local sources without a validation file
out_dir: Text('output folder') = 'data/tinystories'
shard_tokens: Range(1) = 10_000_000
build_pairs: bool = True  # also build the preference pairs (into <out_dir>_pairs_<corruption>)
corruption: OneOf(pairlib.CORRUPTIONS) = pairlib.corruption
train_pairs: Range(1, also=(-1,)) = -1  # -1 = every validation story not used for val/test pairs
val_pairs: Range(1) = pairlib.val_pairs
test_pairs: Range(1) = pairlib.test_pairs
max_response_tokens: Range(1) = pairlib.max_response_tokens
seed: Range(0) = 1337
force: bool = False  # rebuild out_dir and the pairs (only data sets prepare/ made)
PAIR_SETTINGS = ('build_pairs', 'corruption', 'train_pairs', 'val_pairs', 'test_pairs', 'max_response_tokens')

EOT = '<|endoftext|>'
VAL_FILE = re.compile(r'(^|[-_.])(valid|validation|val)([-_.]|$)', re.I)


def read_local(src):
    """{'train': [parts], 'val': [parts]} from local files (val only when a file is named as validation)."""
    if os.path.isdir(src):
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(textlib.LOCAL_EXTS))
    else:
        paths = [src] if src.endswith(textlib.LOCAL_EXTS) else []
    if not paths:
        raise data.DataError(f"no .txt/.jsonl/.parquet files at '{src}': pass a TinyStories file or folder")
    out = {}
    for p in paths:
        split = 'val' if VAL_FILE.search(os.path.basename(p)) else 'train'
        if p.endswith('.txt'):  # TinyStoriesV2 layout: stories separated by <|endoftext|>
            with open(p, encoding='utf-8', errors='replace') as f:
                part = [s.strip() for s in f.read().split(EOT)]
            part = [s for s in part if s]
        else:
            part = textlib.load_local(p)['train'][0]
        out.setdefault(split, []).append(part)
    return out


def main():
    config = configurator.configure(globals())
    print(config)
    pairs_dir = f'{os.path.normpath(out_dir)}_pairs_{corruption}'
    if not data.check_existing(out_dir, config, force, ignore=PAIR_SETTINGS):
        t0 = time.time()
        raw = read_local(source) if os.path.exists(source) else textlib.load_hub(source)
        if 'train' not in raw:
            raise data.DataError(f"'{source}' has only validation files: add a training file")
        for parts in raw.values():
            for p in parts:
                if not isinstance(p, list) and 'text' not in p.column_names:
                    raise data.DataError(f"no field 'text' in '{source}'; available: {', '.join(p.column_names)}")
        train = textlib.limit(raw['train'], limit)
        if 'val' in raw:
            splits = {'train': textlib.Docs(train), 'val': textlib.Docs(textlib.limit(raw['val'], val_limit))}
        else:  # carve val_fraction of the stories by a stable hash of their number
            n = sum(len(p) for p in train)
            labels = data.assign_splits(range(n), val_fraction, seed)
            splits = {s: textlib.Docs(train, keep=[x == s for x in labels]) for s in ('train', 'val')}
        n_docs = sum(len(d) for d in splits.values())
        print(f"{n_docs:,} stories ({', '.join(f'{k}: {len(v):,}' for k, v in splits.items())}); tokenizer {tokenizer}")
        tok = data.build_tokenizer(tokenizer, vocab_size, (t for t in splits['train']))
        meta = data.write_lm_dataset(out_dir, splits, tok, shard_tokens=shard_tokens, meta_extra={
            'source': source, 'field': 'text', 'documents': n_docs, 'config': config})
        data.print_summary(out_dir, meta, n_docs, time.time() - t0)
    else:
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
    if build_pairs:
        settings = {**pairlib.DEFAULTS, 'from_split': 'val', 'corruption': corruption, 'train_pairs': train_pairs,
                    'val_pairs': val_pairs, 'test_pairs': test_pairs, 'max_response_tokens': max_response_tokens,
                    'seed': seed}
        if data.check_existing(pairs_dir, settings, force):
            print(f"{pairs_dir} already holds these pairs (use --force=True to rebuild)")
            return
        meta = pairlib.build_pairs(out_dir, pairs_dir, **settings)
        print(f"wrote {pairs_dir}: " + ', '.join(f"{k}: {v['pairs']:,} pairs" for k, v in meta['splits'].items()))


if __name__ == '__main__':
    configurator.run_main(main)
