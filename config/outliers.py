"""Activation outliers per variant (DIFF paper): largest and median attention logits and hidden states, loss with logits cut to 8/6/4 bits, on variants_compare's seed runs."""
# script: analysis/outliers.py
# ckpts = '': the seed runs that <runs_from>/results.json lists (each variant's best lr x 3 seeds); when it is missing
# or lists unfinished runs, `python analysis/variants_compare.py config/variants_compare.py` trains what is missing.
ckpts = ''
runs_from = 'out/variants_compare'
data = 'stdlib'                           # the data the runs were trained on
block_size = 0                            # 0 = the runs' own (128)
batches, batch_size = 8, 16               # the first 128 val windows, the same for every checkpoint
bits = [8, 6, 4]
out = 'figures/outliers/results'          # results.md and results.json
figure = 'figures/outliers/outliers.png'
