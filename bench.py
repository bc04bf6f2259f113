"""Speed of every variant, side by side in one run: step time, tokens/s, FLOPs/token, MFU, peak memory,
and cached vs uncached sampling speed.

    python bench.py                                       # every variant at the 'tiny' size
    python bench.py --variants=gpt2,modern,diff --size=gpt2_124m --batch_size=16 --compare=True
    python bench.py --variants=quickstart,quickstart+compile --steps=20      # CPU: compiled vs eager
    python bench.py --variants=gpt2,linear --block_size=4096 --batch_size=1

Each variant runs in its own subprocess (clean allocator, compile cache and peak-memory counter).
Warm-up steps are excluded; the reported step time is the median of the timed steps (CUDA events on
GPU). A variant name may end in `+compile` (torch.compile) or `+eager`, and in `+muon` (optimizer='muon',
optim.py) instead of AdamW. opt_ms/opt_share: the optimizer step (with nGPT's weight renormalization) and
its share of the step time. Output: a markdown table on stdout and JSON in `out`; `--compare=True` adds
ratios to the first variant.

    python bench.py --variants=quickstart,quickstart+muon --gen_tokens=0     # AdamW vs Muon step share
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import configurator
from configurator import Match, OneOf, Range, Text, UserError
from model import ATTNS, POS_EMBS

SIZES = {
    'tiny': dict(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=4096),       # the quickstart model
    'small': dict(n_layer=6, n_head=8, n_embd=512, block_size=512, vocab_size=50304),
    'gpt2_124m': dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304),
}
variants: Text("comma-separated variant names (VARIANTS, each may end in +compile, +eager or +muon), or 'all'") = 'all'
size: OneOf(tuple(SIZES)) = 'tiny'  # preset above; n_layer/n_head/n_embd/block_size/vocab_size override it when > 0
n_layer: Range(0) = 0
n_head: Range(0) = 0
n_embd: Range(0) = 0
block_size: Range(0) = 0
vocab_size: Range(0) = 0
batch_size: Range(1) = 8
steps: Range(1) = 10               # timed optimizer steps
warmup: Range(0) = 3               # untimed steps first (compile, allocator, caches)
gen_tokens: Range(0) = 64          # sampling benchmark: new tokens (0 = skip)
gen_prompt: Range(1) = 16
device: Match(r'auto|cpu|mps|cuda(:\d+)?', "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") = 'auto'
dtype: OneOf('auto', 'float32', 'bfloat16', 'float16') = 'auto'  # 'auto' = bf16 autocast on CUDA, float32 on CPU
peak_flops: Range(0) = 0.0         # for MFU; 0 = the device's bf16 peak when known
compare: bool = True
out: Text('JSON output path') = 'out/bench.json'
one: Text('internal: the variant a child process measures') = ''

GPT2 = dict(pos_emb='learned', norm='layernorm', mlp='gelu', bias=True)
MODERN = dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False, qk_norm=True)
VARIANTS = {  # the encodings and attention kinds come from model.py's families: a new member is benched as is
    'gpt2': GPT2,
    'modern': MODERN,
    'quickstart': dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False),
    **{f'pos_{p}': {**GPT2, 'pos_emb': p} for p in POS_EMBS if p != GPT2['pos_emb']},
    **{a: {**GPT2, 'attn': a} for a in ATTNS if a != 'softmax'},
    'ngpt': {**MODERN, 'qk_norm': False, 'ngpt': True},               # nGPT normalizes q/k itself
    'diffngpt': {**MODERN, 'qk_norm': False, 'ngpt': True, 'attn': 'diff'},
    'diff_input': {**GPT2, 'diff_input': True},
    'encdec': {**GPT2, 'n_encoder_layer': -1},   # -1: half of n_layer, decoder gets the rest
}
DEFAULT_ORDER = ['gpt2', 'modern', 'modern+muon'] + [v for v in VARIANTS if v not in ('gpt2', 'modern', 'quickstart')]


def model_config(name):
    from model import GPTConfig
    base = name.split('+')[0]
    if base not in VARIANTS:
        raise UserError(f"unknown variant '{base}'; known: {', '.join(VARIANTS)}")
    geo = dict(SIZES[size])
    for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size'):
        if globals()[k] > 0:
            geo[k] = globals()[k]
    flags = dict(VARIANTS[base])
    if flags.get('n_encoder_layer') == -1:  # same total depth: encoder and decoder share the layers
        flags['n_encoder_layer'] = geo['n_layer'] // 2
        geo['n_layer'] = geo['n_layer'] - flags['n_encoder_layer']
    return GPTConfig(**geo, **flags)


def sync(dev):
    if dev.startswith('cuda'):
        torch.cuda.synchronize()


def measure(name, dev):
    """Train-step and sampling speed of one variant (runs in a child process)."""
    from model import GPT
    import resource
    torch.manual_seed(0)
    cfg = model_config(name)
    compiled = '+compile' in name
    model = GPT(cfg).to(dev)
    cuda = dev.startswith('cuda')
    dt = dtype if dtype != 'auto' else ('bfloat16' if cuda else 'float32')
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    from optim import build_optimizer
    opt = build_optimizer(model, dict(optimizer='muon' if '+muon' in name else 'adamw', learning_rate=1e-4,
                                      weight_decay=0.1, beta1=0.9, beta2=0.95, muon_lr=0.02, muon_momentum=0.95,
                                      muon_weight_decay=0.0), 'cuda' if cuda else 'cpu')
    fwd = torch.compile(model) if compiled else model
    B, T = batch_size, cfg.block_size
    x = torch.randint(0, cfg.vocab_size, (B, T), device=dev)
    y = torch.randint(0, cfg.vocab_size, (B, T), device=dev)
    src = torch.randint(0, cfg.vocab_size, (B, T), device=dev) if cfg.n_encoder_layer > 0 else None
    kw = {'src': src} if src is not None else {}
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)

    def clock():  # a point in time: a recorded CUDA event, or the CPU clock
        if not cuda:
            return time.perf_counter()
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def step():
        """One training step; returns the clocks at its start, the optimizer's start and its end."""
        t = [clock()]
        with torch.autocast(device_type='cuda' if cuda else 'cpu', dtype=getattr(torch, dt), enabled=dt != 'float32'):
            _, loss = fwd(x, y, **kw)
        loss.backward()
        t.append(clock())
        opt.step()
        opt.zero_grad(set_to_none=True)
        if hasattr(model, 'normalize_weights') and cfg.ngpt:
            model.normalize_weights()
        return t + [clock()]

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(dev)
    warmup_s = time.perf_counter() - t0  # includes torch.compile's compilation for '+compile'
    times, opt_times = [], []
    for _ in range(steps):
        a, o, b = step()
        sync(dev)
        times.append(a.elapsed_time(b) / 1000 if cuda else b - a)
        opt_times.append(o.elapsed_time(b) / 1000 if cuda else b - o)
    step_s = statistics.median(times)
    tok_s = B * T / step_s
    fpt = model.flops_per_token()
    from common import peak_flops_of
    peak = peak_flops or (peak_flops_of(dev) if cuda else 0)
    row = {'variant': name, 'params': model.num_params(), 'batch': B, 'block': T, 'step_ms': round(1000 * step_s, 2),
           'opt_ms': round(1000 * statistics.median(opt_times), 2),
           'opt_share': round(statistics.median(o / t for o, t in zip(opt_times, times)), 3),
           'warmup_s': round(warmup_s, 2),
           'tok_per_s': round(tok_s, 1), 'flops_per_token': fpt,
           'mfu': round(fpt * tok_s / peak, 4) if peak else None,
           'peak_mem_mb': round((torch.cuda.max_memory_allocated(dev) if cuda else
                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 20, 1)}
    if gen_tokens > 0:
        row.update(measure_generation(model, cfg, dev, src))
    return row


@torch.no_grad()
def measure_generation(model, cfg, dev, src):
    """Generated tokens/s with the cache (model.generate) and recomputing the whole prefix each token."""
    model.eval()
    p = min(gen_prompt, cfg.block_size // 2)
    n = min(gen_tokens, cfg.block_size - p) if cfg.pos_kind == 'learned' else gen_tokens  # stay in the context
    prompt = torch.randint(0, cfg.vocab_size, (1, p), device=dev)
    s = src[:1] if src is not None else None
    model.generate(prompt, 2, temperature=0, src=s)  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    model.generate(prompt, n, temperature=0, src=s)
    sync(dev)
    cached = n / (time.perf_counter() - t0)
    kw = {'src': s} if s is not None else {}
    idx = prompt
    t0 = time.perf_counter()
    for _ in range(n):
        logits, _ = model(idx[:, -cfg.block_size:], **kw)
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    sync(dev)
    uncached = n / (time.perf_counter() - t0)
    return {'gen_tokens': n, 'gen_tok_s_cached': round(cached, 1), 'gen_tok_s_uncached': round(uncached, 1),
            'cache_speedup': round(cached / uncached, 2)}


def table(rows, ratios):
    keys = ['variant', 'params', 'step_ms', 'opt_ms', 'opt_share', 'warmup_s', 'tok_per_s', 'mfu', 'peak_mem_mb',
            'gen_tok_s_cached', 'gen_tok_s_uncached', 'cache_speedup']
    if ratios:
        keys.insert(3, 'step_time_ratio')
    lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    for r in rows:
        lines.append('| ' + ' | '.join('' if r.get(k) is None else str(r[k]) for k in keys) + ' |')
    return '\n'.join(lines)


def main():
    configurator.configure(globals())
    dev = device if device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    if one:
        print('BENCH ' + json.dumps(measure(one, dev)), flush=True)
        return
    names = DEFAULT_ORDER if variants == 'all' else [v.strip() for v in variants.split(',') if v.strip()]
    for nm in names:  # unknown names fail here, before anything runs
        if nm.split('+')[0] not in VARIANTS:
            raise UserError(f"unknown variant '{nm}'; known: {', '.join(VARIANTS)}")
    rows = []
    passthrough = [a for a in sys.argv[1:] if not a.startswith(('--variants=', '--out=', '--one='))]
    for nm in names:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, f'--one={nm}'],
                           capture_output=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith('BENCH ')]
        if r.returncode == 0 and line:
            rows.append(json.loads(line[-1][6:]))
        else:
            err = (r.stderr.strip().splitlines() or ['failed'])[-1]
            rows.append({'variant': nm, 'error': err[:160]})
        print(f"{nm}: {rows[-1].get('tok_per_s', rows[-1].get('error'))}", file=sys.stderr, flush=True)
    base = next((r for r in rows if 'step_ms' in r), None)
    if compare and base:
        for r in rows:
            if 'step_ms' in r:
                r['step_time_ratio'] = round(r['step_ms'] / base['step_ms'], 3)
    machine = torch.cuda.get_device_name(dev) if dev.startswith('cuda') else f'CPU ({os.cpu_count()} cores)'
    print(f"bench on {machine}, size={size}, batch={batch_size}, torch {torch.__version__}")
    print(table([r for r in rows if 'step_ms' in r], compare))
    for r in rows:
        if 'error' in r:
            print(f"- {r['variant']}: not measured ({r['error']})")
    if out:
        os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
        with open(out + '.tmp', 'w') as f:
            json.dump({'machine': machine, 'size': size, 'batch_size': batch_size, 'rows': rows}, f, indent=2)
        os.replace(out + '.tmp', out)


if __name__ == '__main__':
    configurator.run_main(main)
