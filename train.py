"""The one training loop: single process or DDP under torchrun (gloo on CPU, nccl on GPU).

    python train.py config/quickstart.py --max_iters=100
    torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m.py
    python train.py config/quickstart.py --init_from=resume

Data order is a pure function of (seed, step, micro step, rank), so resume is exact and DDP on W
ranks equals one process with W times the accumulation.
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from datetime import timedelta

import torch

import configurator
from configurator import UserError
import data as datalib
from model import GPT, GPTConfig, encdec_state_from_decoder_only
from checkpoint import load_checkpoint, load_matching, model_from_checkpoint, save_checkpoint

# ----------------------------------------------------------------------------- settings
# I/O and runs
out_dir = 'out'              # runs live in out_dir/<run_name>
run_name = '{data}_{n_layer}x{n_embd}_{pos_emb}_s{seed}'  # {key} placeholders are filled from the config
init_from = 'scratch'        # 'scratch' | 'resume' | path to a checkpoint (.pt) or a run dir
                             # | 'gpt2'..'gpt2-xl' (published weights) | 'hf:DIR' (a transformers folder)
data = 'stdlib'              # data set under data_root (prepared by prepare/<name>.py)
data_root = 'data'
auto_prepare = False         # run prepare/<data>.py first when the data set is missing
objective = 'lm'             # 'lm' | 'seq2seq' (source/target records) | 'records' (one sequence per row) | 'dpo' (preference pairs)
model_size = ''              # '' | 'tiny' | 'small' | 'medium' | 'large': a preset (MODEL_SIZES); explicit values win
algo_data = ''               # lm: records of algorithmic tasks (prepare/algorithmic.py) mixed into pretraining
algo_mix = 0.1               # lm with algo_data: fraction of batch rows drawn from algo_data
# model (GPTConfig flags; vocab_size 0 = the data's vocabulary padded to a multiple of 64)
vocab_size = 0
block_size = 256
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = True
tie_embeddings = True
pos_emb = 'learned'
rope_theta = 10000.0
norm = 'layernorm'
mlp = 'gelu'
qk_norm = False
attn = 'softmax'
ngpt = False
diff_input = False
n_encoder_layer = 0
linear_chunk = 64            # attn='linear': chunk length of the training-time computation
# batches and length of training
batch_size = 16              # micro batch per rank
grad_accum = 1               # micro steps per optimizer step (per rank)
global_batch_tokens = 0      # if > 0, grad_accum is computed from it
max_iters = 1000
max_tokens = 0               # if > 0, max_iters = ceil(max_tokens / tokens per step)
stop_after = 0               # > 0: end this invocation after this step with a checkpoint (time-sliced jobs);
                             # the schedule still spans the whole run, and init_from='resume' goes on
# optimizer and schedule
learning_rate = 6e-4
min_lr = 6e-5
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
lr_schedule = 'cosine'       # 'cosine' | 'wsd' | 'constant'
warmup_iters = 100
decay_frac = 0.1             # wsd: the last decay_frac of training decays to min_lr
decay_shape = 'linear'       # wsd: 'linear' | 'cosine' | '1-sqrt'
decay_budgets = []           # wsd: token budgets; the stable run saves a pre-decay checkpoint for each, then
                             # runs every decay branch into <run_dir>/decay_<budget>/
branch = 0                   # > 0: (re-)run only the decay branch of this budget, from its pre-decay checkpoint
# evaluation, logging, checkpoints
eval_interval = 250
eval_iters = 20
log_interval = 10
ckpt_interval = 0            # 0 = at every eval
ckpt_format = 'pt'           # 'pt' (torch.save) | 'safetensors' (tensors in last.safetensors, the rest as json)
log_tensorboard = True
log_figures = True           # at the end: figures/*.png (loss curves, diagnostic histograms), also into TensorBoard
wandb_log = False
wandb_project = 'gptlab'
sample_tokens = 0            # > 0: print a sample of this many tokens at the end
sample_prompt = ''
# system
device = 'auto'              # 'auto' | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype = 'auto'               # 'auto' (bf16 on CUDA, else float32) | 'float32' | 'bfloat16' | 'float16'
compile = False
seed = 1337
ddp_timeout_s = 600          # a failed rank takes the job down instead of hanging forever
nonfinite = 'stop'           # non-finite loss: 'stop' (keep the last good checkpoint) | 'skip' (drop that step;
                             # checks every step, one host sync each)
# dpo (objective='dpo', data = a pairs set from prepare/pairs.py): policy from init_from, frozen reference
ref_ckpt = ''                # reference checkpoint or run dir ('' = the init_from checkpoint)
beta = 0.1                   # scale of the implicit rewards beta * (log pi - log ref)
length_normalize = False     # average response log-probs over response tokens instead of summing them
seq_max_len = 0              # prompt + response tokens per sequence; longer ones lose prompt tokens from
                             # the left, never response tokens (0 = block_size + 1: inputs fill block_size)
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if k in configurator._settable(globals())}
MODEL_KEYS = [f for f in GPTConfig.__dataclass_fields__]
# keys that may change between a run and its resumption without making it a different run
RUNTIME_KEYS = {'init_from', 'device', 'compile', 'log_tensorboard', 'wandb_log', 'sample_tokens', 'sample_prompt',
                'eval_iters', 'log_interval', 'auto_prepare', 'log_figures', 'ddp_timeout_s', 'data_root', 'out_dir', 'max_iters',
                'max_tokens', 'wandb_project', 'stop_after'}


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


def check_settings(cfg):
    choices = {'objective': ('lm', 'seq2seq', 'records', 'dpo'),
               'nonfinite': ('stop', 'skip'), 'ckpt_format': ('pt', 'safetensors'),
               'lr_schedule': ('cosine', 'wsd', 'constant'),
               'decay_shape': ('linear', 'cosine', '1-sqrt'), 'dtype': ('auto', 'float32', 'bfloat16', 'float16')}
    for k, valid in choices.items():
        if cfg[k] not in valid:
            raise UserError(f"unknown {k} '{cfg[k]}'; valid values: {', '.join(valid)}")
    for k in ('batch_size', 'grad_accum', 'block_size', 'log_interval', 'eval_interval', 'eval_iters'):
        if cfg[k] < 1:
            raise UserError(f"{k} must be >= 1, got {cfg[k]}")


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


def apply_model_size(g):
    """Reset the settings `g` (train.py's globals) to the defaults, apply the preset, then the
    config files and --key=value again. Returns the resolved config."""
    size = g['model_size']
    if size not in MODEL_SIZES:
        raise UserError(f"unknown model_size '{size}'; valid values: '', {', '.join(MODEL_SIZES)}")
    d, layers, heads, micro, batch_tokens, lr, budget = MODEL_SIZES[size]
    g.update(DEFAULTS)
    g.update(model_size=size, n_embd=d, n_layer=layers, n_head=heads, block_size=1024, batch_size=micro,
             global_batch_tokens=batch_tokens, learning_rate=lr, min_lr=lr / 10, max_tokens=budget,
             run_name='{model_size}_{pos_emb}_{budget}_s{seed}')
    cfg = configurator.configure(g)
    cfg['max_tokens'] = g['max_tokens'] = int(cfg['max_tokens'])  # --max_tokens=2.4e9 is fine
    cfg['run_name'] = g['run_name'] = cfg['run_name'].replace('{budget}', format_tokens(cfg['max_tokens']))
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
RUNTIME_KEYS |= {'branch'}  # the branch command names the same run as the stable one


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


def run_branch(cfg, run_dir, budget, redo, tokens_per_step, ddp, rank, world, dev, master):
    """Train the decay branch of `budget` from the stable run's pre-decay checkpoint."""
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
        return bdir
    if master and (redo or not os.path.exists(last)):  # start the branch from the pre-decay checkpoint
        shutil.rmtree(bdir, ignore_errors=True)
        os.makedirs(os.path.dirname(last))
        shutil.copyfile(src, last + '.tmp')
        os.replace(last + '.tmp', last)
        with open(os.path.join(bdir, 'config.json'), 'w') as f:
            json.dump(bcfg, f, indent=2)
    if ddp:
        torch.distributed.barrier()
    if master:
        print(f"decay branch {format_tokens(budget)} tokens: {bdir}", flush=True)
    return train(bcfg, ddp, rank, world, dev, master)


# ----------------------------------------------------------------------------- objectives
# An objective is: how a split is opened, how micro batch `index` is drawn (a dict of tensors; the
# loader in data.py pads and masks), and its loss. Each objective is one branch in each function.

def open_objective_data(cfg, data_dir, split):
    if cfg['objective'] == 'lm':
        if cfg['algo_data'] and split == 'train':  # algo_data: algorithmic examples mixed into pretraining
            return {'shards': datalib.open_split(data_dir, split, cfg['vocab_size']), 'algo': open_algo_data(cfg, data_dir)}
        return datalib.open_split(data_dir, split, cfg['vocab_size'])
    if cfg['objective'] == 'seq2seq':
        return datalib.open_seq2seq(data_dir, split, cfg['vocab_size'])
    if cfg['objective'] == 'records':  # one whole sequence per row (field 'seq'), padded by the loader
        return datalib.open_records(data_dir, split, cfg['vocab_size'])
    if cfg['objective'] == 'dpo':  # d['ref'] (reference log-probs of every pair) is filled by dpo_setup
        meta = datalib.load_meta(data_dir)
        if meta['vocab_size'] > cfg['vocab_size']:
            raise UserError(f"pairs vocabulary {meta['vocab_size']} > vocab_size {cfg['vocab_size']}; use the SFT model's flags")
        return {'records': datalib.open_pairs(data_dir, split), 'pad_id': meta['pad_id'], 'ref': None}


def objective_batch(cfg, d, index):
    """Micro batch number `index` of the training split: (seed, index) fixes it."""
    if cfg['objective'] == 'lm':
        if cfg['algo_data']:
            return algo_mix_batch(cfg, d, index)
        x, y = datalib.get_lm_batch(d, cfg['block_size'], cfg['batch_size'], cfg['seed'], index)
        return {'x': x, 'y': y}
    if cfg['objective'] == 'seq2seq':
        return datalib.get_seq2seq_batch(d, seq2seq_form(cfg), cfg['block_size'], cfg['batch_size'], cfg['seed'], index)
    if cfg['objective'] == 'records':
        x, y = datalib.get_records_batch(d, 'seq', cfg['block_size'], cfg['batch_size'], cfg['seed'], index)
        return {'x': x, 'y': y}
    if cfg['objective'] == 'dpo':
        b = datalib.get_pair_batch(d['records'], cfg['batch_size'], dpo_seq_max_len(cfg), d['pad_id'], cfg['seed'], index)
        return dpo_attach_ref(b, d)


def objective_eval_batches(cfg, d):
    """Deterministic validation batches."""
    if cfg['objective'] == 'lm':
        for x, y in datalib.iter_eval_batches(d, cfg['block_size'], cfg['batch_size'], cfg['eval_iters']):
            yield {'x': x, 'y': y}
    if cfg['objective'] == 'seq2seq':
        yield from datalib.iter_seq2seq_eval_batches(d, seq2seq_form(cfg), cfg['block_size'], cfg['batch_size'],
                                                     cfg['eval_iters'])
    if cfg['objective'] == 'records':
        for x, y in datalib.iter_records_batches(d, 'seq', cfg['block_size'], cfg['batch_size'], cfg['eval_iters']):
            yield {'x': x, 'y': y}
    if cfg['objective'] == 'dpo':
        for b in datalib.iter_pair_batches(d['records'], cfg['batch_size'], dpo_seq_max_len(cfg), d['pad_id'],
                                           cfg['eval_iters']):
            yield dpo_attach_ref(b, d)


def objective_loss(model, b, cfg):
    """Scalar loss of one micro batch, or (loss, {name: scalar tensor}) to log more (dpo)."""
    if cfg['objective'] in ('lm', 'records'):
        return model(b['x'], b['y'])[1]
    if cfg['objective'] == 'seq2seq':  # the loader put -100 on every non-target position
        return model(b['x'], b['y'], src=b.get('src'))[1]
    if cfg['objective'] == 'dpo':
        logp, n = response_logps(model, b)
        return dpo_loss(logp, b['ref'], n, cfg['beta'], cfg['length_normalize'])


def seq2seq_form(cfg):
    """seq2seq: the encoder reads the source (n_encoder_layer > 0), else `src [SEP] tgt` in one sequence."""
    return 'encdec' if cfg['n_encoder_layer'] > 0 else 'concat'


# algo_data: a fraction algo_mix of the rows of each lm batch are algorithmic examples
# (prepare/algorithmic.py records), packed from a record boundary; (seed, index) still fixes the batch.
def open_algo_data(cfg, data_dir):
    path = os.path.join(cfg['data_root'], cfg['algo_data'])
    meta, main_meta = datalib.load_meta(path), datalib.load_meta(data_dir)
    if not 0 <= cfg['algo_mix'] <= 1:
        raise UserError(f"algo_mix must be in [0, 1], got {cfg['algo_mix']}")
    if meta['tokenizer'] != main_meta['tokenizer'] or meta.get('block_size') != cfg['block_size']:
        raise UserError(f"algo_data {path} was made for another tokenizer or block_size ({meta.get('block_size')}); "
                        f"run python prepare/algorithmic.py --data={cfg['data']} --block_size={cfg['block_size']}")
    return datalib.read_records(os.path.join(path, 'train.bin'))


def algo_mix_batch(cfg, d, index):
    import numpy as np
    x, y = datalib.get_lm_batch(d['shards'], cfg['block_size'], cfg['batch_size'], cfg['seed'], index)
    x, y, recs, T = x.clone(), y.clone(), d['algo'], cfg['block_size']
    rng = np.random.Generator(np.random.PCG64([cfg['seed'], index, 1]))  # a stream apart from get_lm_batch's
    for r in np.flatnonzero(rng.random(cfg['batch_size']) < cfg['algo_mix']):
        i, parts, n = int(rng.integers(len(recs))), [], 0
        while n < T + 1:
            parts.append(recs[i]['tokens'])
            n, i = n + len(parts[-1]), (i + 1) % len(recs)
        buf = torch.from_numpy(np.concatenate(parts)[:T + 1].astype(np.int64))
        x[r], y[r] = buf[:-1], buf[1:]
    return {'x': x, 'y': y}


def to_device(b, dev, device_type):
    if device_type == 'cuda':  # pinned, non-blocking: the copy overlaps the GPU's work
        return {k: v.pin_memory().to(dev, non_blocking=True) for k, v in b.items()}
    return {k: v.to(dev) for k, v in b.items()}


# ----------------------------------------------------------------------------- run directories

def format_run_name(cfg):
    try:
        return cfg['run_name'].format(**cfg)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"run_name '{cfg['run_name']}' has a bad placeholder ({e}); use {{key}} of config keys")


