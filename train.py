"""The one training loop: single process, or DDP / FSDP2 under torchrun (gloo on CPU, nccl on GPU).

    python train.py config/quickstart.py --max_iters=100
    torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m.py
    torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m.py --parallel=fsdp
    python train.py config/quickstart.py --init_from=resume

Data order is a pure function of (seed, step, micro step, rank), so resume is exact and DDP on W
ranks equals one process with W times the accumulation.
"""
import gc
import json
import math
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

import configurator
from configurator import Each, Match, OneOf, Range, Text, UserError
import data as datalib
from model import ATTNS, GPT, GPTConfig, MLPS, NORMS, POS_EMBS
from checkpoint import (init_weights_from, load_checkpoint, save_checkpoint, save_error_message,
                        saved_model_config)
from optim import OPTIMIZERS, build_optimizer
from common import (RunStopped, catch_stop_signals, ensure_data, fsdp_shard, full_state, peak_flops_of,
                    setup_distributed, shard_optimizer_state, to_device)
from objectives import (OBJECTIVES, dpo_seq_max_len, dpo_setup, eval_metrics, objective_batch, objective_eval,
                        objective_eval_batches, objective_loss, open_objective_data)
from runlog import Logger, choose_run_dir, format_run_name, write_run_figures
from schedule import (DECAY_SHAPES, LR_SCHEDULES, MODEL_SIZES, apply_model_size, branch_config, decay_points, lr_at,
                      save_predecay)

# ----------------------------------------------------------------------------- settings
# I/O and runs
out_dir: Text('folder for runs') = 'out'  # runs live in out_dir/<run_name>
run_name: Text('run name') = '{data}_{n_layer}x{n_embd}_{pos_emb}_s{seed}'  # {key}s filled from the config
init_from: Text('scratch, resume, a checkpoint or run dir, gpt2* or hf:DIR') = 'scratch'  # resume: this run's
                             # last checkpoint | gpt2..gpt2-xl: published weights | hf:DIR: a transformers folder
data: Text('data set name under data_root') = 'stdlib'  # prepared by prepare/<name>.py
data_root: Text('folder of data sets') = 'data'
auto_prepare: bool = False  # run prepare/<data>.py first when the data set is missing
objective: OneOf(OBJECTIVES) = 'lm'  # seq2seq: source/target records; records: one sequence per row; dpo: pairs
model_size: OneOf(('',) + tuple(MODEL_SIZES)) = ''  # a preset (schedule.MODEL_SIZES); explicit values win
algo_data: Text('algorithmic data set name') = ''  # lm: algorithmic records (prepare/algorithmic.py) mixed in
algo_mix: Range(0, 1) = 0.1  # lm with algo_data: fraction of batch rows drawn from algo_data
# model (GPTConfig flags; vocab_size 0 = the data's vocabulary padded to a multiple of 64)
vocab_size: Range(0) = 0
block_size: Range(1) = 256
n_layer: Range(1) = 4
n_head: Range(1) = 4
n_embd: Range(1) = 128
dropout: Range(0, 1, hi_open=True) = 0.0
bias: bool = True
tie_embeddings: bool = True
pos_emb: OneOf(POS_EMBS) = 'learned'
rope_theta: Range(0, lo_open=True) = 10000.0
norm: OneOf(NORMS) = 'layernorm'
mlp: OneOf(MLPS) = 'gelu'
qk_norm: bool = False
attn: OneOf(ATTNS) = 'softmax'
ngpt: bool = False
diff_input: bool = False
n_encoder_layer: Range(0) = 0
linear_chunk: Range(1) = 64  # attn='linear': chunk length of the training-time computation
pos_random: Range(0) = 0  # > 0: randomized positions, a sorted random subset of [0, pos_random) per sequence
# batches and length of training
batch_size: Range(1) = 16  # micro batch per rank
grad_accum: Range(1) = 1  # micro steps per optimizer step (per rank)
global_batch_tokens: Range(0) = 0  # if > 0, grad_accum is computed from it
max_iters: Range(1) = 1000
max_tokens: Range(0) = 0  # if > 0, max_iters = ceil(max_tokens / tokens per step)
stop_after: Range(0) = 0  # > 0: stop here with a checkpoint (time-sliced jobs); the schedule spans the whole run
stop_at_val_acc: Range(0, 1) = 0.0  # records, > 0: stop at the first eval with val_acc >= this (max_iters: the cap)
# optimizer and schedule
optimizer: OneOf(OPTIMIZERS) = 'adamw'  # muon: Muon on the blocks' 2-D matrices, AdamW on the rest (optim.py)
learning_rate: Range(0, lo_open=True) = 6e-4  # AdamW's (with muon: embeddings, head, norms, biases, vectors)
min_lr: Range(0) = 6e-5
weight_decay: Range(0) = 0.1
beta1: Range(0, 1, hi_open=True) = 0.9
beta2: Range(0, 1, hi_open=True) = 0.95
grad_clip: Range(0) = 1.0
muon_lr: Range(0, lo_open=True) = 0.02  # optimizer='muon': Muon's peak lr; the schedule scales it like learning_rate
muon_momentum: Range(0, 1, hi_open=True) = 0.95
muon_weight_decay: Range(0) = 0.0  # decoupled, times Muon's lr (0 = Keller Jordan's original Muon)
lr_schedule: OneOf(LR_SCHEDULES) = 'cosine'
warmup_iters: Range(0) = 100
decay_frac: Range(0, 1, lo_open=True) = 0.1  # wsd: the last decay_frac of training decays to min_lr
decay_shape: OneOf(DECAY_SHAPES) = 'linear'  # wsd
decay_budgets: Each(Range(1)) = []  # wsd: token budgets; the stable run saves a pre-decay checkpoint for each, then
                             # runs every decay branch into <run_dir>/decay_<budget>/
