"""SAMSum (dialogue -> summary) for the encoder-decoder study.

Writes into one folder (default data/samsum):
  - seq2seq_<split> records (train/val/test): source = the dialogue, target = the summary. The
    loader (data.py) feeds the dialogue to an encoder, or builds the decoder-only form
    `dialogue [SEP] summary` with loss on the summary only.
  - LM shards of `dialogue\\n\\nSummary: summary` documents (raw text, e.g. for pretraining).
Rows with an empty dialogue or summary are dropped (counted in meta.json). Line ends become '\\n'.

    python prepare/samsum.py                                  # knkarthick/samsum from the hub (network)
    python prepare/samsum.py --source=folder/                 # train.jsonl, validation.jsonl, test.jsonl
                                                              # with the hub's fields: id, dialogue, summary
"""
import os
import sys
import time

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data  # noqa: E402
import text  # noqa: E402  (prepare/text.py: loading local files / the hub)

source: Text('hub id, or local .jsonl/.parquet files') = 'knkarthick/samsum'  # (Samsung/samsum: 404 since 2025-05)
                             # or a local file or folder with the same fields
dialogue_field: Text('column with the dialogue') = 'dialogue'
summary_field: Text('column with the summary') = 'summary'
out_dir: Text('output folder') = 'data/samsum'
tokenizer: OneOf(data.TOKENIZERS) = 'bpe'  # bpe: trained here on the train split
vocab_size: Range(data.MIN_BPE_VOCAB) = 8192  # bpe only; includes the 3 special tokens
val_fraction: Range(0, 1, hi_open=True) = 0.05  # carved from train when the source has no validation split
test_fraction: Range(0, 1, hi_open=True) = 0.05  # carved from train when the source has no test split
max_rows: Range(1, also=(-1,)) = -1  # per split; -1 = all
seed: Range(0) = 1337
force: bool = False  # rebuild out_dir (only a data set prepare/ made)
RULES = [('val_fraction + test_fraction < 1', 'train keeps the rest of the rows')]


def clean(t):
    return t.replace('\r\n', '\n').replace('\r', '\n').strip() if isinstance(t, str) else ''


def main():
    config = configurator.configure(globals())
    print(config)
    if data.check_existing(out_dir, config, force, done_key='seq2seq'):
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
        return
    t0 = time.time()
    cols = [dialogue_field, summary_field]
    rows = text.carve_splits(text.load_split_rows(source, cols, max_rows=max_rows), val_fraction, test_fraction, seed)
    pairs, dropped = {}, {}
    for split in ('train', 'val', 'test'):
        ps = [(clean(r[dialogue_field]), clean(r[summary_field])) for r in rows[split]]
        pairs[split] = [(d, s) for d, s in ps if d and s]
        dropped[split] = len(ps) - len(pairs[split])
    if not pairs['train']:
        raise data.DataError(f"'{source}' has no row with both a {dialogue_field} and a {summary_field}: check the source")
    print(f"pairs: {', '.join(f'{k}: {len(v):,}' for k, v in pairs.items())}; tokenizer {tokenizer}")
    tok = data.build_tokenizer(tokenizer, vocab_size, (t for d, s in pairs['train'] for t in (d, s)))
    docs = {k: [f"{d}\n\nSummary: {s}" for d, s in v] for k, v in pairs.items()}
    meta = data.write_lm_dataset(out_dir, docs, tok, meta_extra={
        'source': source, 'fields': cols, 'documents': {k: len(v) for k, v in docs.items()}, 'config': config})
    records = {}
    for split, ps in pairs.items():
        records[split] = []
        for d, s in tqdm(ps, desc=f"{split:>5} records", unit='pair', dynamic_ncols=True):
            records[split].append({'src': tok.encode(d), 'tgt': tok.encode(s)})
    meta['seq2seq'] = data.write_seq2seq_records(out_dir, records, tok.vocab_size)  # written last: marks completion
    meta['seq2seq_rule'] = f"source = dialogue, target = summary; rows with an empty field dropped ({dropped})"
    data.write_meta(out_dir, meta)
    data.print_summary(out_dir, meta, sum(len(v) for v in docs.values()), time.time() - t0)
    print('seq2seq records: ' + ', '.join(f"{k}: {v['records']:,}" for k, v in meta['seq2seq'].items()))


if __name__ == '__main__':
    configurator.run_main(main)
