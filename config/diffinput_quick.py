"""Offline pair on the embedded corpus: baseline vs differential input embeddings (RoPE), ppl table and figures."""
# script: analysis/diffinput_compare.py
data = 'stdlib'
out_dir = 'out/diffinput_quick'
pos_emb = 'rope'
n_layer, n_head, n_embd = 4, 4, 128
block_size = 128
batch_size = 32
max_iters = 400
learning_rate = 3e-3