branch: Range(0) = 0  # > 0: (re-)run only the decay branch of this budget, from its pre-decay checkpoint
# evaluation, logging, checkpoints
eval_interval: Range(1) = 250
eval_iters: Range(1) = 20
log_interval: Range(1) = 10
ckpt_interval: Range(0) = 0  # 0 = at every eval
ckpt_format: OneOf('pt', 'safetensors') = 'pt'  # pt: torch.save; safetensors: tensors + the rest as json
log_tensorboard: bool = True
log_figures: bool = True  # at the end: figures/*.png (loss curves, diagnostic histograms), also into TensorBoard
wandb_log: bool = False
wandb_project: Text('wandb project name') = 'gptlab'
sample_tokens: Range(0) = 0  # > 0: print a sample of this many tokens at the end
sample_prompt: Text('prompt text') = ''
# system
device: Match(r'auto|cpu|mps|cuda(:\d+)?', "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") = 'auto'
dtype: OneOf('auto', 'float32', 'bfloat16', 'float16') = 'auto'  # auto: bf16 on CUDA, else float32
compile: bool = False
seed: Range(0) = 1337
parallel: OneOf('ddp', 'fsdp') = 'ddp'  # under torchrun: ddp (every rank holds the whole model, gradients and
                             # optimizer state) | fsdp (FSDP2: each rank holds 1/W of them, for models DDP cannot fit;
                             # docs/usage.md). One process: no effect
ddp_timeout_s: Range(1) = 600  # a failed rank takes the job down instead of hanging forever
nonfinite: OneOf('stop', 'skip') = 'stop'  # non-finite loss: stop (keep the last good checkpoint) | skip (drop
                             # that step; checks every step, one host sync each)
# dpo (objective='dpo', data = a pairs set from prepare/pairs.py): policy from init_from, frozen reference
ref_ckpt: Text('reference checkpoint or run dir') = ''  # '' = the init_from checkpoint
beta: Range(0, lo_open=True) = 0.1  # scale of the implicit rewards beta * (log pi - log ref)
length_normalize: bool = False  # average response log-probs over response tokens instead of summing them
seq_max_len: Range(0) = 0  # prompt + response tokens per sequence; longer ones lose prompt tokens from
                             # the left, never response tokens (0 = block_size + 1: inputs fill block_size)
RULES = [('min_lr <= learning_rate', 'the schedule decays from learning_rate down to min_lr'),  # (check_declared)
         ("stop_at_val_acc == 0 or objective == 'records'", "val_acc is measured for objective='records' only"),
         ('stop_at_val_acc == 0 or not decay_budgets', 'a run that may stop early has no fixed decay points')]
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if k in configurator._settable(globals())}
MODEL_KEYS = [f for f in GPTConfig.__dataclass_fields__]


# ----------------------------------------------------------------------------- settings check
# Everything that can be checked from the settings alone is checked here, before any data set is
# prepared, any directory created or any file written.

