"""Length generalization from scratch: small decoder-only models trained only on digit-string tasks
(prepare/lengen.py: copy, reverse, sort) of lengths 1..L, one per arm, task and seed; greedy exact match
at every length 1..2L; attention entropy by query position as a mechanism check.

Arms: every pos_emb encoding, and '<encoding>+rand' = that encoding trained with randomized positions
(pos_random=rand_max, Ruoss et al. 2023). The several-M check: 'rope+rand<M>' for each M in m_sweep, with M
between the longest training input (2L+1 tokens) and the longest test input (4L+1): if unseen positions cause
the failure, exact match falls where the test inputs outgrow M (lengths n with 2n+1 > M; past M a sequence
takes the plain positions 0..n-1, see GPT.position_ids). Randomized arms are evaluated with random positions too
(the paper's procedure): greedy decoding of the answer only, positions drawn once for max(2n+1, 2L+1) tokens,
the length a training batch draws for (batches are padded to their longest example, 2L+1 tokens).

    ./launcher.sh pe_lengen                      # = python analysis/pe_lengen.py config/pe_lengen.py
    ./launcher.sh pe_lengen --quick=True         # seconds: tiny models, a few steps (smoke test)
    ./launcher.sh pe_lengen --figures_only=True  # table and figures again from <out_dir>/results.json

Per task: prepare/lengen.py (data/lengen_<task>_L<L>), then train.py per (encoding, seed) in a
subprocess (objective='seq2seq': `src [SEP] tgt [EOT]`, loss on tgt [EOT] only; a finished run with the
same arguments is reused), then in this process: exact match by length (batched greedy decoding with the
KV cache, model.generate(temperature=0); an example counts when tgt + [EOT] is produced exactly) and
attention entropy per query position, read through model.record(), on test examples of length 2L.

block_size = the longest test input (`src [SEP] tgt` of length 2L: 4L + 1 tokens), so every evaluated
position exists for every encoding: for 'learned' the rows past the training lengths (2L + 1 input positions)
are in the model but never received a gradient (they keep their random initialization).

Writes <out_dir>/results.{json,md} and figures_dir/{accuracy_vs_length,attention_entropy}_<task>.png, answer_length.png + results.md.
"""
import json
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text  # noqa: E402
import data as datalib  # noqa: E402
from checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from analysis.study import fmt, mean_std, read_metrics, run_script, train_run  # noqa: E402
from model import POS_EMB_KINDS, POS_EMBS  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, 'prepare'))
from lengen import TASKS  # noqa: E402  prepare/lengen.py

RAND = tuple(f'{p}+rand' for p in POS_EMBS if POS_EMB_KINDS[p] != 'none')  # randomized arms (pos_random=rand_max)
tasks: Each(OneOf(TASKS), min_len=1) = ['copy', 'reverse']
encodings: Each(OneOf(POS_EMBS + RAND), min_len=1) = list(POS_EMBS) + ['rope+rand', 'learned+rand', 'sinusoidal+rand']
rand_max: Range(1) = 64          # M of the '+rand' arms: positions drawn from [0, M); >= the longest test input
m_sweep: Each(Range(1)) = [21, 25, 29]  # the several-M check: 'rope+rand<M>' arms ([] = none)
seeds: Each(Range(0), min_len=1) = [1, 2, 3]
train_len: Range(1) = 8          # L: trained on lengths 1..L, tested on 1..2L
n_train: Range(1) = 50000        # training examples per task (prepare/lengen.py)
n_test: Range(1) = 50            # test examples per length
n_layer: Range(1) = 2
n_head: Range(1) = 4
n_embd: Range(1) = 64
batch_size: Range(1) = 32
max_iters: Range(1) = 1000
learning_rate: Range(0, lo_open=True) = 5e-3
warmup_iters: Range(0) = 50
mech_examples: Range(1) = 32     # test examples of length 2L for the attention-entropy figure
data_root: Text('folder of data sets') = 'data'
out_dir: Text('folder for the runs and results') = 'out/pe_lengen'
figures_dir: Text('folder for the figures') = 'figures/pe_lengen'
threads: Range(1) = 1            # torch threads per process (the CPU is often shared)
jobs: Range(1) = 1               # training runs side by side (each with `threads` threads)
quick: bool = False              # tiny models and a few steps: the whole study in seconds (tests)
figures_only: bool = False       # redo the table and figures from <out_dir>/results.json (no training)
RULES = [('rand_max >= 4 * train_len + 1', 'the +rand arms draw every test input (up to 4L+1 tokens) from [0, rand_max)')]


