"""Length generalization from scratch: every pos_emb x 3 seeds on copy/reverse digit strings, exact match vs length (~30 min CPU)."""
# script: analysis/pe_lengen.py
# Settings are analysis/pe_lengen.py's; --quick=True shrinks everything to a seconds-long smoke run.
out_dir = 'out/pe_lengen'
figures_dir = 'figures/pe_lengen'
