"""bench.py measures every variant on CPU and writes its table and JSON."""
import json
import os
import subprocess
import sys

import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, batch_size=2, steps=2, warmup=1,
            gen_tokens=3)


def test_bench_pipeline_tiny(tmp_path):
    """The command as a user runs it: one child process per variant, the table, the JSON and the ratios."""
    out = tmp_path / 'bench.json'
    names = ['gpt2', 'modern+muon']
    r = subprocess.run([sys.executable, 'bench.py', *[f'--{k}={v}' for k, v in TINY.items()],
                        f'--variants={",".join(names)}', f'--out={out}'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row['variant']: row for row in json.load(open(out))['rows']}
    assert list(rows) == names
    for name, row in rows.items():
        assert 'error' not in row, row
        assert f'| {name} |' in r.stdout
    assert rows['gpt2']['step_time_ratio'] == 1.0 and rows['modern+muon']['step_time_ratio'] > 0


def test_every_variant_measures(monkeypatch):
    """Every variant of the default run trains and samples (in this process: a child each costs a torch import)."""
    for k, v in TINY.items():
        monkeypatch.setattr(bench, k, v)
    for name in bench.DEFAULT_ORDER:
        row = bench.measure(name, 'cpu')
        assert row['variant'] == name
        assert row['step_ms'] > 0 and row['tok_per_s'] > 0 and row['gen_tok_s_cached'] > 0, row
        assert row['flops_per_token'] > 0 and row['peak_mem_mb'] > 0, row


def test_unknown_variant_or_size_is_one_line_error():
    for arg, message in (('--variants=gpt2,no_such_variant', "unknown variant 'no_such_variant'; known: gpt2, modern"),
                         ('--size=no_such_size', "--size='no_such_size' is not accepted: size takes one of 'tiny'")):
        r = subprocess.run([sys.executable, 'bench.py', arg], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith('error: ') and message in r.stderr, r.stderr


def test_variants_follow_the_model_families():
    """Every encoding and attention kind model.py declares is a bench variant and in the default run."""
    from model import ATTNS, POS_EMBS
    expected = {f'pos_{p}' for p in POS_EMBS if p != 'learned'} | {a for a in ATTNS if a != 'softmax'}
    assert expected <= set(bench.VARIANTS) and expected <= set(bench.DEFAULT_ORDER)
    assert bench.VARIANTS['pos_rope']['pos_emb'] == 'rope' and bench.VARIANTS['linear']['attn'] == 'linear'
