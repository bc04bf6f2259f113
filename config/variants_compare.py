"""GPT, nGPT, DiffTransformer and DiffNGPT at equal parameter count on the embedded corpus: curves + steps-to-loss table (~10 min of CPU time)."""
# script: analysis/variants_compare.py
data = 'stdlib'
out_dir = 'out/variants_compare'
n_layer, n_head, n_embd = 4, 4, 128       # the differential variants use n_head // 2 = 2 heads
block_size = 128
batch_size = 16
max_iters = 240
learning_rate = 3e-3
eval_interval, eval_iters = 20, 10
