"""Activation outliers (analysis/outliers.py) and what it reads through the one recording hook: the logit fake
quantizer against its formula; rec['layer{i}.logits'] (softmax of them with the causal mask = the recorded weights)
and rec['layer{i}.hidden'] (block i of hidden i-1 = hidden i; the last one through ln_f and lm_head = the model's
logits); rec['logit_bits'] in the forward; the script end to end on two checkpoints trained here in a few steps;
a refused input. CPU, seconds."""
import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

import data as datalib
from checkpoint import save_checkpoint
from model import GPT, GPTConfig, fake_quantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(vocab_size=64, block_size=16, n_layer=2, n_embd=32, pos_emb='rope', norm='rmsnorm', mlp='swiglu',
            bias=False)
VARIANTS = {'GPT': dict(n_head=2), 'DiffTransformer': dict(n_head=1, attn='diff'),
            'DiffNGPT': dict(n_head=1, attn='diff', ngpt=True)}


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


def test_fake_quantize_equals_the_formula():
    x = torch.tensor([[-3.0, -1.2, 0.0], [0.4, 1.1, 2.0]])
    # 3 bits: 3 levels each side, scale = 3 / 3 = 1: plain rounding
    assert torch.equal(fake_quantize(x, 3), torch.tensor([[-3.0, -1.0, 0.0], [0.0, 1.0, 2.0]]))
    # 2 bits: one level each side, scale = 3: {-3, 0, 3}
    assert torch.equal(fake_quantize(x, 2), torch.tensor([[-3.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    # keep: the scale comes from the kept entries only (max 2 -> scale 2/3 at 3 bits); the rest is clamped
    keep = torch.tensor([[False, True, True], [True, True, True]])
    s = 2 / 3
    want = torch.tensor([[-3 * s, -2 * s, 0.0], [1 * s, 2 * s, 3 * s]])
    assert torch.allclose(fake_quantize(x, 3, keep), want, atol=1e-6)
    torch.manual_seed(0)
    y = torch.randn(4, 50) * 7
    for bits in (2, 4, 6, 8):
        levels = 2 ** (bits - 1) - 1
        scale = y.abs().max() / levels
        assert torch.equal(fake_quantize(y, bits), (y / scale).round().clamp(-levels, levels) * scale)
        assert fake_quantize(y, bits).unique().numel() <= 2 * levels + 1
    step = y.abs().max() / (2 ** 15 - 1)  # 16 bits: the identity to within half a step
    assert (fake_quantize(y, 16) - y).abs().max() <= step / 2 * (1 + 1e-5)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_recorded_logits_and_hidden_states(variant):
    m = make(**VARIANTS[variant])
    L, T = m.config.n_layer, 12
    x = torch.randint(0, 64, (2, T))
    with torch.no_grad():
        plain, _ = m(x)
        with m.record() as rec:
            recorded, _ = m(x)
    assert torch.allclose(plain, recorded, atol=1e-5)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(L):
        logits = rec[f'layer{i}.logits']
        att = logits.masked_fill(~mask, float('-inf')).softmax(-1)
        if m.config.attn == 'diff':  # maps 2h and 2h+1 are head h's two softmax maps
            assert logits.shape == (2, 2 * m.config.n_head, T, T)
            assert torch.allclose(att[:, 0::2], rec[f'layer{i}.attn1'], atol=1e-6)
            assert torch.allclose(att[:, 1::2], rec[f'layer{i}.attn2'], atol=1e-6)
        else:
            assert logits.shape == (2, m.config.n_head, T, T)
            assert torch.allclose(att, rec[f'layer{i}.attn'], atol=1e-6)
    # hidden i is the residual stream after block i: block i of hidden i-1 (the embedding for i = 0), run outside
    # the hook, gives it; the last one through ln_f and lm_head gives the model's logits
    pe = m.attention_pe(m.position_ids(0, T, x.device))
    with torch.no_grad():
        h = m.embed(x)[0]
        for i in range(L):
            h = m.h[i](h, pe)
            assert torch.allclose(h, rec[f'layer{i}.hidden'], atol=1e-6)
            h = rec[f'layer{i}.hidden']
        assert torch.allclose(m.lm_head(m.ln_f(rec[f'layer{L - 1}.hidden'])), plain, atol=1e-5)


def test_logit_bits_quantize_the_forward():
    m = make(**VARIANTS['GPT'])
    with torch.no_grad():
        for blk in m.h:  # sharper attention than at init, so that coarse logits matter
            blk.attn.c_attn.weight.mul_(6)
    x = torch.randint(0, 64, (2, 16))
    y = torch.randint(0, 64, (2, 16))

    def loss(bits=None):
        with torch.no_grad(), m.record() as rec:
            if bits is not None:
                rec['logit_bits'] = bits
            return m(x, y)[1].item(), rec

    full, _ = loss()
    q16, _ = loss(16)
    q2, rec = loss(2)
    assert abs(q16 - full) < 1e-5
    assert abs(q2 - full) > 1e-3
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    for i in range(m.config.n_layer):  # the softmax read 2-bit logits: {-a, 0, a} on the causal pairs
        assert rec[f'layer{i}.logits'][..., causal].unique().numel() <= 3
    lin = make(n_head=2, attn='linear')
    with pytest.raises(ValueError, match='no attention logits'), torch.no_grad(), lin.record() as rec:
        rec['logit_bits'] = 4
        lin(x)


def tiny_checkpoint(path, data_root, seed, steps=4, **kw):
    """A run dir <path>/ckpt/last.pt of a tiny byte-level model trained a few steps on the tiny data set."""
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**TINY, 'vocab_size': 320, 'block_size': 32, **kw})
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    shards = datalib.open_split(os.path.join(data_root, 'tiny'), 'train')
    for step in range(steps):
        x, y = datalib.get_lm_batch(shards, cfg.block_size, 4, seed, step)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cfg.ngpt:
            model.normalize_weights()
    save_checkpoint(os.path.join(path, 'ckpt', 'last.pt'),
                    {'model': model.state_dict(), 'model_config': cfg.to_dict(), 'tokenizer': {'kind': 'byte'},
                     'config': {}, 'step': steps})
    return str(path)


def run_outliers(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'analysis', 'outliers.py'), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_outliers_end_to_end(tiny_data, tmp_path):
    a = tiny_checkpoint(tmp_path / 'gpt', tiny_data, 1, **VARIANTS['GPT'])
    b = tiny_checkpoint(tmp_path / 'diff', tiny_data, 2, **VARIANTS['DiffTransformer'])
    out, fig = tmp_path / 'res' / 'outliers', tmp_path / 'res' / 'outliers.png'
    r = run_outliers(f'--ckpts={a},{b}', f'--data_root={tiny_data}', '--data=tiny', '--quick=True', f'--out={out}',
                     f'--figure={fig}', '--bits=[8, 4, 2]')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    md = open(f'{out}.md').read()
    assert 'Command: `python analysis/outliers.py' in md and 'Machine:' in md and '2410.05258' in md
    assert '| GPT | 1 |' in md and '| DiffTransformer | 1 |' in md
    assert open(fig, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    res = json.load(open(f'{out}.json'))
    assert res['window'] == 32 and res['config']['batches'] == 1 and res['config']['batch_size'] == 2
    assert [c['variant'] for c in res['checkpoints']] == ['GPT', 'DiffTransformer']
    for c in res['checkpoints']:
        for name in ('logits', 'hidden'):
            layers = c[name]['layers']
            assert len(layers) == TINY['n_layer']
            for s in [c[name]['model']] + layers:
                assert s['top1'] >= s['top10'] >= s['top100'] >= s['median'] >= 0, s
                assert s['kurtosis'] > 0
            assert c[name]['model']['top1'] == max(s['top1'] for s in layers)  # the whole model pools the layers
        loss = c['loss']
        assert set(loss['bits']) == {'8', '4', '2'} and 0 < loss['full'] < 10
        for k, q in loss['bits'].items():
            assert abs(loss['rise'][k] - (q - loss['full'])) < 1e-9
        assert abs(loss['rise']['8']) < abs(loss['rise']['2'])
    assert set(res['summary']) == {'GPT', 'DiffTransformer'} and res['summary']['GPT']['n'] == 1


def test_linear_attention_checkpoint_is_refused(tiny_data, tmp_path, monkeypatch, capsys):
    """In-process (runpy, as tests/test_settings.py runs the scripts; saves a torch import): exit 2, one line."""
    lin = tiny_checkpoint(tmp_path / 'lin', tiny_data, 1, steps=1, n_head=2, attn='linear')
    out = tmp_path / 'res'
    monkeypatch.chdir(ROOT)  # (the script changes to the repository root; this puts the test's folder back after)
    monkeypatch.setattr(sys, 'argv', ['analysis/outliers.py', f'--ckpts={lin}', f'--data_root={tiny_data}',
                                      '--data=tiny', f'--out={out}/o', f'--figure={out}/o.png'])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(os.path.join(ROOT, 'analysis', 'outliers.py'), run_name='__main__')
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith('error:'), lines
    assert "attn='linear' has no attention logits" in lines[0]
    assert not out.exists()
