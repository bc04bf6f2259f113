"""Multi-query associative recall (MQAR, Arora et al. 2023 "Zoology") as a capacity study: accuracy vs model
width for numbers of key-value pairs that cross linear attention's state size, every run trained to
convergence (until its validation accuracy reaches stop_acc, or a step cap), 3 seeds per point.

    ./launcher.sh mqar_study                  # = python analysis/mqar_study.py config/mqar_study.py
    ./launcher.sh mqar_study --quick=True     # seconds: tiny models, a few steps (smoke test)

Steps: prepare/mqar.py per number of pairs (data_root/mqar_kv<n>, one vocabulary for all: n_keys keys, n_vals
values). Learning rate, chosen on validation only: every (variant, width) at the smallest number of pairs with
every lr of `lrs` and every seed; the rate whose seeds most often reach stop_acc wins (ties: the lower median
step at which they reached it, then the lower mean final validation loss, then the lower rate). That rate is used
for the variant and width at every number of pairs (its selection runs are that pair count's grid runs). Each run
is train.py in a subprocess (analysis/study.train_run, which reuses a finished run of the same arguments), `jobs`
of them side by side, with train.py's stop_at_val_acc: it stops at the first evaluation (every eval_interval
steps, on about eval_queries validation queries) whose accuracy is >= stop_acc, else at max_iters (a cap hit).
One recipe for every variant (AdamW, weight_decay, warmup_iters, lr_schedule, the same cap) except the variants
marked NGPT_RECIPE: weight decay 0 and no warmup, as the nGPT paper trains; 'softmax_ngpt_recipe' is softmax
attention with that recipe, the ablation that separates recipe from architecture.
Accuracy = teacher-forced argmax at the queried values of the test split, nothing else (mqar_accuracy),
cached in each run dir. Writes figures_dir/accuracy_vs_width.png, figures_dir/results.md and results.json.
"""
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from analysis.study import (ROOT, UserError, check_seeds, curve, final, fmt, in_parallel, mean_std,  # noqa: E402
                            pyplot, read_metrics, run_script, save_figure, train_run)
import numpy as np  # noqa: E402
import torch  # noqa: E402

import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text  # noqa: E402
import data as datalib  # noqa: E402
from objectives import scored_hits  # noqa: E402

FLAGS = {'softmax': dict(), 'linear': dict(attn='linear'), 'diff': dict(attn='diff'), 'ngpt': dict(ngpt=True),
         'diffngpt': dict(attn='diff', ngpt=True), 'softmax_ngpt_recipe': dict()}
NGPT_RECIPE = ('ngpt', 'diffngpt', 'softmax_ngpt_recipe')  # weight decay 0, no warmup (the nGPT paper's recipe)
LABELS = {'softmax': 'softmax', 'linear': 'linear', 'diff': 'differential', 'ngpt': 'nGPT',
          'diffngpt': 'differential nGPT', 'softmax_ngpt_recipe': "softmax, nGPT's recipe"}
ECHO = ('{"event": "stopped_early"', '{"event": "train_end"', 'error')  # what a run prints into the study's log

out_dir: Text('folder for the runs') = 'out/mqar_study'  # runs: out_dir/<variant>_d<width>_kv<pairs>_lr<lr>_s<seed>
data_root: Text('folder of data sets') = 'data'          # data sets: data_root/mqar_kv<pairs>
figures_dir: Text('folder for the figure and tables') = 'figures/mqar'
variants: Each(OneOf(tuple(FLAGS)), min_len=1) = ['softmax', 'linear', 'softmax_ngpt_recipe']  # + 'diffngpt' etc.:
                                 # ~20 more minutes at worst each (docs/mqar.md)
widths: Each(Range(1), min_len=1) = [16, 32, 64]     # n_embd (one head: linear attention's state is width x width)
pairs: Each(Range(1), min_len=1) = [4, 16, 64]       # key-value pairs per sequence (4n+2 tokens): below, at and
                                                     # above the widths, linear attention's capacity of ~width pairs
