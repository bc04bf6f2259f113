"""CPU positional-encoding study: every pos_emb encoding model.py declares x 3 seeds, small models with a 10% algorithmic mix, mean ± std tables + figures (~15-30 min)."""
# script: analysis/pe_study.py
# Settings are analysis/pe_study.py's; --quick=True shrinks everything to a seconds-long smoke run.
data = 'stdlib'
n_layer, n_head, n_embd = 2, 2, 128
block_size = 128
batch_size = 16
max_iters = 200
learning_rate = 3e-3
algo_mix = 0.1
eval_n = 40
seeds = [1, 2, 3]
jobs = 2          # two 1-thread trainings side by side (2-core CPU)
