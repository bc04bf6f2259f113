"""Baseline vs differential input embeddings, compared fairly: sweep the learning rate of each, run each
one's best rate with several seeds, evaluate perplexity; a table (mean ± std over seeds), a sweep table and
figures (sweep + val loss with seed bands, delta-norm histogram).

    ./launcher.sh diffinput_quick                 # offline, embedded corpus; see docs/diffinput.md for the time
    ./launcher.sh diffinput_quick --quick=True    # seconds: tiny models, 2 lrs x 2 seeds (smoke test)
    python analysis/diffinput_compare.py config/diffinput_quick.py --max_iters=50 --sweep_iters=50

Phase 1: both models at every lr of `lrs`, seed seeds[0], sweep_iters steps; best lr = lowest final val loss
(ties: the lower lr). Phase 2: each model's best lr with every seed, max_iters steps (analysis/lr_sweep.py).
Runs go to <out_dir>/<model>_lr<lr>_s<seed>_<iters>it; a finished run of the same arguments (and its
perplexity files) is reused. Results: <out_dir>/results.md, results.json and <out_dir>/figures/*.png;
--quick=True writes under <out_dir>/quick/.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text  # noqa: E402
from model import POS_EMBS  # noqa: E402
from analysis.study import (check_seeds, curve, fmt, pyplot, read_metrics, run_script, save_figure,  # noqa: E402
                            train_run)
from analysis.lr_sweep import (markdown, quick_sweep, run_name, seed_summary, seeds_rows,  # noqa: E402
                               sweep_seed_figure, sweep_table, sweep_then_seeds)

data: Text('data set name under data_root') = 'stdlib'
data_root: Text('folder of data sets') = 'data'
out_dir: Text('folder for the runs and tables') = 'out/diffinput_quick'
pos_emb: OneOf(POS_EMBS) = 'rope'
n_layer: Range(1) = 4
n_head: Range(1) = 4
n_embd: Range(1) = 128
block_size: Range(1) = 128
batch_size: Range(1) = 32
max_iters: Range(1) = 400        # steps of the seed runs
sweep_iters: Range(1) = 200      # steps of the sweep runs (shorter: see docs/diffinput.md for the time)
lrs: Each(Range(0, lo_open=True), min_len=1) = [1e-3, 2e-3, 3e-3, 6e-3]  # swept per model, cosine schedule
                                 # (min_lr: train.py's default)
seeds: Each(Range(0), min_len=1) = [1, 2, 3]  # seeds[0] is the sweep's seed
warmup_iters: Range(0) = 50
eval_interval: Range(1) = 50
eval_iters: Range(1) = 20
ppl_stride: Range(1) = 64        # sliding-window stride for the perplexity table
ppl_max_tokens: Range(1) = 100_000
threads: Range(1) = 1            # OMP_NUM_THREADS of the training and evaluation processes
jobs: Range(1) = 2               # trainings side by side (two 1-thread runs fill a 2-core CPU)
lr_extend: Range(0) = 2          # best lr at the edge of lrs: try 2x (or 1/2x) beyond it, up to this many times
quick: bool = False              # tiny models, a few steps, the lowest and highest lr, the first two seeds
RULES = [  # --quick replaces all of these with its own
    ('quick or (warmup_iters <= sweep_iters and warmup_iters <= max_iters)',
     'train.py refuses a warmup longer than the run'),
    ('quick or ppl_stride <= block_size', 'the perplexity window (block_size) advances by at most its length'),
]

MODELS = {'baseline': False, 'diff_input': True}   # name -> diff_input; the first is the steps-to-loss baseline


def train_args(name, lr, seed, iters):
    args = dict(data=data, data_root=data_root, pos_emb=pos_emb, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                block_size=block_size, batch_size=batch_size, max_iters=iters, learning_rate=lr, seed=seed,
                diff_input=MODELS[name], lr_schedule='cosine', warmup_iters=warmup_iters,
                eval_interval=eval_interval, eval_iters=eval_iters, log_interval=max(1, eval_interval // 5),
                log_tensorboard=False, auto_prepare=True)
    return [f'--{k}={v}' for k, v in args.items()]


def perplexity(run_dir, stride):
    """eval_tasks.py ppl on the val split, kept next to the run (a retrained run's dir is cleared first)."""
    path = os.path.join(run_dir, f'eval_ppl.json.{stride}')
    if not os.path.exists(path):
        run_script(['eval_tasks.py', 'ppl', f'--ckpt={run_dir}', f'--data={data}', f'--data_root={data_root}',
                    '--split=val', f'--stride={stride}', f'--max_tokens={ppl_max_tokens}', f'--out={path}'],
                   threads=threads, echo=('',))
    with open(path) as f:
        return json.load(f)


def main():
    global n_layer, n_head, n_embd, block_size, batch_size, max_iters, sweep_iters, warmup_iters, eval_interval
    global eval_iters, ppl_stride, ppl_max_tokens, lrs, seeds, out_dir
    cfg = configurator.configure(globals())
    check_seeds(seeds)
    if quick:
        n_layer, n_head, n_embd, block_size, batch_size, max_iters, sweep_iters = 1, 2, 16, 32, 4, 6, 6
        warmup_iters, eval_interval, eval_iters, ppl_stride, ppl_max_tokens = 2, 2, 1, 16, 200
        lrs, seeds = quick_sweep(lrs, seeds)
        out_dir = os.path.join(out_dir, 'quick')
    lrs, seeds = [float(x) for x in lrs], list(seeds)
    cfg.update({k: globals()[k] for k in cfg})
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    sweep, best, runs = sweep_then_seeds(
        list(MODELS), lrs, seeds, sweep_iters, max_iters,
        lambda name, lr, seed, iters: train_run(train_args(name, lr, seed, iters), out_dir,
                                                run_name(name, lr, seed, iters), threads=threads, echo=('',)), jobs, lr_extend)
    ppl = {name: [{s: perplexity(d, s) for s in (block_size, ppl_stride)} for d in dirs] for name, dirs in runs.items()}
    write_results(cfg, sweep, best, runs, ppl)
    print(f"== diffinput_compare: {time.time() - t0:.0f}s", flush=True)


def write_results(cfg, sweep, best, runs, ppl):
    base = list(MODELS)[0]
    target, summary = seed_summary({n: [curve(d) for d in dirs] for n, dirs in runs.items()}, base)
    rows = seeds_rows(summary, best, base, target, len(seeds))
    for r, (name, dirs) in zip(rows, runs.items()):
        for s in (block_size, ppl_stride):
            r[f'ppl, stride {s} (mean ± std)'] = fmt([p[s]['ppl'] for p in ppl[name]], 2)
        r['tokens scored'] = f"{ppl[name][0][ppl_stride]['tokens']:,}"
        trains = [[e for e in read_metrics(d) if e['event'] == 'train'] for d in dirs]
        diag = [t[-1]['delta_norm_mean'] for t in trains if 'delta_norm_mean' in t[-1]]
        r['final delta norm mean'] = fmt(diag) if diag else '-'
        r['tok/s (mean over seeds)'] = f"{sum(sum(e['tok_per_s'] for e in t) / len(t) for t in trains) / len(trains):,.0f}"
    head = (f"{data}: {n_layer} layers x {n_embd}, {n_head} heads, pos_emb {pos_emb}, block {block_size}, batch "
            f"{batch_size}, {max_iters} steps; each model at its best lr of the sweep, seeds {seeds}; perplexity on "
            f"the first {ppl_max_tokens:,} validation tokens\n\n")
    md = head + markdown(rows) + '\n' + sweep_table(sweep, best, sweep_iters, seeds[0])
    with open(os.path.join(out_dir, 'results.md'), 'w') as f:
        f.write(md)
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump({'config': cfg, 'sweep': {n: {f'{lr:g}': x for lr, x in s.items()} for n, s in sweep.items()},
                   'best_lr': best, 'runs': runs, 'target_val_loss': target, 'summary': summary, 'rows': rows,
                   'ppl': {n: [{str(s): p[s]['ppl'] for s in p} for p in ps] for n, ps in ppl.items()}}, f, indent=1)
    print(md)
    figs = os.path.join(out_dir, 'figures')
    sweep_seed_figure(os.path.join(figs, 'sweep_and_seeds.png'), sweep, best, runs, base, target,
                      f'Baseline vs differential input embeddings ({data}, {n_layer} layers x {n_embd}, {pos_emb})',
                      sweep_iters, max_iters)
    delta_norm_histogram(runs['diff_input'][0], os.path.join(figs, 'delta_norm_hist.png'))
    print(f"wrote {out_dir}/results.md and {figs}/")


def delta_norm_histogram(run_dir, path):
    """Delta norms vs embedding norms of a trained diff_input model on one validation batch."""
    import torch
    import data as datalib
    from checkpoint import load_checkpoint, model_from_checkpoint
    plt = pyplot()
    model, _ = model_from_checkpoint(load_checkpoint(run_dir))
    model.eval()
    shards = datalib.open_split(os.path.join(data_root, data), 'val', model.config.vocab_size)
    x, _ = next(datalib.iter_eval_batches(shards, block_size, batch_size, 1))
    with torch.no_grad():
        model(x)
    norms = model.diagnostics['delta_norm'].flatten().numpy()
    emb = model.wte(x).norm(dim=-1).detach().flatten().numpy()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.hist(norms, bins=60, alpha=0.7, label=f'|e_t - e_(t-1)| (stack input), mean {norms.mean():.2f}')
    ax.hist(emb, bins=60, alpha=0.6, label=f'|e_t| (plain embedding), mean {emb.mean():.2f}')
    ax.set(xlabel='L2 norm', ylabel=f'count ({len(norms):,} positions of one val batch)',
           title=f'Differential input: delta norms vs embedding norms\n({os.path.basename(run_dir)})')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == '__main__':
    configurator.run_main(main)
