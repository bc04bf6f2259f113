"""MQAR capacity study: softmax/linear/softmax with nGPT's recipe x widths 16-64 x 4,16,64 kv pairs, each run to 0.99 or 4k steps, 3 seeds (<=45 min CPU)."""
# script: analysis/mqar_study.py
# Settings are analysis/mqar_study.py's; --quick=True shrinks everything to a seconds-long smoke run.
out_dir = 'out/mqar_study'
figures_dir = 'figures/mqar'
