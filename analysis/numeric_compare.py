"""Softmax vs linear attention on numeric sequences, one command: train both (or take two checkpoints),
evaluate them side by side at training and longer lengths, draw the analysis figures, write a summary.

    ./launcher.sh numeric_compare                                        # trains both (a few CPU minutes)
    ./launcher.sh numeric_compare --softmax_ckpt=out/numeric_softmax_s1337 --linear_ckpt=out/numeric_linear_s1337

Results in results_dir: summary.md (table + figures), eval_numeric.json, figures/*.png.
"""
import json
import os
import sys
import time

import torch

from numeric_common import ROOT, load_model, model_label, numeric_meta
from analysis.study import read_metrics, train_run
import configurator
from configurator import UserError
import data as datalib

softmax_ckpt = ''             # '' = train config/numeric_softmax.py; else a checkpoint or run dir
linear_ckpt = ''              # '' = train config/numeric_linear.py
out_dir = 'out'               # where the two training runs go
results_dir = 'out/numeric_compare'
data = 'numeric'
data_root = 'data'
seed = 1337
max_iters = 0                 # > 0 overrides both configs' max_iters (e.g. a quick check)
prompt_values = 4             # values given before the scored continuation
max_records = 0               # per split and model (0 = all test / test_long records)
batch_size = 200
attention_types = 'counting,arithmetic,alternating'   # one attention figure per type
attention_length = 12
neuron_sequences = 200        # per type, for neuron selectivity


def train(kind):
    """Train config/numeric_<kind>.py (train.py names the run); returns its absolute run dir."""
    print(f"--- training {kind}", flush=True)
    run_dir = train_run([f'config/numeric_{kind}.py', f'--out_dir={out_dir}', f'--seed={seed}', f'--data={data}',
                         f'--data_root={data_root}'] + ([f'--max_iters={max_iters}'] if max_iters else []), echo=('',))
    return os.path.join(ROOT, run_dir)  # as given when absolute


def run_dir_of(path):
    """The run directory of a checkpoint path (run dir itself, or <run>/ckpt/x.pt), if it has metrics."""
    d = path if os.path.isdir(path) else os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return d if os.path.isfile(os.path.join(d, 'metrics.jsonl')) else None


