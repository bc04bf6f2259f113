"""Training objectives: how a split is opened, how micro batch `index` is drawn (a dict of tensors; the
loaders in data.py pad and mask), and the loss of a batch.

    lm        next-token prediction on token shards (+ algo_data: algorithmic records mixed in)
    seq2seq   source/target records: `src [SEP] tgt` in one sequence, or the encoder reads src
              (n_encoder_layer > 0); loss on target tokens only
    records   one whole sequence per row (field 'seq'), padded by the loader; a 'scored' field (0/1 per
              token) limits the loss to the tokens marked 1 (prepare/mqar.py: the queried values);
              evaluation also logs val_acc, the argmax accuracy on those tokens (scored_hits)
    dpo       preference pairs (prompt, chosen, rejected) against a frozen reference

The four dispatch functions below have one branch per objective; everything else of an objective
lives in the block named after it. train.py and eval_tasks.py use these; nothing here imports them.
"""
import os
import time
from contextlib import nullcontext

import numpy as np
import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from configurator import UserError
import data as datalib

OBJECTIVES = ('lm', 'seq2seq', 'records', 'dpo')

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


def objective_eval(model, b, cfg, token_bytes=None):
    """An evaluation batch: (loss, {counter: number} that eval_metrics turns into metrics once summed over the
    batches): lm with token_bytes counts nats and bytes (bits per byte), records the right argmax answers (val_acc),
    dpo its logged scalars (val_<name>: their mean over the batches)."""
    if cfg['objective'] == 'lm' and token_bytes is not None:
        logits, loss = model(b['x'], b['y'])
        nats, n_bytes = datalib.bpb_sums(logits, b['y'], token_bytes)
        return loss, {'nats': nats, 'bytes': n_bytes}
    if cfg['objective'] == 'records':
        logits, loss = model(b['x'], b['y'])
        hits, n = scored_hits(logits, b['y'])
        return loss, {'hits': hits, 'scored': n}
    loss = objective_loss(model, b, cfg)
    if isinstance(loss, tuple):  # (dpo) extra scalars
        return loss[0], {f'mean_{k}': v.item() for k, v in loss[1].items()}
    return loss, {}


def eval_metrics(sums, n_batches):
    """The metrics of objective_eval's counters summed over n_batches: val_bpb (lm), val_acc (records), val_<name>."""
    out = {f'val_{k[5:]}': round(v / n_batches, 5) for k, v in sums.items() if k.startswith('mean_')}
    if sums.get('bytes'):
        out['val_bpb'] = round(datalib.bits_per_byte(sums['nats'], sums['bytes']), 5)
    if sums.get('scored'):
        out['val_acc'] = round(sums['hits'] / sums['scored'], 5)
    return out


# ----------------------------------------------------------------------------- records

def scored_hits(logits, y):
    """records: (argmax right, tokens scored) over the positions with a target (y != -100), as ints: the
    teacher-forced accuracy on the scored tokens (val_acc; MQAR's recall accuracy)."""
    m = y != -100
    return int((logits.argmax(-1)[m] == y[m]).sum()), int(m.sum())


# ----------------------------------------------------------------------------- seq2seq

def seq2seq_form(cfg):
    """seq2seq: the encoder reads the source (n_encoder_layer > 0), else `src [SEP] tgt` in one sequence."""
    return 'encdec' if cfg['n_encoder_layer'] > 0 else 'concat'


# ----------------------------------------------------------------------------- lm: algo_data
# algo_data: a fraction algo_mix of the rows of each lm batch are algorithmic examples
# (prepare/algorithmic.py records), packed from a record boundary; (seed, index) still fixes the batch.
def open_algo_data(cfg, data_dir):
    path = os.path.join(cfg['data_root'], cfg['algo_data'])
    meta, main_meta = datalib.load_meta(path), datalib.load_meta(data_dir)
    if meta['tokenizer'] != main_meta['tokenizer'] or meta.get('block_size') != cfg['block_size']:
        raise UserError(f"algo_data {path} was made for another tokenizer or block_size ({meta.get('block_size')}); "
                        f"run python prepare/algorithmic.py --data={cfg['data']} --block_size={cfg['block_size']}")
    return datalib.read_records(os.path.join(path, 'train.bin'))


def algo_mix_batch(cfg, d, index):
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
