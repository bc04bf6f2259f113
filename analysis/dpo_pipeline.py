"""DPO end to end over seeds: prepare data, then per seed train the SFT reference and DPO from it, evaluate
before/after on held-out pairs; a table of mean ± std over seeds and a figure with the seed spread.

Run through the launcher (config/dpo_quick.py, config/dpo_tinystories.py name this script):

    ./launcher.sh dpo_quick                                   # offline, embedded corpus, 3 seeds, CPU minutes
    ./launcher.sh dpo_quick --quick=True --seeds=[1,2] --sft_args="['--data=tiny']" --data_root=<dir>  # seconds (tests)
    ./launcher.sh dpo_tinystories                             # TinyStories from the hub (GPU)
    ./launcher.sh dpo_tinystories --sft_ckpt=out/sft_tinystories_s1337   # one SFT reference for every DPO seed

Steps (each one a normal command, printed before it runs):
  1. the SFT data set, once, when it is missing: `prepare`, else prepare/<data>.py if the SFT config auto_prepares
  2. pairs from the SFT data's val split, once (the same pairs for every seed)   prepare/pairs.py <pairs_args>
  3. per seed, `jobs` seed chains side by side (analysis.study.in_parallel), each run reused when finished
     with the same arguments:
       SFT with the `sft` config unless sft_ckpt is given     train.py <sft config> <sft_args> --seed=<s>
       DPO from that SFT checkpoint, same model flags          train.py <sft config> --objective=dpo ... <dpo_args>
       test preference accuracy of SFT and DPO                 eval_tasks.py preference ...
  4. table (mean ± std over seeds) and per-seed numbers: <out_dir>/<name>_seeds.{md,json}; figure `figure`
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text  # noqa: E402
from analysis.study import (ROOT, check_seeds, fmt, in_parallel, mean_std, pyplot, read_metrics, run_script,  # noqa: E402
                            save_figure, train_run)

sft: Text('train.py config: problem name or path') = 'sft_quick'  # of the SFT reference; DPO reuses its model flags
sft_ckpt: Text('SFT run dir or .pt') = ''  # an existing SFT run: skip SFT training, every DPO seed starts from it
sft_args: Each(Text('--key=value')) = []   # extra train.py --key=value for the SFT run
prepare: Each(Text('a command word')) = []  # command that makes the SFT data set when it is missing, e.g.
                                            # ['prepare/tinystories.py']
pairs_args: Each(Text('--key=value')) = []  # prepare/pairs.py arguments (--data and --out_dir are set here)
dpo_args: Each(Text('--key=value')) = []    # train.py --key=value for DPO, applied after the SFT config
data_root: Text('folder of data sets') = 'data'
out_dir: Text('folder for the runs and tables') = 'out'
eval_split: OneOf('train', 'val', 'test') = 'test'  # the splits prepare/pairs.py writes
eval_pairs: Range(0) = 0   # 0 = every pair of eval_split
figure: Text('PNG path') = ''  # '' = <out_dir>/<name>_seeds.png
seeds: Each(Range(0), min_len=1) = [1, 2, 3]  # one SFT + DPO chain per seed (SFT init and data order, DPO data order)
jobs: Range(1) = 2         # seed chains side by side (each run uses 1 thread: two fit a 2-core CPU)
quick: bool = False        # tiny model, a few steps, few pairs: the whole pipeline in seconds (tests)

# quick=True: applied after the config's arguments (the model, steps and pair counts of a smoke test; no per-run
# figures or TensorBoard files: the study's own table and figures are what a smoke test checks)
QUICK_SFT = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=96', '--batch_size=4', '--max_iters=6',
             '--warmup_iters=2', '--eval_interval=6', '--eval_iters=1', '--log_interval=2', '--sample_tokens=0',
             '--log_figures=False']
QUICK_PAIRS = ['--train_pairs=48', '--val_pairs=8', '--test_pairs=16', '--max_response_tokens=32']
QUICK_DPO = ['--max_iters=4', '--batch_size=4', '--warmup_iters=1', '--eval_interval=2', '--eval_iters=1',
             '--log_interval=1', '--log_figures=False', '--log_tensorboard=False']
ALL = ('',)                # echo every line of every step


def arg_value(args, key, default):
    vals = [a.split('=', 1)[1] for a in args if a.startswith(f'--{key}=')]
    return vals[-1] if vals else default


def evaluate(ckpt, ref, data, dpo_cfg, out):
    """eval_tasks.py preference; the result (with the command) is kept in `out` and reused when the same command
    asks again (out lives in the DPO run dir, which train_run clears whenever DPO is retrained)."""
    cmd = ['eval_tasks.py', 'preference', f'--ckpt={ckpt}', f'--ref={ref}', f'--data={data}', f'--data_root={data_root}',
           f'--split={eval_split}', f'--beta={dpo_cfg["beta"]}', f'--length_normalize={dpo_cfg["length_normalize"]}',
           f'--seq_max_len={dpo_cfg["seq_max_len"]}', f'--max_pairs={eval_pairs}', f'--out={out}']
    if os.path.exists(out):
        with open(out) as f:
            res = json.load(f)
        if res.get('command') == cmd:
            return res
    run_script(cmd)
    with open(out) as f:
        res = json.load(f)
    res['command'] = cmd
    with open(out, 'w') as f:
        json.dump(res, f, indent=1)
    return res


def check_settings():
    """What the declarations cannot check, before anything is prepared, trained or written."""
    check_seeds(seeds)
    if sft_ckpt and not os.path.exists(sft_ckpt):
        raise configurator.UserError(f"--sft_ckpt '{sft_ckpt}' does not exist; pass an SFT run dir or .pt, or '' to train one")
    return configurator.resolve_config_file(sft)


def stamp(run_dir):
    """When train_run last (re)made this run: its study_args.json's mtime, None before the first time."""
    p = os.path.join(run_dir, 'study_args.json')
    return os.path.getmtime(p) if os.path.exists(p) else None


