"""SFT reference on TinyStories (GPT-2 tokens, 6x384 GPT, block 512): the model dpo_tinystories aligns (GPU)."""
# data: python prepare/tinystories.py (hub; --source=<local .txt/.jsonl/.parquet> offline), run by auto_prepare
data = 'tinystories'
auto_prepare = True
run_name = 'sft_tinystories_s{seed}'
n_layer, n_head, n_embd = 6, 6, 384
block_size = 512
pos_emb, norm, mlp, bias = 'rope', 'rmsnorm', 'swiglu', False
batch_size = 32
max_iters = 6000
learning_rate, min_lr = 1e-3, 1e-4
warmup_iters = 200
lr_schedule = 'wsd'
decay_frac = 0.2
eval_interval, eval_iters, log_interval = 500, 40, 50
sample_tokens = 200
sample_prompt = 'Once upon a time'
