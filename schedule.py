"""Learning-rate schedules (cosine, WSD, constant with warmup), the model_size presets with their
token budgets, and WSD decay branches (one stable run, a decayed model per token budget).
Pure functions of the settings: train.py drives them, tests check them against their formulas.
"""
import json
import math
import os
import shutil

import configurator
from checkpoint import load_checkpoint
from configurator import UserError


LR_SCHEDULES = ('cosine', 'wsd', 'constant')       # lr_schedule: one branch each in lr_at
DECAY_SHAPES = ('linear', 'cosine', '1-sqrt')       # decay_shape (wsd): one entry each in lr_at's table


def lr_at(step, cfg, total):
    """Learning rate of optimizer step `step` (0-based) out of `total`."""
    lr, lo, warm = cfg['learning_rate'], cfg['min_lr'], cfg['warmup_iters']
    if step < warm:
        return lr * (step + 1) / warm
    if cfg['lr_schedule'] == 'constant':
        return lr
    if cfg['lr_schedule'] == 'cosine':
        frac = min(1.0, (step - warm) / max(1, total - warm))
        return lo + 0.5 * (1 + math.cos(math.pi * frac)) * (lr - lo)
    # wsd: warmup, stable at lr, then decay over the last decay_frac of the steps
    decay_start = total - int(round(cfg['decay_frac'] * total))
    if step < decay_start:
        return lr
    frac = (step - decay_start + 1) / max(1, total - decay_start)
    shape = cfg['decay_shape']
    w = {'linear': 1 - frac, 'cosine': 0.5 * (1 + math.cos(math.pi * frac)), '1-sqrt': 1 - math.sqrt(frac)}[shape]
    return lo + w * (lr - lo)


# ----------------------------------------------------------------------------- model_size
# The positional-encoding study's sizes (tied embeddings; parameter counts in the README). The
# preset is applied first and the config files and --key=value are applied again on top, so an
# explicit value always wins (e.g. --model_size=tiny --n_layer=2 --max_tokens=1e6 for a smoke test).
# Batches are tokens per optimizer step (global_batch_tokens) with a per-GPU micro batch.
MODEL_SIZES = {  # n_embd, n_layer, n_head, micro batch, global batch tokens, learning rate, max token budget
    'tiny':   (512, 6, 8, 32, 262144, 6e-4, 2_400_000_000),
    'small':  (768, 12, 12, 16, 524288, 3e-4, 6_600_000_000),
    'medium': (1024, 24, 16, 8, 524288, 2e-4, 18_800_000_000),
    'large':  (2048, 16, 32, 4, 1048576, 1e-4, 48_400_000_000),
}


def format_tokens(n):
    """2400000000 -> '2.4B' (run names and plots)."""
    for unit, div in (('B', 1e9), ('M', 1e6), ('K', 1e3)):
        if n >= div:
            return f"{n / div:.4g}{unit}"
    return str(int(n))


def apply_model_size(g, defaults):
    """The resolved config of a model_size run: a copy of the settings `g` (a script's globals, with their
    declarations) back at `defaults`, the preset on top, then the config files and --key=value again
    (explicit values win). Changes nothing it is given."""
    size = g['model_size']
    if size not in MODEL_SIZES:
        raise UserError(f"unknown model_size '{size}'; valid values: '', {', '.join(MODEL_SIZES)}")
    d, layers, heads, micro, batch_tokens, lr, budget = MODEL_SIZES[size]
    g = {**g, **defaults, 'model_size': size, 'n_embd': d, 'n_layer': layers, 'n_head': heads, 'block_size': 1024,
         'batch_size': micro, 'global_batch_tokens': batch_tokens, 'learning_rate': lr, 'min_lr': lr / 10,
         'max_tokens': budget, 'run_name': '{model_size}_{pos_emb}_{budget}_s{seed}'}
    cfg = configurator.configure(g)
    cfg['max_tokens'] = int(cfg['max_tokens'])  # --max_tokens=2.4e9 is fine
    cfg['run_name'] = cfg['run_name'].replace('{budget}', format_tokens(cfg['max_tokens']))
    print(f"model_size {size}: n_embd={cfg['n_embd']} n_layer={cfg['n_layer']} n_head={cfg['n_head']} "
          f"block_size={cfg['block_size']} lr={cfg['learning_rate']:g} budget={format_tokens(cfg['max_tokens'])} "
          f"tokens (parameters in train_begin)")
    return cfg


