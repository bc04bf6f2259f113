"""pe_lengen end to end in quick mode (through the launcher): data, runs, table, figures; its exact match
equals a per-example reference (eval_tasks.greedy_continuation + exact_match, and a cache-free greedy loop)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'analysis'))
sys.path.insert(0, os.path.join(ROOT, 'prepare'))
import data as datalib  # noqa: E402
import eval_tasks  # noqa: E402
import lengen  # noqa: E402  prepare/lengen.py
import pe_lengen  # noqa: E402  analysis/pe_lengen.py
from checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from analysis.study import fmt  # noqa: E402


@pytest.fixture(scope='module')
def quick_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('lengen')
    args = ['./launcher.sh', 'pe_lengen', '--quick=True', "--tasks=['copy']",
            "--encodings=['none', 'learned', 'alibi', 'rope+rand']", '--m_sweep=[11]', '--seeds=[1, 2]', f'--data_root={tmp / "data"}', f'--out_dir={tmp / "out"}', f'--figures_dir={tmp / "figs"}']
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return tmp, json.load(open(tmp / 'out' / 'results.json'))['results']


def test_targets_and_splits():
    rng = np.random.Generator(np.random.PCG64(0))
    ex = lengen.example('reverse', 5, rng)
    assert ex['tgt'] == ex['src'][::-1] and len(ex['src']) == 5
    assert lengen.target('sort', [3, 1, 3, 0]) == [0, 1, 3, 3]
    cfg = dict(task='copy', train_len=3, test_len=0, n_train=200, n_val=20, n_test=2, seed=1)
    s = lengen.build(cfg)
    assert {len(r['src']) for r in s['train']} == {1, 2, 3}  # training lengths 1..L only
    assert [len(r['src']) for r in s['test']] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]  # 1..2L, n_test each
    assert lengen.build(cfg) == s  # deterministic


def test_quick_study_outputs(quick_study):
    tmp, res = quick_study
    assert list(res) == ['copy'] and list(res['copy']) == ['none', 'learned', 'alibi', 'rope+rand', 'rope+rand11']
    for task in res.values():
        for per_seed in task.values():
            assert list(per_seed) == ['1', '2']
            for r in per_seed.values():
                assert sorted(int(n) for n in r['acc']) == list(range(1, 9))  # 1..2L with L = 4
                assert all(0 <= a <= 1 for a in r['acc'].values())
                assert all(r['acc'][n] <= r['token_acc'][n] <= 1 for n in r['acc'])  # a hit has every token right
                assert all(len(v) == 4 and all(-1 <= x <= 4 * 4 + 1 - int(n) for x in v) for n, v in r['answer_len'].items())
                assert len(r['entropy']) == 2 * 8 + 1  # 2L digits, [SEP], 2L answer digits
                assert len(r['entropy_id']) == 2 * 4 + 1
                for e in (r['entropy'], r['entropy_id']):  # position 0 sees one key: entropy 0; never above uniform
                    assert e[0] == pytest.approx(0, abs=1e-5)
                    assert all(0 <= x <= np.log(t + 1) + 1e-4 for t, x in enumerate(e))
    md = open(tmp / 'out' / 'results.md').read()
    assert md.count('| none |') == 3 and md.count('| learned |') == 3 and 'copy OOD (5..8)' in md  # accuracy, length, entropy
    # every +- cell of the accuracy table is the mean and std of the per-seed numbers in results.json
    pe_lengen.train_len = 4
    summary = pe_lengen.summarize(res)['copy']
    for arm in res['copy']:
        row = next(l for l in md.splitlines() if l.startswith(f'| {arm} |'))
        want = [fmt(summary[arm][k]) for k in ('id', 'ood', 'id_tok', 'ood_tok')]
        assert row == '| ' + ' | '.join([arm] + want) + ' |', (row, want)
    # the randomized arms trained with positions from [0, M): pos_random in their configs
    for arm, m in (('rope+rand', 64), ('rope+rand11', 11), ('alibi', 0)):
        cfg = json.load(open(tmp / 'out' / f'copy_L4_{arm}_s1' / 'config.json'))
        assert cfg['pos_random'] == m, arm
    for f in ('accuracy_vs_length_copy.png', 'attention_entropy_copy.png', 'answer_length.png', 'cliff_vs_M.png'):
        assert (tmp / 'figs' / f).stat().st_size > 5000, f
    assert open(tmp / 'figs' / 'results.md').read() == md
    # learned positions: the trained model has rows for every evaluated position (block_size covers 2L)
    cfg = json.load(open(tmp / 'out' / 'copy_L4_learned_s1' / 'config.json'))
    assert cfg['block_size'] == 4 * 4 + 1 and cfg['pos_emb'] == 'learned'
    # reused when run again with the same settings: no training
    r = subprocess.run(['./launcher.sh', 'pe_lengen', '--quick=True', "--tasks=['copy']",
                        "--encodings=['none', 'learned', 'alibi', 'rope+rand']", '--m_sweep=[11]', '--seeds=[1, 2]',
                        f'--data_root={tmp / "data"}', f'--out_dir={tmp / "out"}', f'--figures_dir={tmp / "figs2"}'], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and 'reusing' in r.stdout and '== training' not in r.stdout, r.stdout[-2000:]


def test_exact_match_equals_per_example_reference(quick_study):
    tmp, res = quick_study
    res = res['copy']['learned']['1']
    model, tok = model_from_checkpoint(load_checkpoint(str(tmp / 'out' / 'copy_L4_learned_s1')))
    model.eval()
    recs = datalib.open_seq2seq(str(tmp / 'data' / 'lengen_copy_L4'), 'test')
    # eval_tasks' text-level greedy decoding, one example at a time (the tokenizer decodes <|endoftext|> as a newline)
    by_len = {}
    for i in range(len(recs)):
        src, tgt = [int(t) for t in recs[i]['src']], [int(t) for t in recs[i]['tgt']]
        answer = tok.decode(tgt)
        pred = eval_tasks.greedy_continuation(model, tok, src + [tok.sep_id], answer, len(tgt) + 2)
        by_len.setdefault(len(src), []).append(eval_tasks.exact_match(pred, answer))
    assert {str(n): float(np.mean(h)) for n, h in by_len.items()} == pytest.approx(res['acc'])

    # records made from a cache-free greedy loop: its own output up to <|endoftext|> must count as a hit,
    # the same with one token changed as a miss (so the comparison above cannot pass by all-zero accuracy)
    rows, expect = [], []
    rng = np.random.Generator(np.random.PCG64(3))
    for n in range(1, 9):
        for _ in range(4):
            src = [int(d) for d in rng.integers(0, 10, n)]
            x = src + [tok.sep_id]
            for _ in range(model.config.block_size - n):  # (to the end of the context, as the study does)
                with torch.no_grad():
                    x.append(int(model(torch.tensor([x]))[0][0, -1].argmax()))
                if x[-1] == tok.eot_id:
                    break
            out = x[n + 1:]
            if out[-1] == tok.eot_id and len(out) > 1:
                rows += [{'src': src, 'tgt': out[:-1]}, {'src': src, 'tgt': [(out[0] + 1) % 10] + out[1:-1]}]
                expect += [True, False]
    assert sum(expect) >= 3, "the quick model emitted too few <|endoftext|> to build hits"
    for r, e in zip(rows, expect):
        got = pe_lengen.exact_match_by_length(model, [r], tok.eot_id, tok.sep_id)
        n, m = len(r['src']), len(r['tgt']) + 1
        # the changed record differs in one token; both stop where the model emitted <|endoftext|>
        assert got == {n: (int(e), 1, m if e else m - 1, m, [m - 1])}
    total = pe_lengen.exact_match_by_length(model, rows, tok.eot_id, tok.sep_id, batch=3)  # batched, mixed lengths
    assert sum(v[0] for v in total.values()) == sum(expect)


def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path):
    for args, message in (
            (["./launcher.sh", "pe_lengen", "--encodings=['no_such_encoding']"],
             "--encodings=['no_such_encoding'] is not accepted: encodings takes a list of 1+ items, each one of 'none'"),
            (["./launcher.sh", "pe_lengen", "--tasks=['no_such_task']"],
             "--tasks=['no_such_task'] is not accepted: tasks takes a list of 1+ items, each one of 'copy', 'reverse'"),
            (["./launcher.sh", "pe_lengen", "--figures_only=True"], "--figures_only=True needs "),
            (["./launcher.sh", "pe_lengen", "--rand_max=20"], "needs rand_max >= 4 * train_len + 1"),
            (["./launcher.sh", "pe_lengen", "--encodings=['none+rand']"], "--encodings=['none+rand'] is not accepted"),
            ([sys.executable, "prepare/lengen.py", "--task=no_such_task"], "--task='no_such_task' is not accepted: task takes one of 'copy'")):
        r = subprocess.run(args + [f'--out_dir={tmp_path / "out"}'] + ([f'--data_root={tmp_path / "data"}']
                           if 'pe_lengen' in args else []), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert r.stderr.startswith('error: ') and message in r.stderr, r.stderr
        assert not (tmp_path / 'out').exists() and not (tmp_path / 'data').exists()
