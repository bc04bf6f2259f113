"""Every pos_emb encoding (or --encodings) as a (position x dim) image, with its position-similarity matrix; each is
drawn by its kind (model.POS_EMB_KINDS), and an encoding of a kind not drawn here is refused.

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
from configurator import Each, OneOf, Range, Text  # noqa: E402
from model import (POS_EMB_KINDS, POS_EMBS, alibi_slopes, fixed_position_encoding, rope_cos_sin,  # noqa: E402
                   unhandled_pos_kind)
from analysis.study import pyplot  # noqa: E402

positions: Range(1) = 256
dim: Range(1) = 128
head_dim: Range(2) = 64          # rope: per-head size of its tables
rope_theta: Range(0, lo_open=True) = 10000.0
learned_ckpt: Text('run dir or .pt of a learned-table model') = ''  # '' = leave the learned panel empty
encodings: Each(OneOf(POS_EMBS), min_len=1) = list(POS_EMBS)  # one column each
out: Text('PNG path') = 'figures/pe_study/encodings.png'


def encoding_table(name, n_pos, d, learned=None, head=64, theta=10000.0):
    """(positions, dims) table of one encoding, by its kind (model.POS_EMB_KINDS); None when it has none
    ('none', a learned table without a checkpoint). An encoding of a kind drawn nowhere here is refused."""
    kind, pos = POS_EMB_KINDS[name], torch.arange(n_pos)
    if kind == 'rotary':  # its (cos, sin) rotation table
        cos, sin = rope_cos_sin(pos, head, theta)
        return torch.cat((cos, sin), dim=1)
    if kind == 'learned':
        return None if learned is None else learned[:n_pos].float()
    if kind == 'fixed':
        return fixed_position_encoding(name, pos, d)
    if kind == 'bias':  # alibi: the bias a query at the last position adds to the key at each position, 8 heads
        return -(n_pos - 1 - pos.float())[:, None] * alibi_slopes(8)[None, :]
    if kind == 'none':
        return None
    raise unhandled_pos_kind(name, 'analysis/pe_encodings.py')


def refuse_undrawable(names):
    """One UserError for an encoding whose kind encoding_table cannot draw: studies check this before training."""
    for name in names:
        try:
            encoding_table(name, 2, 4, head=4)
        except ValueError as e:
            raise configurator.UserError(str(e)) from None


def similarity(table):
    v = torch.nn.functional.normalize(table.double(), dim=1, eps=1e-12)
    return (v @ v.T).float()


def plot_encodings(path, n_pos, d, learned=None, head=64, theta=10000.0, names=POS_EMBS):
    plt = pyplot()
    fig, axes = plt.subplots(2, len(names), figsize=(2.3 * len(names), 5.2), squeeze=False)
    for c, name in enumerate(names):
        t = encoding_table(name, n_pos, d, learned, head, theta)
        top, bottom = axes[0, c], axes[1, c]
        top.set_title(name, fontsize=9)
        if t is None:
            for ax in (top, bottom):
                ax.text(0.5, 0.5, 'no table' if POS_EMB_KINDS[name] == 'none' else 'needs a\ncheckpoint', ha='center',
                        va='center', fontsize=8, transform=ax.transAxes)
                ax.set_xticks([]), ax.set_yticks([])
            continue
        # digit encodings: only the last dims vary over these positions, the rest is constant padding
        padded = t.size(1) > 16 and bool((t[:, :-16] == t[:1, :-16]).all())
        shown = t[:, -16:] if padded else t
        top.imshow(shown.numpy(), aspect='auto', cmap='RdBu_r', interpolation='nearest',
                   extent=(t.size(1) - shown.size(1) - 0.5, t.size(1) - 0.5, n_pos - 0.5, -0.5))
        bottom.imshow(similarity(t).numpy(), cmap='viridis', vmin=-1, vmax=1, interpolation='nearest')
        top.set_xlabel('dim (last 16; rest padding)' if padded else 'dim', fontsize=7)
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
    refuse_undrawable(encodings)
    learned = learned_table(learned_ckpt) if learned_ckpt else None
    print(f"wrote {plot_encodings(out, positions, dim, learned, head_dim, rope_theta, encodings)}")


if __name__ == '__main__':
    configurator.run_main(main)
