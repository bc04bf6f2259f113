"""Evaluate any checkpoint (eval-only): python eval_tasks.py <task> --ckpt=<run dir or .pt> [--key=value ...]

    python eval_tasks.py ppl --ckpt=out/quickstart_s1337 --data=stdlib --split=val --stride=64
    python eval_tasks.py preference --ckpt=out/dpo_quick --ref=out/sft_quick --data=stdlib_pairs_shuffle --split=test
    python eval_tasks.py hellaswag --ckpt=out/gpt2_124m --limit=1000        # or --source=hellaswag_val.jsonl

Tasks: ppl (sliding-window perplexity and bits per byte); hellaswag (zero-shot accuracy: acc and
acc_norm); seq2seq (target perplexity for encoder-decoder and decoder-only alike, ROUGE of generated
summaries, decoded samples); numeric (per-type accuracy and
exact match on prepare/numeric.py's sequences, at training and longer lengths); preference (DPO
preference accuracy and margin of a checkpoint against a reference on pairs); algorithmic (six
tasks, greedy exact match in and out of distribution, perplexity by position out to 4x the context):

    python eval_tasks.py algorithmic --ckpt=out/pe_study/pe_rope_s1 --data=stdlib --algo_n=100 --algo_fewshot=2

Each task is one function `task_<name>(model, tokenizer)` reading the settings below; results
print as a markdown table and are written as JSON to `out`.
"""
import json
import math
import os
import sys

import numpy as np
import torch

import configurator
from configurator import Match, OneOf, Range, Text, UserError
import data as datalib

ckpt: Text('checkpoint file or run directory') = ''
data: Text('data set name under data_root') = 'stdlib'
data_root: Text('folder of data sets') = 'data'
split: Text('split name (val, test, ...)') = 'val'  # hellaswag: 'val' = the source's validation split
stride: Range(0) = 0        # ppl: tokens scored per window after the first (0 = window: non-overlapping)
window: Range(0) = 0        # ppl: context length (0 = the model's block_size)
max_tokens: Range(0) = 0    # ppl: score at most this many tokens (0 = the whole split)
batch_size: Range(1) = 8
device: Match(r'auto|cpu|mps|cuda(:\d+)?', "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") = 'auto'
out: Text('JSON results path') = ''  # '' = <run dir>/eval_<task>.json when ckpt is a run dir
algo_n: Range(1) = 50       # algorithmic: examples per task and per split (in / out of distribution)
algo_fewshot: Range(0) = 0  # algorithmic: solved examples of the same task before each query
algo_seed: Range(0) = 4321  # algorithmic: examples differ from prepare/algorithmic.py's (seed 1337)
algo_ppl_windows: Range(1) = 8  # algorithmic: val windows of 4x the context for perplexity by position
ref: Text('reference checkpoint or run dir') = ''  # preference: '' = none: rewards are beta * log pi alone
beta: Range(0, lo_open=True) = 0.1  # preference: implicit reward scale, as in training
length_normalize: bool = False  # preference: average response log-probs over tokens
seq_max_len: Range(0) = 0   # preference: prompt+response tokens (0 = block_size + 1); prompts cut from the left
max_pairs: Range(0) = 0     # preference: score at most this many pairs (0 = the whole split)

