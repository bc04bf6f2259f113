"""GPT, nGPT, DiffTransformer and DiffNGPT at equal parameter count on the embedded corpus: lr sweep per variant, best lr x 3 seeds, mean ± std table + seed-band figure."""
# script: analysis/variants_compare.py
data = 'stdlib'
out_dir = 'out/variants_compare'
n_layer, n_head, n_embd = 4, 4, 128       # the differential variants use n_head // 2 = 2 heads
block_size = 128
batch_size = 16
max_iters = 240                           # the seed runs
sweep_iters = 240                         # the sweep runs (same length: seed 1 of the best lr is reused)
lrs = [1e-3, 2e-3, 3e-3, 6e-3]
seeds = [1, 2, 3]
eval_interval, eval_iters = 20, 10