seeds: Each(Range(0), min_len=1) = [1, 2, 3]
lrs: Each(Range(0, lo_open=True), min_len=1) = [1e-3, 3e-3]  # chosen per variant and width, at min(pairs)
jobs: Range(1) = 2               # trainings side by side (two 1-thread runs fill a 2-core CPU)
n_layer: Range(1) = 2
n_head: Range(1) = 1             # one head, as Zoology's attention baseline; attn='diff' uses max(1, n_head // 2)
                                 # heads, each of two q/k halves (the same projection sizes)
n_keys: Range(1) = 128           # key tokens, for every number of pairs (keys are distinct within a sequence)
n_vals: Range(2) = 16            # value tokens (chance = 1/n_vals; with 64, 700 steps had not reached the plateau)
queries: OneOf('with_replacement', 'permutation') = 'with_replacement'  # prepare/mqar.py's QUERIES: 'permutation'
                                 # lets the last answers follow by elimination
n_train: Range(1) = 20000        # sequences per number of pairs (train split)
n_val: Range(1) = 500            # validation sequences (stopping and the lr choice read these, never test)
n_test: Range(1) = 1000
batch_tokens: Range(1) = 512     # tokens per step at every number of pairs: batch = round(batch_tokens / (4n+1))
                                 # sequences, about batch_tokens / 4 queries per step whatever n is
batch_size: Range(0) = 0         # > 0: this many sequences per step at every number of pairs instead
max_iters: Range(1) = 4000       # the step cap: a run that has not reached stop_acc by then is a cap hit
stop_acc: Range(0, 1) = 0.99     # stop at the first evaluation with validation accuracy >= this (0: never stop)
eval_interval: Range(1) = 100    # steps between the validation checks (and the log lines)
eval_queries: Range(1) = 1024    # queried values per validation check (eval_iters = this / (pairs x batch), rounded up)
lr_schedule: OneOf('constant', 'cosine') = 'constant'  # after warmup; constant: a run's path does not depend on
                                 # the cap (cosine decays to 0 at max_iters)
warmup_iters: Range(0) = 100     # every variant except NGPT_RECIPE's (0)
weight_decay: Range(0) = 0.1     # every variant except NGPT_RECIPE's (0)
solved: Range(0, 1) = 0.9        # a seed with test accuracy >= this counts as solved (the tables' k/n)
threads: Range(1) = 1            # OMP_NUM_THREADS of each training run (the CPU is shared)
quick: bool = False              # tiny everything: the whole study in seconds (tests)
RULES = [  # --quick replaces widths, pairs, lrs, the data and the run lengths with its own
    ('quick or warmup_iters <= max_iters', 'train.py refuses a warmup longer than the run'),
    ('quick or eval_interval <= max_iters', 'a run is checked every eval_interval steps, at least once'),
]


def prepare(cfg, n):
    """data_root/mqar_kv<n>, rebuilt when it was made with other settings."""
    path = os.path.join(cfg['data_root'], f'mqar_kv{n}')
    want = dict(n_pairs=n, n_keys=cfg['n_keys'], n_vals=cfg['n_vals'], n_train=cfg['n_train'], n_val=cfg['n_val'],
                n_test=cfg['n_test'], queries=cfg['queries'])
    stale = datalib.is_prepared(path) and any(datalib.load_meta(path)['config'].get(k) != v for k, v in want.items())
    if stale or not datalib.is_prepared(path):
        run_script(['prepare/mqar.py', f'--out_dir={path}', *[f'--{k}={v}' for k, v in want.items()],
                    f'--force={stale}'], quiet=True)
    return path


def batch_of(cfg, n):
    """Sequences per step at n pairs: batch_size, or about batch_tokens tokens (4n+1 inputs per sequence)."""
    return cfg['batch_size'] or max(1, round(cfg['batch_tokens'] / (4 * n + 1)))


def recipe(cfg, variant):
    """(weight decay, warmup steps) of a variant: the shared recipe, or the nGPT paper's (0, 0)."""
    return (0.0, 0) if variant in NGPT_RECIPE else (cfg['weight_decay'], cfg['warmup_iters'])


