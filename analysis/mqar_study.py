"""Multi-query associative recall (MQAR, Arora et al. 2023 "Zoology") across attention variants:
softmax, linear, differential, nGPT and differential nGPT, over model widths and numbers of key-value
pairs, several seeds per point, after a small learning-rate sweep per variant and width.

    ./launcher.sh mqar_study                  # = python analysis/mqar_study.py config/mqar_study.py
    ./launcher.sh mqar_study --quick=True     # seconds: tiny models, a few steps (smoke test)

Steps: prepare/mqar.py per number of pairs (data_root/mqar_kv<n>); the sweep (analysis/lr_sweep.py): every
variant at every width with sweep_pairs pairs, one seed, each of lrs (a best rate at an edge of lrs gets 2x or
1/2x more, up to lr_extend times); the best rate of each (variant, width) (lowest final validation loss: chosen
on val, never on test) is then used for that variant and width at every number of pairs and seed. Each run is
train.py in a subprocess (analysis/study.train_run, which reuses a finished run of the same arguments), `jobs`
of them side by side. Accuracy = teacher-forced argmax at the queried values of the test split, nothing else
(mqar_accuracy), cached in each run dir.
Writes figures_dir/accuracy_vs_width.png, figures_dir/results.md and results.json.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from analysis.lr_sweep import at_edge, sweep_then_seeds  # noqa: E402
from analysis.study import (ROOT, final, fmt, in_parallel, mean_std, pyplot, run_script, save_figure,  # noqa: E402
                            train_run)
import numpy as np  # noqa: E402
import torch  # noqa: E402

import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text  # noqa: E402
import data as datalib  # noqa: E402

FLAGS = {'softmax': dict(), 'linear': dict(attn='linear'), 'diff': dict(attn='diff'), 'ngpt': dict(ngpt=True),
         'diffngpt': dict(attn='diff', ngpt=True)}
LABELS = {'softmax': 'softmax', 'linear': 'linear', 'diff': 'differential', 'ngpt': 'nGPT',
          'diffngpt': 'differential nGPT'}

out_dir: Text('folder for the runs') = 'out/mqar_study'  # runs: out_dir/<variant>_d<width>_kv<pairs>_lr<lr>_s<seed>
data_root: Text('folder of data sets') = 'data'          # data sets: data_root/mqar_kv<pairs>
figures_dir: Text('folder for the figure and tables') = 'figures/mqar'
variants: Each(OneOf(tuple(FLAGS)), min_len=1) = ['softmax', 'linear', 'diff', 'ngpt', 'diffngpt']
widths: Each(Range(1), min_len=1) = [16, 32, 64]     # n_embd
pairs: Each(Range(1), min_len=1) = [4, 8]            # key-value pairs per sequence (= queries per sequence)
seeds: Each(Range(0), min_len=1) = [1, 2, 3]
lrs: Each(Range(0, lo_open=True), min_len=1) = [3e-4, 1e-3, 3e-3, 1e-2]  # the sweep, per variant and width
lr_extend: Range(0) = 2          # a best lr at an edge of lrs gets up to this many 2x (1/2x) tries beyond it
sweep_pairs: Range(1) = 4        # the sweep's number of pairs (its rate is used for every number of pairs)
jobs: Range(1) = 2               # trainings side by side (two 1-thread runs fill a 2-core CPU)
n_layer: Range(1) = 2
n_head: Range(1) = 1             # one head, as Zoology's attention baseline; attn='diff' uses max(1, n_head // 2)
                                 # heads, each of two q/k halves (the same projection sizes)
solved: Range(0, 1) = 0.9        # a seed with test accuracy >= this counts as solved (the tables' k/n)
n_keys: Range(1) = 16            # key tokens; values are another n_vals tokens (a small vocabulary learns
n_vals: Range(1) = 16            # faster: with 32 + 32 tokens, 600 steps stayed near the ln(pairs) plateau)
queries: OneOf('with_replacement', 'permutation') = 'with_replacement'  # prepare/mqar.py's QUERIES: 'permutation'
                                 # lets the last answers follow by elimination
n_train: Range(1) = 20000        # sequences per number of pairs (train split)
n_test: Range(1) = 1000
batch_size: Range(1) = 32
max_iters: Range(1) = 1500       # softmax at width 64 leaves the plateau after ~500-1000 steps
warmup_iters: Range(0) = 30      # non-nGPT variants (nGPT: 0, as in analysis/variants_compare.py)
weight_decay: Range(0) = 0.1     # non-nGPT variants (nGPT: 0)
threads: Range(1) = 1            # OMP_NUM_THREADS of each training run (the CPU is shared)
quick: bool = False              # tiny everything: the whole study in seconds (tests)
RULES = [  # --quick replaces pairs, sweep_pairs, max_iters and warmup_iters with its own
    ('quick or sweep_pairs in pairs', "the sweep's number of pairs must be one the study runs"),
    ('quick or warmup_iters <= max_iters', 'train.py refuses a warmup longer than the run'),
]


def prepare(cfg, n):
    """data_root/mqar_kv<n>, rebuilt when it was made with other settings."""
    path = os.path.join(cfg['data_root'], f'mqar_kv{n}')
    want = dict(n_pairs=n, n_keys=cfg['n_keys'], n_vals=cfg['n_vals'], n_train=cfg['n_train'], n_test=cfg['n_test'],
                queries=cfg['queries'])
    stale = datalib.is_prepared(path) and any(datalib.load_meta(path)['config'].get(k) != v for k, v in want.items())
    if stale or not datalib.is_prepared(path):
        run_script(['prepare/mqar.py', f'--out_dir={path}', *[f'--{k}={v}' for k, v in want.items()],
                    f'--force={stale}'], quiet=True)
    return path


def train_args(cfg, variant, width, n, lr, seed):
    f = FLAGS[variant]
    ngpt = f.get('ngpt', False)
    heads = max(1, cfg['n_head'] // 2) if f.get('attn') == 'diff' else cfg['n_head']
    args = dict(data=f'mqar_kv{n}', data_root=cfg['data_root'], objective='records', n_layer=cfg['n_layer'],
                n_head=heads, n_embd=width, block_size=4 * n + 1,
                pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False, batch_size=cfg['batch_size'],
                max_iters=cfg['max_iters'], learning_rate=lr, min_lr=0.0, lr_schedule='cosine',
                warmup_iters=0 if ngpt else cfg['warmup_iters'], weight_decay=0.0 if ngpt else cfg['weight_decay'],
                eval_interval=cfg['max_iters'], eval_iters=8, log_interval=max(1, cfg['max_iters'] // 4),
                seed=seed, device='cpu', log_tensorboard=False, log_figures=False, **f)
    return [f'--{k}={v}' for k, v in args.items()]


@torch.no_grad()
def mqar_accuracy(model, recs, batch_size=250):
    """Fraction of queried values predicted exactly (teacher-forced argmax), over the records' 'scored'
    positions only: y from data.records_xy is -100 everywhere else."""
    correct = total = 0
    for x, y in datalib.iter_records_batches(recs, 'seq', model.config.block_size, batch_size):
        logits, _ = model(x)
        m = y != -100
        correct += int((logits.argmax(-1)[m] == y[m]).sum())
        total += int(m.sum())
    return correct / max(total, 1)


def accuracy_of(run_dir, data_dir):
    """Test accuracy of a run's final checkpoint, cached next to it (valid while its metrics are unchanged)."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    path = os.path.join(run_dir, 'mqar_accuracy.json')
    stamp = os.path.getmtime(os.path.join(run_dir, 'metrics.jsonl'))
    if os.path.isfile(path):
        with open(path) as f:
            c = json.load(f)
        if c.get('stamp') == stamp:
            return c['accuracy']
    model, _ = model_from_checkpoint(load_checkpoint(run_dir))
    acc = mqar_accuracy(model.eval(), datalib.open_records(data_dir, 'test', model.config.vocab_size))
    with open(path, 'w') as f:
        json.dump({'accuracy': acc, 'stamp': stamp}, f)
    return acc


