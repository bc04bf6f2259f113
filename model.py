"""GPT and every variant of this lab, behind the flags of GPTConfig.

Nothing here knows about data or training. A variant is one flag plus one small block named after
it; search for the flag to find every line of it. The families of choices (POS_EMB_KINDS, NORMS, MLPS,
ATTNS) are declared once, below; everything else reads them.

    model(idx, targets=None, src=None) -> (logits, loss)      targets use -100 for "no loss"
    model.generate(idx, max_new_tokens, temperature, top_k, src=None)   cached (KV cache)
    with model.record() as rec: model(idx)                     rec['layer0.attn'] = (B, H, T, T) weights
    encoder-decoder (n_encoder_layer > 0): model(idx, targets, src=src), src padded with ids < 0
    attn='diff'      differential attention (arXiv 2410.05258)
    ngpt=True        normalized Transformer (arXiv 2410.01131); call model.normalize_weights() after each step
"""
import contextlib
import math
from dataclasses import dataclass, asdict, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------- the variant families
# Each family of choices is declared here once; train.py's settings, bench.py's variants, the studies and
# the tests read these. A new member of an existing kind is one entry here plus its block below.
#
# pos_emb: every encoding and its kind. The kind says how the encoding enters the model, and every place
# that treats encodings differently (GPT.__init__, GPT.embed, GPT.rope_tables, analysis/pe_encodings.py)
# dispatches on the kind and refuses one it does not handle (unhandled_pos_kind), never guesses.
POS_EMB_KINDS = {
    'none': 'none',              # no position signal (causal attention alone)
    'learned': 'learned',        # a trained additive table wpe of block_size rows
    'sinusoidal': 'fixed',       # fixed additive tables (fixed_position_encoding), defined at any position
    'sinonly': 'fixed',
    'binary': 'fixed',
    'binary_norm': 'fixed',
    'decimal': 'fixed',
    'decimal_norm': 'fixed',
    'rope': 'rotary',            # rotates queries and keys in attention (rope_cos_sin, apply_rope)
    'alibi': 'bias',             # a per-head linear bias on the attention logits (alibi_slopes, alibi_bias)
}
# Kinds: the five above. pos_random=M (randomized positions) works with every kind that reads positions.
POS_KINDS = ('none', 'learned', 'fixed', 'rotary', 'bias')
POS_EMBS = tuple(POS_EMB_KINDS)
NORMS = ('layernorm', 'rmsnorm')
MLPS = ('gelu', 'swiglu')
ATTNS = ('softmax', 'linear', 'diff')     # softmax: SDPA; linear: recurrent state (attn='linear'); diff: two maps


def unhandled_pos_kind(pos_emb, where):
    """The error for an encoding whose kind a dispatch does not know: a new kind needs its branch there."""
    return ValueError(f"pos_emb '{pos_emb}' is of kind '{POS_EMB_KINDS.get(pos_emb)}', which {where} does not "
                      f"handle; add that kind's branch there")