def train_args(cfg, variant, width, n, lr, seed):
    f = FLAGS[variant]
    heads = max(1, cfg['n_head'] // 2) if f.get('attn') == 'diff' else cfg['n_head']
    batch = batch_of(cfg, n)
    wd, warmup = recipe(cfg, variant)
    args = dict(data=f'mqar_kv{n}', data_root=cfg['data_root'], objective='records', n_layer=cfg['n_layer'],
                n_head=heads, n_embd=width, block_size=4 * n + 1,
                pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False, batch_size=batch,
                max_iters=cfg['max_iters'], learning_rate=lr, min_lr=0.0, lr_schedule=cfg['lr_schedule'],
                warmup_iters=warmup, weight_decay=wd, stop_at_val_acc=cfg['stop_acc'],
                eval_interval=cfg['eval_interval'], eval_iters=math.ceil(cfg['eval_queries'] / (n * batch)),
                log_interval=cfg['eval_interval'], ckpt_interval=cfg['max_iters'],
                seed=seed, device='cpu', log_tensorboard=False, log_figures=False, **f)
    return [f'--{k}={v}' for k, v in args.items()]


@torch.no_grad()
def mqar_accuracy(model, recs, batch_size=250):
    """Fraction of queried values predicted exactly (teacher-forced argmax), over the records' 'scored'
    positions only: y from data.records_xy is -100 everywhere else."""
    correct = total = 0
    for x, y in datalib.iter_records_batches(recs, 'seq', model.config.block_size, batch_size):
        a, c = scored_hits(model(x)[0], y)
        correct, total = correct + a, total + c
    return correct / max(total, 1)


def accuracy_of(run_dir, data_dir):
    """Test accuracy of a run's final checkpoint, cached next to it (valid while its metrics are unchanged)."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    path = os.path.join(run_dir, 'mqar_accuracy.json')
    stamp = os.path.getmtime(os.path.join(run_dir, 'metrics.jsonl'))
    if os.path.isfile(path):
        with open(path) as f:
            c = json.load(f)
        if c.get('stamp') == stamp:
            return c['accuracy']
    model, _ = model_from_checkpoint(load_checkpoint(run_dir))
    acc = mqar_accuracy(model.eval(), datalib.open_records(data_dir, 'test', model.config.vocab_size))
    with open(path, 'w') as f:
        json.dump({'accuracy': acc, 'stamp': stamp}, f)
    return acc


def run_name(variant, width, n, lr, seed):
    return f'{variant}_d{width}_kv{n}_lr{lr:g}_s{seed}'


def run_record(run_dir):
    """What a run's metrics say about its length: steps trained, the cap, whether it stopped at stop_acc, the
    last validation loss and accuracy, and its training seconds."""
    ev = read_metrics(run_dir)
    begin = next(e for e in ev if e.get('event') == 'train_begin')
    end = next(e for e in reversed(ev) if e.get('event') == 'train_end')
    accs = curve(run_dir, 'val_acc')
    return {'steps': end['step'], 'cap': begin['total_steps'],
            'reached': any(e.get('event') == 'stopped_early' for e in ev),
            'val_loss': final(run_dir), 'val_acc': accs[-1][1] if accs else float('nan'), 'seconds': end['seconds']}


def lr_score(rows):
    """Sort key of one rate's seeds (lower is better): most seeds that reached stop_acc, then the lower median
    step at which they did, then the lower mean final validation loss. Validation only: test is never read."""
    got = [r['steps'] for r in rows if r['reached']]
    return (-len(got), statistics.median(got) if got else math.inf, sum(r['val_loss'] for r in rows) / len(rows))


def cell(grid, v, w, n, key='accuracy'):
    return [r[key] for r in grid if (r['variant'], r['width'], r['pairs']) == (v, w, n)]


def plot(cfg, grid, path):
    """Accuracy vs width, one panel per number of pairs: mean with a ±std band over seeds, every seed as a dot;
    chance and 'a value of the sequence at random' dashed; shaded where pairs > width (beyond linear attention's
    ~width-pair capacity)."""
    fig, axes = pyplot().subplots(1, len(cfg['pairs']), figsize=(5 * len(cfg['pairs']), 4.4), squeeze=False,
                                  sharey=True)
    ws = cfg['widths']
    for ax, n in zip(axes[0], cfg['pairs']):
        for i, v in enumerate(cfg['variants']):
            ms = [mean_std(cell(grid, v, w, n)) for w in ws]
            m, s = np.array([a for a, _ in ms]), np.array([b for _, b in ms])
            line, = ax.plot(ws, m, marker='o', label=LABELS[v], ls='--' if v in NGPT_RECIPE else '-')
            ax.fill_between(ws, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color=line.get_color(), alpha=0.1)
            for w in ws:  # the seeds themselves: a point is often some solved and some not
                acc = cell(grid, v, w, n)
                ax.plot([w * 1.04 ** (i - (len(cfg['variants']) - 1) / 2)] * len(acc), acc, '.',
                        color=line.get_color(), ms=6, alpha=0.8)
        small = [w for w in ws if w < n]
        if small:  # widths whose width x width state holds fewer than n near-orthogonal keys
            ax.axvspan(min(ws) / 1.15, min(n, max(ws) * 1.15), color='gray', alpha=0.08, lw=0,
                       label='width < pairs (linear state too small)')
        ax.axhline(1 / cfg['n_vals'], color='gray', ls=':', lw=1, label=f'chance (1/{cfg["n_vals"]})')
        # the plateau of a model that only learned "answer with one of this sequence's values": right with
        # probability (1 + (n-1)/n_vals)/n, as the other n-1 values equal the answer 1/n_vals of the time
        ax.axhline((1 + (n - 1) / cfg['n_vals']) / n, color='black', ls='--', lw=1,
                   label='a value of the sequence at random')
        ax.set_xscale('log', base=2)
        ax.set_xlim(min(ws) / 1.15, max(ws) * 1.15)
        ax.set_xticks(ws, [str(w) for w in ws])
        ax.set_xlabel('model width (n_embd)')
        ax.set_title(f'{n} key-value pairs ({4 * n + 2} tokens)')
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('test accuracy on queried values')
    handles = {}
    for ax in axes[0]:  # the shading appears in some panels only
        handles.update(zip(*ax.get_legend_handles_labels()[::-1]))
    fig.legend(list(handles.values()), list(handles), loc='lower center', ncol=4, fontsize=8)
    fig.suptitle("Zoology's claim: attention solves MQAR at every width; a fixed-size state (linear attention) needs "
                 f"a width that grows with the pairs\n{cfg['n_layer']} layers, trained until validation accuracy >= "
                 f"{cfg['stop_acc']:g} or {cfg['max_iters']} steps; mean, ±std band and dots = "
                 f"{len(cfg['seeds'])} seed{'s' if len(cfg['seeds']) > 1 else ''}; dashed lines = nGPT's recipe", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # room for the legend below the panels
    return save_figure(fig, path)


def steps_cell(rows):
    """'median steps (reached/n), c cap' over the seeds that reached stop_acc."""
    got = [r['steps'] for r in rows if r['reached']]
    caps = sum(not r['reached'] for r in rows)
    return (f"{statistics.median(got):,.0f}" if got else '-') + f" ({len(got)}/{len(rows)})" + (
        f", {caps} cap" if caps else '')


def tables(cfg, selection, best, grid):
    """Markdown: the lr choice, accuracy mean ± std per point, steps per point, and the recipe summary."""
    sp, n_s = min(cfg['pairs']), len(cfg['seeds'])
    lines = [f"Learning rate per variant and width ({sp} pairs, seeds {', '.join(map(str, cfg['seeds']))}): median "
             f"step at which validation accuracy reached {cfg['stop_acc']:g} (seeds that reached it / {n_s}), mean "
             f"final validation loss; bold = chosen (most seeds reaching it, then fewer steps, then lower loss) and "
             f"used at every number of pairs", '', '| variant | width | ' + ' | '.join(
                 f'lr {lr:g}' for lr in cfg['lrs']) + ' |', '|' + '---|' * (len(cfg['lrs']) + 2)]
    for v in cfg['variants']:
        for w in cfg['widths']:
            cells = []
            for lr in cfg['lrs']:
                rows = selection[v, w, lr]
                c = f"{steps_cell(rows)}; {sum(r['val_loss'] for r in rows) / len(rows):.3f}"
                cells.append(f'**{c}**' if lr == best[v, w] else c)
            lines.append(f"| {LABELS[v]} | {w} | " + ' | '.join(cells) + ' |')
    edge = [f'{LABELS[v]} d={w}' for (v, w), lr in best.items() if len(cfg['lrs']) > 1 and lr in (
        min(cfg['lrs']), max(cfg['lrs'])) and lr_score(selection[v, w, lr])[0] > -n_s]
    if edge:
        lines += ['', f"Chosen rate at an edge of lrs (and not every seed reached {cfg['stop_acc']:g}) for "
                  f"{', '.join(edge)}: a wider lrs might do better there."]
    head = '| variant | pairs | ' + ' | '.join(f'd={w}' for w in cfg['widths']) + ' |'
    lines += ['', f"Test accuracy on the queried values, mean ± std over {n_s} seeds (k/{n_s}: seeds with accuracy "
              f">= {cfg['solved']:g})", '', head, '|' + '---|' * (len(cfg['widths']) + 2)]
    for n in cfg['pairs']:
        for v in cfg['variants']:
            cells = [fmt(a, 2) + f" ({sum(x >= cfg['solved'] for x in a)}/{len(a)})"
                     for a in (cell(grid, v, w, n) for w in cfg['widths'])]
            lines.append(f"| {LABELS[v]} | {n} | " + ' | '.join(cells) + ' |')
    lines += ['', f"Steps: median step at which validation accuracy reached {cfg['stop_acc']:g} (seeds that reached "
              f"it / {n_s}); cap = seeds that did not within the cap of {cfg['max_iters']:,} steps", '', head,
              '|' + '---|' * (len(cfg['widths']) + 2)]
    for n in cfg['pairs']:
        for v in cfg['variants']:
            cells = [steps_cell([r for r in grid if (r['variant'], r['width'], r['pairs']) == (v, w, n)])
                     for w in cfg['widths']]
            lines.append(f"| {LABELS[v]} | {n} | " + ' | '.join(cells) + ' |')
    lines += ['', f"Recipe and architecture: every point of the grid together ({len(cfg['widths'])} widths x "
              f"{len(cfg['pairs'])} pair counts x {n_s} seeds per variant)", '',
              '| variant | recipe (weight decay, warmup) | solved | reached the target | cap hits | mean accuracy |',
              '|---|---|---|---|---|---|']
    for v in cfg['variants']:
        rows = [r for r in grid if r['variant'] == v]
        wd, warm = recipe(cfg, v)
        lines.append(f"| {LABELS[v]} | {'nGPT' if v in NGPT_RECIPE else 'shared'} ({wd:g}, {warm}) | "
                     f"{sum(r['accuracy'] >= cfg['solved'] for r in rows)}/{len(rows)} | "
                     f"{sum(r['reached'] for r in rows)}/{len(rows)} | {sum(not r['reached'] for r in rows)} | "
                     f"{sum(r['accuracy'] for r in rows) / len(rows):.3f} |")
    return '\n'.join(lines)


def main():
    cfg = configurator.configure(globals())
    check_seeds(cfg['seeds'])
    if cfg['quick']:  # seconds: one width, two pair counts, one rate, a few steps (a run costs ~3.5 s of process
        cfg.update(widths=[16], pairs=[1, 2], lrs=[1e-2], n_keys=8, n_vals=4, n_train=200, n_val=20,  # start alone)
                   n_test=50, batch_tokens=40, max_iters=6, warmup_iters=1, eval_interval=3, eval_queries=20)
    if max(cfg['pairs']) > cfg['n_keys']:  # (a rule cannot call max)
        raise UserError(f"--pairs={cfg['pairs']} with n_keys={cfg['n_keys']}: keys are distinct within a sequence, "
                        f"so every number of pairs must be <= n_keys; raise n_keys or lower pairs")
    os.chdir(ROOT)  # relative paths (out/, data/, figures/) are the repository's, as for the launcher
    torch.set_num_threads(cfg['threads'])  # the test accuracies computed here share the CPU with the trainings
    t0 = time.time()
    data_dirs = {n: prepare(cfg, n) for n in cfg['pairs']}

    def one(p):  # -> the row of one run (a finished run is reused)
        v, w, n, lr, s = p
        name = run_name(v, w, n, lr, s)
        try:
            rd = train_run(train_args(cfg, v, w, n, lr, s), cfg['out_dir'], name, threads=cfg['threads'], echo=ECHO)
        except UserError as e:
            if 'non-finite' not in str(e):
                raise
            print(f"== {name}: stopped by a non-finite loss; counted as accuracy 0, not reached", flush=True)
            return {'variant': v, 'width': w, 'pairs': n, 'lr': lr, 'seed': s, 'run': name, 'steps': cfg['max_iters'],
                    'cap': cfg['max_iters'], 'reached': False, 'val_loss': math.inf, 'val_acc': 0.0, 'seconds': None,
                    'accuracy': 0.0, 'diverged': True}
        r = {'variant': v, 'width': w, 'pairs': n, 'lr': lr, 'seed': s, 'run': name, **run_record(rd),
             'accuracy': accuracy_of(rd, data_dirs[n]), 'diverged': False}
        print(f"   {LABELS[v]:>22} d={w:<3} kv={n:<3} lr {lr:g} seed {s}: accuracy {r['accuracy']:.3f} after "
              f"{r['steps']} steps" + (' (reached the target)' if r['reached'] else ' (cap)'), flush=True)
        return r
    # the lr choice: every variant, width, rate and seed at the smallest number of pairs (seeds outermost: an
    # interrupted study has every rate at its first seeds; a rerun reuses them)
    sp = min(cfg['pairs'])
    todo = [(v, w, sp, lr, s) for s in cfg['seeds'] for v in cfg['variants'] for w in cfg['widths'] for lr in cfg['lrs']]
    rows = in_parallel(one, todo, cfg['jobs'])
    selection = {(v, w, lr): [r for r in rows if (r['variant'], r['width'], r['lr']) == (v, w, lr)]
                 for v in cfg['variants'] for w in cfg['widths'] for lr in cfg['lrs']}
    best = {(v, w): min(cfg['lrs'], key=lambda lr: (lr_score(selection[v, w, lr]), lr))
            for v in cfg['variants'] for w in cfg['widths']}
    print(f'learning rate per variant and width (validation at {sp} pairs): '
          + ', '.join(f'{v} d={w} {lr:g}' for (v, w), lr in best.items()), flush=True)
    points = [(v, w, n, best[v, w], s) for s in cfg['seeds'] for n in cfg['pairs'] if n != sp
              for w in cfg['widths'] for v in cfg['variants']]
    grid = [r for r in rows if r['lr'] == best[r['variant'], r['width']]] + in_parallel(one, points, cfg['jobs'])
    grid.sort(key=lambda r: (cfg['pairs'].index(r['pairs']), cfg['variants'].index(r['variant']),
                             cfg['widths'].index(r['width']), cfg['seeds'].index(r['seed'])))
    fig = plot(cfg, grid, os.path.join(cfg['figures_dir'], 'accuracy_vs_width.png'))
    seconds = time.time() - t0
    runs = {r['run']: r for r in rows + grid}
    train_s = sum(r['seconds'] or 0 for r in runs.values())
    md = (f"# MQAR capacity study: accuracy vs width\n\n{tables(cfg, selection, best, grid)}\n\n![accuracy vs width]"
          f"({os.path.basename(fig)})\n\n{len(runs)} distinct runs ({len(rows)} in the lr choice, "
          f"{len(runs) - len(rows)} more in the grid); their training loops sum to {train_s:,.0f} s of one core; "
          f"{seconds:.0f} s this invocation (finished runs are reused).\n")
    os.makedirs(cfg['figures_dir'], exist_ok=True)
    with open(os.path.join(cfg['figures_dir'], 'results.md'), 'w') as f:
        f.write(md)
    with open(os.path.join(cfg['figures_dir'], 'results.json'), 'w') as f:
        json.dump({'config': cfg, 'best_lr': {f'{v}_d{w}': lr for (v, w), lr in best.items()}, 'selection': rows,
                   'grid': grid, 'seconds': seconds, 'train_seconds': train_s}, f, indent=1)
    print(md)
    print(f"wrote {cfg['figures_dir']}/results.md, results.json and {fig} ({seconds:.0f} s)")


if __name__ == '__main__':
    configurator.run_main(main)
