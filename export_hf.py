"""Checkpoint -> Hugging Face transformers folder (logits checked), and transformers weights -> GPT.

    python export_hf.py --ckpt=out/quickstart_s1337 --out=hf/quickstart
    python train.py config/quickstart.py --init_from=hf:hf/quickstart      # fine-tune an exported folder
    python train.py config/gpt2_124m.py --init_from=gpt2                   # published GPT-2 (needs the hub)

Layouts `transformers` has, and the flags that select them:
    GPT2LMHeadModel    pos_emb='learned', norm='layernorm', mlp='gelu'   (bias=False -> zero biases)
    LlamaForCausalLM   pos_emb='rope', norm='rmsnorm', mlp='swiglu'       (bias -> attention_bias, mlp_bias)
    Qwen3ForCausalLM   the Llama flags + qk_norm=True, bias=False
with attn='softmax', ngpt=False, diff_input=False, n_encoder_layer=0; anything else is refused.

The folder gets config.json, model.safetensors, generation_config.json, the tokenizer (tokenizer.json
converted from the run's own byte / bpe / gpt2 tokenizer, plus vocab.json + merges.txt for gpt2) and
gptlab.json (the run's exact tokenizer spec, so init_from='hf:DIR' restores it). The vocabulary stays
padded (the model's vocab_size), so logits have the same shape on both sides. Everything is written
to DIR.tmp, loaded back with transformers, compared on a few sequences, then renamed to DIR.
"""
import json
import math
import os
import shutil
import sys

import torch

import configurator
from configurator import Range, Text, UserError

ckpt: Text('checkpoint file or run directory') = ''
out: Text('output folder') = ''  # must not exist unless force=True
force: bool = False  # replace an existing out folder (only one export_hf.py wrote)
tol: Range(0) = 1e-4  # max |logit difference| allowed between the checkpoint and the transformers model
check_seqs: Range(1) = 4  # sequences compared after writing

EXPORTABLE = ("GPT-2 (pos_emb='learned', norm='layernorm', mlp='gelu'), "
              "Llama (pos_emb='rope', norm='rmsnorm', mlp='swiglu'), "
              "Qwen3 (the Llama flags + qk_norm=True, bias=False); all with attn='softmax', ngpt=False, "
              "diff_input=False, n_encoder_layer=0")
GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')


def _need_transformers():
    try:
        import transformers
        import safetensors  # noqa: F401
    except ImportError:
        raise UserError("Hugging Face interop needs transformers and safetensors: pip install -r requirements.txt")
    transformers.utils.logging.disable_progress_bar()  # our own lines say what was loaded and written
    transformers.utils.logging.set_verbosity_error()


def hf_arch(mc):
    """'gpt2' | 'llama' | 'qwen3' for a GPTConfig dict, or a one-line UserError listing what can be exported."""
    from model import GPTConfig
    handled = ('vocab_size', 'block_size', 'n_layer', 'n_head', 'n_embd', 'dropout', 'bias', 'tie_embeddings',
               'pos_emb', 'rope_theta', 'norm', 'mlp', 'qk_norm')
    # every other flag (attn, ngpt, diff_input, n_encoder_layer, and any flag added later) must be off
    default = GPTConfig().to_dict()
    bad = [f"{k}={v!r}" for k, v in mc.items() if k not in handled and v != default.get(k)]
    layout = (mc['pos_emb'], mc['norm'], mc['mlp'])
    arch = None
    if layout == ('learned', 'layernorm', 'gelu') and not mc['qk_norm']:
        arch = 'gpt2'
    elif layout == ('rope', 'rmsnorm', 'swiglu'):
        arch = 'qwen3' if mc['qk_norm'] else 'llama'
        if mc['qk_norm'] and mc['bias']:
            bad.append("bias=True with qk_norm=True (Qwen3 has no MLP biases)")
    else:
        bad.append(f"pos_emb={mc['pos_emb']!r}, norm={mc['norm']!r}, mlp={mc['mlp']!r}"
                   + (", qk_norm=True" if mc['qk_norm'] else ''))
    if bad:
        raise UserError(f"cannot export a model with {'; '.join(bad)} to transformers; exportable: {EXPORTABLE}")
    return arch


def swiglu_hidden(n_embd):
    return 64 * math.ceil(8 * n_embd / 3 / 64)  # as model.MLP


# ----------------------------------------------------------------------------- configs