@dataclass
class GPTConfig:
    vocab_size: int = 50304      # padded to a multiple of 64 by the trainer
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    pos_emb: str = 'learned'
    rope_theta: float = 10000.0
    norm: str = 'layernorm'
    mlp: str = 'gelu'
    qk_norm: bool = False
    attn: str = 'softmax'
    ngpt: bool = False
    diff_input: bool = False
    n_encoder_layer: int = 0     # 0 = decoder-only
    linear_chunk: int = 64       # attn='linear': training-time chunk length (quadratic only inside a chunk)
    pos_random: int = 0          # > 0: randomized positions (arXiv 2305.16843), a sorted subset of [0, pos_random)

    def __post_init__(self):
        for name in ('block_size', 'n_layer', 'n_head', 'n_embd'):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1 (0 in train.py = the data's vocabulary), got {self.vocab_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        for name, value, valid in (('pos_emb', self.pos_emb, POS_EMBS), ('norm', self.norm, NORMS),
                                   ('mlp', self.mlp, MLPS), ('attn', self.attn, ATTNS)):
            if value not in valid:
                raise ValueError(f"unknown {name} '{value}'; valid values: {', '.join(valid)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             f"pick n_head among {[h for h in range(1, 65) if self.n_embd % h == 0][-6:]}")
        if self.attn == 'diff' and self.n_embd % (2 * self.n_head):
            raise ValueError(f"attn='diff' splits each of the n_head={self.n_head} heads into two q/k halves: n_embd="
                             f"{self.n_embd} must be divisible by 2*n_head; use half the baseline's n_head")
        if self.pos_kind not in POS_KINDS:
            raise ValueError(f"pos_emb '{self.pos_emb}' is declared with kind '{self.pos_kind}'; kinds: {', '.join(POS_KINDS)}")
        if self.pos_kind == 'rotary' and self.qk_head_dim % 2:
            raise ValueError(f"pos_emb='rope' needs an even head size, got {self.qk_head_dim}")
        if self.ngpt:  # ngpt: the unit-sphere geometry leaves no room for these
            bad = [f"{k}={v!r}" for k, v, ok in (('bias', self.bias, not self.bias), ('mlp', self.mlp, self.mlp == 'swiglu'),
                   ('pos_emb', self.pos_emb, self.pos_kind in ('rotary', 'none')), ('qk_norm', self.qk_norm, not self.qk_norm),
                   ('diff_input', self.diff_input, not self.diff_input)) if not ok]
            if bad:
                raise ValueError(f"ngpt=True does not combine with {', '.join(bad)}; use bias=False, mlp='swiglu', "
                                 f"pos_emb='rope' (or 'none'), qk_norm=False, diff_input=False")
        if self.linear_chunk < 1:
            raise ValueError(f"linear_chunk must be >= 1, got {self.linear_chunk}")
        if self.n_encoder_layer > 0:  # n_encoder_layer: the variants the encoder-decoder supports
            for flag, on in (('attn', self.attn != 'softmax'), ('ngpt', self.ngpt), ('diff_input', self.diff_input)):
                if on:
                    raise ValueError(f"n_encoder_layer={self.n_encoder_layer} does not support {flag}={getattr(self, flag)!r}; "
                                     f"use the default {flag} or n_encoder_layer=0")
        if self.n_encoder_layer < 0:
            raise ValueError(f"n_encoder_layer must be >= 0 (0 = decoder-only), got {self.n_encoder_layer}")
        if self.pos_kind == 'bias':  # alibi: causal softmax attention only (the paper's setting)
            for flag, on in (('attn', self.attn == 'linear'), ('n_encoder_layer', self.n_encoder_layer > 0)):
                if on:
                    raise ValueError(f"pos_emb='alibi' does not combine with {flag}={getattr(self, flag)!r}: its bias is "
                                     f"defined on causal softmax logits; use attn='softmax' or 'diff', n_encoder_layer=0")
        if self.pos_random:  # pos_random: the learned table needs a row for every position a sequence can take
            if self.pos_kind == 'learned' and self.pos_random < self.block_size:
                raise ValueError(f"pos_random={self.pos_random} with pos_emb='learned' must be >= block_size={self.block_size}: "
                                 f"the table has pos_random rows and a sequence of block_size tokens reaches row block_size-1")
            if self.pos_kind == 'none':
                raise ValueError("pos_random needs an encoding that reads positions; pos_emb='none' has none")

    @property
    def pos_kind(self):
        """How pos_emb enters the model: 'none', 'learned', 'fixed', 'rotary', 'bias' (POS_EMB_KINDS)."""
        return POS_EMB_KINDS[self.pos_emb]

    @property
    def qk_head_dim(self):
        """Width of one query/key head (attn='diff': half of n_embd/n_head, the two halves of a head)."""
        return self.n_embd // self.n_head // (2 if self.attn == 'diff' else 1)

    @classmethod
    def from_dict(cls, d):
        """Build from a checkpoint's dict; unknown keys mean a checkpoint from an incompatible version."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"checkpoint config has keys this model.py does not know: {extra}; "
                             f"it was written by an incompatible version")
        if 'pos_random' not in d and POS_EMB_KINDS.get(d.get('pos_emb')) == 'fixed':  # before pos_random: old scale
            raise ValueError(f"this checkpoint (pos_emb={d.get('pos_emb')!r}) was written before the common input scale "
                             f"of fixed encodings (model.py, pos_emb block); its weights expect the old sqrt(n_embd) "
                             f"rule: retrain it")
        return cls(**d)

    def to_dict(self):
        return asdict(self)


# ----------------------------------------------------------------------------- building blocks

class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def make_norm(config, dim):
    if config.ngpt:  # ngpt: no norm layers; hidden states are normalized explicitly (see Block)
        return nn.Identity()
    if config.norm == 'rmsnorm':
        return RMSNorm(dim)
    return nn.LayerNorm(dim, bias=config.bias)


# ----------------------------------------------------------------------------- pos_emb
# Fixed additive encodings are defined for any position, so evaluation past block_size works.
#
# The input scale (one rule for every additive encoding): at init the position part enters at the same RMS per
# element as the token part, and every arm's stack input is on one scale. The token part is wte(idx) as
# initialised, N(0, 0.02) (no sqrt(d) factor); learned wpe is N(0, 0.02) too; a fixed table is multiplied by
# one constant c = 0.02 / RMS(table over positions 0..block_size-1, all dims) (fixed_position_scale), computed
# from the config alone, so training, evaluation past block_size and the cached path use the same c. The
# token/position RMS ratio is then 1 at init for every fixed encoding and width, while the tables keep their
# shapes (raw binary/decimal keep their offset, the _norm variants are centred). Why: the old rule (tokens x
# sqrt(d), raw table) put the table 3-6x above the tokens, differently per encoding, which confounded every
# comparison among encodings. Checkpoints of a fixed encoding written under the old rule are refused
# (GPTConfig.from_dict): their weights were trained for the other scale.

def fixed_position_scale(config):
    """c = 0.02 / RMS of the fixed table over positions 0..block_size-1: the table's RMS equals wte's init std."""
    table = fixed_position_encoding(config.pos_emb, torch.arange(config.block_size), config.n_embd)
    rms = table.double().pow(2).mean().sqrt().item()
    return 0.02 / rms if rms > 0 else 1.0  # (binary at block_size=1 is all zeros: nothing to scale)


def fixed_position_encoding(kind, pos, dim):
    """(len(pos), dim) float table for the fixed additive encodings; pos is a 1-D long tensor."""
    p = pos.to(torch.float64)[:, None]
    i = torch.arange(dim, dtype=torch.float64, device=pos.device)[None, :]
    if kind == 'sinusoidal':   # sin on even dims, cos on odd dims, pairs share a frequency
        angle = p * torch.pow(10000.0, -(i - i % 2) / dim)
        pe = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    elif kind == 'sinonly':    # sin(pos * 10000^(-i/d)) on every dim
        pe = torch.sin(p * torch.pow(10000.0, -i / dim))
    elif kind in ('binary', 'binary_norm'):   # binary digits, most significant first, zero-padded
        place = (dim - 1 - i).clamp(max=62)    # dim d-1 holds the least significant bit
        pe = torch.where(dim - 1 - i > 62, torch.zeros_like(p * i),
                         torch.floor(p / torch.pow(2.0, place)) % 2)
        if kind == 'binary_norm':
            pe = 2 * pe - 1
    elif kind in ('decimal', 'decimal_norm'):  # decimal digits 0..9, most significant first, zero-padded
        place = (dim - 1 - i).clamp(max=18)
        pe = torch.where(dim - 1 - i > 18, torch.zeros_like(p * i),
                         torch.floor(p / torch.pow(10.0, place)) % 10)
        if kind == 'decimal_norm':
            pe = (pe - 4.5) / 4.5
    else:
        raise ValueError(f"no fixed encoding for pos_emb '{kind}'")
    return pe.float()


def rope_cos_sin(pos, head_dim, theta):
    """cos/sin tables (T, head_dim/2) for rotary embeddings at positions pos (T,); pos (B, T) gives (B, 1, T, hd/2)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim))
    angles = pos.float()[..., None] * inv_freq
    if pos.dim() == 2:  # pos_random: positions per sequence, broadcast over heads
        angles = angles[:, None]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs (first half, second half) of x (B, H, T, hd) by the position angles."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