def check_settings(cfg, world=1):
    """The relations that need more than the declarations above (which configure() has already checked)."""
    if not hf_init_name(cfg):  # (an HF init takes its flags from the transformers config)
        try:  # the model flags; vocab_size 0 is filled from the data later
            GPTConfig(**{**{k: cfg[k] for k in MODEL_KEYS}, 'vocab_size': cfg['vocab_size'] or 64})
        except ValueError as e:
            raise UserError(str(e))
    if cfg['algo_data'] and cfg['objective'] != 'lm':
        raise UserError(f"algo_data mixes algorithmic records into objective='lm', not '{cfg['objective']}'")
    if cfg['objective'] == 'dpo':
        if cfg['init_from'] == 'scratch':
            raise UserError("objective='dpo' fine-tunes an SFT model: pass --init_from=<SFT run dir or .pt> "
                            "(the reference defaults to it; --ref_ckpt picks another)")
        dpo_seq_max_len(cfg)
    format_run_name(cfg)
    _, _, total_steps, _ = batch_geometry(cfg, world)
    if cfg['warmup_iters'] > total_steps:
        raise UserError(f"warmup_iters={cfg['warmup_iters']} is longer than the run ({total_steps} steps): the peak "
                        f"learning rate would never be reached; set --warmup_iters to at most {total_steps} (0 = none)")


def hf_init_name(cfg):
    return cfg['init_from'] in ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') or cfg['init_from'].startswith('hf:')


def batch_geometry(cfg, world):
    """(micro steps per step, tokens per step, total steps, {pre-decay step: [budgets]}); the micro steps come
    from global_batch_tokens when it is set, else from grad_accum."""
    tokens_per_micro = cfg['batch_size'] * cfg['block_size']
    accum = cfg['grad_accum']
    if cfg['global_batch_tokens'] > 0:
        per_step = tokens_per_micro * world
        if cfg['global_batch_tokens'] % per_step:
            raise UserError(f"global_batch_tokens={cfg['global_batch_tokens']} is not divisible by batch_size*block_size*"
                            f"world_size={per_step}; pick a multiple of {per_step}")
        accum = cfg['global_batch_tokens'] // per_step
    tokens_per_step = tokens_per_micro * accum * world
    total_steps = math.ceil(cfg['max_tokens'] / tokens_per_step) if cfg['max_tokens'] > 0 else cfg['max_iters']
    predecay = decay_points(cfg, tokens_per_step)
    if predecay:  # decay_budgets: the schedule spans the largest budget; the stable run stops at its decay
        total_steps = math.ceil(max(max(b) for b in predecay.values()) / tokens_per_step)
    return accum, tokens_per_step, total_steps, predecay


# ----------------------------------------------------------------------------- setup

def resolve(cfg, world, master, ddp):
    """The settings a run really uses, as a new dict (what config.json and checkpoints hold): an HF init's model
    flags, vocab_size 0 -> the data's vocabulary padded to a multiple of 64, grad_accum from global_batch_tokens.
    Returns (settings, data_dir, meta, the HF init's state dict or None). Prepares the data when asked."""
    cfg = dict(cfg)
    data_dir = ensure_data(cfg, master, ddp)
    meta = datalib.load_meta(data_dir)
    hf_init = None
    if hf_init_name(cfg):
        from export_hf import hf_weights
        hf_init = hf_weights(cfg, meta)  # sets the model flags (of this copy) from the transformers config
    if cfg['vocab_size'] == 0:
        cfg['vocab_size'] = 64 * math.ceil(meta['vocab_size'] / 64)  # padded: faster matmuls
    cfg['grad_accum'] = batch_geometry(cfg, world)[0]
    return cfg, data_dir, meta, hf_init


