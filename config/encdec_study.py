"""Encoder-decoder vs decoder-only study: 4 problems + SAMSum scaling + transfer, seeds 1-3, mean ± std tables and figures (~25 min idle 2-core CPU)."""
# script: analysis/encdec_study.py
out_dir = 'out/encdec_study'
