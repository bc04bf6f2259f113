"""Length generalization from scratch: every pos_emb, randomized positions, the several-M check x 3 seeds (~40 min).
Copy and reverse, exact match and per-token accuracy vs length, on the shared 2-core CPU with jobs=2 (docs/pe_lengen.md)."""
# script: analysis/pe_lengen.py
# Settings are analysis/pe_lengen.py's; --quick=True shrinks everything to a seconds-long smoke run.
# Sized for a 2-core CPU: 2 layers x 64, 1000 steps of 32 examples, the one budget for every arm: the smallest
# probed at which plain rope and learned reach >= 0.9 exact match in distribution on both tasks (800 steps left
# rope at 0.84 on copy; docs/pe_lengen.md). Two training runs side by side, one thread each.
tasks = ['copy', 'reverse']
seeds = [1, 2, 3]
train_len = 8
n_layer, n_head, n_embd = 2, 4, 64
batch_size = 32
max_iters = 1000
learning_rate = 5e-3
rand_max = 64                 # '+rand' arms: positions from [0, 64), beyond the longest test input (33 tokens)
m_sweep = [21, 25, 29]        # the several-M check, between the longest training input (17 tokens: plain rope's
                              # positions) and the longest test input (33; rope+rand draws from [0, 64))
jobs = 2
threads = 1
out_dir = 'out/pe_lengen'
figures_dir = 'figures/pe_lengen'
