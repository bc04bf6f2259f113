"""Offline pair on the embedded corpus: baseline vs differential input embeddings (RoPE), lr sweep each, best lr x 5 seeds, ppl table (mean ± std) and figures."""
# script: analysis/diffinput_compare.py
data = 'stdlib'
out_dir = 'out/diffinput_quick'
pos_emb = 'rope'
n_layer, n_head, n_embd = 4, 4, 128
block_size = 128
batch_size = 32
max_iters = 400                           # the seed runs
sweep_iters = 400                         # the sweep runs: the compared length, so the lr is picked on the runs it is
                                          # compared on (and seed 1 of the best lr is the sweep's own run, reused)
lrs = [1e-3, 2e-3, 3e-3, 6e-3]
seeds = [1, 2, 3, 4, 5]                   # 5: with 3 the two models' means were inside each other's spread
