"""Hugging Face interop: export round trips (GPT-2, Llama, Qwen3), tokenizer.json, import, safetensors checkpoints."""
import os
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip('transformers')
pytest.importorskip('safetensors')

import data  # noqa: E402
import export_hf  # noqa: E402
import checkpoint  # noqa: E402
from configurator import UserError  # noqa: E402
from inproc import one_error_line, run_many  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LAYOUTS = {
    'gpt2': dict(),
    'gpt2_nobias_untied': dict(bias=False, tie_embeddings=False),
    'llama': dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False, rope_theta=500.0),
    'llama_bias_untied': dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=True, tie_embeddings=False),
    'qwen3': dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False, qk_norm=True),
}
ARCH = {'gpt2': 'GPT2LMHeadModel', 'llama': 'LlamaForCausalLM', 'qwen3': 'Qwen3ForCausalLM'}


def sample_text():
    import argparse
    return open(argparse.__file__, encoding='utf-8').read()[:6000] + " naïve café 日本語 🙂  \n\n\t x 'll 'LL 1234567 ,,,"


def make_ckpt(path, tok_spec, **flags):
    """A tiny checkpoint whose weights are all far from their init (norm gains, biases included)."""
    tok = data.get_tokenizer(tok_spec)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64 * -(-tok.vocab_size // 64), block_size=32, n_layer=2, n_head=2, n_embd=32, **flags)
    m = GPT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    checkpoint.save_checkpoint(str(path), {'model': m.state_dict(), 'model_config': cfg.to_dict(), 'tokenizer': tok.spec,
                                      'step': 7})
    return m


def logits(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x) if isinstance(model, GPT) else model(input_ids=x)
    return (out[0] if isinstance(model, GPT) else out.logits).float()


@pytest.mark.parametrize('name', list(LAYOUTS))
def test_export_round_trip_logits(tmp_path, name):
    src = make_ckpt(tmp_path / 'c.pt', {'kind': 'byte'}, **LAYOUTS[name])
    out = tmp_path / 'hf'
    diff = export_hf.export(str(tmp_path / 'c.pt'), str(out))
    assert diff <= 1e-4
    for f in ('config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json', 'gptlab.json'):
        assert (out / f).is_file(), f
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert type(hf).__name__ == ARCH[name.split('_')[0]]
    x = torch.randint(0, 259, (3, 32), generator=torch.Generator().manual_seed(1))
    a, b = logits(src, x), logits(hf, x)
    assert a.shape == b.shape and a.abs().max() > 0.1
    assert (a - b).abs().max().item() <= 1e-4
    # the positional/rotary part really is carried: shifting the input changes the logits alike
    assert (logits(src, x[:, 1:]) - logits(hf, x[:, 1:])).abs().max().item() <= 1e-4


@pytest.mark.parametrize('kind', ['byte', 'bpe', 'bpe_gpt2_pattern'])
def test_exported_tokenizer_encodes_like_ours(tmp_path, kind):
    if kind == 'byte':
        spec = {'kind': 'byte'}
    else:
        docs = [open(m.__file__, encoding='utf-8').read() for m in (__import__('textwrap'), __import__('difflib'))]
        spec = data.train_bpe(docs, 700, **({'pattern': GPT2_PATTERN} if kind == 'bpe_gpt2_pattern' else {}))
    make_ckpt(tmp_path / 'c.pt', spec)
    export_hf.export(str(tmp_path / 'c.pt'), str(tmp_path / 'hf'))
    ours = data.get_tokenizer(spec)
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / 'hf' / 'tokenizer.json'))
    text = sample_text()
    ids = ours.encode(text)
    assert theirs(text)['input_ids'] == ids
    assert theirs.decode(ids) == text
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'hf'))
    assert auto(text)['input_ids'] == ids
    assert auto.eos_token_id == ours.eot_id and auto.pad_token_id == ours.pad_id


@pytest.mark.parametrize('name', ['gpt2_nobias_untied', 'llama', 'qwen3'])
def test_import_exported_folder_same_logits(tmp_path, name):
    src = make_ckpt(tmp_path / 'c.pt', {'kind': 'byte'}, **LAYOUTS[name])
    export_hf.export(str(tmp_path / 'c.pt'), str(tmp_path / 'hf'))
    mc, sd, spec = export_hf.load_hf(f"hf:{tmp_path / 'hf'}")
    assert spec == {'kind': 'byte'}
    assert {k: v for k, v in mc.items() if k != 'dropout'} == \
           {k: v for k, v in src.config.to_dict().items() if k != 'dropout'}
    m = GPT(GPTConfig(**mc))
    m.load_state_dict(sd)
    x = torch.randint(0, 259, (2, 32), generator=torch.Generator().manual_seed(2))
    assert (logits(m, x) - logits(src, x)).abs().max().item() <= 1e-5


