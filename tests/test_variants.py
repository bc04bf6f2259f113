"""attn='diff' and ngpt against the papers' formulas; lambda_init, parameter counts, unit norms, nGPT's
init values; exact resume with ngpt; the six reference launcher problems start; prepare/openwebtext.py.
(Causality and cached generation of the variants: COMBOS in test_model.py.)"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, ngpt_scaled
from inproc import run_many
from test_train import run_train, run_dir, weights, ROOT

TINY = dict(vocab_size=64, block_size=16, n_layer=3, n_embd=32, pos_emb='none')
NGPT = dict(ngpt=True, bias=False, mlp='swiglu')


def make(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


def naive_diff_attention(attn, x, ngpt=False):
    """Differential attention written out head by head from the paper (arXiv 2410.05258, eq. 1-3):
    (softmax(q1 k1'/sqrt(d)) - lambda softmax(q2 k2'/sqrt(d))) V_h, RMSNorm, times (1 - lambda_init).
    ngpt: q and k unit per half, times the effective sqk = stored * sqrt(n_embd), softmax scale sqrt(d)."""
    B, T, C = x.shape
    H, d = attn.n_head, attn.head_dim
    assert d == C // H // 2
    q, k, v = attn.c_attn(x).split(C, dim=2)
    if ngpt:
        sqk = attn.sqk * math.sqrt(C)
        q = torch.cat([F.normalize(t, dim=-1) for t in q.split(d, -1)], -1) * sqk
        k = torch.cat([F.normalize(t, dim=-1) for t in k.split(d, -1)], -1) * sqk
    scale = math.sqrt(d) if ngpt else 1 / math.sqrt(d)
    lam = (math.exp(attn.lambda_q1 @ attn.lambda_k1) - math.exp(attn.lambda_q2 @ attn.lambda_k2)
           + attn.lambda_init)
    future = ~torch.ones(T, T, dtype=torch.bool).tril()
    outs, maps1, maps2 = [], [], []
    for h in range(H):
        q1, q2 = q[..., 2 * h * d:(2 * h + 1) * d], q[..., (2 * h + 1) * d:(2 * h + 2) * d]
        k1, k2 = k[..., 2 * h * d:(2 * h + 1) * d], k[..., (2 * h + 1) * d:(2 * h + 2) * d]
        a1 = (q1 @ k1.transpose(-1, -2) * scale).masked_fill(future, float('-inf')).softmax(-1)
        a2 = (q2 @ k2.transpose(-1, -2) * scale).masked_fill(future, float('-inf')).softmax(-1)
        o = (a1 - lam * a2) @ v[..., 2 * h * d:(2 * h + 2) * d]
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * attn.subln.weight
        outs.append(o * (1 - attn.lambda_init))
        maps1.append(a1)
        maps2.append(a2)
    return attn.c_proj(torch.cat(outs, -1)), torch.stack(maps1, 1), torch.stack(maps2, 1), lam


@pytest.mark.parametrize('ngpt', [False, True], ids=['diff', 'diff+ngpt'])
def test_diff_attention_equals_two_softmax_formula(ngpt):
    model = make(attn='diff', n_head=2, **(NGPT if ngpt else {}))
    attn = model.h[2].attn
    with torch.no_grad():  # move every diff/ngpt parameter off its init so each term matters
        for p in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
            p.normal_(0, 0.5)
        attn.subln.weight.uniform_(0.5, 1.5)
        if ngpt:
            attn.sqk.mul_(torch.empty_like(attn.sqk).uniform_(0.5, 1.5))
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        ref, a1, a2, lam = naive_diff_attention(attn, x, ngpt)
        fast = attn(x)                      # SDPA path
        with model.record() as rec:
            recorded = attn(x)              # materialized maps
    assert abs(lam - attn.lambda_init) > 0.05  # lambda really differs from its init part
    assert torch.allclose(fast, ref, atol=1e-5), (fast - ref).abs().max()
    assert torch.allclose(recorded, ref, atol=1e-5), (recorded - ref).abs().max()
    assert torch.allclose(rec['layer2.attn1'], a1, atol=1e-6) and torch.allclose(rec['layer2.attn2'], a2, atol=1e-6)
    assert torch.allclose(rec['layer2.attn'], a1 - lam * a2, atol=1e-6)
    assert rec['layer2.attn'].shape == (2, 2, 9, 9)


def test_lambda_init_per_layer_and_lambda_vectors():
    model = make(attn='diff', n_head=2, n_layer=5, n_embd=256)
    for i, block in enumerate(model.h):
        assert block.attn.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.3 * i))
    assert model.h[0].attn.lambda_init == pytest.approx(0.2)
    vecs = torch.cat([p for n, p in model.named_parameters() if 'lambda_' in n])
    assert vecs.numel() == 5 * 4 * 64                      # four vectors of head_dim per layer
    assert 0.09 < vecs.std().item() < 0.11 and abs(vecs.mean().item()) < 0.01  # N(0, 0.1)


@pytest.mark.parametrize('extra', [{}, NGPT], ids=['plain', 'ngpt'])
def test_diff_parameter_count_equals_baseline(extra):
    base, diff = make(n_head=4, **extra), make(attn='diff', n_head=2, **extra)
    shapes = lambda m: sorted(tuple(p.shape) for n, p in m.named_parameters() if 'lambda_' not in n and 'subln' not in n)
    assert shapes(base) == shapes(diff)          # same projections: q/k halves and wide values re-split n_embd
    head_dim = 32 // 2 // 2
    # only the per-layer lambda vectors (4 x head_dim) and the RMSNorm gain (2 x head_dim) are added
    assert diff.num_params() - base.num_params() == 3 * 6 * head_dim
    assert diff.num_params() / base.num_params() < 1.01


def test_ngpt_init_values_match_the_paper():
    """sqk, alpha, sz: init 1, 0.05, 1 stored at scale 1/sqrt(d); suv: init 1 at scale 1, times sqrt(d)."""
    model = make(**NGPT, pos_emb='rope', n_head=2)
    d = 32
    for b in model.h:
        assert torch.all(b.attn_alpha == 1 / math.sqrt(d)) and torch.all(b.mlp_alpha == 1 / math.sqrt(d))
        assert torch.allclose(ngpt_scaled(b.attn_alpha, 0.05, b.base_scale), torch.full((d,), 0.05))
        assert torch.allclose(ngpt_scaled(b.attn.sqk, 1.0, b.attn.base_scale), torch.ones(d))
        assert torch.all(b.mlp.suv == 1)
        # the SwiGLU sees sqrt(d) * (W x): mlp(x) == c_proj(silu(sqrt(d) u) * sqrt(d) v)
        x = F.normalize(torch.randn(3, d), dim=-1)
        u, v = (b.mlp.c_fc(x) * math.sqrt(d)).chunk(2, -1)
        assert torch.allclose(b.mlp(x), b.mlp.c_proj(F.silu(u) * v), atol=1e-5)
        assert isinstance(b.ln_1, torch.nn.Identity) and isinstance(b.ln_2, torch.nn.Identity)  # no norm layers
    assert torch.all(model.lm_head.sz == 1 / math.sqrt(d))
    idx = torch.randint(0, 64, (2, 7))
    h = model.hidden(idx)
    assert torch.allclose(model(idx)[0], h @ model.lm_head.weight.T, atol=1e-6)  # effective sz = 1
    # the first residual update is a step of 0.05 from h towards norm(attn(h))
    b0, e = model.h[0], model.wte(idx)
    rope = model.rope_tables(model.position_ids(0, 7, 'cpu'))
    ref = F.normalize(e + 0.05 * (F.normalize(b0.attn(e, rope), dim=-1) - e), dim=-1)
    out = {}
    b0.attn.register_forward_hook(lambda m, i, o: out.update(x=i[0]))  # (a hook returning a value replaces o)
    b0.mlp.register_forward_hook(lambda m, i, o: out.update(after_attn=i[0]))
    model(idx)
    assert torch.allclose(out['x'], e) and torch.allclose(out['after_attn'], ref, atol=1e-6)


def embedding_axis_norms(model):
    """Norms of every weight vector along the embedding axis (rows of inputs, columns of outputs)."""
    norms = {}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            norms[name] = m.weight.norm(dim=0 if getattr(m, 'residual', False) else 1)
    return norms


@pytest.mark.parametrize('attn', ['softmax', 'diff'])
def test_ngpt_unit_norms_after_a_training_step(attn):
    model = make(**NGPT, pos_emb='rope', n_head=2, attn=attn, tie_embeddings=False).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    idx = torch.randint(0, 64, (4, 12))
    model(idx, idx)[1].backward()
    opt.step()
    names = ['wte', 'lm_head', 'h.0.attn.c_attn', 'h.0.attn.c_proj', 'h.2.mlp.c_fc', 'h.2.mlp.c_proj']
    moved = embedding_axis_norms(model)
    assert set(names) <= set(moved) and any((n - 1).abs().max() > 1e-3 for n in moved.values())  # the step left it
    model.normalize_weights()
    for name, n in embedding_axis_norms(model).items():
        assert torch.allclose(n, torch.ones_like(n), atol=1e-5), name
    # hidden states: the embedding and the output of every block are unit vectors
    states = []
    for b in model.h:
        b.register_forward_hook(lambda m, i, o: states.extend([i[0], o]))
    model(idx)
    for s in states:
        assert torch.allclose(s.norm(dim=-1), torch.ones(s.shape[:-1]), atol=1e-5)


def test_ngpt_config_errors_are_clear():
    with pytest.raises(ValueError, match="bias=True.*use bias=False"):
        GPTConfig(ngpt=True, mlp='swiglu', pos_emb='rope')
    with pytest.raises(ValueError, match="pos_emb='learned'"):
        GPTConfig(ngpt=True, mlp='swiglu', bias=False, pos_emb='learned')
    with pytest.raises(ValueError, match='2\\*n_head'):
        GPTConfig(attn='diff', n_embd=36, n_head=4)


DIFF_NGPT_ARGS = ['--ngpt=True', '--attn=diff', '--bias=False', '--mlp=swiglu', '--pos_emb=rope',
                  '--weight_decay=0.0', '--warmup_iters=0', '--learning_rate=3e-3']


def test_ngpt_resume_is_exact_and_weights_stay_on_the_sphere(tiny_data, tmp_path):
    common = DIFF_NGPT_ARGS + ['--max_iters=8', '--eval_interval=4']
    run_train(common, tiny_data, tmp_path / 'a')
    run_train(common + ['--stop_after=4'], tiny_data, tmp_path / 'b')
    run_train(common + ['--init_from=resume'], tiny_data, tmp_path / 'b')
    wa, wb = weights(run_dir(tmp_path / 'a')), weights(run_dir(tmp_path / 'b'))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise on CPU
    model = GPT(GPTConfig(vocab_size=320, block_size=32, n_layer=2, n_head=2, n_embd=32, ngpt=True, attn='diff',
                          bias=False, mlp='swiglu', pos_emb='rope'))
    model.load_state_dict(wa)
    assert not torch.allclose(model.h[0].attn.lambda_q1, GPT(model.config).h[0].attn.lambda_q1)  # it trained
    for name, n in embedding_axis_norms(model).items():  # train.py normalized after every step
        assert torch.allclose(n, torch.ones_like(n), atol=1e-5), name


PROBLEMS = ['DiffNGPT_1kctx_10k_lr30e-4', 'DiffNGPT_4kctx_10k_lr30e-4', 'DiffTransformer_1kctx_10k_lr30e-4',
            'DiffTransformer_4kctx_10k_lr30e-4', 'nGPT_1kctx_10k_lr30e-4', 'GPT_1kctx_10k_lr30e-4']


TINY_OVERRIDE = ['--n_layer=2', '--n_embd=64', '--block_size=32', '--batch_size=2', '--global_batch_tokens=0',
                 '--max_iters=2', '--warmup_iters=2', '--eval_interval=2', '--eval_iters=1', '--vocab_size=320',
                 '--compile=False', '--log_tensorboard=False', '--data=tiny']


@pytest.fixture(scope='module')
def reference_runs(tiny_data, tmp_path_factory):
    """Each reference problem for 2 tiny steps: what `./launcher.sh <problem>` runs on one CPU (`python train.py
    config/<problem>.py ...`), all in one process (tests/inproc.py); the launcher itself once, for the first."""
    outs = {p: tmp_path_factory.mktemp(p) for p in PROBLEMS}
    args = lambda p: [*TINY_OVERRIDE, f'--data_root={tiny_data}', f'--out_dir={outs[p]}']
    r = subprocess.run(['./launcher.sh', PROBLEMS[0], *args(PROBLEMS[0])], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    res = {PROBLEMS[0]: {'rc': r.returncode, 'stdout': r.stdout, 'stderr': r.stderr}}
    rest = PROBLEMS[1:]
    res.update(zip(rest, run_many([{'argv': ['train.py', f'config/{p}.py', *args(p)]} for p in rest])))
    listed = subprocess.run(['./launcher.sh', 'list'], cwd=ROOT, capture_output=True, text=True).stdout
    return res, outs, listed


@pytest.mark.parametrize('problem', PROBLEMS)
def test_reference_launcher_problems_start(problem, reference_runs):
    res, outs, listed = reference_runs
    assert problem in listed
    r = res[problem]
    assert r['rc'] == 0, r['stdout'][-2000:] + r['stderr'][-2000:]
    assert '"train_end"' in r['stdout']
    cfg = json.load(open(os.path.join(run_dir(outs[problem]), 'config.json')))
    variant = problem.split('_')[0]
    assert cfg['attn'] == ('diff' if variant.startswith('Diff') else 'softmax')
    assert cfg['ngpt'] == variant.lower().endswith('ngpt')
    assert cfg['n_head'] == (8 if variant.startswith('Diff') else 16)
    # the untouched reference settings
    assert cfg['learning_rate'] == 30e-4 and cfg['max_iters'] == 2 and cfg['data'] == 'tiny'
    assert cfg['weight_decay'] == (0.0 if cfg['ngpt'] else 0.1)
    with open(os.path.join(ROOT, 'config', problem + '.py')) as f:
        text = f.read()
    assert 'global_batch_tokens = 524288' in text and 'n_layer, n_head, n_embd = 24' in text
    # its warmup (the run above is 2 steps, so it passes --warmup_iters=2: train.py refuses a longer one)
    assert f"\nwarmup_iters = {0 if cfg['ngpt'] else 2000}\n" in text


DOCS = [f"document {i}: " + "some web text with ünïcödé, " * (i % 5 + 1) for i in range(40)]


@pytest.mark.parametrize('kind,tokenizer', [('jsonl', 'byte'), ('parquet', 'bpe')])
def test_openwebtext_prepare_on_local_files(tmp_path, kind, tokenizer):
    from test_prepare import decoded_docs
    path = tmp_path / f'owt.{kind}'
    if kind == 'jsonl':
        with open(path, 'w') as f:
            for d in DOCS:
                f.write(json.dumps({'text': d}) + '\n')
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({'text': DOCS}), path)
    out = tmp_path / 'owt'
    r = subprocess.run([sys.executable, 'prepare/openwebtext.py', f'--source={path}', f'--out_dir={out}',
                        f'--tokenizer={tokenizer}', '--vocab_size=300', '--val_fraction=0.2'], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    meta, docs = decoded_docs(str(out))
    assert meta['tokenizer']['kind'] == tokenizer and meta['source'] == str(path)
    assert sorted(docs['train'] + docs['val']) == sorted(DOCS) and docs['val'] and docs['train']
    # the default tokenizer is GPT-2's: here (no network) it either works or says how to get it
    r = subprocess.run([sys.executable, 'prepare/openwebtext.py', f'--source={path}', f'--out_dir={tmp_path / "g"}'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    if r.returncode == 0:
        assert json.load(open(tmp_path / 'g' / 'meta.json'))['tokenizer']['kind'] == 'gpt2'
    else:
        assert r.returncode == 2 and 'gpt2' in r.stderr and not os.path.exists(tmp_path / 'g')


def test_steps_to_reach_interpolates_first_crossing():
    from analysis.lr_sweep import steps_to_reach
    evals = [(10, 5.0), (20, 4.0), (30, 3.0), (40, 3.5), (50, 2.0)]
    assert steps_to_reach(evals, 3.5) == pytest.approx(25.0)   # between 20 (4.0) and 30 (3.0)
    assert steps_to_reach(evals, 3.0) == pytest.approx(30.0)
    assert steps_to_reach(evals, 6.0) == 10.0                   # already below at the first eval
    assert steps_to_reach(evals, 1.0) is None                   # never reached


def test_best_lr_is_the_argmin_ties_go_low_diverged_never_wins():
    from analysis.lr_sweep import best_lr
    from configurator import UserError
    assert best_lr({3e-3: 4.1, 1e-3: 4.3, 6e-3: 4.2, 2e-3: 4.15}) == 3e-3
    assert best_lr({6e-3: 4.0, 1e-3: 4.0, 3e-3: 4.5}) == 1e-3     # tie: the lower lr
    assert best_lr({1e-3: 4.3, 6e-3: math.inf, 3e-3: math.nan}) == 1e-3
    with pytest.raises(UserError, match='add lower values'):
        best_lr({1e-3: math.inf})


def test_seed_summary_against_hand_made_curves():
    from analysis.lr_sweep import seed_summary, steps_cell, mean_band
    base = [[(0, 6.0), (10, 5.0), (20, 4.0)], [(0, 6.0), (10, 4.8), (20, 4.2)]]      # mean final 4.1
    other = [[(0, 6.0), (10, 4.1), (20, 3.9)], [(0, 6.0), (10, 5.0), (20, 4.5)]]     # reaches 4.1 at 10; never
    target, s = seed_summary({'GPT': base, 'X': other}, 'GPT')
    assert target == pytest.approx(4.1)
    assert s['X']['final'] == [3.9, 4.5] and s['X']['steps'] == [10.0, None]
    assert s['GPT']['steps'][0] == pytest.approx(19.0) and s['GPT']['steps'][1] is None  # 5.0 -> 4.0 at 10..20
    assert steps_cell(s['X']['steps']) == '10 ± 0 (1/2)' and steps_cell([None, None]) == 'not reached (0/2)'
    assert steps_cell([10.0, 20.0, 30.0]) == '20 ± 10 (3/3)'
    steps, mean, lo, hi = mean_band(other)
    assert steps == [0, 10, 20] and mean[1] == pytest.approx(4.55) and lo[2] == 3.9 and hi[2] == 4.5


def test_sweep_goes_past_an_edge_best_lr_until_bracketed(tmp_path):
    """A best lr at the top (bottom) of the grid gets 2x (1/2x) tries, at most `extend` rounds; an inside best stops
    it. Fake runs: a metrics.jsonl whose final val loss is a bowl in log(lr) with its minimum at lr_opt[variant]."""
    from analysis.lr_sweep import sweep_then_seeds
    lr_opt = {'low': 1e-4, 'mid': 2e-3, 'high': 5e-2}
    calls = []

    def train(v, lr, seed, iters):
        calls.append((v, lr, seed, iters))
        d = tmp_path / f'{v}_{lr:g}_{seed}_{iters}'
        d.mkdir(exist_ok=True)
        loss = 4 + math.log(lr / lr_opt[v]) ** 2
        (d / 'metrics.jsonl').write_text(json.dumps({'event': 'evaluate', 'step': iters, 'val_loss': loss}) + '\n')
        return str(d)
    sweep, best, runs = sweep_then_seeds(list(lr_opt), [1e-3, 2e-3, 4e-3], [1, 2], 5, 5, train, jobs=2, extend=2)
    assert sorted(sweep['mid']) == [1e-3, 2e-3, 4e-3] and best['mid'] == 2e-3          # inside: nothing more
    assert sorted(sweep['high']) == [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]                   # 2 rounds, still at the edge
    assert sorted(sweep['low']) == [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3] and best['low'] == 2.5e-4
    assert [len(d) for d in runs.values()] == [2, 2, 2] and best['high'] == 1.6e-2
    assert sum(c[3] == 5 and c[2] == 2 for c in calls) == 3                             # one seed-2 run each
    sweep, best, _ = sweep_then_seeds(['high'], [1e-3, 4e-3], [1], 5, 5, train, extend=0)   # extend=0: the grid only
    assert sorted(sweep['high']) == [1e-3, 4e-3] and best['high'] == 4e-3


def test_variants_compare_quick_sweeps_then_seeds_and_reuses(tiny_data, tmp_path):
    """--quick: 2 lrs x 2 variants sweep at seed 1, then the best lr of each with 2 seeds (seed 1 of the best lr
    is the sweep's own run: same steps, same arguments); a re-run trains nothing."""
    from analysis.study import curve, final
    cmd = ['./launcher.sh', 'variants_compare', '--quick=True', "--variants=['GPT', 'DiffNGPT']", '--lrs=[1e-4, 1e-2]',
           '--lr_extend=0', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={tmp_path}']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count('== training ') == 6 and r.stdout.count(': reusing ') == 2
    out = tmp_path / 'quick'
    res = json.load(open(out / 'results.json'))
    assert res['config']['seeds'] == [1, 2] and res['config']['lrs'] == [1e-4, 1e-2]
    for v in ('GPT', 'DiffNGPT'):
        sweep = {float(k): x for k, x in res['sweep'][v].items()}
        assert len(sweep) == 2 and res['best_lr'][v] == min(sweep, key=sweep.get)
        # the sweep's numbers are the sweep runs' own final val losses (6 steps, seed 1)
        for lr, x in sweep.items():
            assert x == final(str(out / f'{v}_lr{lr:g}_s1_6it'))
        dirs = res['runs'][v]
        assert dirs[0] == str(out / f"{v}_lr{res['best_lr'][v]:g}_s1_6it")
        assert len(dirs) == 2 and len(res['summary'][v]['final']) == 2
        cfgs = [json.load(open(os.path.join(d, 'config.json'))) for d in dirs]
        assert [c['seed'] for c in cfgs] == [1, 2] and all(c['max_iters'] == 6 for c in cfgs)
        assert all(c['learning_rate'] == res['best_lr'][v] for c in cfgs)
        assert res['summary'][v]['final'] == [final(d) for d in dirs]
    finals = res['summary']['GPT']['final']
    assert finals[0] != finals[1]                                  # the seeds differ
    assert res['target_val_loss'] == pytest.approx(sum(finals) / 2)
    from analysis.lr_sweep import steps_to_reach
    assert res['summary']['DiffNGPT']['steps'] == [steps_to_reach(curve(d), res['target_val_loss'])
                                                   for d in res['runs']['DiffNGPT']]
    md = open(out / 'results.md').read()
    assert 'n=2' in md and 'after 6 steps, seed 1' in md and md.count('| GPT |') == 2
    assert (out / 'sweep_and_seeds.png').stat().st_size > 5000
    # the first run trained two at a time (jobs=2, the default); one at a time finds the same runs
    r2 = subprocess.run(cmd + ['--jobs=1'], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert r2.returncode == 0 and '== training' not in r2.stdout and r2.stdout.count(': reusing ') == 8
    assert json.load(open(out / 'results.json'))['summary'] == res['summary']
    bad = subprocess.run(cmd + ['--lrs=[]'], cwd=ROOT, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and 'lrs' in bad.stderr
    bad = subprocess.run(cmd + ['--jobs=0'], cwd=ROOT, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and 'jobs=0' in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = subprocess.run(cmd + ['--lr_extend=-1'], cwd=ROOT, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and 'lr_extend=-1' in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_variants_compare_a_diverged_lr_loses_the_sweep(tiny_data, tmp_path):
    """A sweep run stopped by a non-finite loss counts as diverged (inf), not as a failure of the study."""
    r = subprocess.run(['./launcher.sh', 'variants_compare', '--quick=True', "--variants=['GPT']", '--lrs=[1e-3, 1e6]',
                        '--lr_extend=0', '--seeds=[1]', '--data=tiny', f'--data_root={tiny_data}', f'--out_dir={tmp_path}'],
                       cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.load(open(tmp_path / 'quick' / 'results.json'))
    assert res['sweep']['GPT'] == {'0.001': pytest.approx(res['summary']['GPT']['final'][0]), '1e+06': math.inf}
    assert res['best_lr']['GPT'] == 1e-3 and '| diverged |' in open(tmp_path / 'quick' / 'results.md').read()