def same_run(a, b):
    return {k: v for k, v in a.items() if k not in RUNTIME_KEYS} == {k: v for k, v in b.items() if k not in RUNTIME_KEYS}


def choose_run_dir(cfg):
    """out/<name>, or <name>_v2, _v3... when a different config already uses the name.
    For init_from='resume', the version whose config matches (or the newest, to report what changed)."""
    base = os.path.join(cfg['out_dir'], format_run_name(cfg))
    candidates, v = [], 1
    while True:
        d = base if v == 1 else f'{base}_v{v}'
        if not os.path.exists(os.path.join(d, 'config.json')):
            break
        candidates.append(d)
        v += 1
    free = d
    for c in candidates:
        with open(os.path.join(c, 'config.json')) as f:
            if same_run(json.load(f), cfg):
                return c
    if cfg['init_from'] == 'resume':
        if not candidates:
            raise UserError(f"init_from='resume' but there is no run at {base}; start it with init_from='scratch'")
        with open(os.path.join(candidates[-1], 'config.json')) as f:
            old = json.load(f)
        changed = sorted(k for k in set(old) | set(cfg) if k not in RUNTIME_KEYS and old.get(k) != cfg.get(k))
        raise UserError(f"cannot resume {candidates[-1]}: these settings differ from the run's config.json: "
                        f"{', '.join(changed)}; resume with the same settings or start a new run")
    return free


