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
           dict(NGPT), dict(NGPT, tie_embeddings=False), dict(NGPT, attn='diff'), dict(NGPT, attn='diff', pos_emb='none'),
           dict(attn='diff', pos_emb='alibi'), dict(pos_emb='alibi', n_head=4)]  # issue 28: alibi with both maps, 4 slopes


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
    for pe in ('learned', 'sinusoidal', 'rope', 'alibi'):
        model = make(pos_emb=pe)
        idx = torch.randint(0, 64, (1, 6))
        plain, at_3 = model(idx)[0], model.lm_head(model.hidden(idx, start_pos=3))
        monkeypatch.setattr(GPT, 'position_ids', lambda self, start, T, dev, batch=1: torch.arange(start + 3, start + 3 + T))
        assert torch.allclose(model(idx)[0], at_3, atol=1e-6), pe
        monkeypatch.setattr(GPT, 'position_ids', lambda self, start, T, dev, batch=1: 2 * torch.arange(start, start + T))
        assert not torch.allclose(model(idx)[0], plain, atol=1e-4), pe
        monkeypatch.undo()
        assert torch.equal(model(idx)[0], plain)


@pytest.mark.parametrize('kind', ['future_kind', 'no_such_kind'])
def test_a_member_of_an_unhandled_kind_is_refused_not_taken_for_a_table(monkeypatch, kind):
    """A new encoding whose kind the dispatch does not know fails with a clear error (never falls into
    fixed_position_encoding): in the config check for an undeclared kind, else where the model is built."""
    monkeypatch.setitem(POS_EMB_KINDS, 'future_encoding', kind)
    monkeypatch.setattr(modellib, 'POS_EMBS', POS_EMBS + ('future_encoding',))
    if kind == 'no_such_kind':
        with pytest.raises(ValueError, match="pos_emb 'future_encoding' is declared with kind 'no_such_kind'; kinds: "):
            GPTConfig(**TINY, pos_emb='future_encoding')
        return
    monkeypatch.setattr(modellib, 'POS_KINDS', modellib.POS_KINDS + ('future_kind',))  # declared, no branch yet
    cfg = GPTConfig(**TINY, pos_emb='future_encoding')
    with pytest.raises(ValueError, match="pos_emb 'future_encoding' is of kind 'future_kind', which GPT does not handle"):
        GPT(cfg)
    model = make(pos_emb='sinusoidal')
    model.config = cfg  # the forward dispatch refuses it too
    with pytest.raises(ValueError, match="kind 'future_kind', which GPT.embed does not handle"):
        model(torch.zeros(1, 4, dtype=torch.long))


# ----------------------------------------------------------------------------- issue 28: input scale, pos_random, alibi
FIXED = [p for p in POS_EMBS if POS_EMB_KINDS[p] == 'fixed']


def rms(t):
    return t.double().pow(2).mean().sqrt().item()


@pytest.mark.parametrize('pe', FIXED)
@pytest.mark.parametrize('width', [32, 128])
def test_fixed_tables_enter_at_the_token_rms(pe, width):
    """The common input scale: the position part of the stack input over positions 0..block_size-1 has RMS 0.02
    (wte's init std) exactly, and the token/position RMS ratio at init is 1 up to wte's sampling noise."""
    model = make(pos_emb=pe, n_embd=width, n_head=2)
    idx = torch.randint(0, 64, (4, 16))
    x, e = model.embed(idx)
    pos_part = x - e
    assert math.isclose(rms(pos_part[0]), 0.02, rel_tol=1e-5)
    assert 0.9 < rms(model.wte.weight) / rms(pos_part[0]) < 1.1
    # the same constant past block_size (evaluation of longer inputs)
    far, _ = model.embed(torch.zeros(1, 40, dtype=torch.long))
    ref = model.pos_scale * fixed_position_encoding(pe, torch.arange(40), width)
    assert torch.allclose(far[0] - model.wte.weight[0], ref, atol=1e-7)


def test_old_scale_checkpoints_of_fixed_encodings_are_refused():
    old = GPTConfig(**TINY, pos_emb='sinusoidal').to_dict()
    del old['pos_random']  # written before the common scale (and pos_random)
    with pytest.raises(ValueError, match='old sqrt.n_embd. rule: retrain it'):
        GPTConfig.from_dict(old)
    old_rope = GPTConfig(**TINY, pos_emb='rope').to_dict()
    del old_rope['pos_random']  # encodings that never had a scale load as before
    assert GPTConfig.from_dict(old_rope).pos_random == 0
    # loading such a checkpoint (sample, eval, resume) is one line of error, before any weight is read
    from checkpoint import model_from_checkpoint
    from configurator import UserError
    with pytest.raises(UserError, match="incompatible checkpoint: this checkpoint .pos_emb='sinusoidal'. was written before"):
        model_from_checkpoint({'model_config': old, 'model': {}, 'tokenizer': None})


def test_random_positions_sorted_unique_in_range():
    model = make(pos_emb='rope', pos_random=40)
    torch.manual_seed(1)
    pos = model.position_ids(0, 16, 'cpu', batch=200)
    assert pos.shape == (200, 16)
    assert (pos[:, 1:] > pos[:, :-1]).all() and pos.min() >= 0 and pos.max() < 40
    assert pos.max() >= 30 and len({tuple(p) for p in pos.tolist()}) > 150  # they do spread over [0, M)
    assert model.position_ids(4, 6, 'cpu', batch=3).shape == (3, 6)  # the last T of a draw of start_pos + T
    # a sequence longer than M takes 0..n-1 (positions from M on were never drawn in training)
    short = make(pos_emb='rope', pos_random=8)
    assert torch.equal(short.position_ids(0, 12, 'cpu', batch=2), torch.arange(12).expand(2, 12))
    assert short.position_ids(0, 6, 'cpu', batch=50).max() < 8


