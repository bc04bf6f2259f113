"""SAMSum encoder-decoder scaling: large (d_model 768, 8 encoder + 8 decoder layers, 12 heads)."""
# data: python prepare/samsum.py; ./launcher.sh encdec_study runs tiny and small on CPU
data = 'samsum'
objective = 'seq2seq'
run_name = 'samsum_scale_large_s{seed}'
n_layer, n_encoder_layer, n_head, n_embd = 8, 8, 12, 768
block_size = 128
pos_emb, norm, mlp, bias = 'rope', 'rmsnorm', 'swiglu', False
batch_size = 16
max_iters = 300
learning_rate, min_lr = 3e-4, 3e-4 / 10
warmup_iters = 30
eval_interval, eval_iters, log_interval = 50, 8, 25
log_tensorboard = False
