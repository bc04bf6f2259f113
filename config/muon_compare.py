"""Muon vs AdamW on the quickstart model: lr sweep, best lr x 3 seeds, time-to-loss table + loss-vs-time figure (~30 CPU-min)."""
# script: analysis/muon_compare.py
# Settings are analysis/muon_compare.py's; --quick=True shrinks everything to a seconds-long smoke run.
base_config = 'config/quickstart.py'
out_dir = 'out/muon_compare'
batch_size = 8
max_iters = 400
sweep_iters = 200
adamw_lrs = [1e-3, 3e-3, 6e-3]
muon_lrs = [0.01, 0.02, 0.04]
seeds = [1337, 1338, 1339]
