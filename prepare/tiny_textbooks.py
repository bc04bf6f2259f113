"""nampdn-ai/tiny-textbooks for the encoder-decoder study: raw-text LM shards and midpoint-split records.

Writes into one folder (default data/tiny_textbooks):
  - train/val/test LM shards of the whole documents (decoder-only language modelling), and
  - seq2seq_<split> records: each document's tokens split at the midpoint, first half = source,
    second half = target. The loader (data.py) builds the decoder-only form `first [SEP] second`
    with loss on the second half only, or feeds the first half to an encoder.
Rules: documents under min_doc_tokens tokens are dropped (from both forms, counted in meta.json);
documents over max_doc_tokens are cut into nearly equal consecutive pieces of at most that many
tokens, and each piece is split at its own midpoint. The source's test split is kept; val (and
test, if missing) are carved from train by a stable hash of the document number.

    python prepare/tiny_textbooks.py                                   # the hub (needs network)
    python prepare/tiny_textbooks.py --source=folder_or.jsonl --field=textbook --vocab_size=2048
"""
import os
import sys
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data  # noqa: E402
import text  # noqa: E402  (prepare/text.py: loading local files / the hub)

source: Text('hub id, or local .jsonl/.parquet/.txt') = 'nampdn-ai/tiny-textbooks'  # a file or folder, same fields
field: Text('column with the document') = 'textbook'  # tiny-textbooks: 'textbook' = the synthetic text
out_dir: Text('output folder') = 'data/tiny_textbooks'
tokenizer: OneOf(data.TOKENIZERS) = 'bpe'  # bpe: trained here on the train split
vocab_size: Range(data.MIN_BPE_VOCAB) = 8192  # bpe only; includes the 3 special tokens
min_doc_tokens: Range(2) = 32  # shorter documents are dropped: a midpoint split of a few tokens says nothing
max_doc_tokens: Range(2) = 1024  # longer documents become nearly equal pieces of at most this many tokens
val_fraction: Range(0, 1, hi_open=True) = 0.01  # carved from train when the source has no validation split
test_fraction: Range(0, 1, hi_open=True) = 0.01  # carved from train when the source has no test split
max_docs: Range(1, also=(-1,)) = -1  # per split; -1 = all
shard_tokens: Range(1) = 10_000_000
seed: Range(0) = 1337
force: bool = False  # rebuild out_dir (only a data set prepare/ made)
RULES = [('min_doc_tokens <= max_doc_tokens', 'a piece holds at least one whole short document'),
         ('val_fraction + test_fraction < 1', 'train keeps the rest of the rows')]


def midpoint_records(ids, min_tokens, max_tokens):
    """Token list of one document -> list of {'src': first half, 'tgt': second half} (maybe several pieces)."""
    n = len(ids)
    if n < min_tokens:
        return []
    pieces = np.array_split(np.asarray(ids, dtype=np.int64), -(-n // max_tokens))
    return [{'src': p[:len(p) // 2], 'tgt': p[len(p) // 2:]} for p in pieces]


def main():
    config = configurator.configure(globals())
    print(config)
    if data.check_existing(out_dir, config, force, done_key='seq2seq'):
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
        return
    t0 = time.time()
    rows = text.carve_splits(text.load_split_rows(source, [field], max_rows=max_docs), val_fraction, test_fraction, seed)
    docs = {s: [r[field].strip() if isinstance(r[field], str) else '' for r in rows[s]] for s in ('train', 'val', 'test')}
    if not any(docs['train']):
        raise data.DataError(f"'{source}' holds no text in field '{field}': pass a non-empty source")
    print(f"documents: {', '.join(f'{k}: {len(v):,}' for k, v in docs.items())}; tokenizer {tokenizer}")
    tok = data.build_tokenizer(tokenizer, vocab_size, (d for d in docs['train'] if d))
    # the short-document rule applies to both forms, so both architectures see the same text
    kept, records, dropped = {}, {}, {}
    for split, ds in docs.items():
        kept[split], records[split], dropped[split] = [], [], 0
        for i in tqdm(range(0, len(ds), 256), desc=f"{split:>5} split", unit='batch', dynamic_ncols=True):
            batch = ds[i:i + 256]
            for d, ids in zip(batch, tok.encode_batch(batch)):
                recs = midpoint_records(ids, min_doc_tokens, max_doc_tokens)
                if recs:
                    kept[split].append(d)
                    records[split].extend(recs)
                else:
                    dropped[split] += 1
    if not records['train']:
        raise data.DataError(f"no document of '{source}' has {min_doc_tokens}+ tokens: lower --min_doc_tokens")
    meta = data.write_lm_dataset(out_dir, kept, tok, shard_tokens=shard_tokens, meta_extra={
        'source': source, 'field': field, 'documents': {k: len(v) for k, v in kept.items()}, 'config': config})
    # records after the LM shards; meta['seq2seq'] (written last) marks the folder complete
    meta['seq2seq'] = data.write_seq2seq_records(out_dir, records, tok.vocab_size)
    meta['seq2seq_rule'] = (f"midpoint split; documents < {min_doc_tokens} tokens dropped ({dropped}); "
                            f"documents > {max_doc_tokens} tokens cut into nearly equal pieces")
    data.write_meta(out_dir, meta)
    data.print_summary(out_dir, meta, sum(len(v) for v in kept.values()), time.time() - t0)
    print('seq2seq records: ' + ', '.join(f"{k}: {v['records']:,}" for k, v in meta['seq2seq'].items())
          + f"; dropped short documents: {dropped}")


if __name__ == '__main__':
    configurator.run_main(main)