@torch.no_grad()
def sliding_window_nll(model, tokens, window, stride, batch_size, device, token_bytes=None):
    """Sum of -log p and count over `tokens` (1-D), every token after the first scored once; with
    token_bytes (data.token_bytes) also the nats and UTF-8 bytes of bits per byte (data.bpb_sums).

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
    nll, count, nats, n_bytes = 0.0, 0, 0.0, 0
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
        if token_bytes is not None:
            a, c = datalib.bpb_sums(logits, y.to(device), token_bytes)
            nats, n_bytes = nats + a, n_bytes + c
    return (nll, count) if token_bytes is None else (nll, count, nats, n_bytes)


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
    tb = datalib.token_bytes(tokenizer, model.config.vocab_size)  # None: a tokenizer of non-text values
    sums = np.zeros(4)  # nll, tokens, and bits per byte's nats and bytes
    budget = max_tokens or None
    for sh in shards:
        toks = sh if budget is None else sh[:budget + 1]
        got = sliding_window_nll(model, toks, w, s, batch_size, dev, tb)
        sums[:len(got)] += got
        if budget is not None:
            budget -= got[1]
            if budget <= 0:
                break
    loss = sums[0] / sums[1]
    res = {'task': 'ppl', 'data': data, 'split': split, 'window': w, 'stride': s, 'tokens': int(sums[1]),
           'loss': round(loss, 5), 'ppl': round(math.exp(loss), 4)}
    if sums[3]:  # special tokens (<|endoftext|>) carry no bytes: left out of bits per byte (data.bpb_sums)
        res.update(bytes=int(sums[3]), bpb=round(datalib.bits_per_byte(sums[2], sums[3]), 5))
    return res


def task_preference(model, tokenizer, ckpt_meta):
    """Preference accuracy and mean margin of the checkpoint against `ref` on <split>_pairs of a pairs set.

    With a reference, rewards are DPO's implicit beta * (log pi - log ref) (a model against itself ties on
    every pair: accuracy 0.5, margin 0). logp_accuracy is reference-free: how often the model alone gives
    the chosen response the higher (summed or length-normalized) log-probability."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    from objectives import dpo_loss, dpo_score
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
    keys = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict))]  # samples etc. stay in the JSON
    lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    lines += ['| ' + ' | '.join(str(r.get(k, '')) for k in keys) + ' |' for r in rows]
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- seq2seq (n_encoder_layer study)
# Perplexity on held-out targets, scored identically for both architectures: the tokens of each
# target plus its <|endoftext|>, given the source (through the encoder, or as context before
# [SEP]; a model trained on raw text continues the source with no [SEP]). Decoder-only models
# trained on raw text also get whole-document perplexity. Greedy generation -> ROUGE-1/2/L.
max_records: Range(0) = 0   # seq2seq, numeric: score at most this many records per split (0 = all)
generate: Range(0) = 0      # seq2seq: generate for the first N records and score ROUGE-1/2/L against the targets
max_new_tokens: Range(1) = 64  # seq2seq: generation length limit (stops at <|endoftext|>)
num_samples: Range(0) = 3   # seq2seq: decoded samples kept in the results
form: OneOf(('auto',) + tuple(datalib.SEQ2SEQ_FORMS)) = 'auto'  # seq2seq: auto = encdec; concat if trained with
                            # objective=seq2seq; else lm


def seq2seq_form_of(model, ckpt_meta):
    if form != 'auto':
        if form not in datalib.SEQ2SEQ_FORMS:
            raise UserError(f"unknown form '{form}'; valid: auto, {', '.join(datalib.SEQ2SEQ_FORMS)}")
        return form
    if model.config.n_encoder_layer:
        return 'encdec'
    return 'concat' if ckpt_meta.get('config', {}).get('objective') == 'seq2seq' else 'lm'


@torch.no_grad()
def seq2seq_nll(model, recs, f, n_records, batch, device, score_source=False):
    """Sum of -log p and the number of scored tokens over the first n_records records."""
    model.eval()
    nll, count = 0.0, 0
    for b in datalib.iter_seq2seq_eval_batches(recs, f, model.config.block_size, batch, math.ceil(n_records / batch),
                                               score_source):
        b = {k: v.to(device) for k, v in b.items()}
        logits, _ = model(b['x'], src=b.get('src'))
        nll += torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), b['y'], ignore_index=-100,
                                                 reduction='sum').item()
        count += int((b['y'] != -100).sum())
    return nll, count


@torch.no_grad()
def seq2seq_generate(model, src, f, ids, n_new, device):
    """Greedy continuation for one source (the target's start token, or src [SEP]) up to <|endoftext|>."""
    bs = model.config.block_size
    src = [int(t) for t in src]
    if f == 'encdec':
        x, s = [ids['sep']], torch.tensor([src[-bs:]], device=device)
    else:
        x, s = ([ids['eot']] + src if f == 'lm' else src + [ids['sep']])[-bs:], None
    out = model.generate(torch.tensor([x], device=device), n_new, temperature=0, src=s)[0, len(x):].tolist()
    return out[:out.index(ids['eot'])] if ids['eot'] in out else out


def rouge_f1(preds, refs):
    """Mean ROUGE-1/2/L F1 (x100) from the maintained rouge-score package (Google's, stemming on)."""
    from rouge_score import rouge_scorer
    sc = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)
    scores = [sc.score(r, p) for p, r in zip(preds, refs)]
    return {k: round(100 * sum(s[k].fmeasure for s in scores) / max(len(scores), 1), 2)
            for k in ('rouge1', 'rouge2', 'rougeL')}


