"""GPT baseline, 24x1024, 1024 context, 10k steps at lr 30e-4, 0.5M-token batches, OpenWebText."""
# reference recipe of the nGPT / Differential Transformer comparison: 24 x 1024, lr 30e-4, cosine to 0 over
# 10k steps, global batch 524,288 tokens (grad_accum follows from batch_size and the number of GPUs)
# data: python prepare/openwebtext.py
data = 'openwebtext'
run_name = 'GPT_1kctx_10k_lr30e-4_s{seed}'
n_layer, n_head, n_embd = 24, 16, 1024
block_size = 1024
vocab_size = 50304           # GPT-2's 50257 padded to a multiple of 64
pos_emb, norm, mlp, bias, tie_embeddings = 'rope', 'rmsnorm', 'swiglu', False, False
attn = 'softmax'
ngpt = False
batch_size = 8              # per GPU
global_batch_tokens = 524288
max_iters = 10000
learning_rate, min_lr = 30e-4, 0.0
lr_schedule = 'cosine'
warmup_iters = 2000
weight_decay = 0.1
eval_interval, eval_iters, log_interval = 500, 50, 10
compile = True