def test_import_published_gpt2_layout(tmp_path):
    """A folder like the hub's gpt2 (Conv1D weights, biases, vocab 50257, no gptlab.json): the vocabulary
    is padded to a multiple of 64 and the real tokens' logits equal transformers'."""
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                  activation_function='gelu')
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(str(tmp_path / 'gpt2'))
    mc, sd, spec = export_hf.load_hf(f"hf:{tmp_path / 'gpt2'}")
    assert spec == {'kind': 'gpt2'} and mc['vocab_size'] == 50304 and mc['bias'] and mc['pos_emb'] == 'learned'
    m = GPT(GPTConfig(**mc))
    m.load_state_dict(sd)
    x = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(3))
    a, b = logits(m, x), logits(hf, x)
    assert (a[..., :50257] - b).abs().max().item() <= 1e-4


def test_init_from_hf_in_train(tiny_data, tmp_path):
    """train.py --init_from=hf:DIR takes the folder's flags and weights (lr 1e-30, as learning_rate must be > 0:
    updates far below float32 resolution, so the weights stay)."""
    src = make_ckpt(tmp_path / 'c.pt', {'kind': 'byte'}, **LAYOUTS['llama'])
    export_hf.export(str(tmp_path / 'c.pt'), str(tmp_path / 'hf'))
    args = [sys.executable, 'train.py', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={tmp_path / "out"}',
            f"--init_from=hf:{tmp_path / 'hf'}", '--max_iters=1', '--warmup_iters=0', '--learning_rate=1e-30', '--min_lr=0',
            '--batch_size=2',
            '--block_size=16', '--eval_iters=1', '--log_tensorboard=False', '--ckpt_format=safetensors']
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    run = os.path.join(tmp_path / 'out', 'tiny_2x32_rope_s1337')
    assert os.path.isfile(os.path.join(run, 'ckpt', 'last.safetensors'))
    ck = checkpoint.load_checkpoint(run)  # a run dir with a safetensors checkpoint
    assert ck['model_config']['pos_emb'] == 'rope' and ck['config']['init_from'].startswith('hf:')
    for k, v in src.state_dict().items():
        assert torch.equal(ck['model'][k], v), k
    # the tokenizer of the data must match the folder's
    bad = data.train_bpe([sample_text()], 300)
    import json
    meta = json.load(open(tmp_path / 'hf' / 'gptlab.json'))
    meta['tokenizer'] = bad
    json.dump(meta, open(tmp_path / 'hf' / 'gptlab.json', 'w'))
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 2 and 'tokenizer' in r.stderr and len(r.stderr.strip().splitlines()) == 1


UNSUPPORTED = [dict(pos_emb='sinusoidal'), dict(diff_input=True), dict(pos_emb='rope', norm='layernorm', mlp='swiglu'),
               dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', qk_norm=True, bias=True)]


@pytest.fixture(scope='module')
def unsupported_exports(tmp_path_factory):
    """export_hf.py on a checkpoint of each unsupported flag set, all in one process (tests/inproc.py)."""
    dirs = [tmp_path_factory.mktemp('unsupported') for _ in UNSUPPORTED]
    for d, flags in zip(dirs, UNSUPPORTED):
        make_ckpt(d / 'c.pt', {'kind': 'byte'}, **flags)
    return dirs, run_many([{'argv': ['export_hf.py', f"--ckpt={d / 'c.pt'}", f"--out={d / 'hf'}"]} for d in dirs])


@pytest.mark.parametrize('i', range(len(UNSUPPORTED)), ids=[str(f) for f in UNSUPPORTED])
def test_unsupported_flags_one_line_error(unsupported_exports, i):
    dirs, results = unsupported_exports
    tmp_path, r = dirs[i], results[i]
    assert r['rc'] == 2
    line = one_error_line(r)
    assert 'exportable: GPT-2' in line and 'Llama' in line and 'Qwen3' in line, r['stderr']
    assert not os.path.exists(tmp_path / 'hf') and not os.path.exists(str(tmp_path / 'hf') + '.tmp')
    # and the same for a config that is unknown to the mapping (e.g. grouped-query attention) on import
    with pytest.raises(UserError, match='importable'):
        export_hf.config_from_hf(transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                                          intermediate_size=128))