def hf_config(mc, tok):
    """transformers config object for a GPTConfig dict and the run's tokenizer."""
    from transformers import GPT2Config, LlamaConfig, Qwen3Config
    arch = hf_arch(mc)
    ids = dict(bos_token_id=tok.eot_id, eos_token_id=tok.eot_id, pad_token_id=tok.pad_id,
               vocab_size=mc['vocab_size'], tie_word_embeddings=mc['tie_embeddings'])
    if arch == 'gpt2':
        return GPT2Config(n_positions=mc['block_size'], n_embd=mc['n_embd'], n_layer=mc['n_layer'],
                          n_head=mc['n_head'], n_inner=4 * mc['n_embd'], activation_function='gelu',  # exact gelu
                          resid_pdrop=mc['dropout'], embd_pdrop=mc['dropout'], attn_pdrop=mc['dropout'],
                          layer_norm_epsilon=1e-5, **ids)
    common = dict(hidden_size=mc['n_embd'], intermediate_size=swiglu_hidden(mc['n_embd']),
                  num_hidden_layers=mc['n_layer'], num_attention_heads=mc['n_head'],
                  num_key_value_heads=mc['n_head'], head_dim=mc['n_embd'] // mc['n_head'], hidden_act='silu',
                  max_position_embeddings=mc['block_size'], rms_norm_eps=1e-6, rope_theta=mc['rope_theta'],
                  attention_bias=mc['bias'], attention_dropout=mc['dropout'], **ids)
    if arch == 'llama':
        return LlamaConfig(mlp_bias=mc['bias'], **common)
    return Qwen3Config(**common)


