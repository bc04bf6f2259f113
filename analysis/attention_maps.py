"""Attention maps per layer and head for one test sequence of a chosen type and length, read through
model.record(): softmax weights, or linear attention's normalized kernel weights. Rows: model x layer.

    python analysis/attention_maps.py --ckpts=out/numeric_softmax_s1337,out/numeric_linear_s1337 \
        --seq_type=alternating --length=12 --out=attn.png
"""
import os

import numpy as np
import torch

from numeric_common import find_sequence, load_model, model_label, split_list
from analysis.study import pyplot, save_figure
import configurator
from configurator import Range, Text

ckpts: Text('comma-separated checkpoints or run dirs') = ''
data: Text('numeric data set name under data_root') = 'numeric'
data_root: Text('folder of data sets') = 'data'
seq_type: Text("a sequence type of the data set's meta.json") = 'counting'  # (prepare/numeric.py TYPES)
length: Range(1) = 12            # number of values (a training length, or a longer one from test_long)
out: Text('PNG path') = 'figures/numeric/attention_counting.png'


@torch.no_grad()
def attention_of(model, seq):
    """{layer: (H, T, T) weights} of one sequence's input positions (the recording hook)."""
    with model.record() as rec:
        model(torch.from_numpy(seq[None, :-1]))
    return {i: rec[f'layer{i}.attn'][0].float().numpy() for i in range(model.config.n_layer)}


def plot_attention_maps(paths, data_dir, type_name, n_values, out_path):
    plt = pyplot()
    seq = find_sequence(data_dir, type_name, n_values)
    models = [load_model(p) for p in paths]
    n_rows = sum(m.config.n_layer for m, _, _ in models)
    n_cols = max(m.config.n_head for m, _, _ in models)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols + 0.8, 2.6 * n_rows + 0.6), squeeze=False)
    row = 0
    for model, tok, ckpt in models:
        labels = [tok.decode([int(t)]).strip() for t in seq[:-1]]
        for layer, att in attention_of(model, seq).items():
            for h in range(n_cols):
                ax = axes[row, h]
                if h >= att.shape[0]:
                    ax.axis('off')
                    continue
                im = ax.imshow(att[h], cmap='magma', vmin=0, vmax=1)
                ax.set_xticks(range(len(labels)), labels, fontsize=5, rotation=90)
                ax.set_yticks(range(len(labels)), labels, fontsize=5)
                ax.set_title(f"{ckpt['model_config']['attn']} L{layer} H{h}", fontsize=8)
                if h == 0:
                    ax.set_ylabel('query (input token)', fontsize=7)
                if row == n_rows - 1:
                    ax.set_xlabel('key (input token)', fontsize=7)
            row += 1
    fig.colorbar(im, ax=axes, shrink=0.6, label='attention weight')
    fig.suptitle(f"Attention weights on one {type_name} sequence ({n_values} values): "
                 + ' vs '.join(model_label(c) for _, _, c in models), fontsize=9)
    return save_figure(fig, out_path, 100)


def main():
    configurator.configure(globals())
    path = plot_attention_maps(split_list(ckpts, 'checkpoints (--ckpts=a,b)'), os.path.join(data_root, data),
                               seq_type, length, out)
    print(f"wrote {path}")


if __name__ == '__main__':
    configurator.run_main(main)
