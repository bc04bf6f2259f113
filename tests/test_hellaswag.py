"""eval_tasks.py hellaswag: which tokens are scored (a model of known loss), acc vs acc_norm, a model trained
so that one ending is right, and the command line on local files with the hub's fields."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import data as datalib
from checkpoint import save_checkpoint
from eval_tasks import hellaswag_examples, hellaswag_losses
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BYTE = datalib.get_tokenizer({'kind': 'byte'})


def zero_model(block_size=64):
    """All weights 0: every logit is 0, so every scored token costs exactly ln(vocab_size) nats."""
    model = GPT(GPTConfig(vocab_size=320, block_size=block_size, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def test_only_ending_tokens_are_scored():
    model = zero_model()
    endings = ['ran home.', 'a', 'sat down on the mat.', 'ok']
    sums, counts = hellaswag_losses(model, BYTE, 'A man walks in and', endings)
    assert counts == [len(' ' + e) for e in endings]  # ' ' + ending, one byte token each: never the context's
    assert sums == pytest.approx([n * math.log(320) for n in counts], rel=1e-5)
    # a context longer than the block loses its start, never an ending token
    sums, counts = hellaswag_losses(zero_model(block_size=8), BYTE, 'x' * 50, ['ab', 'abcdef'])
    assert counts == [3, 7]


def cheap_x_model(k=10.0):
    """Every position predicts the same logits: k for 'x', 0 for every other token (ln_f's weight is 0, so the
    final hidden state is ln_f's bias, e_0; the tied head gives wte[:, 0]). So a target 'x' costs
    c - k nats and any other target c = log(e^k + V - 1), whatever the context."""
    model = zero_model()
    with torch.no_grad():
        model.ln_f.bias[0] = 1.0
        model.wte.weight[ord('x'), 0] = k
    return model, math.log(math.exp(k) + 319), k


def test_acc_sums_and_acc_norm_averages(tmp_path):
    """Known per-token losses: acc (summed loss) prefers few tokens, acc_norm (mean per token) prefers many
    cheap ones, so the two pick different endings; the labels decide which of them count."""
    model, c, k = cheap_x_model()
    endings = ['q', 'qqxxxxxxxxxx', 'qq', 'qqq']  # ' ' + ending: expensive tokens 2, 3, 3, 4; cheap 'x': 0, 10, 0, 0
    sums, counts = hellaswag_losses(model, BYTE, 'context', endings)
    assert counts == [2, 13, 3, 4]
    assert sums == pytest.approx([2 * c, 3 * c + 10 * (c - k), 3 * c, 4 * c], rel=1e-4)
    # acc picks ending 0 (2c), acc_norm ending 1 ((3c + 10 (c - k)) / 13); labels 0, 1, 1, 3
    rows = [{'ctx': 'context', 'endings': endings, 'label': label} for label in (0, 1, 1, 3)]
    src = tmp_path / 'hs.jsonl'
    src.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    ckpt = tmp_path / 'cheap_x.pt'
    save_checkpoint(str(ckpt), {'model': model.state_dict(), 'model_config': model.config.to_dict(),
                                'tokenizer': BYTE.spec})
    r = subprocess.run([sys.executable, 'eval_tasks.py', 'hellaswag', f'--ckpt={ckpt}', f'--source={src}',
                        '--limit=3', f'--out={tmp_path / "res.json"}'], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(tmp_path / 'res.json'))
    assert (res['examples'], res['acc'], res['acc_norm']) == (3, round(1 / 3, 4), round(2 / 3, 4))  # --limit=3
    assert 'acc_norm' in r.stdout and 'hellaswag' in r.stdout
    r = subprocess.run([sys.executable, 'eval_tasks.py', 'hellaswag', f'--ckpt={ckpt}', '--source=missing.jsonl',
                        f'--out={tmp_path / "res2.json"}'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        'error: --source=missing.jsonl: no such file; pass a local .jsonl/.parquet file or folder, or a hub id']
    assert not (tmp_path / 'res2.json').exists()


def train_on(text, steps=150):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, block_size=32, n_layer=1, n_head=2, n_embd=32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.tensor(BYTE.encode(text))
    for step in range(steps):
        starts = torch.randint(0, len(ids) - 33, (8,))
        buf = torch.stack([ids[s:s + 33] for s in starts])
        _, loss = model(buf[:, :-1], buf[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_trained_model_finds_the_ending_it_learned(tmp_path):
    """Trained on one sentence, the model must prefer its ending wherever the label puts it (chance: 0.25)."""
    model = train_on('the cat sat on the mat. ' * 200)
    wrong = ['dog ran off.', 'sky is blue.', 'xq zv kw.']
    rows = []
    for label in range(4):
        endings = wrong[:label] + ['mat.'] + wrong[label:]
        rows.append({'ctx': 'the cat sat on the', 'endings': endings, 'label': str(label)})  # the hub's labels are strings
    import pyarrow as pa
    import pyarrow.parquet as pq
    src = tmp_path / 'default' / 'validation' / '0000.parquet'  # laid out as the hub's parquet conversion
    os.makedirs(src.parent)
    pq.write_table(pa.Table.from_pylist(rows), str(src))
    examples = hellaswag_examples(str(tmp_path / 'default'), 'validation')
    assert [e[2] for e in examples] == [0, 1, 2, 3]
    for ctx, endings, label in examples:
        sums, counts = hellaswag_losses(model, BYTE, ctx, endings)
        assert int(torch.tensor(sums).argmin()) == label
        assert int(torch.tensor([s / c for s, c in zip(sums, counts)]).argmin()) == label


@pytest.mark.parametrize('rows, message', [
    ([{'ctx': 'c', 'label': 0}], "lacks the field(s) ['endings']"),
    ([{'ctx': 'c', 'endings': ['a', 'b', 'c', 'd'], 'label': ''}], 'no label'),
    ([{'ctx': 'c', 'endings': ['a', 'b'], 'label': 0}], 'needs 4 endings'),
])
def test_bad_source_is_one_line(rows, message, tmp_path):
    src = tmp_path / 'bad.jsonl'
    src.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    with pytest.raises(datalib.configurator.UserError, match=message.replace('[', r'\[').replace('(', r'\(')
                       .replace(')', r'\)').replace(']', r'\]')) as e:
        hellaswag_examples(str(src), 'validation')
    assert '\n' not in str(e.value)
