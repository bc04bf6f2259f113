"""Neuron selectivity: each MLP neuron's mean activation per sequence type (read through model.record()'s
rec['layer{i}.mlp']), a selectivity index, and a heatmap of the most selective neurons per model.

    selectivity = (mean on its preferred type - mean of its means on the other types) / (std over all positions)

a d'-like index: 0 = the neuron does not care about the type, 1 = its preferred type shifts it by one
standard deviation. Positions: every value token of a sequence (its input positions after sep).

    python analysis/neuron_selectivity.py --ckpts=out/numeric_softmax_s1337,out/numeric_linear_s1337 --out=sel.png
"""
import os

import numpy as np
import torch

from numeric_common import load_model, model_label, numeric_meta, records_by_type, split_list
from analysis.study import pyplot, save_figure
import configurator
from configurator import OneOf, Range, Text
import data as datalib

ckpts: Text('comma-separated checkpoints or run dirs') = ''
data: Text('numeric data set name under data_root') = 'numeric'
data_root: Text('folder of data sets') = 'data'
split: OneOf('train', 'val', 'test', 'test_long') = 'test'  # the splits prepare/numeric.py writes
n_per_type: Range(1) = 200       # sequences of each type
top: Range(1) = 20               # neurons shown per model
out: Text('PNG path') = 'figures/numeric/neuron_selectivity.png'


@torch.no_grad()
def type_means(model, by_type, pad_id, n_types):
    """(means (n_types, neurons), std (neurons,)) of the MLP activations of all layers, concatenated."""
    sums, counts, allv = None, np.zeros(n_types), []
    for t in range(n_types):
        seqs = by_type.get(t, [])
        if not seqs:
            continue
        x, y = datalib.records_xy(seqs, pad_id, max(len(s) for s in seqs))
        with model.record() as rec:
            model(x)
        h = torch.cat([rec[f'layer{i}.mlp'] for i in range(model.config.n_layer)], dim=-1)  # (B, T, N)
        valid = (y != -100)
        valid[:, 0] = False  # position 0 is sep: it carries no information about the type yet
        acts = h[valid].float().numpy()
        if sums is None:
            sums = np.zeros((n_types, acts.shape[1]))
        sums[t] = acts.sum(0)
        counts[t] = len(acts)
        allv.append(acts)
    means = sums / np.maximum(counts, 1)[:, None]
    std = np.concatenate(allv).std(0)
    return means, std


def selectivity(means, std):
    """Per neuron: (index, preferred type). Means of types with no data should not be passed."""
    best = means.argmax(0)
    n_types = means.shape[0]
    rest = (means.sum(0) - means.max(0)) / (n_types - 1)
    return (means.max(0) - rest) / (std + 1e-6), best


def plot_neuron_selectivity(paths, data_dir, out_path, split_name='test', n_per=200, n_top=20):
    plt = pyplot()
    types = numeric_meta(data_dir)['types']
    by_type, pad_id = records_by_type(data_dir, split_name, n_per)
    fig, axes = plt.subplots(1, len(paths) + 1, figsize=(4.3 * len(paths) + 4.5, 0.26 * n_top + 2.6), squeeze=False)
    stats = []
    for ax, path in zip(axes[0], paths):
        model, _, ckpt = load_model(path)
        means, std = type_means(model, by_type, pad_id, len(types))
        si, best = selectivity(means, std)
        order = np.argsort(-si)[:n_top]
        hidden = means.shape[1] // model.config.n_layer
        z = (means[:, order] - means[:, order].mean(0)) / (std[order] + 1e-6)  # type means in units of std
        lim = max(abs(z).max(), 1e-6)
        im = ax.imshow(z.T, cmap='RdBu_r', vmin=-lim, vmax=lim, aspect='auto')
        ax.set_xticks(range(len(types)), types, rotation=35, ha='right', fontsize=8)
        ax.set_yticks(range(len(order)), [f'L{n // hidden}.{n % hidden} SI {si[n]:.1f}' for n in order], fontsize=7)
        ax.set_title(f"{ckpt['model_config']['attn']}: top {n_top} neurons", fontsize=9)
        ax.set_xlabel('sequence type')
        fig.colorbar(im, ax=ax, label='type mean - mean over types (std units)', shrink=0.8)
        label = model_label(ckpt)
        axes[0, -1].hist(si, bins=40, alpha=0.55, label=label)
        stats.append({'model': label, 'neurons': int(len(si)), 'mean_si': round(float(si.mean()), 3),
                      'frac_si_above_0.5': round(float((si > 0.5).mean()), 3),
                      'preferred_type_si_above_0.5': {types[t]: int((best[si > 0.5] == t).sum()) for t in range(len(types))}})
    h = axes[0, -1]
    h.set_xlabel('selectivity index')
    h.set_ylabel('neurons')
    h.set_title('selectivity of all MLP neurons', fontsize=9)
    h.legend(fontsize=7)
    fig.suptitle(f'MLP neuron selectivity for sequence type ({split_name} split, {n_per} sequences per type)', fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_path, 100), stats


def main():
    configurator.configure(globals())
    path, stats = plot_neuron_selectivity(split_list(ckpts, 'checkpoints (--ckpts=a,b)'),
                                          os.path.join(data_root, data), out, split, n_per_type, top)
    for s in stats:
        print(s)
    print(f"wrote {path}")


if __name__ == '__main__':
    configurator.run_main(main)