def build_model(cfg, run_dir, ckpt_path, hf_init, device_type, dev, master, fsdp):
    """(model, optimizer, resume checkpoint or None): fresh, from init_from, or resumed exactly.
    fsdp: the model is sharded (in place) after its weights are loaded and before the optimizer is built."""
    model_cfg, ckpt = {k: cfg[k] for k in MODEL_KEYS}, None
    if cfg['init_from'] == 'resume':
        if not os.path.exists(ckpt_path):
            raise UserError(f"init_from='resume' but {run_dir} has no checkpoint (ckpt/last.pt); "
                            f"start it with init_from='scratch'")
        ckpt = load_checkpoint(ckpt_path)
        saved = saved_model_config(ckpt).to_dict()  # (flags added since the checkpoint: their defaults)
        if saved != model_cfg:
            changed = [k for k in model_cfg if saved.get(k) != model_cfg[k]]
            raise UserError(f"cannot resume {run_dir}: model flags changed ({', '.join(changed)})")
    try:
        model = GPT(GPTConfig(**model_cfg))
    except ValueError as e:
        raise UserError(str(e))
    if hf_init is not None:
        model.load_state_dict(hf_init)
        notes = [f"init_from {cfg['init_from']}: loaded all {len(hf_init)} tensors through transformers"]
    elif cfg['init_from'] not in ('scratch', 'resume'):
        notes = init_weights_from(model, cfg['init_from'])
    for line in notes if master and cfg['init_from'] not in ('scratch', 'resume') else []:
        print(line)
    if ckpt is not None:
        model.load_state_dict(ckpt['model'])
    if fsdp:  # before the optimizer, which must hold the shards (DTensors) fully_shard puts in place of the weights
        fsdp_shard(model, device_type)  # (also moves them to the device)
    else:
        model.to(dev)
    optimizer = build_optimizer(model, cfg, device_type)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt['optimizer'])
        if fsdp:  # the checkpoint holds whole tensors
            shard_optimizer_state(optimizer)
        torch.set_rng_state(ckpt['rng_cpu'])
        if device_type == 'cuda' and 'rng_cuda' in ckpt:
            torch.cuda.set_rng_state(ckpt['rng_cuda'])
    return model, optimizer, ckpt


@dataclass
class Run:
    """What the loop and its helpers share: made once by setup(); only the last three fields change."""
    cfg: dict               # the resolved settings (resolve()): what config.json and checkpoints hold
    ddp: bool               # under torchrun (DDP or FSDP2)
    fsdp: bool              # parallel='fsdp' under torchrun: the model is sharded
    rank: int               # this process's rank (0 without torchrun)
    world: int              # number of ranks
    master: bool            # rank 0: writes files and prints
    dev: str                # 'cpu', 'mps', 'cuda:<local rank>'
    device_type: str        # 'cpu', 'mps', 'cuda'
    dtype: str              # 'float32', 'bfloat16' or 'float16' (dtype='auto' resolved)
    autocast: object        # the context forward passes run in (nullcontext in float32)
    meta: dict              # the data set's meta.json
    tokenizer: object       # data.get_tokenizer(meta['tokenizer']); its spec goes into checkpoints
    token_bytes: object     # objective='lm': UTF-8 bytes of each token id, for val_bpb (data.token_bytes); else None
    train_data: object      # open_objective_data(..., 'train'): what get_batch draws from
    val_data: object        # open_objective_data(..., 'val'): what evaluate reads
    accum: int              # micro steps per optimizer step, per rank
    tokens_per_step: int    # tokens per optimizer step, all ranks together
    total_steps: int        # optimizer steps of the whole schedule
    predecay: dict          # decay_budgets: {pre-decay step: [budgets]} ({} without them)
    run_dir: str            # out_dir/<run name>[_vN]
    ckpt_path: str          # <run_dir>/ckpt/last.pt (or last.safetensors)
    raw_model: object       # the GPT (checkpoints, evaluation, diagnostics, nGPT renormalization)
    model: object           # what the training forward calls: raw_model, compiled and/or wrapped in DDP
    optimizer: object       # optim.build_optimizer's AdamW or Muon + AdamW
    start_step: int         # 0, or the resumed checkpoint's step
    dpo_ref: object         # objective='dpo': the reference checkpoint (stored in checkpoints), else None
    log: Logger             # metrics.jsonl, console markers, TensorBoard, wandb
    loss_sum: torch.Tensor  # changes: sum of the micro-step losses since the last train event (on the device)
    extra: dict             # changes: sums of the objective's extra scalars (dpo accuracy, rewards) since then
    window_steps: int = 0   # changes: optimizer steps taken since then (a skipped step does not count)


