"""GPT vs nGPT vs Differential Transformer vs Differential nGPT at equal parameter count, compared fairly:
each variant's learning rate is swept, then its best rate is run with several seeds; a table of the final
validation loss and of the steps each needs to reach GPT's mean final validation loss (mean ± std over
seeds), a sweep table, and a figure with seed bands.

    ./launcher.sh variants_compare                          # embedded corpus; see docs/variants.md for the time
    ./launcher.sh variants_compare --quick=True             # seconds: tiny models, 2 lrs x 2 seeds (smoke test)
    ./launcher.sh variants_compare --data=openwebtext --n_layer=12 --n_embd=768 --max_iters=5000
    python analysis/variants_compare.py config/variants_compare.py --train=False   # redo the report only

Phase 1: every variant at every lr of `lrs` with seed seeds[0] for sweep_iters steps; best lr = lowest final
val loss (ties: the lower lr). Phase 2: the best lr of each variant with every seed of `seeds` for max_iters
steps (analysis/lr_sweep.py). Runs go to <out_dir>/<variant>_lr<lr>_s<seed>_<iters>it and a finished run
of the same arguments is reused, so a re-run only trains what is missing.

Each variant's recipe follows the reference launcher problems, scaled to the run's steps: nGPT variants use
no weight decay and no warmup; the others weight decay 0.1 and warmup over warmup_frac of the steps. The
differential variants use n_head/2 heads (same projections). Results: <out_dir>/results.md, results.json
and the figure `figure`. --quick=True writes everything under <out_dir>/quick/ (its figure too).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text  # noqa: E402
from analysis.study import ROOT, check_seeds, curve, is_finished, read_metrics, train_run  # noqa: E402
from analysis.lr_sweep import (markdown, quick_sweep, run_name, seed_summary, seeds_rows,  # noqa: E402
                               sweep_seed_figure, sweep_table, sweep_then_seeds)

FLAGS = {'GPT': dict(), 'nGPT': dict(ngpt=True), 'DiffTransformer': dict(attn='diff'),
         'DiffNGPT': dict(attn='diff', ngpt=True)}

data: Text('data set name under data_root') = 'stdlib'
data_root: Text('folder of data sets') = 'data'
out_dir: Text('folder for the runs and tables') = 'out/variants_compare'
figure: Text('PNG path') = 'figures/variants_compare/sweep_and_seeds.png'
variants: Each(OneOf(tuple(FLAGS)), min_len=1) = ['GPT', 'nGPT', 'DiffTransformer', 'DiffNGPT']  # the first is
                             # the baseline of steps-to-loss
n_layer: Range(1) = 4
n_head: Range(2) = 4         # the baseline's heads; the differential variants use n_head // 2
n_embd: Range(1) = 128
block_size: Range(1) = 128
batch_size: Range(1) = 16
max_iters: Range(1) = 240    # steps of the seed runs
sweep_iters: Range(1) = 240  # steps of the sweep runs (== max_iters: the seeds[0] run is the sweep's own run)
lrs: Each(Range(0, lo_open=True), min_len=1) = [1e-3, 2e-3, 3e-3, 6e-3]  # swept per variant, cosine to 0 (the
                             # reference problems use 30e-4)
seeds: Each(Range(0), min_len=1) = [1, 2, 3]  # seeds[0] is the sweep's seed
warmup_frac: Range(0, 1) = 0.2  # non-nGPT variants (reference: 2000 of 10000 steps)
weight_decay: Range(0) = 0.1    # non-nGPT variants (nGPT: 0)
eval_interval: Range(1) = 20
eval_iters: Range(1) = 10
train: bool = True           # False: only read finished runs and redo the report (fails if one is missing)
threads: Range(1) = 1        # OMP_NUM_THREADS of the training runs
jobs: Range(1) = 2           # trainings side by side (two 1-thread runs fill a 2-core CPU)
lr_extend: Range(0) = 2      # best lr at the edge of lrs: try 2x (or 1/2x) beyond it, up to this many times
quick: bool = False          # tiny models, a few steps, the lowest and highest lr, the first two seeds: seconds (tests)
RULES = [('n_head % 2 == 0', 'the differential variants use n_head // 2 heads of two halves each')]


def train_args(cfg, variant, lr, seed, iters):
    f = FLAGS[variant]
    args = dict(data=cfg['data'], data_root=cfg['data_root'],
                n_layer=cfg['n_layer'], n_head=cfg['n_head'] // (2 if f.get('attn') == 'diff' else 1),
                n_embd=cfg['n_embd'], block_size=cfg['block_size'], batch_size=cfg['batch_size'],
                max_iters=iters, pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False,
                tie_embeddings=False, learning_rate=lr, min_lr=0.0, lr_schedule='cosine',
                warmup_iters=0 if f.get('ngpt') else int(cfg['warmup_frac'] * iters),
                weight_decay=0.0 if f.get('ngpt') else cfg['weight_decay'], eval_interval=cfg['eval_interval'],
                eval_iters=cfg['eval_iters'], log_interval=max(1, cfg['eval_interval'] // 5), seed=seed,
                log_tensorboard=False, log_figures=False, auto_prepare=True, **f)
    return [f'--{k}={v}' for k, v in args.items()]


def report(cfg, sweep, best, runs):
    """Tables (printed, <out_dir>/results.md, results.json) and the sweep + seed-band figure."""
    base = cfg['variants'][0]
    curves = {v: [curve(d) for d in dirs] for v, dirs in runs.items()}
    target, summary = seed_summary(curves, base)
    rows = seeds_rows(summary, best, base, target, len(cfg['seeds']))
    for r, (v, dirs) in zip(rows, runs.items()):
        begin = [e for e in read_metrics(dirs[0]) if e['event'] == 'train_begin'][0]
        r['params'] = f"{begin['params']:,}"
    head = (f"{cfg['data']}: {cfg['n_layer']} layers x {cfg['n_embd']}, {cfg['max_iters']} steps of "
            f"{cfg['batch_size']}x{cfg['block_size']} tokens; each variant at its best lr of the sweep, seeds "
            f"{cfg['seeds']}\n\n")
    md = head + markdown(rows) + '\n' + sweep_table(sweep, best, cfg['sweep_iters'], cfg['seeds'][0])
    os.makedirs(cfg['out_dir'], exist_ok=True)
    with open(os.path.join(cfg['out_dir'], 'results.md'), 'w') as f:
        f.write(md)
    with open(os.path.join(cfg['out_dir'], 'results.json'), 'w') as f:
        json.dump({'config': cfg, 'sweep': {v: {f'{lr:g}': x for lr, x in s.items()} for v, s in sweep.items()},
                   'best_lr': best, 'runs': runs, 'target_val_loss': target, 'summary': summary, 'rows': rows},
                  f, indent=1)
    print(md)
    sweep_seed_figure(cfg['figure'], sweep, best, runs, base, target,
                      f"{cfg['data']}: {cfg['n_layer']} layers x {cfg['n_embd']}, equal parameter count, "
                      f"batch {cfg['batch_size']}x{cfg['block_size']}", cfg['sweep_iters'], cfg['max_iters'])
    print(f"wrote {cfg['out_dir']}/results.md and {cfg['figure']}")


def main():
    global n_layer, n_head, n_embd, block_size, batch_size, max_iters, sweep_iters, eval_interval, eval_iters
    global lrs, seeds, out_dir, figure
    cfg = configurator.configure(globals())
    check_seeds(seeds)
    if quick:
        n_layer, n_head, n_embd, block_size, batch_size, max_iters, sweep_iters = 1, 2, 16, 32, 4, 6, 6
        eval_interval, eval_iters = 2, 1
        lrs, seeds = quick_sweep(lrs, seeds)
        out_dir = os.path.join(out_dir, 'quick')
        figure = os.path.join(out_dir, 'sweep_and_seeds.png')
    cfg.update(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, batch_size=batch_size,
               max_iters=max_iters, sweep_iters=sweep_iters, eval_interval=eval_interval, eval_iters=eval_iters,
               lrs=[float(x) for x in lrs], seeds=list(seeds), out_dir=out_dir, figure=figure)
    os.chdir(ROOT)  # relative paths (out/, data/, figures/) are the repository's, as for the launcher
    n_sweep = len(variants) * len(lrs)
    n_seed = len(variants) * (len(seeds) - (sweep_iters == max_iters))
    print(f"== plan: {n_sweep} sweep runs of {sweep_iters} steps + {n_seed} more seed runs of {max_iters} steps "
          f"(runs already finished with the same arguments are reused)", flush=True)
    t0 = time.time()

    def run(v, lr, seed, iters):
        name = run_name(v, lr, seed, iters)
        if train:
            return train_run(train_args(cfg, v, lr, seed, iters), out_dir, name, threads=threads)
        if not is_finished(os.path.join(out_dir, name)):
            raise configurator.UserError(f"no finished run {os.path.join(out_dir, name)}: run with --train=True first")
        return os.path.join(out_dir, name)

    sweep, best, runs = sweep_then_seeds(variants, [float(x) for x in lrs], list(seeds), sweep_iters, max_iters, run, jobs,
                                         lr_extend)
    report(cfg, sweep, best, runs)
    print(f"== variants_compare: {time.time() - t0:.0f}s", flush=True)


if __name__ == '__main__':
    configurator.run_main(main)
