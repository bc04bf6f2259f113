"""Model properties: causality, cache == full forward, encodings equal their definitions."""
import itertools
import math

import pytest
import torch

import model as modellib
from model import GPT, GPTConfig, POS_EMB_KINDS, POS_EMBS, fixed_position_encoding, apply_rope, rope_cos_sin

TINY = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
GPT2_LAYOUT = dict(pos_emb='learned', norm='layernorm', mlp='gelu', bias=True, qk_norm=False, tie_embeddings=True)
MODERN_LAYOUT = dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False, qk_norm=True, tie_embeddings=True)
POS = list(POS_EMBS)  # every encoding of the family, so a new member is tested here without an edit

# every flag combination of the foundation, and each encoding with and without diff_input
COMBOS = [dict(GPT2_LAYOUT), dict(MODERN_LAYOUT)]
for norm, mlp, qk, bias, tie in itertools.product(['layernorm', 'rmsnorm'], ['gelu', 'swiglu'], [False, True],
                                                  [False, True], [False, True]):
    COMBOS.append(dict(pos_emb='rope', norm=norm, mlp=mlp, qk_norm=qk, bias=bias, tie_embeddings=tie))
for pe, di in itertools.product(POS, [False, True]):
    COMBOS.append(dict(pos_emb=pe, diff_input=di))
# issue 5: differential attention (n_head=1: one head of two 16-wide halves), nGPT, and both
NGPT = dict(ngpt=True, bias=False, mlp='swiglu', pos_emb='rope')
COMBOS += [dict(attn='diff', pos_emb='rope'), dict(attn='diff', n_head=1, qk_norm=True, pos_emb='learned'),
           dict(NGPT), dict(NGPT, tie_embeddings=False), dict(NGPT, attn='diff'), dict(NGPT, attn='diff', pos_emb='none')]


def make(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


def cid(c):
    return '-'.join(f'{k}={v}' for k, v in c.items())


@pytest.mark.parametrize('flags', COMBOS, ids=cid)
def test_causal(flags):
    model = make(**flags)
    idx = torch.randint(0, 64, (2, 12))
    logits, _ = model(idx)
    idx2 = idx.clone()
    idx2[:, 7:] = (idx2[:, 7:] + 1) % 64  # change the future
    logits2, _ = model(idx2)
    assert torch.allclose(logits[:, :7], logits2[:, :7], atol=1e-6)
    assert not torch.allclose(logits[:, 7:], logits2[:, 7:], atol=1e-4)


@pytest.mark.parametrize('flags', COMBOS, ids=cid)
def test_cache_equals_full_forward(flags):
    model = make(**flags)
    idx = torch.randint(0, 64, (2, 12))
    full, _ = model(idx)
    caches = [dict() for _ in model.h]
    step_logits = [model.lm_head(model.hidden(idx[:, :5], 0, caches))]  # prefill 5, then one at a time
    for t in range(5, 12):
        step_logits.append(model.lm_head(model.hidden(idx[:, t:t + 1], t, caches)))
    cached = torch.cat(step_logits, dim=1)
    assert torch.allclose(full, cached, atol=1e-5), (full - cached).abs().max()
    # generate (cached) picks the same greedy tokens as recomputing the prefix every step
    out = model.generate(idx[:, :4], 8, temperature=0)
    ref = idx[:, :4]
    for _ in range(8):
        logits, _ = model(ref)
        ref = torch.cat((ref, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, ref)


def test_generate_past_block_size_and_clamps_top_k():
    model = make(pos_emb='learned')
    out = model.generate(torch.zeros(1, 20, dtype=torch.long), 30, temperature=1.0, top_k=10_000)
    assert out.shape == (1, 50)
    with pytest.raises(ValueError, match='max_new_tokens'):
        model.generate(torch.zeros(1, 3, dtype=torch.long), 0)


def test_loss_ignores_minus_100():
    model = make()
    idx = torch.randint(0, 64, (2, 8))
    tgt = torch.randint(0, 64, (2, 8))
    logits, loss = model(idx, tgt)
    masked = tgt.clone()
    masked[:, :4] = -100
    _, loss_m = model(idx, masked)
    ref = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, 64), tgt[:, 4:].reshape(-1))
    assert torch.allclose(loss_m, ref, atol=1e-6)
    assert not torch.allclose(loss, loss_m)


def test_encodings_match_definitions():
    pos = torch.tensor([0, 7, 42])
    b = fixed_position_encoding('binary', pos, 8)
    assert b[1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert fixed_position_encoding('binary_norm', pos, 8)[1].tolist() == [-1, -1, -1, -1, -1, 1, 1, 1]
    d = fixed_position_encoding('decimal', pos, 6)
    assert d[2].tolist() == [0, 0, 0, 0, 4, 2]
    dn = fixed_position_encoding('decimal_norm', pos, 6)
    assert torch.allclose(dn[2], (torch.tensor([0, 0, 0, 0, 4, 2.]) - 4.5) / 4.5)
    s = fixed_position_encoding('sinonly', pos, 16)
    assert torch.all(s[0] == 0)
    assert math.isclose(s[2, 3].item(), math.sin(42 * 10000 ** (-3 / 16)), rel_tol=1e-5)
    sc = fixed_position_encoding('sinusoidal', pos, 16)
    assert math.isclose(sc[2, 4].item(), math.sin(42 / 10000 ** (4 / 16)), rel_tol=1e-5)
    assert math.isclose(sc[2, 5].item(), math.cos(42 / 10000 ** (4 / 16)), rel_tol=1e-5)
    # defined past block_size: position 5000 works for the fixed encodings
    assert fixed_position_encoding('decimal', torch.tensor([5000]), 6)[0].tolist() == [0, 0, 5, 0, 0, 0]


@pytest.mark.parametrize('pe', [p for p in POS_EMBS if POS_EMB_KINDS[p] != 'learned'])
def test_non_learned_encodings_extend_past_block_size(pe):
    model = make(pos_emb=pe)
    logits, _ = model(torch.randint(0, 64, (1, 40)))  # block_size is 16
    assert logits.shape == (1, 40, 64) and torch.isfinite(logits).all()


def test_learned_positions_refuse_long_input():
    with pytest.raises(ValueError, match='block_size'):
        make(pos_emb='learned')(torch.zeros(1, 17, dtype=torch.long))


def test_rope_is_relative():
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    def scores(offset):
        cos, sin = rope_cos_sin(torch.arange(offset, offset + 6), 8, 10000.0)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)
    assert torch.allclose(scores(0), scores(100), atol=1e-4)


