"""Training and validation loss of several runs in one figure (from each run dir's metrics.jsonl);
plot_loss_bands draws groups of seeds instead (mean and min-max band per group).

    python analysis/loss_curves.py --runs=out/numeric_softmax_s1337,out/numeric_linear_s1337 --out=loss.png
"""
import json
import os

from numeric_common import split_list
from analysis.study import curve, pyplot, save_figure
from analysis.lr_sweep import mean_band
import configurator
from configurator import Text, UserError

runs: Text('comma-separated run directories') = ''
out: Text('PNG path') = 'figures/numeric/loss_curves.png'


def loss_points(run_dir):
    """(label, [(step, train loss)], [(step, val loss)]) of one run."""
    path = os.path.join(run_dir, 'metrics.jsonl')
    if not os.path.isfile(path):
        raise UserError(f"'{path}' not found: pass run directories made by train.py")
    train, val = curve(run_dir, 'loss', 'train'), curve(run_dir, 'val_loss', 'evaluate')
    label = os.path.basename(os.path.normpath(run_dir))
    cfg_path = os.path.join(run_dir, 'config.json')
    if os.path.isfile(cfg_path):
        with open(cfg_path) as f:
            label += f" ({json.load(f).get('attn', '?')} attention)"
    return label, train, val


def plot_loss_curves(run_dirs, out_path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for i, d in enumerate(run_dirs):
        label, train, val = loss_points(d)
        color = f'C{i}'
        if train:
            ax.plot(*zip(*train), color=color, label=f'{label} train')
        if val:
            ax.plot(*zip(*val), color=color, linestyle='--', marker='o', markersize=4, label=f'{label} val')
    ax.set_xlabel('optimizer step')
    ax.set_ylabel('loss (nats/token)')
    ax.set_title('Training (solid) and validation (dashed) loss')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_path, 110)


def plot_loss_bands(groups, out_path):
    """{label: [run dirs of its seeds]} -> train (left) and validation (right) loss against step: the mean over
    the seeds as a line, the min-max over the seeds as a band (at the steps every seed logged)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for i, (label, dirs) in enumerate(groups.items()):
        for ax, (key, event) in zip(axes, (('loss', 'train'), ('val_loss', 'evaluate'))):
            curves = [curve(d, key, event) for d in dirs]
            if not all(curves):
                continue
            steps, mean, lo, hi = mean_band(curves)
            ax.plot(steps, mean, color=f'C{i}', marker='o', markersize=3, label=f'{label} (mean of {len(dirs)} seeds)')
            ax.fill_between(steps, lo, hi, color=f'C{i}', alpha=0.25, lw=0, label=f'{label} min-max over seeds')
    for ax, what in zip(axes, ('training loss (batch at each log step)', 'validation loss')):
        ax.set(xlabel='optimizer step', title=what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel('loss (nats/token)')
    fig.suptitle('Loss against step: mean over seeds, band = min-max over seeds')
    fig.tight_layout()
    return save_figure(fig, out_path, 110)


def main():
    configurator.configure(globals())
    print(f"wrote {plot_loss_curves(split_list(runs, 'run directories (--runs=a,b)'), out)}")


if __name__ == '__main__':
    configurator.run_main(main)
