"""SAMSum encoder-decoder scaling: medium (d_model 512, 6 encoder + 6 decoder layers, 8 heads)."""
# data: python prepare/samsum.py; ./launcher.sh encdec_study runs tiny and small on CPU
data = 'samsum'
objective = 'seq2seq'
run_name = 'samsum_scale_medium_s{seed}'
n_layer, n_encoder_layer, n_head, n_embd = 6, 6, 8, 512
block_size = 128
pos_emb, norm, mlp, bias = 'rope', 'rmsnorm', 'swiglu', False
batch_size = 16
max_iters = 300
learning_rate, min_lr = 6e-4, 6e-4 / 10
warmup_iters = 30
eval_interval, eval_iters, log_interval = 50, 8, 25
log_tensorboard = False
