"""Interactive attention explorer: one self-contained HTML page (no server, no network) with every
attention map of a checkpoint on one input, read through the model's recording hook (model.record()).

    python analysis/attention_explorer.py --ckpt=out/run --prompt="def main("
    python analysis/attention_explorer.py --ckpt=out/samsum_encdec_s1337 --src="Anna: at 5?\nTom: ok" --prompt="Anna"
    python analysis/attention_explorer.py --ckpt=out/samsum_encdec_s1337 --data=samsum --split=val --index=3

The page: pick a map kind, a layer and a head (or the mean over heads); the matrix is drawn as a heatmap
with the tokens on both axes; hovering or clicking a query token shades the keys it attends to by weight.
Kinds: decoder self-attention; attn='diff': both softmax maps, their difference and lambda; attn='linear':
the normalized kernel weights; encoder-decoder: encoder self-attention and cross-attention too.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import configurator  # noqa: E402
from configurator import Range, Text, UserError  # noqa: E402
import data as datalib  # noqa: E402

ckpt: Text('checkpoint file or run directory') = ''
prompt: Text('decoder input text') = ''  # (encoder-decoder: the start of the target, after [SEP])
src: Text('source text for the encoder') = ''  # encoder-decoder checkpoints: the source text the encoder reads
data: Text('data set name under data_root, or a path') = ''  # or take an example from a prepared data set
data_root: Text('folder of data sets') = 'data'
split: Text('split name of the data set') = 'val'
index: Range(0) = 0               # record number (seq2seq/records sets) or window number (plain LM shards)
max_tokens: Range(1) = 96         # longest sequence shown; a data example is cut to it (source: its end, target:
                                  # its start)
out: Text('HTML path') = ''       # '' = <run dir>/attention_explorer.html
RULES = [('not data or not (prompt or src)', 'pass either --data=... --index=N or --prompt/--src text, not both')]

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'attention_explorer.html')


def token_labels(tokenizer, ids):
    """One readable string per token (specials named, undecodable pieces of a character as <id>)."""
    names = {tokenizer.eot_id: '<eot>', tokenizer.sep_id: '<sep>', tokenizer.pad_id: '<pad>'}
    labels = []
    for i in ids:
        t = names.get(int(i)) or tokenizer.decode([int(i)])
        labels.append(t if t and '\ufffd' not in t else f'<{int(i)}>')
    return labels


def example_from_data(model, objective, data_dir, split_name, i, limit):
    """(src ids or None, decoder input ids) of example i, built as the trainer builds it for the checkpoint's
    objective (None, unknown: the data's records if it has them, else its LM shards)."""
    cfg = model.config
    meta = datalib.load_meta(data_dir)
    where = f"'{split_name}' of {data_dir}"
    has_seq2seq = os.path.isfile(datalib.seq2seq_path(data_dir, split_name)[:-4] + '.json')
    if cfg.n_encoder_layer or (has_seq2seq and objective in ('seq2seq', None)):
        recs = datalib.open_seq2seq(data_dir, split_name, cfg.vocab_size)
        if not 0 <= i < len(recs):
            raise UserError(f"--index={i} is outside the {len(recs)} records of {where}")
        form = 'encdec' if cfg.n_encoder_layer else 'concat'
        x, _, s = datalib.seq2seq_row(recs[i]['src'], recs[i]['tgt'], form, cfg.block_size, recs.ids)
        return (s[-limit:], x[:limit]) if cfg.n_encoder_layer else (None, x[-limit:])
    if cfg.n_encoder_layer:
        raise UserError(f"{data_dir} has no seq2seq records for split '{split_name}'; an encoder-decoder "
                        f"checkpoint needs source/target records (prepare/samsum.py, prepare/tiny_textbooks.py)")
    if objective in ('records', None) and os.path.isfile(os.path.join(data_dir, f'{split_name}.json')):
        recs = datalib.open_records(data_dir, split_name, cfg.vocab_size)
        if not 0 <= i < len(recs):
            raise UserError(f"--index={i} is outside the {len(recs)} records of {where}")
        return None, [int(t) for t in recs[i][recs.fields[0]][:limit]]
    if split_name not in meta['splits']:
        raise UserError(f"no '{split_name}' split in {data_dir}; available: {', '.join(meta['splits'])}")
    tokens = np.concatenate([np.asarray(s) for s in datalib.open_split(data_dir, split_name, cfg.vocab_size)])
    n = len(tokens) // limit
    if not 0 <= i < n:
        raise UserError(f"--index={i} is outside the {n} windows of {limit} tokens in {where}")
    return None, [int(t) for t in tokens[i * limit:(i + 1) * limit]]


def example_from_text(model, tokenizer, prompt_text, src_text, limit):
    encdec = model.config.n_encoder_layer > 0
    if encdec and not src_text:
        raise UserError(f"this is an encoder-decoder checkpoint (n_encoder_layer={model.config.n_encoder_layer}): "
                        f"pass the source text with --src=... (or --data=... --index=N)")
    if src_text and not encdec:
        raise UserError("--src is for encoder-decoder checkpoints; this model is decoder-only: use --prompt")
    if not encdec and not prompt_text:
        raise UserError("nothing to look at: pass --prompt=... (or --data=... --index=N)")
    src_ids = tokenizer.encode(src_text) if encdec else None
    x = ([tokenizer.sep_id] if encdec else []) + (tokenizer.encode(prompt_text) if prompt_text else [])
    for name, ids in (('--src', src_ids), ('--prompt', x)):
        if ids is not None and len(ids) > limit:
            raise UserError(f"{name} is {len(ids)} tokens long, more than {limit} (max_tokens, at most block_size): "
                            f"shorten it or raise --max_tokens")
        if ids is not None and not ids:
            raise UserError(f"{name} encodes to no tokens")
    return src_ids, x


@torch.no_grad()
def record(model, x, src_ids=None):
    """Every map of one example through the recording hook: {name: (H, T, S) array or scalar}."""
    model.eval()
    with model.record() as rec:
        model(torch.tensor([x]), src=None if src_ids is None else torch.tensor([src_ids]))
    return {k: v[0].float().numpy() if v.dim() else float(v) for k, v in rec.items()
            if not k.endswith(('.mlp', '.hidden', '.logits'))}  # (maps only)


def view_kinds(cfg):
    """(record name pattern, id, title, query tokens, key tokens, signed, what it shows) of this model."""
    kinds = []
    if cfg.n_encoder_layer:
        kinds.append(('enc{}.attn', 'enc', 'encoder self-attention', 'src', 'src', False,
                      'Source tokens attending to every source token (no causal mask). Rows sum to 1.'))
    if cfg.attn == 'diff':
        kinds += [('layer{}.attn', 'diff', 'differential map  A1 - lambda*A2', 'tgt', 'tgt', True,
                   'What the head uses: the first softmax map minus lambda times the second (rows sum to 1 - lambda); '
                   'red = positive, blue = negative.'),
                  ('layer{}.attn1', 'attn1', 'softmax map A1', 'tgt', 'tgt', False, 'First softmax map of each head (rows sum to 1).'),
                  ('layer{}.attn2', 'attn2', 'softmax map A2 (subtracted)', 'tgt', 'tgt', False,
                   'Second softmax map of each head, subtracted with weight lambda (rows sum to 1).')]
    elif cfg.attn == 'linear':
        kinds.append(('layer{}.attn', 'self', 'linear attention: normalized kernel weights', 'tgt', 'tgt', False,
                      'phi(q_t).phi(k_s) / sum over s\' <= t of phi(q_t).phi(k_s\'), phi = elu + 1: the weight each '
                      'earlier token gets in the output (rows sum to 1).'))
    else:
        kinds.append(('layer{}.attn', 'self', 'decoder self-attention' if cfg.n_encoder_layer else 'self-attention',
                      'tgt', 'tgt', False, 'Causal softmax attention: each token over itself and the tokens before it. Rows sum to 1.'))
    if cfg.n_encoder_layer:
        kinds.append(('layer{}.cross', 'cross', 'cross-attention (decoder -> encoder)', 'tgt', 'src', False,
                      'Decoder tokens (queries) attending to the encoder output of each source token. Rows sum to 1.'))
    return kinds


def build_payload(model, tokenizer, x, src_ids, title):
    """The page's data: tokens and, per kind, the maps of every layer and head, (L, H, Tq, Tk) lists."""
    cfg = model.config
    rec = record(model, x, src_ids)
    views = []
    for pattern, vid, name, q, k, signed, desc in view_kinds(cfg):
        n = cfg.n_encoder_layer if vid == 'enc' else cfg.n_layer
        maps = [rec[pattern.format(i)] for i in range(n)]
        lam = [rec[f'layer{i}.lambda'] for i in range(n)] if cfg.attn == 'diff' else None
        views.append({'id': vid, 'name': name, 'q': q, 'k': k, 'signed': signed, 'causal': q == k == 'tgt', 'desc': desc, 'lambda': lam,
                      'maps': [np.round(m, 4).tolist() for m in maps]})
    tokens = {'tgt': token_labels(tokenizer, x)}
    if src_ids is not None:
        tokens['src'] = token_labels(tokenizer, src_ids)
    flags = [f"attn={cfg.attn}", f"{cfg.n_layer} layers", f"{cfg.n_head} heads", f"d={cfg.n_embd}", f"pos_emb={cfg.pos_emb}"]
    if cfg.n_encoder_layer:
        flags.insert(1, f"{cfg.n_encoder_layer} encoder layers")
    if cfg.ngpt:
        flags.insert(1, 'nGPT')
    return {'title': title, 'model': ', '.join(flags), 'params': model.num_params(), 'tokens': tokens,
            'axes': {'tgt': 'decoder input' if cfg.n_encoder_layer else 'tokens', 'src': 'source (encoder)'},
            'views': views}


def render(payload):
    with open(TEMPLATE, encoding='utf-8') as f:
        page = f.read()
    blob = json.dumps(payload, separators=(',', ':')).replace('</', '<\\/')  # a token may contain '</script>'
    return page.replace('/*PAYLOAD*/null', blob, 1)


def run_dir_of(ckpt_path):
    """A run directory, or the run a checkpoint file belongs to (<run>/ckpt/x.pt), or the file's folder."""
    if os.path.isdir(ckpt_path):
        return ckpt_path
    d = os.path.dirname(os.path.abspath(ckpt_path))
    return os.path.dirname(d) if os.path.basename(d) == 'ckpt' else d


def write_atomic(path, text):
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + '.tmp', 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(path + '.tmp', path)
    except OSError as e:
        raise UserError(f"cannot write '{path}': {e.strerror or e}")


def main():
    configurator.configure(globals())
    from checkpoint import load_checkpoint, model_from_checkpoint
    if not ckpt:
        raise UserError("no checkpoint given; pass --ckpt=<run dir or checkpoint file>")
    c = load_checkpoint(ckpt)
    if not isinstance(c, dict) or not {'model', 'model_config', 'tokenizer'} <= set(c):
        raise UserError(f"'{ckpt}' is not a checkpoint of this lab (no model/model_config/tokenizer entries)")
    try:
        model, tokenizer = model_from_checkpoint(c)
    except (RuntimeError, KeyError) as e:  # weights that do not fit the stored config
        raise UserError(f"'{ckpt}': the weights do not match the stored model config ({str(e).splitlines()[0][:150]})")
    limit = min(max_tokens, model.config.block_size)
    if data:
        data_dir = data if os.path.isdir(data) else os.path.join(data_root, data)
        objective = (c.get('config') or {}).get('objective')  # train.py's settings (absent in hand-made checkpoints)
        src_ids, x = example_from_data(model, objective, data_dir, split, index, limit)
        what = f"{os.path.basename(os.path.normpath(data_dir))} {split}[{index}]"
    else:
        src_ids, x = example_from_text(model, tokenizer, prompt, src, limit)
        what = 'prompt'
    name = os.path.basename(os.path.normpath(run_dir_of(ckpt)))
    path = out or os.path.join(run_dir_of(ckpt), 'attention_explorer.html')
    write_atomic(path, render(build_payload(model, tokenizer, x, src_ids, f"{name} · {what}")))
    print(f"wrote {path}")


if __name__ == '__main__':
    configurator.run_main(main)