PAPERS = """The papers beside (what they measure, not reproduced numbers):
- Ruoss et al. 2023 (arXiv 2305.16843): randomized positions raise test accuracy by 12.0% on average over 15
  algorithmic tasks (incl. duplicate and reverse string), test lengths far past training; their metric is
  per-token accuracy averaged over the OOD lengths (our 'OOD per-token' column).
- Kazemnejad et al. 2023 (arXiv 2305.19466): on small decoder-only models trained from scratch, NoPE
  length-generalizes as well as or better than the explicit encodings (copy and reverse among the tasks);
  their metric is exact match (our 'ID'/'OOD' columns).
- Press et al. 2022 (arXiv 2108.12409): ALiBi extrapolates in language-model perplexity (trained on 1024 tokens,
  evaluated on longer inputs); no algorithmic tasks, so only the direction of the claim compares here.
"""


def arm_spec(arm):
    """'rope' -> ('rope', 0); 'rope+rand' -> ('rope', rand_max); 'rope+rand21' -> ('rope', 21)."""
    pe, _, m = arm.partition('+rand')
    return pe, (int(m) if m else rand_max) if '+rand' in arm else 0


def sweep_arms():
    return [f'rope+rand{m}' for m in m_sweep]


def data_dir_of(task):
    return os.path.join(data_root, f'lengen_{task}_L{train_len}')


def prepare(task):
    """data/lengen_<task>_L<L>, rebuilt when it was made with other settings."""
    d = data_dir_of(task)
    want = {'task': task, 'train_len': train_len, 'test_len': 2 * train_len, 'n_train': n_train, 'n_test': n_test}
    if datalib.is_prepared(d):
        cfg = datalib.load_meta(d).get('config', {})
        if all(cfg.get(k) == v for k, v in want.items() if k != 'test_len') and cfg.get('test_len') in (0, 2 * train_len):
            return d
    run_script(['prepare/lengen.py', *[f'--{k}={v}' for k, v in want.items()], f'--out_dir={d}', '--force=True'],
               threads=threads)
    return d


def block_size_of(recs):
    """Tokens of the longest `src [SEP] tgt [EOT]` minus one: the model input of the longest example."""
    return max(len(recs[i]['src']) + len(recs[i]['tgt']) + 1 for i in range(len(recs)))


