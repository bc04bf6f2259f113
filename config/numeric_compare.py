"""Softmax vs linear attention on numeric sequences: both x 3 seeds, mean ± std table, figures + summary."""
# script: analysis/numeric_compare.py
results_dir = 'out/numeric_compare'
seeds = [1, 2, 3]             # one run per model and seed (config/numeric_softmax.py, config/numeric_linear.py)
jobs = 2                      # two 1-thread trainings side by side on a 2-core CPU
attention_types = 'counting,arithmetic,alternating'
attention_length = 12
