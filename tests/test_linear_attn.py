"""attn='linear': chunked and recurrent computation equal the naive masked formula; causality;
recurrent generation equals the full forward; the recording hook gives normalized kernel weights."""
import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, linear_attention, linear_attention_weights

TINY = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, attn='linear')


def naive(q, k, v):
    """y_t = sum_{s<=t} phi(q_t).phi(k_s) v_s / sum_{s<=t} phi(q_t).phi(k_s), written out with a T x T mask."""
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    T = q.size(2)
    w = (fq @ fk.transpose(-1, -2)) * torch.ones(T, T).tril()
    return (w / w.sum(-1, keepdim=True)) @ v


def qkv(T, B=2, H=3, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize('chunk', [1, 3, 4, 16, 64])
@pytest.mark.parametrize('T', [1, 7, 16, 21])
def test_chunked_equals_naive(chunk, T):
    q, k, v = qkv(T)
    y, S, z = linear_attention(q, k, v, chunk)
    assert torch.allclose(y.double(), naive(q, k, v), atol=1e-5)
    fk = F.elu(k.float()) + 1
    assert torch.allclose(S, fk.transpose(-1, -2) @ v.float(), atol=1e-4)   # final state = all tokens
    assert torch.allclose(z, fk.sum(2), atol=1e-4)


@pytest.mark.parametrize('chunk', [2, 5])
def test_recurrent_steps_and_split_prefill_equal_naive(chunk):
    q, k, v = qkv(13)
    ref = naive(q, k, v)
    state, ys = None, []
    for t in range(13):  # one token at a time through the carried state
        y, S, z = linear_attention(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], chunk, state)
        state = (S, z)
        ys.append(y)
    assert torch.allclose(torch.cat(ys, 2).double(), ref, atol=1e-5)
    y1, S, z = linear_attention(q[:, :, :6], k[:, :, :6], v[:, :, :6], chunk)  # prefill 6, then 7 at once
    y2, _, _ = linear_attention(q[:, :, 6:], k[:, :, 6:], v[:, :, 6:], chunk, (S, z))
    assert torch.allclose(torch.cat((y1, y2), 2).double(), ref, atol=1e-5)


def make(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


@pytest.mark.parametrize('pos_emb', ['learned', 'rope', 'none'])
def test_model_chunk_sizes_agree_and_right_padding_leaves_real_tokens(pos_emb):
    idx = torch.randint(0, 60, (3, 19))
    outs = []
    for chunk in (1, 4, 7, 64):
        outs.append(make(pos_emb=pos_emb, linear_chunk=chunk)(idx)[0])
    for o in outs[1:]:
        assert torch.allclose(outs[0], o, atol=1e-5)
    # padded batch (pad = 63 after each row's real length): real positions equal the unpadded rows
    model = make(pos_emb=pos_emb, linear_chunk=4)
    lens = [19, 11, 5]
    padded = idx.clone()
    for r, n in enumerate(lens):
        padded[r, n:] = 63
    lp = model(padded)[0]
    for r, n in enumerate(lens):
        alone = model(idx[r:r + 1, :n])[0]
        assert torch.allclose(lp[r:r + 1, :n], alone, atol=1e-5)


def test_causal():
    model = make(pos_emb='rope', linear_chunk=4)
    idx = torch.randint(0, 64, (2, 14))
    a = model(idx)[0]
    idx2 = idx.clone()
    idx2[:, 9:] = (idx2[:, 9:] + 1) % 64
    b = model(idx2)[0]
    assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert not torch.allclose(a[:, 9:], b[:, 9:], atol=1e-4)


@pytest.mark.parametrize('pos_emb', ['learned', 'rope'])
def test_recurrent_generation_equals_full_forward(pos_emb):
    model = make(pos_emb=pos_emb, linear_chunk=4)
    idx = torch.randint(0, 64, (2, 12))
    full, _ = model(idx)
    caches = [dict() for _ in model.h]
    steps = [model.lm_head(model.hidden(idx[:, :5], 0, caches))]
    assert set(caches[0]) == {'S', 'z'}  # a fixed-size state, no keys or values
    shape = caches[0]['S'].shape
    for t in range(5, 12):
        steps.append(model.lm_head(model.hidden(idx[:, t:t + 1], t, caches)))
    assert caches[0]['S'].shape == shape  # O(1) memory per token
    assert torch.allclose(full, torch.cat(steps, 1), atol=1e-5)
    out = model.generate(idx[:, :4], 10, temperature=0)
    ref = idx[:, :4]
    for _ in range(10):
        ref = torch.cat((ref, model(ref)[0][:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, ref)
    assert model.generate(idx[:, :4], 40, temperature=1.0).shape == (2, 44)  # past block_size: slides


def test_record_gives_normalized_kernel_weights_that_reproduce_the_output():
    model = make(pos_emb='rope', linear_chunk=3)
    idx = torch.randint(0, 64, (2, 10))
    plain, _ = model(idx)
    with model.record() as rec:
        recorded, _ = model(idx)
    w = rec['layer1.attn']
    assert w.shape == (2, 2, 10, 10)
    assert torch.allclose(w.sum(-1), torch.ones(2, 2, 10), atol=1e-5)
    assert torch.all(w.triu(1) == 0) and torch.all(w >= 0)
    assert torch.allclose(plain, recorded, atol=1e-6)
    q, k, v = qkv(9)
    assert torch.allclose(linear_attention_weights(q, k).double() @ v, naive(q, k, v), atol=1e-5)


def test_bad_chunk():
    with pytest.raises(ValueError, match='linear_chunk'):
        GPTConfig(attn='linear', linear_chunk=0)


def test_padded_tail_gives_finite_gradients():
    """T > chunk and not a multiple of it: the padded tail's rows are dropped, and must not make NaN gradients
    (they did: 0/0 in the padded rows; MQAR at 64 pairs, T = 257, chunk 64, stopped at the first step)."""
    q, k, v = (t.requires_grad_() for t in qkv(7))
    y, _, _ = linear_attention(q, k, v, 4)
    y.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert torch.allclose(y.double(), naive(q, k, v), atol=1e-5)