def config_from_hf(hc):
    """GPTConfig dict for a transformers config (GPT-2, Llama or Qwen3 layouts), or a UserError."""
    mt = hc.model_type
    if mt == 'gpt2':
        problems = []
        if (hc.n_inner or 4 * hc.n_embd) != 4 * hc.n_embd:
            problems.append(f"n_inner={hc.n_inner} (this model.py uses 4*n_embd)")
        if hc.activation_function not in ('gelu', 'gelu_new', 'gelu_pytorch_tanh'):
            problems.append(f"activation_function={hc.activation_function!r}")
        if getattr(hc, 'scale_attn_by_inverse_layer_idx', False) or getattr(hc, 'add_cross_attention', False):
            problems.append("scale_attn_by_inverse_layer_idx/add_cross_attention")
        if problems:
            raise UserError(f"cannot import this gpt2 config: {', '.join(problems)}; importable: {EXPORTABLE}")
        return dict(vocab_size=hc.vocab_size, block_size=hc.n_positions, n_layer=hc.n_layer, n_head=hc.n_head,
                    n_embd=hc.n_embd, dropout=0.0, bias=True, tie_embeddings=bool(hc.tie_word_embeddings),
                    pos_emb='learned', norm='layernorm', mlp='gelu')
    if mt in ('llama', 'qwen3'):
        d, h = hc.hidden_size, hc.num_attention_heads
        rope = getattr(hc, 'rope_parameters', None) or getattr(hc, 'rope_scaling', None) or {}
        theta = rope.get('rope_theta', getattr(hc, 'rope_theta', 10000.0))
        problems = []
        if hc.num_key_value_heads not in (None, h):
            problems.append(f"num_key_value_heads={hc.num_key_value_heads} (no grouped-query attention here)")
        if (getattr(hc, 'head_dim', None) or d // h) != d // h:
            problems.append(f"head_dim={hc.head_dim} != hidden_size/num_attention_heads")
        if hc.intermediate_size != swiglu_hidden(d):
            problems.append(f"intermediate_size={hc.intermediate_size} (this model.py uses {swiglu_hidden(d)})")
        if rope.get('rope_type', 'default') != 'default':
            problems.append(f"rope_type={rope.get('rope_type')!r}")
        if hc.hidden_act != 'silu' or abs(hc.rms_norm_eps - 1e-6) > 1e-12:
            problems.append(f"hidden_act={hc.hidden_act!r}, rms_norm_eps={hc.rms_norm_eps}")
        bias = bool(getattr(hc, 'attention_bias', False))
        if mt == 'llama' and bool(getattr(hc, 'mlp_bias', False)) != bias:
            problems.append("attention_bias != mlp_bias")
        if mt == 'qwen3' and (bias or getattr(hc, 'use_sliding_window', False)):
            problems.append("attention_bias or use_sliding_window")
        if problems:
            raise UserError(f"cannot import this {mt} config: {'; '.join(problems)}; importable: {EXPORTABLE}")
        return dict(vocab_size=hc.vocab_size, block_size=hc.max_position_embeddings, n_layer=hc.num_hidden_layers,
                    n_head=h, n_embd=d, dropout=0.0, bias=bias, tie_embeddings=bool(hc.tie_word_embeddings),
                    pos_emb='rope', rope_theta=float(theta), norm='rmsnorm', mlp='swiglu', qk_norm=(mt == 'qwen3'))
    raise UserError(f"cannot import model_type {mt!r}; importable: {EXPORTABLE}")


# ----------------------------------------------------------------------------- weights
# One table of (our name, HF name, transform) per layout; the inverse of each transform is used for import.

def _name_map(mc):
    """[(our key, hf key, kind)] where kind is 'same', 'T' (GPT-2 Conv1D, transposed), or a split
    ('q', 'k', 'v' of c_attn; 'gate', 'up' of c_fc)."""
    arch, L = hf_arch(mc), mc['n_layer']
    rows = []
    if arch == 'gpt2':
        rows += [('wte.weight', 'transformer.wte.weight', 'same'), ('wpe.weight', 'transformer.wpe.weight', 'same')]
        for i in range(L):
            p, q = f'h.{i}.', f'transformer.h.{i}.'
            for ln in ('ln_1', 'ln_2'):
                rows += [(p + ln + '.weight', q + ln + '.weight', 'same'), (p + ln + '.bias', q + ln + '.bias', 'zero')]
            for mod in ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'):
                rows += [(p + mod + '.weight', q + mod + '.weight', 'T'), (p + mod + '.bias', q + mod + '.bias', 'zero')]
        rows += [('ln_f.weight', 'transformer.ln_f.weight', 'same'), ('ln_f.bias', 'transformer.ln_f.bias', 'zero')]
    else:
        rows += [('wte.weight', 'model.embed_tokens.weight', 'same')]
        for i in range(L):
            p, q = f'h.{i}.', f'model.layers.{i}.'
            rows += [(p + 'ln_1.weight', q + 'input_layernorm.weight', 'same'),
                     (p + 'ln_2.weight', q + 'post_attention_layernorm.weight', 'same')]
            for w in ('weight', 'bias') if mc['bias'] else ('weight',):
                rows += [(p + f'attn.c_attn.{w}', q + f'self_attn.{x}_proj.{w}', x) for x in 'qkv']
                rows += [(p + f'attn.c_proj.{w}', q + f'self_attn.o_proj.{w}', 'same'),
                         (p + f'mlp.c_fc.{w}', q + f'mlp.gate_proj.{w}', 'gate'),
                         (p + f'mlp.c_fc.{w}', q + f'mlp.up_proj.{w}', 'up'),
                         (p + f'mlp.c_proj.{w}', q + f'mlp.down_proj.{w}', 'same')]
            if mc['qk_norm']:
                rows += [(p + 'attn.q_norm.weight', q + 'self_attn.q_norm.weight', 'same'),
                         (p + 'attn.k_norm.weight', q + 'self_attn.k_norm.weight', 'same')]
        rows += [('ln_f.weight', 'model.norm.weight', 'same')]
    if not mc['tie_embeddings']:
        rows += [('lm_head.weight', 'lm_head.weight', 'same')]
    return rows


_PARTS = {'q': (0, 3), 'k': (1, 3), 'v': (2, 3), 'gate': (0, 2), 'up': (1, 2)}  # (index, number of chunks)


def to_hf_state(mc, sd):
    """Our state dict -> HF state dict (tied lm_head left out, as transformers does)."""
    hf = {}
    for ours, theirs, kind in _name_map(mc):
        if kind == 'zero':  # bias=False in our GPT-2 layout: HF always has the bias, so it is zero
            ref = sd[ours.replace('.bias', '.weight')]
            t = sd[ours] if ours in sd else torch.zeros(ref.shape[0] if ref.dim() == 2 else ref.shape[-1])
        else:
            t = sd[ours]
            if kind == 'T':
                t = t.t()
            elif kind in _PARTS:
                i, n = _PARTS[kind]
                t = t.chunk(n, dim=0)[i]
        hf[theirs] = t.detach().float().contiguous().clone()
    return hf


def from_hf_state(mc, hf):
    """HF state dict -> our state dict for the GPTConfig dict mc (the inverse of to_hf_state)."""
    sd, parts = {}, {}
    for ours, theirs, kind in _name_map(mc):
        if theirs not in hf:
            raise UserError(f"transformers weights lack '{theirs}': not a {hf_arch(mc)} checkpoint of this shape")
        t = hf[theirs].detach().float()
        if kind == 'zero' and not mc['bias']:
            continue
        if kind == 'T':
            t = t.t()
        if kind in _PARTS:
            parts.setdefault(ours, {})[_PARTS[kind][0]] = t
            continue
        sd[ours] = t.contiguous().clone()
    for ours, p in parts.items():
        sd[ours] = torch.cat([p[i] for i in sorted(p)], dim=0).contiguous()
    if mc['tie_embeddings']:
        sd['lm_head.weight'] = sd['wte.weight']
    return sd


# ----------------------------------------------------------------------------- tokenizers

def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table (byte-level BPE vocab strings)."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def recover_merges(ranks):
    """tiktoken ranks -> ordered BPE merges: each token is what BPE over the lower ranks makes of its
    bytes in one last step, so its two parts are the merge (ordered by the token's rank)."""
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda x: x[1]):
        if len(tok) == 1:
            continue
        parts = [tok[i:i + 1] for i in range(len(tok))]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def hf_tokenizer(tok):
    """tokenizers.Tokenizer equal to our Tokenizer object (byte, gpt2, bpe): byte-level BPE whose ids
    are tiktoken's ranks, the spec's split pattern, and the three specials at their ids."""
    from tokenizers import Tokenizer, AddedToken, Regex, decoders, models, pre_tokenizers
    import data as datalib
    b2u = bytes_to_unicode()
    u = lambda bs: ''.join(b2u[b] for b in bs)
    spec = tok.spec
    if spec['kind'] == 'byte':
        model = models.BPE(vocab={u(bytes([b])): b for b in range(256)}, merges=[])
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    else:
        ranks = tok.enc._mergeable_ranks
        merges = [(u(a), u(b)) for a, b in recover_merges(ranks)]
        model = models.BPE(vocab={u(t): r for t, r in ranks.items()}, merges=merges, ignore_merges=True)
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(tok.enc._pat_str), behavior='isolated'),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t = Tokenizer(model)
    t.pre_tokenizer = pre
    t.decoder = decoders.ByteLevel()
    specials = {datalib.SPECIALS[0]: tok.eot_id, datalib.SPECIALS[1]: tok.pad_id, datalib.SPECIALS[2]: tok.sep_id}
    for s, i in sorted(specials.items(), key=lambda x: x[1]):
        t.add_special_tokens([AddedToken(s, special=True, normalized=False)])
        if t.token_to_id(s) != i:
            raise UserError(f"tokenizer conversion put {s} at id {t.token_to_id(s)}, the run uses {i}; "
                            f"export this checkpoint without a tokenizer is not supported")
    return t