def train_args(task, arm, seed, block_size):
    pe, m = arm_spec(arm)
    return [f'--data={os.path.basename(data_dir_of(task))}', f'--data_root={data_root}', '--objective=seq2seq',
            f'--pos_emb={pe}', f'--pos_random={m}', f'--seed={seed}', '--vocab_size=16', f'--block_size={block_size}',
            f'--n_layer={n_layer}', f'--n_head={n_head}', f'--n_embd={n_embd}', f'--batch_size={batch_size}',
            f'--max_iters={max_iters}', f'--learning_rate={learning_rate}', f'--min_lr={learning_rate / 10}',
            f'--warmup_iters={warmup_iters}', '--weight_decay=0.0', f'--eval_interval={max(max_iters // 2, 1)}',
            '--eval_iters=4', f'--log_interval={max(max_iters // 4, 1)}', '--log_tensorboard=False',
            '--log_figures=False']


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def exact_match_by_length(model, recs, eot_id, sep_id, batch=256):
    """{length: (hits, total, correct tokens, tokens, answer lengths)}: greedy decoding of `src [SEP]` with the
    KV cache, up to the end of the context. A hit is tgt + [EOT] exactly (the rule of eval_tasks.exact_match
    on the decoded text, which tests check); tokens: the len(tgt) + 1 first decoded positions compared one by
    one with tgt + [EOT] (per-token accuracy); answer length: tokens before the first [EOT] (-1: no [EOT]
    before the context ends), which shows where a model stops."""
    model.eval()
    groups = {}
    for i in range(len(recs)):
        r = recs[i]
        groups.setdefault((len(r['src']), len(r['tgt'])), []).append(i)
    out = {}
    for (n, m), idx in sorted(groups.items()):
        hits = correct = 0
        lens = []
        for j in range(0, len(idx), batch):
            rows = [recs[i] for i in idx[j:j + batch]]
            x = torch.tensor([[int(t) for t in r['src']] + [sep_id] for r in rows])
            want = torch.tensor([[int(t) for t in r['tgt']] + [eot_id] for r in rows])
            # pos_random: the answer only, with positions for max(2n+1, 2L+1) tokens (module docstring)
            new = max(m + 1, 2 * train_len + 1 - n) if model.config.pos_random else max(model.config.block_size - n, m + 1)
            gen = model.generate(x, new, temperature=0)[:, n + 1:]
            same = gen[:, :m + 1] == want
            hits += int(same.all(1).sum())
            correct += int(same.sum())
            is_eot = gen == eot_id
            lens += torch.where(is_eot.any(1), is_eot.int().argmax(1), -1).tolist()
        h, t, c, k, l = out.get(n, (0, 0, 0, 0, []))
        out[n] = (h + hits, t + len(idx), c + correct, k + len(idx) * (m + 1), l + lens)
    return out


@torch.no_grad()
def attention_entropy(model, recs, length, sep_id, k):
    """Mean entropy (nats) of the attention distribution at each query position, over heads, layers and
    the first k test examples of source length `length`, teacher-forced on `src [SEP] tgt`."""
    rows = [recs[i] for i in range(len(recs)) if len(recs[i]['src']) == length][:k]
    x = torch.tensor([[int(t) for t in r['src']] + [sep_id] + [int(t) for t in r['tgt']] for r in rows])
    model.eval()
    with model.record() as rec:
        model(x)
    ent = []
    for i in range(model.config.n_layer):
        a = rec[f'layer{i}.attn'].float()  # (B, H, T, T), rows sum to 1
        ent.append(-(a * torch.log(a.clamp_min(1e-12))).sum(-1).mean((0, 1)))
    return torch.stack(ent).mean(0).tolist()


def evaluate(run_dir, recs, ids):
    """Exact match by length and attention entropy of one run, cached in <run>/eval_lengen.json (redone
    when the checkpoint is newer)."""
    path = os.path.join(run_dir, 'eval_lengen.json')
    ckpt_file = os.path.join(run_dir, 'ckpt', 'last.pt')
    if os.path.isfile(path) and os.path.getmtime(path) >= os.path.getmtime(ckpt_file):
        with open(path) as f:
            res = json.load(f)
        if res.get('n_test') == len(recs) and 'answer_len' in res:
            return res
    model, _ = model_from_checkpoint(load_checkpoint(run_dir))
    torch.manual_seed(0)  # pos_random: the evaluation's position draws are reproducible
    by_len = exact_match_by_length(model, recs, ids['eot'], ids['sep'])
    res = {'n_test': len(recs), 'acc': {str(n): v[0] / v[1] for n, v in by_len.items()},
           'token_acc': {str(n): v[2] / v[3] for n, v in by_len.items()},
           'answer_len': {str(n): v[4] for n, v in by_len.items()},
           'entropy': attention_entropy(model, recs, 2 * train_len, ids['sep'], mech_examples),
           'entropy_id': attention_entropy(model, recs, train_len, ids['sep'], mech_examples),
           'train_seconds': next((e.get('seconds') for e in read_metrics(run_dir) if e.get('event') == 'train_end'), None),
           'final_val_loss': next((e.get('val_loss') for e in reversed(read_metrics(run_dir))
                                   if e.get('val_loss') is not None), None)}
    with open(path + '.tmp', 'w') as f:
        json.dump(res, f)
    os.replace(path + '.tmp', path)
    return res