def run_name(variant, width, n, lr, seed):
    return f'{variant}_d{width}_kv{n}_lr{lr:g}_s{seed}'


def cell(grid, v, w, n):
    return [r['accuracy'] for r in grid if (r['variant'], r['width'], r['pairs']) == (v, w, n)]


def plot(cfg, grid, path):
    """Accuracy vs width per number of pairs: mean with a ±std band over seeds, every seed as a dot."""
    fig, axes = pyplot().subplots(1, len(cfg['pairs']), figsize=(5.5 * len(cfg['pairs']), 4.3), squeeze=False, sharey=True)
    ws = cfg['widths']
    for ax, n in zip(axes[0], cfg['pairs']):
        for i, v in enumerate(cfg['variants']):
            ms = [mean_std(cell(grid, v, w, n)) for w in ws]
            m, s = np.array([a for a, _ in ms]), np.array([b for _, b in ms])
            line, = ax.plot(ws, m, marker='o', label=LABELS[v])
            ax.fill_between(ws, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color=line.get_color(), alpha=0.1)
            for w in ws:  # the seeds themselves: a point is often some solved and some not
                acc = cell(grid, v, w, n)
                ax.plot([w * 1.04 ** (i - 2)] * len(acc), acc, '.', color=line.get_color(), ms=6, alpha=0.8)
        ax.axhline(1 / cfg['n_vals'], color='gray', ls=':', lw=1, label=f'chance (1/{cfg["n_vals"]})')
        # the plateau of a model that only learned "answer with one of this sequence's values": right with
        # probability (1 + (n-1)/n_vals)/n, as the other n-1 values equal the answer 1/n_vals of the time
        ax.axhline((1 + (n - 1) / cfg['n_vals']) / n, color='black', ls='--', lw=1,
                   label='a value of the sequence at random')
        ax.set_xscale('log', base=2)
        ax.set_xticks(ws, [str(w) for w in ws])
        ax.set_xlabel('model width (n_embd)')
        ax.set_title(f'{n} key-value pairs ({4 * n + 2} tokens)')
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('test accuracy on queried values')
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc='lower center', ncol=7, fontsize=8)
    fig.suptitle(f'MQAR accuracy vs width ({cfg["n_layer"]} layers, {cfg["max_iters"]} steps, lr tuned per variant '
                 f'and width; mean, ±std band and dots = {len(cfg["seeds"])} seeds)')
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below the panels
    return save_figure(fig, path)


