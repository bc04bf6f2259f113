"""Baseline vs differential input embeddings: train both (same seed, data, size), evaluate perplexity,
write a markdown table and figures (loss curves, delta-norm histogram).

    ./launcher.sh diffinput_quick                 # offline, embedded corpus, a few minutes on CPU
    python analysis/diffinput_compare.py config/diffinput_quick.py --max_iters=50

Results go to <out_dir>/results.md, results.json and figures/*.png.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from analysis.common import pyplot, read_metrics, run_script, train_run  # noqa: E402

data = 'stdlib'
data_root = 'data'
out_dir = 'out/diffinput_quick'
pos_emb = 'rope'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
batch_size = 32
max_iters = 400
learning_rate = 3e-3
eval_iters = 20
seed = 1337
ppl_stride = 64                  # sliding-window stride for the perplexity table
ppl_max_tokens = 100_000


def main():
    cfg = configurator.configure(globals())
    runs = {}
    for name, diff in (('baseline', False), ('diff_input', True)):
        args = [f'--{k}={v}' for k, v in cfg.items() if k not in ('out_dir', 'ppl_stride', 'ppl_max_tokens')]
        run_dir = train_run([*args, f'--diff_input={diff}', '--auto_prepare=True',
                             f'--eval_interval={max(1, max_iters // 8)}', f'--log_interval={max(1, max_iters // 40)}',
                             '--lr_schedule=cosine', '--warmup_iters=50'], out_dir, name, reuse=False, echo=('',))
        res = os.path.join(run_dir, 'eval_ppl.json')
        for stride in (block_size, ppl_stride):
            run_script(['eval_tasks.py', 'ppl', f'--ckpt={run_dir}', f'--data={data}', f'--data_root={data_root}',
                        '--split=val', f'--stride={stride}', f'--max_tokens={ppl_max_tokens}', f'--out={res}.{stride}'],
                       echo=('',))
        runs[name] = dict(run_dir=run_dir, events=read_metrics(run_dir),
                          ppl={s: json.load(open(f'{res}.{s}')) for s in (block_size, ppl_stride)})
    write_results(runs)


def write_results(runs):
    plt = pyplot()
    import torch
    rows = []
    for name, r in runs.items():
        ev = r['events']
        final = [e for e in ev if e['event'] == 'evaluate'][-1]
        diag = [e for e in ev if e['event'] == 'train' and 'delta_norm_mean' in e]
        rows.append({'model': name, 'val loss': final['val_loss'],
                     f'ppl (stride {block_size})': r['ppl'][block_size]['ppl'],
                     f'ppl (stride {ppl_stride})': r['ppl'][ppl_stride]['ppl'],
                     'tokens scored': r['ppl'][ppl_stride]['tokens'],
                     'final delta norm mean': round(diag[-1]['delta_norm_mean'], 3) if diag else '-',
                     'tok/s': round(sum(e['tok_per_s'] for e in ev if e['event'] == 'train') /
                                    max(1, sum(1 for e in ev if e['event'] == 'train')))})
    keys = list(rows[0])
    table = '\n'.join(['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)] +
                      ['| ' + ' | '.join(str(r[k]) for k in keys) + ' |' for r in rows])
    os.makedirs(os.path.join(out_dir, 'figures'), exist_ok=True)
    with open(os.path.join(out_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    print(table)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, r), color in zip(runs.items(), ('tab:blue', 'tab:red')):
        tr = [(e['tokens'], e['loss']) for e in r['events'] if e['event'] == 'train']
        va = [(e['tokens'], e['val_loss']) for e in r['events'] if e['event'] == 'evaluate']
        ax.plot(*zip(*tr), color=color, alpha=0.5, label=f'{name} train')
        ax.plot(*zip(*va), 'o-', color=color, label=f'{name} val')
    ax.set(xlabel='tokens', ylabel='loss (nats/token)', title='Baseline vs differential input embeddings')
    ax.set_ylim(top=min(8, ax.get_ylim()[1]))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'figures', 'loss_curves.png'), dpi=110)
    plt.close(fig)

    # delta norms of the trained diff_input model on one validation batch
    import data as datalib
    from checkpoint import load_checkpoint, model_from_checkpoint
    model, _ = model_from_checkpoint(load_checkpoint(runs['diff_input']['run_dir']))
    model.eval()
    shards = datalib.open_split(os.path.join(data_root, data), 'val', model.config.vocab_size)
    x, _ = next(datalib.iter_eval_batches(shards, block_size, batch_size, 1))
    with torch.no_grad():
        model(x)
    norms = model.diagnostics['delta_norm'].flatten().numpy()
    emb = model.wte(x).norm(dim=-1).detach().flatten().numpy()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.hist(norms, bins=60, alpha=0.7, label=f'|e_t - e_(t-1)| (stack input), mean {norms.mean():.2f}')
    ax.hist(emb, bins=60, alpha=0.6, label=f'|e_t| (plain embedding), mean {emb.mean():.2f}')
    ax.set(xlabel='L2 norm', ylabel=f'count ({len(norms):,} positions of one val batch)',
           title='Differential input: delta norms vs embedding norms')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'figures', 'delta_norm_hist.png'), dpi=110)
    plt.close(fig)
    print(f"wrote {out_dir}/results.md and {out_dir}/figures/")


if __name__ == '__main__':
    configurator.run_main(main)
