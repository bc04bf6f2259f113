"""nGPT's speedup over GPT against context length (issue 30): the nGPT paper (Loshchilov et al. 2024, arXiv
2410.01131) reports that nGPT needs 4 to 20 times fewer steps than GPT to reach the same loss, the factor growing
with the sequence length. This trains GPT and nGPT at several context lengths with equal tokens per optimizer step
(batch = tokens_per_step / context), each variant's lr tuned per context, and reports the ratio of steps.

    ./launcher.sh ngpt_context                           # embedded corpus; see docs/variants.md for the time
    ./launcher.sh ngpt_context --quick=True              # seconds: tiny models, 2 lrs x 2 seeds (smoke test)
    ./launcher.sh ngpt_context --variants="['GPT', 'nGPT', 'DiffNGPT']"   # the differential nGPT too
    python analysis/ngpt_context.py config/ngpt_context.py --train=False  # redo the report only

Every (variant, context) pair is a "variant" of analysis/lr_sweep.py's sweep_then_seeds: sweep `lrs` at seed
seeds[0] for sweep_iters steps (a best lr at an edge of what was tried gets 2x or 1/2x beyond it, up to lr_extend
times), then the best lr with every seed for max_iters steps. Each variant's recipe and flags are
variants_compare's (train_args: nGPT no weight decay and no warmup; GPT weight decay 0.1, warmup over warmup_frac
of the steps), so the shortest context with tokens_per_step=2048 is variants_compare's own setting. Runs go to
<out_dir>/<variant>_ctx<context>_lr<lr>_s<seed>_<iters>it; a finished run of the same arguments is reused.

Per context: target = the baseline's (variants[0]) mean final val loss; steps = the first (interpolated) eval step
where a seed's val loss reaches it; speedup of a seed = max_iters / its steps (the baseline reaches its own mean
final loss at max_iters: the paper's "steps to the same loss" ratio). Results: <out_dir>/results.md,
results.json, `figure` (speedup vs context, seeds and the paper's factors) and a sweep + seed-band figure per
context next to it. --quick=True writes everything under <out_dir>/quick/.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text, UserError  # noqa: E402
from analysis.study import (ROOT, check_seeds, curve, is_finished, machine, mean_std, pyplot, read_metrics,  # noqa: E402
                            save_figure, train_run)
from analysis.lr_sweep import (markdown, quick_sweep, run_name, seed_summary, seeds_rows,  # noqa: E402
                               steps_cell, sweep_seed_figure, sweep_table, sweep_then_seeds)
from analysis.variants_compare import FLAGS, train_args  # noqa: E402

data: Text('data set name under data_root') = 'stdlib'
data_root: Text('folder of data sets') = 'data'
out_dir: Text('folder for the runs and the results') = 'out/ngpt_context'
figure: Text('path of the speedup figure (PNG)') = 'figures/ngpt_context/speedup_vs_context.png'
variants: Each(OneOf(*FLAGS), min_len=2) = ['GPT', 'nGPT']   # the first is the baseline of steps-to-loss
contexts: Each(Range(2), min_len=2) = [128, 512, 1024]      # block_size of each arm
tokens_per_step: Range(2) = 2048     # every context: batch_size = tokens_per_step // context
n_layer: Range(1) = 4
n_head: Range(1) = 4                 # the differential variants use n_head // 2
n_embd: Range(1) = 128
max_iters: Range(1) = 240            # steps of the seed runs
sweep_iters: Range(1) = 240          # steps of the sweep runs (== max_iters: the seeds[0] run is the sweep's own)
lrs: Each(Range(0, lo_open=True), min_len=1) = [3e-3, 6e-3, 1.2e-2, 2.4e-2]   # shared grid, extended past edges
seeds: Each(Range(0), min_len=1) = [1, 2, 3]   # seeds[0] is the sweep's seed
warmup_frac: Range(0, 1, hi_open=True) = 0.2   # non-nGPT variants (variants_compare's recipe)
weight_decay: Range(0) = 0.1                   # non-nGPT variants (nGPT: 0)
eval_interval: Range(1) = 20
eval_iters: Range(1) = 10
train: bool = True                   # False: only read finished runs and redo the report
threads: Range(1) = 1                # OMP_NUM_THREADS of the training runs
jobs: Range(1) = 2                   # trainings side by side (two 1-thread runs fill a 2-core CPU)
lr_extend: Range(0) = 2              # best lr at an edge of lrs: try 2x (or 1/2x) beyond it, up to this many times
quick: bool = False                  # tiny models, 6 steps, contexts 8 and 32, lowest and highest lr, 2 seeds
RULES = [('sweep_iters <= max_iters', 'the sweep picks each lr on runs no longer than the compared ones')]

# Loshchilov et al. 2024 (arXiv 2410.01131): "reducing the number of training steps required to achieve the same
# accuracy by a factor of 4 to 20, depending on the sequence length"; per context (0.5B/1B models, OpenWebText):
PAPER = {1024: 4, 4096: 10, 8192: 20}


def key(variant, context):
    return f'{variant}_ctx{context}'


def check(cfg):
    """What the declarations cannot say: distinct contexts that each divide tokens_per_step, an even n_head for the
    differential variants."""
    if not all(isinstance(c, int) for c in cfg['contexts']):
        raise UserError(f"contexts={cfg['contexts']}: context lengths are whole numbers of tokens, e.g. [128, 1024]")
    if len(set(cfg['contexts'])) != len(cfg['contexts']):
        raise UserError(f"contexts={cfg['contexts']} repeats a value; give distinct context lengths, e.g. [128, 1024]")
    bad = [c for c in cfg['contexts'] if cfg['tokens_per_step'] % c]
    if bad:
        raise UserError(f"tokens_per_step={cfg['tokens_per_step']} is not a multiple of contexts {bad}: equal tokens per "
                        f"step needs batch = tokens_per_step / context to be whole")
    if len(set(cfg['variants'])) != len(cfg['variants']):
        raise UserError(f"variants={cfg['variants']} repeats a variant")
    if cfg['n_head'] % 2 and any(FLAGS[v].get('attn') == 'diff' for v in cfg['variants']):
        raise UserError(f"n_head={cfg['n_head']} is odd: the differential variants use n_head // 2 heads; pick an even n_head")
    check_seeds(cfg['seeds'])


def context_args(cfg, context):
    """variants_compare's settings at this context: block_size = context, batch = tokens_per_step / context."""
    return {**cfg, 'block_size': context, 'batch_size': cfg['tokens_per_step'] // context}


def speedups(steps, iters):
    """Per seed: the baseline's steps (iters) / this seed's steps to the baseline's mean final loss (None: never)."""
    return [None if s is None else iters / s for s in steps]


def analyse(cfg, sweep, best, runs):
    """-> {context: {'target', 'summary' {variant: final, steps, speedup}, 'rows'}} from the finished runs."""
    base, out = cfg['variants'][0], {}
    for c in cfg['contexts']:
        curves = {v: [curve(d) for d in runs[key(v, c)]] for v in cfg['variants']}
        target, summary = seed_summary(curves, base)
        for v, s in summary.items():
            s['speedup'] = speedups(s['steps'], cfg['max_iters'])
        rows = seeds_rows(summary, {v: best[key(v, c)] for v in cfg['variants']}, base, target, len(cfg['seeds']))
        for r, v in zip(rows, cfg['variants']):
            r[f"speedup = {cfg['max_iters']} / steps (mean ± std, reached/n)"] = (
                'reference' if v == base else steps_cell(summary[v]['speedup'], 2, 'x'))
        out[c] = {'target': target, 'summary': summary, 'rows': rows}
    return out


def train_seconds(cfg, sweep, runs):
    """(number of runs, seconds of training summed over their train_end markers)."""
    dirs = {os.path.join(cfg['out_dir'], run_name(k, lr, cfg['seeds'][0], cfg['sweep_iters'])) for k, s in sweep.items()
            for lr in s} | {d for ds in runs.values() for d in ds}
    secs = [e['seconds'] for d in dirs for e in read_metrics(d) if e.get('event') == 'train_end']
    return len(dirs), sum(secs)


def report(cfg, sweep, best, runs, command, wall):
    res = analyse(cfg, sweep, best, runs)
    base = cfg['variants'][0]
    n_runs, secs = train_seconds(cfg, sweep, runs)
    md = [f"{cfg['data']}: {cfg['n_layer']} layers x {cfg['n_embd']}, {cfg['max_iters']} steps of {cfg['tokens_per_step']:,} "
          f"tokens at every context (batch = {cfg['tokens_per_step']} / context); each variant at its best lr of the "
          f"sweep at that context, seeds {cfg['seeds']}; speedup = {base}'s steps ({cfg['max_iters']}) / the steps a seed "
          f"needs to reach {base}'s mean final val loss.\n\n",
          f"Command: `{command}`. Machine: {machine()}, load average over the last 15 min {os.getloadavg()[2]:.1f} at "
          f"the end. {n_runs} runs, {secs:,.0f} s of training summed over their train_end markers; this invocation "
          f"took {wall / 60:.1f} min (runs it reused cost it nothing).\n\n",
          "Paper (Loshchilov et al. 2024, arXiv 2410.01131): nGPT reaches the same loss in 4x (1k context), 10x (4k) "
          "and 20x (8k) fewer steps, 0.5B and 1B models on OpenWebText.\n\n"]
    for c in cfg['contexts']:
        md += [f"### Context {c} (batch {cfg['tokens_per_step'] // c} x {c})\n\n", markdown(res[c]['rows']), '\n',
               sweep_table({v: sweep[key(v, c)] for v in cfg['variants']}, {v: best[key(v, c)] for v in cfg['variants']},
                           cfg['sweep_iters'], cfg['seeds'][0]), '\n']
    md = ''.join(md)
    os.makedirs(cfg['out_dir'], exist_ok=True)
    with open(os.path.join(cfg['out_dir'], 'results.md'), 'w') as f:
        f.write(md)
    with open(os.path.join(cfg['out_dir'], 'results.json'), 'w') as f:
        json.dump({'config': cfg, 'command': command, 'machine': machine(), 'wall_s': wall, 'train_s': secs,
                   'sweep': {k: {f'{lr:g}': x for lr, x in s.items()} for k, s in sweep.items()}, 'best_lr': best,
                   'runs': runs, 'contexts': {str(c): r for c, r in res.items()}}, f, indent=1)
    print(md)
    fig_dir = os.path.dirname(cfg['figure'])
    for c in cfg['contexts']:
        ks = {v: key(v, c) for v in cfg['variants']}
        sweep_seed_figure(os.path.join(fig_dir, f'ctx{c}.png'), {v: sweep[k] for v, k in ks.items()},
                          {v: best[k] for v, k in ks.items()}, {v: runs[k] for v, k in ks.items()}, base, res[c]['target'],
                          f"{cfg['data']}: {cfg['n_layer']} layers x {cfg['n_embd']}, context {c}, batch "
                          f"{cfg['tokens_per_step'] // c} x {c}", cfg['sweep_iters'], cfg['max_iters'])
    speedup_figure(cfg, res)
    print(f"wrote {cfg['out_dir']}/results.md, {cfg['figure']} and {fig_dir}/ctx<context>.png")


def speedup_figure(cfg, res):
    """Speedup vs context length (log-log): each seed, the mean ± std, the paper's factors; 1 = no speedup."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    base, ctx = cfg['variants'][0], cfg['contexts']
    for v, color in zip(cfg['variants'][1:], ('tab:blue', 'tab:purple', 'tab:green', 'tab:orange')):
        per = [[x for x in res[c]['summary'][v]['speedup'] if x is not None] for c in ctx]
        for c, xs in zip(ctx, per):
            ax.plot([c] * len(xs), xs, '.', color=color, alpha=0.5, ms=7)
        got = [(c, xs) for c, xs in zip(ctx, per) if xs]
        missed = [c for c, xs in zip(ctx, per) if len(xs) < len(cfg['seeds'])]
        if missed:
            ax.plot([], [], 'x', color=color, label=f"{v}: some seeds never reached {base}'s final loss at context "
                                                    f"{', '.join(map(str, missed))} (see the table)")
        if got:
            m, sd = zip(*[mean_std(xs) for _, xs in got])
            ax.errorbar([c for c, _ in got], m, yerr=sd, fmt='o-', color=color, capsize=4,
                        label=f"{v} / {base}, this lab: mean ± std over {len(cfg['seeds'])} seeds (dots: seeds)")
    ax.plot(list(PAPER), list(PAPER.values()), 's--', color='gray', mfc='none', ms=9,
            label='Loshchilov et al. 2024 (arXiv 2410.01131): 4x at 1k, 10x at 4k,\n20x at 8k context (0.5B/1B params, OpenWebText)')
    ax.axhline(1, color='black', lw=0.8, ls=':', label='no speedup')
    ticks = sorted(set(ctx) | set(PAPER))
    ax.set(xscale='log', yscale='log', xlabel='context length (tokens, log scale)',
           ylabel=f"speedup: {base}'s steps / steps to {base}'s final loss",
           title=f"nGPT's speedup vs context length\n{cfg['data']}, {cfg['n_layer']} layers x {cfg['n_embd']}, "
                 f"{cfg['max_iters']} steps of {cfg['tokens_per_step']:,} tokens, lr tuned per variant and context")
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xticks([], minor=True)
    lo, hi = ax.get_ylim()
    yt = [2 ** i for i in range(-3, 7) if lo <= 2 ** i <= hi]
    ax.set_yticks(yt, [f'{t:g}x' for t in yt])
    ax.set_yticks([], minor=True)
    ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='upper left')
    fig.tight_layout()
    return save_figure(fig, cfg['figure'])


def main():
    global contexts, tokens_per_step, n_layer, n_head, n_embd, max_iters, sweep_iters, eval_interval, eval_iters
    global lrs, seeds, out_dir, figure
    cfg = configurator.configure(globals())
    check(cfg)
    if quick:
        contexts, tokens_per_step, n_layer, n_head, n_embd, max_iters, sweep_iters = [8, 32], 64, 1, 2, 16, 6, 6
        eval_interval, eval_iters = 2, 1
        lrs, seeds = quick_sweep(lrs, seeds)
        out_dir = os.path.join(out_dir, 'quick')
        figure = os.path.join(out_dir, 'speedup_vs_context.png')
    cfg.update(contexts=list(contexts), tokens_per_step=tokens_per_step, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
               max_iters=max_iters, sweep_iters=sweep_iters, eval_interval=eval_interval, eval_iters=eval_iters,
               lrs=[float(x) for x in lrs], seeds=list(seeds), out_dir=out_dir, figure=figure)
    command = 'python analysis/ngpt_context.py ' + ' '.join(sys.argv[1:])
    os.chdir(ROOT)  # relative paths (out/, data/, figures/) are the repository's, as for the launcher
    keys = {key(v, c): (v, c) for c in contexts for v in variants}
    print(f"== plan: {len(keys) * len(lrs)} sweep runs of {sweep_iters} steps (+ up to {lr_extend} past an edge per "
          f"variant and context) + {len(keys) * (len(seeds) - (sweep_iters == max_iters))} more seed runs of "
          f"{max_iters} steps (runs already finished with the same arguments are reused)", flush=True)
    t0 = time.time()

    def run(k, lr, seed, iters):
        v, c = keys[k]
        name = run_name(k, lr, seed, iters)
        if train:
            return train_run(train_args(context_args(cfg, c), v, lr, seed, iters), out_dir, name, threads=threads)
        if not is_finished(os.path.join(out_dir, name)):
            raise UserError(f"no finished run {os.path.join(out_dir, name)}: run with --train=True first")
        return os.path.join(out_dir, name)

    sweep, best, runs = sweep_then_seeds(list(keys), cfg['lrs'], list(seeds), sweep_iters, max_iters, run, jobs, lr_extend)
    report(cfg, sweep, best, runs, command, time.time() - t0)
    print(f"== ngpt_context: {time.time() - t0:.0f}s", flush=True)


if __name__ == '__main__':
    configurator.run_main(main)