def setup(cfg, ddp, rank, world, dev):
    """Data, batch geometry, run dir, model and optimizer: everything the loop needs, as one Run."""
    master = rank == 0
    device_type = 'cuda' if dev.startswith('cuda') else dev
    torch.manual_seed(cfg['seed'])
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dt = cfg['dtype'] if cfg['dtype'] != 'auto' else ('bfloat16' if device_type == 'cuda' else 'float32')
    autocast = torch.autocast(device_type=device_type, dtype=getattr(torch, dt)) if dt != 'float32' else nullcontext()
    cfg, data_dir, meta, hf_init = resolve(cfg, world, master, ddp)
    train_data = open_objective_data(cfg, data_dir, 'train')
    val_data = open_objective_data(cfg, data_dir, 'val')
    objective_batch(cfg, train_data, 0)  # too-short splits fail here, before anything is written
    next(iter(objective_eval_batches(cfg, val_data)))
    accum, tokens_per_step, total_steps, predecay = batch_geometry(cfg, world)
    run_dir = choose_run_dir(cfg)
    ckpt_path = os.path.join(run_dir, 'ckpt', 'last.safetensors' if cfg['ckpt_format'] == 'safetensors' else 'last.pt')
    fsdp = ddp and cfg['parallel'] == 'fsdp'
    model, optimizer, ckpt = build_model(cfg, run_dir, ckpt_path, hf_init, device_type, dev, master, fsdp)
    tokenizer = datalib.get_tokenizer(meta['tokenizer'])
    token_bytes = datalib.token_bytes(tokenizer, cfg['vocab_size']) if cfg['objective'] == 'lm' else None
    dpo_ref = None
    if cfg['objective'] == 'dpo':  # the frozen reference scores every pair once; only the policy trains
        dpo_ref = dpo_setup(cfg, ckpt, model, (train_data, val_data), tokenizer, dev, autocast, master)
    wrapped = torch.compile(model) if cfg['compile'] else model  # (under fsdp: fully_shard worked in place)
    if ddp and not fsdp:
        wrapped = torch.nn.parallel.DistributedDataParallel(wrapped, device_ids=[dev] if device_type == 'cuda' else None)
    start_step = ckpt['step'] if ckpt is not None else 0
    log = Logger(run_dir, cfg, master, resume_step=start_step if ckpt is not None else None)  # writes config.json
    return Run(cfg=cfg, ddp=ddp, fsdp=fsdp, rank=rank, world=world, master=master, dev=dev, device_type=device_type,
               dtype=dt, autocast=autocast, meta=meta, tokenizer=tokenizer, token_bytes=token_bytes, train_data=train_data,
               val_data=val_data, accum=accum, tokens_per_step=tokens_per_step, total_steps=total_steps, predecay=predecay,
               run_dir=run_dir, ckpt_path=ckpt_path, raw_model=model, model=wrapped, optimizer=optimizer,
               start_step=start_step, dpo_ref=dpo_ref, log=log, loss_sum=torch.zeros((), device=dev), extra={})


# ----------------------------------------------------------------------------- the loop

def train(cfg, ddp, rank, world, dev):
    """One run (the run itself or a decay branch) from its start step to its end step. Returns the resolved
    settings, the run dir and the decay budgets whose branches are now due (main runs them)."""
    r = setup(cfg, ddp, rank, world, dev)
    cfg = r.cfg
    end_step = min(r.total_steps, cfg['stop_after']) if cfg['stop_after'] > 0 else r.total_steps
    end_step = min(end_step, max(r.predecay, default=end_step))  # the stable run stops at its last decay start
    branches = sorted(b for bs in r.predecay.values() for b in bs) if end_step == max(r.predecay, default=-1) else []
    begin(r)
    ckpt_every = cfg['ckpt_interval'] or cfg['eval_interval']
    stop_signals = catch_stop_signals()
    t0 = t_log = time.time()
    val_loss, b = None, get_batch(r, r.start_step, 0)
    for step in range(r.start_step, end_step):
        lr = lr_at(step, cfg, r.total_steps)
        for g in r.optimizer.param_groups:  # lr_scale: Muon's groups (muon_lr / learning_rate; optim.py)
            g['lr'] = lr * g.get('lr_scale', 1.0)
        loss_before = r.loss_sum.clone() if cfg['nonfinite'] == 'skip' else None
        for micro in range(r.accum):
            with grad_sync(r, last=micro == r.accum - 1):
                with r.autocast:
                    loss = add_extras(r, objective_loss(r.model, b, cfg))
                nxt = (step, micro + 1) if micro + 1 < r.accum else (step + 1, 0)
                if nxt[0] < r.total_steps:  # prefetch the next micro batch while this backward runs (async on CUDA)
                    b = get_batch(r, *nxt)
                (loss / r.accum).backward()
            r.loss_sum += loss.detach()  # (on the device: no host sync)
            step_loss = loss.detach() if micro == 0 else step_loss + loss.detach()
        if not skipped_nonfinite(r, step, step_loss, loss_before):
            if cfg['grad_clip'] > 0:
                torch.nn.utils.clip_grad_norm_(r.model.parameters(), cfg['grad_clip'])
            r.optimizer.step()
            if cfg['ngpt']:  # nGPT: weights back on the unit sphere after every step (on every rank, identically)
                r.raw_model.normalize_weights()
            r.window_steps += 1
        r.optimizer.zero_grad(set_to_none=True)
        # the rare paths: log, evaluate, checkpoint, preemption
        done = step + 1
        is_log = done % cfg['log_interval'] == 0 or done == r.total_steps
        is_eval = done % cfg['eval_interval'] == 0 or done == r.total_steps
        is_ckpt = done % ckpt_every == 0 or done == end_step
        if (is_log or is_ckpt) and r.window_steps > 0:  # the only host syncs: at log and checkpoint steps
            log_train(r, done, lr, t_log, is_log)
            t_log = None
        val_extra = {}
        if is_eval:
            val_loss, val_extra = evaluate(r)
            log_eval(r, done, val_loss, val_extra)
        reached = 0 < cfg['stop_at_val_acc'] <= val_extra.get('val_acc', -1)
        if reached:  # stop_at_val_acc: converged; the same on every rank (each evaluates the same batches)
            end_step, is_ckpt = done, True
            if r.window_steps > 0:  # the train event of the last steps, as at any checkpoint
                log_train(r, done, lr, t_log, True)
            r.log.event('stopped_early', console=r.master, step=done, tokens=done * r.tokens_per_step,
                        val_acc=val_extra['val_acc'], target=cfg['stop_at_val_acc'], max_steps=r.total_steps)
        if is_ckpt or done in r.predecay:
            checkpoint(r, done)
            if r.master:  # decay_budgets: a checkpoint where decays start is their branches' start
                save_predecay(r.ckpt_path, r.run_dir, r.predecay.get(done, []))
        if ddp and (is_ckpt or is_eval or done in r.predecay):
            torch.distributed.barrier()
        if stop_requested(r, stop_signals, is_log) and done < end_step:
            preempted(r, done, is_ckpt, stop_signals)
            return r.cfg, r.run_dir, []
        if reached:
            break
        t_log = t_log or time.time()  # ms_per_step counts training steps only, not evals or checkpoints
    finish(r, end_step, val_loss, time.time() - t0, sample=not branches)
    return r.cfg, r.run_dir, branches