def test_safetensors_checkpoint_resume_equals_pt(tiny_data, tmp_path):
    from test_train import run_train, run_dir, weights
    common = ['--max_iters=12', '--eval_interval=6', '--dropout=0.1']
    run_train(common, tiny_data, tmp_path / 'a')
    run_train(common + ['--ckpt_format=safetensors', '--stop_after=6'], tiny_data, tmp_path / 'b')
    run_train(common + ['--ckpt_format=safetensors', '--init_from=resume'], tiny_data, tmp_path / 'b')
    b = run_dir(tmp_path / 'b')
    assert not os.path.exists(os.path.join(b, 'ckpt', 'last.pt'))
    assert os.path.isfile(os.path.join(b, 'ckpt', 'last.json'))  # the readable copy of the non-tensor part
    ck = checkpoint.load_checkpoint(b)
    wa = weights(run_dir(tmp_path / 'a'))
    assert ck['step'] == 12 and all(torch.equal(wa[k], ck['model'][k]) for k in wa)
    r = subprocess.run([sys.executable, 'sample.py', f'--ckpt={b}', '--max_new_tokens=5', '--prompt=def'],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith('def'), r.stderr[-500:]


def test_gpt2_hub_offline_error_is_one_line(tiny_data, tmp_path):
    """init_from='gpt2' goes through the hub; offline (forced here, so CI never downloads) it is one line."""
    r = subprocess.run([sys.executable, 'train.py', '--data=tiny', f'--data_root={tiny_data}',
                        f'--out_dir={tmp_path}', '--init_from=gpt2'], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1
    # (where the files happen to be cached, they load and the byte-level data is refused instead)
    assert ("cannot load 'gpt2'" in lines[0] and 'network' in lines[0]) or "tokenizer 'gpt2'" in lines[0]
    assert not os.listdir(tmp_path)


def test_gpt2_tokenizer_checkpoint_exports(tmp_path):
    """A gpt2-tokenizer run: tokenizer.json + vocab.json/merges.txt from tiktoken's ranks where tiktoken's
    gpt2 files load (CI), else the weights alone with a notice (offline)."""
    cfg = GPTConfig(vocab_size=50304, block_size=16, n_layer=1, n_head=2, n_embd=16)
    m = GPT(cfg)
    checkpoint.save_checkpoint(str(tmp_path / 'c.pt'), {'model': m.state_dict(), 'model_config': cfg.to_dict(),
                                                   'tokenizer': {'kind': 'gpt2'}, 'step': 0})
    assert export_hf.export(str(tmp_path / 'c.pt'), str(tmp_path / 'hf')) <= 1e-4
    try:
        ours = data.get_tokenizer({'kind': 'gpt2'})
    except data.DataError:
        assert not (tmp_path / 'hf' / 'tokenizer.json').exists()
        return
    for f in ('tokenizer.json', 'vocab.json', 'merges.txt'):
        assert (tmp_path / 'hf' / f).is_file()
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'hf'))
    text = sample_text()
    assert theirs(text)['input_ids'] == ours.encode(text)


def tree(d):
    """{relative path: bytes} of every file under d."""
    return {os.path.relpath(os.path.join(r, f), d): open(os.path.join(r, f), 'rb').read()
            for r, _, fs in os.walk(d) for f in fs}


def test_export_force_onto_its_own_run_exits_2_and_the_run_is_intact(tmp_path):
    """The issue's case, as a user types it: the run being exported is never deleted by --force."""
    run = tmp_path / 'out' / 'myrun'
    make_ckpt(run / 'ckpt' / 'last.pt', {'kind': 'byte'})
    (run / 'config.json').write_text('{"n_layer": 2}')
    (run / 'metrics.jsonl').write_text('{"event": "train", "step": 7}\n')
    before = tree(run)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'export_hf.py'), '--ckpt=out/myrun', '--out=out/myrun',
                        '--force=True'], cwd=tmp_path, capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0] == ("error: --force=True would delete 'out/myrun', which holds the checkpoint being exported "
                        "(out/myrun); export to another --out (--force only replaces a folder export_hf.py wrote)")
    assert tree(run) == before and sorted(os.listdir(tmp_path / 'out')) == ['myrun']


def test_export_force_replaces_only_its_own_folder(tmp_path):
    make_ckpt(tmp_path / 'c.pt', {'kind': 'byte'})
    other_run = tmp_path / 'run2'
    make_ckpt(other_run / 'ckpt' / 'last.pt', {'kind': 'byte'})
    user_dir = tmp_path / 'notes'
    user_dir.mkdir()
    (user_dir / 'todo.txt').write_text('mine')
    for dest, why in ((other_run, 'holds a run or checkpoints'), (user_dir, 'was not written by export_hf.py'),
                      (tmp_path, 'holds the checkpoint being exported')):
        before = tree(dest)
        with pytest.raises(UserError, match=f"--force=True would delete '{dest}', which {why}"):
            export_hf.export(str(tmp_path / 'c.pt'), str(dest), force_=True)
        assert tree(dest) == before
    export_hf.export(str(tmp_path / 'c.pt'), str(tmp_path / 'hf'))
    (tmp_path / 'hf' / 'stale.txt').write_text('from before')
    assert export_hf.export(str(tmp_path / 'c.pt'), str(tmp_path / 'hf'), force_=True) <= 1e-4  # its own: replaced
    assert not (tmp_path / 'hf' / 'stale.txt').exists() and (tmp_path / 'hf' / 'gptlab.json').is_file()
