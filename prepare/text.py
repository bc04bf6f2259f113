"""Any text: local .txt/.jsonl/.parquet files (a file or a folder) or a Hugging Face dataset id.

One document per .txt file, per jsonl line, per parquet row (the `field` column). The data set's
own validation split is used when it has one; otherwise val_fraction of the documents is carved
out by a stable hash of the document number.

    python prepare/text.py --source=roneneldan/TinyStories --max_docs=100000
    python prepare/text.py --source=my_corpus/ --tokenizer=bpe --vocab_size=8192
    python prepare/text.py --source=books.jsonl --field=content --out_dir=data/books
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data  # noqa: E402

source: Text('file or folder of .txt/.jsonl/.parquet, or a hub dataset id') = ''
field: Text('column holding the document') = 'text'  # jsonl/parquet/hub column
config_name: Text('hub dataset configuration') = ''  # if it has several
out_dir: Text('output folder') = ''  # '' = data/<name derived from source>
tokenizer: OneOf(data.TOKENIZERS) = 'gpt2'  # bpe: trained here on the train split
vocab_size: Range(data.MIN_BPE_VOCAB) = 8192  # bpe only; includes the 3 special tokens
val_fraction: Range(0, 1, hi_open=True) = 0.01  # used when the source has no validation split
max_docs: Range(1, also=(-1,)) = -1  # per split; -1 = all
shard_tokens: Range(1) = 10_000_000
seed: Range(0) = 1337  # mixed into the split hash
force: bool = False  # rebuild out_dir (only a data set prepare/ made)

LOCAL_EXTS = ('.txt', '.jsonl', '.parquet')
VAL_NAMES = ('validation', 'valid', 'val')


class Docs:
    """A re-iterable view of one split's documents (bpe training reads them twice)."""

    def __init__(self, parts, keep=None):
        self.parts, self.keep = parts, keep  # parts: lists of str / datasets.Dataset; keep: doc index -> bool

    def __len__(self):
        return sum(len(p) for p in self.parts) if self.keep is None else sum(self.keep)

    def __iter__(self):
        i = 0
        for part in self.parts:
            rows = part if isinstance(part, list) else (t for b in part.select_columns([field]).iter(batch_size=1000) for t in b[field])
            for text in rows:
                if self.keep is None or self.keep[i]:
                    yield text if isinstance(text, str) else ''
                i += 1


def default_out_dir(src):
    name = os.path.basename(os.path.normpath(src))
    name = re.sub(r'\.(txt|jsonl|parquet)$', '', name) if os.path.exists(src) else name
    return os.path.join('data', re.sub(r'[^a-z0-9_]+', '_', name.lower()).strip('_') or 'text')


def read_txt(paths):
    """One document per file; bytes that are not UTF-8 become U+FFFD and are counted, not fatal."""
    docs, bad = [], 0
    for p in paths:
        with open(p, 'rb') as f:
            raw = f.read()
        try:
            docs.append(raw.decode('utf-8'))
        except UnicodeDecodeError:
            docs.append(raw.decode('utf-8', errors='replace'))
            bad += 1
    if bad:
        print(f"warning: {bad} of {len(paths)} .txt files were not valid UTF-8; bad bytes became U+FFFD",
              file=sys.stderr)
    return docs


def load_local(src):
    """{'train': [parts]} from local files; parts are lists of str or datasets.Dataset."""
    if os.path.isdir(src):
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(LOCAL_EXTS))
    else:
        paths = [src] if src.endswith(LOCAL_EXTS) else []
    if not paths:
        raise data.DataError(f"no .txt/.jsonl/.parquet files at '{src}': pass a file or folder that has some")
    import datasets  # slow to import: only once there is something to read
    datasets.disable_progress_bars()
    parts = []
    txt = [p for p in paths if p.endswith('.txt')]
    if txt:
        parts.append(read_txt(txt))
    for builder, exts in (('json', '.jsonl'), ('parquet', '.parquet')):
        files = [p for p in paths if p.endswith(exts) and os.path.getsize(p) > 0]
        if files:
            try:
                parts.append(datasets.load_dataset(builder, data_files=files, split='train'))
            except Exception as e:
                msg = data.first_line(e)
                raise data.DataError(f"cannot read {builder} files at '{src}' ({msg}): check the files") from None
    return {'train': parts}


def load_hub(src, fields=('text',)):
    """{'train': [Dataset], 'val': [Dataset] when the set has a validation split} from the hub (data.load_hub:
    a script data set falls back to the hub's parquet conversion, a gone one names the --source alternatives)."""
    dd = data.load_hub(src, config_name, fields=fields)
    train = 'train' if 'train' in dd else list(dd)[0]
    out = {'train': [dd[train]]}
    for name in VAL_NAMES:
        if name in dd:
            out['val'] = [dd[name]]
            break
    return out


def limit(parts, n):
    """At most n documents from a list of parts."""
    if n < 0:
        return parts
    out = []
    for p in parts:
        take = min(n, len(p))
        out.append(p[:take] if isinstance(p, list) else p.select(range(take)))
        n -= take
    return out


