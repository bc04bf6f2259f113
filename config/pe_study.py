"""CPU positional-encoding study: nine pos_emb encodings, small models with a 10% algorithmic mix, one table + figures (~15 min)."""
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