def seed_chain(seed, sft_cfg_path, sft_all, pairs_data, corruption, stem, pairs_rebuilt):
    """SFT (unless sft_ckpt) -> DPO -> evaluation for one seed; returns its numbers and run dirs.
    DPO is retrained whenever its SFT reference or its pairs were just remade (its own arguments would not change)."""
    if sft_ckpt:
        ref, new_ref = sft_ckpt, False
    else:
        name = f'{stem}_s{seed}'
        before = stamp(os.path.join(out_dir, name))
        ref = train_run([sft_cfg_path] + sft_all + [f'--seed={seed}'], out_dir, name)
        new_ref = stamp(ref) != before
    dpo_name = f'{stem}_s{seed}_dpo_{corruption}' if not sft_ckpt else f'{stem}_dpo_{corruption}_s{seed}'
    dpo_dir = train_run([sft_cfg_path] + sft_all +
                        ['--objective=dpo', f'--data={pairs_data}', f'--init_from={ref}', '--auto_prepare=False',
                         '--sample_tokens=0', f'--seed={seed}'] + list(dpo_args) + (QUICK_DPO if quick else []),
                        out_dir, dpo_name, reuse=not (new_ref or pairs_rebuilt))
    with open(os.path.join(dpo_dir, 'config.json')) as f:
        dpo_cfg = json.load(f)
    sft_eval = evaluate(ref, '', pairs_data, dpo_cfg, os.path.join(dpo_dir, 'eval_sft.json'))
    dpo_eval = evaluate(dpo_dir, ref, pairs_data, dpo_cfg, os.path.join(dpo_dir, 'eval_dpo_vs_sft.json'))
    ends = lambda d: next((e for e in read_metrics(d) if e.get('event') == 'train_end'), {})
    return {'seed': seed, 'sft_dir': ref, 'dpo_dir': dpo_dir, 'dpo_config': dpo_cfg,
            'sft_val_loss': ends(ref).get('val_loss') if os.path.isdir(ref) else None,
            'sft_seconds': ends(ref).get('seconds') if os.path.isdir(ref) and not sft_ckpt else None,
            'dpo_seconds': ends(dpo_dir).get('seconds'),
            'sft': {k: sft_eval[k] for k in ('pairs', 'logp_accuracy')},
            'dpo': {k: dpo_eval[k] for k in ('pairs', 'accuracy', 'margin', 'reward_chosen', 'reward_rejected',
                                             'dpo_loss', 'logp_accuracy')}}