def test_diff_input_stack_input_and_base_added_back():
    model = make(pos_emb='rope', diff_input=True)
    with torch.no_grad():
        model.diff_start.normal_()
    idx = torch.randint(0, 64, (2, 6))
    x, e = model.embed(idx)
    ref = e - torch.cat((model.diff_start.expand(2, 1, -1), e[:, :-1]), dim=1)
    assert torch.allclose(x, ref)
    assert torch.allclose(x[:, 0], e[:, 0] - model.diff_start)
    # zero the stack's output (final norm gain 0): logits come from the plain embeddings alone
    with torch.no_grad():
        model.ln_f.weight.zero_()
    logits, _ = model(idx)
    assert torch.allclose(logits, e @ model.wte.weight.T, atol=1e-5)


def test_record_hook_returns_attention_that_sums_to_one():
    model = make(pos_emb='rope')
    idx = torch.randint(0, 64, (1, 10))
    plain, _ = model(idx)
    with model.record() as rec:
        recorded, _ = model(idx)
    att = rec['layer1.attn']
    assert att.shape == (1, 2, 10, 10)
    assert torch.allclose(att.sum(-1), torch.ones(1, 2, 10))
    assert torch.all(att.triu(1) == 0)
    assert torch.allclose(plain, recorded, atol=1e-5)  # recording path equals the SDPA path
    assert rec['layer0.mlp'].shape[:2] == (1, 10)


def test_param_count_and_flops():
    model = make(**GPT2_LAYOUT)
    n = sum(p.numel() for p in model.parameters())
    assert model.num_params() == n
    unique = {id(p) for p in model.parameters()}
    assert len(unique) == len(list(model.parameters()))
    assert model.num_params(non_embedding=True) == n - 64 * 32 - 16 * 32
    assert model.flops_per_token() > 6 * model.num_params(non_embedding=True)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match='not divisible'):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="unknown pos_emb 'no_such_encoding'; valid values: none, learned"):
        GPTConfig(pos_emb='no_such_encoding')
    with pytest.raises(ValueError, match='incompatible'):
        GPTConfig.from_dict({**GPTConfig().to_dict(), 'mystery': 1})


def test_every_encoding_has_a_declared_kind_and_only_learned_has_parameters():
    assert set(POS_EMB_KINDS.values()) <= set(modellib.POS_KINDS)
    for pe in POS_EMBS:
        assert hasattr(make(pos_emb=pe), 'wpe') == (POS_EMB_KINDS[pe] == 'learned'), pe


def test_position_ids_are_the_one_source_of_positions(monkeypatch):
    """embed and rope read position_ids: ids shifted by 3 equal start_pos=3 (for rope, which is relative, any
    shift does), and stretched ids change the output of a table encoding and of rope alike."""
    for pe in ('learned', 'sinusoidal', 'rope'):
        model = make(pos_emb=pe)
        idx = torch.randint(0, 64, (1, 6))
        plain, at_3 = model(idx)[0], model.lm_head(model.hidden(idx, start_pos=3))
        monkeypatch.setattr(GPT, 'position_ids', lambda self, start, T, dev: torch.arange(start + 3, start + 3 + T))
        assert torch.allclose(model(idx)[0], at_3, atol=1e-6), pe
        monkeypatch.setattr(GPT, 'position_ids', lambda self, start, T, dev: 2 * torch.arange(start, start + T))
        assert not torch.allclose(model(idx)[0], plain, atol=1e-4), pe
        monkeypatch.undo()
        assert torch.equal(model(idx)[0], plain)


@pytest.mark.parametrize('kind', ['bias', 'no_such_kind'])
def test_a_member_of_an_unhandled_kind_is_refused_not_taken_for_a_table(monkeypatch, kind):
    """A new encoding whose kind the dispatch does not know fails with a clear error (never falls into
    fixed_position_encoding): in the config check for an undeclared kind, else where the model is built."""
    monkeypatch.setitem(POS_EMB_KINDS, 'future_encoding', kind)
    monkeypatch.setattr(modellib, 'POS_EMBS', POS_EMBS + ('future_encoding',))
    if kind == 'no_such_kind':
        with pytest.raises(ValueError, match="pos_emb 'future_encoding' is declared with kind 'no_such_kind'; kinds: "):
            GPTConfig(**TINY, pos_emb='future_encoding')
        return
    cfg = GPTConfig(**TINY, pos_emb='future_encoding')  # 'bias' is a declared kind (attention bias, no member yet)
    with pytest.raises(ValueError, match="pos_emb 'future_encoding' is of kind 'bias', which GPT does not handle"):
        GPT(cfg)
    model = make(pos_emb='sinusoidal')
    model.config = cfg  # the forward dispatch refuses it too
    with pytest.raises(ValueError, match="kind 'bias', which GPT.embed does not handle"):
        model(torch.zeros(1, 4, dtype=torch.long))