def save_tokenizer(tok, out_dir):
    from transformers import PreTrainedTokenizerFast
    import data as datalib
    t = hf_tokenizer(tok)
    fast = PreTrainedTokenizerFast(tokenizer_object=t, bos_token=datalib.SPECIALS[0], eos_token=datalib.SPECIALS[0],
                                   pad_token=datalib.SPECIALS[1], sep_token=datalib.SPECIALS[2],
                                   model_max_length=int(1e30), clean_up_tokenization_spaces=False)
    fast.save_pretrained(out_dir)
    if tok.spec['kind'] == 'gpt2':  # the classic GPT-2 tokenizer files too (vocab.json + merges.txt)
        t.model.save(out_dir)


# ----------------------------------------------------------------------------- export

def compare_logits(model, hf_model, vocab, n_seqs, seed=0):
    """Max |logit difference| between our model and the transformers model on n_seqs random sequences
    of length min(block_size, 64) drawn from the tokenizer's vocabulary (float32, eval mode)."""
    g = torch.Generator().manual_seed(seed)
    T = min(model.config.block_size, 64)
    x = torch.randint(0, vocab, (n_seqs, T), generator=g)
    model.eval()
    hf_model.eval()
    with torch.no_grad():
        ours = model(x)[0].float()
        theirs = hf_model(input_ids=x).logits.float()
    return (ours - theirs).abs().max().item(), ours.abs().max().item()


