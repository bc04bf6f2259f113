"""Numeric sequences (prepare/numeric.py), softmax attention, d_model 128, 2 layers: about a minute on 2 CPU cores."""
data = 'numeric'
auto_prepare = True          # runs prepare/numeric.py the first time (about 2 s)
objective = 'records'        # one whole sequence per row, padded by data.py, no loss on padding
run_name = 'numeric_{attn}_s{seed}'
n_layer, n_head, n_embd = 2, 4, 128
block_size = 32              # training sequences are <= 17 tokens; test_long ones <= 33
pos_emb, norm, mlp, bias = 'rope', 'rmsnorm', 'gelu', False
attn = 'softmax'
dropout = 0.0
batch_size = 64
max_iters = 1200
learning_rate, min_lr = 3e-3, 3e-4
warmup_iters = 100
lr_schedule = 'cosine'
weight_decay = 0.1
eval_interval, eval_iters, log_interval = 200, 16, 100
log_tensorboard = False
