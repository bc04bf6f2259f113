"""WikiText-103 -> data/wikitext103: train / val / test shards (GPT-2 tokens by default).

    python prepare/wikitext103.py                                  # Salesforce/wikitext, wikitext-103-raw-v1
    python prepare/wikitext103.py --variant=wikitext-103-v1        # the tokenized (<unk>) variant
    python prepare/wikitext103.py --subset_ratio=0.05              # first 5% of train articles, quick runs
    python prepare/wikitext103.py --source=local_dir/              # {train,validation,test}*.parquet|jsonl

The data set has one row per line; lines are joined into articles, which start at a top-level
heading line ` = Title = `. The hub's validation split becomes `val`.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data  # noqa: E402

source: Text('hub id, or a local folder with files named by split') = 'Salesforce/wikitext'
variant: Text('hub configuration') = 'wikitext-103-raw-v1'  # 'wikitext-103-v1' = the <unk> variant
out_dir: Text('output folder') = 'data/wikitext103'
tokenizer: OneOf(data.TOKENIZERS) = 'gpt2'
vocab_size: Range(data.MIN_BPE_VOCAB) = 32768  # bpe only
subset_ratio: Range(0, 1, lo_open=True) = 1.0  # keep this fraction of the train articles (the first ones)
shard_tokens: Range(1) = 50_000_000
force: bool = False  # rebuild out_dir (only a data set prepare/ made)

SPLITS = {'train': 'train', 'validation': 'val', 'test': 'test'}
HEADING = re.compile(r'^ = [^=].* = $')


def load_splits(src):
    """{hub split name: datasets.Dataset} from the hub or from local files named by split."""
    import datasets
    datasets.disable_progress_bars()
    try:
        if os.path.isdir(src):
            files = sorted(os.listdir(src))
            data_files = {}
            for split in SPLITS:
                mine = [os.path.join(src, f) for f in files if f.startswith(split) and f.endswith(('.parquet', '.jsonl'))]
                if mine:
                    data_files[split] = mine
            if not data_files:
                raise data.DataError(f"no train*/validation*/test* .parquet or .jsonl files in '{src}'")
            builder = 'parquet' if data_files[next(iter(data_files))][0].endswith('.parquet') else 'json'
            return dict(datasets.load_dataset(builder, data_files=data_files))
        return dict(data.load_hub(src, variant, fields=('text',)))
    except data.DataError:
        raise
    except Exception as e:
        msg = data.first_line(e)
        raise data.DataError(f"cannot load WikiText from '{src}' ({msg}): check --source and --variant") from None


def articles(lines):
    """Join WikiText's lines into articles at each top-level heading."""
    out, cur = [], []
    for line in lines:
        if HEADING.match(line.rstrip('\n')) and cur:
            out.append(''.join(cur))
            cur = []
        cur.append(line)
    if cur:
        out.append(''.join(cur))
    return [a for a in out if a.strip()]


def main():
    config = configurator.configure(globals())
    if data.check_existing(out_dir, config, force):
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
        return
    t0 = time.time()
    raw = load_splits(source)
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise data.DataError(f"'{source}' lacks the split(s) {missing}; WikiText has train, validation and test")
    splits = {}
    for hub_name, name in SPLITS.items():
        if 'text' not in raw[hub_name].column_names:
            raise data.DataError(f"no 'text' field in '{source}' split {hub_name}; available: "
                                 f"{', '.join(raw[hub_name].column_names)}")
        docs = articles(raw[hub_name]['text'])
        if name == 'train' and subset_ratio < 1:
            docs = docs[:max(1, int(len(docs) * subset_ratio))]
        splits[name] = docs
    if not any(d.strip() for d in splits['train']):
        raise data.DataError(f"'{source}' has no text in its train split")
    n_docs = sum(len(v) for v in splits.values())
    print(f"{n_docs:,} articles ({', '.join(f'{k}: {len(v):,}' for k, v in splits.items())}); tokenizer {tokenizer}")
    tok = data.build_tokenizer(tokenizer, vocab_size, iter(splits['train']))
    meta = data.write_lm_dataset(out_dir, splits, tok, shard_tokens=shard_tokens, meta_extra={
        'source': f'{source} ({variant})' if not os.path.isdir(source) else source, 'documents': n_docs,
        'config': config})
    data.print_summary(out_dir, meta, n_docs, time.time() - t0)


if __name__ == '__main__':
    configurator.run_main(main)
