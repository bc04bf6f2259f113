"""GPT vs nGPT vs Differential Transformer vs Differential nGPT at equal parameter count: train the four
(same data, seed, width, depth, steps, learning rate), then write loss-vs-tokens curves and a table of
the steps each needs to reach the GPT baseline's final validation loss.

    ./launcher.sh variants_compare                          # embedded corpus, ~10 min on a 2-core CPU
    ./launcher.sh variants_compare --data=openwebtext --n_layer=12 --n_embd=768 --max_iters=5000
    python analysis/variants_compare.py config/variants_compare.py --train=False   # redo the report only

Each variant's recipe follows the reference launcher problems, scaled to max_iters: nGPT variants use no
weight decay and no warmup; the others weight decay 0.1 and warmup over warmup_frac of the steps. The
differential variants use n_head/2 heads (same projections). Results: <out_dir>/results.md, results.json
and the figure `figure` (default figures/variants_compare/loss_vs_tokens.png).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from analysis.common import ROOT, pyplot, read_metrics, train_run  # noqa: E402

data = 'stdlib'
data_root = 'data'
out_dir = 'out/variants_compare'
figure = 'figures/variants_compare/loss_vs_tokens.png'
variants = ['GPT', 'nGPT', 'DiffTransformer', 'DiffNGPT']
n_layer = 4
n_head = 4                   # the baseline's heads; the differential variants use n_head // 2
n_embd = 128
block_size = 128
batch_size = 16
max_iters = 240
learning_rate = 3e-3         # every variant, cosine to 0 (the reference problems use 30e-4)
warmup_frac = 0.2            # non-nGPT variants (reference: 2000 of 10000 steps)
weight_decay = 0.1           # non-nGPT variants (nGPT: 0)
eval_interval = 20
eval_iters = 10
seed = 1337
train = True                 # False: only re-read the runs and redo the report
threads = 1                  # OMP_NUM_THREADS of the training runs

FLAGS = {'GPT': dict(), 'nGPT': dict(ngpt=True), 'DiffTransformer': dict(attn='diff'),
         'DiffNGPT': dict(attn='diff', ngpt=True)}


def train_args(cfg, variant):
    f = FLAGS[variant]
    args = dict(data=cfg['data'], data_root=cfg['data_root'], out_dir=cfg['out_dir'], run_name=variant,
                n_layer=cfg['n_layer'], n_head=cfg['n_head'] // (2 if f.get('attn') == 'diff' else 1),
                n_embd=cfg['n_embd'], block_size=cfg['block_size'], batch_size=cfg['batch_size'],
                max_iters=cfg['max_iters'], pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False,
                tie_embeddings=False, learning_rate=cfg['learning_rate'], min_lr=0.0, lr_schedule='cosine',
                warmup_iters=0 if f.get('ngpt') else int(cfg['warmup_frac'] * cfg['max_iters']),
                weight_decay=0.0 if f.get('ngpt') else cfg['weight_decay'], eval_interval=cfg['eval_interval'],
                eval_iters=cfg['eval_iters'], log_interval=max(1, cfg['eval_interval'] // 5), seed=cfg['seed'],
                log_tensorboard=False, auto_prepare=True, **f)
    return [f'--{k}={v}' for k, v in args.items()]


def steps_to_reach(evals, target):
    """First (linearly interpolated) step where the validation loss is <= target; None if never."""
    prev = None
    for step, loss in evals:
        if loss <= target:
            if prev is None or prev[1] == loss:
                return float(step)
            return prev[0] + (step - prev[0]) * (prev[1] - target) / (prev[1] - loss)
        prev = (step, loss)
    return None


def report(cfg, runs):
    """runs: {variant: run_dir} -> markdown table (printed, saved) and the loss-vs-tokens figure."""
    plt = pyplot()
    ev = {v: read_metrics(d) for v, d in runs.items()}
    evals = {v: [(e['step'], e['val_loss']) for e in es if e['event'] == 'evaluate'] for v, es in ev.items()}
    base = variants[0]
    target = evals[base][-1][1]
    base_steps = steps_to_reach(evals[base], target)
    rows = []
    for v, es in ev.items():
        begin = [e for e in es if e['event'] == 'train_begin'][0]
        ms = sorted(e['ms_per_step'] for e in es if e['event'] == 'train')[1:]  # the first interval warms up
        s = steps_to_reach(evals[v], target)
        # the other way round: how many steps the baseline needed for this variant's final loss
        b = steps_to_reach(evals[base], evals[v][-1][1])
        rows.append({'variant': v, 'params': f"{begin['params']:,}", 'final val loss': f"{evals[v][-1][1]:.4f}",
                     f'steps to {base} final ({target:.3f})': 'not reached' if s is None else f'{s:.0f}',
                     f'ratio to {base}': '-' if s is None else f'{s / base_steps:.2f}',
                     f'{base} steps to this final loss': '-' if b is None else f'{b:.0f}',
                     'ms/step (median)': f"{ms[len(ms) // 2]:.0f}" if ms else '-'})
    base_ms = float(rows[0]['ms/step (median)'])
    for r in rows:
        r['step time ratio'] = f"{float(r['ms/step (median)']) / base_ms:.2f}"
    keys = list(rows[0])
    table = '\n'.join(['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)] +
                      ['| ' + ' | '.join(r[k] for k in keys) + ' |' for r in rows])
    with open(os.path.join(cfg['out_dir'], 'results.md'), 'w') as f:
        f.write(table + '\n')
    with open(os.path.join(cfg['out_dir'], 'results.json'), 'w') as f:
        json.dump({'rows': rows, 'runs': runs, 'target_val_loss': target}, f, indent=2)
    print(table)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for (v, es), color in zip(ev.items(), ('black', 'tab:blue', 'tab:red', 'tab:purple')):
        tr = [(e['tokens'], e['loss']) for e in es if e['event'] == 'train']
        va = [(e['tokens'], e['val_loss']) for e in es if e['event'] == 'evaluate']
        axes[0].plot(*zip(*tr), color=color, alpha=0.8, lw=1, label=v)
        axes[1].plot(*zip(*va), 'o-', ms=3, color=color, label=v)
    axes[1].axhline(target, color='gray', ls='--', lw=1, label=f'{base} final val loss')
    for ax, what in zip(axes, ('training loss', 'validation loss')):
        ax.set(xlabel='tokens', ylabel=f'{what} (nats/token)', title=f'{what.capitalize()} vs tokens')
        lo = min(l for _, l in evals[base])
        ax.set_ylim(lo - 0.3, lo + 2.5)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{cfg['data']}: {cfg['n_layer']} layers x {cfg['n_embd']}, {cfg['max_iters']} steps of "
                 f"{cfg['batch_size']}x{cfg['block_size']} tokens, equal parameter count")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(cfg['figure'])), exist_ok=True)
    fig.savefig(cfg['figure'], dpi=90)
    plt.close(fig)
    print(f"wrote {cfg['out_dir']}/results.md and {cfg['figure']}")


def main():
    cfg = configurator.configure(globals())
    unknown = [v for v in variants if v not in FLAGS]
    if unknown or not variants:
        raise configurator.UserError(f"unknown variants {unknown or '(none given)'}; choose from {list(FLAGS)}")
    if n_head % 2:
        raise configurator.UserError(f"n_head={n_head} is odd: the differential variants use n_head // 2 heads of two "
                                     f"halves each; pick an even n_head")
    os.chdir(ROOT)  # relative paths (out/, data/, figures/) are the repository's, as for the launcher
    runs = {}
    for v in variants:
        if train:  # the run dir comes from train.py's train_end marker (it versions names: GPT_v2 ...)
            runs[v] = train_run(train_args(cfg, v), threads=threads, echo=('',))
        else:  # the newest version of the variant's run
            names = [n for n in os.listdir(out_dir) if n == v or n.startswith(v + '_v')] if os.path.isdir(out_dir) else []
            if not names:
                raise configurator.UserError(f"no run of {v} in {out_dir}: run with --train=True first")
            runs[v] = os.path.join(out_dir, max(names, key=lambda n: int(n.rsplit('_v', 1)[1]) if '_v' in n else 1))
    report(cfg, runs)


if __name__ == '__main__':
    configurator.run_main(main)
