"""Run directories and what a run writes into them: the versioned run dir, metrics.jsonl (one JSON
object per event, each with step and tokens), console JSON markers, TensorBoard, wandb, and the
end-of-run figures. Rank 0 writes; other ranks get a Logger that does nothing.
"""
import json
import os

from configurator import UserError

# settings that may change between a run and its resumption without making it a different run
RUNTIME_KEYS = {'init_from', 'device', 'compile', 'log_tensorboard', 'wandb_log', 'sample_tokens', 'sample_prompt',
                'eval_iters', 'log_interval', 'auto_prepare', 'log_figures', 'ddp_timeout_s', 'data_root', 'out_dir',
                'max_iters', 'max_tokens', 'wandb_project', 'stop_after',
                'parallel',  # ddp and fsdp checkpoints are the same: either continues the other's run
                'branch'}  # the decay-branch command names the same run as the stable one


def format_run_name(cfg):
    try:
        return cfg['run_name'].format(**cfg)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"run_name '{cfg['run_name']}' has a bad placeholder ({e}); use {{key}} of config keys")


def same_run(a, b):
    return {k: v for k, v in a.items() if k not in RUNTIME_KEYS} == {k: v for k, v in b.items() if k not in RUNTIME_KEYS}


def choose_run_dir(cfg):
    """out/<name>, or <name>_v2, _v3... when a different config already uses the name.
    For init_from='resume', the version whose config matches (or the newest, to report what changed)."""
    base = os.path.join(cfg['out_dir'], format_run_name(cfg))
    candidates, v = [], 1
    while True:
        d = base if v == 1 else f'{base}_v{v}'
        if not os.path.exists(os.path.join(d, 'config.json')):
            break
        candidates.append(d)
        v += 1
    free = d
    for c in candidates:
        with open(os.path.join(c, 'config.json')) as f:
            if same_run(json.load(f), cfg):
                return c
    if cfg['init_from'] == 'resume':
        if not candidates:
            raise UserError(f"init_from='resume' but there is no run at {base}; start it with init_from='scratch'")
        with open(os.path.join(candidates[-1], 'config.json')) as f:
            old = json.load(f)
        changed = sorted(k for k in set(old) | set(cfg) if k not in RUNTIME_KEYS and old.get(k) != cfg.get(k))
        raise UserError(f"cannot resume {candidates[-1]}: these settings differ from the run's config.json: "
                        f"{', '.join(changed)}; resume with the same settings or start a new run")
    return free


# ----------------------------------------------------------------------------- logging

class Logger:
    """metrics.jsonl + console JSON markers + TensorBoard + wandb, all with a `tokens` x-axis. Rank 0 only."""

    def __init__(self, run_dir, cfg, master, resume_step=None):
        """Rank 0: creates run_dir, writes config.json (the resolved settings, atomically), opens the logs."""
        self.master, self.tb, self.wandb = master, None, None
        if not master:
            return
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, 'config.json.tmp'), 'w') as f:
            json.dump(cfg, f, indent=2)
        os.replace(os.path.join(run_dir, 'config.json.tmp'), os.path.join(run_dir, 'config.json'))
        self.path = os.path.join(run_dir, 'metrics.jsonl')
        if resume_step is not None and os.path.exists(self.path):
            # drop events after the checkpoint: they are redone, so the file equals an uninterrupted run's
            with open(self.path) as f:
                keep = [l for l in f if l.strip() and json.loads(l).get('step', 0) <= resume_step]
            with open(self.path + '.tmp', 'w') as f:
                f.writelines(keep)
            os.replace(self.path + '.tmp', self.path)
        elif resume_step is None:
            open(self.path, 'w').close()
        if cfg['log_tensorboard']:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(run_dir, 'tb'))
        if cfg['wandb_log']:
            import wandb
            self.wandb = wandb.init(project=cfg['wandb_project'], name=os.path.basename(run_dir), config=cfg,
                                    dir=run_dir, resume='allow')
            wandb.define_metric('*', step_metric='tokens')

    def event(self, name, console=False, **kv):
        if not self.master:
            return
        rec = {'event': name, **kv}
        with open(self.path, 'a') as f:
            f.write(json.dumps(rec) + '\n')
        if console:
            print(json.dumps(rec), flush=True)
        scalars = {k: v for k, v in kv.items() if isinstance(v, (int, float)) and k not in ('step', 'tokens')}
        if self.tb is not None and 'tokens' in kv:
            for k, v in scalars.items():
                self.tb.add_scalar(f'{name}/{k}', v, kv['tokens'])
        if self.wandb is not None and 'tokens' in kv:
            self.wandb.log({'tokens': kv['tokens'], **{f'{name}/{k}': v for k, v in scalars.items()}})

    def histogram(self, tag, values, tokens):
        if self.master and self.tb is not None:
            self.tb.add_histogram(tag, values, tokens)

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def write_run_figures(run_dir, diagnostics, tb=None):
    """figures/loss.png (train and eval loss vs tokens), val_bpb.png (lm runs) and a histogram per diagnostic of the
    last batch."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    events = [json.loads(l) for l in open(os.path.join(run_dir, 'metrics.jsonl')) if l.strip()]
    os.makedirs(os.path.join(run_dir, 'figures'), exist_ok=True)
    figs = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, key, style in (('train', 'loss', '-'), ('evaluate', 'val_loss', 'o-')):
        pts = [(e['tokens'], e[key]) for e in events if e['event'] == name and e.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=f'{name} loss')
    ax.set(xlabel='tokens', ylabel='loss (nats/token)', title=f'loss: {os.path.basename(run_dir)}')
    ax.legend()
    ax.grid(alpha=0.3)
    figs['loss'] = fig
    bpb = [(e['tokens'], e['val_bpb']) for e in events if e['event'] == 'evaluate' and e.get('val_bpb') is not None]
    if bpb:  # bits per byte: comparable across tokenizers (data.bpb_sums)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(*zip(*bpb), 'o-', color='tab:green')
        ax.set(xlabel='tokens', ylabel='validation bits per byte', title=f'val_bpb: {os.path.basename(run_dir)}')
        ax.grid(alpha=0.3)
        figs['val_bpb'] = fig
    for name, t in diagnostics.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(t.float().flatten().cpu().numpy(), bins=60, color='tab:purple')
        ax.set(xlabel=name.replace('_', ' '), ylabel='count (positions in the last batch)',
               title=f'{name} at the end of training')
        ax.grid(alpha=0.3)
        figs[f'{name}_hist'] = fig
    for name, fig in figs.items():
        fig.tight_layout()
        fig.savefig(os.path.join(run_dir, 'figures', f'{name}.png'), dpi=110)
        if tb is not None:
            tb.add_figure(f'figures/{name}', fig)
        plt.close(fig)