# ----------------------------------------------------------------------------- decay_budgets
# WSD gives a model per token budget from one run: the learning rate is the same for every budget
# until its decay starts, so the stable run saves a checkpoint at each budget's decay start
# (ckpt/predecay_<budget>.pt) and stops at the last one; each branch then resumes from its checkpoint
# with max_tokens=budget into <run_dir>/decay_<budget>/ (same step and token axis). A branch equals
# an uninterrupted WSD run of that budget. --branch=<budget> re-runs one branch from its checkpoint
# (add --init_from=resume to continue an interrupted branch instead).


def decay_points(cfg, tokens_per_step):
    """{pre-decay step: [budgets]} of decay_budgets ({} without them)."""
    if not cfg['decay_budgets']:
        return {}
    if cfg['lr_schedule'] != 'wsd':
        raise UserError(f"decay_budgets needs lr_schedule='wsd', got '{cfg['lr_schedule']}'")
    points = {}
    for b in sorted({int(b) for b in cfg['decay_budgets']}):
        total = math.ceil(b / tokens_per_step)
        start = total - int(round(cfg['decay_frac'] * total))
        if start < 1 or start == total:
            raise UserError(f"decay budget {b} is {total} steps of {tokens_per_step} tokens: too short for a decay "
                            f"of decay_frac={cfg['decay_frac']}; use larger budgets")
        points.setdefault(start, []).append(b)
    return points


def predecay_path(run_dir, budget):
    return os.path.join(run_dir, 'ckpt', f'predecay_{budget}.pt')


def save_predecay(ckpt_path, run_dir, budgets):
    """The checkpoint just written at a decay start becomes the start of those budgets' branches."""
    for budget in budgets:
        shutil.copyfile(ckpt_path, predecay_path(run_dir, budget) + '.tmp')
        os.replace(predecay_path(run_dir, budget) + '.tmp', predecay_path(run_dir, budget))


def branch_config(cfg, run_dir, budget, tokens_per_step, redo, master):
    """The settings of the decay branch of `budget` (a run of its own that resumes in <run_dir>/decay_<budget>/),
    its directory started from the pre-decay checkpoint (redo: afresh, even when it exists); None when the
    branch is already complete. cfg: the stable run's resolved settings. Rank 0 writes."""
    src = predecay_path(run_dir, budget)
    if budget not in {int(b) for b in cfg['decay_budgets']} or not os.path.exists(src):
        raise UserError(f"no pre-decay checkpoint for budget {budget} ({src}); budgets: {cfg['decay_budgets']}; "
                        f"run the stable run first (the same command without --branch)")
    bdir = os.path.join(run_dir, f'decay_{budget}')
    bcfg = {**cfg, 'decay_budgets': [], 'branch': 0, 'max_tokens': budget, 'out_dir': run_dir,
            'run_name': f'decay_{budget}', 'init_from': 'resume', 'stop_after': 0}
    last = os.path.join(bdir, 'ckpt', 'last.pt')
    if not redo and os.path.exists(last) and load_checkpoint(last)['step'] >= math.ceil(budget / tokens_per_step):
        if master:
            print(f"decay branch {bdir} is complete", flush=True)
        return None
    if master and (redo or not os.path.exists(last)):
        shutil.rmtree(bdir, ignore_errors=True)
        os.makedirs(os.path.dirname(last))
        shutil.copyfile(src, last + '.tmp')
        os.replace(last + '.tmp', last)
        with open(os.path.join(bdir, 'config.json'), 'w') as f:
            json.dump(bcfg, f, indent=2)
    if master:
        print(f"decay branch {format_tokens(budget)} tokens: {bdir}", flush=True)
    return bcfg
