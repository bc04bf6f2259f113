"""Encoder-decoder vs decoder-only study: 4 problems + SAMSum scaling + transfer, table and figures (~15 min CPU)."""
# script: analysis/encdec_study.py
out_dir = 'out/encdec_study'