def tables(cfg, sweep, best, sweep_acc, grid):
    """Markdown: the sweep (val loss / test accuracy, chosen rate in bold), then accuracy mean ± std per point."""
    lrs = sorted({lr for d in sweep.values() for lr in d})
    lines = [f"Learning-rate sweep ({cfg['sweep_pairs']} pairs, seed {cfg['seeds'][0]}, {cfg['max_iters']} steps): "
             f"final validation loss / test accuracy; the rate with the lowest validation loss (bold) is used at every "
             f"number of pairs", '', '| variant | width | ' + ' | '.join(f'lr {lr:g}' for lr in lrs) + ' |',
             '|' + '---|' * (len(lrs) + 2)]
    for (v, w), d in sweep.items():
        cells = []
        for lr in lrs:
            c = '-' if lr not in d else f"{d[lr]:.3f} / {sweep_acc[v, w, lr]:.3f}"
            cells.append(f'**{c}**' if lr == best[v, w] else c)
        lines.append(f"| {LABELS[v]} | {w} | " + ' | '.join(cells) + ' |')
    edge = [f'{LABELS[v]} d={w}' for v, w in at_edge(sweep, best)]
    if edge:
        lines += ['', f"Best rate still at the edge of what was tried for {', '.join(edge)}."]
    n_s = len(cfg['seeds'])
    lines += ['', f"Test accuracy on the queried values, mean ± std over {n_s} seeds (k/{n_s}: seeds with accuracy "
              f">= {cfg['solved']})", '', '| variant | pairs | ' + ' | '.join(f'd={w}' for w in cfg['widths']) + ' |',
              '|' + '---|' * (len(cfg['widths']) + 2)]
    for n in cfg['pairs']:
        for v in cfg['variants']:
            cells = [fmt(a, 2) + f" ({sum(x >= cfg['solved'] for x in a)}/{len(a)})"
                     for a in (cell(grid, v, w, n) for w in cfg['widths'])]
            lines.append(f"| {LABELS[v]} | {n} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main():
    cfg = configurator.configure(globals())
    if cfg['quick']:  # seconds: two widths, one small pair count, two seeds, one rate, a few steps
        cfg.update(widths=[16, 32], pairs=[2], seeds=[1, 2], lrs=[1e-2], sweep_pairs=2, n_train=200, n_test=50,
                   batch_size=8, max_iters=4, warmup_iters=1)
    os.chdir(ROOT)  # relative paths (out/, data/, figures/) are the repository's, as for the launcher
    t0 = time.time()
    data_dirs = {n: prepare(cfg, n) for n in cfg['pairs']}

    def train_point(v, w, n, lr, seed):  # -> run dir (a finished run is reused)
        name = run_name(v, w, n, lr, seed)
        return train_run(train_args(cfg, v, w, n, lr, seed), cfg['out_dir'], name, threads=cfg['threads'])
    # the sweep, per (variant, width), one seed; its best run is also that point's first seed (reused)
    keys = [(v, w) for v in cfg['variants'] for w in cfg['widths']]
    sweep, best, _ = sweep_then_seeds(keys, cfg['lrs'], cfg['seeds'][:1], cfg['max_iters'], cfg['max_iters'],
                                      lambda k, lr, seed, _it: train_point(*k, cfg['sweep_pairs'], lr, seed),
                                      jobs=cfg['jobs'], extend=cfg['lr_extend'])
    sp, s1 = cfg['sweep_pairs'], cfg['seeds'][0]
    sweep_acc = {(v, w, lr): accuracy_of(os.path.join(cfg['out_dir'], run_name(v, w, sp, lr, s1)), data_dirs[sp])
                 for (v, w), d in sweep.items() for lr in d}
    print('best learning rate per variant and width (lowest val loss in the sweep): '
          + ', '.join(f'{v} d={w} {lr:g}' for (v, w), lr in best.items()), flush=True)
    # seeds outermost: an interrupted study has every point at its first seeds (rerun reuses them)
    points = [(v, w, n, s) for s in cfg['seeds'] for n in cfg['pairs'] for w in cfg['widths'] for v in cfg['variants']]

    def one(p):
        v, w, n, s = p
        rd = train_point(v, w, n, best[v, w], s)
        r = {'variant': v, 'width': w, 'pairs': n, 'lr': best[v, w], 'seed': s, 'run': os.path.basename(rd),
             'val_loss': final(rd), 'accuracy': accuracy_of(rd, data_dirs[n])}
        print(f"   {LABELS[v]:>17} d={w:<4} kv={n:<3} seed {s}: accuracy {r['accuracy']:.3f}", flush=True)
        return r
    grid = in_parallel(one, points, cfg['jobs'])
    fig = plot(cfg, grid, os.path.join(cfg['figures_dir'], 'accuracy_vs_width.png'))
    seconds = time.time() - t0
    n_runs = len({r['run'] for r in grid} | {run_name(v, w, sp, lr, s1) for (v, w), d in sweep.items() for lr in d})
    md = (f"# MQAR across attention variants\n\n{tables(cfg, sweep, best, sweep_acc, grid)}\n\n![accuracy vs width]"
          f"({os.path.basename(fig)})\n\n{n_runs} distinct runs, {seconds:.0f} s this invocation "
          f"(finished runs are reused).\n")
    os.makedirs(cfg['figures_dir'], exist_ok=True)
    with open(os.path.join(cfg['figures_dir'], 'results.md'), 'w') as f:
        f.write(md)
    rows = [{'variant': v, 'width': w, 'pairs': sp, 'lr': lr, 'seed': s1, 'val_loss': x,
             'accuracy': sweep_acc[v, w, lr]} for (v, w), d in sweep.items() for lr, x in sorted(d.items())]
    with open(os.path.join(cfg['figures_dir'], 'results.json'), 'w') as f:
        json.dump({'config': cfg, 'best_lr': {f'{v}_d{w}': lr for (v, w), lr in best.items()}, 'sweep': rows,
                   'grid': grid, 'seconds': seconds}, f, indent=1)
    print(md)
    print(f"wrote {cfg['figures_dir']}/results.md, results.json and {fig} ({seconds:.0f} s)")


if __name__ == '__main__':
    configurator.run_main(main)
