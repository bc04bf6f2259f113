"""SFT reference for dpo_quick: a small GPT on the embedded corpus (offline, a couple of CPU minutes)."""
data = 'stdlib'
auto_prepare = True          # runs prepare/stdlib.py the first time (Python's own sources, no network)
run_name = 'sft_quick_s{seed}'
n_layer, n_head, n_embd = 4, 4, 128
block_size = 128
pos_emb, norm, mlp, bias = 'rope', 'rmsnorm', 'swiglu', False
batch_size = 16
max_iters = 300
learning_rate, min_lr = 3e-3, 3e-4
warmup_iters = 30
lr_schedule = 'wsd'
decay_frac = 0.2
eval_interval, eval_iters, log_interval = 150, 10, 50
log_tensorboard = False
