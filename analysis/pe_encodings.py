"""Every pos_emb encoding as a (position x dim) image, with its position-similarity matrix.

    python analysis/pe_encodings.py --positions=256 --dim=128 --out=figures/pe_study/encodings.png
    python analysis/pe_encodings.py --learned_ckpt=out/pe_study/pe_learned_s1   # trained learned table

Similarity is the cosine between the vectors of two positions. For rope the "vector" of a position
is its (cos, sin) rotation table, whose cosine similarity is the relative kernel mean_k cos((i-j) theta_k)
that rotary attention applies to a query/key pair; 'learned' needs a trained checkpoint (shown only
up to its block_size), 'none' has no position signal.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

import configurator  # noqa: E402
from model import POS_EMBS, fixed_position_encoding, rope_cos_sin  # noqa: E402
from analysis.study import pyplot  # noqa: E402

positions = 256
dim = 128
head_dim = 64          # rope: per-head size of its tables
rope_theta = 10000.0
learned_ckpt = ''      # run dir or .pt of a pos_emb='learned' model ('' = leave the panel empty)
out = 'figures/pe_study/encodings.png'


DIGITS = ('binary', 'binary_norm', 'decimal', 'decimal_norm')


def encoding_table(kind, n_pos, d, learned=None, head=64, theta=10000.0):
    """(positions, dims) table of one encoding, or None when it has none ('none', learned without a checkpoint)."""
    pos = torch.arange(n_pos)
    if kind == 'rope':
        cos, sin = rope_cos_sin(pos, head, theta)
        return torch.cat((cos, sin), dim=1)
    if kind == 'learned':
        return None if learned is None else learned[:n_pos].float()
    if kind == 'none':
        return None
    return fixed_position_encoding(kind, pos, d)


def similarity(table):
    v = torch.nn.functional.normalize(table.double(), dim=1, eps=1e-12)
    return (v @ v.T).float()


def plot_encodings(path, n_pos, d, learned=None, head=64, theta=10000.0):
    plt = pyplot()
    fig, axes = plt.subplots(2, len(POS_EMBS), figsize=(2.3 * len(POS_EMBS), 5.2))
    for c, kind in enumerate(POS_EMBS):
        t = encoding_table(kind, n_pos, d, learned, head, theta)
        top, bottom = axes[0, c], axes[1, c]
        top.set_title(kind, fontsize=9)
        if t is None:
            for ax in (top, bottom):
                ax.text(0.5, 0.5, 'no table' if kind == 'none' else 'needs a\ncheckpoint', ha='center', va='center',
                        fontsize=8, transform=ax.transAxes)
                ax.set_xticks([]), ax.set_yticks([])
            continue
        shown = t[:, -16:] if kind in DIGITS else t  # digit encodings: the rest is constant padding
        top.imshow(shown.numpy(), aspect='auto', cmap='RdBu_r', interpolation='nearest',
                   extent=(t.size(1) - shown.size(1) - 0.5, t.size(1) - 0.5, n_pos - 0.5, -0.5))
        bottom.imshow(similarity(t).numpy(), cmap='viridis', vmin=-1, vmax=1, interpolation='nearest')
        top.set_xlabel('dim (last 16; rest padding)' if kind in DIGITS else 'dim', fontsize=7)
        bottom.set_xlabel('position', fontsize=7)
        for ax in (top, bottom):
            ax.tick_params(labelsize=6)
        if c == 0:
            top.set_ylabel('position', fontsize=8)
            bottom.set_ylabel('position', fontsize=8)
    fig.suptitle(f'Position encodings: (position x dim) tables (top) and cosine similarity between positions '
                 f'(bottom); {n_pos} positions, d={d}', fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=56)
    plt.close(fig)
    return path


def learned_table(ckpt_path):
    from checkpoint import load_checkpoint
    c = load_checkpoint(ckpt_path)
    if 'wpe.weight' not in c['model']:
        raise configurator.UserError(f"{ckpt_path} has no learned position table (pos_emb={c['model_config']['pos_emb']})")
    return c['model']['wpe.weight']


def main():
    configurator.configure(globals())
    learned = learned_table(learned_ckpt) if learned_ckpt else None
    print(f"wrote {plot_encodings(out, positions, dim, learned, head_dim, rope_theta)}")


if __name__ == '__main__':
    configurator.run_main(main)
