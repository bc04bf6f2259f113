"""Offline pair on the embedded corpus: baseline vs differential input embeddings (RoPE), lr sweep each, best lr x 3 seeds, ppl table (mean ± std) and figures."""
# script: analysis/diffinput_compare.py
data = 'stdlib'
out_dir = 'out/diffinput_quick'
pos_emb = 'rope'
n_layer, n_head, n_embd = 4, 4, 128
block_size = 128
batch_size = 32
max_iters = 400                           # the seed runs
sweep_iters = 200                         # the sweep runs (half length, to keep the study near 30 min)
lrs = [1e-3, 2e-3, 3e-3, 6e-3]
seeds = [1, 2, 3]
