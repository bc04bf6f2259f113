"""Activation outliers and low-bit attention logits per variant (issue 29). The Differential Transformer paper (Ye et
al. 2024, arXiv 2410.05258, "activation outliers") reports that DIFF Transformer's largest attention logits and
hidden states are much smaller than the Transformer's, and that its accuracy holds when the attention logits are
quantized to 6 or 4 bits, where the Transformer's drops. This measures both on checkpoints.

    ./launcher.sh outliers                          # variants_compare's seed runs (trains the missing ones first)
    ./launcher.sh outliers --quick=True             # seconds: variants_compare --quick=True runs, one small batch
    python analysis/outliers.py --ckpts=out/a,out/b --out=out/outliers/ab --figure=out/outliers/ab.png

Every checkpoint reads the same validation windows: the first batches x batch_size windows of block_size tokens of
the val split (data.iter_eval_batches). Through the recording hook (GPT.record()):
- |attention logits| (rec['layer{i}.logits']: q.k/sqrt(d) of the causal query/key pairs, every head; attn='diff':
  both maps of every head) and |hidden states| (rec['layer{i}.hidden']: the residual stream after each block):
  top-1, top-10 and top-100 (the k-th largest |value|), the median |value|, and the kurtosis of the signed values
  (Pearson: 3 for a normal distribution; scale-free). Over the whole model (every layer pooled: the paper's table)
  and per layer (json). nGPT's hidden states are unit vectors by construction, so only their kurtosis compares.
- the validation loss with full-precision logits and with the logits fake-quantized to each of `bits`
  (rec['logit_bits'], model.fake_quantize: symmetric absmax per layer and forward), and the rise over full precision.
Checkpoints are grouped by variant (attn and ngpt, as variants_compare's FLAGS name them) and summarized as mean ±
std over the checkpoints (seeds) of a variant. Writes <out>.md, <out>.json and `figure`; every value is held in
memory while a checkpoint is measured (fine at variants_compare's scale).

With ckpts empty the checkpoints are variants_compare's seed runs: the 'runs' (each variant's best lr, every seed)
of <runs_from>/results.json. If that file is missing or lists an unfinished run, and train=True, this first runs
`python analysis/variants_compare.py config/variants_compare.py --out_dir=<runs_from> --data=<data>
--data_root=<data_root>` (which reuses every finished run and trains only what is missing), then reads the file again. Relative paths are the repository's (as for the
launcher).
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import Each, Range, Text, UserError  # noqa: E402
import data as datalib  # noqa: E402
from analysis.study import ROOT, is_finished, machine, mean_std, pyplot, run_script, save_figure  # noqa: E402
from analysis.variants_compare import FLAGS  # noqa: E402

ckpts: Text('comma-separated run dirs or checkpoint files ("" = variants_compare\'s seed runs)') = ''
runs_from: Text("variants_compare's out_dir (its results.json lists the seed runs)") = 'out/variants_compare'
train: bool = True             # ckpts empty: train variants_compare's missing runs first (False: fail instead)
data: Text('data set name under data_root') = 'stdlib'
data_root: Text('folder of data sets') = 'data'
block_size: Range(0) = 0       # tokens per window (0 = the smallest block_size of the checkpoints)
batches: Range(1) = 8          # validation batches, the same for every checkpoint
batch_size: Range(1) = 16
bits: Each(Range(2, 32), min_len=1) = [8, 6, 4]   # attention-logit bit widths (fake quantization)
out: Text('output prefix: <out>.md and <out>.json') = 'figures/outliers/results'
figure: Text('PNG path') = 'figures/outliers/outliers.png'
quick: bool = False            # 1 batch of 2 windows; ckpts empty: variants_compare --quick=True's runs; outputs left
                               # at their defaults go to out/outliers/quick/

QUICK_OUT, QUICK_FIGURE = 'out/outliers/quick/results', 'out/outliers/quick/outliers.png'
TOPS = (1, 10, 100)
STATS = ('top1', 'top10', 'top100', 'median', 'kurtosis')
# Ye et al. 2024 (arXiv 2410.05258), on quantizing the attention logits (HellaSwag accuracy, 3B models):
PAPER_QUANT = ("Diff Transformer retains high performance even at reduced bit-widths, ranging from 16 bits to 6 bits. "
               "In comparison, Transformer's accuracy significantly drops with 6-bit quantization. The 4-bit Diff "
               "Transformer achieves comparable accuracy as the 6-bit Transformer, and outperforms the 4-bit "
               "Transformer by about 25% in accuracy.")


def variant_of(cfg):
    """variants_compare's name of a GPTConfig: its FLAGS entry with the same attn and ngpt."""
    for name, flags in FLAGS.items():
        if flags.get('attn', 'softmax') == cfg.attn and flags.get('ngpt', False) == cfg.ngpt:
            return name
    raise UserError(f"attn={cfg.attn!r}, ngpt={cfg.ngpt} is none of {', '.join(FLAGS)}")