def begin(r):
    r.log.event('train_begin', console=True, step=r.start_step, tokens=r.start_step * r.tokens_per_step,
                run_dir=r.run_dir, params=r.raw_model.num_params(), total_steps=r.total_steps,
                tokens_per_step=r.tokens_per_step, world_size=r.world, grad_accum=r.accum, device=r.dev, dtype=r.dtype,
                val_unigram_entropy=r.meta['splits'].get('val', {}).get('unigram_entropy'))
    if r.master:
        print('config: ' + json.dumps(r.cfg))
    r.model.train()


def get_batch(r, step, micro):
    # (seed, index) fixes the batch: rank k of W at micro m equals micro m*W + k of one process
    index = step * r.world * r.accum + micro * r.world + r.rank
    return to_device(objective_batch(r.cfg, r.train_data, index), r.dev, r.device_type)


def grad_sync(r, last):
    """Gradients are reduced across ranks on the last micro step only: DDP's no_sync before it; FSDP2 keeps them
    unsharded until then (one reduce-scatter). One process: nothing to do."""
    if r.fsdp:
        r.raw_model.set_requires_gradient_sync(last)
    return nullcontext() if (not r.ddp or r.fsdp or last) else r.model.no_sync()


def add_extras(r, loss):
    """objective_loss gives a loss, or (loss, extra scalars to log) (dpo): the extras go into r.extra."""
    if isinstance(loss, tuple):
        loss, ex = loss
        for k, v in ex.items():
            r.extra[k] = r.extra.get(k, 0) + v.detach()
    return loss


def skipped_nonfinite(r, step, step_loss, loss_before):
    """nonfinite='skip': True when the step's loss is not finite (on any rank); the step is then dropped and its
    losses leave the logged mean. One host sync per step, only in this mode."""
    if r.cfg['nonfinite'] != 'skip':
        return False
    if r.ddp:
        torch.distributed.all_reduce(step_loss, op=torch.distributed.ReduceOp.SUM)
    if torch.isfinite(step_loss):
        return False
    r.loss_sum.copy_(loss_before)
    if r.master:
        print(f"step {step + 1}: non-finite loss, step skipped (nonfinite='skip')", flush=True)
    r.log.event('skipped_step', step=step + 1, tokens=(step + 1) * r.tokens_per_step)
    return True