# ----------------------------------------------------------------------------- logging

class Logger:
    """metrics.jsonl + console JSON markers + TensorBoard + wandb, all with a `tokens` x-axis. Rank 0 only."""

    def __init__(self, run_dir, cfg, master, resume_step=None):
        self.master, self.tb, self.wandb = master, None, None
        if not master:
            return
        self.path = os.path.join(run_dir, 'metrics.jsonl')
        if resume_step is not None and os.path.exists(self.path):
            # drop events after the checkpoint: they are redone, so the file equals an uninterrupted run's
            with open(self.path) as f:
                keep = [l for l in f if l.strip() and json.loads(l).get('step', 0) <= resume_step]
            with open(self.path + '.tmp', 'w') as f:
                f.writelines(keep)
            os.replace(self.path + '.tmp', self.path)
        elif resume_step is None:
            open(self.path, 'w').close()
        if cfg['log_tensorboard']:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(run_dir, 'tb'))
        if cfg['wandb_log']:
            import wandb
            self.wandb = wandb.init(project=cfg['wandb_project'], name=os.path.basename(run_dir), config=cfg,
                                    dir=run_dir, resume='allow')
            wandb.define_metric('*', step_metric='tokens')

    def event(self, name, console=False, **kv):
        if not self.master:
            return
        rec = {'event': name, **kv}
        with open(self.path, 'a') as f:
            f.write(json.dumps(rec) + '\n')
        if console:
            print(json.dumps(rec), flush=True)
        scalars = {k: v for k, v in kv.items() if isinstance(v, (int, float)) and k not in ('step', 'tokens')}
        if self.tb is not None and 'tokens' in kv:
            for k, v in scalars.items():
                self.tb.add_scalar(f'{name}/{k}', v, kv['tokens'])
        if self.wandb is not None and 'tokens' in kv:
            self.wandb.log({'tokens': kv['tokens'], **{f'{name}/{k}': v for k, v in scalars.items()}})

    def histogram(self, tag, values, tokens):
        if self.master and self.tb is not None:
            self.tb.add_histogram(tag, values, tokens)

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


