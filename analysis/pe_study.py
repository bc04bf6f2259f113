"""The CPU positional-encoding study: one small model per pos_emb encoding on the embedded corpus
with algorithmic tasks mixed in, evaluated in and out of distribution; one table and figures.

    ./launcher.sh pe_study                       # = python analysis/pe_study.py config/pe_study.py
    ./launcher.sh pe_study --quick=True          # seconds: tiny models, a few steps (smoke test)

Steps: prepare/<data>.py if the data set is missing, prepare/algorithmic.py, train.py per encoding
(subprocesses; each run's dir is reused when its config is unchanged), then in this process
eval_tasks' algorithmic accuracy and perplexity by position. Writes <out_dir>/results.{md,json} and
figures_dir/{loss_curves,ppl_by_position,task_accuracy,encodings}.png and results.md.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import configurator  # noqa: E402
from analysis.study import ROOT, pyplot, read_metrics, run_script, train_run  # noqa: E402
import data as datalib  # noqa: E402
from model import POS_EMBS  # noqa: E402

data = 'stdlib'
data_root = 'data'
out_dir = 'out/pe_study'
figures_dir = 'figures/pe_study'
encodings = list(POS_EMBS)
n_layer = 2
n_head = 2
n_embd = 128
block_size = 128
batch_size = 16
max_iters = 200
learning_rate = 3e-3
warmup_iters = 20
algo_mix = 0.1
algo_examples = 20000
eval_n = 40              # examples per task and per split (in / out of distribution)
eval_windows = 8         # val windows of 4x the context for perplexity by position
seed = 1337
threads = 1              # torch threads per training process (the CPU is often shared)
quick = False            # tiny models and a few steps: the whole study in seconds (tests)
figures_only = False     # redo the table and figures from <out_dir>/results.json (no training)


def stale(algo_dir):
    """The algorithmic set exists but was made with other settings: rebuild it."""
    if not datalib.is_prepared(algo_dir):
        return False
    meta = datalib.load_meta(algo_dir)
    return meta.get('records', {}).get('train') != algo_examples or meta.get('block_size') != block_size


def evaluate(run_dir, val):
    import eval_tasks
    from checkpoint import load_checkpoint, model_from_checkpoint
    model, tok = model_from_checkpoint(load_checkpoint(run_dir))
    rows = eval_tasks.algorithmic_accuracy(model, tok, val, eval_n, 0, seed=4321)
    ppl, curve = eval_tasks.position_perplexity(model, val, eval_windows)
    ev = [m for m in read_metrics(run_dir) if m['event'] == 'evaluate']
    # mean over the tasks that could be evaluated (learned positions cannot go past block_size)
    mean = lambda k: (round(float(np.mean([r[k] for r in rows if r[k] is not None])), 3)
                      if any(r[k] is not None for r in rows) else None)
    return {'val_loss': ev[-1]['val_loss'], 'params': model.num_params(), 'ppl': ppl, 'loss_by_position': curve,
            'tasks': rows, 'id_acc': mean('in_dist'), 'ood_acc': mean('out_dist')}


def fmt(x, nd=3):
    return 'n/a' if x is None else (f'{x:.{nd}f}' if isinstance(x, float) else str(x))


def tables(results):
    lines = ['| pos_emb | params | val loss | ppl 1x | ppl 2x | ppl 4x | tasks id acc | tasks ood acc* |',
             '|---|---|---|---|---|---|---|---|']
    for enc, r in results.items():
        lines.append(f"| {enc} | {r['params']:,} | {r['val_loss']:.3f} | {fmt(r['ppl']['1x'], 1)} | "
                     f"{fmt(r['ppl']['2x'], 1)} | {fmt(r['ppl']['4x'], 1)} | {fmt(r['id_acc'])} | {fmt(r['ood_acc'])} |")
    tasks = [t['task'] for t in next(iter(results.values()))['tasks']]
    lines += ['', '*mean exact match over the six tasks; for learned, over the tasks whose examples fit block_size.',
              '', 'Exact match per task, in distribution / out of distribution:', '',
              '| pos_emb | ' + ' | '.join(tasks) + ' |', '|---|' + '---|' * len(tasks)]
    for enc, r in results.items():
        lines.append(f'| {enc} | ' + ' | '.join(f"{fmt(t['in_dist'], 2)} / {fmt(t['out_dist'], 2)}" for t in r['tasks'])
                     + ' |')
    return '\n'.join(lines) + '\n'


def figures(results, runs, learned_ckpt):
    plt = pyplot()
    from analysis.pe_encodings import plot_encodings, learned_table
    os.makedirs(figures_dir, exist_ok=True)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, (enc, d) in enumerate(runs.items()):
        ms = read_metrics(d)
        tr = [(m['tokens'], m['loss']) for m in ms if m['event'] == 'train']
        ev = [(m['tokens'], m['val_loss']) for m in ms if m['event'] == 'evaluate']
        ax.plot(*zip(*tr), color=colors[c], alpha=0.35, lw=1)
        ax.plot(*zip(*ev), color=colors[c], marker='o', ms=3, label=enc)
    ax.set(xlabel='training tokens', ylabel='loss (nats/token)', title='pe_study: train (faint) and val loss')
    ax.set_ylim(top=min(8.5, ax.get_ylim()[1]))
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(figures_dir, 'loss_curves.png'), dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, (enc, r) in enumerate(results.items()):
        y = np.asarray(r['loss_by_position'])
        k = max(1, block_size // 8)  # average over buckets of positions (8 per training context)
        y = y[:len(y) // k * k].reshape(-1, k).mean(1)
        ax.plot(np.arange(len(y)) * k + k / 2, np.exp(y), color=colors[c], label=enc)
    ax.axvline(block_size, color='k', ls='--', lw=1, label='training context')
    ax.set(xlabel=f'position (mean over buckets of {max(1, block_size // 8)})', ylabel='perplexity', yscale='log',
           title=f'pe_study: perplexity by position, {eval_windows} val windows of 4x the context')
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(figures_dir, 'ppl_by_position.png'), dpi=90)
    plt.close(fig)

    tasks = [t['task'] for t in next(iter(results.values()))['tasks']]
    mat = np.array([[np.nan if t[k] is None else t[k] for t in r['tasks'] for k in ('in_dist', 'out_dist')]
                    for r in results.values()], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    im = ax.imshow(mat, cmap='viridis', vmin=0, vmax=1, aspect='auto')
    ax.set_xticks(range(2 * len(tasks)), [f'{t} {s}' for t in tasks for s in ('id', 'ood')], rotation=45, ha='right',
                  fontsize=8)
    ax.set_yticks(range(len(results)), list(results), fontsize=8)
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, 'n/a' if np.isnan(v) else f'{v:.2f}', ha='center', va='center', fontsize=6,
                color='k' if np.isnan(v) or v >= 0.5 else 'w')
    ax.set_title('pe_study: greedy exact match per task, in (id) and out of distribution (ood)')
    fig.colorbar(im, ax=ax, label='accuracy')
    fig.tight_layout()
    fig.savefig(os.path.join(figures_dir, 'task_accuracy.png'), dpi=90)
    plt.close(fig)

    learned = learned_table(learned_ckpt) if learned_ckpt else None
    plot_encodings(os.path.join(figures_dir, 'encodings.png'), 2 * block_size, n_embd, learned, n_embd // n_head)


def main():
    global n_layer, n_head, n_embd, block_size, batch_size, max_iters, warmup_iters, algo_examples, eval_n, eval_windows
    config = configurator.configure(globals())
    if quick:
        n_layer, n_head, n_embd, block_size, batch_size, max_iters, warmup_iters = 1, 2, 16, 32, 4, 4, 2
        algo_examples, eval_n, eval_windows = 200, 1, 1
    bad = [e for e in encodings if e not in POS_EMBS]
    if bad:
        raise configurator.UserError(f"unknown encodings {bad}; valid: {', '.join(POS_EMBS)}")
    torch.set_num_threads(threads)
    if figures_only:
        with open(os.path.join(out_dir, 'results.json')) as f:
            saved = json.load(f)
        figures(saved['results'], saved['runs'], saved['runs'].get('learned'))
        print(f"wrote {figures_dir}/*.png from {out_dir}/results.json")
        return
    t0 = time.time()
    data_dir = os.path.join(data_root, data)
    if not datalib.is_prepared(data_dir):
        script = os.path.join('prepare', f'{data}.py')
        if not os.path.exists(os.path.join(ROOT, script)):
            raise configurator.UserError(f"data set {data_dir} is missing and there is no {script} to make it")
        print(f"== preparing {data_dir}", flush=True)
        run_script([script, f'--out_dir={data_dir}'], threads=threads)
    algo = f'algorithmic_{data}_{block_size}'
    print(f"== algorithmic examples -> {os.path.join(data_root, algo)}", flush=True)
    run_script(['prepare/algorithmic.py', f'--data={data}', f'--data_root={data_root}', f'--block_size={block_size}',
                f'--n_examples={algo_examples}', f'--out_dir={os.path.join(data_root, algo)}',
                f'--force={stale(os.path.join(data_root, algo))}'], threads=threads)
    runs = {}
    for enc in encodings:
        print(f"== train pos_emb={enc}", flush=True)
        # train.py names the run (pe_<enc>, versioned _v2... when another config used the name)
        runs[enc] = train_run(
            [f'--data={data}', f'--data_root={data_root}', f'--out_dir={out_dir}', f'--run_name=pe_{enc}',
             f'--pos_emb={enc}', f'--n_layer={n_layer}', f'--n_head={n_head}', f'--n_embd={n_embd}',
             f'--block_size={block_size}', f'--batch_size={batch_size}', f'--max_iters={max_iters}',
             f'--learning_rate={learning_rate}', f'--min_lr={learning_rate / 10}', f'--warmup_iters={warmup_iters}',
             '--lr_schedule=wsd', '--decay_frac=0.2', f'--eval_interval={max(1, max_iters // 5)}', '--eval_iters=10',
             f'--log_interval={max(1, max_iters // 10)}', f'--algo_data={algo}', f'--algo_mix={algo_mix}',
             '--log_tensorboard=False', f'--seed={seed}', '--device=cpu'], threads=threads)
    val = np.concatenate([np.asarray(s) for s in datalib.open_split(data_dir, 'val')])
    results = {}
    for enc, d in runs.items():
        t = time.time()
        results[enc] = evaluate(d, val)
        print(f"== eval {enc}: val loss {results[enc]['val_loss']:.3f}, ppl 1x/2x/4x {results[enc]['ppl']}, "
              f"tasks id {results[enc]['id_acc']} ood {results[enc]['ood_acc']} ({time.time() - t:.0f}s)", flush=True)
    md = (f"pe_study: {n_layer} layers x {n_embd}, {n_head} heads, block {block_size}, batch {batch_size}, "
          f"{max_iters} steps ({max_iters * batch_size * block_size:,} tokens), algo_mix {algo_mix}, data {data}; "
          f"{eval_n} examples per task and split; {time.time() - t0:.0f}s in all\n\n") + tables(results)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump({'config': config, 'runs': runs, 'results': results}, f, indent=1)
    with open(os.path.join(out_dir, 'results.md'), 'w') as f:
        f.write(md)
    figures(results, runs, runs.get('learned'))
    with open(os.path.join(figures_dir, 'results.md'), 'w') as f:
        f.write(md)
    print(md)
    print(f"wrote {out_dir}/results.md, {out_dir}/results.json and {figures_dir}/*.png")


if __name__ == '__main__':
    configurator.run_main(main)
