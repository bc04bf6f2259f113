"""FineWeb-Edu through `datasets` (streaming), tokenized into resumable shards with a held-out slice.

    python prepare/fineweb_edu.py --max_tokens=2_400_000_000               # gpt2 tokens, sample-10BT
    python prepare/fineweb_edu.py --tokenizer=bpe --vocab_size=65536 --out_dir=data/fineweb_edu_bpe
    python prepare/fineweb_edu.py --source=shards/ --max_shards=2          # local parquet/jsonl, `text` field

The first val_docs documents of the stream are the held-out slice: split 'val' (validation, and the
filler of eval_tasks' passkey/copy_distance tasks); training shards follow. Shards go through
data.write_shard (atomic) one at a time, each ending at a document boundary, and progress.json
records how many documents of the stream they hold: an interrupted run, or a re-run with a larger
--max_shards/--max_tokens, continues from there (streaming .skip) and gives the same shards as an
uninterrupted run. meta.json is written last. --tokenizer=bpe trains on the first bpe_docs training
documents; its spec is kept in progress.json so a continued run tokenizes the same way.
"""
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data  # noqa: E402

source: Text('hub id, or a local parquet/jsonl file or folder') = 'HuggingFaceFW/fineweb-edu'  # same field
config_name: Text('hub configuration') = 'sample-10BT'  # ignored for local files
field: Text('column holding the document') = 'text'
out_dir: Text('output folder') = 'data/fineweb_edu'
tokenizer: OneOf('gpt2', 'bpe') = 'gpt2'  # bpe: trained here (the study used vocab_size=65536)
vocab_size: Range(data.MIN_BPE_VOCAB) = 65536  # bpe only; includes the 3 special tokens
bpe_docs: Range(1) = 100_000  # bpe: training documents it is trained on
val_docs: Range(1) = 10_000  # the held-out slice: the stream's first documents
shard_tokens: Range(1) = 100_000_000  # a shard is closed at the first document boundary past this
max_shards: Range(0, also=(-1,)) = -1  # training shards; -1 = no limit
max_tokens: Range(0, also=(-1,)) = -1  # training tokens (about: shards end at document boundaries); -1 = no limit
batch_docs: Range(1) = 512  # documents tokenized together
force: bool = False  # start over (only a data set prepare/ made)
GROWS = ('max_shards', 'max_tokens', 'batch_docs')  # settings a re-run may change: it adds shards to the same set


def open_stream():
    """An IterableDataset over the source's documents, in a fixed order."""
    import datasets
    datasets.disable_progress_bars()
    try:
        if os.path.exists(source):
            paths = ([os.path.join(d, f) for d, _, fs in os.walk(source) for f in fs]
                     if os.path.isdir(source) else [source])
            paths = sorted(p for p in paths if p.endswith(('.parquet', '.jsonl')))
            kinds = {p.rsplit('.', 1)[1] for p in paths}
            if len(kinds) != 1:
                raise data.DataError(f"'{source}' must hold .parquet or .jsonl files (one kind), found {sorted(kinds)}")
            return datasets.load_dataset('parquet' if kinds == {'parquet'} else 'json', data_files=paths,
                                         split='train', streaming=True)
        return data.load_hub(source, config_name, split='train', streaming=True, fields=(field,))
    except data.DataError:
        raise
    except Exception as e:
        msg = data.first_line(e)
        raise data.DataError(f"cannot stream '{source}' ({msg}): check --source/--config_name or the network") from None


def texts(ds, start, count=None):
    """Documents start, start+1, ... of the stream (None for a row without text, so counts stay aligned)."""
    it = ds.skip(start) if start else ds
    for i, row in enumerate(it):
        if count is not None and i >= count:
            return
        if field not in row:
            raise data.DataError(f"no field '{field}' in '{source}'; available: {', '.join(row)}: pass --field=...")
        yield row[field] if isinstance(row[field], str) and row[field] else None


