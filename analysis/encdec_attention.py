"""Attention maps of an encoder-decoder checkpoint on one source/target record, with token labels.

    python analysis/encdec_attention.py --ckpt=out/encdec_study/runs/samsum_encdec_s1337 --data=samsum --index=0

Reads the maps through the model's recording hook (model.record()): rec['enc{i}.attn'] (encoder
self-attention), rec['layer{i}.attn'] (decoder self-attention), rec['layer{i}.cross'] (target tokens x
source tokens). Writes one figure: row 1 = encoder self / decoder self (last layer, head mean) and
cross-attention of every layer (head mean); row 2 = every head of the last layer's cross-attention.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

import configurator  # noqa: E402
from configurator import Range, Text, UserError  # noqa: E402
import data as datalib  # noqa: E402
from analysis.study import pyplot  # noqa: E402

ckpt: Text('encoder-decoder checkpoint or run dir') = ''
data: Text('data set name with seq2seq records') = 'samsum'
data_root: Text('folder of data sets') = 'data'
split: Text('split name of the data set') = 'val'
index: Range(0) = 0               # record number
max_src: Range(1) = 48            # show at most the last max_src source tokens and the first max_tgt target tokens
max_tgt: Range(1) = 24
title: Text('figure title') = ''
out: Text('PNG path') = ''        # '' = figures/encdec/attention_<data>.png


def token_labels(tokenizer, ids):
    labels = []
    for i in ids:
        t = tokenizer.decode([int(i)]) if int(i) not in (tokenizer.sep_id, tokenizer.eot_id) else \
            ('[SEP]' if int(i) == tokenizer.sep_id else '[EOT]')
        labels.append(t.replace('\n', '\\n').replace(' ', '·')[:10] or '?')
    return labels


@torch.no_grad()
def record_maps(model, src, x):
    """Attention maps of one example (batch of 1) via the recording hook."""
    model.eval()
    with model.record() as rec:
        model(torch.tensor([x]), src=torch.tensor([src]))
    return {k: v[0] for k, v in rec.items() if k.endswith(('.attn', '.cross'))}


def draw(ax, m, ylabels, xlabels, name):
    im = ax.imshow(m, cmap='viridis', aspect='auto', vmin=0)
    ax.figure.colorbar(im, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=5)
    fs = 5 if max(len(xlabels), len(ylabels)) > 30 else 6
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=90, fontsize=fs)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=fs)
    ax.set_title(name, fontsize=8)


def plot_record(model, tokenizer, rec, path, fig_title, n_src=48, n_tgt=24):
    plt = pyplot()
    ids = {'pad': tokenizer.pad_id, 'sep': tokenizer.sep_id, 'eot': tokenizer.eot_id}
    x, _, src = datalib.seq2seq_row(rec['src'], rec['tgt'], 'encdec', model.config.block_size, ids)
    src, x = src[-n_src:], x[:n_tgt]
    maps = record_maps(model, src, x)
    sl, tl = token_labels(tokenizer, src), token_labels(tokenizer, x)
    L, H = model.config.n_layer, model.config.n_head
    ncol = max(2 + L, H)
    fig, axes = plt.subplots(2, ncol, figsize=(3.2 * ncol, 7.0))
    for ax in axes.flat:
        ax.axis('off')
    last_enc = model.config.n_encoder_layer - 1
    panels = [(maps[f'enc{last_enc}.attn'].mean(0), sl, sl, f'encoder self-attn, layer {last_enc} (head mean)\nquery: source / key: source'),
              (maps[f'layer{L - 1}.attn'].mean(0), tl, tl, f'decoder self-attn, layer {L - 1} (head mean)\nquery: target input / key: target input')]
    panels += [(maps[f'layer{i}.cross'].mean(0), tl, sl, f'cross-attn, layer {i} (head mean)\nquery: target input / key: source')
               for i in range(L)]
    for ax, (m, yl, xl, name) in zip(axes[0], panels):
        ax.axis('on')
        draw(ax, m.numpy(), yl, xl, name)
    for h in range(H):
        axes[1, h].axis('on')
        draw(axes[1, h], maps[f'layer{L - 1}.cross'][h].numpy(), tl, sl, f'cross-attn, layer {L - 1}, head {h}')
    fig.suptitle(fig_title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return maps


def main():
    configurator.configure(globals())
    from checkpoint import load_checkpoint, model_from_checkpoint
    if not ckpt:
        raise UserError("no checkpoint given; pass --ckpt=<run dir or .pt file> of an encoder-decoder run")
    model, tokenizer = model_from_checkpoint(load_checkpoint(ckpt))
    if not model.config.n_encoder_layer:
        raise UserError(f"'{ckpt}' is a decoder-only checkpoint (n_encoder_layer=0): pass an encoder-decoder run")
    recs = datalib.open_seq2seq(os.path.join(data_root, data), split, model.config.vocab_size)
    if not 0 <= index < len(recs):
        raise UserError(f"--index={index} is outside the {len(recs)} records of '{split}'")
    path = out or os.path.join('figures', 'encdec', f'attention_{data}.png')
    plot_record(model, tokenizer, recs[index], path, title or f'{data} {split}[{index}]: attention maps', max_src, max_tgt)
    print(f"wrote {path}")


if __name__ == '__main__':
    configurator.run_main(main)
