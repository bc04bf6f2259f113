"""Bits per byte: bytes counted from the UTF-8 text the target tokens decode to, special tokens left out,
for the byte, gpt2 and bpe tokenizers; val_bpb in training's evaluate event equals eval_tasks ppl's bpb."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import data as datalib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "Grüße, naïve café! def f(x):\n    return x * 2  # ✓ done\n" * 3
TRAIN = [TEXT, "the quick brown fox jumps over the lazy dog " * 20, "def g(y):\n    return y + 1\n" * 10]


def local_gpt2(monkeypatch):
    """gpt2's code path (data.get_tokenizer({'kind': 'gpt2'})) over a local encoding: tiktoken's gpt2 ranks
    cannot be downloaded here, so a small tiktoken.Encoding trained on TRAIN stands in for them (as in
    tests/test_data.py); the byte counting under test does not depend on which ranks they are."""
    import tiktoken
    ranks = datalib.parse_ranks(datalib.train_bpe(TRAIN, 400)['ranks'])
    enc = tiktoken.Encoding(name='local_gpt2', pat_str=datalib.GPT4_PATTERN, mergeable_ranks=ranks,
                            special_tokens={'<|endoftext|>': len(ranks)})
    monkeypatch.setattr(tiktoken, 'get_encoding', lambda name: enc)
    return datalib.get_tokenizer({'kind': 'gpt2'})


@pytest.mark.parametrize('kind', ['byte', 'gpt2', 'bpe'])
def test_bits_per_byte_hand_computed(kind, monkeypatch):
    tok = {'byte': lambda: datalib.get_tokenizer({'kind': 'byte'}),
           'gpt2': lambda: local_gpt2(monkeypatch),
           'bpe': lambda: datalib.get_tokenizer(datalib.train_bpe(TRAIN, 300))}[kind]()
    V = tok.vocab_size + 5  # a padded model vocabulary: the ids past the tokenizer's carry no bytes
    tb = datalib.token_bytes(tok, V)
    assert tb[tok.eot_id] == tb[tok.pad_id] == tb[tok.sep_id] == 0 and not tb[tok.vocab_size:].any()
    ids = tok.encode(TEXT)
    n_bytes = len(TEXT.encode('utf-8'))  # 'ü', 'ï', 'é', '✓' are several bytes each
    assert n_bytes > len(TEXT) and (kind == 'byte') == (len(ids) == n_bytes)
    assert sum(int(tb[i]) for i in ids) == n_bytes  # a token's bytes, summed: the text's UTF-8 length
    # uniform logits: every target costs ln V nats; an <|endoftext|> target (made very unlikely) and a -100
    # position are left out of both sums
    targets = torch.tensor([ids + [tok.eot_id, -100]])
    logits = torch.zeros(1, targets.size(1), V)
    logits[0, len(ids), tok.eot_id] = -1e4
    nats, nb = datalib.bpb_sums(logits, targets, tb)
    assert nb == n_bytes and nats == pytest.approx(len(ids) * math.log(V), rel=1e-5)
    assert datalib.bits_per_byte(nats, nb) == pytest.approx(len(ids) * math.log2(V) / n_bytes, rel=1e-5)


def test_numeric_tokenizer_has_no_bytes():
    assert datalib.token_bytes(datalib.NumericTokenizer(10), 16) is None


def test_val_bpb_in_metrics_equals_eval_tasks_ppl(tiny_data, tmp_path):
    args = ['--data=tiny', f'--data_root={tiny_data}', f'--out_dir={tmp_path}', '--n_layer=1', '--n_head=2',
            '--n_embd=32', '--block_size=32', '--batch_size=4', '--max_iters=4', '--eval_interval=2',
            '--eval_iters=3', '--warmup_iters=2', '--log_tensorboard=False', '--run_name=r']
    r = subprocess.run([sys.executable, 'train.py'] + args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    events = [json.loads(l) for l in open(tmp_path / 'r' / 'metrics.jsonl')]
    ev = [e for e in events if e['event'] == 'evaluate']
    assert len(ev) == 2 and all(e['val_bpb'] > 0 for e in ev)
    assert os.path.getsize(tmp_path / 'r' / 'figures' / 'val_bpb.png') > 5000
    # the same windows (stride = window = block_size, eval_iters * batch_size of them) through eval_tasks ppl
    r = subprocess.run([sys.executable, 'eval_tasks.py', 'ppl', f'--ckpt={tmp_path}/r', '--data=tiny',
                        f'--data_root={tiny_data}', f'--max_tokens={3 * 4 * 32}'], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(tmp_path / 'r' / 'eval_ppl.json'))
    assert res['tokens'] == 3 * 4 * 32 and res['loss'] == pytest.approx(ev[-1]['val_loss'], abs=2e-5)
    assert res['bpb'] == pytest.approx(ev[-1]['val_bpb'], abs=2e-5)
    # byte tokenizer: one byte per target, except the <|endoftext|> targets between the val documents
    import numpy as np
    val = np.asarray(datalib.open_split(os.path.join(tiny_data, 'tiny'), 'val')[0])
    eots = int((val[1:3 * 4 * 32 + 1] == 256).sum())
    assert eots > 0 and res['bytes'] == 3 * 4 * 32 - eots
