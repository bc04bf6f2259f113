"""Softmax vs linear attention on numeric sequences, one command: train both with several seeds (or take one
checkpoint of each), evaluate every model at training and longer lengths, report mean ± std over the seeds,
draw the analysis figures, write a summary.

    ./launcher.sh numeric_compare                                        # 2 models x 3 seeds (CPU minutes)
    ./launcher.sh numeric_compare --quick=True                           # seconds: tiny models, 2 seeds (smoke test)
    ./launcher.sh numeric_compare --softmax_ckpt=out/numeric_softmax_s1337 --linear_ckpt=out/numeric_linear_s1337

Runs go to out_dir/numeric_<attn>_s<seed>; a finished run made by the same arguments is reused, not redone.
Up to `jobs` trainings run side by side (1 thread each). A given checkpoint counts as that model's one seed.
Results in results_dir: summary.md (table of mean ± std over seeds + figures), eval_numeric.json (every
seed's rows), figures/*.png. Embedding PCA, attention maps and neuron selectivity use the first seed's models;
the loss curves show every seed (mean and min-max band). --quick=True writes under out_dir/quick and
results_dir/quick.
"""
import json
import os
import sys
import time

import torch

from numeric_common import ROOT, load_model, model_label, numeric_meta
from analysis.study import check_seeds, fmt, in_parallel, mean_std, read_metrics, train_run
import configurator
from configurator import Each, Range, Text, UserError
import data as datalib

softmax_ckpt: Text('softmax checkpoint or run dir') = ''  # '' = train config/numeric_softmax.py with every seed
linear_ckpt: Text('linear checkpoint or run dir') = ''    # '' = train config/numeric_linear.py with every seed
seeds: Each(Range(0), min_len=1) = [1, 2, 3]  # one training run per model and seed; the table is mean ± std over them
jobs: Range(1) = 2               # trainings side by side (1 thread each): two on an idle 2-core CPU
out_dir: Text('folder for the training runs') = 'out/numeric_compare/runs'
results_dir: Text('folder for the tables and figures') = 'out/numeric_compare'
data: Text('numeric data set name under data_root') = 'numeric'
data_root: Text('folder of data sets') = 'data'
max_iters: Range(0) = 0          # > 0 overrides both configs' max_iters (train.py refuses one below their
                                 # warmup_iters, 100)
prompt_values: Range(0) = 4      # values given before the scored continuation
max_records: Range(0) = 0        # per split and model (0 = all test / test_long records)
batch_size: Range(1) = 200
attention_types: Text('comma-separated sequence types') = 'counting,arithmetic,alternating'  # one figure per type
attention_length: Range(1) = 12
neuron_sequences: Range(1) = 200  # per type, for neuron selectivity
quick: bool = False              # tiny models, 8 steps, the first two seeds, 40 records: the whole study in seconds

KINDS = ('softmax', 'linear')
METRICS = ('next_acc', 'exact', 'loss')
QUICK_TRAIN = ['--n_embd=32', '--n_head=2', '--batch_size=8', '--max_iters=8', '--warmup_iters=2', '--eval_interval=4',
               '--eval_iters=2', '--log_interval=2', '--log_figures=False']


def train(kind, seed):
    """Train config/numeric_<kind>.py with this seed into out_dir/numeric_<kind>_s<seed> (or reuse it);
    returns its absolute run dir."""
    args = [f'config/numeric_{kind}.py', f'--seed={seed}', f'--data={data}', f'--data_root={data_root}']
    args += QUICK_TRAIN if quick else []
    args += [f'--max_iters={max_iters}'] if max_iters else []
    return os.path.join(ROOT, train_run(args, out_dir, f'numeric_{kind}_s{seed}'))  # as given when absolute


def run_dir_of(path):
    """The run directory of a checkpoint path (run dir itself, or <run>/ckpt/x.pt), if it has metrics."""
    d = path if os.path.isdir(path) else os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return d if os.path.isfile(os.path.join(d, 'metrics.jsonl')) else None