# ----------------------------------------------------------------------------- main

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


def ensure_data(cfg, master, ddp):
    data_dir = os.path.join(cfg['data_root'], cfg['data'])
    if cfg['auto_prepare'] and not os.path.exists(os.path.join(data_dir, 'meta.json')) and master:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'prepare', f"{cfg['data']}.py")
        if not os.path.exists(script):
            raise UserError(f"auto_prepare: no prepare/{cfg['data']}.py to make data set '{cfg['data']}'")
        print(f"data set {data_dir} missing: running prepare/{cfg['data']}.py", flush=True)
        r = subprocess.run([sys.executable, script, f'--out_dir={data_dir}'])
        if r.returncode != 0:
            raise UserError(f"prepare/{cfg['data']}.py failed with exit code {r.returncode}")
    if ddp:
        torch.distributed.barrier()
    return data_dir


def main():
    cfg = configurator.configure(globals())
    if cfg['model_size']:
        cfg = apply_model_size(globals())
    check_settings(cfg)
    ddp, rank, local_rank, world, dev = setup_distributed(cfg)
    master = rank == 0
    try:
        return train(cfg, ddp, rank, world, dev, master)
    finally:
        if ddp:
            torch.distributed.destroy_process_group()


def train(cfg, ddp, rank, world, dev, master):
    device_type = 'cuda' if dev.startswith('cuda') else dev
    torch.manual_seed(cfg['seed'])
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dt = cfg['dtype'] if cfg['dtype'] != 'auto' else ('bfloat16' if device_type == 'cuda' else 'float32')
    autocast = (torch.autocast(device_type=device_type, dtype=getattr(torch, dt))
                if dt != 'float32' else nullcontext())

    # --- data
    data_dir = ensure_data(cfg, master, ddp)
    meta = datalib.load_meta(data_dir)
    hf_init = None
    if cfg['init_from'] in ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') or cfg['init_from'].startswith('hf:'):
        hf_init = hf_weights(cfg, meta)  # sets the model flags from the transformers config
    if cfg['vocab_size'] == 0:
        cfg['vocab_size'] = 64 * math.ceil(meta['vocab_size'] / 64)  # padded: faster matmuls
    train_data = open_objective_data(cfg, data_dir, 'train')
    val_data = open_objective_data(cfg, data_dir, 'val')
    objective_batch(cfg, train_data, 0)  # too-short splits fail here, before anything is written
    next(iter(objective_eval_batches(cfg, val_data)))

    # --- batch geometry
    tokens_per_micro = cfg['batch_size'] * cfg['block_size']
    if cfg['global_batch_tokens'] > 0:
        per_step = tokens_per_micro * world
        if cfg['global_batch_tokens'] % per_step:
            raise UserError(f"global_batch_tokens={cfg['global_batch_tokens']} is not divisible by batch_size*block_size*"
                            f"world_size={per_step}; pick a multiple of {per_step}")
        cfg['grad_accum'] = cfg['global_batch_tokens'] // per_step
    accum = cfg['grad_accum']
    tokens_per_step = tokens_per_micro * accum * world
    total_steps = math.ceil(cfg['max_tokens'] / tokens_per_step) if cfg['max_tokens'] > 0 else cfg['max_iters']
    predecay = decay_points(cfg, tokens_per_step)
    if predecay:  # decay_budgets: the schedule spans the largest budget; the stable run stops at its decay
        total_steps = math.ceil(max(max(b) for b in predecay.values()) / tokens_per_step)

    # --- run dir, model, optimizer
    run_dir = choose_run_dir(cfg)
    if cfg['branch']:
        return run_branch(cfg, run_dir, cfg['branch'], cfg['init_from'] != 'resume', tokens_per_step,
                          ddp, rank, world, dev, master)
    ckpt_path = os.path.join(run_dir, 'ckpt', 'last.safetensors' if cfg['ckpt_format'] == 'safetensors' else 'last.pt')
    start_step, ckpt = 0, None
    model_cfg = {k: cfg[k] for k in MODEL_KEYS}
    if cfg['init_from'] == 'resume':
        if not os.path.exists(ckpt_path):
            raise UserError(f"init_from='resume' but {run_dir} has no checkpoint (ckpt/last.pt); "
                            f"start it with init_from='scratch'")
        ckpt = load_checkpoint(ckpt_path)
        if ckpt['model_config'] != model_cfg:
            changed = [k for k in model_cfg if ckpt['model_config'].get(k) != model_cfg[k]]
            raise UserError(f"cannot resume {run_dir}: model flags changed ({', '.join(changed)})")
        start_step = ckpt['step']
    try:
        model = GPT(GPTConfig(**model_cfg))
    except ValueError as e:
        raise UserError(str(e))
    tokenizer = datalib.get_tokenizer(meta['tokenizer'])
    if hf_init is not None:
        model.load_state_dict(hf_init)
        if master:
            print(f"init_from {cfg['init_from']}: loaded all {len(hf_init)} tensors through transformers")
    elif cfg['init_from'] not in ('scratch', 'resume'):
        src = load_checkpoint(cfg['init_from'])
        state = src['model']
        if cfg['n_encoder_layer'] and not any(k.startswith('enc.') for k in state):
            # n_encoder_layer: decoder-only -> encoder-decoder; encoder blocks start as the decoder's blocks
            state = {**state, **encdec_state_from_decoder_only(state, model.config)}
            if master:
                n_dec = len({k.split('.')[1] for k in src['model'] if k.startswith('h.')})
                print(f"init_from {cfg['init_from']}: encoder initialized from decoder-only blocks: "
                      + ', '.join(f'enc.{i} <- h.{i % n_dec}' for i in range(cfg['n_encoder_layer'])) + ', ln_enc <- ln_f')
        loaded, skipped, fresh = load_matching(model, state)
        if master:
            print(f"init_from {cfg['init_from']}: loaded {len(loaded)} tensors; not in this model: {skipped or 'none'}; "
                  f"newly initialized: {fresh or 'none'}")
        if cfg['ngpt']:  # loaded weights onto the unit sphere (a resumed run's checkpoint already is: exact resume)
            model.normalize_weights()
    model.to(dev)
    opt_kwargs = dict(lr=cfg['learning_rate'], betas=(cfg['beta1'], cfg['beta2']))
    if device_type == 'cuda':
        opt_kwargs['fused'] = True
    optimizer = torch.optim.AdamW(model.optimizer_groups(cfg['weight_decay']), **opt_kwargs)
    if ckpt is not None:
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        torch.set_rng_state(ckpt['rng_cpu'])
        if device_type == 'cuda' and 'rng_cuda' in ckpt:
            torch.cuda.set_rng_state(ckpt['rng_cuda'])
    dpo_ref = None
    if cfg['objective'] == 'dpo':  # the frozen reference scores every pair once; only the policy trains
        dpo_ref = dpo_setup(cfg, ckpt, model, (train_data, val_data), tokenizer, dev, autocast, master)
    raw_model = model
    if cfg['compile']:
        model = torch.compile(model)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev] if device_type == 'cuda' else None)

    if master:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, 'config.json.tmp'), 'w') as f:
            json.dump(cfg, f, indent=2)
        os.replace(os.path.join(run_dir, 'config.json.tmp'), os.path.join(run_dir, 'config.json'))
    log = Logger(run_dir, cfg, master, resume_step=start_step if ckpt is not None else None)
    n_params = raw_model.num_params()
    flops_per_token = raw_model.flops_per_token()
    if master:
        print('config: ' + json.dumps(cfg))
    log.event('train_begin', console=True, step=start_step, tokens=start_step * tokens_per_step, run_dir=run_dir,
              params=n_params, total_steps=total_steps, tokens_per_step=tokens_per_step, world_size=world,
              grad_accum=accum, device=dev, dtype=dt,
              val_unigram_entropy=meta['splits'].get('val', {}).get('unigram_entropy'))

    def checkpoint(step):
        if not master:
            return
        state = {'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(),
                 'model_config': raw_model.config.to_dict(), 'tokenizer': tokenizer.spec, 'config': cfg,
                 'step': step, 'tokens': step * tokens_per_step, 'rng_cpu': torch.get_rng_state()}
        if device_type == 'cuda':
            state['rng_cuda'] = torch.cuda.get_rng_state()
        if dpo_ref is not None:
            state['ref_ckpt'] = dpo_ref  # init_from='resume' scores the same reference again
        if not all(torch.isfinite(p).all() for p in raw_model.parameters()):  # never overwrite good weights with NaN
            raise RunStopped(f"weights became non-finite by step {step}; not saved; last good checkpoint: "
                             f"{ckpt_path if os.path.exists(ckpt_path) else 'none'}; lower learning_rate")
        try:
            save_checkpoint(ckpt_path, state)
        except OSError as e:
            raise RunStopped(f"could not write checkpoint {ckpt_path} ({e.strerror or e}); the previous checkpoint is "
                             f"intact; free disk space and continue with --init_from=resume") from None

    @torch.no_grad()
    def evaluate():
        model.eval()
        losses, extras = [], {}
        for b in objective_eval_batches(cfg, val_data):
            with autocast:
                loss = objective_loss(raw_model, to_device(b, dev, device_type), cfg)
            if isinstance(loss, tuple):  # extra scalars (dpo): logged as val_<name>
                loss, ex = loss
                for k, v in ex.items():
                    extras.setdefault(k, []).append(v.item())
            losses.append(loss.item())
        model.train()
        return sum(losses) / len(losses), {f'val_{k}': round(sum(v) / len(v), 5) for k, v in extras.items()}

    def batch(step, micro):
        # (seed, index) fixes the batch: rank r of W at micro m equals micro m*W + r of one process
        index = step * world * accum + micro * world + rank
        return to_device(objective_batch(cfg, train_data, index), dev, device_type)

    # --- the loop
    model.train()
    ckpt_every = cfg['ckpt_interval'] or cfg['eval_interval']
    loss_sum = torch.zeros((), device=dev)
    extra_sum = {}  # objectives that return (loss, extras): running sums of the extras (dpo accuracy, rewards)
    t0, t_log, steps_since_log = time.time(), time.time(), 0
    b = batch(start_step, 0)
    val_loss = None
    end_step = min(total_steps, cfg['stop_after']) if cfg['stop_after'] > 0 else total_steps
    if predecay:
        end_step = min(end_step, max(predecay))
    stop_signals = catch_stop_signals()
    for step in range(start_step, end_step):
        lr = lr_at(step, cfg, total_steps)
        for g in optimizer.param_groups:
            g['lr'] = lr
        loss_before = loss_sum.clone() if cfg['nonfinite'] == 'skip' else None
        for micro in range(accum):
            sync = nullcontext() if (not ddp or micro == accum - 1) else model.no_sync()
            with sync:
                with autocast:
                    loss = objective_loss(model, b, cfg)
                if isinstance(loss, tuple):
                    loss, ex = loss
                    for k, v in ex.items():
                        extra_sum[k] = extra_sum.get(k, 0) + v.detach()
                # prefetch the next micro batch while this one's backward runs (async on CUDA)
                nxt = (step, micro + 1) if micro + 1 < accum else (step + 1, 0)
                if nxt[0] < total_steps:
                    b = batch(*nxt)
                (loss / accum).backward()
            loss_sum += loss.detach()
            step_loss = loss.detach() if micro == 0 else step_loss + loss.detach()
        skipped = False
        if cfg['nonfinite'] == 'skip':
            if ddp:
                torch.distributed.all_reduce(step_loss, op=torch.distributed.ReduceOp.SUM)
            skipped = not torch.isfinite(step_loss)
            if skipped:
                loss_sum.copy_(loss_before)  # the skipped step does not count in the logged mean
                if master:
                    print(f"step {step + 1}: non-finite loss, step skipped (nonfinite='skip')", flush=True)
                log.event('skipped_step', step=step + 1, tokens=(step + 1) * tokens_per_step)
        if not skipped:
            if cfg['grad_clip'] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg['grad_clip'])
            optimizer.step()
            if cfg['ngpt']:  # nGPT: weights back on the unit sphere after every step (on every rank, identically)
                raw_model.normalize_weights()
            steps_since_log += 1
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        tokens = done * tokens_per_step

        is_log = done % cfg['log_interval'] == 0 or done == total_steps
        is_eval = done % cfg['eval_interval'] == 0 or done == total_steps
        is_ckpt = done % ckpt_every == 0 or done == end_step
        if (is_log or is_ckpt) and steps_since_log > 0:  # the only host syncs: at log and checkpoint steps
            if ddp:
                torch.distributed.all_reduce(loss_sum, op=torch.distributed.ReduceOp.AVG)
            train_loss = loss_sum.item() / (steps_since_log * accum)
            if not math.isfinite(train_loss):
                good = ckpt_path if os.path.exists(ckpt_path) else 'none (no checkpoint was written yet)'
                raise RunStopped(f"non-finite training loss ({train_loss}) between steps {done - steps_since_log} "
                                       f"and {done}; last good checkpoint: {good}; lower learning_rate or raise warmup_iters")
            dt_s = time.time() - t_log
            tok_s = steps_since_log * tokens_per_step / dt_s
            rec = dict(step=done, tokens=tokens, loss=round(train_loss, 5), lr=lr, tok_per_s=round(tok_s, 1),
                       ms_per_step=round(1000 * dt_s / steps_since_log, 2))
            if extra_sum:
                ex = torch.stack(list(extra_sum.values())).float()
                if ddp:
                    torch.distributed.all_reduce(ex, op=torch.distributed.ReduceOp.AVG)
                rec.update({k: round(v / (steps_since_log * accum), 5) for k, v in zip(extra_sum, ex.tolist())})
                extra_sum = {}
            if device_type == 'cuda' and peak_flops_of(dev):
                rec['mfu'] = round(flops_per_token * tok_s / (world * peak_flops_of(dev)), 4)
            for name, t in raw_model.diagnostics.items():  # e.g. diff_input's delta norms
                t = t.float().flatten()
                rec.update({f'{name}_mean': t.mean().item(), f'{name}_std': t.std().item(),
                            f'{name}_min': t.min().item(), f'{name}_max': t.max().item()})
                log.histogram(f'diagnostics/{name}', t.cpu(), tokens)
            log.event('train', **rec)
            if master and is_log:
                print(f"step {done}/{total_steps} | loss {train_loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s"
                      + (f" | acc {rec['acc']:.3f} | margin {rec['margin']:.3f}" if 'acc' in rec else '')
                      + (f" | mfu {rec['mfu']:.1%}" if 'mfu' in rec else ''), flush=True)
                log.event('progress', console=False, step=done, tokens=tokens, frac=round(done / total_steps, 4))
            loss_sum.zero_()
            steps_since_log, t_log = 0, time.time()
        if is_eval:
            val_loss, val_extra = evaluate()
            log.event('evaluate', console=master, step=done, tokens=tokens, val_loss=round(val_loss, 5),
                      val_ppl=round(math.exp(min(val_loss, 50)), 3), **val_extra)
        if is_ckpt or done in predecay:
            checkpoint(done)
        for budget in predecay.get(done, []) if master else []:  # decay_budgets: this budget's decay starts here
            shutil.copyfile(ckpt_path, predecay_path(run_dir, budget) + '.tmp')
            os.replace(predecay_path(run_dir, budget) + '.tmp', predecay_path(run_dir, budget))
        if ddp and (is_ckpt or is_eval or done in predecay):
            torch.distributed.barrier()
        if ddp and is_log:  # ranks agree on a stop request at log steps (no extra syncs elsewhere)
            flag = torch.tensor([float(bool(stop_signals))], device=dev)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop_now = flag.item() > 0
        else:
            stop_now = bool(stop_signals) and not ddp
        if stop_now and done < end_step:
            if not is_ckpt:
                checkpoint(done)
            if ddp:
                torch.distributed.barrier()
            name = stop_signals[0] if stop_signals else 'a stop signal on another rank'
            log.event('preempted', console=master, step=done, tokens=tokens, signal=name, checkpoint=ckpt_path)
            if master:
                print(f"received {name} at step {done}: checkpoint written to {ckpt_path}; "
                      f"continue with --init_from=resume", flush=True)
            log.close()
            return run_dir

    elapsed = time.time() - t0
    if master and cfg['log_figures']:
        write_run_figures(run_dir, raw_model.diagnostics, log.tb)
    log.event('train_end', console=True, step=end_step, tokens=end_step * tokens_per_step,
              val_loss=None if val_loss is None else round(val_loss, 5), seconds=round(elapsed, 1), run_dir=run_dir)
    log.close()
    if predecay and end_step == max(predecay):  # decay_budgets: the stable run is done, run every branch
        for budget in sorted(b for bs in predecay.values() for b in bs):
            run_branch(cfg, run_dir, budget, False, tokens_per_step, ddp, rank, world, dev, master)
        return run_dir
    if master and cfg['sample_tokens'] > 0:
        from sample import stream_sample
        print(f"--- sample ({cfg['sample_tokens']} tokens, from {ckpt_path}) ---")
        stream_sample(raw_model, tokenizer, cfg['sample_prompt'], cfg['sample_tokens'], temperature=0.8, top_k=50,
                      seed=cfg['seed'], device=dev)
    return run_dir