# pos_emb='alibi' (Press et al. 2022, arXiv 2108.12409): logit(i, j) += -m_h * (p_i - p_j) for key j <= query i,
# with positions p from GPT.position_ids (pos_random: the distances of the random positions, still >= 0 since
# they are sorted). Slopes: for n heads a power of 2, m_h = 2^(-8h/n), h = 1..n; otherwise the n0 = 2^floor(log2 n)
# slopes of n0 heads, then every other slope of 2*n0 heads for the rest (the paper's rule).

def alibi_slopes(n_head):
    """(n_head,) float tensor of the ALiBi head slopes."""
    def pow2(n):
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]
    n0 = 2 ** int(math.floor(math.log2(n_head)))
    return torch.tensor(pow2(n0) + pow2(2 * n0)[0::2][:n_head - n0])


def alibi_bias(slopes, qpos, kpos):
    """(1 or B, H, T, S) bias -m_h * (qpos_i - kpos_j) with -inf where key j is after query i (causality by index:
    the T queries are the last T of the S keys). qpos (T,) or (B, T), kpos (S,) or (B, S)."""
    T, S = qpos.size(-1), kpos.size(-1)
    dist = (qpos[..., :, None] - kpos[..., None, :]).float()
    dist = dist if dist.dim() == 3 else dist[None]
    bias = -slopes.to(qpos.device)[None, :, None, None] * dist[:, None]
    causal = torch.ones(T, S, dtype=torch.bool, device=qpos.device).tril(S - T)
    return bias.masked_fill(~causal, float('-inf'))


# ----------------------------------------------------------------------------- ngpt
# nGPT (arXiv 2410.01131): hidden states and every weight row along the embedding axis live on the unit
# sphere. Learned scalings are stored as p = scale * (value / init) and used as init/scale * p (the
# paper's "init, scale" pairs), which sets their effective Adam step size; GPT.normalize_weights()
# runs after every optimizer step.

def ngpt_base_scale(config):
    """The paper's base scale 1/sqrt(n_embd): the stored scale of sqk, alpha and sz."""
    return 1.0 / math.sqrt(config.n_embd)


def ngpt_scaled(p, init, scale):
    """Effective value of a stored scaling parameter (equals `init` while p is at its initial value)."""
    return p * (init / scale)


def ngpt_step(h, out, alpha):
    """h <- norm(h + |alpha| * (norm(out) - h)): a step from h towards the block's output on the sphere."""
    return F.normalize(h + alpha.abs() * (F.normalize(out, dim=-1) - h), dim=-1)


class NGPTHead(nn.Linear):
    """ngpt: LM head whose logits are scaled per token by sz (init 1 stored at scale 1/sqrt(n_embd))."""

    def __init__(self, config):
        super().__init__(config.n_embd, config.vocab_size, bias=False)
        self.base_scale = ngpt_base_scale(config)
        self.sz = nn.Parameter(torch.full((config.vocab_size,), self.base_scale))

    def forward(self, x):
        return super().forward(x) * ngpt_scaled(self.sz, 1.0, self.base_scale).to(x.dtype)


# ----------------------------------------------------------------------------- attention

