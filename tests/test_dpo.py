"""DPO: loss equals a hand computation, response masks, frozen reference, pair builder, a tiny run that learns,
the seeded pipeline (mean ± std table, per-seed json, reuse on re-run, bad seeds)."""
import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'prepare'))
import data  # noqa: E402
import pairs as pairlib  # noqa: E402
import objectives  # noqa: E402
from configurator import UserError  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tests import inproc  # noqa: E402

MODEL = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=96', '--pos_emb=rope', '--log_tensorboard=False',
         '--sample_tokens=0']


def tiny_model(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()


def records():
    # different prompt and response lengths so the batch is padded
    return [{'prompt': [1, 2, 3, 4, 5], 'chosen': [6, 7, 8], 'rejected': [9, 10, 11, 12, 13, 14]},
            {'prompt': [3, 1], 'chosen': [5, 5, 5, 5, 5, 5, 5], 'rejected': [20]},
            {'prompt': [7, 8, 9, 10, 11, 12, 13, 14, 15], 'chosen': [2, 3], 'rejected': [4, 5, 6, 7]}]


def hand_logp(model, prompt, response):
    """Sum of log p(response | prompt) by running the unpadded sequence alone."""
    seq = torch.tensor([prompt + response])
    with torch.no_grad():
        logits, _ = model(seq[:, :-1])
    lp = torch.log_softmax(logits[0].double(), -1)
    return sum(lp[len(prompt) - 1 + j, t].item() for j, t in enumerate(response))


@pytest.mark.parametrize('length_normalize', [False, True])
def test_dpo_loss_equals_hand_computation(length_normalize):
    policy, ref = tiny_model(0), tiny_model(1)
    recs, beta = records(), 0.5
    b = data.collate_pairs(recs, 32, pad_id=39)
    assert b['x'].shape == (6, 12)  # 2B rows, padded to the longest sequence minus one
    with torch.no_grad():
        lp, n = objectives.response_logps(policy, b)
        rlp, _ = objectives.response_logps(ref, b)
    loss, ex = objectives.dpo_loss(lp, rlp, n, beta, length_normalize)
    losses, margins, wins = [], [], []
    for r in recs:
        norm = lambda f: len(r[f]) if length_normalize else 1
        d = {f: (hand_logp(policy, r['prompt'], r[f]) - hand_logp(ref, r['prompt'], r[f])) / norm(f)
             for f in ('chosen', 'rejected')}
        m = beta * (d['chosen'] - d['rejected'])
        losses.append(-math.log(1 / (1 + math.exp(-m))))
        margins.append(m)
        wins.append(m > 0)
    assert loss.item() == pytest.approx(sum(losses) / 3, rel=1e-4)
    assert ex['margin'].item() == pytest.approx(sum(margins) / 3, rel=1e-4, abs=1e-6)
    assert ex['acc'].item() == pytest.approx(sum(wins) / 3)
    assert n.tolist() == [3, 7, 2, 6, 1, 4]
    # the reference against itself: every pair ties, loss log 2, accuracy one half
    loss, ex = objectives.dpo_loss(rlp, rlp, n, beta, length_normalize)
    assert loss.item() == pytest.approx(math.log(2)) and ex['acc'].item() == 0.5


def test_response_masks_cover_exactly_the_response_and_truncate_the_prompt():
    recs = records()
    for L in (32, 9):  # 9: long prompts lose tokens from the left, responses never
        b = data.collate_pairs(recs, L, pad_id=39)
        rows = [(r['prompt'], r[f]) for f in ('chosen', 'rejected') for r in recs]
        for i, (prompt, resp) in enumerate(rows):
            prompt = prompt[max(0, len(prompt) - (L - len(resp))):]
            seq = prompt + resp
            assert b['x'][i, :len(seq) - 1].tolist() == seq[:-1]
            assert (b['x'][i, len(seq) - 1:] == 39).all()  # padding after the sequence
            mask = b['y'][i] != -100
            assert mask.sum().item() == len(resp)
            assert b['y'][i][mask].tolist() == resp
            assert mask.nonzero()[0].item() == len(prompt) - 1  # the last prompt token predicts the response
    with pytest.raises(data.DataError, match='seq_max_len'):
        data.collate_pairs(recs, 7, pad_id=39)  # a 7-token response leaves no room for its prompt


def test_reference_gets_no_gradient_and_does_not_change():
    policy, ref = tiny_model(0), tiny_model(1)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    recs = records()
    ref_lp, _ = objectives.dpo_score(ref, recs, 39, 32, 2, 'cpu')
    assert not ref_lp.requires_grad
    d = {'records': recs, 'pad_id': 39, 'ref': ref_lp}
    b = objectives.dpo_attach_ref(data.iter_pair_batches(recs, 3, 32, 39).__next__(), d)
    policy.train()
    loss, _ = objectives.objective_loss(policy, b, {'objective': 'dpo', 'beta': 0.1, 'length_normalize': False})
    loss.backward()
    assert all(p.grad is None for p in ref.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items())


# ----------------------------------------------------------------------------- pair builder

@pytest.mark.parametrize('corruption', ['shuffle', 'other', 'noise'])
def test_pair_builder_round_trip_and_corruption(tiny_data, tmp_path, corruption):
    out = str(tmp_path / f'pairs_{corruption}')
    r = subprocess.run([sys.executable, 'prepare/pairs.py', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={out}',
                        f'--corruption={corruption}', '--train_pairs=-1', '--val_pairs=8', '--test_pairs=10',
                        '--max_response_tokens=64'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = data.load_meta(out)
    tok = data.get_tokenizer(meta['tokenizer'])
    val_text = tok.decode(np.concatenate(data.open_split(os.path.join(tiny_data, 'tiny'), 'val')))
    prompts = {}
    for split in ('train', 'val', 'test'):
        recs = data.open_pairs(out, split)
        assert len(recs) == meta['splits'][split]['pairs'] > 0
        prompts[split] = {tuple(recs[i]['prompt']) for i in range(len(recs))}
        for i in range(len(recs)):
            p, c, rej = (recs[i][f].tolist() for f in data.PAIR_FIELDS)
            assert tok.decode(p + c) in val_text  # prompt + chosen: the true document, held out from SFT
            assert 1 <= len(c) <= 64 and rej != c  # the corruption changed the continuation
            if corruption == 'noise':
                assert len(rej) == len(c) and sum(a != b for a, b in zip(rej, c)) == max(1, round(0.25 * len(c)))
            if corruption == 'shuffle':
                assert sorted(tok.decode(rej).split()) == sorted(tok.decode(c).split())  # same words, new order
            if corruption == 'other':
                assert tok.decode(rej) in val_text and tok.decode(p + rej) not in val_text
    assert meta['splits']['val']['pairs'] <= 8 and meta['splits']['test']['pairs'] <= 10
    assert not (prompts['train'] & prompts['test']) and not (prompts['val'] & prompts['test'])
    if corruption != 'shuffle':
        return
    # same settings again: nothing to do
    r = subprocess.run([sys.executable, 'prepare/pairs.py', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={out}',
                        f'--corruption={corruption}', '--train_pairs=-1', '--val_pairs=8', '--test_pairs=10',
                        '--max_response_tokens=64'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and 'already holds' in r.stdout


def test_pair_builder_bad_input(tiny_data, tmp_path):
    r = subprocess.run([sys.executable, 'prepare/pairs.py', '--data=tiny', f'--data_root={tiny_data}',
                        f'--out_dir={tmp_path / "p"}', '--corruption=reverse'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and 'reverse' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / 'p')


# ----------------------------------------------------------------------------- training runs

def run(args, cwd=ROOT, launcher=None, check=True):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = (subprocess.run(launcher + args, cwd=cwd, capture_output=True, text=True, timeout=900, env=env) if launcher
         else inproc.run(args, cwd=cwd, env=env))  # a fork of the suite's torch-loaded server (tests/inproc.py)
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope='module')
def sft_and_pairs(tiny_data, tmp_path_factory):
    """A briefly trained byte-level SFT model on 'tiny' and 'noise' pairs from its val split."""
    out = str(tmp_path_factory.mktemp('dpo_runs'))
    run(['train.py', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={out}', '--run_name=sft', '--max_iters=30',
         '--batch_size=8', '--learning_rate=3e-3', '--warmup_iters=3', '--eval_interval=30', '--eval_iters=1'] + MODEL)
    run(['prepare/pairs.py', '--data=tiny', f'--data_root={tiny_data}', '--corruption=noise', '--train_pairs=-1',
         '--val_pairs=10', '--test_pairs=24', '--max_response_tokens=32', '--noise_frac=0.1'])
    return tiny_data, out, os.path.join(out, 'sft')


def dpo_args(tiny_data, out, sft, *extra):
    return ['train.py', '--objective=dpo', '--data=tiny_pairs_noise', f'--data_root={tiny_data}', f'--out_dir={out}',
            f'--init_from={sft}', '--batch_size=4', '--learning_rate=2e-3', '--warmup_iters=2', '--eval_iters=2',
            '--log_interval=2', '--beta=0.5'] + MODEL + list(extra)


def preference(tiny_data, ckpt, ref):
    r = run(['eval_tasks.py', 'preference', f'--ckpt={ckpt}', f'--ref={ref}', '--data=tiny_pairs_noise',
             f'--data_root={tiny_data}', '--split=test', '--beta=0.5', '--out=' + os.devnull])
    head, _, row = r.stdout.splitlines()[:3]
    return dict(zip([c.strip() for c in head.split('|')], [c.strip() for c in row.split('|')]))


def test_tiny_dpo_run_beats_the_sft_reference(sft_and_pairs, tmp_path):
    tiny_data, out, sft = sft_and_pairs
    digest = hashlib.sha256(open(os.path.join(sft, 'ckpt', 'last.pt'), 'rb').read()).hexdigest()
    r = run(dpo_args(tiny_data, str(tmp_path), sft, '--max_iters=24', '--eval_interval=12', '--run_name=dpo'))
    assert 'dpo reference' in r.stdout and '| acc ' in r.stdout
    d = os.path.join(tmp_path, 'dpo')
    events = [json.loads(l) for l in open(os.path.join(d, 'metrics.jsonl'))]
    tr = [e for e in events if e['event'] == 'train']
    assert {'acc', 'reward_chosen', 'reward_rejected', 'margin'} <= set(tr[0])
    assert tr[0]['loss'] == pytest.approx(math.log(2), abs=0.1)  # policy starts equal to the reference
    ev = [e for e in events if e['event'] == 'evaluate']
    assert ev[-1]['val_margin'] > 0 and ev[-1]['val_loss'] < math.log(2)
    # the reference checkpoint is untouched
    assert hashlib.sha256(open(os.path.join(sft, 'ckpt', 'last.pt'), 'rb').read()).hexdigest() == digest
    before, after = preference(tiny_data, sft, sft), preference(tiny_data, d, sft)
    assert float(before['accuracy']) == 0.5 and float(before['margin']) == 0.0
    assert float(after['accuracy']) >= 0.75 and float(after['margin']) > 0


def test_dpo_resume_and_ddp_equal_one_uninterrupted_process(sft_and_pairs, tmp_path):
    tiny_data, out, sft = sft_and_pairs
    common = ['--max_iters=6', '--eval_interval=3', '--run_name=r']
    run(dpo_args(tiny_data, str(tmp_path / 'a'), sft, *common, '--grad_accum=2'))
    run(dpo_args(tiny_data, str(tmp_path / 'b'), sft, *common, '--grad_accum=2', '--stop_after=3'))
    run(dpo_args(tiny_data, str(tmp_path / 'b'), sft, *common, '--grad_accum=2', '--init_from=resume'))
    run(dpo_args(tiny_data, str(tmp_path / 'c'), sft, *common, '--grad_accum=1'),
        launcher=[sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'])
    ck = {k: torch.load(os.path.join(tmp_path, k, 'r', 'ckpt', 'last.pt'), weights_only=True) for k in 'abc'}
    assert ck['b']['ref_ckpt'] == os.path.abspath(sft)  # resume found the reference in the checkpoint
    for k in ck['a']['model']:
        assert torch.equal(ck['a']['model'][k], ck['b']['model'][k]), k  # resume: bitwise on CPU
        assert torch.allclose(ck['a']['model'][k], ck['c']['model'][k], atol=1e-5), k  # DDP == accumulation
    ev = lambda k: [{f: e[f] for f in ('step', 'loss', 'acc', 'margin', 'val_acc') if f in e}
                    for e in map(json.loads, open(os.path.join(tmp_path, k, 'r', 'metrics.jsonl')))
                    if e['event'] in ('train', 'evaluate')]
    assert ev('a') == ev('b')
    assert [e['acc'] for e in ev('a') if 'acc' in e] == pytest.approx([e['acc'] for e in ev('c') if 'acc' in e])


def test_dpo_bad_settings_are_one_line_errors(sft_and_pairs, tmp_path):
    tiny_data, out, sft = sft_and_pairs
    r = run(dpo_args(tiny_data, str(tmp_path), sft, '--init_from=scratch', '--max_iters=1', '--warmup_iters=0'), check=False)
    assert r.returncode == 2 and 'init_from' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not os.listdir(tmp_path)  # nothing written
    # in-process: a policy with other flags than the SFT model, an LM data set instead of pairs
    cfg = {'init_from': sft, 'ref_ckpt': '', 'data': 'tiny_pairs_noise', 'batch_size': 4, 'seq_max_len': 0,
           'block_size': 96, 'objective': 'dpo', 'vocab_size': 320}
    other = GPT(GPTConfig(vocab_size=320, block_size=96, n_layer=1, n_head=2, n_embd=64, pos_emb='rope'))
    with pytest.raises(UserError, match='n_embd'):
        objectives.dpo_setup(cfg, None, other, [], data.get_tokenizer({'kind': 'byte'}), 'cpu', None, True)
    with pytest.raises(data.DataError, match='prepare/pairs.py'):
        objectives.open_objective_data(cfg, os.path.join(tiny_data, 'tiny'), 'train')


def test_dpo_tinystories_end_to_end_on_a_local_file(tmp_path):
    """The dpo_tinystories problem with a tiny override, on a jsonl file with the hub's field name ('text')."""
    rng = np.random.default_rng(0)
    names, things = ['Lily', 'Tom', 'Sue', 'Max'], ['ball', 'cat', 'kite', 'boat']
    with open(tmp_path / 'stories.jsonl', 'w') as f:
        for _ in range(160):
            n, t = rng.choice(names), rng.choice(things)
            f.write(json.dumps({'text': f"Once upon a time, {n} had a red {t}. {n} loved the {t} very much. "
                                        f"One day the {t} was lost. {n} looked everywhere and cried. "
                                        f"Then a friend found the {t}. {n} was happy again."}) + '\n')
    r = run(['analysis/dpo_pipeline.py', 'config/dpo_tinystories.py',
             f'--data_root={tmp_path / "data"}', f'--out_dir={tmp_path / "out"}', f'--figure={tmp_path / "f.png"}',
             f"--prepare=['prepare/tinystories.py', '--build_pairs=False', '--source={tmp_path / 'stories.jsonl'}', "
             f"'--tokenizer=byte', '--val_fraction=0.5']",
             "--sft_args=['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=160', '--batch_size=4', "
             "'--max_iters=4', '--warmup_iters=0', '--eval_interval=4', '--eval_iters=1', '--sample_tokens=0']",
             "--pairs_args=['--corruption=shuffle', '--val_pairs=8', '--test_pairs=16']",
             "--dpo_args=['--max_iters=4', '--warmup_iters=0', '--eval_interval=2', '--eval_iters=1', '--batch_size=4']", '--seeds=[1]'])
    assert '| DPO (4 steps) | SFT |' in r.stdout and os.path.getsize(tmp_path / 'f.png') > 1000
    meta = data.load_meta(str(tmp_path / 'data' / 'tinystories'))
    assert meta['source'].endswith('stories.jsonl') and set(meta['splits']) == {'train', 'val'}
    pm = data.load_meta(str(tmp_path / 'data' / 'tinystories_pairs_shuffle'))
    assert pm['splits']['test']['pairs'] == 16 and pm['splits']['train']['pairs'] > 0


# ----------------------------------------------------------------------------- the pipeline over seeds

def pipeline(tiny_data, tmp_path, *extra, check=True):
    return run(['analysis/dpo_pipeline.py', 'config/dpo_quick.py', '--quick=True', f'--data_root={tiny_data}',
                f'--out_dir={tmp_path / "out"}', f'--figure={tmp_path / "f.png"}', "--sft_args=['--data=tiny']"]
               + list(extra), check=check)


def test_dpo_pipeline_over_seeds_reports_mean_std_and_reuses_runs(tiny_data, tmp_path):
    r = pipeline(tiny_data, tmp_path, '--seeds=[1, 2]', '--jobs=2')
    assert r.stdout.count('== training') == 4  # SFT and DPO per seed
    res = json.load(open(tmp_path / 'out' / 'sft_quick_dpo_other_seeds.json'))
    per = res['per_seed']
    assert [p['seed'] for p in per] == [1, 2] and len({p['sft_dir'] for p in per}) == 2
    for p in per:
        assert 0 <= p['dpo']['accuracy'] <= 1 and 0 <= p['sft']['logp_accuracy'] <= 1 and p['dpo']['pairs'] == 16
        assert json.load(open(os.path.join(p['dpo_dir'], 'config.json')))['seed'] == p['seed']
    # the seed reaches the runs: the two SFT models differ
    w = [torch.load(os.path.join(p['sft_dir'], 'ckpt', 'last.pt'), weights_only=True)['model'] for p in per]
    assert any(not torch.equal(w[0][k], w[1][k]) for k in w[0])
    # every headline cell of the DPO row (and the SFT row's measured one) is mean ± std of the per-seed numbers
    rows = {l.split('|')[1].strip().split(' ')[0]: [c.strip(' *') for c in l.split('|')[3:-1]]
            for l in r.stdout.splitlines() if l.startswith(('| SFT |', '| DPO ('))}
    assert all('±' in c for c in rows['DPO']) and len(rows['DPO']) == 5 and '±' in rows['SFT'][-1]
    accs = [p['dpo']['accuracy'] for p in per]
    m, s = sum(accs) / 2, abs(accs[0] - accs[1]) / math.sqrt(2)
    assert rows['DPO'][0] == f"{m:.3f} ± {s:.3f}"
    assert res['mean_std']['accuracy'] == pytest.approx([m, s])
    assert os.path.getsize(tmp_path / 'f.png') > 1000
    ckpts = {p['dpo_dir']: os.path.getmtime(os.path.join(p['dpo_dir'], 'ckpt', 'last.pt')) for p in per}
    # the same command again: every run and evaluation reused, the same numbers
    r2 = pipeline(tiny_data, tmp_path, '--seeds=[1, 2]', '--jobs=2')
    assert '== training' not in r2.stdout and r2.stdout.count('reusing') == 4 and 'eval_tasks.py' not in r2.stdout
    assert json.load(open(tmp_path / 'out' / 'sft_quick_dpo_other_seeds.json'))['per_seed'] == per
    assert all(os.path.getmtime(os.path.join(d, 'ckpt', 'last.pt')) == t for d, t in ckpts.items())
    # seeds [2, 3]: seed 2 reused, only seed 3 trained
    r3 = pipeline(tiny_data, tmp_path, '--seeds=[2, 3]', '--jobs=1')
    assert r3.stdout.count('reusing') == 2 and r3.stdout.count('== training') == 2 and 'sft_quick_s3_dpo_other' in r3.stdout
    assert [p['seed'] for p in json.load(open(tmp_path / 'out' / 'sft_quick_dpo_other_seeds.json'))['per_seed']] == [2, 3]


@pytest.mark.parametrize('bad', ['--seeds=[]', '--seeds=[1, 1]', "--seeds=[1, 'two']", '--seeds=[-1]', '--seeds=3',
                                 '--jobs=0'])
def test_dpo_pipeline_bad_seeds_are_one_line_errors(tiny_data, tmp_path, bad):
    before = sorted(os.listdir(tiny_data))
    r = pipeline(tiny_data, tmp_path, bad, check=False)
    key = bad[2:].split('=')[0]
    assert r.returncode == 2 and key in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.listdir(tmp_path) and sorted(os.listdir(tiny_data)) == before  # no runs, figure or pairs
