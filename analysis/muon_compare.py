"""Muon vs AdamW on the quickstart model: a small learning-rate sweep per optimizer (one seed), then each
optimizer's best learning rate over several seeds (same batches: data order and init are fixed by the seed),
and time-to-loss: the training time AdamW needs to reach its final validation loss against the time Muon
needs to reach the same loss, with steps-to-loss and the per-step time ratio from the same runs (wall time
on a shared CPU is noisy; steps are not).

    ./launcher.sh muon_compare                          # = python analysis/muon_compare.py config/muon_compare.py
    ./launcher.sh muon_compare --quick=True --data=tiny --data_root=<dir>     # seconds (the test)

Runs go to <out_dir>/<optimizer>_lr<lr>_<steps>it_s<seed>; a finished run with the same arguments is reused.
Training time = the sum of each logged interval's ms_per_step (training steps only: evaluations and
checkpoints are not counted). Muon's runs keep AdamW at `muon_adamw_lr` for embeddings, head and vectors.
Writes <out_dir>/results.md, results.json and `figure`.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from analysis.study import ROOT, check_seeds, curve, fmt, mean_std, read_metrics, train_run  # noqa: E402
import configurator  # noqa: E402
from configurator import Each, Range, Text  # noqa: E402

base_config: Text('train.py config file') = 'config/quickstart.py'  # the model, data and schedule shape (WSD);
                                 # the settings below override it
data: Text('data set name under data_root') = 'stdlib'
data_root: Text('folder of data sets') = 'data'
out_dir: Text('folder for the runs and tables') = 'out/muon_compare'
figure: Text('PNG path') = 'figures/muon/loss_vs_time.png'
batch_size: Range(1) = 8         # quickstart uses 32; smaller so the study fits the CPU budget (docs/muon.md)
max_iters: Range(1) = 400        # the seed runs
sweep_iters: Range(1) = 200      # the learning-rate sweep (one seed, shorter)
warmup_iters: Range(0) = 30
adamw_lrs: Each(Range(0, lo_open=True), min_len=1) = [1e-3, 3e-3, 6e-3]
muon_lrs: Each(Range(0, lo_open=True), min_len=1) = [0.01, 0.02, 0.04]
muon_adamw_lr: Range(0, lo_open=True) = 3e-3  # optimizer='muon': AdamW's lr for embeddings, head, norms (the
                                 # quickstart's)
seeds: Each(Range(0), min_len=1) = [1337, 1338, 1339]
eval_interval: Range(1) = 25
eval_iters: Range(1) = 10
threads: Range(1) = 1            # OMP_NUM_THREADS of each training run
quick: bool = False              # tiny model, a few steps: the whole pipeline in seconds (tests)
RULES = [('quick or (warmup_iters <= sweep_iters and warmup_iters <= max_iters)',  # --quick sets its own
          'train.py refuses a warmup longer than the run')]


def run(opt, lr, iters, seed, evals):
    """One training run; returns its run dir. lr is AdamW's learning_rate or Muon's muon_lr."""
    lrs = ([f'--learning_rate={lr}', f'--min_lr={lr / 10}'] if opt == 'adamw' else
           [f'--learning_rate={muon_adamw_lr}', f'--min_lr={muon_adamw_lr / 10}', f'--muon_lr={lr}'])
    args = [base_config, f'--data={data}', f'--data_root={data_root}', f'--batch_size={batch_size}',
            f'--max_iters={iters}', f'--warmup_iters={warmup_iters}', f'--eval_interval={evals}',
            f'--eval_iters={eval_iters}', f'--log_interval={max(1, evals // 5)}', '--sample_tokens=0',
            '--log_figures=False', '--log_tensorboard=False', '--auto_prepare=True', f'--optimizer={opt}',
            f'--seed={seed}', *lrs]
    if quick:
        args += ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32']
    return train_run(args, out_dir, f'{opt}_lr{lr:g}_{iters}it_s{seed}', threads=threads)


def train_time(run_dir):
    """{step: seconds of training up to that step} at every logged step (from ms_per_step)."""
    t, prev, out = 0.0, 0, {}
    for e in read_metrics(run_dir):
        if e.get('event') == 'train':
            t += e['ms_per_step'] * (e['step'] - prev) / 1000
            out[e['step']] = t
            prev = e['step']
    return out


def first_reach(points, target):
    """First x where the curve [(x, loss)] reaches <= target, linearly interpolated; None if never."""
    prev = None
    for x, loss in points:
        if loss <= target:
            return x if prev is None else prev[0] + (x - prev[0]) * (prev[1] - target) / (prev[1] - loss)
        prev = (x, loss)
    return None


def main():
    global max_iters, sweep_iters, warmup_iters, eval_interval, eval_iters, batch_size
    configurator.configure(globals())
    check_seeds(seeds)
    os.chdir(ROOT)  # relative paths (out/, data/, config/) are the repository's, as for the launcher
    if quick:
        max_iters, sweep_iters, warmup_iters, eval_interval, eval_iters, batch_size = 8, 4, 2, 2, 1, 4
    # 1. the sweep: one seed, final validation loss only
    sweep = {}
    for opt, lrs in (('adamw', adamw_lrs), ('muon', muon_lrs)):
        for lr in lrs:
            d = run(opt, lr, sweep_iters, seeds[0], sweep_iters)
            sweep[(opt, lr)] = curve(d)[-1][1]
    best = {opt: min((lr for o, lr in sweep if o == opt), key=lambda lr: sweep[(opt, lr)]) for opt in ('adamw', 'muon')}
    print(f"best learning rates after {sweep_iters} steps: AdamW {best['adamw']:g}, Muon {best['muon']:g}", flush=True)
    # 2. the best learning rate of each optimizer over the seeds (same batches per seed)
    runs = {opt: [run(opt, best[opt], max_iters, s, eval_interval) for s in seeds] for opt in ('adamw', 'muon')}
    report(sweep, best, runs)


def report(sweep, best, runs):
    per_seed, series = [], {}
    for opt, dirs in runs.items():
        series[opt] = []
        for d in dirs:
            tt = train_time(d)
            ev = curve(d)  # [(step, val_loss)] at every evaluation
            ms = sorted(e['ms_per_step'] for e in read_metrics(d) if e.get('event') == 'train')
            series[opt].append({'steps': [s for s, _ in ev], 'time': [tt[s] for s, _ in ev],
                                'loss': [l for _, l in ev], 'ms_median': ms[len(ms) // 2]})
    for a, m in zip(series['adamw'], series['muon']):  # seed by seed: the same batches and init
        target = a['loss'][-1]
        row = {'adamw_final': target, 'muon_final': m['loss'][-1],
               'adamw_steps': first_reach(list(zip(a['steps'], a['loss'])), target),
               'muon_steps': first_reach(list(zip(m['steps'], m['loss'])), target),
               'adamw_time': first_reach(list(zip(a['time'], a['loss'])), target),
               'muon_time': first_reach(list(zip(m['time'], m['loss'])), target),
               'step_time_ratio': m['ms_median'] / a['ms_median']}
        per_seed.append(row)
    reached = [r for r in per_seed if r['muon_steps'] is not None]
    col = lambda k, rows=per_seed, d=3: fmt([r[k] for r in rows], d) if rows else 'not reached'
    lines = [f"## Learning-rate sweep ({sweep_iters} steps, seed {seeds[0]}): final validation loss", '',
             '| optimizer | lr | val loss |', '|---|---|---|']
    lines += [f"| {o} | {lr:g}{' (best)' if best[o] == lr else ''} | {v:.4f} |" for (o, lr), v in sweep.items()]
    lines += ['', f"## Best learning rates, {len(seeds)} seeds x {max_iters} steps (mean ± std over seeds)", '',
              '| | AdamW (lr %g) | Muon (muon_lr %g) |' % (best['adamw'], best['muon']), '|---|---|---|',
              f"| final val loss | {col('adamw_final')} | {col('muon_final')} |",
              f"| steps to AdamW's final val loss | {col('adamw_steps', d=0)} | {col('muon_steps', reached, 0)}"
              f" ({len(reached)}/{len(per_seed)} seeds reach it) |",
              f"| training seconds to AdamW's final val loss | {col('adamw_time', d=1)} | "
              f"{col('muon_time', reached, 1)} |",
              f"| ms/step (median of logged intervals) | {fmt([s['ms_median'] for s in series['adamw']], 0)} | "
              f"{fmt([s['ms_median'] for s in series['muon']], 0)} |", '',
              '| ratio (per seed, then mean ± std) | value |', '|---|---|',
              f"| AdamW steps / Muon steps to AdamW's final loss | "
              f"{fmt([r['adamw_steps'] / r['muon_steps'] for r in reached], 2) if reached else 'not reached'} |",
              f"| AdamW time / Muon time to AdamW's final loss | "
              f"{fmt([r['adamw_time'] / r['muon_time'] for r in reached], 2) if reached else 'not reached'} |",
              f"| Muon ms/step / AdamW ms/step | {col('step_time_ratio', d=3)} |"]
    table = '\n'.join(lines)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump({'sweep': [[o, lr, v] for (o, lr), v in sweep.items()], 'best': best, 'per_seed': per_seed,
                   'runs': runs, 'series': series}, f, indent=2)
    print(table)
    plot(series, best)
    print(f"wrote {out_dir}/results.md, results.json and {figure}")


def plot(series, best):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for opt, color, label in (('adamw', 'tab:blue', f"AdamW lr {best['adamw']:g}"),
                              ('muon', 'tab:red', f"Muon muon_lr {best['muon']:g}")):
        loss = np.array([s['loss'] for s in series[opt]])
        m, sd = loss.mean(0), loss.std(0, ddof=1) if len(loss) > 1 else 0 * loss[0]
        for ax, x in zip(axes, (np.array(series[opt][0]['steps']), np.array([s['time'] for s in series[opt]]).mean(0))):
            ax.plot(x, m, 'o-', ms=3, color=color, label=f'{label} (mean of {len(loss)} seeds)')
            ax.fill_between(x, m - sd, m + sd, color=color, alpha=0.25, lw=0, label='± 1 std over seeds')
    target = np.mean([s['loss'][-1] for s in series['adamw']])
    for ax, xl in zip(axes, ('optimizer step', 'training time (s, mean over seeds; evals not counted)')):
        ax.axhline(target, color='gray', ls='--', lw=1, label="AdamW's final val loss (mean)")
        ax.set(xlabel=xl, ylabel='validation loss (nats/token)')
        lo = min(min(s['loss']) for ss in series.values() for s in ss)
        ax.set_ylim(lo - 0.1, lo + 2.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title('Validation loss vs steps')
    axes[1].set_title('Validation loss vs training wall time')
    fig.suptitle(f"Muon vs AdamW, quickstart model, batch {batch_size}, {max_iters} steps, {len(seeds)} seeds "
                 f"(2-core shared CPU, 1 thread per run)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(figure)), exist_ok=True)
    fig.savefig(figure, dpi=100)
    plt.close(fig)


if __name__ == '__main__':
    configurator.run_main(main)
