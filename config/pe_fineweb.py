"""GPU: the positional-encoding study at scale, FineWeb-Edu, model_size tiny with WSD decay branches (--pos_emb=...)."""
# data:  python prepare/fineweb_edu.py --tokenizer=bpe --vocab_size=65536 --max_tokens=2_500_000_000
#        python prepare/algorithmic.py --data=fineweb_edu --block_size=1024
# run:   ./launcher.sh pe_fineweb --pos_emb=rope        (then --model_size=small and its budgets, ...)
# eval:  python eval_tasks.py algorithmic --ckpt=out/tiny_rope_2.4B_s1337/decay_2400000000 --data=fineweb_edu
data = 'fineweb_edu'
model_size = 'tiny'          # 512/6/8, block 1024, lr 6e-4, 2.4B tokens at most (train.py MODEL_SIZES)
pos_emb = 'rope'
norm, mlp, bias = 'layernorm', 'gelu', False
algo_data = 'algorithmic_fineweb_edu_1024'
algo_mix = 0.1
lr_schedule = 'wsd'
decay_frac = 0.1
decay_shape = 'linear'
decay_budgets = [600_000_000, 1_200_000_000, 2_400_000_000]
warmup_iters = 700
eval_interval, eval_iters, log_interval = 1000, 50, 20
compile = True