def task_seq2seq(model, tokenizer, ckpt_meta):
    data_dir = os.path.join(data_root, data)
    check_same_tokenizer(data_dir, ckpt_meta['tokenizer'])
    recs = datalib.open_seq2seq(data_dir, split, model.config.vocab_size)
    f = seq2seq_form_of(model, ckpt_meta)
    if model.config.n_encoder_layer and f != 'encdec':
        raise UserError(f"form='{f}' needs a decoder-only checkpoint; this one has n_encoder_layer={model.config.n_encoder_layer}")
    dev = next(model.parameters()).device
    n = min(len(recs), max_records or len(recs))
    nll, count = seq2seq_nll(model, recs, f, n, batch_size, dev)
    res = {'task': 'seq2seq', 'data': data, 'split': split, 'form': f, 'records': n, 'target_tokens': count,
           'target_loss': round(nll / count, 5), 'target_ppl': round(math.exp(nll / count), 4)}
    if f == 'lm':  # raw-text model: every token of the document (source, target, end) scored too
        dn, dc = seq2seq_nll(model, recs, f, n, batch_size, dev, score_source=True)
        res.update(document_tokens=dc, document_ppl=round(math.exp(dn / dc), 4))
    k = min(max(generate, num_samples), n)
    preds = [seq2seq_generate(model, recs[i]['src'], f, recs.ids, max_new_tokens, dev) for i in range(k)]
    if generate > 0:
        res.update(rouge_f1([tokenizer.decode(p) for p in preds[:generate]],
                            [tokenizer.decode(recs[i]['tgt']) for i in range(min(generate, n))]))
        res['generated'] = min(generate, n)
    res['samples'] = [{'source': tokenizer.decode(recs[i]['src']), 'reference': tokenizer.decode(recs[i]['tgt']),
                       'generated': tokenizer.decode(preds[i])} for i in range(min(num_samples, k))]
    return res


# ----------------------------------------------------------------------------- numeric (prepare/numeric.py)
# Each test sequence is [sep, x1..xL]: the first `prompt_values` values are context, the rest is scored:
# loss and next-token accuracy teacher-forced, and exact match of the greedy continuation generated
# through model.generate (KV cache, or the recurrent state of attn='linear').
prompt_values: Range(0) = 4  # numeric: values given before the scored continuation
numeric_splits: Match(r'\w+(,\w+)*', "comma-separated split names, e.g. 'test,test_long'") = 'test,test_long'
                            # numeric: records splits to score (test_long = longer than training)


@torch.no_grad()
def numeric_scores(model, recs, n_types, k, batch_size, device):
    """Per type: [records, scored tokens, nll sum, correct next tokens, exact continuations]."""
    model.eval()
    bs = model.config.block_size
    acc = np.zeros((n_types, 5))
    for i in range(0, len(recs), batch_size):
        rows = [recs[j] for j in range(i, min(i + batch_size, len(recs)))]
        seqs = [np.asarray(r['seq'], dtype=np.int64) for r in rows]
        if min(len(s) for s in seqs) < k + 2:
            raise UserError(f"a sequence has fewer than prompt_values+1={k + 1} values: lower --prompt_values")
        if max(len(s) for s in seqs) > bs + 1:
            raise UserError(f"{recs.path} has sequences of {max(len(s) for s in seqs)} tokens, more than the model's "
                            f"block_size+1={bs + 1}: generation would slide its window; evaluate shorter lengths")
        x, y = datalib.records_xy(seqs, recs.pad_id, bs)
        y[:, :k] = -100  # the prompt is context, not scored
        x, y = x.to(device), y.to(device)
        logits, _ = model(x)
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y, ignore_index=-100, reduction='none')
        mask = y != -100
        correct = (logits.argmax(-1) == y) & mask
        gen = model.generate(x[:, :k + 1], max(len(s) for s in seqs) - k - 1, temperature=0)
        for r, (rec, s) in enumerate(zip(rows, seqs)):
            t = int(rec['type'][0])
            exact = torch.equal(gen[r, k + 1:len(s)].cpu(), torch.from_numpy(s[k + 1:]))
            acc[t] += [1, mask[r].sum().item(), nll[r].sum().item(), correct[r].sum().item(), exact]
    return acc