def fake_quantize(x, bits, keep=None):
    """Symmetric absmax fake quantization of the whole tensor to `bits` bits (values stay float): scale =
    max|x| / (2^(bits-1) - 1), x -> round(x / scale).clamp(+-(2^(bits-1) - 1)) * scale. keep (bool, broadcast to x):
    the entries that set max|x| (attention: the causal ones; a masked logit never reaches the softmax)."""
    levels = 2 ** (bits - 1) - 1
    amax = (x.abs() if keep is None else x.abs().masked_fill(~keep, 0)).amax().clamp(min=1e-12)
    scale = amax / levels
    return (x / scale).round().clamp(-levels, levels) * scale


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.head_dim = config.qk_head_dim
        self.diff = config.attn == 'diff'
        self.n_qk_head = 2 * config.n_head if self.diff else config.n_head
        self.name = f'layer{layer_idx}'
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual = True
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        # qk_norm: RMSNorm of queries and keys per head, before rope (keeps logits bounded)
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(self.head_dim), RMSNorm(self.head_dim)
        # attn='diff' (Differential Transformer, arXiv 2410.05258): q/k heads (2h, 2h+1) are the two halves
        # of head h, its values have width 2*head_dim; lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init
        if self.diff:
            self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_idx)
            self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
                nn.Parameter(torch.randn(self.head_dim) * 0.1) for _ in range(4))
            self.subln = RMSNorm(2 * self.head_dim)  # per head over 2*head_dim, gain shared by the heads
        # ngpt: q and k on the unit sphere per head, scaled by sqk (init 1 stored at scale 1/sqrt(n_embd))
        self.ngpt = config.ngpt
        if config.ngpt:
            self.base_scale = ngpt_base_scale(config)
            self.sqk = nn.Parameter(torch.full((config.n_embd,), self.base_scale))
        self.rec = None  # set by GPT.record(): a dict to store attention weights in
        self.attn, self.linear_chunk = config.attn, config.linear_chunk
        # alibi: one slope per head (attn='diff': both maps of a head share it); not a parameter or buffer
        self.alibi = (alibi_slopes(config.n_head).repeat_interleave(self.n_qk_head // config.n_head)
                      if config.pos_kind == 'bias' else None)

    def forward(self, x, pe=None, cache=None):
        """pe: what attention reads of the positions (GPT.attention_pe): rope's (cos, sin), alibi's positions."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k = (t.view(B, T, self.n_qk_head, self.head_dim).transpose(1, 2) for t in (q, k))
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if pe is not None and self.alibi is None:
            q, k = apply_rope(q, *pe), apply_rope(k, *pe)
        if self.ngpt:  # softmax scale sqrt(hd) instead of 1/sqrt(hd): folded into q, so every path below is shared
            sqk = ngpt_scaled(self.sqk, 1.0, self.base_scale).view(1, self.n_qk_head, 1, self.head_dim)
            q, k = sqk * F.normalize(q, dim=-1) * self.head_dim, sqk * F.normalize(k, dim=-1)
        if self.attn == 'linear':  # attn='linear': a recurrent state (S, z) in the cache instead of keys/values
            if self.rec is not None and 'logit_bits' in self.rec:
                raise ValueError("attn='linear' has no attention logits to quantize (logit_bits)")
            state = (cache['S'], cache['z']) if cache is not None and 'S' in cache else None
            y, S, z = linear_attention(q, k, v, self.linear_chunk, state)
            if cache is not None:
                cache['S'], cache['z'] = S, z
            if self.rec is not None:
                self.rec[f'{self.name}.attn'] = linear_attention_weights(q, k, state).detach()
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))
        if cache is not None:  # KV cache: append this step's keys/values
            if 'k' in cache:
                k, v = torch.cat((cache['k'], k), dim=2), torch.cat((cache['v'], v), dim=2)
            cache['k'], cache['v'] = k, v
        # queries are the last T positions of the S keys; causal mask aligned to the end
        S = k.size(2)
        if self.diff:  # both halves of a head read the head's values: one SDPA call over 2*n_head maps
            v = v.repeat_interleave(2, dim=1)
        bias = None
        if self.alibi is not None:  # alibi: the keys' positions travel in the cache with the keys
            kpos = pe
            if cache is not None:
                kpos = pe if 'kpos' not in cache else torch.cat((cache['kpos'].expand(*pe.shape[:-1], -1), pe), -1)
                cache['kpos'] = kpos
            bias = alibi_bias(self.alibi, pe, kpos).to(q.dtype)  # causality included (-inf)
        if self.rec is not None:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            if 'logit_bits' in self.rec:  # what the softmax would read from a low-bit logit kernel (analysis/outliers.py)
                att = fake_quantize(att, self.rec['logit_bits'], mask)
            self.rec[f'{self.name}.logits'] = att.detach()
            att = (att + bias if bias is not None else att.masked_fill(~mask, float('-inf'))).softmax(dim=-1)
            self.rec[f'{self.name}.attn'] = att.detach()
            y = att @ v
        elif bias is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        elif T == S:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        elif T == 1:  # one new token attends to everything cached
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if self.diff:
            y = self.diff_combine(y)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def diff_lambda(self):
        lq = torch.exp(torch.dot(self.lambda_q1.float(), self.lambda_k1.float()))
        return lq - torch.exp(torch.dot(self.lambda_q2.float(), self.lambda_k2.float())) + self.lambda_init

    def diff_combine(self, y):
        """attn='diff': (B, 2H, T, 2hd) outputs of the 2H maps -> (B, H, T, 2hd) = A1 V - lambda A2 V, then
        the per-head RMSNorm times (1 - lambda_init). While recording, the maps are combined the same way."""
        B, _, T, W = y.shape
        lam = self.diff_lambda().to(y.dtype)
        y = y.view(B, self.n_head, 2, T, W)
        if self.rec is not None:
            att = self.rec[f'{self.name}.attn'].view(B, self.n_head, 2, T, -1)
            self.rec[f'{self.name}.attn1'], self.rec[f'{self.name}.attn2'] = att[:, :, 0], att[:, :, 1]
            self.rec[f'{self.name}.attn'] = (att[:, :, 0] - lam * att[:, :, 1]).detach()
            self.rec[f'{self.name}.lambda'] = lam.detach()
        return self.subln(y[:, :, 0] - lam * y[:, :, 1]) * (1 - self.lambda_init)


# ----------------------------------------------------------------------------- attn='linear'
# Causal linear attention (Katharopoulos et al. 2020) with feature map phi(x) = elu(x) + 1 > 0:
#     y_t = phi(q_t) S_t / (phi(q_t) . z_t),   S_t = sum_{s<=t} phi(k_s) v_s^T,   z_t = sum_{s<=t} phi(k_s)
# Training runs in chunks of `chunk` positions: inside a chunk the masked (C x C) kernel matrix,
# across chunks the state (S, z) summed over all earlier chunks, so the cost is O(T C d + T d^2).
# Generation carries (S, z) per layer in the cache: O(1) per token, whatever the context length.

def linear_feature(x):
    return F.elu(x) + 1


def linear_attention(q, k, v, chunk, state=None):
    """q, k, v (B, H, T, d). state: (S (B, H, d, dv), z (B, H, d)) of the tokens before, or None.
    Returns y (B, H, T, dv) and the state after the last token (computed in float32)."""
    B, H, T, D = q.shape
    fq, fk, vf = linear_feature(q.float()), linear_feature(k.float()), v.float()
    C = min(chunk, T)
    N = -(-T // C)
    pad = N * C - T
    if pad:  # the padded tail: zero key features and values add nothing to any state; the padded queries' features
        # are 1, not 0, so their rows (dropped below) divide by a positive sum: 0/0 there made NaN gradients
        fk, vf = (F.pad(t, (0, 0, 0, pad)) for t in (fk, vf))
        fq = F.pad(fq, (0, 0, 0, pad), value=1.0)
    fq, fk, vf = (t.view(B, H, N, C, -1) for t in (fq, fk, vf))
    kv = fk.transpose(-1, -2) @ vf                       # (B, H, N, d, dv): each chunk's contribution
    ks = fk.sum(3)                                       # (B, H, N, d)
    S_incl, z_incl = kv.cumsum(2), ks.cumsum(2)          # carried state after each chunk
    S_prev, z_prev = S_incl - kv, z_incl - ks            # ... and before it
    S_end, z_end = S_incl[:, :, -1], z_incl[:, :, -1]
    if state is not None:
        S0, z0 = state
        S_prev, z_prev = S_prev + S0[:, :, None], z_prev + z0[:, :, None]
        S_end, z_end = S_end + S0, z_end + z0
    mask = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    a = (fq @ fk.transpose(-1, -2)).masked_fill(~mask, 0.0)     # (B, H, N, C, C) causal kernel in a chunk
    num = fq @ S_prev + a @ vf
    den = (fq * z_prev[:, :, :, None]).sum(-1) + a.sum(-1)
    y = (num / den[..., None]).reshape(B, H, N * C, -1)[:, :, :T]
    return y.to(q.dtype), S_end, z_end


def linear_attention_weights(q, k, state=None):
    """Normalized kernel weights (B, H, T, T) of the current tokens, for model.record(): entry (t, s) is
    phi(q_t).phi(k_s) / (phi(q_t) . z_t). Rows sum to 1 (less the share of earlier, stateful tokens)."""
    fq, fk = linear_feature(q.float()), linear_feature(k.float())
    a = (fq @ fk.transpose(-1, -2)).tril()
    den = a.sum(-1, keepdim=True)
    if state is not None:
        den = den + (fq * state[1][:, :, None]).sum(-1, keepdim=True)
    return a / den


# ----------------------------------------------------------------------------- MLP

class MLP(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.name = f'layer{layer_idx}'
        self.swiglu = config.mlp == 'swiglu'
        if self.swiglu:  # hidden 8/3 d (rounded up to 64) keeps the parameter count of a 4d GELU MLP
            hidden = 64 * math.ceil(8 * config.n_embd / 3 / 64)
            self.c_fc = nn.Linear(config.n_embd, 2 * hidden, bias=config.bias)
        else:
            hidden = 4 * config.n_embd
            self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.c_proj.residual = True
        self.dropout = nn.Dropout(config.dropout)
        # ngpt: SwiGLU input scaled by suv (init 1 at scale 1, times sqrt(n_embd): SiLU's nonlinear range)
        self.ngpt = config.ngpt
        if config.ngpt:
            self.suv = nn.Parameter(torch.ones(self.c_fc.out_features))
            self.suv_mult = math.sqrt(config.n_embd)
        self.rec = None

    def forward(self, x):
        h = self.c_fc(x)
        if self.ngpt:
            h = h * (ngpt_scaled(self.suv, 1.0, 1.0) * self.suv_mult)
        if self.swiglu:
            a, b = h.chunk(2, dim=-1)
            h = F.silu(a) * b
        else:
            h = F.gelu(h)
        if self.rec is not None:
            self.rec[f'{self.name}.mlp'] = h.detach()
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config, layer_idx)
        # ngpt: per-dimension eigen learning rates alpha (init 0.05 stored at scale 1/sqrt(n_embd))
        self.ngpt = config.ngpt
        if config.ngpt:
            self.base_scale = ngpt_base_scale(config)
            self.attn_alpha = nn.Parameter(torch.full((config.n_embd,), self.base_scale))
            self.mlp_alpha = nn.Parameter(torch.full((config.n_embd,), self.base_scale))

    def forward(self, x, pe=None, cache=None):
        if self.ngpt:  # h <- norm(h + alpha * (norm(block(h)) - h)), for attention then MLP
            x = ngpt_step(x, self.attn(x, pe, cache), ngpt_scaled(self.attn_alpha, 0.05, self.base_scale))
            return ngpt_step(x, self.mlp(x), ngpt_scaled(self.mlp_alpha, 0.05, self.base_scale))
        x = x + self.attn(self.ln_1(x), pe, cache)
        return x + self.mlp(self.ln_2(x))


# ----------------------------------------------------------------------------- n_encoder_layer
# Encoder-decoder (n_encoder_layer > 0): n_encoder_layer bidirectional blocks read `src`; every
# decoder block (self.h) gets cross-attention to the encoder output between its self-attention
# and its MLP. One token embedding (and wpe) for both stacks; pos_emb/norm/mlp/qk_norm apply to
# both. Source padding: ids < 0 in src (like -100 in targets), masked as keys everywhere.
# Recording: rec['enc{i}.attn'] (B, H, S, S), rec['layer{i}.cross'] (B, H, T, S).

class EncDecAttention(CausalSelfAttention):
    """Attention without a causal mask: encoder self-attention (keys from x) or cross-attention
    (keys from the encoder output `mem`). CausalSelfAttention's parameters (c_attn, c_proj, q_norm,
    k_norm) and a forward of its own, so a decoder-only block can initialize an encoder block."""

    def __init__(self, config, name):
        super().__init__(config, 0)
        self.name = name  # the recording key: 'enc{i}.attn' or 'layer{i}.cross'

    def heads(self, t):
        return t.view(t.size(0), t.size(1), self.n_head, self.head_dim).transpose(1, 2)

    def forward(self, x, mem=None, mask=None, rope=None, cache=None):
        B, T, C = x.shape
        w, b = self.c_attn.weight, self.c_attn.bias
        q = self.heads(F.linear(x, w[:C], None if b is None else b[:C]))
        if cache is not None and 'xk' in cache:  # cross-attention keys/values are computed once per source
            k, v = cache['xk'], cache['xv']
        else:
            k, v = (self.heads(t) for t in F.linear(x if mem is None else mem, w[C:], None if b is None else b[C:]).split(C, dim=2))
            if self.qk_norm:
                k = self.k_norm(k)
            if rope is not None:  # encoder self-attention only: source and target positions are unrelated
                k = apply_rope(k, *rope)
            if cache is not None:
                cache['xk'], cache['xv'] = k, v
        if self.qk_norm:
            q = self.q_norm(q)
        if rope is not None:
            q = apply_rope(q, *rope)
        keep = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S): False = source padding
        if self.rec is not None:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if keep is not None:
                att = att.masked_fill(~keep, float('-inf'))
            att = att.softmax(dim=-1)
            self.rec[self.name] = att.detach()
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class EncoderBlock(nn.Module):
    """A Block whose attention sees the whole source (same parameter names as Block)."""

    def __init__(self, config, i):
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = EncDecAttention(config, f'enc{i}.attn')
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config, i)
        self.mlp.name = f'enc{i}'  # rec['enc{i}.mlp']

    def forward(self, x, mask, rope=None):
        x = x + self.attn(self.ln_1(x), mask=mask, rope=rope)
        return x + self.mlp(self.ln_2(x))


class DecoderBlock(Block):
    """Block + cross-attention to the encoder output (ln_x, cross) between self-attention and MLP."""

    def __init__(self, config, i):
        super().__init__(config, i)
        self.ln_x = make_norm(config, config.n_embd)
        self.cross = EncDecAttention(config, f'layer{i}.cross')

    def forward(self, x, pe=None, cache=None, mem=None, mem_mask=None):
        x = x + self.attn(self.ln_1(x), pe, cache)
        x = x + self.cross(self.ln_x(x), mem, mem_mask, cache=cache)
        return x + self.mlp(self.ln_2(x))


def build_encoder_decoder(model, config):
    """Adds the encoder stack (enc, ln_enc) and swaps the decoder blocks for DecoderBlocks."""
    model.enc = nn.ModuleList([EncoderBlock(config, i) for i in range(config.n_encoder_layer)])
    model.ln_enc = make_norm(config, config.n_embd)
    model.h = nn.ModuleList([DecoderBlock(config, i) for i in range(config.n_layer)])


def encode_source(model, src, caches=None):
    """{'mem': encoder output (B, S, C), 'mem_mask': (B, S) False at padding}; cached in caches[0]
    so generation runs the encoder once per source."""
    if not model.config.n_encoder_layer:
        raise ValueError("src given but this is a decoder-only model (n_encoder_layer=0)")
    if caches and 'mem' in caches[0]:
        return {'mem': caches[0]['mem'], 'mem_mask': caches[0]['mem_mask']}
    if src is None:
        raise ValueError(f"this encoder-decoder model (n_encoder_layer={model.config.n_encoder_layer}) needs src=")
    mask = src >= 0
    pos = model.position_ids(0, src.size(1), src.device, src.size(0))
    x, _ = model.embed(src.clamp(min=0), pos)
    rope = model.rope_tables(pos)
    for block in model.enc:
        x = block(x, mask, rope)
    out = {'mem': model.ln_enc(x), 'mem_mask': mask}
    if caches:
        caches[0].update(out)
    return out


def encdec_state_from_decoder_only(state, config):
    """Transfer: entries that initialize an encoder-decoder from a decoder-only state dict.
    Encoder block i starts as decoder block i (mod the decoder-only depth), ln_enc as ln_f; the
    decoder blocks, embeddings and head load by name, and cross-attention (ln_x, cross) stays new."""
    n_dec = len({k.split('.')[1] for k in state if k.startswith('h.')})
    if n_dec == 0:
        raise ValueError("the checkpoint has no decoder blocks (h.*) to initialize the encoder from")
    out = {}
    for i in range(config.n_encoder_layer):
        prefix = f'h.{i % n_dec}.'
        out.update({f'enc.{i}.' + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    out.update({'ln_enc.' + k[len('ln_f.'):]: v for k, v in state.items() if k.startswith('ln_f.')})
    return out


# ----------------------------------------------------------------------------- GPT

class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_kind == 'learned':  # (the other kinds have no parameters; rope's tables come per call)
            self.wpe = nn.Embedding(config.pos_random or config.block_size, config.n_embd)  # pos_random: M rows
        elif config.pos_kind == 'fixed':  # the common input scale (pos_emb block above)
            self.pos_scale = fixed_position_scale(config)
        elif config.pos_kind not in ('none', 'rotary', 'bias'):
            raise unhandled_pos_kind(config.pos_emb, 'GPT')
        # diff_input: the stack sees e_t - e_(t-1) (e_(-1) = learned start vector s, init 0);
        # the plain embedding e_t is added back after the final norm, before the LM head.
        if config.diff_input:
            self.diff_start = nn.Parameter(torch.zeros(config.n_embd))
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        if config.n_encoder_layer:
            build_encoder_decoder(self, config)
        self.ln_f = make_norm(config, config.n_embd)
        self.lm_head = (NGPTHead(config) if config.ngpt else
                        nn.Linear(config.n_embd, config.vocab_size, bias=False))
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        if config.ngpt:
            self.normalize_weights()
        self.diagnostics = {}  # last forward's cheap statistics (e.g. diff_input delta norms)
        self.rec = None  # set by GPT.record(): the hidden states go in it too

    def _init_weights(self, module):
        # GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(module, 'residual', False) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ forward
    def position_ids(self, start_pos, T, device, batch=1):
        """Positions of T tokens from start_pos on: the one place positions are made. The additive tables
        (embed), rope (rope_tables) and alibi read these ids, so a position scheme changes this function only.
        pos_random=M: each of the batch sequences gets a sorted random subset of start_pos + T distinct positions
        of [0, max(M, start_pos + T)) (Ruoss et al. 2023), in training and evaluation alike; returns (batch, T), its
        last T. A sequence longer than M thus takes 0..n-1, positions past M included (never seen in training if
        the training sequences fit in M). Cached generation draws the whole length once (GPT.generate)."""
        cfg = self.config
        rows = cfg.pos_random or cfg.block_size  # learned: the rows of wpe
        if cfg.pos_kind == 'learned' and start_pos + T > rows:
            raise ValueError(f"sequence of {start_pos + T} tokens is longer than {'pos_random' if cfg.pos_random else 'block_size'}"
                             f"={rows}, the limit of learned position embeddings")
        if cfg.pos_random:
            n = start_pos + T
            draw = torch.rand(batch, max(cfg.pos_random, n), device=device).argsort(dim=1)[:, :n]
            return draw.sort(dim=1).values[:, start_pos:]
        return torch.arange(start_pos, start_pos + T, device=device)

    def embed(self, idx, pos=None, prev_emb=None):
        """Input of the stack for tokens idx at positions pos (default position_ids from 0), and the plain
        token embeddings."""
        cfg = self.config
        pos = self.position_ids(0, idx.size(1), idx.device, idx.size(0)) if pos is None else pos
        e = self.wte(idx)
        x = e
        if cfg.diff_input:
            # prev_emb: the embedding of the token before idx[:, 0] (cached generation), else s
            first = (self.diff_start.expand(idx.size(0), 1, -1) if prev_emb is None else prev_emb)
            x = e - torch.cat((first.to(e.dtype), e[:, :-1]), dim=1)
            self.diagnostics['delta_norm'] = x.detach().norm(dim=-1)
        kind = cfg.pos_kind
        if kind == 'learned':
            x = x + self.wpe(pos)
        elif kind == 'fixed':  # the common input scale: table x pos_scale, tokens as they are (pos_emb block)
            table = fixed_position_encoding(cfg.pos_emb, pos.reshape(-1), cfg.n_embd).view(*pos.shape, cfg.n_embd)
            x = x + (self.pos_scale * table).to(x.dtype)
        elif kind not in ('none', 'rotary', 'bias'):  # (rotary and bias enter in attention, through attention_pe)
            raise unhandled_pos_kind(cfg.pos_emb, 'GPT.embed')
        return self.drop(x), e

    def rope_tables(self, pos):
        """pos_emb of kind 'rotary': the (cos, sin) tables at positions pos for every attention layer; else None."""
        if self.config.pos_kind != 'rotary':
            return None
        return rope_cos_sin(pos, self.config.qk_head_dim, self.config.rope_theta)

    def attention_pe(self, pos):
        """What decoder attention reads of the positions: rotary (cos, sin) tables, bias (alibi) the positions
        themselves, the other kinds nothing (None)."""
        return pos if self.config.pos_kind == 'bias' else self.rope_tables(pos)

    def hidden(self, idx, start_pos=0, caches=None, src=None, pos=None):
        """Final hidden states (B, T, C) before the LM head. pos: the tokens' positions (default
        position_ids(start_pos, T)); GPT.generate passes slices of one draw when positions are random."""
        enc = encode_source(self, src, caches) if (src is not None or self.config.n_encoder_layer) else {}
        prev_emb = caches[0].get('prev_emb') if caches else None
        pos = self.position_ids(start_pos, idx.size(1), idx.device, idx.size(0)) if pos is None else pos
        x, e = self.embed(idx, pos, prev_emb)
        pe = self.attention_pe(pos)
        for i, block in enumerate(self.h):
            x = block(x, pe, caches[i] if caches else None, **enc)
            if self.rec is not None:  # the residual stream after each block (GPT.record())
                self.rec[f'layer{i}.hidden'] = x.detach()
        x = self.ln_f(x)
        if self.config.diff_input:
            x = x + e
            if caches:
                caches[0]['prev_emb'] = e[:, -1:]
        return x

    def forward(self, idx, targets=None, src=None, pos=None):
        logits = self.lm_head(self.hidden(idx, src=src, pos=pos))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    # ------------------------------------------------------------------ recording hook
    @contextlib.contextmanager
    def record(self):
        """Inside this context, attention materializes its weights and MLPs keep their activations:
        rec['layer{i}.attn'] (B, H, T, S) and rec['layer{i}.mlp'] (B, T, hidden). The one hook for analysis.
        attn='diff': rec['layer{i}.attn1'] and ['layer{i}.attn2'] are the two softmax maps of each head and
        rec['layer{i}.attn'] = attn1 - lambda * attn2 (rows sum to 1 - lambda), rec['layer{i}.lambda'] the scalar lambda.
        attn='linear': rec['layer{i}.attn'] holds the normalized kernel weights. n_encoder_layer > 0: also
        rec['enc{i}.attn'] (B, H, S, S) and rec['layer{i}.cross'] (B, H, T, S).
        rec['layer{i}.hidden'] (B, T, C): the residual stream after decoder block i (the last one before ln_f).
        rec['layer{i}.logits'] (B, H, T, S): the pre-softmax logits q.k/sqrt(d) of every query/key pair, future keys
        included (the softmax reads the causal ones, key j <= query i + S - T; alibi's bias is added after);
        attn='diff': the 2H maps', maps 2h and 2h+1 being head h's attn1 and attn2. None for attn='linear' (no
        logits), nor for encoder or cross attention. Set rec['logit_bits'] = b (an int) before the forward to
        fake-quantize every self-attention layer's logits to b bits before the mask and softmax (fake_quantize:
        per layer and forward, absmax over the causal entries); rec['layer{i}.logits'] then holds the quantized ones."""
        rec = {}
        mods = [m for m in self.modules() if hasattr(m, 'rec')]
        for m in mods:
            m.rec = rec
        try:
            yield rec
        finally:
            for m in mods:
                m.rec = None

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, src=None, generator=None, on_token=None):
        """Sample max_new_tokens after idx (B, T) with a KV cache. When the context fills block_size,
        the window slides by half (the last half is re-encoded) so generation can go on.
        on_token(next_ids) is called after every step (for streaming output)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        bs = self.config.block_size
        out = idx
        out_ctx = out[:, -bs:]  # a prompt longer than the context keeps its last block_size tokens
        caches = [dict() for _ in self.h]
        # positions of the whole window drawn once (position_ids), read slice by slice: equal to the full forward
        span = lambda n, more: self.position_ids(0, min(n + more, bs), idx.device, idx.size(0))  # noqa: E731
        pos = span(out_ctx.size(1), max_new_tokens - 1)  # (the last sampled token is never fed back)
        logits = self.lm_head(self.hidden(out_ctx, 0, caches, src, pos[..., :out_ctx.size(1)])[:, -1])
        cur_len = out_ctx.size(1)
        for i in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, generator)
            out = torch.cat((out, nxt), dim=1)
            if on_token is not None:
                on_token(nxt)
            if i == max_new_tokens - 1:
                break
            if cur_len + 1 > bs:  # context full: re-encode the last half of the window
                keep = out[:, -(bs // 2):]
                caches = [dict() for _ in self.h]
                pos = span(keep.size(1), max_new_tokens - 2 - i)
                logits = self.lm_head(self.hidden(keep, 0, caches, src, pos[..., :keep.size(1)])[:, -1])
                cur_len = keep.size(1)
            else:
                logits = self.lm_head(self.hidden(nxt, cur_len, caches, src, pos[..., cur_len:cur_len + 1])[:, -1])
                cur_len += 1
        return out

    # ------------------------------------------------------------------ accounting
    def num_params(self, non_embedding=False):
        """Parameters counted once (tied weights are shared); optionally without embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if hasattr(self, 'wpe'):
                n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token (forward + backward): 6N + 12 * L * d * T (PaLM appendix B)."""
        cfg = self.config
        T = seq_len or cfg.block_size
        N = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.n_embd  # LM head matmul counts
        # attention: q.k over n_embd and A.v over n_embd (attn='diff': over 2*n_embd, both maps read all values)
        return 6 * N + 6 * cfg.n_layer * cfg.n_embd * T * (3 if cfg.attn == 'diff' else 2)

    def optimizer_groups(self, weight_decay):
        """Weight decay on matrices only (not on norms, biases, gains, vectors)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]

    @torch.no_grad()
    def normalize_weights(self):
        """ngpt: put every weight vector along the embedding axis back on the unit sphere: rows of the
        embeddings, LM head and input projections, columns of the output projections (marked residual)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.copy_(F.normalize(m.weight, dim=0 if getattr(m, 'residual', False) else 1))


def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    """One token per row from last-position logits (B, V); temperature 0 = greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.size(-1))  # top_k above the vocabulary is clamped
        v, _ = torch.topk(logits, k)
        logits = logits.masked_fill(logits < v[:, [-1]], float('-inf'))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
