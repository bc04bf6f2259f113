"""DPO end to end: prepare data, train the SFT reference, build preference pairs, DPO, evaluate before/after.

Run through the launcher (config/dpo_quick.py, config/dpo_tinystories.py name this script):

    ./launcher.sh dpo_quick                                   # offline, embedded corpus, a few CPU minutes
    ./launcher.sh dpo_tinystories                             # TinyStories from the hub (GPU)
    ./launcher.sh dpo_tinystories --sft_ckpt=out/sft_tinystories_s1337   # reuse an SFT reference

Steps (each one a normal command, printed before it runs):
  1. `prepare` (if given and the SFT data set is missing)      prepare/<...>.py
  2. SFT with the `sft` config unless sft_ckpt is given          train.py <sft config> <sft_args>
  3. pairs from the SFT data's val split                         prepare/pairs.py <pairs_args>
  4. DPO from the SFT checkpoint, same model flags               train.py <sft config> --objective=dpo ... <dpo_args>
  5. test preference accuracy of SFT and DPO                     eval_tasks.py preference ...
  6. figure (loss, preference accuracy, reward margin vs step) and a markdown table in the DPO run dir
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from analysis.study import pyplot, read_metrics, run_script, train_run  # noqa: E402

sft = 'sft_quick'          # train.py config (problem name or path) of the SFT reference; DPO reuses its model flags
sft_ckpt = ''              # an existing SFT run dir or .pt: skip SFT training
sft_args = []              # extra --key=value for the SFT run
prepare = []               # command that makes the SFT data set when it is missing, e.g. ['prepare/tinystories.py']
pairs_args = []            # prepare/pairs.py arguments (--data and --out_dir are set here)
dpo_args = []              # train.py --key=value for DPO, applied after the SFT config
data_root = 'data'
out_dir = 'out'
eval_split = 'test'
eval_pairs = 0             # 0 = every pair of eval_split
figure = ''                # '' = <DPO run dir>/figures/dpo_curves.png


ALL = ('',)                # echo every line of every step


def arg_value(args, key, default):
    vals = [a.split('=', 1)[1] for a in args if a.startswith(f'--{key}=')]
    return vals[-1] if vals else default


def evaluate(ckpt, ref, data, dpo_cfg, out):
    cmd = ['eval_tasks.py', 'preference', f'--ckpt={ckpt}', f'--ref={ref}', f'--data={data}', f'--data_root={data_root}',
           f'--split={eval_split}', f'--beta={dpo_cfg["beta"]}', f'--length_normalize={dpo_cfg["length_normalize"]}',
           f'--seq_max_len={dpo_cfg["seq_max_len"]}', f'--max_pairs={eval_pairs}', f'--out={out}']
    run_script(cmd, echo=ALL)
    with open(out) as f:
        return json.load(f)


def plot(run_dir, path, before, after):
    plt = pyplot()
    ms = read_metrics(run_dir)
    train = [r for r in ms if r['event'] == 'train' and 'acc' in r]
    val = [r for r in ms if r['event'] == 'evaluate' and 'val_acc' in r]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    for a, key, title in zip(ax, ('loss', 'acc', 'margin'), ('DPO loss', 'preference accuracy', 'reward margin')):
        a.plot([r['step'] for r in train], [r[key] for r in train], label='train (log interval mean)', alpha=0.8)
        a.plot([r['step'] for r in val], [r[f'val_{key}'] for r in val], 'o-', label='val pairs')
        a.set_xlabel('DPO step')
        a.set_ylabel(title)
        a.set_title(title)
        a.grid(alpha=0.3)
    ax[0].axhline(0.6931, color='gray', ls=':', label='log 2 (policy = reference)')
    ax[1].axhline(before['accuracy'], color='gray', ls=':', label=f"SFT vs itself ({before['accuracy']:.2f})")
    ax[1].axhline(after['accuracy'], color='C2', ls='--', label=f"DPO, {eval_split} ({after['accuracy']:.3f})")
    ax[1].axhline(before['logp_accuracy'], color='C3', ls='-.',
                  label=f"SFT log-prob pref., {eval_split} ({before['logp_accuracy']:.3f})")
    for a in ax[:2]:
        a.legend(fontsize=7)
    cfg = json.load(open(os.path.join(run_dir, 'config.json')))
    fig.suptitle(f"DPO on {cfg['data']} (beta={cfg['beta']}, length_normalize={cfg['length_normalize']})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def main():
    configurator.configure(globals())
    sft_cfg_path = configurator.resolve_config_file(sft)
    dirs = [f'--data_root={data_root}', f'--out_dir={out_dir}']
    # 1-2. SFT reference
    ref = sft_ckpt
    if not ref:
        if prepare:  # the SFT data set's name: --data in sft_args, else the SFT config's `data`
            scope = {}
            exec(compile(open(sft_cfg_path).read(), sft_cfg_path, 'exec'), scope)
            name = arg_value(sft_args, 'data', scope.get('data', 'stdlib'))
            if not os.path.isfile(os.path.join(data_root, name, 'meta.json')):
                run_script(list(prepare) + [f'--out_dir={os.path.join(data_root, name)}'], echo=ALL)
        ref = train_run([sft_cfg_path] + dirs + list(sft_args), echo=ALL)
    from checkpoint import load_checkpoint
    sft_run_cfg = load_checkpoint(ref)['config']
    lm_data = sft_run_cfg['data']
    # 3. pairs from the SFT data's held-out split
    corruption = arg_value(pairs_args, 'corruption', 'shuffle')
    pairs_data = f'{lm_data}_pairs_{corruption}'
    run_script(['prepare/pairs.py', f'--data={lm_data}', f'--data_root={data_root}',
                f'--out_dir={os.path.join(data_root, pairs_data)}'] + list(pairs_args), echo=ALL)
    # 4. DPO with the SFT run's settings (model flags), then the DPO settings
    run_name = os.path.basename(os.path.normpath(ref if os.path.isdir(ref) else os.path.dirname(os.path.dirname(ref))))
    dpo_dir = train_run([sft_cfg_path] + dirs + list(sft_args) +
                        ['--objective=dpo', f'--data={pairs_data}', f'--init_from={ref}', '--auto_prepare=False',
                         '--sample_tokens=0', f'--run_name={run_name}_dpo_{corruption}'] + list(dpo_args), echo=ALL)
    dpo_cfg = json.load(open(os.path.join(dpo_dir, 'config.json')))
    # 5. before / after on the held-out pairs
    rows = [('SFT', 'none (log-probs alone)', evaluate(ref, '', pairs_data, dpo_cfg, os.path.join(dpo_dir, 'eval_sft.json'))),
            ('SFT', 'SFT (itself)', evaluate(ref, ref, pairs_data, dpo_cfg, os.path.join(dpo_dir, 'eval_sft_vs_sft.json'))),
            ('DPO', 'none (log-probs alone)', evaluate(dpo_dir, '', pairs_data, dpo_cfg, os.path.join(dpo_dir, 'eval_dpo.json'))),
            ('DPO', 'SFT', evaluate(dpo_dir, ref, pairs_data, dpo_cfg, os.path.join(dpo_dir, 'eval_dpo_vs_sft.json')))]
    # 6. table and figure
    n = rows[0][2]['pairs']
    lines = [f"DPO on `{pairs_data}` ({corruption} corruption), {eval_split} split, {n} pairs; "
             f"beta={dpo_cfg['beta']}, length_normalize={dpo_cfg['length_normalize']}, {dpo_cfg['max_iters']} DPO steps",
             '', '| model | reference | preference accuracy | mean margin | log-prob accuracy (no reference) |',
             '|---|---|---|---|---|']
    lines += [f"| {m} | {r} | {e['accuracy']:.3f} | {e['margin']:.3f} | {e['logp_accuracy']:.3f} |" for m, r, e in rows]
    table = '\n'.join(lines)
    with open(os.path.join(dpo_dir, 'dpo_summary.md'), 'w') as f:
        f.write(table + f"\n\nSFT: {ref}\nDPO: {dpo_dir}\n")
    plot(dpo_dir, figure or os.path.join(dpo_dir, 'figures', 'dpo_curves.png'), rows[1][2], rows[3][2])
    print(table)


if __name__ == '__main__':
    configurator.run_main(main)