def numeric_rows(acc, types, split_name, lengths):
    """Markdown/JSON rows from numeric_scores' counts: one per type, then 'all'."""
    rows = []
    for name, a in list(zip(types, acc)) + [('all', acc.sum(0))]:
        n, tok, nll, cor, ex = a
        rows.append({'split': split_name, 'lengths': lengths, 'type': name, 'sequences': int(n),
                     'loss': round(nll / max(tok, 1), 4), 'next_acc': round(cor / max(tok, 1), 4),
                     'exact': round(ex / max(n, 1), 4)})
    return rows


def task_numeric(model, tokenizer, ckpt_meta):
    data_dir = os.path.join(data_root, data)
    check_same_tokenizer(data_dir, ckpt_meta['tokenizer'])
    meta = datalib.load_meta(data_dir)
    if 'types' not in meta:
        raise UserError(f"{data_dir} is not a numeric data set (no 'types' in meta.json): pass --data=numeric")
    dev = next(model.parameters()).device
    rows = []
    for sp in [s.strip() for s in numeric_splits.split(',') if s.strip()]:
        recs = datalib.open_records(data_dir, sp, model.config.vocab_size)
        if max_records:
            recs.offsets = recs.offsets[:max_records]
        lens = [len(recs[i]['seq']) - 1 for i in range(len(recs))]
        acc = numeric_scores(model, recs, len(meta['types']), prompt_values, batch_size, dev)
        rows += numeric_rows(acc, meta['types'], sp, f'{min(lens)}-{max(lens)}')
    return rows


# ----------------------------------------------------------------------------- algorithmic
# Six tasks with a length or distance knob; in-distribution (id) and out-of-distribution (ood)
# ranges are disjoint. Items are single digits or letters separated by spaces, so every tokenizer
# splits them the same way; an answer ends with a newline. passkey and copy_distance put filler
# tokens (a data set's text) between the information and the question: their knob is the length
# of the whole example as a multiple of the training context (1x fits it exactly).
ALGO_TASKS = {
    'passkey': ((0.25, 0.5, 0.75, 1.0), (1.5, 2.0)),
    'copy_distance': ((0.25, 0.5, 0.75, 1.0), (1.5, 2.0)),
    'reverse': (tuple(range(3, 9)), tuple(range(9, 17))),
    'sort': (tuple(range(3, 7)), tuple(range(7, 11))),
    'no_carry_add': (tuple(range(2, 6)), tuple(range(6, 9))),
    'simple_copy': (tuple(range(4, 13)), tuple(range(13, 21))),
}
ALGO_DIGITS, ALGO_LETTERS = '0123456789', 'abcdefghijklmnopqrstuvwxyz'


def algo_items(rng, n, unique=False):
    alphabet = ALGO_DIGITS if rng.random() < 0.5 else ALGO_LETTERS
    return list(rng.choice(list(alphabet), size=n, replace=not unique))


def algo_text(task, rng, knob):
    """(head, tail, answer) of one example: the prompt is head + filler + tail (filler only for the
    distance tasks), the answer is what follows it (without the final newline)."""
    say = lambda xs: ' ' + ' '.join(xs)
    if task == 'passkey':
        code = list(rng.choice(list(ALGO_DIGITS), size=int(rng.integers(1, 6))))
        return f"pass key{say(code)} .\n", "\npass key ? =", say(code)
    if task == 'copy_distance':
        items = algo_items(rng, 5)
        return f"items{say(items)} .\n", "\ncopy items =", say(items)
    if task == 'reverse':
        items = algo_items(rng, knob)
        return f"reverse :{say(items)} =", '', say(items[::-1])
    if task == 'sort':
        items = algo_items(rng, knob, unique=True)
        return f"sort :{say(items)} =", '', say(sorted(items))
    if task == 'simple_copy':
        items = algo_items(rng, knob)
        return f"copy :{say(items)} =", '', say(items)
    if task == 'no_carry_add':  # digits 0-4 (leading 1-4): no digit sum carries
        a, b = ([str(rng.integers(1, 5))] + [str(d) for d in rng.integers(0, 5, knob - 1)] for _ in range(2))
        return f"add :{say(a)} +{say(b)} =", '', say([str(int(x) + int(y)) for x, y in zip(a, b)])
    raise UserError(f"unknown algorithmic task '{task}'; tasks: {', '.join(ALGO_TASKS)}")


