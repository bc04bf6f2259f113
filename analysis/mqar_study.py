"""Multi-query associative recall (MQAR, Arora et al. 2023 "Zoology") across attention variants:
softmax, linear, differential, nGPT and differential nGPT, over model widths and numbers of key-value
pairs, several seeds per point, after a small learning-rate sweep per variant.

    ./launcher.sh mqar_study                  # = python analysis/mqar_study.py config/mqar_study.py
    ./launcher.sh mqar_study --quick=True     # seconds: tiny models, a few steps (smoke test)

Steps: prepare/mqar.py per number of pairs (data_root/mqar_kv<n>); the sweep: every variant at
sweep_width and sweep_pairs, one seed, each of lrs; the best rate of each variant (lowest final
validation loss, i.e. chosen on val, never on test) is then used for every point of the grid
variants x widths x pairs x seeds. Each run is train.py in a subprocess (analysis/study.train_run,
which reuses a finished run of the same arguments). Accuracy = teacher-forced argmax at the queried
values of the test split, nothing else (mqar_accuracy), cached in each run dir.
Writes figures_dir/accuracy_vs_width.png, figures_dir/results.md and results.json.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from analysis.study import ROOT, final, fmt, mean_std, run_script, train_run  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import configurator  # noqa: E402
import data as datalib  # noqa: E402

out_dir = 'out/mqar_study'      # runs: out_dir/<variant>_d<width>_kv<pairs>_lr<lr>_s<seed>
data_root = 'data'              # data sets: data_root/mqar_kv<pairs>
figures_dir = 'figures/mqar'
variants = ['softmax', 'linear', 'diff', 'ngpt', 'diffngpt']
widths = [16, 32, 64]           # n_embd
pairs = [4, 8]                  # key-value pairs per sequence (= queries per sequence)
seeds = [1, 2, 3]
lrs = [1e-3, 2e-3, 4e-3]        # the sweep, per variant
sweep_width = 32
sweep_pairs = 4
n_layer = 2
n_head = 2                      # the differential variants use n_head // 2 (each head has two q/k halves)
n_keys = 16                     # key tokens; values are another n_vals tokens (a small vocabulary learns
n_vals = 16                     # faster: with 32 + 32 tokens, 600 steps stayed near the ln(pairs) plateau)
n_train = 20000                 # sequences per number of pairs (train split)
n_test = 1000
batch_size = 32
max_iters = 500
warmup_iters = 30               # non-nGPT variants (nGPT: 0, as in analysis/variants_compare.py)
weight_decay = 0.1              # non-nGPT variants (nGPT: 0)
threads = 1                     # OMP_NUM_THREADS of each training run (the CPU is shared)
quick = False                   # tiny everything: the whole study in seconds (tests)

FLAGS = {'softmax': dict(), 'linear': dict(attn='linear'), 'diff': dict(attn='diff'), 'ngpt': dict(ngpt=True),
         'diffngpt': dict(attn='diff', ngpt=True)}
LABELS = {'softmax': 'softmax', 'linear': 'linear', 'diff': 'differential', 'ngpt': 'nGPT',
          'diffngpt': 'differential nGPT'}


def prepare(cfg, n):
    """data_root/mqar_kv<n>, rebuilt when it was made with other settings."""
    path = os.path.join(cfg['data_root'], f'mqar_kv{n}')
    want = dict(n_pairs=n, n_keys=cfg['n_keys'], n_vals=cfg['n_vals'], n_train=cfg['n_train'], n_test=cfg['n_test'])
    stale = datalib.is_prepared(path) and any(datalib.load_meta(path)['config'].get(k) != v for k, v in want.items())
    if stale or not datalib.is_prepared(path):
        run_script(['prepare/mqar.py', f'--out_dir={path}', *[f'--{k}={v}' for k, v in want.items()],
                    f'--force={stale}'], quiet=True)
    return path


def train_args(cfg, variant, width, n, lr, seed):
    f = FLAGS[variant]
    ngpt = f.get('ngpt', False)
    args = dict(data=f'mqar_kv{n}', data_root=cfg['data_root'], objective='records', n_layer=cfg['n_layer'],
                n_head=cfg['n_head'] // (2 if f.get('attn') == 'diff' else 1), n_embd=width, block_size=4 * n + 1,
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


def one(cfg, data_dirs, variant, width, n, lr, seed):
    name = run_name(variant, width, n, lr, seed)
    rd = train_run(train_args(cfg, variant, width, n, lr, seed), cfg['out_dir'], name, threads=cfg['threads'])
    return {'variant': variant, 'width': width, 'pairs': n, 'lr': lr, 'seed': seed, 'run': name,
            'val_loss': final(rd), 'accuracy': accuracy_of(rd, data_dirs[n])}


def plot(cfg, grid, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(cfg['pairs']), figsize=(5 * len(cfg['pairs']), 4), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], cfg['pairs']):
        for v in cfg['variants']:
            ms = [mean_std([r['accuracy'] for r in grid if (r['variant'], r['width'], r['pairs']) == (v, w, n)])
                  for w in cfg['widths']]
            m, s = np.array([a for a, _ in ms]), np.array([b for _, b in ms])
            line, = ax.plot(cfg['widths'], m, marker='o', label=LABELS[v])
            ax.fill_between(cfg['widths'], np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color=line.get_color(), alpha=0.2)
        ax.axhline(1 / cfg['n_vals'], color='gray', ls=':', lw=1, label=f'chance (1/{cfg["n_vals"]})')
        # the plateau of a model that only learned "answer with one of this sequence's values"
        ax.axhline(1 / n, color='black', ls='--', lw=1, label='1/pairs (a value of the sequence at random)')
        ax.set_xscale('log', base=2)
        ax.set_xticks(cfg['widths'], [str(w) for w in cfg['widths']])
        ax.set_xlabel('model width (n_embd)')
        ax.set_title(f'{n} key-value pairs ({4 * n + 2} tokens)')
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('test accuracy on queried values')
    axes[0][-1].legend(fontsize=8, loc='best')
    fig.suptitle(f'MQAR accuracy vs width ({cfg["n_layer"]} layers, {cfg["max_iters"]} steps; '
                 f'mean ± std over {len(cfg["seeds"])} seeds)')
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tables(cfg, sweep, best, grid):
    """Markdown: the sweep (val loss, accuracy) with the chosen rate, then accuracy mean ± std per point."""
    head = '| variant | ' + ' | '.join(f'lr {lr:g}' for lr in cfg['lrs']) + ' | chosen |'
    lines = [f"Learning-rate sweep (width {cfg['sweep_width']}, {cfg['sweep_pairs']} pairs, seed {cfg['seeds'][0]}): "
             f"final validation loss / test accuracy", '', head, '|' + '---|' * (len(cfg['lrs']) + 2)]
    for v in cfg['variants']:
        cells = [f"{r['val_loss']:.3f} / {r['accuracy']:.3f}" for lr in cfg['lrs'] for r in sweep if (r['variant'], r['lr']) == (v, lr)]
        lines.append(f"| {LABELS[v]} | " + ' | '.join(cells) + f" | {best[v]:g} |")
    lines += ['', f"Test accuracy on the queried values, mean ± std over {len(cfg['seeds'])} seeds", '',
              '| variant | pairs | ' + ' | '.join(f'd={w}' for w in cfg['widths']) + ' |',
              '|' + '---|' * (len(cfg['widths']) + 2)]
    for n in cfg['pairs']:
        for v in cfg['variants']:
            cells = [fmt([r['accuracy'] for r in grid if (r['variant'], r['width'], r['pairs']) == (v, w, n)], 2)
                     for w in cfg['widths']]
            lines.append(f"| {LABELS[v]} | {n} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main():
    cfg = configurator.configure(globals())
    if cfg['quick']:  # seconds: two widths, one small pair count, two seeds, one rate, a few steps
        cfg.update(widths=[16, 32], pairs=[2], seeds=[1, 2], lrs=[1e-2], sweep_width=16, sweep_pairs=2,
                   n_train=200, n_test=50, batch_size=8, max_iters=4, warmup_iters=1)
    bad = [v for v in cfg['variants'] if v not in FLAGS]
    if bad:
        raise configurator.UserError(f"unknown variants {bad}; valid: {', '.join(FLAGS)}")
    if cfg['sweep_pairs'] not in cfg['pairs'] or cfg['sweep_width'] not in cfg['widths']:
        raise configurator.UserError(f"sweep_pairs={cfg['sweep_pairs']} and sweep_width={cfg['sweep_width']} must be "
                                     f"among pairs={cfg['pairs']} and widths={cfg['widths']}")
    os.chdir(ROOT)  # relative paths (out/, data/, figures/) are the repository's, as for the launcher
    t0 = time.time()
    data_dirs = {n: prepare(cfg, n) for n in cfg['pairs']}
    # the sweep: one seed at one point per variant; its best run is also that grid point's first seed
    sweep = [one(cfg, data_dirs, v, cfg['sweep_width'], cfg['sweep_pairs'], lr, cfg['seeds'][0])
             for v in cfg['variants'] for lr in cfg['lrs']]
    best = {v: min((r for r in sweep if r['variant'] == v), key=lambda r: r['val_loss'])['lr'] for v in cfg['variants']}
    print('best learning rate per variant (lowest val loss in the sweep): '
          + ', '.join(f'{v} {lr:g}' for v, lr in best.items()), flush=True)
    grid = []  # seeds outermost: an interrupted study has every point at its first seeds (rerun reuses them)
    for s in cfg['seeds']:
        for n in cfg['pairs']:
            for w in cfg['widths']:
                for v in cfg['variants']:
                    grid.append(one(cfg, data_dirs, v, w, n, best[v], s))
                    print(f"   {LABELS[v]:>17} d={w:<4} kv={n:<3} seed {s}: accuracy {grid[-1]['accuracy']:.3f}", flush=True)
    fig = plot(cfg, grid, os.path.join(cfg['figures_dir'], 'accuracy_vs_width.png'))
    seconds = time.time() - t0
    md = (f"# MQAR across attention variants\n\n{tables(cfg, sweep, best, grid)}\n\n![accuracy vs width]"
          f"({os.path.basename(fig)})\n\n{len(sweep) + len(grid)} runs listed ({len({r['run'] for r in sweep + grid})} "
          f"distinct), {seconds:.0f} s this invocation (finished runs are reused).\n")
    os.makedirs(cfg['figures_dir'], exist_ok=True)
    with open(os.path.join(cfg['figures_dir'], 'results.md'), 'w') as f:
        f.write(md)
    with open(os.path.join(cfg['figures_dir'], 'results.json'), 'w') as f:
        json.dump({'config': cfg, 'best_lr': best, 'sweep': sweep, 'grid': grid, 'seconds': seconds}, f, indent=1)
    print(md)
    print(f"wrote {cfg['figures_dir']}/results.md, results.json and {fig} ({seconds:.0f} s)")


if __name__ == '__main__':
    configurator.run_main(main)