def summarize(results):
    """{task: {enc: {'id', 'ood', 'ood_tok': [per seed]}}}: mean exact match over lengths 1..L and L+1..2L,
    and mean per-token accuracy over lengths L+1..2L."""
    out = {}
    for task, encs in results.items():
        for enc, per_seed in encs.items():
            s = out.setdefault(task, {}).setdefault(enc, {'id': [], 'ood': [], 'id_tok': [], 'ood_tok': []})
            for r in per_seed.values():
                acc = {int(n): a for n, a in r['acc'].items()}
                s['id'].append(float(np.mean([a for n, a in acc.items() if n <= train_len])))
                s['ood'].append(float(np.mean([a for n, a in acc.items() if train_len < n <= 2 * train_len])))
                s['ood_tok'].append(float(np.mean([a for n, a in r['token_acc'].items()
                                                   if train_len < int(n) <= 2 * train_len])))
                s['id_tok'].append(float(np.mean([a for n, a in r['token_acc'].items() if int(n) <= train_len])))
    return out


def table(summary, wall):
    encs = list(next(iter(summary.values())))
    n = len(next(iter(next(iter(summary.values())).values()))['id'])
    head = ['arm'] + [f'{t} {s}' for t in summary for s in (f'ID (1..{train_len})', f'OOD ({train_len + 1}..{2 * train_len})',
                                                            'ID per-token', 'OOD per-token')]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for e in encs:
        lines.append('| ' + ' | '.join([e] + [fmt(summary[t][e][s]) for t in summary for s in ('id', 'ood', 'id_tok', 'ood_tok')])
                     + ' |')
    return (f"Greedy exact match, mean ± std over {n} seeds ({n_test} test examples per length; ID = mean over "
            f"lengths 1..{train_len}, OOD = mean over lengths {train_len + 1}..{2 * train_len}; per-token = the "
            f"fraction of answer positions, [EOT] included, where the greedy output has the right token; chance "
            f"about 0.1; '+rand' = randomized positions from [0, {rand_max}), '+rand<M>' from [0, M)). "
            f"Model {n_layer} layers x {n_embd} wide, {n_head} heads, {max_iters} steps of {batch_size} examples, "
            f"lr {learning_rate}; {wall}.\n\n" + '\n'.join(lines) + '\n')


def length_table(results):
    """Fraction of the answers to OOD inputs that stop exactly at the right length (the first [EOT] after len(tgt)
    tokens, whatever the digits), and of those that stop at the first untrained position 2L+1."""
    L = train_len
    head = ['pos_emb'] + [f'{t} {k}' for t in results for k in ('right length', f'[EOT] at position {2 * L + 1}')]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for enc in next(iter(results.values())):
        cells = [enc]
        for task in results:
            rs = results[task][enc].values()  # (tgt length = n for these tasks)
            cells.append(fmt([np.mean([v == n for n in range(L + 1, 2 * L + 1) for v in r['answer_len'][str(n)]]) for r in rs]))
            cells.append(fmt([np.mean([v == 2 * L - n for n in range(L + 1, 2 * L + 1) for v in r['answer_len'][str(n)]])
                              for r in rs]))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return (f"Where the greedy answers to inputs of length {L + 1}..{2 * L} stop (mean ± std over seeds): right length = "
            f"the first [EOT] comes after exactly n tokens; [EOT] at position {2 * L + 1} = it comes at the first "
            f"position no training sequence reached (answer length 2L - n).\n\n" + '\n'.join(lines) + '\n')