# the DPO row's headline numbers (keys of a seed's 'dpo' dict); the json's mean_std holds each of them
DPO_COLS = ('accuracy', 'margin', 'reward_chosen', 'reward_rejected', 'logp_accuracy')


def table(per_seed, pairs_data, corruption):
    cfg, n = per_seed[0]['dpo_config'], per_seed[0]['dpo']['pairs']
    col = lambda key: fmt([r['dpo'][key] for r in per_seed])
    lines = [f"DPO on `{pairs_data}` ({corruption} corruption), {eval_split} split, {n} pairs; "
             f"beta={cfg['beta']}, length_normalize={cfg['length_normalize']}, {cfg['max_iters']} DPO steps; "
             f"mean ± std over {len(per_seed)} seeds ({', '.join(str(r['seed']) for r in per_seed)})", '',
             '| model | reference | preference accuracy | mean margin | reward chosen | reward rejected '
             '| log-prob accuracy (no reference) |', '|---|---|---|---|---|---|---|',
             # a model against itself ties on every pair: exactly 0.5 and 0 for every seed (not measured again)
             f"| SFT | itself | 0.500 (tie) | 0.000 (tie) | 0 | 0 | {fmt([r['sft']['logp_accuracy'] for r in per_seed])} |",
             f"| DPO ({cfg['max_iters']} steps) | SFT | **{col('accuracy')}** | {col('margin')} | "
             f"{col('reward_chosen')} | {col('reward_rejected')} | {col('logp_accuracy')} |"]
    losses = [r['sft_val_loss'] for r in per_seed if r['sft_val_loss'] is not None]
    if losses:
        lines += ['', f"SFT val loss {fmt(losses)}"]
    lines += ['', '| seed | SFT log-prob acc. | DPO accuracy | DPO margin | DPO log-prob acc. | SFT s | DPO s |',
              '|---|---|---|---|---|---|---|']
    lines += [f"| {r['seed']} | {r['sft']['logp_accuracy']:.3f} | {r['dpo']['accuracy']:.3f} | {r['dpo']['margin']:.3f} "
              f"| {r['dpo']['logp_accuracy']:.3f} | {'-' if r['sft_seconds'] is None else r['sft_seconds']} | {r['dpo_seconds']} |" for r in per_seed]
    return '\n'.join(lines)


def val_band(ax, runs, key, color, label):
    """Mean of the val curves over seeds with a ± 1 std band (seeds share their eval steps)."""
    curves = [[(e['step'], e[key]) for e in read_metrics(d) if e['event'] == 'evaluate' and key in e] for d in runs]
    steps = [s for s, _ in curves[0]]
    ms = [mean_std([c[i][1] for c in curves]) for i in range(len(steps))]
    m, sd = [a for a, _ in ms], [b for _, b in ms]
    ax.plot(steps, m, 'o-', ms=3, color=color, label=f'{label}, mean of {len(runs)} seeds')
    ax.fill_between(steps, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)], color=color, alpha=0.25,
                    lw=0, label='± 1 std over seeds')


def plot(per_seed, path):
    plt = pyplot()
    runs = [r['dpo_dir'] for r in per_seed]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    for a, key, title in zip(ax, ('loss', 'acc', 'margin'), ('DPO loss', 'preference accuracy', 'reward margin')):
        for i, r in enumerate(per_seed):  # each seed's training curve (log-interval means), thin
            tr = [e for e in read_metrics(r['dpo_dir']) if e['event'] == 'train' and key in e]
            a.plot([e['step'] for e in tr], [e[key] for e in tr], color='C0', alpha=0.35, lw=0.8,
                   label='train, one line per seed' if i == 0 else None)
        val_band(a, runs, f'val_{key}', 'C1', 'val pairs')
        a.set_xlabel('DPO step')
        a.set_ylabel(title)
        a.set_title(title)
        a.grid(alpha=0.3)
    ax[0].axhline(0.6931, color='gray', ls=':', label='log 2 (policy = reference)')
    acc = mean_std([r['dpo']['accuracy'] for r in per_seed])
    lp = mean_std([r['sft']['logp_accuracy'] for r in per_seed])
    ax[1].axhline(0.5, color='gray', ls=':', label='SFT vs itself (0.5)')
    ax[1].axhline(acc[0], color='C2', ls='--', label=f"DPO, {eval_split}: {acc[0]:.3f} ± {acc[1]:.3f}")
    ax[1].axhline(lp[0], color='C3', ls='-.', label=f"SFT log-prob pref., {eval_split}: {lp[0]:.3f} ± {lp[1]:.3f}")
    for a in ax:
        a.legend(fontsize=7)
    cfg = per_seed[0]['dpo_config']
    fig.suptitle(f"DPO on {cfg['data']} (beta={cfg['beta']}, length_normalize={cfg['length_normalize']}), "
                 f"{len(per_seed)} seeds")
    fig.tight_layout()
    print(f"wrote {save_figure(fig, path, dpi=90)}")


