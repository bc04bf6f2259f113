"""The CPU positional-encoding study: one small model per pos_emb encoding and seed on the embedded corpus
with algorithmic tasks mixed in, evaluated in and out of distribution; tables of mean ± std over seeds and
figures with seed bands.

    ./launcher.sh pe_study                       # = python analysis/pe_study.py config/pe_study.py
    ./launcher.sh pe_study --quick=True          # seconds: tiny models, a few steps, 2 seeds (smoke test)

Steps: prepare/<data>.py if the data set is missing and prepare/algorithmic.py (both before anything runs
in parallel), then train.py per encoding and seed, `jobs` side by side (analysis.study.in_parallel; a
finished run made by the same arguments is reused), then eval_tasks.py algorithmic per run (algorithmic
accuracy and perplexity by position, also `jobs` side by side, reused when done with the same settings).
Writes <out_dir>/results.{md,json} (per-seed numbers in the JSON) and
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
from configurator import Each, OneOf, Range, Text  # noqa: E402
from analysis.study import ROOT, in_parallel, pyplot, read_metrics, run_script, train_run  # noqa: E402
from analysis.study import fmt as fmt_ms  # noqa: E402
from analysis.pe_encodings import refuse_undrawable  # noqa: E402
import data as datalib  # noqa: E402
from model import POS_EMBS  # noqa: E402

data: Text('data set name under data_root') = 'stdlib'
data_root: Text('folder of data sets') = 'data'
out_dir: Text('folder for the runs and results') = 'out/pe_study'
figures_dir: Text('folder for the figures') = 'figures/pe_study'
encodings: Each(OneOf(POS_EMBS), min_len=1) = list(POS_EMBS)  # default: every encoding model.py declares
n_layer: Range(1) = 2
n_head: Range(1) = 2
n_embd: Range(1) = 128
block_size: Range(1) = 128
batch_size: Range(1) = 16
max_iters: Range(1) = 200
learning_rate: Range(0, lo_open=True) = 3e-3
warmup_iters: Range(0) = 20
algo_mix: Range(0, 1) = 0.1
algo_examples: Range(1) = 20000
eval_n: Range(1) = 40              # examples per task and per split (in / out of distribution)
eval_windows: Range(1) = 8         # val windows of 4x the context for perplexity by position
seeds: Each(Range(0), min_len=1) = [1, 2, 3]  # training seeds: every encoding is trained once per seed (same data)
jobs: Range(1) = 2                 # training runs (and evaluations) side by side; on a 2-core CPU, 2
threads: Range(1) = 1              # torch threads per training process (the CPU is often shared)
quick: bool = False                # tiny models, a few steps, the first two seeds: the whole study in seconds (tests)
figures_only: bool = False         # redo the table and figures from <out_dir>/results.json (no training)


def check_settings():
    """What the declarations above cannot say, checked before anything is written (UserError: one line, exit 2)."""
    UserError = configurator.UserError
    if not all(type(s) is int for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds={seeds!r}: give distinct non-negative integers, e.g. --seeds=[1,2,3]")
    if len(set(encodings)) != len(encodings):
        raise UserError(f"encodings={encodings!r}: give distinct names from {', '.join(POS_EMBS)}")
    refuse_undrawable(encodings)  # the encodings figure draws each one by its kind


def stale(algo_dir):
    """The algorithmic set exists but was made with other settings: rebuild it."""
    if not datalib.is_prepared(algo_dir):
        return False
    meta = datalib.load_meta(algo_dir)
    return meta.get('records', {}).get('train') != algo_examples or meta.get('block_size') != block_size


def evaluate(run_dir):
    """eval_tasks.py algorithmic on one run (a subprocess, so evaluations run side by side); reused when the
    run's eval was made with the same arguments (a retrained run's directory is cleared, eval included)."""
    args = ['eval_tasks.py', 'algorithmic', f'--ckpt={run_dir}', f'--data={data}', f'--data_root={data_root}',
            f'--algo_n={eval_n}', f'--algo_ppl_windows={eval_windows}', '--algo_fewshot=0', '--device=cpu']
    done = os.path.join(run_dir, 'pe_eval_args.json')
    path = os.path.join(run_dir, 'eval_algorithmic.json')
    if not (os.path.exists(done) and os.path.exists(path) and json.load(open(done)) == args):
        run_script(args, threads=threads, quiet=True)
        with open(done, 'w') as f:
            json.dump(args, f)
    with open(path) as f:
        rows = json.load(f)
    tasks, ppl = rows[:-3], {r['task'][4:]: r['in_dist'] if r['task'] == 'ppl_1x' else r['out_dist'] for r in rows[-3:]}
    ms = read_metrics(run_dir)
    # mean over the tasks that could be evaluated (learned positions cannot go past block_size)
    mean = lambda k: (round(float(np.mean([r[k] for r in tasks if r[k] is not None])), 4)
                      if any(r[k] is not None for r in tasks) else None)
    return {'val_loss': [m for m in ms if m['event'] == 'evaluate'][-1]['val_loss'],
            'params': next(m['params'] for m in ms if m['event'] == 'train_begin'),
            'train_seconds': next(m['seconds'] for m in ms if m['event'] == 'train_end'),
            'ppl': ppl, 'loss_by_position': rows[-1]['loss_by_position'], 'tasks': tasks,
            'id_acc': mean('in_dist'), 'ood_acc': mean('out_dist')}


def cell(values, digits=3):
    """'mean ± std' over seeds; 'n/a' where the value does not exist (learned positions past block_size)."""
    return 'n/a' if any(v is None for v in values) else fmt_ms(values, digits)


def per_seed(res, *keys):
    """One value per seed: res[seed][keys[0]][keys[1]]..."""
    out = []
    for r in res.values():
        for k in keys:
            r = r[k]
        out.append(r)
    return out


def tables(results):
    n = len(next(iter(results.values())))
    lines = ['| pos_emb | params | val loss | ppl 1x | ppl 2x | ppl 4x | tasks id acc | tasks ood acc* |',
             '|---|---|---|---|---|---|---|---|']
    for enc, res in results.items():
        lines.append(f"| {enc} | {per_seed(res, 'params')[0]:,} | {cell(per_seed(res, 'val_loss'))} | "
                     + ' | '.join(cell(per_seed(res, 'ppl', x), 1) for x in ('1x', '2x', '4x')) + ' | '
                     + f"{cell(per_seed(res, 'id_acc'))} | {cell(per_seed(res, 'ood_acc'))} |")
    tasks = [t['task'] for t in next(iter(next(iter(results.values())).values()))['tasks']]
    lines += ['', f'Every cell: mean ± sample std over the {n} seeds (per-seed values in results.json). '
              '*Mean exact match over the six tasks; for learned, over the tasks whose examples fit block_size.',
              '', f'Exact match per task, in distribution / out of distribution (mean ± std over {n} seeds):', '',
              '| pos_emb | ' + ' | '.join(tasks) + ' |', '|---|' + '---|' * len(tasks)]
    for enc, res in results.items():
        lines.append(f'| {enc} | ' + ' | '.join(
            f"{cell(per_seed(res, 'tasks', i, 'in_dist'), 2)} / {cell(per_seed(res, 'tasks', i, 'out_dist'), 2)}"
            for i in range(len(tasks))) + ' |')
    return '\n'.join(lines) + '\n'


def band(ax, xs, ys, color, label, **kw):
    """Mean over seeds as a line, min..max over seeds as a shaded band. ys: one row per seed."""
    ys = np.asarray(ys, dtype=float)
    ax.fill_between(xs, ys.min(0), ys.max(0), color=color, alpha=0.2, lw=0)
    ax.plot(xs, ys.mean(0), color=color, label=label, **kw)


def figures(results, runs, learned_ckpt):
    plt = pyplot()
    from analysis.pe_encodings import plot_encodings, learned_table
    os.makedirs(figures_dir, exist_ok=True)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    n = len(next(iter(runs.values())))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, (enc, dirs) in enumerate(runs.items()):
        tr, ev = [], []
        for d in dirs.values():
            ms = read_metrics(d)
            tr.append([(m['tokens'], m['loss']) for m in ms if m['event'] == 'train'])
            ev.append([(m['tokens'], m['val_loss']) for m in ms if m['event'] == 'evaluate'])
        ax.plot([t for t, _ in tr[0]], np.mean([[v for _, v in r] for r in tr], 0), color=colors[c], alpha=0.3, lw=1)
        band(ax, [t for t, _ in ev[0]], [[v for _, v in r] for r in ev], colors[c], enc, marker='o', ms=3)
    ax.set(xlabel='training tokens', ylabel='loss (nats/token)',
           title=f'pe_study: val loss (train faint), mean of {n} seeds, band min..max')
    ax.set_ylim(top=min(8.5, ax.get_ylim()[1]))
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(figures_dir, 'loss_curves.png'), dpi=90)
    plt.close(fig)

    k = max(1, block_size // 8)  # average over buckets of positions (8 per training context)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, (enc, res) in enumerate(results.items()):
        y = np.asarray(per_seed(res, 'loss_by_position'), dtype=float)
        y = y[:, :y.shape[1] // k * k].reshape(len(y), -1, k).mean(2)
        band(ax, np.arange(y.shape[1]) * k + k / 2, np.exp(y), colors[c], enc)
    ax.axvline(block_size, color='k', ls='--', lw=1, label='training context')
    ax.set(xlabel=f'position (mean over buckets of {k})', ylabel='perplexity', yscale='log',
           title=f'pe_study: perplexity by position, {eval_windows} val windows of 4x the context\n'
                 f'mean of {n} seeds, band min..max')
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(figures_dir, 'ppl_by_position.png'), dpi=90)
    plt.close(fig)

    first = next(iter(results.values()))
    tasks = [t['task'] for t in next(iter(first.values()))['tasks']]
    acc = lambda res, i, k: [np.nan if v is None else v for v in per_seed(res, 'tasks', i, k)]
    stats = np.array([[[np.mean(acc(res, i, k)), np.std(acc(res, i, k), ddof=1) if n > 1 else 0.0]
                       for i in range(len(tasks)) for k in ('in_dist', 'out_dist')] for res in results.values()])
    mat, sd = stats[..., 0], stats[..., 1]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    im = ax.imshow(mat, cmap='viridis', vmin=0, vmax=1, aspect='auto')
    ax.set_xticks(range(2 * len(tasks)), [f'{t} {s}' for t in tasks for s in ('id', 'ood')], rotation=45, ha='right',
                  fontsize=8)
    ax.set_yticks(range(len(results)), list(results), fontsize=8)
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, 'n/a' if np.isnan(v) else f'{v:.2f}\n±{sd[i, j]:.2f}', ha='center', va='center', fontsize=5.5,
                color='k' if np.isnan(v) or v >= 0.5 else 'w')
    ax.set_title(f'pe_study: greedy exact match per task, in (id) and out of distribution (ood)\n'
                 f'mean ± std over {n} seeds', fontsize=10)
    fig.colorbar(im, ax=ax, label='accuracy (mean over seeds)')
    fig.tight_layout()
    fig.savefig(os.path.join(figures_dir, 'task_accuracy.png'), dpi=110)  # small cell labels
    plt.close(fig)

    learned = learned_table(learned_ckpt) if learned_ckpt else None
    plot_encodings(os.path.join(figures_dir, 'encodings.png'), 2 * block_size, n_embd, learned, n_embd // n_head,
                   names=list(runs))


def main():
    global n_layer, n_head, n_embd, block_size, batch_size, max_iters, warmup_iters, algo_examples, eval_n, eval_windows
    global seeds, out_dir, figures_dir
    config = configurator.configure(globals())
    check_settings()
    if quick:  # outputs under <out_dir>/quick/, so a smoke run never clears the study's runs
        n_layer, n_head, n_embd, block_size, batch_size, max_iters, warmup_iters = 1, 2, 16, 32, 4, 4, 2
        algo_examples, eval_n, eval_windows, seeds = 200, 1, 1, seeds[:2]
        out_dir = os.path.join(out_dir, 'quick')
        figures_dir = os.path.join(out_dir, 'figures')
        config.update(seeds=seeds, out_dir=out_dir, figures_dir=figures_dir)
    torch.set_num_threads(threads)
    if figures_only:
        with open(os.path.join(out_dir, 'results.json')) as f:
            saved = json.load(f)
        figures(saved['results'], saved['runs'], next(iter(saved['runs'].get('learned', {}).values()), None))
        print(f"wrote {figures_dir}/*.png from {out_dir}/results.json")
        return
    t0 = time.time()
    # everything the runs read is made here, before anything runs side by side
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

    def train(item):
        enc, seed = item
        return train_run(
            [f'--data={data}', f'--data_root={data_root}', f'--pos_emb={enc}', f'--n_layer={n_layer}',
             f'--n_head={n_head}', f'--n_embd={n_embd}', f'--block_size={block_size}', f'--batch_size={batch_size}',
             f'--max_iters={max_iters}', f'--learning_rate={learning_rate}', f'--min_lr={learning_rate / 10}',
             f'--warmup_iters={warmup_iters}', '--lr_schedule=wsd', '--decay_frac=0.2',
             f'--eval_interval={max(1, max_iters // 5)}', '--eval_iters=10', f'--log_interval={max(1, max_iters // 10)}',
             f'--algo_data={algo}', f'--algo_mix={algo_mix}', '--log_tensorboard=False', f'--seed={seed}',
             '--device=cpu'], out_dir=out_dir, run_name=f'pe_{enc}_s{seed}', threads=threads)

    # seeds outermost: an interrupted study has whole first seeds to reuse
    items = [(enc, s) for s in seeds for enc in encodings]
    print(f"== training {len(items)} runs ({len(encodings)} encodings x seeds {seeds}), {jobs} at a time", flush=True)
    dirs = in_parallel(train, items, jobs)
    t_train = time.time() - t0
    print(f"== evaluating {len(items)} runs, {jobs} at a time", flush=True)
    evals = in_parallel(evaluate, dirs, jobs)
    runs = {enc: {} for enc in encodings}
    results = {enc: {} for enc in encodings}
    for (enc, s), d, r in zip(items, dirs, evals):
        runs[enc][str(s)], results[enc][str(s)] = d, r
    for enc, res in results.items():
        print(f"== {enc}: val loss {cell(per_seed(res, 'val_loss'))}, ppl 1x {cell(per_seed(res, 'ppl', '1x'), 1)}, "
              f"tasks id {cell(per_seed(res, 'id_acc'))} ood {cell(per_seed(res, 'ood_acc'))}", flush=True)
    train_s = sum(r['train_seconds'] for res in results.values() for r in res.values())
    md = (f"pe_study: {n_layer} layers x {n_embd}, {n_head} heads, block {block_size}, batch {batch_size}, "
          f"{max_iters} steps ({max_iters * batch_size * block_size:,} tokens), algo_mix {algo_mix}, data {data}; "
          f"seeds {seeds}; {eval_n} examples per task and split; {len(items)} runs, {jobs} at a time: "
          f"{time.time() - t0:.0f}s wall in all ({t_train:.0f}s to the end of training), "
          f"sum of the runs' train_end seconds {train_s:.0f}s\n\n") + tables(results)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump({'config': config, 'seeds': seeds, 'runs': runs, 'results': results}, f, indent=1)
    with open(os.path.join(out_dir, 'results.md'), 'w') as f:
        f.write(md)
    figures(results, runs, runs['learned'][str(seeds[0])] if 'learned' in runs else None)
    with open(os.path.join(figures_dir, 'results.md'), 'w') as f:
        f.write(md)
    print(md)
    print(f"wrote {out_dir}/results.md, {out_dir}/results.json and {figures_dir}/*.png")


if __name__ == '__main__':
    configurator.run_main(main)