def side_by_side(rows, labels):
    """One markdown table: per (split, type), next-token accuracy, exact match and loss of every model as
    mean ± std over its seeds. rows[label] = [rows of one seed, as numeric_rows gives them]."""
    first = rows[labels[0]][0]
    head = ['split', 'values', 'type'] + [f'{l} {m}' for l in labels for m in METRICS]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for i, r0 in enumerate(first):
        cells = [r0['split'], r0['lengths'], r0['type']]
        for l in labels:
            cells += [fmt([seed_rows[i][m] for seed_rows in rows[l]]) for m in METRICS]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def mean_std_rows(per_seed):
    """[rows of one seed] -> one row per (split, type) with mean and std over the seeds of every metric."""
    out = []
    for i, r0 in enumerate(per_seed[0]):
        row = {k: r0[k] for k in ('split', 'lengths', 'type', 'sequences')}
        for m in METRICS:
            row[m], row[m + '_std'] = (round(x, 4) for x in mean_std([rows[i][m] for rows in per_seed]))
        out.append(row)
    return out


def evaluate(kind, path, data_dir, meta):
    """Rows of one model on test and test_long, and what it is (label, size, training time)."""
    from eval_tasks import check_same_tokenizer, numeric_rows, numeric_scores
    model, _, ckpt = load_model(path)
    check_same_tokenizer(data_dir, ckpt['tokenizer'])
    if ckpt['model_config']['attn'] != kind:
        raise UserError(f"--{kind}_ckpt={path} is a {ckpt['model_config']['attn']} attention model; pass a {kind} one")
    rows = []
    for sp in ('test', 'test_long'):
        recs = datalib.open_records(data_dir, sp, model.config.vocab_size)
        if max_records:
            recs.offsets = recs.offsets[:max_records]
        lens = [len(recs[i]['seq']) - 1 for i in range(len(recs))]
        print(f"--- evaluating {kind} {path} on {sp} ({len(recs)} sequences)", flush=True)
        with torch.no_grad():
            acc = numeric_scores(model, recs, len(meta['types']), prompt_values, batch_size, 'cpu')
        rows += numeric_rows(acc, meta['types'], sp, f'{min(lens)}-{max(lens)}')
    run_dir = run_dir_of(path)
    secs = None
    if run_dir:
        ends = [e for e in read_metrics(run_dir) if e.get('event') == 'train_end']
        secs = ends[-1].get('seconds') if ends else None
    info = {'checkpoint': path, 'run_dir': run_dir, 'label': model_label(ckpt), 'step': ckpt.get('step'),
            'params': model.num_params(), 'train_seconds': secs}
    return rows, info