def entropy_table(results):
    """Mean attention entropy over the answer positions: of length-L inputs (positions L+1..2L, trained) and of
    length-2L inputs (2L+1..4L, past the last trained position), in nats and as a fraction of uniform log(t+1)."""
    L = train_len
    span = {'ID': ('entropy_id', range(L + 1, 2 * L + 1)), 'OOD': ('entropy', range(2 * L + 1, 4 * L + 1))}
    head = ['pos_emb'] + [f'{t} {k} {u}' for t in results for k in span for u in ('nats', '/ uniform')]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for enc in next(iter(results.values())):
        cells = [enc]
        for task in results:
            for key, ts in span.values():
                rs = results[task][enc].values()
                cells.append(fmt([np.mean([r[key][t] for t in ts]) for r in rs], 2))
                cells.append(fmt([np.mean([r[key][t] / math.log(t + 1) for t in ts]) for r in rs], 2))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return (f"Attention entropy at the answer positions (mean over heads, layers, {mech_examples} teacher-forced test "
            f"examples and the positions; mean ± std over seeds). ID: inputs of length {L}, answer positions "
            f"{L + 1}..{2 * L}; OOD: inputs of length {2 * L}, answer positions {2 * L + 1}..{4 * L} (all past the last "
            f"trained position {2 * L}). '/ uniform' divides by log(t+1), the entropy of uniform attention over the "
            f"t+1 visible keys.\n\n" + '\n'.join(lines) + '\n')


# ----------------------------------------------------------------------------- figures

