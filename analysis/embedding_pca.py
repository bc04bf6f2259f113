"""PCA of the number tokens' embeddings (rows 0..n_values-1 of wte), coloured by value, one panel per model.

    python analysis/embedding_pca.py --ckpts=out/numeric_softmax_s1337,out/numeric_linear_s1337 --out=pca.png
"""

import numpy as np

from numeric_common import load_model, model_label, split_list
from analysis.study import pyplot, save_figure
import configurator
from configurator import Text

ckpts: Text('comma-separated checkpoints or run dirs') = ''
out: Text('PNG path') = 'figures/numeric/embedding_pca.png'


def embedding_pca(model, n_values):
    """(coordinates (n_values, 2), explained variance ratio of PC1, PC2) of the centred number embeddings."""
    w = model.wte.weight.detach().float()[:n_values].numpy()
    w = w - w.mean(0)
    _, s, vt = np.linalg.svd(w, full_matrices=False)
    var = s ** 2 / (s ** 2).sum()
    return w @ vt[:2].T, var[:2]


def plot_embedding_pca(paths, out_path):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(paths), figsize=(5.2 * len(paths), 4.6), squeeze=False)
    for ax, path in zip(axes[0], paths):
        model, tok, ckpt = load_model(path)
        n = tok.spec['n_values'] if tok.spec.get('kind') == 'numeric' else model.config.vocab_size
        xy, var = embedding_pca(model, n)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.arange(n), cmap='viridis', s=22)
        for v in range(0, n, max(1, n // 10)):  # label every tenth number
            ax.annotate(str(v), xy[v], fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.set_title(model_label(ckpt), fontsize=10)
        ax.set_xlabel(f'PC1 ({var[0]:.0%} of variance)')
        ax.set_ylabel(f'PC2 ({var[1]:.0%} of variance)')
        fig.colorbar(sc, ax=ax, label='number value')
    fig.suptitle('Number-token embeddings, first two principal components')
    fig.tight_layout()
    return save_figure(fig, out_path, 110)


def main():
    configurator.configure(globals())
    print(f"wrote {plot_embedding_pca(split_list(ckpts, 'checkpoints (--ckpts=a,b)'), out)}")


if __name__ == '__main__':
    configurator.run_main(main)
