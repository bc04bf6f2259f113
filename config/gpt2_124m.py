"""GPT-2 small (124M) on OpenWebText, nanoGPT's recipe: 8+ GPUs, global batch 524,288 tokens."""
# data: python prepare/text.py --source=Skylion007/openwebtext --tokenizer=gpt2 --out_dir=data/openwebtext
data = 'openwebtext'
run_name = 'gpt2_124m_{data}_s{seed}'
n_layer, n_head, n_embd = 12, 12, 768
block_size = 1024
pos_emb, norm, mlp, bias = 'learned', 'layernorm', 'gelu', True
vocab_size = 50304           # 50257 padded to a multiple of 64
batch_size = 16              # per GPU; grad_accum follows from the global batch
global_batch_tokens = 524288
max_iters = 600000
learning_rate, min_lr = 6e-4, 6e-5
warmup_iters = 2000
weight_decay = 0.1
eval_interval, eval_iters, log_interval = 1000, 200, 10
compile = True