def algo_example(task, split, rng, tokenizer, context, filler=None, knob=None):
    """(prompt token ids, answer text) of one example of `task` from the 'id' or 'ood' range.
    Distance tasks take len(prompt + answer + newline) = knob * context tokens of filler from the
    1-D token array `filler` (knob=0: no filler, used for few-shot examples)."""
    if knob is None:
        choices = ALGO_TASKS[task][0 if split == 'id' else 1]
        knob = choices[int(rng.integers(len(choices)))]
    head, tail, answer = algo_text(task, rng, knob)
    h, t = tokenizer.encode(head), tokenizer.encode(tail)
    if task in ('passkey', 'copy_distance') and knob > 0:
        if filler is None:
            raise UserError(f"task {task} needs filler text: a data set with a val/train split")
        # (at least no filler: at a short context the example alone can be longer than knob * context)
        n = max(0, int(round(knob * context)) - len(h) - len(t) - len(tokenizer.encode(answer + '\n')))
        if n > len(filler):
            raise UserError(f"filler of {len(filler)} tokens cannot make a {task} example of {knob}x{context} tokens; "
                            f"use a larger data set or a larger context")
        o = int(rng.integers(0, len(filler) - n + 1))
        h = h + [int(x) for x in filler[o:o + n]]
    return h + t, answer


def algo_fewshot_prefix(task, rng, tokenizer, k):
    """k solved in-distribution examples (distance tasks without filler), one per line."""
    ids = []
    for _ in range(k):
        prompt, answer = algo_example(task, 'id', rng, tokenizer, 0, knob=0 if task in ('passkey', 'copy_distance')
                                      else None)
        ids += prompt + tokenizer.encode(answer + '\n')
    return ids


def exact_match(prediction, answer):
    """Greedy output up to its first newline equals the answer (surrounding spaces ignored)."""
    return prediction.split('\n')[0].strip() == answer.strip()


@torch.no_grad()
def greedy_continuation(model, tokenizer, prompt_ids, answer, max_new):
    """Greedy decoding with the KV cache over the whole prompt (also past block_size: positions are not
    cropped). Stops at a newline, or as soon as the text can no longer equal answer + newline."""
    dev = next(model.parameters()).device
    caches = [dict() for _ in model.h]
    n = len(prompt_ids)
    # pos_random: one draw of positions for prompt and answer, read slice by slice (as GPT.generate does)
    span = model.position_ids(0, n + max_new, dev) if model.config.pos_random else None
    at = lambda a, b: None if span is None else span[..., a:b]  # noqa: E731
    logits = model.lm_head(model.hidden(torch.tensor([prompt_ids], device=dev), 0, caches, pos=at(0, n))[:, -1])
    out, pos, target = [], n, answer + '\n'
    for _ in range(max_new):
        out.append(int(logits.argmax(-1)))
        text = tokenizer.decode(out)
        if '\n' in text or not target.startswith(text):
            break
        logits = model.lm_head(model.hidden(torch.tensor([[out[-1]]], device=dev), pos, caches, pos=at(pos, pos + 1))[:, -1])
        pos += 1
    return tokenizer.decode(out)


def algorithmic_accuracy(model, tokenizer, filler, n, fewshot=0, seed=0):
    """Rows {task, in_dist, out_dist, n}: greedy exact-match accuracy per task. Examples longer than
    block_size count as not evaluable for learned positions (None when none was)."""
    model.eval()
    bs, rows = model.config.block_size, []
    for ti, task in enumerate(ALGO_TASKS):
        row = {'task': task}
        for split in ('id', 'ood'):
            rng = np.random.Generator(np.random.PCG64([seed, ti, split == 'ood']))
            hits = total = 0
            for _ in range(n):
                prompt, answer = algo_example(task, split, rng, tokenizer, bs, filler)
                prompt = algo_fewshot_prefix(task, rng, tokenizer, fewshot) + prompt
                if model.config.pos_emb == 'learned' and len(prompt) + len(tokenizer.encode(answer)) > bs:
                    continue
                pred = greedy_continuation(model, tokenizer, prompt, answer, len(tokenizer.encode(answer + '\n')) + 1)
                hits += exact_match(pred, answer)
                total += 1
            row['in_dist' if split == 'id' else 'out_dist'] = round(hits / total, 4) if total else None
        row['n'] = n
        rows.append(row)
    return rows


