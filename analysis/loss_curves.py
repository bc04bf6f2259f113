"""Training and validation loss of several runs in one figure (from each run dir's metrics.jsonl).

    python analysis/loss_curves.py --runs=out/numeric_softmax_s1337,out/numeric_linear_s1337 --out=loss.png
"""
import json
import os

from numeric_common import split_list
from analysis.study import curve, pyplot, save_figure
import configurator
from configurator import UserError

runs = ''                     # comma-separated run directories
out = 'figures/numeric/loss_curves.png'


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


def main():
    configurator.configure(globals())
    print(f"wrote {plot_loss_curves(split_list(runs, 'run directories (--runs=a,b)'), out)}")


if __name__ == '__main__':
    configurator.run_main(main)