@pytest.mark.parametrize('pe', [p for p in POS_EMBS if p != 'none'])
def test_pos_random_equal_to_the_length_is_the_plain_model(pe):
    plain, rand = make(pos_emb=pe), make(pos_emb=pe, pos_random=16)
    idx = torch.randint(0, 64, (3, 16))
    assert torch.equal(plain(idx)[0], rand(idx)[0])


@pytest.mark.parametrize('pe', ['rope', 'learned', 'sinusoidal', 'alibi'])
def test_random_positions_cached_equals_full_forward(pe):
    model = make(pos_emb=pe, pos_random=64)
    assert pe != 'learned' or model.wpe.weight.shape[0] == 64  # learned: a table of M rows
    idx = torch.randint(0, 64, (2, 12))
    pos = model.position_ids(0, 12, 'cpu', batch=2)
    full, _ = model(idx, pos=pos)
    caches = [dict() for _ in model.h]
    steps = [model.lm_head(model.hidden(idx[:, :5], 0, caches, pos=pos[:, :5]))]
    for t in range(5, 12):
        steps.append(model.lm_head(model.hidden(idx[:, t:t + 1], t, caches, pos=pos[:, t:t + 1])))
    assert torch.allclose(full, torch.cat(steps, 1), atol=1e-5)
    assert not torch.allclose(full, model(idx)[0], atol=1e-4)  # a fresh draw is another input
    # generate draws the positions of the whole answer once: the same draw in a full forward gives its tokens
    torch.manual_seed(3)
    out = model.generate(idx[:, :4], 8, temperature=0)
    torch.manual_seed(3)
    pos = model.position_ids(0, 11, 'cpu', batch=2)
    assert torch.equal(model(out[:, :-1], pos=pos)[0][:, 3:].argmax(-1), out[:, 4:])


def test_pos_random_with_encoder_decoder_reads_one_draw_per_source():
    model = make(pos_emb='rope', pos_random=32, n_encoder_layer=1)
    src, idx = torch.randint(0, 64, (2, 6)), torch.randint(0, 64, (2, 5))
    torch.manual_seed(0)
    out = model.generate(idx, 4, temperature=0, src=src)
    assert out.shape == (2, 9)


def test_pos_random_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match=r"pos_random=8 with pos_emb='learned' must be >= block_size=16"):
        GPTConfig(**TINY, pos_emb='learned', pos_random=8)
    with pytest.raises(ValueError, match="pos_emb='none' has none"):
        GPTConfig(**TINY, pos_emb='none', pos_random=32)
    with pytest.raises(ValueError, match='sequence of 33 tokens is longer than pos_random=32, the limit of learned'):
        make(pos_emb='learned', pos_random=32)(torch.zeros(1, 33, dtype=torch.long))  # (its table has 32 rows)


def test_alibi_slopes_follow_the_paper():
    assert modellib.alibi_slopes(8).tolist() == [2.0 ** -k for k in range(1, 9)]
    assert modellib.alibi_slopes(4).tolist() == [2.0 ** -k for k in (2, 4, 6, 8)]
    # 6 heads: the 4 slopes of 4 heads, then every other slope of 8 heads
    assert modellib.alibi_slopes(6).tolist() == [2.0 ** -k for k in (2, 4, 6, 8, 1, 3)]


@pytest.mark.parametrize('random', [False, True])
def test_alibi_equals_its_formula(random):
    """Recorded weights = softmax(q k / sqrt(d) - m_h (p_i - p_j)) over j <= i, and the SDPA path agrees."""
    model = make(pos_emb='alibi', n_layer=1, n_head=4, pos_random=40 if random else 0)
    idx = torch.randint(0, 64, (2, 9))
    pos = model.position_ids(0, 9, 'cpu', batch=2)
    plain, _ = model(idx, pos=pos)
    with model.record() as rec:
        recorded, _ = model(idx, pos=pos)
    assert torch.allclose(plain, recorded, atol=1e-5)
    attn = model.h[0].attn
    x, _ = model.embed(idx, pos)
    q, k, _ = attn.c_attn(model.h[0].ln_1(x)).split(32, dim=2)
    q, k = (t.view(2, 9, 4, 8).transpose(1, 2) for t in (q, k))
    p = pos.float() if random else pos.float().expand(2, 9)
    m = torch.tensor([2.0 ** -k for k in (2, 4, 6, 8)])
    ref = q @ k.transpose(-1, -2) / math.sqrt(8) - m[None, :, None, None] * (p[:, None, :, None] - p[:, None, None, :])
    ref = ref.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float('-inf')).softmax(-1)
    assert torch.allclose(rec['layer0.attn'], ref, atol=1e-6)


def test_alibi_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="pos_emb='alibi' does not combine with attn='linear'"):
        GPTConfig(**TINY, pos_emb='alibi', attn='linear')
    with pytest.raises(ValueError, match="pos_emb='alibi' does not combine with n_encoder_layer=1"):
        GPTConfig(**TINY, pos_emb='alibi', n_encoder_layer=1)
    with pytest.raises(ValueError, match="ngpt=True does not combine with pos_emb='alibi'"):
        GPTConfig(**TINY, pos_emb='alibi', ngpt=True, bias=False, mlp='swiglu')
