"""Algorithmic tasks: generators, id/ood ranges, exact match, greedy decoding, mixing into pretraining,
perplexity by position."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import data as datalib
import eval_tasks
import objectives
from configurator import UserError
from eval_tasks import ALGO_TASKS, algo_example, exact_match, greedy_continuation
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BYTE = datalib.get_tokenizer({'kind': 'byte'})


def items_of(text):
    return text.split()


def test_id_and_ood_ranges_are_disjoint():
    for task, (id_range, ood_range) in ALGO_TASKS.items():
        assert id_range and ood_range and not set(id_range) & set(ood_range), task
        assert max(id_range) < min(ood_range), task  # out of distribution = longer / farther
    assert ALGO_TASKS['passkey'][0] == (0.25, 0.5, 0.75, 1.0) and ALGO_TASKS['passkey'][1] == (1.5, 2.0)


@pytest.mark.parametrize('split', ['id', 'ood'])
def test_generators_produce_correct_answers_in_their_range(split):
    rng = np.random.Generator(np.random.PCG64(0))
    filler = np.frombuffer(b'lorem ipsum dolor sit amet ' * 400, dtype=np.uint8).astype(np.int64)
    context = 256
    rng_range = lambda t: ALGO_TASKS[t][0 if split == 'id' else 1]
    for _ in range(40):
        for task in ALGO_TASKS:
            prompt_ids, answer = algo_example(task, split, rng, BYTE, context, filler)
            prompt, ans = BYTE.decode(prompt_ids), items_of(answer)
            if task in ('reverse', 'sort', 'simple_copy'):
                q = items_of(prompt.split(':')[1].rstrip('='))
                assert len(q) in rng_range(task)
                want = {'reverse': q[::-1], 'sort': sorted(q), 'simple_copy': q}[task]
                assert ans == want and all(len(x) == 1 for x in q)
                if task == 'sort':
                    assert len(set(q)) == len(q)
            elif task == 'no_carry_add':
                a, b = (items_of(p) for p in prompt.split(':')[1].rstrip('=').split('+'))
                assert len(a) == len(b) and len(a) in rng_range(task)
                assert all(int(d) <= 4 for d in a + b) and a[0] != '0' and b[0] != '0'
                assert int(''.join(ans)) == int(''.join(a)) + int(''.join(b))  # no carries: digit-wise sums
            else:  # distance tasks: the answer is stated at the start, asked at the end, length = knob x context
                head = prompt.split('\n')[0]
                assert items_of(head)[-len(ans) - 1:-1] == ans
                assert (len(ans) == 5) if task == 'copy_distance' else (1 <= len(ans) <= 5)
                assert prompt.endswith('=')
                total = len(prompt_ids) + len(BYTE.encode(answer + '\n'))
                assert any(total == round(k * context) for k in rng_range(task)), total


def test_exact_match_hand_cases():
    assert exact_match(' 4 3 2 1\nreverse : a b =', ' 4 3 2 1')
    assert exact_match('4 3 2 1', ' 4 3 2 1')
    assert not exact_match(' 4 3 2', ' 4 3 2 1')
    assert not exact_match(' 4 3 2 1 0\n', ' 4 3 2 1')
    assert not exact_match('\n 4 3 2 1', ' 4 3 2 1')


class ScriptedModel(torch.nn.Module):
    """Emits a fixed token sequence greedily (whatever the prompt): a hand-checkable decoder."""

    def __init__(self, script):
        super().__init__()
        self.script, self.h, self.w = script, [None], torch.nn.Parameter(torch.zeros(1))
        self.calls = 0
        self.config = GPTConfig()  # (pos_random=0: positions from start_pos, as in a plain model)

    def hidden(self, idx, start_pos=0, caches=None, src=None, pos=None):
        return idx.float()[..., None]

    def lm_head(self, x):
        out = torch.zeros(x.size(0), 300)
        out[:, self.script[min(self.calls, len(self.script) - 1)]] = 1.0
        self.calls += 1
        return out


def test_greedy_continuation_stops_at_newline_or_at_first_mismatch():
    m = ScriptedModel(BYTE.encode(' 4 3 2 1\nmore'))
    pred = greedy_continuation(m, BYTE, BYTE.encode('reverse : 1 2 3 4 ='), ' 4 3 2 1', 20)
    assert pred == ' 4 3 2 1\n' and exact_match(pred, ' 4 3 2 1')
    m = ScriptedModel(BYTE.encode(' 4 3 9 1\n'))
    pred = greedy_continuation(m, BYTE, [1, 2], ' 4 3 2 1', 20)
    assert pred == ' 4 3 9' and m.calls == 6 and not exact_match(pred, ' 4 3 2 1')


def test_loss_by_position_matches_model_loss_and_learned_has_no_ood_ppl():
    torch.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, 64, 2000)
    for pos_emb in ('rope', 'learned'):
        m = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16, pos_emb=pos_emb))
        curve = eval_tasks.loss_by_position(m, tokens, 16, 3)
        x = torch.from_numpy(tokens[:49].astype(np.int64))
        _, loss = m(torch.stack([x[i * 16:i * 16 + 16] for i in range(3)]),
                    torch.stack([x[i * 16 + 1:i * 16 + 17] for i in range(3)]))
        assert np.mean(curve) == pytest.approx(loss.item(), rel=1e-5)
        ppl, curve = eval_tasks.position_perplexity(m, tokens, 3)
        assert len(curve) == (16 if pos_emb == 'learned' else 64)
        assert (ppl['2x'] is None) == (pos_emb == 'learned') and ppl['1x'] > 1


@pytest.fixture(scope='module')
def algo_data(tiny_data):
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'prepare', 'algorithmic.py'), '--data=tiny',
                        f'--data_root={tiny_data}', '--block_size=32', '--n_examples=300'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return os.path.join(tiny_data, 'algorithmic_tiny_32')


def test_algo_mix_batches_are_deterministic_and_mix_at_the_ratio(tiny_data, algo_data):
    cfg = dict(data='tiny', data_root=tiny_data, algo_data=os.path.basename(algo_data), algo_mix=0.25,
               block_size=32, batch_size=64, seed=3, vocab_size=320, objective='lm')
    d = objectives.open_objective_data(cfg, os.path.join(tiny_data, 'tiny'), 'train')
    a, b = objectives.objective_batch(cfg, d, 7), objectives.objective_batch(cfg, d, 7)
    assert torch.equal(a['x'], b['x']) and torch.equal(a['y'], b['y'])
    assert torch.equal(a['x'][:, 1:], a['y'][:, :-1])
    plain_x, _ = datalib.get_lm_batch(d['shards'], 32, 64, 3, 7)
    mixed = [r for r in range(64) if not torch.equal(a['x'][r], plain_x[r])]
    assert 0 < len(mixed) < 64
    starts = ('reverse :', 'sort :', 'copy :', 'add :', 'pass key', 'items')
    assert all(BYTE.decode(a['x'][r].tolist()).startswith(starts) for r in mixed)  # packed from a record start
    rows = [len([r for r in range(64) if not torch.equal(objectives.objective_batch(cfg, d, i)['x'][r],
                                                          datalib.get_lm_batch(d['shards'], 32, 64, 3, i)[0][r])])
            for i in range(8)]
    assert 0.15 < sum(rows) / (8 * 64) < 0.35
    with pytest.raises(UserError, match='block_size'):
        objectives.open_objective_data({**cfg, 'block_size': 64}, os.path.join(tiny_data, 'tiny'), 'train')


def test_algorithmic_accuracy_rows_on_a_small_model(tiny_data):
    torch.manual_seed(0)
    filler = np.asarray(datalib.open_split(os.path.join(tiny_data, 'tiny'), 'val')[0])
    m = GPT(GPTConfig(vocab_size=320, block_size=160, n_layer=1, n_head=2, n_embd=16, pos_emb='learned'))
    rows = eval_tasks.algorithmic_accuracy(m, BYTE, filler, n=2, fewshot=1, seed=0)
    assert [r['task'] for r in rows] == list(ALGO_TASKS)
    by = {r['task']: r for r in rows}
    assert by['passkey']['out_dist'] is None  # longer than block_size: not evaluable with learned positions
    assert by['reverse']['out_dist'] == 0.0 and by['reverse']['in_dist'] == 0.0  # an untrained model