@torch.no_grad()
def evaluate(r):
    r.model.eval()
    losses, sums = [], {}
    for b in objective_eval_batches(r.cfg, r.val_data):
        with r.autocast:
            loss, counts = objective_eval(r.raw_model, to_device(b, r.dev, r.device_type), r.cfg, r.token_bytes)
        losses.append(loss.item())
        for k, v in counts.items():  # summed over the batches: bits per byte (lm), val_acc (records), dpo's scalars
            sums[k] = sums.get(k, 0) + v
    r.model.train()
    return sum(losses) / len(losses), eval_metrics(sums, len(losses))


def log_eval(r, done, val_loss, val_extra):
    r.log.event('evaluate', console=r.master, step=done, tokens=done * r.tokens_per_step, val_loss=round(val_loss, 5),
                val_ppl=round(math.exp(min(val_loss, 50)), 3), **val_extra)


def checkpoint(r, step):
    if r.fsdp:  # every rank gathers the whole tensors (collectives); rank 0 writes the same checkpoint as without
        model_state = full_state(r.raw_model.state_dict(keep_vars=True))  # (keep_vars: a tied weight stays one)
        opt_state = full_state(r.optimizer.state_dict())
    elif r.master:
        model_state, opt_state = r.raw_model.state_dict(), r.optimizer.state_dict()
    if not r.master:
        return
    state = {'model': model_state, 'optimizer': opt_state,
             'model_config': r.raw_model.config.to_dict(), 'tokenizer': r.tokenizer.spec, 'config': r.cfg,
             'step': step, 'tokens': step * r.tokens_per_step, 'rng_cpu': torch.get_rng_state()}
    if r.device_type == 'cuda':
        state['rng_cuda'] = torch.cuda.get_rng_state()
    if r.dpo_ref is not None:
        state['ref_ckpt'] = r.dpo_ref  # init_from='resume' scores the same reference again
    good = r.ckpt_path if os.path.exists(r.ckpt_path) else 'none'
    if not all(torch.isfinite(v).all() for v in model_state.values()):  # never overwrite good weights with NaN
        raise RunStopped(f"weights became non-finite by step {step}; not saved; last good checkpoint: {good}; "
                         f"lower learning_rate")
    try:
        save_checkpoint(r.ckpt_path, state)
    except OSError as e:
        raise RunStopped(save_error_message(r.ckpt_path, e)) from None


def log_train(r, done, lr, t_log, is_log):
    """The train event of the window since the last one (mean loss, speed, diagnostics), then a new window;
    the one host sync of a log step."""
    if r.ddp:
        torch.distributed.all_reduce(r.loss_sum, op=torch.distributed.ReduceOp.AVG)
    n, tokens = r.window_steps * r.accum, done * r.tokens_per_step
    train_loss = r.loss_sum.item() / n
    if not math.isfinite(train_loss):
        good = r.ckpt_path if os.path.exists(r.ckpt_path) else 'none (no checkpoint was written yet)'
        raise RunStopped(f"non-finite training loss ({train_loss}) between steps {done - r.window_steps} and {done}; "
                         f"last good checkpoint: {good}; lower learning_rate or raise warmup_iters")
    dt_s = time.time() - t_log
    tok_s = r.window_steps * r.tokens_per_step / dt_s
    rec = dict(step=done, tokens=tokens, loss=round(train_loss, 5), lr=lr, tok_per_s=round(tok_s, 1),
               ms_per_step=round(1000 * dt_s / r.window_steps, 2))
    if r.extra:
        ex = torch.stack(list(r.extra.values())).float()
        if r.ddp:
            torch.distributed.all_reduce(ex, op=torch.distributed.ReduceOp.AVG)
        rec.update({k: round(v / n, 5) for k, v in zip(r.extra, ex.tolist())})
    if r.device_type == 'cuda' and peak_flops_of(r.dev):
        rec['mfu'] = round(r.raw_model.flops_per_token() * tok_s / (r.world * peak_flops_of(r.dev)), 4)
    for name, t in r.raw_model.diagnostics.items():  # e.g. diff_input's delta norms
        t = t.float().flatten()
        rec.update({f'{name}_mean': t.mean().item(), f'{name}_std': t.std().item(),
                    f'{name}_min': t.min().item(), f'{name}_max': t.max().item()})
        r.log.histogram(f'diagnostics/{name}', t.cpu(), tokens)
    r.log.event('train', **rec)
    if r.master and is_log:
        print(f"step {done}/{r.total_steps} | loss {train_loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s"
              + (f" | acc {rec['acc']:.3f} | margin {rec['margin']:.3f}" if 'acc' in rec else '')
              + (f" | mfu {rec['mfu']:.1%}" if 'mfu' in rec else ''), flush=True)
        r.log.event('progress', console=False, step=done, tokens=tokens, frac=round(done / r.total_steps, 4))
    r.loss_sum, r.extra, r.window_steps = torch.zeros((), device=r.dev), {}, 0