def main():
    global out_dir
    config = configurator.configure(globals())
    print(config)
    if not source:
        raise data.DataError("--source is required: a file or folder of .txt/.jsonl/.parquet, or a hub dataset id")
    out_dir = out_dir or default_out_dir(source)
    if data.check_existing(out_dir, config, force):
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
        return
    t0 = time.time()
    raw = load_local(source) if os.path.exists(source) else load_hub(source, (field,))
    for parts in raw.values():
        for p in parts:
            if not isinstance(p, list) and field not in p.column_names:
                raise data.DataError(f"no field '{field}' in '{source}'; available: {', '.join(p.column_names)}: "
                                     f"pass --field=...")
    raw = {k: limit(v, max_docs) for k, v in raw.items()}
    if 'val' in raw:
        splits = {'train': Docs(raw['train']), 'val': Docs(raw['val'])}
    else:  # carve val_fraction of the documents by a stable hash of their number
        n = sum(len(p) for p in raw['train'])
        labels = data.assign_splits(range(n), val_fraction, seed)
        splits = {s: Docs(raw['train'], keep=[x == s for x in labels]) for s in ('train', 'val')}
    if not any(t.strip() for t in splits['train']):
        raise data.DataError(f"'{source}' holds no text (field '{field}'): pass a non-empty source")
    n_docs = sum(len(d) for d in splits.values())
    print(f"{n_docs:,} documents ({', '.join(f'{k}: {len(v):,}' for k, v in splits.items())}); tokenizer {tokenizer}")
    tok = data.build_tokenizer(tokenizer, vocab_size, (t for t in splits['train']))
    meta = data.write_lm_dataset(out_dir, splits, tok, shard_tokens=shard_tokens, meta_extra={
        'source': source, 'field': field, 'documents': n_docs, 'config': config})
    data.print_summary(out_dir, meta, n_docs, time.time() - t0)


if __name__ == '__main__':
    configurator.run_main(main)


# ----------------------------------------------------------------------------- rows with named splits
# For prepare scripts of structured data sets (prepare/tiny_textbooks.py, prepare/samsum.py): rows
# with several columns, keeping the source's train / validation / test splits.

SPLIT_NAMES = {'train': 'train', 'validation': 'val', 'valid': 'val', 'val': 'val', 'dev': 'val', 'test': 'test'}


def split_of_file(path):
    """A local file's split from its name (train.jsonl, validation-00000.parquet, test.txt); else train."""
    stem = re.split(r'[._-]', os.path.basename(path))[0].lower()
    return SPLIT_NAMES.get(stem, 'train')


def load_split_rows(src, columns, config='', max_rows=-1):
    """{'train'|'val'|'test': list of {column: str}} from a hub dataset id, or from local
    .jsonl/.parquet files (.txt: one document per file, for a single column) with the hub's column
    names; a folder's files go to the split their name starts with."""
    import datasets
    datasets.disable_progress_bars()
    parts = {}
    if os.path.exists(src):
        paths = ([src] if os.path.isfile(src) else
                 sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs))
        paths = [p for p in paths if p.endswith(LOCAL_EXTS) and os.path.getsize(p) > 0]
        if not paths:
            raise data.DataError(f"no .txt/.jsonl/.parquet files at '{src}': pass a file or folder that has some")
        by_split = {}
        for p in paths:
            by_split.setdefault(split_of_file(p), []).append(p)
        for split, files in by_split.items():
            txt = [p for p in files if p.endswith('.txt')]
            if txt:
                if len(columns) != 1:
                    raise data.DataError(f".txt files at '{src}' hold one text each, but {columns} are needed: use .jsonl")
                parts.setdefault(split, []).append([{columns[0]: t} for t in read_txt(txt)])
            for builder, ext in (('json', '.jsonl'), ('parquet', '.parquet')):
                fs = [p for p in files if p.endswith(ext)]
                if fs:
                    try:
                        parts.setdefault(split, []).append(datasets.load_dataset(builder, data_files=fs, split='train'))
                    except Exception as e:
                        msg = data.first_line(e)
                        raise data.DataError(f"cannot read {builder} files at '{src}' ({msg}): check the files") from None
    else:
        dd = data.load_hub(src, config, fields=columns)
        for name in dd:
            parts.setdefault(SPLIT_NAMES.get(name, name), []).append(dd[name])
    rows = {}
    for split, ps in parts.items():
        out = []
        for p in ps:
            if not isinstance(p, list):
                missing = [c for c in columns if c not in p.column_names]
                if missing:
                    raise data.DataError(f"'{src}' ({split}) has no column(s) {missing}; available: "
                                         f"{', '.join(p.column_names)}: pass the right --field names")
                p = p.select_columns(columns).to_list()
            out.extend(p)
        rows[split] = out if max_rows < 0 else out[:max_rows]
    if 'train' not in rows:
        raise data.DataError(f"'{src}' has no train split (splits: {', '.join(rows)}): name a file train.jsonl")
    return rows


def carve_splits(rows, val_fraction, test_fraction, seed):
    """Adds 'val' / 'test' carved from train by a stable hash when the source has none."""
    for split, frac, s in (('val', val_fraction, seed), ('test', test_fraction, seed + 1)):
        if split not in rows and frac > 0:
            labels = data.assign_splits(range(len(rows['train'])), frac, s)
            rows[split] = [r for r, l in zip(rows['train'], labels) if l == 'val']
            rows['train'] = [r for r, l in zip(rows['train'], labels) if l == 'train']
    return rows