def plot(results, summary):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    os.makedirs(figures_dir, exist_ok=True)

    def save(fig, name):
        fig.tight_layout()
        p = os.path.join(figures_dir, name)
        fig.savefig(p, dpi=90)
        plt.close(fig)
        return p
    every = list(next(iter(results.values())))
    sweep = [e for e in every if arm_spec(e)[1] and e != f'{arm_spec(e)[0]}+rand']  # the several-M arms
    encs = [e for e in every if e not in sweep]
    colors = {e: plt.cm.tab10(i) if i < 10 else plt.cm.Dark2(i - 10) for i, e in enumerate(encs)}
    # accuracy vs length: one panel per (task, encoding); mean over seeds, min..max band, L marked
    ncol = min(len(encs), 3)
    nrow = math.ceil(len(encs) / ncol)
    paths = []
    for task, per_enc in results.items():
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.6 * nrow), sharex=True, sharey=True, squeeze=False)
        for ax, enc in zip(axes.flat, encs):
            accs = [[r['acc'][str(n)] for n in range(1, 2 * train_len + 1)] for r in per_enc[enc].values()]
            a, lens = np.array(accs), np.arange(1, 2 * train_len + 1)
            ax.fill_between(lens, a.min(0), a.max(0), color=colors[enc], alpha=0.25, label='min..max over seeds')
            ax.plot(lens, a.mean(0), color=colors[enc], lw=2, label=f'exact match, mean of {len(a)} seeds')
            tok = np.array([[r['token_acc'][str(n)] for n in lens] for r in per_enc[enc].values()])
            ax.plot(lens, tok.mean(0), color=colors[enc], lw=1, ls=':', label='per-token accuracy, mean')
            ax.axvline(train_len + 0.5, color='k', ls='--', lw=1, label=f'training lengths ≤ {train_len}')
            s = summary[task][enc]
            ax.set_title(f"{enc}: ID {np.mean(s['id']):.2f}, OOD {np.mean(s['ood']):.2f}", fontsize=9)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
        for ax in axes.flat[len(encs):]:
            ax.axis('off')
        for ax in axes[-1]:
            ax.set_xlabel('length (digits)')
        for ax in axes[:, 0]:
            ax.set_ylabel('accuracy')
        axes.flat[0].legend(fontsize=7, loc='lower left')
        fig.suptitle(f"{task}: greedy decoding accuracy vs length, trained on lengths 1..{train_len}")
        paths.append(save(fig, f'accuracy_vs_length_{task}.png'))
    # mechanism: attention entropy by query position, inputs of length L (trained) and 2L, band over seeds
    for task, per_enc in results.items():
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.8 * nrow), sharex=True, sharey=True, squeeze=False)
        for ax, enc in zip(axes.flat, encs):
            for key, ls, label in (('entropy_id', '--', f'inputs of length {train_len} (trained)'),
                                   ('entropy', '-', f'inputs of length {2 * train_len}')):
                e = np.array([r[key] for r in per_enc[enc].values()])
                t = np.arange(e.shape[1])
                ax.fill_between(t, e.min(0), e.max(0), color=colors[enc], alpha=0.2)
                ax.plot(t, e.mean(0), color=colors[enc], ls=ls, lw=1.5, label=label)
            t = np.arange(4 * train_len + 1)
            ax.plot(t, np.log(t + 1), color='gray', ls=':', lw=1, label='uniform attention: log(t+1)')
            ax.axvline(2 * train_len + 0.5, color='k', ls='--', lw=1, label=f'last trained position ({2 * train_len})')
            ax.set_title(enc, fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes.flat[len(encs):]:
            ax.axis('off')
        for ax in axes[-1]:
            ax.set_xlabel('query position t')
        for ax in axes[:, 0]:
            ax.set_ylabel('attention entropy (nats)')
        axes.flat[0].legend(fontsize=6.5, loc='upper left')
        fig.suptitle(f"{task}: attention entropy by query position (mean over heads, layers, {mech_examples} examples; "
                     f"line = mean of seeds, band = min..max)", fontsize=10)
        paths.append(save(fig, f'attention_entropy_{task}.png'))
    # where the greedy answer stops: median answer length (tokens before the first [EOT]) by input length,
    # one panel per encoding, one line per task
    bs = 4 * train_len + 1
    lens = np.arange(1, 2 * train_len + 1)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.8 * nrow), sharex=True, sharey=True, squeeze=False)
    task_colors = {t: plt.cm.Set1(i) for i, t in enumerate(results)}
    for ax, enc in zip(axes.flat, encs):
        ax.plot(lens, lens, color='k', lw=3, alpha=0.2, label='correct: n')
        ax.plot(lens, 2 * train_len - lens, color='k', ls='--', lw=1, label=f'[EOT] at position {2 * train_len + 1}')
        for task, per_enc in results.items():
            med = np.array([[np.median([v if v >= 0 else bs - n for v in r['answer_len'][str(n)]]) for n in lens]
                            for r in per_enc[enc].values()])
            ax.fill_between(lens, med.min(0), med.max(0), color=task_colors[task], alpha=0.15)
            ax.plot(lens, med.mean(0), color=task_colors[task], lw=1.5, marker='.', ms=4, label=task)
        ax.axvline(train_len + 0.5, color='gray', ls=':', lw=1)
        ax.set_title(enc, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(encs):]:
        ax.axis('off')
    for ax in axes[-1]:
        ax.set_xlabel('input length n (digits)')
    for ax in axes[:, 0]:
        ax.set_ylabel('answer length produced')
    axes.flat[0].legend(fontsize=6.5, loc='upper left')
    fig.suptitle(f"Where the greedy answer stops: tokens before the first [EOT], trained on n ≤ {train_len} (dotted)\n"
                 f"median over examples (no [EOT] counts as the rest of the context); line = mean of seeds, "
                 f"band = min..max", fontsize=9)
    paths.append(save(fig, 'answer_length.png'))
    if sweep:  # the cited reason: exact match vs length for rope trained with several M; predicted cliff at 2n+1 > M
        lines = [e for e in ('rope', *sweep, 'rope+rand') if e in every]
        lens = np.arange(1, 2 * train_len + 1)
        fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), sharey=True, squeeze=False)
        cmap = plt.cm.viridis(np.linspace(0, 0.9, len(lines)))
        for ax, (task, per_arm) in zip(axes[0], results.items()):
            for c, arm in zip(cmap, lines):
                a = np.array([[r['acc'][str(n)] for n in lens] for r in per_arm[arm].values()])
                m = arm_spec(arm)[1]
                label = 'rope, plain positions' if not m else f'rope, random positions in [0, {m})'
                ax.fill_between(lens, a.min(0), a.max(0), color=c, alpha=0.2)
                ax.plot(lens, a.mean(0), color=c, lw=2, marker='.', label=label)
                if m and (m - 1) / 2 < lens[-1]:  # longest length whose input (2n+1 tokens) fits in [0, M)
                    ax.axvline((m - 1) / 2 + 0.5, color=c, ls=':', lw=1.5)
            ax.axvline(train_len + 0.5, color='k', ls='--', lw=1, label=f'training lengths ≤ {train_len}')
            ax.set_title(f'{task}', fontsize=10)
            ax.set_xlabel('length n (digits)')
            ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel('greedy exact match (mean of seeds, band min..max)')
        axes[0, 0].legend(fontsize=7, loc='lower left')
        fig.suptitle(f'Does the cliff move with M? rope trained on lengths 1..{train_len} with random positions from '
                     f'[0, M)\ndotted: predicted cliff, the first length whose input (2n+1 tokens) outgrows M', fontsize=9)
        paths.append(save(fig, 'cliff_vs_M.png'))
    return paths


