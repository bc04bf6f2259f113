"""Evaluate any checkpoint (eval-only): python eval_tasks.py <task> --ckpt=<run dir or .pt> [--key=value ...]

    python eval_tasks.py ppl --ckpt=out/quickstart_s1337 --data=stdlib --split=val --stride=64
    python eval_tasks.py preference --ckpt=out/dpo_quick --ref=out/sft_quick --data=stdlib_pairs_shuffle --split=test

Tasks: ppl (sliding-window perplexity), preference (DPO preference accuracy and margin on pairs). Each task is one function `task_<name>(model, tokenizer)`
reading the settings below; results print as a markdown table and are written as JSON to `out`.
"""
import json
import math
import os
import sys

import numpy as np
import torch

import configurator
from configurator import UserError
import data as datalib

ckpt = ''            # checkpoint file or run directory
data = 'stdlib'      # data set under data_root
data_root = 'data'
split = 'val'
stride = 0           # ppl: tokens scored per window after the first (0 = block_size: non-overlapping)
window = 0           # ppl: context length (0 = the model's block_size)
max_tokens = 0       # ppl: score at most this many tokens (0 = the whole split)
batch_size = 8
device = 'auto'
out = ''             # JSON results path ('' = <run dir>/eval_<task>.json when ckpt is a run dir)
ref = ''             # preference: reference checkpoint ('' = none: rewards are beta * log pi alone)
beta = 0.1           # preference: implicit reward scale, as in training
length_normalize = False  # preference: average response log-probs over tokens
seq_max_len = 0      # preference: prompt+response tokens (0 = block_size + 1); prompts cut from the left
max_pairs = 0        # preference: score at most this many pairs (0 = the whole split)


@torch.no_grad()
def sliding_window_nll(model, tokens, window, stride, batch_size, device):
    """Sum of -log p and count over `tokens` (1-D), every token after the first scored once.

    The first window scores all its positions; each later window advances by `stride` and scores
    only its last `stride` positions, which then see window - stride tokens of context. With
    stride == window this is the training loop's non-overlapping evaluation."""
    n = len(tokens)
    if n < 2:
        raise UserError("fewer than 2 tokens to score")
    windows, begin, scored_upto = [], 0, 0   # (start, length, first scored position)
    while True:
        m = min(window, n - 1 - begin)
        windows.append((begin, m, max(0, scored_upto - begin)))  # target of position j is token begin+j+1
        scored_upto = begin + m
        if scored_upto >= n - 1:
            break
        begin += stride
    nll, count = 0.0, 0
    model.eval()
    for i in range(0, len(windows), batch_size):
        group = windows[i:i + batch_size]
        L = max(m for _, m, _ in group)
        x = torch.zeros(len(group), L, dtype=torch.long)
        y = torch.full((len(group), L), -100, dtype=torch.long)
        for r, (b, m, first) in enumerate(group):
            seg = torch.from_numpy(np.asarray(tokens[b:b + m + 1], dtype=np.int64))
            x[r, :m] = seg[:-1]
            y[r, first:m] = seg[1 + first:]
        logits, _ = model(x.to(device))
        lp = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y.to(device), ignore_index=-100,
                                               reduction='sum')
        nll += lp.item()
        count += int((y != -100).sum())
    return nll, count


def task_ppl(model, tokenizer, ckpt_meta):
    bs = model.config.block_size
    w = window or bs
    if w > bs and model.config.pos_emb == 'learned':
        raise UserError(f"window={w} is longer than block_size={bs}, the limit of learned positions")
    s = stride or w
    if not 0 < s <= w:
        raise UserError(f"stride must be in 1..window ({w}), got {s}")
    data_dir = os.path.join(data_root, data)
    check_same_tokenizer(data_dir, ckpt_meta['tokenizer'])
    shards = datalib.open_split(data_dir, split, model.config.vocab_size)
    dev = next(model.parameters()).device
    nll, count = 0.0, 0
    budget = max_tokens or None
    for sh in shards:
        toks = sh if budget is None else sh[:budget + 1]
        a, c = sliding_window_nll(model, toks, w, s, batch_size, dev)
        nll, count = nll + a, count + c
        if budget is not None:
            budget -= c
            if budget <= 0:
                break
    loss = nll / count
    return {'task': 'ppl', 'data': data, 'split': split, 'window': w, 'stride': s, 'tokens': count,
            'loss': round(loss, 5), 'ppl': round(math.exp(loss), 4)}