def main():
    global seeds, out_dir, results_dir, max_records, neuron_sequences
    configurator.configure(globals())
    check_seeds(seeds)
    if quick:
        seeds, max_records, neuron_sequences = list(seeds)[:2], 40, 5
        out_dir, results_dir = os.path.join(out_dir, 'quick'), os.path.join(results_dir, 'quick')
    os.chdir(ROOT)  # relative paths (out/, data/, config/) are the repository's, as for the launcher
    t0 = time.time()
    data_dir = os.path.join(data_root, data)
    given = {'softmax': softmax_ckpt, 'linear': linear_ckpt}
    for path in given.values():
        if path:
            load_model(path)  # a bad checkpoint fails here, before minutes of training the other model
    # seeds outermost: softmax and linear of one seed train side by side (about the same time each)
    todo = [(kind, s) for s in seeds for kind in KINDS if not given[kind]]
    trained = dict(zip(todo, in_parallel(lambda ks: train(*ks), todo, jobs)))
    paths = {kind: [given[kind]] if given[kind] else [trained[(kind, s)] for s in seeds] for kind in KINDS}
    model_seeds = {kind: [None] if given[kind] else list(seeds) for kind in KINDS}
    meta = numeric_meta(data_dir)
    import embedding_pca, attention_maps, neuron_selectivity, loss_curves
    fig_dir = os.path.join(results_dir, 'figures')
    os.makedirs(fig_dir, exist_ok=True)

    rows, info = {}, {}
    for kind in KINDS:
        rows[kind], info[kind] = [], []
        for seed, path in zip(model_seeds[kind], paths[kind]):
            r, i = evaluate(kind, path, data_dir, meta)
            rows[kind].append(r)
            info[kind].append({'seed': seed, **i})
    labels = list(KINDS)
    table = side_by_side(rows, labels)
    n = {k: len(paths[k]) for k in KINDS}
    train_secs = [i['train_seconds'] for k in KINDS for i in info[k] if i['train_seconds']]

    print("--- figures", flush=True)
    firsts = [paths[k][0] for k in KINDS]  # the interpretability figures: the first seed's model of each kind
    figs = [embedding_pca.plot_embedding_pca(firsts, os.path.join(fig_dir, 'embedding_pca.png'))]
    for t in [s.strip() for s in attention_types.split(',') if s.strip()]:
        figs.append(attention_maps.plot_attention_maps(firsts, data_dir, t, attention_length,
                                                       os.path.join(fig_dir, f'attention_{t}.png')))
    p, sel = neuron_selectivity.plot_neuron_selectivity(firsts, data_dir, os.path.join(fig_dir, 'neuron_selectivity.png'),
                                                        'test', neuron_sequences, 20)
    figs.append(p)
    groups = {f'{k} attention': [i['run_dir'] for i in info[k] if i['run_dir']] for k in KINDS}
    groups = {g: dirs for g, dirs in groups.items() if dirs}
    if groups:
        figs.append(loss_curves.plot_loss_bands(groups, os.path.join(fig_dir, 'loss_curves.png')))

    def describe(k):
        i0 = info[k][0]
        secs = [i['train_seconds'] for i in info[k] if i['train_seconds']]
        where = (f"seeds {model_seeds[k]}, runs `{out_dir}/numeric_{k}_s<seed>`" if model_seeds[k][0] is not None else f"checkpoint `{i0['checkpoint']}` (one model)")
        return (f"- **{k}**: {i0['label']}, {i0['params']:,} parameters, {where}"
                + (f"; trained in {', '.join(f'{x:.0f}' for x in secs)} s" if secs else ''))
    models = '\n'.join(describe(k) for k in KINDS)
    sel_lines = '\n'.join(f"- {s['model']}: mean selectivity {s['mean_si']}, {s['frac_si_above_0.5']:.1%} of "
                          f"{s['neurons']} neurons above 0.5; preferred types of those: {s['preferred_type_si_above_0.5']}"
                          for s in sel)
    first_of = ', '.join(f"{k} seed {model_seeds[k][0]}" if model_seeds[k][0] is not None else f"{k} given checkpoint"
                         for k in KINDS)
    summary = (f"# Softmax vs linear attention on numeric sequences\n\n{models}\n\n"
               f"Scored: the values after the first {prompt_values} of each sequence (next_acc: teacher-forced "
               f"next-token accuracy; exact: the whole greedy continuation right; loss: nats per scored token). "
               f"test = training lengths, test_long = longer than any training sequence. Every cell is mean ± std "
               f"(sample std) over the models of that kind: {', '.join(f'{k} n={n[k]}' for k in KINDS)}; every "
               f"seed's numbers are in eval_numeric.json.\n\n{table}\n\n"
               f"## Neuron selectivity ({first_of})\n\n{sel_lines}\n\n## Figures\n\n"
               f"Embedding PCA, attention maps and neuron selectivity show the first seed's models ({first_of}); "
               f"the loss curves show the mean over seeds with a min-max band.\n\n"
               + '\n'.join(f"![{os.path.basename(f)}](figures/{os.path.basename(f)})" for f in figs)
               + f"\n\nCommand: `{' '.join(['./launcher.sh numeric_compare'] + sys.argv[2:])}`; "
                 f"{time.time() - t0:.0f} s in all (training: {sum(train_secs):.0f} s summed over "
                 f"{len(train_secs)} runs' train_end markers, up to {jobs} side by side).\n")
    with open(os.path.join(results_dir, 'summary.md'), 'w') as f:
        f.write(summary)
    with open(os.path.join(results_dir, 'eval_numeric.json'), 'w') as f:
        json.dump({'seeds': model_seeds, 'models': info,
                   'mean_std': {k: mean_std_rows(rows[k]) for k in KINDS},
                   'per_seed': {k: [{'seed': s, 'rows': r} for s, r in zip(model_seeds[k], rows[k])] for k in KINDS},
                   'neuron_selectivity': sel, 'train_seconds_sum': sum(train_secs)}, f, indent=2)
    print(table)
    print(f"training: {sum(train_secs):.0f} s summed over {len(train_secs)} runs (train_end seconds)")
    print(f"wrote {results_dir}/summary.md, eval_numeric.json and {len(figs)} figures ({time.time() - t0:.0f} s)")


if __name__ == '__main__':
    configurator.run_main(main)
