"""GPT and every variant of this lab, behind the flags of GPTConfig.

Nothing here knows about data or training. A variant is one flag plus one small block named after
it; search for the flag to find every line of it.

    model(idx, targets=None, src=None) -> (logits, loss)      targets use -100 for "no loss"
    model.generate(idx, max_new_tokens, temperature, top_k)    cached (KV cache)
    with model.record() as rec: model(idx)                     rec['layer0.attn'] = (B, H, T, T) weights
"""
import contextlib
import math
from dataclasses import dataclass, asdict, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

POS_EMBS = ('none', 'learned', 'sinusoidal', 'sinonly', 'binary', 'binary_norm', 'decimal', 'decimal_norm', 'rope')
NORMS = ('layernorm', 'rmsnorm')
MLPS = ('gelu', 'swiglu')
ATTNS = ('softmax', 'linear', 'diff')


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

    def __post_init__(self):
        for name, value, valid in (('pos_emb', self.pos_emb, POS_EMBS), ('norm', self.norm, NORMS),
                                   ('mlp', self.mlp, MLPS), ('attn', self.attn, ATTNS)):
            if value not in valid:
                raise ValueError(f"unknown {name} '{value}'; valid values: {', '.join(valid)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             f"pick n_head among {[h for h in range(1, 65) if self.n_embd % h == 0][-6:]}")
        if self.pos_emb == 'rope' and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"pos_emb='rope' needs an even head size, got n_embd/n_head={self.n_embd // self.n_head}")
        if self.linear_chunk < 1:
            raise ValueError(f"linear_chunk must be >= 1, got {self.linear_chunk}")
        for flag, on in (('attn', self.attn not in ('softmax', 'linear')), ('ngpt', self.ngpt), ('n_encoder_layer', self.n_encoder_layer > 0)):
            if on:
                raise ValueError(f"{flag}={getattr(self, flag)!r} is not implemented yet in this version of model.py")

    @classmethod
    def from_dict(cls, d):
        """Build from a checkpoint's dict; unknown keys mean a checkpoint from an incompatible version."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"checkpoint config has keys this model.py does not know: {extra}; "
                             f"it was written by an incompatible version")
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
    if config.norm == 'rmsnorm':
        return RMSNorm(dim)
    return nn.LayerNorm(dim, bias=config.bias)


# ----------------------------------------------------------------------------- pos_emb
# Fixed additive encodings are defined for any position, so evaluation past block_size works.

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
    """cos/sin tables (T, head_dim/2) for rotary embeddings at the given positions."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim))
    angles = pos.float()[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs (first half, second half) of x (B, H, T, hd) by the position angles."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


# ----------------------------------------------------------------------------- attention

class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.head_dim = config.n_embd // config.n_head
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
        self.rec = None  # set by GPT.record(): a dict to store attention weights in
        self.linear_chunk = config.linear_chunk if config.attn == 'linear' else 0

    def forward(self, x, rope=None, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.linear_chunk:  # attn='linear': a recurrent state (S, z) in the cache instead of keys/values
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
        if self.rec is not None:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            att = att.masked_fill(~mask, float('-inf')).softmax(dim=-1)
            self.rec[f'{self.name}.attn'] = att.detach()
            y = att @ v
        elif T == S:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        elif T == 1:  # one new token attends to everything cached
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


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
    pad = N * C - T  # zero features and values in the padded tail: they add nothing to any state
    if pad:
        fq, fk, vf = (F.pad(t, (0, 0, 0, pad)) for t in (fq, fk, vf))
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
        self.rec = None

    def forward(self, x):
        h = self.c_fc(x)
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

    def forward(self, x, rope=None, cache=None):
        x = x + self.attn(self.ln_1(x), rope, cache)
        return x + self.mlp(self.ln_2(x))


# ----------------------------------------------------------------------------- GPT

class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_emb == 'learned':
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        if config.pos_emb == 'rope':
            hd = config.n_embd // config.n_head
            cos, sin = rope_cos_sin(torch.arange(config.block_size), hd, config.rope_theta)
            self.register_buffer('rope_cos', cos, persistent=False)
            self.register_buffer('rope_sin', sin, persistent=False)
        # diff_input: the stack sees e_t - e_(t-1) (e_(-1) = learned start vector s, init 0);
        # the plain embedding e_t is added back after the final norm, before the LM head.
        if config.diff_input:
            self.diff_start = nn.Parameter(torch.zeros(config.n_embd))
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = make_norm(config, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        self.diagnostics = {}  # last forward's cheap statistics (e.g. diff_input delta norms)

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
    def embed(self, idx, start_pos=0, prev_emb=None):
        """Input of the stack for tokens idx at positions start_pos.. (and the plain embeddings)."""
        cfg = self.config
        T = idx.size(1)
        e = self.wte(idx)
        x = e
        if cfg.diff_input:
            # prev_emb: the embedding of the token before idx[:, 0] (cached generation), else s
            first = (self.diff_start.expand(idx.size(0), 1, -1) if prev_emb is None else prev_emb)
            x = e - torch.cat((first.to(e.dtype), e[:, :-1]), dim=1)
            self.diagnostics['delta_norm'] = x.detach().norm(dim=-1)
        pos = torch.arange(start_pos, start_pos + T, device=idx.device)
        if cfg.pos_emb == 'learned':
            if start_pos + T > cfg.block_size:
                raise ValueError(f"sequence of {start_pos + T} tokens is longer than block_size={cfg.block_size}, "
                                 f"the limit of learned position embeddings")
            x = x + self.wpe(pos)
        elif cfg.pos_emb not in ('none', 'rope'):
            # fixed encodings are O(1) per element: scale token embeddings by sqrt(d) to match
            x = x * math.sqrt(cfg.n_embd) + fixed_position_encoding(cfg.pos_emb, pos, cfg.n_embd).to(x.dtype)
        return self.drop(x), e

    def rope_tables(self, start_pos, T, device):
        if self.config.pos_emb != 'rope':
            return None
        if start_pos + T <= self.rope_cos.size(0):
            return self.rope_cos[start_pos:start_pos + T], self.rope_sin[start_pos:start_pos + T]
        return rope_cos_sin(torch.arange(start_pos, start_pos + T, device=device),
                            self.config.n_embd // self.config.n_head, self.config.rope_theta)

    def hidden(self, idx, start_pos=0, caches=None, src=None):
        """Final hidden states (B, T, C) before the LM head."""
        if src is not None:
            raise ValueError("src given but this is a decoder-only model (n_encoder_layer=0)")
        prev_emb = caches[0].get('prev_emb') if caches else None
        x, e = self.embed(idx, start_pos, prev_emb)
        rope = self.rope_tables(start_pos, idx.size(1), idx.device)
        for i, block in enumerate(self.h):
            x = block(x, rope, caches[i] if caches else None)
        x = self.ln_f(x)
        if self.config.diff_input:
            x = x + e
            if caches:
                caches[0]['prev_emb'] = e[:, -1:]
        return x

    def forward(self, idx, targets=None, src=None):
        logits = self.lm_head(self.hidden(idx, src=src))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    # ------------------------------------------------------------------ recording hook
    @contextlib.contextmanager
    def record(self):
        """Inside this context, attention materializes its weights and MLPs keep their activations:
        rec['layer{i}.attn'] (B, H, T, S) and rec['layer{i}.mlp'] (B, T, hidden). The one hook for analysis."""
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
        logits = self.lm_head(self.hidden(out_ctx, 0, caches, src)[:, -1])
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
                logits = self.lm_head(self.hidden(keep, 0, caches, src)[:, -1])
                cur_len = keep.size(1)
            else:
                logits = self.lm_head(self.hidden(nxt, cur_len, caches, src)[:, -1])
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
        return 6 * N + 12 * cfg.n_layer * cfg.n_embd * T

    def optimizer_groups(self, weight_decay):
        """Weight decay on matrices only (not on norms, biases, gains, vectors)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


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
