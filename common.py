"""Device and process plumbing shared by train.py and bench.py: DDP setup, FSDP2 sharding (parallel='fsdp'),
host-to-device copies, peak FLOPs for MFU, stop signals (preemption), the error that ends a run, and
preparing a missing data set once when runs start side by side (auto_prepare).
"""
import copy
import os
import signal
import subprocess
import sys
from datetime import timedelta

import torch

from configurator import UserError


def setup_distributed(cfg):
    ddp = int(os.environ.get('RANK', -1)) != -1
    if not ddp:
        dev = cfg['device']
        if dev == 'auto':
            dev = 'cuda' if torch.cuda.is_available() else ('mps' if torch.backends.mps.is_available() else 'cpu')
        return False, 0, 0, 1, dev
    rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
    use_cuda = torch.cuda.is_available() and cfg['device'] in ('auto', 'cuda')
    torch.distributed.init_process_group(backend='nccl' if use_cuda else 'gloo',
                                         timeout=timedelta(seconds=cfg['ddp_timeout_s']))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return True, rank, local_rank, world, (f'cuda:{local_rank}' if use_cuda else 'cpu')


# ----------------------------------------------------------------------------- parallel='fsdp' (FSDP2)
# DDP keeps a whole copy of the weights, gradients and optimizer state on every rank. FSDP2 (torch's
# fully_shard) keeps 1/W of each (dim-0 shards, as DTensors) and all-gathers one block's weights just before
# that block runs forward or backward; gradients are reduce-scattered back to the shards. The optimizer then
# steps on the shards only. Checkpoints hold whole tensors, exactly as without FSDP.

def fsdp_shard(model, device_type):
    """Shard `model` (on the CPU) in place across the process group: each transformer block is its own unit
    (so only one block's weights are whole at a time), then the root takes the rest (embeddings, final norm,
    head: a tied head shares wte's shard). fully_shard moves each unit to the device as it shards it, so the
    whole model never sits on one GPU. The mesh is explicit: torch's default is the CUDA mesh whenever a GPU
    exists, even for a gloo run with device='cpu'."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device_type, (torch.distributed.get_world_size(),))
    for block in list(getattr(model, 'enc', [])) + list(model.h):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def full_state(obj, seen=None):
    """A state dict (model: state_dict(keep_vars=True); optimizer: state_dict()) with every DTensor shard
    replaced by the whole tensor on the CPU. A collective: every rank calls it, in the same order. A
    tensor that appears twice (tied embeddings) stays one tensor, as in a plain state dict."""
    from torch.distributed.tensor import DTensor
    seen = {} if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if id(obj) not in seen:
            t = obj.detach()
            seen[id(obj)] = t.full_tensor().cpu() if isinstance(t, DTensor) else t
        return seen[id(obj)]
    if isinstance(obj, dict):  # (a copy keeps the type: a model's state dict is an OrderedDict with _metadata)
        out = copy.copy(obj)
        for k, v in obj.items():
            out[k] = full_state(v, seen)
        return out
    if isinstance(obj, list):
        return [full_state(v, seen) for v in obj]
    return obj


def shard_optimizer_state(optimizer):
    """After optimizer.load_state_dict(whole tensors from a checkpoint): cut each state tensor (AdamW's
    moments, Muon's momentum) like its parameter's shard. Every rank has read the whole checkpoint, so each
    takes its own piece without communication (src_data_rank=None)."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    for p, st in optimizer.state.items():
        for k, v in st.items():
            if isinstance(p, DTensor) and torch.is_tensor(v) and not isinstance(v, DTensor) and v.shape == p.shape:
                st[k] = distribute_tensor(v, p.device_mesh, p.placements, src_data_rank=None)


def to_device(b, dev, device_type):
    if device_type == 'cuda':  # pinned, non-blocking: the copy overlaps the GPU's work
        return {k: v.pin_memory().to(dev, non_blocking=True) for k, v in b.items()}
    return {k: v.to(dev) for k, v in b.items()}


class RunStopped(Exception):
    """The run cannot go on (divergence, a failed checkpoint write): one line, exit code 1, good checkpoint kept."""


def catch_stop_signals():
    """SIGTERM/SIGINT (preemption, Ctrl-C) set a flag; the loop then checkpoints and exits 0.
    A second signal acts as usual (kills)."""
    got = []

    def handler(signum, frame):
        got.append(signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return got


def peak_flops_of(dev):
    """Dense bf16 peak FLOP/s of a CUDA device, for MFU; 0 for a GPU not in the table (then no MFU is
    reported rather than a guessed one). bench.py uses this too."""
    name = torch.cuda.get_device_name(dev)
    for key, flops in (('H200', 989e12), ('H100', 989e12), ('A100', 312e12), ('L40', 181e12), ('4090', 165e12)):
        if key in name:
            return flops
    return 0


# ----------------------------------------------------------------------------- auto_prepare

def ensure_data(cfg, master, ddp):
    """auto_prepare: run prepare/<data>.py when the data set is missing (the first side effect of a run)."""
    data_dir = os.path.join(cfg['data_root'], cfg['data'])
    meta = os.path.join(data_dir, 'meta.json')
    if cfg['auto_prepare'] and not os.path.exists(meta) and master:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'prepare', f"{cfg['data']}.py")
        if not os.path.exists(script):
            raise UserError(f"auto_prepare: no prepare/{cfg['data']}.py to make data set '{cfg['data']}'")
        import fcntl
        os.makedirs(cfg['data_root'], exist_ok=True)
        with open(data_dir + '.lock', 'w') as lock:
            # runs started side by side (a study's seeds) prepare the set once: the others wait here, then find it
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(meta):
                print(f"data set {data_dir} missing: running prepare/{cfg['data']}.py", flush=True)
                r = subprocess.run([sys.executable, script, f'--out_dir={data_dir}'])
                if r.returncode != 0:
                    raise UserError(f"prepare/{cfg['data']}.py failed with exit code {r.returncode}")
        try:
            os.remove(data_dir + '.lock')  # a late run re-checks meta.json under a fresh lock file, so this is safe
        except OSError:
            pass
    if ddp:
        torch.distributed.barrier()
    return data_dir