def write_run_figures(run_dir, diagnostics, tb=None):
    """figures/loss.png (train and eval loss vs tokens) and a histogram per diagnostic of the last batch."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    events = [json.loads(l) for l in open(os.path.join(run_dir, 'metrics.jsonl')) if l.strip()]
    os.makedirs(os.path.join(run_dir, 'figures'), exist_ok=True)
    figs = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, key, style in (('train', 'loss', '-'), ('evaluate', 'val_loss', 'o-')):
        pts = [(e['tokens'], e[key]) for e in events if e['event'] == name and e.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=f'{name} loss')
    ax.set(xlabel='tokens', ylabel='loss (nats/token)', title=f'loss: {os.path.basename(run_dir)}')
    ax.legend()
    ax.grid(alpha=0.3)
    figs['loss'] = fig
    for name, t in diagnostics.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(t.float().flatten().cpu().numpy(), bins=60, color='tab:purple')
        ax.set(xlabel=name.replace('_', ' '), ylabel='count (positions in the last batch)',
               title=f'{name} at the end of training')
        ax.grid(alpha=0.3)
        figs[f'{name}_hist'] = fig
    for name, fig in figs.items():
        fig.tight_layout()
        fig.savefig(os.path.join(run_dir, 'figures', f'{name}.png'), dpi=110)
        if tb is not None:
            tb.add_figure(f'figures/{name}', fig)
        plt.close(fig)


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


# ----------------------------------------------------------------------------- Hugging Face interop (issue 10)

def hf_weights(cfg, meta):
    """init_from='gpt2'.. or 'hf:DIR': the model flags come from the transformers config (dropout stays
    this run's); the data must use the same tokenizer. Returns the state dict to load."""
    from export_hf import load_hf
    mc, sd, spec = load_hf(cfg['init_from'])
    if spec != meta['tokenizer']:
        name = lambda s: s.get('name', s.get('kind'))
        raise UserError(f"init_from='{cfg['init_from']}' uses tokenizer '{name(spec)}' but data '{cfg['data']}' was "
                        f"tokenized with '{name(meta['tokenizer'])}'; prepare the data with the same tokenizer")
    cfg.update({k: v for k, v in mc.items() if k != 'dropout'})
    return sd


# ----------------------------------------------------------------------------- dpo
# objective='dpo': rows 0..B-1 of a batch are prompt+chosen, rows B..2B-1 prompt+rejected (data.collate_pairs).
# The frozen reference's log-probs are constants, so they are computed once for every pair before training
# (dpo_setup) and travel with the batches as b['ref']: no second model in the hot loop, nothing of the
# reference in the optimizer or the checkpoint, and resume simply scores it again.

def dpo_seq_max_len(cfg):
    n = cfg['seq_max_len'] or cfg['block_size'] + 1
    if not 2 <= n <= cfg['block_size'] + 1:
        raise UserError(f"seq_max_len={n} must be in 2..block_size+1={cfg['block_size'] + 1} (the model reads all "
                        f"but the last token); lower seq_max_len or raise block_size")
    return n


def response_logps(model, b):
    """Per row: the sum of log p(token) over the response tokens (where y != -100) and their count."""
    logits, _ = model(b['x'])
    lp = -torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), b['y'], ignore_index=-100,
                                            reduction='none')  # 0 where y == -100
    return lp.sum(1), (b['y'] != -100).sum(1)