def stop_requested(r, stop_signals, is_log):
    """A stop signal arrived (SIGTERM/SIGINT); under DDP the ranks agree at log steps (no extra syncs elsewhere)."""
    if not r.ddp:
        return bool(stop_signals)
    if not is_log:
        return False
    flag = torch.tensor([float(bool(stop_signals))], device=r.dev)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag.item() > 0


def preempted(r, done, is_ckpt, stop_signals):
    """A stop signal (SIGTERM/SIGINT on any rank): checkpoint, say how to continue, exit 0."""
    if not is_ckpt:
        checkpoint(r, done)
    if r.ddp:
        torch.distributed.barrier()
    name = stop_signals[0] if stop_signals else 'a stop signal on another rank'
    r.log.event('preempted', console=r.master, step=done, tokens=done * r.tokens_per_step, signal=name,
                checkpoint=r.ckpt_path)
    if r.master:
        print(f"received {name} at step {done}: checkpoint written to {r.ckpt_path}; "
              f"continue with --init_from=resume", flush=True)
    r.log.close()
    return r.run_dir


def finish(r, end_step, val_loss, elapsed, sample):
    """train_end, run figures and (sample: unless decay branches follow) the closing sample."""
    cfg = r.cfg
    if r.master and cfg['log_figures']:
        write_run_figures(r.run_dir, r.raw_model.diagnostics, r.log.tb)
    r.log.event('train_end', console=True, step=end_step, tokens=end_step * r.tokens_per_step,
                val_loss=None if val_loss is None else round(val_loss, 5), seconds=round(elapsed, 1), run_dir=r.run_dir)
    r.log.close()
    if sample and r.master and cfg['sample_tokens'] > 0 and cfg['n_encoder_layer'] == 0:  # sample.py prints it,
        print(f"--- sample ({cfg['sample_tokens']} tokens, from {r.ckpt_path}) ---", flush=True)  # from the checkpoint
        p = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sample.py'),
                            f'--ckpt={r.ckpt_path}', '--prompt=-', f"--max_new_tokens={cfg['sample_tokens']}",
                            '--temperature=0.8', '--top_k=50', f"--seed={cfg['seed']}", f"--device={r.dev}"],
                           input=cfg['sample_prompt'], text=True)  # the prompt goes in verbatim on stdin
        if p.returncode:
            raise RunStopped(f"training finished, but sampling from {r.ckpt_path} failed (exit {p.returncode})")


# ----------------------------------------------------------------------------- main

def main():
    cfg = configurator.configure(globals())
    if cfg['model_size']:  # the preset under the config files and --key=value (which win)
        cfg = apply_model_size(globals(), DEFAULTS)
    check_settings(cfg, int(os.environ.get('WORLD_SIZE', 1)) if 'RANK' in os.environ else 1)
    ddp, rank, _, world, dev = setup_distributed(cfg)
    master = rank == 0
    try:
        if cfg['branch']:  # one decay branch only, of the stable run these settings name
            cfg = resolve(cfg, world, master, ddp)[0]
            run_dir, budgets, redo = choose_run_dir(cfg), [cfg['branch']], cfg['init_from'] != 'resume'
        else:  # the run; when it reached its last decay start, every decay branch after it
            cfg, run_dir, budgets = train(cfg, ddp, rank, world, dev)
            redo = False
        for budget in budgets:
            bcfg = branch_config(cfg, run_dir, budget, batch_geometry(cfg, world)[1], redo, master)
            if ddp:  # rank 0 has set up the branch directory
                torch.distributed.barrier()
            if bcfg is not None:
                train(bcfg, ddp, rank, world, dev)
        # fsdp: the sharded model's hooks form reference cycles that keep it (and gloo work objects with tensors)
        # alive until interpreter teardown, where freeing them can abort the process: free them now
        gc.collect()
        if ddp:  # every rank done (rank 0 may still be sampling) before teardown: a gloo rank whose peer
            torch.distributed.barrier()  # closed its sockets first can abort at exit
        return run_dir
    finally:
        if ddp:
            torch.distributed.destroy_process_group()


if __name__ == '__main__':
    try:
        configurator.run_main(main)
    except RunStopped as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