def side_by_side(rows, labels):
    """One markdown table: per (split, type), next-token accuracy and exact match of every model."""
    keys = []
    for r in rows[labels[0]]:
        keys.append((r['split'], r['lengths'], r['type']))
    head = ['split', 'values', 'type'] + [f'{l} {m}' for l in labels for m in ('next_acc', 'exact', 'loss')]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for i, k in enumerate(keys):
        cells = list(k)
        for l in labels:
            r = rows[l][i]
            cells += [f"{r['next_acc']:.3f}", f"{r['exact']:.3f}", f"{r['loss']:.3f}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main():
    configurator.configure(globals())
    os.chdir(ROOT)  # relative paths (out/, data/, config/) are the repository's, as for the launcher
    t0 = time.time()
    data_dir = os.path.join(data_root, data)
    for given in (softmax_ckpt, linear_ckpt):
        if given:
            load_model(given)  # a bad checkpoint fails here, before minutes of training the other model
    paths = {'softmax': softmax_ckpt or train('softmax'), 'linear': linear_ckpt or train('linear')}
    meta = numeric_meta(data_dir)
    from eval_tasks import check_same_tokenizer, numeric_rows, numeric_scores
    import embedding_pca, attention_maps, neuron_selectivity, loss_curves
    fig_dir = os.path.join(results_dir, 'figures')
    os.makedirs(fig_dir, exist_ok=True)

    rows, info = {}, {}
    for kind, path in paths.items():
        model, _, ckpt = load_model(path)
        check_same_tokenizer(data_dir, ckpt['tokenizer'])
        if ckpt['model_config']['attn'] != kind:
            raise UserError(f"--{kind}_ckpt={path} is a {ckpt['model_config']['attn']} attention model; pass a {kind} one")
        rows[kind] = []
        for sp in ('test', 'test_long'):
            recs = datalib.open_records(data_dir, sp, model.config.vocab_size)
            if max_records:
                recs.offsets = recs.offsets[:max_records]
            lens = [len(recs[i]['seq']) - 1 for i in range(len(recs))]
            print(f"--- evaluating {kind} on {sp} ({len(recs)} sequences)", flush=True)
            with torch.no_grad():
                acc = numeric_scores(model, recs, len(meta['types']), prompt_values, batch_size, 'cpu')
            rows[kind] += numeric_rows(acc, meta['types'], sp, f'{min(lens)}-{max(lens)}')
        run_dir = run_dir_of(path)
        secs = None
        if run_dir:
            ends = [e for e in read_metrics(run_dir) if e.get('event') == 'train_end']
            secs = ends[-1].get('seconds') if ends else None
        info[kind] = {'checkpoint': path, 'run_dir': run_dir, 'label': model_label(ckpt), 'step': ckpt.get('step'),
                      'params': model.num_params(), 'train_seconds': secs}
    labels = list(paths)
    table = side_by_side(rows, labels)

    print("--- figures", flush=True)
    figs = [embedding_pca.plot_embedding_pca(list(paths.values()), os.path.join(fig_dir, 'embedding_pca.png'))]
    for t in [s.strip() for s in attention_types.split(',') if s.strip()]:
        figs.append(attention_maps.plot_attention_maps(list(paths.values()), data_dir, t, attention_length,
                                                       os.path.join(fig_dir, f'attention_{t}.png')))
    p, sel = neuron_selectivity.plot_neuron_selectivity(list(paths.values()), data_dir,
                                                        os.path.join(fig_dir, 'neuron_selectivity.png'),
                                                        'test', neuron_sequences, 20)
    figs.append(p)
    runs = [info[k]['run_dir'] for k in labels if info[k]['run_dir']]
    if runs:
        figs.append(loss_curves.plot_loss_curves(runs, os.path.join(fig_dir, 'loss_curves.png')))

    models = '\n'.join(f"- **{k}**: {info[k]['label']}, {info[k]['params']:,} parameters, checkpoint `{info[k]['checkpoint']}`"
                       + (f", trained in {info[k]['train_seconds']} s" if info[k]['train_seconds'] else '') for k in labels)
    sel_lines = '\n'.join(f"- {s['model']}: mean selectivity {s['mean_si']}, {s['frac_si_above_0.5']:.1%} of "
                          f"{s['neurons']} neurons above 0.5; preferred types of those: {s['preferred_type_si_above_0.5']}"
                          for s in sel)
    summary = (f"# Softmax vs linear attention on numeric sequences\n\n{models}\n\n"
               f"Scored: the values after the first {prompt_values} of each sequence (next_acc: teacher-forced "
               f"next-token accuracy; exact: the whole greedy continuation right; loss: nats per scored token). "
               f"test = training lengths, test_long = longer than any training sequence.\n\n{table}\n\n"
               f"## Neuron selectivity\n\n{sel_lines}\n\n## Figures\n\n"
               + '\n'.join(f"![{os.path.basename(f)}](figures/{os.path.basename(f)})" for f in figs)
               + f"\n\nCommand: `{' '.join(['./launcher.sh numeric_compare'] + sys.argv[2:])}`; "
                 f"{time.time() - t0:.0f} s in all.\n")
    with open(os.path.join(results_dir, 'summary.md'), 'w') as f:
        f.write(summary)
    with open(os.path.join(results_dir, 'eval_numeric.json'), 'w') as f:
        json.dump({'models': info, 'rows': rows, 'neuron_selectivity': sel}, f, indent=2)
    print(table)
    print(f"wrote {results_dir}/summary.md, eval_numeric.json and {len(figs)} figures ({time.time() - t0:.0f} s)")


if __name__ == '__main__':
    configurator.run_main(main)
