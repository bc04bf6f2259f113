"""Numeric sequences, causal linear attention (elu+1 kernel, chunked), otherwise numeric_softmax: about a minute on 2 CPU cores."""
import configurator
exec(open(configurator.resolve_config_file('numeric_softmax')).read())
attn = 'linear'
linear_chunk = 16            # training sequences are <= 16 positions: one chunk; test_long spans two
