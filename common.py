"""Device and process plumbing shared by train.py and bench.py: DDP setup, host-to-device copies,
peak FLOPs for MFU, stop signals (preemption) and the error that ends a run.
"""
import os
import signal
from datetime import timedelta

import torch


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