@torch.no_grad()
def loss_by_position(model, tokens, context, n_windows, batch_size=4):
    """Mean loss at each position 0..context-1 of up to n_windows windows (non-overlapping, from
    the start of `tokens`), each scored in one forward pass of `context` tokens."""
    n_windows = min(n_windows, (len(tokens) - 1) // context)
    if n_windows < 1:
        raise UserError(f"{len(tokens)} tokens are fewer than one window of {context + 1}; use more data")
    model.eval()
    dev = next(model.parameters()).device
    total = torch.zeros(context)
    for i in range(0, n_windows, batch_size):
        rows = [np.asarray(tokens[w * context:w * context + context + 1], dtype=np.int64)
                for w in range(i, min(i + batch_size, n_windows))]
        buf = torch.from_numpy(np.stack(rows)).to(dev)
        logits, _ = model(buf[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), buf[:, 1:], reduction='none')
        total += loss.sum(0).cpu()
    return (total / n_windows).tolist()


def position_perplexity(model, tokens, n_windows):
    """Perplexity of positions [0, 1x), [1x, 2x), [2x, 4x) of the training context, from windows of 4x
    (1x only for learned positions), and the per-position loss curve."""
    bs = model.config.block_size
    span = bs if model.config.pos_emb == 'learned' else 4 * bs
    curve = loss_by_position(model, tokens, span, n_windows)
    ppl = {}
    for name, (a, b) in (('1x', (0, bs)), ('2x', (bs, 2 * bs)), ('4x', (2 * bs, 4 * bs))):
        ppl[name] = round(math.exp(sum(curve[a:b]) / (b - a)), 3) if b <= span else None
    return ppl, curve


def task_algorithmic(model, tokenizer, ckpt_meta):
    data_dir = os.path.join(data_root, data)
    check_same_tokenizer(data_dir, ckpt_meta['tokenizer'])
    val = np.concatenate([np.asarray(s) for s in datalib.open_split(data_dir, split, model.config.vocab_size)])
    rows = algorithmic_accuracy(model, tokenizer, val, algo_n, algo_fewshot, algo_seed)
    ppl, curve = position_perplexity(model, val, algo_ppl_windows)
    rows += [{'task': 'ppl_1x', 'in_dist': ppl['1x'], 'out_dist': '', 'n': algo_ppl_windows},
             {'task': 'ppl_2x', 'in_dist': '', 'out_dist': ppl['2x'], 'n': algo_ppl_windows},
             {'task': 'ppl_4x', 'in_dist': '', 'out_dist': ppl['4x'], 'n': algo_ppl_windows, 'loss_by_position': curve}]
    return rows


# ----------------------------------------------------------------------------- hellaswag
# Zero-shot HellaSwag (Zellers et al. 2019): a context and 4 endings, one of them right. Each ending is
# scored by the model's loss on its tokens given <|endoftext|> + ctx, the ending tokenized as ' ' + ending
# (as build-nanogpt does; <|endoftext|> starts every document in training, and gives an empty context a
# token to predict from). acc: the ending of the lowest summed loss (highest log-likelihood; lm-eval-harness's
# acc). acc_norm: the lowest mean loss per ending token (build-nanogpt's normalization; lm-eval-harness's
# acc_norm divides by the ending's length in characters instead). No text preprocessing (lm-eval-harness
# strips markers such as '[title]'), no few-shot examples. Chance is 0.25.
source: Text('hub id, or local .jsonl/.parquet with ctx, endings, label') = 'Rowan/hellaswag'  # hellaswag
limit: Range(0) = 0         # hellaswag: score the first N examples (0 = all; the validation split has 10,042)

HELLASWAG_FIELDS = ('ctx', 'endings', 'label')


def hellaswag_examples(src, split_name, n=0):
    """[(ctx, [4 endings], label)] of a local .jsonl/.parquet file or folder (one split), or a hub split."""
    import datasets
    datasets.disable_progress_bars()
    if src.endswith(('.jsonl', '.parquet')) and not os.path.exists(src):
        raise UserError(f"--source={src}: no such file; pass a local .jsonl/.parquet file or folder, or a hub id")
    if os.path.exists(src):
        paths = [src] if os.path.isfile(src) else sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)
        paths = [p for p in paths if p.endswith(('.jsonl', '.parquet'))]
        kinds = {p.rsplit('.', 1)[1] for p in paths}
        if len(kinds) != 1:
            raise UserError(f"--source={src} must be a .jsonl or .parquet file, or a folder of one kind (found "
                            f"{sorted(kinds) or 'none'}), with the fields {', '.join(HELLASWAG_FIELDS)}")
        try:
            ds = datasets.load_dataset('json' if kinds == {'jsonl'} else 'parquet', data_files=paths, split='train')
        except Exception as e:
            raise UserError(f"cannot read --source={src} ({datalib.first_line(e)}): check the files") from None
    else:
        ds = datalib.load_hub(src, split=split_name, fields=HELLASWAG_FIELDS)
    missing = [f for f in HELLASWAG_FIELDS if f not in ds.column_names]
    if missing:
        raise UserError(f"--source={src} lacks the field(s) {missing} (has {', '.join(ds.column_names)}): "
                        f"HellaSwag rows have ctx, endings (4 strings) and label (0-3)")
    out = []
    for i, r in enumerate(ds.select(range(min(n, len(ds)))) if n else ds):
        label = r['label']
        if label in ('', None):  # the hub's test split hides its labels
            raise UserError(f"example {i} of --source={src} has no label (HellaSwag's test split is unlabeled): "
                            f"use the validation split (--split=val)")
        if len(r['endings']) != 4 or str(label) not in ('0', '1', '2', '3'):
            raise UserError(f"example {i} of --source={src} needs 4 endings and a label 0-3, got "
                            f"{len(r['endings'])} endings and label {label!r}")
        out.append((r['ctx'], list(r['endings']), int(label)))
    if not out:
        raise UserError(f"--source={src} holds no examples")
    return out