def save_state(state):
    tmp = os.path.join(out_dir, 'progress.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(out_dir, 'progress.json'))


def tokenize_into_shards(tok, docs, split, state, limit_tokens, limit_shards, pbar):
    """Append shards of `split` from the iterator `docs`; updates state after each shard."""
    s = state[split]
    buf, n_buf, n_docs, batch = [], 0, 0, []

    def flush():
        nonlocal buf, n_buf, n_docs
        if not n_buf:
            s['docs'] += n_docs  # only empty documents: still consumed
            n_docs = 0
            return
        data.write_shard(os.path.join(out_dir, data.shard_name(split, s['shards'])), np.concatenate(buf), tok.vocab_size)
        s['shards'], s['tokens'], s['docs'] = s['shards'] + 1, s['tokens'] + n_buf, s['docs'] + n_docs
        save_state(state)
        buf, n_buf, n_docs = [], 0, 0

    def encode(batch):
        nonlocal n_buf
        for ids in tok.encode_batch([t for t in batch if t is not None]):
            buf.append(np.asarray(ids + [tok.eot_id], dtype=np.int64))
            n_buf += len(ids) + 1
            pbar.update(len(ids) + 1)

    for text in docs:
        if limit_shards >= 0 and s['shards'] >= limit_shards:
            break
        if limit_tokens >= 0 and s['tokens'] + n_buf >= limit_tokens:
            break
        batch.append(text)
        n_docs += 1
        if len(batch) == batch_docs:
            encode(batch)
            batch = []
            if n_buf >= shard_tokens:
                flush()
    encode(batch)
    flush()
    return s


def main():
    config = configurator.configure(globals())
    print(config)
    state_path = os.path.join(out_dir, 'progress.json')
    data.check_existing(out_dir, config, force, ignore=GROWS)  # a foreign folder, or other settings: one line
    if force and os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    state = json.load(open(state_path)) if os.path.exists(state_path) else None
    if data.is_prepared(out_dir) and (state is None or state.get('exhausted') or
                                      (0 <= max_shards <= state['train']['shards']) or
                                      (0 <= max_tokens <= state['train']['tokens'])):
        print(f"{out_dir} already prepared (raise --max_shards/--max_tokens to add shards, or --force=True)")
        return
    if os.path.exists(os.path.join(out_dir, 'meta.json')):
        os.remove(os.path.join(out_dir, 'meta.json'))  # incomplete again until the new shards are in
    t0 = time.time()
    ds = open_stream()
    next(texts(ds, 0, 1), None)  # a wrong --field fails here, before anything is written
    os.makedirs(out_dir, exist_ok=True)
    if state is None:
        state = {'config': config, 'tokenizer': None, 'val': {'shards': 0, 'tokens': 0, 'docs': 0},
                 'train': {'shards': 0, 'tokens': 0, 'docs': 0}, 'exhausted': False}
    if state['tokenizer'] is None:
        if tokenizer == 'bpe':
            print(f"training a bpe of {vocab_size} tokens on {bpe_docs:,} documents after the held-out slice")
            spec = data.train_bpe((t for t in texts(ds, val_docs, bpe_docs) if t), vocab_size)
        else:
            spec = {'kind': 'gpt2'}
        data.get_tokenizer(spec)  # fails here, in one line, when gpt2's files cannot be loaded
        state['tokenizer'] = spec
        save_state(state)
    tok = data.get_tokenizer(state['tokenizer'])
    from tqdm import tqdm
    if state['val']['docs'] < val_docs:  # the held-out slice: one pass, usually one shard
        with tqdm(desc='  val', unit='tok', unit_scale=True, dynamic_ncols=True) as pbar:
            tokenize_into_shards(tok, texts(ds, state['val']['docs'], val_docs - state['val']['docs']), 'val',
                                 state, -1, -1, pbar)
        if state['val']['tokens'] == 0:
            raise data.DataError(f"'{source}' gave no text for the held-out slice (field '{field}')")
    total = max_tokens if max_tokens > 0 else None
    with tqdm(desc='train', total=total, initial=state['train']['tokens'], unit='tok', unit_scale=True,
              dynamic_ncols=True) as pbar:
        start = val_docs + state['train']['docs']
        docs = texts(ds, start)
        n_before = state['train']['docs']
        tokenize_into_shards(tok, docs, 'train', state, max_tokens, max_shards, pbar)
    limited = (0 <= max_shards <= state['train']['shards']) or (0 <= max_tokens <= state['train']['tokens'])
    state['exhausted'] = not limited
    save_state(state)
    if state['train']['tokens'] == 0:
        raise data.DataError(f"'{source}' has no documents after the {val_docs:,} held-out ones: lower --val_docs")
    val = np.concatenate([np.asarray(data.read_shard(p)) for p in data.shard_paths(out_dir, 'val')])
    splits = {k: {'shards': state[k]['shards'], 'tokens': state[k]['tokens']} for k in ('train', 'val')}
    splits['val']['unigram_entropy'] = round(data.unigram_entropy([val], tok.vocab_size), 4)
    meta = {'tokenizer': tok.spec, 'vocab_size': tok.vocab_size, 'eot_id': tok.eot_id, 'pad_id': tok.pad_id,
            'sep_id': tok.sep_id, 'splits': splits, 'source': source, 'config_name': config_name, 'field': field,
            'held_out': {'split': 'val', 'docs': state['val']['docs'], 'stream_range': [0, val_docs]},
            'train_docs': state['train']['docs'], 'exhausted': state['exhausted'],
            'config': config, **data.provenance()}
    if tok.spec['kind'] == 'bpe':
        data.save_ranks_file(tok.spec, os.path.join(out_dir, 'tokenizer.bpe'))
    data.write_meta(out_dir, meta)  # last: marks the set complete
    data.print_summary(out_dir, meta, state['val']['docs'] + state['train']['docs'], time.time() - t0)
    print(f"(this run added {state['train']['docs'] - n_before:,} training documents)")


if __name__ == '__main__':
    configurator.run_main(main)
