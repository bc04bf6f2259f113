"""CPU demo of WSD decay branches: one stable run, then three budgets decayed from its pre-decay checkpoints (~2 min)."""
# figure: python analysis/wsd_branches.py --run_dir=out/wsd_branches_s1337
data = 'stdlib'
auto_prepare = True
run_name = 'wsd_branches_s{seed}'
n_layer, n_head, n_embd = 2, 2, 64
block_size = 64
batch_size = 8               # 512 tokens per step
pos_emb, norm, mlp = 'rope', 'rmsnorm', 'swiglu'
learning_rate, min_lr = 3e-3, 3e-4
warmup_iters = 20
lr_schedule = 'wsd'
decay_frac = 0.2
decay_budgets = [40960, 81920, 163840]  # 80, 160 and 320 steps
eval_interval, eval_iters, log_interval = 20, 10, 5
log_tensorboard = False
