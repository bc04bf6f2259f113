"""Encoder-decoder on SAMSum (dialogue -> encoder, summary <- decoder), CPU scale (= samsum_scale_tiny)."""
# data: python prepare/samsum.py (or the offline stand-in made by ./launcher.sh encdec_study)
data = 'samsum'
objective = 'seq2seq'
run_name = 'samsum_encdec_s{seed}'
n_layer, n_encoder_layer, n_head, n_embd = 2, 2, 4, 128
block_size = 128
pos_emb, norm, mlp, bias = 'rope', 'rmsnorm', 'swiglu', False
batch_size = 16
max_iters = 300
learning_rate, min_lr = 2e-3, 2e-4
warmup_iters = 30
eval_interval, eval_iters, log_interval = 50, 8, 25
log_tensorboard = False
