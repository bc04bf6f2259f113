"""nGPT's speedup over GPT vs context length (128 and 1024 tokens, equal tokens per step): lr sweep per variant and context, best lr x 3 seeds, speedup table + figure beside the paper's factors."""
# script: analysis/ngpt_context.py
data = 'stdlib'
out_dir = 'out/ngpt_context'
figure = 'figures/ngpt_context/speedup_vs_context.png'
variants = ['GPT', 'nGPT']                # the first is the baseline; DiffNGPT costs 3.3x GPT's step at 1024 on CPU
contexts = [128, 1024]                    # 8x span; batch 16 x 128 and 2 x 1024 (512 too would add ~45%: ~65 min)
tokens_per_step = 2048                    # equal at every context (variants_compare's 16 x 128)
n_layer, n_head, n_embd = 4, 4, 128       # variants_compare's model
max_iters = 240                           # the seed runs
sweep_iters = 240                         # the sweep runs (same length: seed 1 of the best lr is reused)
lrs = [3e-3, 6e-3, 1.2e-2, 2.4e-2]        # shared grid; a best lr at an edge gets 2x / 1/2x beyond it (lr_extend)
seeds = [1, 2, 3]
eval_interval, eval_iters = 20, 10
