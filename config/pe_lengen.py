"""Length generalization from scratch: every pos_emb x 3 seeds on copy and reverse, exact match vs length (~15 CPU-min)."""
# script: analysis/pe_lengen.py
# Settings are analysis/pe_lengen.py's; --quick=True shrinks everything to a seconds-long smoke run.
# Sized for a 2-core CPU: 2 layers x 64, 1000 steps of 32 examples: learned, sinonly and rope reach >= 0.9
# exact match in distribution on both tasks (600 steps left all but learned below 0.9; docs/pe_lengen.md).
tasks = ['copy', 'reverse']
seeds = [1, 2, 3]
train_len = 8
n_layer, n_head, n_embd = 2, 4, 64
batch_size = 32
max_iters = 1000
learning_rate = 5e-3
out_dir = 'out/pe_lengen'
figures_dir = 'figures/pe_lengen'