def variants_compare_runs(runs_from, train, quick, data, data_root):
    """The finished seed runs that <runs_from>/results.json lists; trains the missing ones through variants_compare."""
    path = os.path.join(runs_from, 'quick' if quick else '', 'results.json')

    def listed():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            dirs = [d for ds in json.load(f).get('runs', {}).values() for d in ds]
        return dirs if dirs and all(is_finished(d) for d in dirs) else None

    dirs = listed()
    if dirs is None and train:
        print(f"== {path} is missing or lists unfinished runs: running variants_compare", flush=True)
        run_script(['analysis/variants_compare.py', 'config/variants_compare.py', f'--out_dir={runs_from}',
                    f'--data={data}', f'--data_root={data_root}'] + (['--quick=True'] if quick else []))
        dirs = listed()
    if dirs is None:
        raise UserError(f"no finished variants_compare seed runs listed in {path}: run ./launcher.sh variants_compare"
                        f"{' --quick=True' if quick else ''} first, set --train=True, or pass --ckpts=<run dirs>")
    return dirs


def load(path):
    """(model, checkpoint) of one path, refused in one line when it has no attention logits to measure."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    ckpt = load_checkpoint(path)
    model, _ = model_from_checkpoint(ckpt)
    cfg = model.config
    if cfg.attn == 'linear':
        raise UserError(f"{path}: attn='linear' has no attention logits (model.record() stores none); use softmax "
                        f"or diff checkpoints")
    if cfg.n_encoder_layer:
        raise UserError(f"{path}: an encoder-decoder checkpoint (n_encoder_layer={cfg.n_encoder_layer}); only the "
                        f"decoder-only variants are measured here")
    return model.eval(), ckpt


def windows(data_dir, T, n_batches, bsz, vocab_size):
    """The first n_batches full batches of bsz windows of T tokens of the val split; refuses a split too short."""
    shards = datalib.open_split(data_dir, 'val', vocab_size)
    got = [(x, y) for x, y in datalib.iter_eval_batches(shards, T, bsz, n_batches) if x.size(0) == bsz]
    if len(got) < n_batches:
        raise UserError(f"{data_dir}'s val split has {len(got)} full batches of {bsz} windows of {T + 1} tokens, not "
                        f"{n_batches}: lower --batches, --batch_size or --block_size")
    return got


def stats(values):
    """{top1, top10, top100, median, kurtosis} of a 1-D tensor of signed values: the k-th largest |value| (k capped at
    the count), the median |value|, and the Pearson kurtosis E[(x - mean)^4] / var^2 of the signed values."""
    a = values.abs()
    top = a.topk(min(max(TOPS), a.numel())).values
    out = {f'top{k}': float(top[min(k, top.numel()) - 1]) for k in TOPS}
    out['median'] = float(np.median(a.numpy()))
    x = values.double()
    c = x - x.mean()
    var = c.pow(2).mean()
    out['kurtosis'] = float(c.pow(4).mean() / var ** 2) if var > 0 else float('nan')
    return out


@torch.no_grad()
def measure(model, batches, bits):
    """Outlier statistics (whole model and per layer) and the val loss at full precision and at each of bits."""
    L = model.config.n_layer
    logits, hidden = [[] for _ in range(L)], [[] for _ in range(L)]
    full = []
    for x, y in batches:
        with model.record() as rec:
            _, loss = model(x, y)
        causal = torch.ones(x.size(1), x.size(1), dtype=torch.bool).tril()  # the pairs the softmax reads
        for i in range(L):
            logits[i].append(rec[f'layer{i}.logits'][..., causal].float().flatten())
            hidden[i].append(rec[f'layer{i}.hidden'].float().flatten())
        full.append(loss.item())
    quant = {}
    for b in bits:
        losses = []
        for x, y in batches:
            with model.record() as rec:
                rec['logit_bits'] = b
                losses.append(model(x, y)[1].item())
        quant[str(b)] = sum(losses) / len(losses)  # (batches of equal size: the mean over every token)
    out = {'loss': {'full': sum(full) / len(full), 'bits': quant}}
    out['loss']['rise'] = {b: q - out['loss']['full'] for b, q in quant.items()}
    for name, per_layer in (('logits', logits), ('hidden', hidden)):
        layers = [torch.cat(v) for v in per_layer]
        out[name] = {'model': stats(torch.cat(layers)), 'layers': [stats(v) for v in layers]}
    return out


def cell(values, digits=4):
    """'mean ± std' with `digits` significant digits in the mean and as many decimals in the std."""
    m, s = mean_std(values)
    d = max(0, digits - 1 - math.floor(math.log10(abs(m)))) if m and math.isfinite(m) else digits
    return f"{m:.{d}f} ± {s:.{d}f}"


def table(header, rows):
    return '\n'.join(['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
                     + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows]) + '\n'


def summarize(results):
    """{variant: {'n', 'logits': {stat: [per ckpt]}, 'hidden': {...}, 'full': [...], 'rise': {bits: [...]}}}."""
    groups = {}
    for r in results:
        g = groups.setdefault(r['variant'], {'n': 0, 'logits': {}, 'hidden': {}, 'full': [], 'rise': {}})
        g['n'] += 1
        for name in ('logits', 'hidden'):
            for k in STATS:
                g[name].setdefault(k, []).append(r[name]['model'][k])
        g['full'].append(r['loss']['full'])
        for b, x in r['loss']['rise'].items():
            g['rise'].setdefault(b, []).append(x)
    return {v: groups[v] for v in FLAGS if v in groups}


def markdown(cfg, summary, results, command, window_line):
    bits_s = [str(b) for b in cfg['bits']]
    md = ["# Activation outliers and low-bit attention logits, per variant\n",
          f"Command: `{command}`. Machine: {machine()}.\n",
          f"{window_line}. Mean ± std over the checkpoints (seeds) of each variant; n = checkpoints.\n",
          "The paper's claim (Ye et al. 2024, arXiv 2410.05258, activation outliers; 3B models): DIFF Transformer's top "
          "activation values of attention logits and hidden states are much lower than the Transformer's, and under "
          f"attention-logit quantization: \"{PAPER_QUANT}\" Here: small models, validation loss instead of HellaSwag.\n",
          "## |attention logits| (whole model: every layer and head, the causal query/key pairs)\n"]
    head = ['variant', 'n', 'top-1', 'top-10', 'top-100', 'median', 'kurtosis']
    for name, title in (('logits', None), ('hidden', "## |hidden states| (whole model: the residual stream after "
                                                     "every block; nGPT's are unit vectors)\n")):
        if title:
            md.append(title)
        md.append(table(head, [[v, g['n']] + [cell(g[name][k]) for k in STATS] for v, g in summary.items()]))
    md.append("## Validation loss with the attention logits fake-quantized (rise over full precision, nats/token)\n")
    md.append(table(['variant', 'n', 'full precision'] + [f'{b} bits: rise' for b in bits_s],
                    [[v, g['n'], f"{mean_std(g['full'])[0]:.4f} ± {mean_std(g['full'])[1]:.4f}"]
                     + [f"{mean_std(g['rise'][b])[0]:+.5f} ± {mean_std(g['rise'][b])[1]:.5f}" for b in bits_s]
                     for v, g in summary.items()]))
    md.append("## Per checkpoint\n")
    md.append(table(['variant', 'checkpoint', 'step', 'val loss', 'largest abs logit', 'largest abs hidden']
                    + [f'loss at {b} bits' for b in bits_s],
                    [[r['variant'], r['path'], r['step'], f"{r['loss']['full']:.4f}",
                      f"{r['logits']['model']['top1']:.4g}", f"{r['hidden']['model']['top1']:.4g}"]
                     + [f"{r['loss']['bits'][b]:.4f}" for b in bits_s] for r in results]))
    return '\n'.join(md)


def plot(path, summary, bits, title):
    """Left, middle: top-1/10/100 and median of |attention logits| and |hidden states| per variant (bars, log y,
    seed std). Right: loss rise vs bits per variant, mean over seeds with a ± std band."""
    plt = pyplot()
    colors = dict(zip(FLAGS, ('black', 'tab:blue', 'tab:red', 'tab:purple')))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    keys, w = STATS[:4], 0.8 / max(len(summary), 1)
    for ax, name, what in ((axes[0], 'logits', '|attention logits|'), (axes[1], 'hidden', '|hidden states|')):
        for j, (v, g) in enumerate(summary.items()):
            ms = [mean_std(g[name][k]) for k in keys]
            m = [x for x, _ in ms]
            err = [[min(s, 0.999 * x) for x, s in ms], [s for _, s in ms]]  # (a log axis has no room below 0)
            ax.bar([i + (j - (len(summary) - 1) / 2) * w for i in range(len(keys))], m, w, yerr=err, capsize=3,
                   color=colors[v], alpha=0.8, label=f"{v} (n={g['n']})")
        ax.set_xticks(range(len(keys)), ['top-1', 'top-10', 'top-100', 'median'])
        ax.set(yscale='log', ylabel=f'{what} (whole model)', title=f'{what}: largest values and median')
    ax = axes[2]
    xs = sorted(bits, reverse=True)
    for v, g in summary.items():
        ms = [mean_std(g['rise'][str(b)]) for b in xs]
        m, s = np.array([x for x, _ in ms]), np.array([x for _, x in ms])
        ax.plot(xs, m, 'o-', color=colors[v])
        ax.fill_between(xs, m - s, m + s, color=colors[v], alpha=0.2, lw=0)
    ax.axhline(0, color='gray', lw=1)
    ax.set_xticks(xs)
    ax.invert_xaxis()  # fewer bits to the right
    ax.set(xlabel='attention-logit bits (symmetric absmax, per layer)', ylabel='val loss rise (nats/token)',
           title='Loss rise vs full precision (mean ± std band)')
    for a in axes:
        a.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # one legend for the three panels (same colors)
    fig.legend(handles, labels, loc='lower center', ncol=len(labels), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, path, dpi=90)


def main():
    global batches, batch_size, out, figure
    cfg = configurator.configure(globals())
    if not all(isinstance(b, int) for b in bits) or len(set(bits)) != len(bits):
        raise UserError(f"--bits={list(bits)!r}: distinct whole numbers of bits, e.g. --bits=[8, 6, 4]")
    if quick:
        batches, batch_size = 1, 2
        out = QUICK_OUT if out == 'figures/outliers/results' else out
        figure = QUICK_FIGURE if figure == 'figures/outliers/outliers.png' else figure
    cfg.update(batches=batches, batch_size=batch_size, out=out, figure=figure, bits=sorted(bits, reverse=True))
    command = 'python analysis/outliers.py ' + ' '.join(sys.argv[1:])
    os.chdir(ROOT)  # relative paths (out/, data/, figures/) are the repository's, as for the launcher
    t0 = time.time()
    paths = [p.strip() for p in ckpts.split(',') if p.strip()] or variants_compare_runs(runs_from, train, quick, data, data_root)
    models = [(p, *load(p)) for p in paths]  # every refusal comes before any measurement or output
    data_dir = os.path.join(data_root, data)
    meta = datalib.load_meta(data_dir)
    for p, _, ckpt in models:
        if ckpt.get('tokenizer') != meta['tokenizer']:
            raise UserError(f"{p} was trained with tokenizer {ckpt.get('tokenizer', {}).get('kind')!r}, {data_dir} "
                            f"uses {meta['tokenizer'].get('kind')!r} (another vocabulary): pick the data it was trained on")
    T = block_size or min(m.config.block_size for _, m, _ in models)
    longest = [p for p, m, _ in models if m.config.block_size < T]
    if longest:
        raise UserError(f"--block_size={T} is longer than the block_size of {longest[0]}: lower it (0 = the smallest)")
    wins = windows(data_dir, T, batches, batch_size, min(m.config.vocab_size for _, m, _ in models))
    results = []
    for p, model, ckpt in models:
        print(f"== {p}: {variant_of(model.config)}", flush=True)
        r = measure(model, wins, cfg['bits'])
        results.append({'path': p, 'variant': variant_of(model.config), 'step': ckpt.get('step'),
                        'model_config': ckpt['model_config'], **r})
    summary = summarize(results)
    window_line = (f"Data: the val split of {data_dir}, its first {batches} x {batch_size} windows of {T} tokens "
                   f"({batches * batch_size * T:,} tokens), the same for every checkpoint")
    md = markdown(cfg, summary, results, command, window_line)
    for path in (out + '.md', figure):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(out + '.md', 'w') as f:
        f.write(md)
    with open(out + '.json', 'w') as f:
        json.dump({'config': cfg, 'command': command, 'machine': machine(), 'window': T, 'wall_s': time.time() - t0,
                   'summary': summary, 'checkpoints': results}, f, indent=1)
    plot(figure, summary, cfg['bits'], f"Activation outliers and low-bit attention logits ({data}, {batches * batch_size} "
         f"windows of {T} tokens per checkpoint; bars and lines: mean over seeds, whiskers and bands: ± std)")
    print(md)
    print(f"wrote {out}.md, {out}.json and {figure}")


if __name__ == '__main__':
    configurator.run_main(main)