def task_preference(model, tokenizer, ckpt_meta):
    """Preference accuracy and mean margin of the checkpoint against `ref` on <split>_pairs of a pairs set.

    With a reference, rewards are DPO's implicit beta * (log pi - log ref) (a model against itself ties on
    every pair: accuracy 0.5, margin 0). logp_accuracy is reference-free: how often the model alone gives
    the chosen response the higher (summed or length-normalized) log-probability."""
    from train import dpo_loss, dpo_score, load_checkpoint, model_from_checkpoint
    data_dir = os.path.join(data_root, data)
    check_same_tokenizer(data_dir, ckpt_meta['tokenizer'])
    recs = datalib.open_pairs(data_dir, split)
    n = min(len(recs), max_pairs) if max_pairs > 0 else len(recs)
    recs = [recs[i] for i in range(n)]
    L = seq_max_len or model.config.block_size + 1
    pad = datalib.load_meta(data_dir)['pad_id']
    dev = next(model.parameters()).device
    logp, count = dpo_score(model, recs, pad, L, batch_size, dev)
    ref_logp = torch.zeros_like(logp)
    if ref:
        rc = load_checkpoint(ref)
        if rc['tokenizer'] != ckpt_meta['tokenizer']:
            raise UserError(f"reference '{ref}' uses another tokenizer than the checkpoint; compare models of one data set")
        ref_model, _ = model_from_checkpoint(rc)
        ref_logp, _ = dpo_score(ref_model.to(dev), recs, pad, L, batch_size, dev)
    flat = lambda t: torch.cat([t[:, 0], t[:, 1]])  # chosen rows first, as in training batches
    loss, ex = dpo_loss(flat(logp), flat(ref_logp), flat(count), beta, length_normalize)
    own = logp / count if length_normalize else logp
    logp_acc = ((own[:, 0] > own[:, 1]).float() + 0.5 * (own[:, 0] == own[:, 1]).float()).mean()
    return {'task': 'preference', 'data': data, 'split': split, 'pairs': n, 'ref': ref or 'none', 'beta': beta,
            'length_normalize': length_normalize, 'accuracy': round(ex['acc'].item(), 4),
            'margin': round(ex['margin'].item(), 4), 'reward_chosen': round(ex['reward_chosen'].item(), 4),
            'reward_rejected': round(ex['reward_rejected'].item(), 4), 'dpo_loss': round(loss.item(), 4),
            'logp_accuracy': round(logp_acc.item(), 4)}


def check_same_tokenizer(data_dir, spec):
    meta = datalib.load_meta(data_dir)
    if meta['tokenizer'] != spec:
        raise UserError(f"data set {data_dir} was tokenized with '{meta['tokenizer'].get('kind')}' but the checkpoint "
                        f"uses a different tokenizer ('{spec.get('kind')}'); evaluate on data prepared with its tokenizer")


def markdown_table(rows):
    keys = list(rows[0])
    lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    lines += ['| ' + ' | '.join(str(r.get(k, '')) for k in keys) + ' |' for r in rows]
    return '\n'.join(lines)


TASKS = {'ppl': task_ppl, 'preference': task_preference}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        given = sys.argv[1] if len(sys.argv) > 1 else '(none)'
        raise UserError(f"unknown task '{given}'; usage: python eval_tasks.py <{'|'.join(TASKS)}> --ckpt=... [--key=value]")
    task = sys.argv[1]
    configurator.configure(globals(), sys.argv[2:])
    from train import load_checkpoint, model_from_checkpoint
    if not ckpt:
        raise UserError("no checkpoint given; pass --ckpt=<run dir or .pt file>")
    c = load_checkpoint(ckpt)
    model, tokenizer = model_from_checkpoint(c)
    dev = device if device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    model.to(dev)
    result = TASKS[task](model, tokenizer, c)
    rows = result if isinstance(result, list) else [result]
    print(markdown_table(rows))
    path = out or (os.path.join(ckpt, f'eval_{task}.json') if os.path.isdir(ckpt) else '')
    if path:
        with open(path + '.tmp', 'w') as f:
            json.dump(result, f, indent=2)
        os.replace(path + '.tmp', path)
        print(f"wrote {path}")
    return result


if __name__ == '__main__':
    configurator.run_main(main)