def export(ckpt_path, out_dir, force_=False, tol_=1e-4, n_seqs=4):
    """Write the transformers folder for a checkpoint; returns the max logit difference."""
    _need_transformers()
    from transformers import AutoModelForCausalLM
    from checkpoint import load_checkpoint
    from model import GPT, GPTConfig
    import data as datalib
    c = load_checkpoint(ckpt_path)
    mc = c['model_config']
    arch = hf_arch(mc)  # refuse before anything is written
    if not out_dir:
        raise UserError("no output folder given; pass --out=DIR")
    if os.path.exists(out_dir) and not force_:
        raise UserError(f"'{out_dir}' already exists; pass --force=True to replace it or choose another --out")
    if os.path.exists(out_dir):
        why = not_replaceable(out_dir, ckpt_path)
        if why:
            raise UserError(f"--force=True would delete '{out_dir}', which {why}; export to another --out "
                            f"(--force only replaces a folder export_hf.py wrote)")
    model = GPT(GPTConfig.from_dict(mc))
    model.load_state_dict(c['model'])
    try:
        tok = datalib.get_tokenizer(c['tokenizer'])
    except datalib.DataError as e:
        if c['tokenizer'].get('kind') != 'gpt2':
            raise
        # offline without tiktoken's gpt2 files: the weights still go out, the tokenizer files do not
        print(f"notice: no tokenizer files written ({e}); add them with "
              f"AutoTokenizer.from_pretrained('gpt2').save_pretrained(DIR) where the hub is reachable")
        tok = _Gpt2Ids()
    model.float()
    config = hf_config(mc, tok)
    tmp = os.path.normpath(out_dir) + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        hf_model = AutoModelForCausalLM.from_config(config)
        missing, unexpected = hf_model.load_state_dict(to_hf_state(mc, model.state_dict()), strict=False)
        missing = [k for k in missing if not (k == 'lm_head.weight' and mc['tie_embeddings'])]
        if missing or unexpected:
            raise RuntimeError(f"weight names do not line up: missing {missing[:4]}, unexpected {unexpected[:4]}")
        hf_model.tie_weights()
        g = hf_model.generation_config
        g.bos_token_id, g.eos_token_id, g.pad_token_id = tok.eot_id, tok.eot_id, tok.pad_id
        g.do_sample, g.temperature, g.top_k = True, 0.8, 200  # sample.py's defaults
        hf_model.save_pretrained(tmp)  # config.json, model.safetensors, generation_config.json
        if arch != 'gpt2':  # transformers 4.x reads a top-level rope_theta (5.x: rope_parameters, which wins)
            with open(os.path.join(tmp, 'config.json')) as f:
                cj = json.load(f)
            cj['rope_theta'] = mc['rope_theta']
            with open(os.path.join(tmp, 'config.json'), 'w') as f:
                json.dump(cj, f, indent=2, sort_keys=True)
        if not isinstance(tok, _Gpt2Ids):
            save_tokenizer(tok, tmp)
        with open(os.path.join(tmp, 'gptlab.json'), 'w') as f:
            json.dump({'model_config': mc, 'tokenizer': tok.spec, 'source': os.path.abspath(ckpt_path),
                       'step': c.get('step'), 'architecture': type(hf_model).__name__}, f)
        # the check: load the written folder back with plain transformers
        back = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
        diff, scale = compare_logits(model, back, tok.vocab_size, n_seqs)
        if not diff <= tol_:
            raise UserError(f"exported {type(back).__name__} differs from the checkpoint: max |logit difference| "
                            f"{diff:.3g} > tol={tol_} (logits up to {scale:.3g}); nothing was written to {out_dir}")
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out_dir}: {type(back).__name__} ({arch} layout), {sum(p.numel() for p in back.parameters()):,} "
          f"parameters, vocab {mc['vocab_size']} (tokenizer {tok.spec['kind']}, {tok.vocab_size} ids)")
    print(f"check: max |logit difference| = {diff:.3g} on {n_seqs} sequences of {min(mc['block_size'], 64)} tokens "
          f"(logits up to {scale:.3g}; tol {tol_})")
    return diff


def not_replaceable(out_dir, ckpt_path):
    """Why --force must not delete out_dir ('' when it may): it replaces only a folder this script wrote (it
    has gptlab.json), never the checkpoint being exported or anything that holds a run or checkpoints."""
    from checkpoint import checkpoint_file
    src, dst = os.path.realpath(checkpoint_file(ckpt_path)), os.path.realpath(out_dir)
    if src == dst or src.startswith(dst + os.sep):
        return f"holds the checkpoint being exported ({ckpt_path})"
    if not os.path.isdir(out_dir):
        return "is not a folder"
    for root, dirs, files in os.walk(out_dir):
        if 'ckpt' in dirs or 'metrics.jsonl' in files or any(f.endswith('.pt') for f in files):
            return f"holds a run or checkpoints ({root})"
    if not os.path.isfile(os.path.join(out_dir, 'gptlab.json')):
        return "was not written by export_hf.py (no gptlab.json)"
    return ''


