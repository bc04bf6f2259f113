"""Decoder-only on SAMSum as `dialogue [SEP] summary`, loss on the summary only, CPU scale."""
# data: python prepare/samsum.py (or the offline stand-in made by ./launcher.sh encdec_study)
data = 'samsum'
objective = 'seq2seq'
run_name = 'samsum_deconly_s{seed}'
n_layer, n_encoder_layer, n_head, n_embd = 5, 0, 4, 128   # 5 layers ~ the parameters of 2+2 enc-dec
block_size = 128
pos_emb, norm, mlp, bias = 'rope', 'rmsnorm', 'swiglu', False
batch_size = 16
max_iters = 300
learning_rate, min_lr = 2e-3, 2e-4
warmup_iters = 30
eval_interval, eval_iters, log_interval = 50, 8, 25
log_tensorboard = False
