"""What the numeric analysis scripts share: loading a model from a checkpoint or run dir, picking test
sequences, naming a model in a legend. Every forward pass goes through the model (model.record())."""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import data as datalib  # noqa: E402
from configurator import UserError  # noqa: E402


def load_model(path):
    """(model in eval mode, tokenizer, checkpoint dict) from a .pt file or a run directory."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    ckpt = load_checkpoint(path)
    model, tok = model_from_checkpoint(ckpt)
    return model.eval(), tok, ckpt


def model_label(ckpt):
    c = ckpt['model_config']
    return f"{c['attn']} attention ({c['n_layer']}x{c['n_embd']}, step {ckpt.get('step', '?')})"


def split_list(text, what):
    items = [t.strip() for t in text.split(',') if t.strip()]
    if not items:
        raise UserError(f"no {what} given: pass a comma-separated list")
    return items


def numeric_meta(data_dir):
    meta = datalib.load_meta(data_dir)
    if 'types' not in meta:
        raise UserError(f"{data_dir} is not a numeric data set (no 'types' in meta.json): run prepare/numeric.py")
    return meta


def records_by_type(data_dir, split, n_per_type):
    """{type index: [seq arrays]} with at most n_per_type sequences of each type."""
    recs = datalib.open_records(data_dir, split)
    out = {}
    for i in range(len(recs)):
        r = recs[i]
        t = int(r['type'][0])
        if len(out.setdefault(t, [])) < n_per_type:
            out[t].append(np.asarray(r['seq'], dtype=np.int64))
    return out, recs.pad_id


def find_sequence(data_dir, type_name, length):
    """The first test (then test_long, val, train) sequence of `type_name` with `length` values."""
    meta = numeric_meta(data_dir)
    if type_name not in meta['types']:
        raise UserError(f"unknown sequence type '{type_name}'; valid: {', '.join(meta['types'])}")
    t = meta['types'].index(type_name)
    for split in ('test', 'test_long', 'val', 'train'):
        recs = datalib.open_records(data_dir, split)
        for i in range(len(recs)):
            r = recs[i]
            if int(r['type'][0]) == t and len(r['seq']) - 1 == length:
                return np.asarray(r['seq'], dtype=np.int64)
    raise UserError(f"no {type_name} sequence of {length} values in {data_dir}; "
                    f"pick a length in min_len..max_len or long_min_len..long_max_len")