@torch.no_grad()
def hellaswag_losses(model, tokenizer, ctx, endings):
    """(summed loss, token count) of each ending's tokens given <|endoftext|> + ctx, the endings in one batch.
    A sequence longer than block_size + 1 loses context tokens from the left, never ending tokens."""
    dev = next(model.parameters()).device
    bs = model.config.block_size
    context = [tokenizer.eot_id] + tokenizer.encode(ctx)
    rows = []
    for e in endings:
        end = tokenizer.encode(' ' + e)
        seq = (context + end)[-(bs + 1):]
        rows.append((seq, min(len(end), len(seq) - 1)))
    L = max(len(seq) for seq, _ in rows) - 1
    x = torch.zeros(len(rows), L, dtype=torch.long)
    y = torch.full((len(rows), L), -100, dtype=torch.long)
    for i, (seq, n) in enumerate(rows):  # right padding: causal attention keeps it out of the scored positions
        t = torch.tensor(seq)
        x[i, :len(seq) - 1] = t[:-1]
        y[i, len(seq) - 1 - n:len(seq) - 1] = t[-n:]
    logits, _ = model(x.to(dev))
    loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y.to(dev), ignore_index=-100,
                                             reduction='none')
    return loss.sum(1).tolist(), (y != -100).sum(1).tolist()


def task_hellaswag(model, tokenizer, ckpt_meta):
    if tokenizer.spec.get('kind') not in ('byte', 'gpt2', 'bpe', 'tiktoken'):
        raise UserError(f"hellaswag needs a checkpoint with a text tokenizer (byte, gpt2, bpe), not "
                        f"'{tokenizer.spec.get('kind')}'")
    split_name = 'validation' if split == 'val' else split
    examples = hellaswag_examples(source, split_name, limit)
    model.eval()
    hits = hits_norm = 0
    for ctx, endings, label in examples:
        sums, counts = hellaswag_losses(model, tokenizer, ctx, endings)
        hits += int(np.argmin(sums)) == label  # ties: the first ending
        hits_norm += int(np.argmin([a / c for a, c in zip(sums, counts)])) == label
    n = len(examples)
    return {'task': 'hellaswag', 'source': source, 'split': split_name if not os.path.exists(source) else 'local',
            'examples': n, 'acc': round(hits / n, 4), 'acc_norm': round(hits_norm / n, 4), 'chance': 0.25}


TASKS = {'ppl': task_ppl, 'seq2seq': task_seq2seq, 'numeric': task_numeric, 'algorithmic': task_algorithmic,
         'preference': task_preference, 'hellaswag': task_hellaswag}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        given = sys.argv[1] if len(sys.argv) > 1 else '(none)'
        raise UserError(f"unknown task '{given}'; usage: python eval_tasks.py <{'|'.join(TASKS)}> --ckpt=... [--key=value]")
    task = sys.argv[1]
    configurator.configure(globals(), sys.argv[2:])
    from checkpoint import load_checkpoint, model_from_checkpoint
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