def dpo_loss(logp, ref_logp, n, beta, length_normalize):
    """-log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))), mean over pairs.

    logp, ref_logp, n: (2B,) response log-prob sums of policy and reference and response lengths, chosen
    rows first. length_normalize divides each sum by its length. Returns (loss, extras): preference
    accuracy (margin > 0; a tie counts half), the mean implicit rewards beta * (log pi - log ref) of
    chosen and rejected responses, and their mean margin."""
    logp, ref_logp = logp.float(), ref_logp.float()
    if length_normalize:
        logp, ref_logp = logp / n, ref_logp / n
    reward_chosen, reward_rejected = (beta * (logp - ref_logp)).chunk(2)
    margin = reward_chosen - reward_rejected
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    acc = ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()
    return loss, {'acc': acc.detach(), 'reward_chosen': reward_chosen.mean().detach(),
                  'reward_rejected': reward_rejected.mean().detach(), 'margin': margin.mean().detach()}


def dpo_attach_ref(b, d):
    """Replace the batch's record numbers by the reference log-probs of its rows (chosen rows first)."""
    idx = b.pop('idx')
    if d['ref'] is not None:  # None only in train()'s early check that a batch can be built, before scoring
        ref = d['ref'][idx]
        b['ref'] = torch.cat([ref[:, 0], ref[:, 1]])
    return b


