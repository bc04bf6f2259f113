"""A fair comparison of model variants: tune each variant's learning rate, then repeat its best rate over
seeds and report mean ± std. Shared by analysis/variants_compare.py and analysis/diffinput_compare.py.

    sweep, best, runs = sweep_then_seeds(variants, lrs, seeds, sweep_iters, max_iters, train)

Phase 1 (sweep): every variant at every lr of `lrs`, seed seeds[0], sweep_iters steps; the best lr of a
variant is the one with the lowest final validation loss (a tie goes to the lower lr; a run stopped by a
non-finite loss counts as inf). A variant whose best lr is the highest (lowest) it tried gets 2x (1/2x) that
lr too, up to `extend` (lr_extend) times, so each variant's rate is bracketed, not capped by a shared grid. Phase 2 (seeds): every variant at its best lr with every seed, max_iters
steps. When sweep_iters == max_iters the seeds[0] run has the sweep run's arguments and train_run reuses it.
`train(variant, lr, seed, iters)` returns a run dir (a study calls analysis.study.train_run in it).
"""
import math

from analysis.study import UserError, curve, final, fmt, in_parallel, pyplot, save_figure


def run_name(variant, lr, seed, iters):
    return f'{variant}_lr{lr:g}_s{seed}_{iters}it'


def quick_sweep(lrs, seeds):
    """--quick: only the lowest and the highest lr and the first two seeds."""
    return sorted({min(lrs), max(lrs)}), seeds[:2]


def best_lr(sweep):
    """{lr: final val loss} -> the lr with the lowest loss; ties go to the lower lr; non-finite losses never win."""
    finite = [lr for lr in sorted(sweep) if math.isfinite(sweep[lr])]
    if not finite:
        raise UserError(f"every learning rate diverged ({', '.join(f'{lr:g}' for lr in sorted(sweep))}); "
                        f"add lower values to lrs")
    return min(finite, key=lambda lr: sweep[lr])  # min keeps the first (lowest lr) of equal losses


def at_edge(sweep, best):
    """Keys of sweep ({key: {lr: loss}}) whose best lr is still the lowest or highest they tried."""
    return [k for k, d in sweep.items() if len(d) > 1 and best[k] in (min(d), max(d))]


def beyond_edge(sweep_v):
    """The next lr to try when a variant's best lr is at an edge of what it has tried (x2 above the top, /2 below
    the bottom), else None: a best lr at the edge of the grid is a bound, not a tuned rate."""
    best = best_lr(sweep_v)
    if len(sweep_v) > 1 and best == max(sweep_v):
        return best * 2
    if len(sweep_v) > 1 and best == min(sweep_v):
        return best / 2
    return None


def sweep_then_seeds(variants, lrs, seeds, sweep_iters, max_iters, train, jobs=1, extend=2):
    """-> sweep {variant: {lr: final val loss}}, best {variant: lr}, runs {variant: [run dir per seed]}.
    After the grid, a variant whose best lr is at an edge gets one more lr beyond it, up to `extend` times.
    jobs > 1 trains that many runs side by side (analysis.study.in_parallel)."""
    def sweep_run(v_lr):
        v, lr = v_lr
        try:
            return final(train(v, lr, seeds[0], sweep_iters))
        except UserError as e:
            if 'non-finite' not in str(e):
                raise
            print(f"== {v} lr {lr:g}: stopped by a non-finite loss; counted as inf in the sweep", flush=True)
            return math.inf
    pairs = [(v, lr) for v in variants for lr in lrs]
    losses = dict(zip(pairs, in_parallel(sweep_run, pairs, jobs)))
    sweep = {v: {lr: losses[v, lr] for lr in lrs} for v in variants}
    for _ in range(extend):
        more = [(v, beyond_edge(sweep[v])) for v in variants if beyond_edge(sweep[v]) is not None]
        if more:
            print("== best lr at the edge, trying " + ', '.join(f'{v} lr {lr:g}' for v, lr in more), flush=True)
        for (v, lr), x in zip(more, in_parallel(sweep_run, more, jobs)):
            sweep[v][lr] = x
    for v in variants:
        print(f"== sweep {v}: " + ', '.join(f'lr {lr:g} -> {x:.4f}' for lr, x in sorted(sweep[v].items())), flush=True)
    best = {v: best_lr(sweep[v]) for v in variants}
    todo = [(v, s) for v in variants for s in seeds]
    dirs = dict(zip(todo, in_parallel(lambda vs: train(vs[0], best[vs[0]], vs[1], max_iters), todo, jobs)))
    return sweep, best, {v: [dirs[v, s] for s in seeds] for v in variants}


def steps_to_reach(evals, target):
    """First (linearly interpolated) step where the validation loss is <= target; None if never."""
    prev = None
    for step, loss in evals:
        if loss <= target:
            if prev is None or prev[1] == loss:
                return float(step)
            return prev[0] + (step - prev[0]) * (prev[1] - target) / (prev[1] - loss)
        prev = (step, loss)
    return None