class _Gpt2Ids:
    """The ids of data.py's gpt2 tokenizer, for exporting when tiktoken's gpt2 files cannot be loaded."""
    spec, eot_id, pad_id, sep_id, vocab_size = {'kind': 'gpt2'}, 50256, 50257, 50258, 50259


# ----------------------------------------------------------------------------- import

def load_hf(source):
    """(GPTConfig dict, state dict, tokenizer spec) from 'gpt2'..'gpt2-xl' (the hub) or 'hf:DIR'.

    The vocabulary is padded to a multiple of 64 like the trainer does; the padded rows are the mean
    embedding (so the padded ids get an average, tiny probability and real tokens' logits are unchanged)."""
    _need_transformers()
    from transformers import AutoModelForCausalLM
    name = source[3:] if source.startswith('hf:') else source
    if source.startswith('hf:') and not os.path.isfile(os.path.join(name, 'config.json')):
        raise UserError(f"init_from='{source}': '{name}' is not a transformers folder (no config.json); "
                        f"make one with python export_hf.py --ckpt=... --out={name}")
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except OSError as e:
        raise UserError(f"cannot load '{name}' through transformers ({str(e).splitlines()[0][:160]}); "
                        f"the hub needs a network connection (or HF_HOME with the files cached)")
    mc = config_from_hf(hf_model.config)
    spec = None
    meta_path = os.path.join(name, 'gptlab.json')
    hf_sd = hf_model.state_dict()
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            saved = json.load(f)
        spec = saved['tokenizer']
        # a GPT-2 layout exported with bias=False carries zero biases: come back without them
        if (mc['pos_emb'] == 'learned' and saved['model_config'].get('bias') is False
                and all(not t.any() for k, t in hf_sd.items() if k.endswith('.bias'))):
            mc['bias'] = False
    elif mc['pos_emb'] == 'learned' and mc['vocab_size'] == 50257:
        spec = {'kind': 'gpt2'}  # the published GPT-2 vocabulary
    else:
        raise UserError(f"'{name}' has no gptlab.json with the tokenizer spec; only folders written by export_hf.py "
                        f"and GPT-2 (vocab 50257) can be imported")
    from model import GPTConfig
    full = GPTConfig(**mc).to_dict()
    sd = from_hf_state(full, hf_sd)
    act = getattr(hf_model.config, 'activation_function', 'gelu')
    if act != 'gelu':
        print(f"note: {name} uses activation {act!r} (tanh approximation); this model.py runs exact gelu, "
              f"like nanoGPT, so logits differ slightly from transformers'")
    V = full['vocab_size']
    padded = 64 * math.ceil(V / 64)
    if padded != V:
        for k in ('wte.weight', 'lm_head.weight'):
            if k in sd and not (k == 'lm_head.weight' and full['tie_embeddings']):
                w = sd[k]
                sd[k] = torch.cat([w, w.mean(0, keepdim=True).expand(padded - V, -1)])
        if full['tie_embeddings']:
            sd['lm_head.weight'] = sd['wte.weight']
        full['vocab_size'] = padded
    return full, sd, spec


HF_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')


def hf_weights(cfg, meta):
    """train.py's init_from='gpt2'.. or 'hf:DIR': the model flags come from the transformers config
    (dropout stays this run's; cfg is updated); the data must use the same tokenizer. Returns the
    state dict to load."""
    mc, sd, spec = load_hf(cfg['init_from'])
    if spec != meta['tokenizer']:
        name = lambda s: s.get('name', s.get('kind'))
        raise UserError(f"init_from='{cfg['init_from']}' uses tokenizer '{name(spec)}' but data '{cfg['data']}' was "
                        f"tokenized with '{name(meta['tokenizer'])}'; prepare the data with the same tokenizer")
    cfg.update({k: v for k, v in mc.items() if k != 'dropout'})
    return sd


def main():
    configurator.configure(globals())
    if not ckpt:
        raise UserError("no checkpoint given; pass --ckpt=<run dir or .pt file> --out=DIR")
    diff = export(ckpt, out, force, tol, check_seqs)
    return diff


if __name__ == '__main__':
    configurator.run_main(main)
