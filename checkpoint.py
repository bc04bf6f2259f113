"""Checkpoints: save and load (.pt or safetensors), build a model from one, load matching weights.

The foundation every script shares (train, sample, eval_tasks, export_hf, analysis/): it imports only
model.py, data.py and configurator.py. A checkpoint is a dict of plain types and tensors:
    model (state dict), model_config (GPTConfig as a dict), tokenizer (spec), config (the run's settings),
    step, tokens, optimizer state and RNG state (training checkpoints), ref_ckpt (dpo).
"""
import errno
import json
import os

import torch

from configurator import UserError
import data as datalib
from model import GPT, GPTConfig, encdec_state_from_decoder_only


def save_checkpoint(path, obj):
    """Atomic: write a temporary file, fsync, rename. A crash leaves the previous checkpoint intact."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        if path.endswith('.safetensors'):
            f.write(safetensors_bytes(obj))
        else:
            torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if path.endswith('.safetensors'):  # a readable copy of what is not a tensor (the file's header is the original)
        with open(path[:-len('.safetensors')] + '.json', 'w') as f:
            json.dump(split_tensors(obj, {}, '', {}), f, indent=1)


def save_error_message(path, e):
    """One line for an OSError from save_checkpoint, with advice that fits its cause (errno): permission
    denied is not disk full."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free disk space"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = f"make {os.path.dirname(path) or '.'} writable (or choose another --out_dir)"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        advice = f"a file stands where a folder of {path} should be (or the reverse): move it"
    else:
        advice = "fix that"
    return (f"could not write checkpoint {path} ({e.strerror or e}); the previous checkpoint is intact; "
            f"{advice} and continue with --init_from=resume")


def checkpoint_file(path):
    """A run directory -> its ckpt/last.pt (or ckpt/last.safetensors when that is the only one)."""
    if os.path.isdir(path):
        st = os.path.join(path, 'ckpt', 'last.safetensors')
        return st if os.path.exists(st) and not os.path.exists(os.path.join(path, 'ckpt', 'last.pt')) else \
            os.path.join(path, 'ckpt', 'last.pt')
    return path


def load_checkpoint(path):
    """Checkpoints hold plain types and tensors only: weights_only=True cannot run code."""
    path = checkpoint_file(path)
    if not os.path.exists(path):
        raise UserError(f"checkpoint '{path}' not found; pass a .pt file or a run directory that has ckpt/last.pt")
    try:
        if path.endswith('.safetensors'):
            return checkpoint_from_safetensors(path)
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint '{path}' cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                        f"it is truncated or not a checkpoint")


def saved_model_config(ckpt):
    """The checkpoint's GPTConfig (flags added since it was written at their defaults); one UserError for a
    checkpoint this model.py cannot load (e.g. a fixed encoding written under the old input scale)."""
    try:
        return GPTConfig.from_dict(ckpt['model_config'])
    except (ValueError, TypeError) as e:
        raise UserError(f"incompatible checkpoint: {e}")


def model_from_checkpoint(ckpt):
    """(model, tokenizer) from a checkpoint dict: no config file or data dir needed."""
    model = GPT(saved_model_config(ckpt))
    model.load_state_dict(ckpt['model'])
    return model, datalib.get_tokenizer(ckpt['tokenizer'])


def load_matching(model, state):
    """Copy tensors whose name and shape match; list the rest (for init_from=<ckpt>)."""
    own = model.state_dict()
    loaded = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    skipped = sorted(set(state) - set(loaded))
    fresh = sorted(set(own) - set(loaded))
    return loaded, skipped, fresh


def init_weights_from(model, path):
    """init_from=<checkpoint or run dir>: load the tensors that match by name and shape into `model`;
    returns the lines to print (what was loaded, what was not in this model, what starts fresh)."""
    src = load_checkpoint(path)
    state, notes = src['model'], []
    n_enc = model.config.n_encoder_layer
    if n_enc and not any(k.startswith('enc.') for k in state):
        # n_encoder_layer: decoder-only -> encoder-decoder; encoder blocks start as the decoder's blocks
        state = {**state, **encdec_state_from_decoder_only(state, model.config)}
        n_dec = len({k.split('.')[1] for k in src['model'] if k.startswith('h.')})
        notes.append(f"init_from {path}: encoder initialized from decoder-only blocks: "
                     + ', '.join(f'enc.{i} <- h.{i % n_dec}' for i in range(n_enc)) + ', ln_enc <- ln_f')
    loaded, skipped, fresh = load_matching(model, state)
    notes.append(f"init_from {path}: loaded {len(loaded)} tensors; not in this model: {skipped or 'none'}; "
                 f"newly initialized: {fresh or 'none'}")
    if model.config.ngpt:  # loaded weights onto the unit sphere (a resumed run's checkpoint already is: exact resume)
        model.normalize_weights()
    return notes


# ----------------------------------------------------------------------------- ckpt_format='safetensors'
# One file: the tensors, and everything else as JSON in the header's metadata (so one rename is atomic).

def split_tensors(obj, tensors, name, seen):
    """A checkpoint dict -> JSON-able structure with {'__tensor__': name} where tensors were (collected in
    `tensors`; tied tensors are stored once). Dicts with int keys (optimizer state) become
    {'__int_keys__': [[k, v], ...]} so they come back as ints."""
    if isinstance(obj, torch.Tensor):
        key = (obj.data_ptr(), tuple(obj.shape), obj.dtype)
        if obj.numel() and key in seen:
            return {'__tensor__': seen[key]}
        seen[key] = name
        tensors[name] = obj.detach().cpu().contiguous()
        return {'__tensor__': name}
    if isinstance(obj, dict):
        sub = lambda k: f"{name}.{k}" if name else str(k)
        if any(not isinstance(k, str) for k in obj):
            return {'__int_keys__': [[k, split_tensors(v, tensors, sub(k), seen)] for k, v in obj.items()]}
        # model weights keep their plain names (any safetensors reader sees 'wte.weight', ...)
        return {k: split_tensors(v, tensors, k if name == 'model' else sub(k), seen) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, tensors, f"{name}.{i}", seen) for i, v in enumerate(obj)]
    return obj


def join_tensors(obj, tensors):
    if isinstance(obj, dict):
        if '__tensor__' in obj:
            return tensors[obj['__tensor__']]
        if '__int_keys__' in obj:
            return {k: join_tensors(v, tensors) for k, v in obj['__int_keys__']}
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def safetensors_bytes(obj):
    from safetensors.torch import save
    tensors = {}
    rest = split_tensors(obj, tensors, '', {})
    return save(tensors, metadata={'gptlab_checkpoint': json.dumps(rest)})


def checkpoint_from_safetensors(path):
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(path, 'pt') as f:
        meta = f.metadata() or {}
    if 'gptlab_checkpoint' not in meta:
        raise ValueError("no gptlab_checkpoint metadata (not written by train.py)")
    return join_tensors(json.loads(meta['gptlab_checkpoint']), load_file(path))