def main():
    configurator.configure(globals())
    os.chdir(ROOT)  # relative paths (out/, data/, config/) are the repository's, as for the launcher
    sft_cfg_path = check_settings()
    sft_all = list(sft_args) + (QUICK_SFT if quick else [])
    pairs_all = list(pairs_args) + (QUICK_PAIRS if quick else [])
    global eval_pairs
    if quick and eval_pairs == 0:
        eval_pairs = 16
    dirs = [f'--data_root={data_root}']
    sft_all = dirs + sft_all
    # 1. the SFT data set, once, before the seed chains run side by side (two auto_prepares would race)
    if sft_ckpt:
        from checkpoint import load_checkpoint
        lm_data = load_checkpoint(sft_ckpt)['config']['data']
        stem = os.path.basename(os.path.normpath(sft_ckpt if os.path.isdir(sft_ckpt) else
                                                 os.path.dirname(os.path.dirname(sft_ckpt))))
    else:
        scope = {}
        exec(compile(open(sft_cfg_path).read(), sft_cfg_path, 'exec'), scope)
        lm_data = arg_value(sft_all, 'data', scope.get('data', 'stdlib'))
        auto = arg_value(sft_all, 'auto_prepare', str(scope.get('auto_prepare', False))) == 'True'
        stem = os.path.basename(sft_cfg_path).removesuffix('.py')
        if not os.path.isfile(os.path.join(data_root, lm_data, 'meta.json')):
            cmd = list(prepare) if prepare else [f'prepare/{lm_data}.py'] if auto else []
            if cmd:
                run_script(cmd + [f'--out_dir={os.path.join(data_root, lm_data)}'], echo=ALL)
    # 2. pairs from the SFT data's held-out split, the same for every seed
    corruption = arg_value(pairs_all, 'corruption', 'shuffle')
    pairs_data = f'{lm_data}_pairs_{corruption}'
    out = run_script(['prepare/pairs.py', f'--data={lm_data}', f'--data_root={data_root}',
                      f'--out_dir={os.path.join(data_root, pairs_data)}'] + pairs_all, echo=ALL)
    pairs_rebuilt = 'already holds' not in out
    # 3. one SFT -> DPO -> evaluation chain per seed, `jobs` of them side by side
    per_seed = in_parallel(lambda s: seed_chain(s, sft_cfg_path, sft_all, pairs_data, corruption, stem, pairs_rebuilt),
                           seeds, jobs)
    # 4. table, per-seed json, figure
    md = table(per_seed, pairs_data, corruption)
    base = os.path.join(out_dir, f'{stem}_dpo_{corruption}_seeds')
    with open(base + '.md', 'w') as f:
        f.write(md + '\n')
    with open(base + '.json', 'w') as f:
        json.dump({'pairs_data': pairs_data, 'eval_split': eval_split, 'seeds': list(seeds),
                   'mean_std': {k: mean_std([r['dpo'][k] for r in per_seed]) for k in DPO_COLS} |
                   {'sft_logp_accuracy': mean_std([r['sft']['logp_accuracy'] for r in per_seed])},
                   'per_seed': per_seed}, f, indent=1)
    print(f"wrote {base}.md, {base}.json")
    plot(per_seed, figure or base + '.png')
    print(md)


if __name__ == '__main__':
    configurator.run_main(main)
