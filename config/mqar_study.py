"""MQAR associative recall: softmax/linear/diff/nGPT/DiffNGPT x widths 16-64 x 4,8 kv pairs, lr sweep per variant and width, 3 seeds (~26 min CPU)."""
# script: analysis/mqar_study.py
# Settings are analysis/mqar_study.py's; --quick=True shrinks everything to a seconds-long smoke run.
out_dir = 'out/mqar_study'
figures_dir = 'figures/mqar'
