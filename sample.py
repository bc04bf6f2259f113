"""Sample from a checkpoint.

    python sample.py --ckpt=out/stdlib_4x128_learned_s1337 --prompt="def main("
    python sample.py --ckpt=out/run/ckpt/last.pt --file=prompt.txt --num_samples=3
    echo "import os" | python sample.py --ckpt=out/run --prompt=-        # prompt from stdin
    python sample.py --ckpt=out/samsum_encdec_s1337 --src="Anna: see you at 5?\nTom: ok"   # encoder-decoder

The tokenizer and model flags come from the checkpoint: no config file or data needed.
"""
import sys

import torch

import configurator
from configurator import Match, Range, Text, UserError

ckpt: Text('checkpoint file or run directory') = ''  # a run directory uses <run>/ckpt/last.pt
prompt: Text('prompt text') = ''  # '-' reads stdin; '' starts from end-of-text
file: Text('prompt file') = ''  # read the prompt from this file instead
src: Text('source text') = ''  # encoder-decoder checkpoints: the source text the encoder reads
num_samples: Range(1) = 1
max_new_tokens: Range(1) = 200
temperature: Range(0) = 0.8  # 0 = greedy (the most likely token)
top_k: Range(0) = 200  # sample among the top_k most likely tokens; 0 = all
seed: Range(0) = 1337
device: Match(r'auto|cpu|mps|cuda(:\d+)?', "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") = 'auto'


def stream_sample(model, tokenizer, prompt_text, max_new_tokens, temperature=0.8, top_k=200, seed=1337,
                  device='cpu', out=sys.stdout, src_text=''):
    """Generate after prompt_text, printing text as it is produced. Returns the generated ids.
    Encoder-decoder models read src_text in the encoder; their decoder starts from <|sep|>."""
    encdec = model.config.n_encoder_layer > 0
    if encdec and not src_text:
        raise UserError(f"this is an encoder-decoder checkpoint (n_encoder_layer={model.config.n_encoder_layer}): "
                        f"pass the source text with --src=...")
    if src_text and not encdec:
        raise UserError("--src is for encoder-decoder checkpoints; this model is decoder-only: use --prompt")
    start = [tokenizer.sep_id] if encdec else ([] if prompt_text else [tokenizer.eot_id])
    ids = start + (tokenizer.encode(prompt_text) if prompt_text else [])
    src_ids = (torch.tensor([tokenizer.encode(src_text)[-model.config.block_size:]], dtype=torch.long, device=device)
               if encdec else None)
    bs = model.config.block_size
    if len(ids) > bs:  # every model sees at most block_size tokens at once
        print(f"[notice: prompt has {len(ids)} tokens, more than block_size={bs}; using its last {bs}]",
              file=sys.stderr)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    new, printed = [], ''
    out.write(prompt_text)

    def on_token(nxt):
        nonlocal printed
        new.append(int(nxt[0, 0]))
        text = tokenizer.decode(new)
        if not text.endswith('\ufffd'):  # wait for the rest of a multi-byte character
            out.write(text[len(printed):])
            out.flush()
            printed = text

    model.eval()
    with torch.no_grad():
        model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, generator=gen, on_token=on_token,
                       src=src_ids)
    out.write(tokenizer.decode(new)[len(printed):] + '\n')
    out.flush()
    return new


def main():
    configurator.configure(globals())
    from checkpoint import load_checkpoint, model_from_checkpoint
    if not ckpt:
        raise UserError("no checkpoint given; pass --ckpt=<run dir or .pt file>")
    if file:
        try:
            with open(file, encoding='utf-8') as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read prompt file '{file}': {e}")
        if not text:  # an empty file is a mistake more often than a wish for an unconditional sample
            raise UserError(f"prompt file '{file}' is empty; write the prompt into it, or pass --prompt='' "
                            f"for an unconditional sample")
    elif prompt == '-':
        text = sys.stdin.read()
        if not text:
            raise UserError("--prompt=- read an empty stdin; pipe the prompt in (echo 'def f(' | python sample.py "
                            "... --prompt=-), or pass --prompt='' for an unconditional sample")
    else:
        text = prompt  # an explicit --prompt='' means: start from end-of-text
    dev = device if device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    model, tokenizer = model_from_checkpoint(load_checkpoint(ckpt))
    model.to(dev)
    if top_k > tokenizer.vocab_size:
        print(f"[notice: top_k={top_k} is above the vocabulary ({tokenizer.vocab_size}); clamped]", file=sys.stderr)
    for i in range(num_samples):
        if num_samples > 1:
            print(f'--- sample {i + 1}/{num_samples} ---')
        stream_sample(model, tokenizer, text, max_new_tokens, temperature, min(top_k, tokenizer.vocab_size),
                      seed + i, dev, src_text=src)


if __name__ == '__main__':
    configurator.run_main(main)
