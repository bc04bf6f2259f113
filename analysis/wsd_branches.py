"""Loss and learning rate vs tokens of a WSD run with decay branches (train.py --decay_budgets=[...]).

    python analysis/wsd_branches.py --run_dir=out/wsd_branches_s1 --out=figures/wsd_branches/wsd_branches.png
    python analysis/wsd_branches.py --run_dir=out/wsd_branches_s1 --seed_runs="['out/wsd_branches_s2', 'out/wsd_branches_s3']"

Reads <run_dir>/metrics.jsonl (the stable run) and <run_dir>/decay_<budget>/metrics.jsonl (the
branches; same step and token axis) and prints each branch's final validation loss as a table; with
seed_runs (the same config at other seeds) the table gives mean ± std over all the runs.
"""
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import Each, Range, Text  # noqa: E402
from analysis.study import curve, fmt, pyplot, read_metrics  # noqa: E402

run_dir: Text('run dir of a WSD run with decay branches') = ''
out: Text('PNG path') = ''                    # '' = <run_dir>/figures/wsd_branches.png
smooth: Range(1) = 5                          # moving average of the training loss over this many log points
seed_runs: Each(Text('run dir')) = []         # more run dirs of the same config (other seeds): the table's losses
                                              # become mean ± std


def series(d, event, key):
    """([tokens], [values]) of one metric of the run in d."""
    pts = curve(d, key, event, x='tokens')
    return [p[0] for p in pts], [p[1] for p in pts]


def moving_average(y, k):
    return [sum(y[max(0, i - k + 1):i + 1]) / len(y[max(0, i - k + 1):i + 1]) for i in range(len(y))]


def branch_dirs(d):
    return sorted(glob.glob(os.path.join(d, 'decay_*')), key=lambda b: int(b.rsplit('_', 1)[1]))


def final_losses(runs):
    """{budget: ([final val loss of that branch per run], [the stable run's val loss at that budget per run])};
    every run must have the same budgets."""
    budgets = [os.path.basename(b) for b in branch_dirs(runs[0])]
    out = {}
    for d in runs:
        if [os.path.basename(b) for b in branch_dirs(d)] != budgets:
            raise configurator.UserError(f"{d} has branches {[os.path.basename(b) for b in branch_dirs(d)]}, "
                                         f"{runs[0]} has {budgets}: pass runs of the same config")
        stable = dict(curve(d, 'val_loss', x='tokens'))
        for b in budgets:
            vals = [v for _, v in curve(os.path.join(d, b), 'val_loss')]
            budget = int(b.split('_')[1])
            out.setdefault(budget, ([], []))[0].append(vals[-1] if vals else float('nan'))
            out[budget][1].append(stable.get(budget))  # None: the stable run stopped before this budget
    return out


def cell(values):
    values = [v for v in values if v is not None]
    return 'n/a' if not values else f'{values[0]:.4f}' if len(values) == 1 else fmt(values, 4)


def main():
    configurator.configure(globals())
    runs = [run_dir] + list(seed_runs)
    for d in runs:
        if not d or not os.path.exists(os.path.join(d, 'metrics.jsonl')):
            raise configurator.UserError(f"'{d}' has no metrics.jsonl: pass train.py run directories "
                                         f"(--run_dir, --seed_runs)")
    from schedule import format_tokens
    plt = pyplot()
    branches = branch_dirs(run_dir)
    if not branches:
        raise configurator.UserError(f"no decay_<budget>/ branches in {run_dir}: train with --decay_budgets=[...]")
    losses = final_losses(runs)
    fig, (ax, lr_ax) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True, gridspec_kw={'height_ratios': [3, 1]})
    x, y = series(run_dir, 'train', 'loss')
    ax.plot(x, moving_average(y, smooth), color='0.4', lw=1, label='stable run (train)')
    ax.plot(*series(run_dir, 'evaluate', 'val_loss'), 'o', color='0.4', ms=3, label='stable run (val)')
    lr_ax.plot(*series(run_dir, 'train', 'lr'), color='0.4')
    rows = []
    for c, d in enumerate(branches):
        budget = int(d.rsplit('_', 1)[1])
        color = plt.cm.viridis(0.15 + 0.7 * c / max(1, len(branches) - 1))
        x, y = series(d, 'train', 'loss')
        vx, vy = series(d, 'evaluate', 'val_loss')
        start = read_metrics(d)[0]['tokens']
        ax.plot(x, moving_average(y, smooth), color=color, lw=1.2, label=f'decay to {format_tokens(budget)} (train)')
        ax.plot(vx, vy, 's', color=color, ms=4, label=f'decay to {format_tokens(budget)} (val)')
        ax.axvline(start, color=color, ls=':', lw=0.8)
        lr_ax.plot(*series(d, 'train', 'lr'), color=color)
        rows.append((format_tokens(budget), format_tokens(start), losses[budget]))
    ax.set(ylabel='loss (nats/token)', title=f'WSD decay branches of {os.path.basename(os.path.normpath(run_dir))} '
           f'(dotted: pre-decay checkpoints)')
    lo = min(min(line.get_ydata()) for line in ax.get_lines() if not line.get_label().startswith('_'))
    ax.set_ylim(lo - 0.1, lo + 2.5)  # the early loss is off the chart: the decays are what matters here
    ax.legend(fontsize=8)
    lr_ax.set(xlabel='training tokens', ylabel='learning rate')
    fig.tight_layout()
    path = out or os.path.join(run_dir, 'figures', 'wsd_branches.png')
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=90)
    n = '' if len(runs) == 1 else f' (mean ± std, {len(runs)} runs)'
    print(f'| budget | decay starts at | final val loss{n} | stable run at that budget (no decay){n} |\n|---|---|---|---|')
    for b, s, (branch, stable) in rows:
        print(f'| {b} | {s} | {cell(branch)} | {cell(stable)} |')
    print(f"wrote {path}")


if __name__ == '__main__':
    configurator.run_main(main)