def main():
    global train_len, n_train, n_test, n_layer, n_head, n_embd, batch_size, max_iters, warmup_iters, mech_examples
    configurator.configure(globals())
    os.chdir(ROOT)  # relative paths (data/, out/, figures/) are the repository's, as for the launcher
    if quick:  # seconds: the code paths of the full study, not its numbers
        train_len, n_train, n_test, n_layer, n_head, n_embd = 4, 2000, 4, 1, 2, 32
        batch_size, max_iters, warmup_iters, mech_examples = 16, 20, 5, 4
    t0 = time.time()
    res_path = os.path.join(out_dir, 'results.json')
    if figures_only:
        if not os.path.isfile(res_path):
            raise configurator.UserError(f"--figures_only=True needs {res_path}: run the study once without it")
        with open(res_path) as f:
            saved = json.load(f)
        results, wall = saved['results'], saved['wall']
    else:
        results, runs, test = {}, [], {}
        arms = list(dict.fromkeys(encodings + sweep_arms()))
        for task in tasks:
            test[task] = datalib.open_seq2seq(prepare(task), 'test')
            bs = block_size_of(test[task])
            runs += [(task, arm, seed, train_args(task, arm, seed, bs)) for arm in arms for seed in seeds]
        torch.set_num_threads(threads)
        eval_lock = threading.Lock()

        def train_and_evaluate(run):  # `jobs` of these side by side: a training process, then its evaluation here
            task, arm, seed, args = run
            run_dir = train_run(args, out_dir, f'{task}_L{train_len}_{arm}_s{seed}', threads=threads)
            with eval_lock:  # one evaluation at a time: its seeded position draws stay reproducible
                r = evaluate(run_dir, test[task], test[task].ids)
            s = summarize({task: {arm: {seed: r}}})[task][arm]
            print(f"   {os.path.basename(run_dir)}: ID {s['id'][0]:.3f}, OOD {s['ood'][0]:.3f} "
                  f"({time.time() - t0:.0f} s so far)", flush=True)
            return r
        with ThreadPoolExecutor(jobs) as pool:
            for (task, arm, seed, _), r in zip(runs, list(pool.map(train_and_evaluate, runs))):
                results.setdefault(task, {}).setdefault(arm, {})[str(seed)] = r
        train_s = sum(r['train_seconds'] or 0 for e in results.values() for s in e.values() for r in s.values())
        wall = (f"this invocation {time.time() - t0:.0f} s wall (training time of the runs, reused or not: "
                f"{train_s:.0f} s), threads={threads}")
        os.makedirs(out_dir, exist_ok=True)
        with open(res_path + '.tmp', 'w') as f:
            json.dump({'results': results, 'wall': wall, 'train_len': train_len, 'argv': sys.argv[1:]}, f)
        os.replace(res_path + '.tmp', res_path)
    summary = summarize(results)
    md = ('# Length generalization from scratch (pe_lengen)\n\n' + table(summary, wall) + '\n' + PAPERS + '\n'
          + length_table(results) + '\n' + entropy_table(results))
    figs = plot(results, summary)
    md += '\n' + '\n'.join(f'![{os.path.basename(p)}]({os.path.basename(p)})' for p in figs) + '\n'
    for path in (os.path.join(out_dir, 'results.md'), os.path.join(figures_dir, 'results.md')):
        with open(path, 'w') as f:
            f.write(md)
    print(md)
    print(f"wrote {out_dir}/results.{{json,md}} and {len(figs)} figures in {figures_dir} ({time.time() - t0:.0f} s)")


if __name__ == '__main__':
    configurator.run_main(main)