def seed_summary(curves, base):
    """curves {variant: [[(step, val loss), ...] per seed]} -> (target, {variant: {'final': [...], 'steps': [...]}}):
    target is the mean final loss of the baseline `base`; steps[i] is when seed i first reached it (None: never)."""
    target = sum(c[-1][1] for c in curves[base]) / len(curves[base])
    return target, {v: {'final': [c[-1][1] for c in cs], 'steps': [steps_to_reach(c, target) for c in cs]}
                    for v, cs in curves.items()}


def steps_cell(steps, digits=0, unit=''):
    """'mean ± std<unit> (reached/n)' over the seeds that reached the target (None: did not)."""
    got = [s for s in steps if s is not None]
    return (fmt(got, digits) + unit if got else 'not reached') + f' ({len(got)}/{len(steps)})'


def markdown(rows):
    keys = list(rows[0])
    return '\n'.join(['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)] +
                     ['| ' + ' | '.join(str(r[k]) for k in keys) + ' |' for r in rows]) + '\n'


def sweep_table(sweep, best, sweep_iters, seed):
    """Markdown: variant x lr -> final val loss of the sweep run (best in bold)."""
    lrs = sorted({lr for s in sweep.values() for lr in s})
    rows = []
    for v, s in sweep.items():
        row = {'variant': v}
        for lr in lrs:
            x = s.get(lr)
            cell = '-' if x is None else ('diverged' if not math.isfinite(x) else f'{x:.4f}')
            row[f'lr {lr:g}'] = f'**{cell}**' if lr == best[v] else cell
        rows.append(row)
    edge = at_edge(sweep, best)
    note = (f"\nBest lr still at the edge of what was tried for {', '.join(edge)}: a wider sweep (--lrs, --lr_extend) "
            f"might find a better rate.\n" if edge else '')
    return (f'Learning-rate sweep: final validation loss after {sweep_iters} steps, seed {seed} (best in bold)\n\n'
            + markdown(rows) + note)


def seeds_rows(summary, best, base, target, n_seeds):
    """Rows of the seeds table: variant | best lr | final val loss | steps to the baseline's mean final loss."""
    return [{'variant': v, 'best lr': f'{best[v]:g}',
             f'final val loss (mean ± std, n={n_seeds})': fmt(s['final'], 4),
             f"steps to {base}'s mean final loss {target:.4f} (mean ± std, reached/n)": steps_cell(s['steps'])}
            for v, s in summary.items()]


def mean_band(curves):
    """[[(step, y)] per seed] -> steps, mean, min, max over the seeds at the steps every seed has."""
    common = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
    ys = [[dict(c)[s] for c in curves] for s in common]
    return common, [sum(y) / len(y) for y in ys], [min(y) for y in ys], [max(y) for y in ys]


def sweep_seed_figure(path, sweep, best, runs, base, target, title, sweep_iters, max_iters):
    """Left: final val loss vs lr per variant (the sweep). Right: val loss vs step at each variant's best lr,
    mean over seeds with a min-max band, and the baseline's mean final loss dashed."""
    plt = pyplot()
    colors = ('black', 'tab:blue', 'tab:red', 'tab:purple', 'tab:green', 'tab:orange')
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6))
    finite = [x for s in sweep.values() for x in s.values() if math.isfinite(x)]
    for (v, s), c in zip(sweep.items(), colors):
        lrs = sorted(s)
        ax0.plot(lrs, [s[lr] if math.isfinite(s[lr]) else float('nan') for lr in lrs], 'o-', color=c, label=v)
        ax0.plot([best[v]], [s[best[v]]], '*', ms=14, color=c)
    ax0.set(xscale='log', xlabel='peak learning rate', ylabel='final validation loss (nats/token)',
            title=f'Sweep: {sweep_iters} steps, one seed (star = best)')
    ax0.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels (3x10^-3, 4x10^-3...) overlapped
    if finite:
        ax0.set_ylim(min(finite) - 0.1, min(max(finite), min(finite) + 3) + 0.1)
    lo, hi = [], []
    for (v, dirs), c in zip(runs.items(), colors):
        steps, mean, mn, mx = mean_band([curve(d) for d in dirs])
        ax1.plot(steps, mean, '-', color=c, label=f'{v} (lr {best[v]:g}, {len(dirs)} seeds)')
        ax1.fill_between(steps, mn, mx, color=c, alpha=0.2, lw=0)
        lo.append(min(mn))
        hi.append(max(mx))
    ax1.axhline(target, color='gray', ls='--', lw=1, label=f"{base}'s mean final loss")
    ax1.set(xlabel='step', ylabel='validation loss (nats/token)',
            title=f'Best lr per variant, {max_iters} steps: mean and min-max over seeds')
    ax1.set_ylim(min(lo) - 0.2, min(max(hi), min(lo) + 2.5) + 0.1)  # the first evals of a fresh model are ~ln(vocab)
    for ax in (ax0, ax1):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