@torch.no_grad()
def dpo_score(model, recs, pad_id, seq_max_len, batch_size, dev, autocast=None):
    """Response log-prob sums and lengths of every pair: two (N, 2) tensors, columns chosen, rejected."""
    model.eval()
    logps, counts = torch.zeros(len(recs), 2), torch.zeros(len(recs), 2, dtype=torch.long)
    for b in datalib.iter_pair_batches(recs, batch_size, seq_max_len, pad_id):
        idx = b.pop('idx')
        with autocast or nullcontext():
            lp, n = response_logps(model, {k: v.to(dev) for k, v in b.items()})
        logps[idx] = lp.float().cpu().view(2, -1).T
        counts[idx] = n.cpu().view(2, -1).T
    return logps, counts


def dpo_setup(cfg, ckpt, model, datasets, tokenizer, dev, autocast, master):
    """Check the policy is the whole SFT model, load the reference, score every pair of `datasets` with it
    (filling d['ref']). Returns the reference's path (kept in checkpoints for resume)."""
    if cfg['init_from'] == 'scratch':
        raise UserError("objective='dpo' fine-tunes an SFT model: pass --init_from=<SFT run dir or .pt> "
                        "(the reference defaults to it; --ref_ckpt picks another)")
    path = cfg['ref_ckpt'] or (ckpt.get('ref_ckpt', '') if ckpt is not None else cfg['init_from'])
    if not path:
        raise UserError("this run's checkpoint names no reference: pass --ref_ckpt=<SFT run dir or .pt>")
    if cfg['init_from'] != 'resume':
        init = load_checkpoint(cfg['init_from'])['model_config']
        # flags added after the checkpoint was written are absent from it and keep their defaults
        diff = [k for k, v in model.config.to_dict().items() if k in init and init[k] != v]
        if diff:
            raise UserError(f"objective='dpo': model flags differ from init_from's checkpoint ({', '.join(diff)}): "
                            f"the policy must be the whole SFT model; run with the SFT run's config file")
    ref_ckpt = load_checkpoint(path)
    if ref_ckpt['tokenizer'] != tokenizer.spec:
        raise UserError(f"reference '{path}' uses another tokenizer than data set '{cfg['data']}': "
                        f"build the pairs from the data the reference was trained on")
    ref, _ = model_from_checkpoint(ref_ckpt)
    ref.to(dev).requires_grad_(False)
    t0 = time.time()
    for d in datasets:
        d['ref'], _ = dpo_score(ref, d['records'], d['pad_id'], dpo_seq_max_len(cfg), cfg['batch_size'], dev, autocast)
    if master:
        print(f"dpo reference {path}: scored {sum(len(d['records']) for d in datasets):,} pairs in "
              f"{time.time() - t0:.1f}s", flush=True)
    return os.path.abspath(path)


if __name__ == '__main__':
    try:
        configurator.run_main(main)
    except RunStopped as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
