"""Softmax vs linear attention on numeric sequences: train both, evaluate side by side, figures + summary table."""
# script: analysis/numeric_compare.py
results_dir = 'out/numeric_compare'
attention_types = 'counting,arithmetic,alternating'
attention_length = 12
