"""Encoder-decoder vs decoder-only: trains (or reuses) the study's runs on local data for every seed and writes a
table (perplexity, ROUGE, ratios next to the predictions, scaling, transfer: mean ± std over seeds; training
tokens/s, peak memory, parameters, supervised-token fraction from one benchmark) and figures under figures/encdec/.

    ./launcher.sh encdec_study                       # = python analysis/encdec_study.py config/encdec_study.py
    ./launcher.sh encdec_study --quick=True          # seconds: tiny models, a few steps, 2 seeds (smoke test)
    ./launcher.sh encdec_study --reuse=False         # retrain every run (default: keep finished runs of the same arguments)

Phases: (1) every training run of every seed, `jobs` side by side (analysis.study.in_parallel; on a 2-core
CPU two 1-thread runs take about as long as one); then the transfer runs, which start from the same seed's
samsum_deconly; (2) evaluations, also side by side; (3) the throughput/memory benchmark ALONE (it measures
speed, so nothing runs beside it), on the first seed's models: speed and memory do not depend on the seed.

Data: data/<textbooks_data> and data/<samsum_data> when prepared (prepare/tiny_textbooks.py,
prepare/samsum.py, e.g. from downloaded files with --source). Otherwise offline stand-ins are made
and SAID SO in the table: textbook-shaped documents = the docstrings of this Python's standard
library; SAMSum-shaped pairs = generated chit-chat dialogues with template summaries. The stand-ins use
one fixed data seed (DATA_SEED): every training seed sees the same data.
--quick=True writes under <out_dir>/quick/ (figures too) and uses smaller stand-ins (data/*_standin_quick).
"""
import ast
import json
import math
import os
import random
import sys
import sysconfig
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

import configurator  # noqa: E402
from configurator import Each, OneOf, Range, Text  # noqa: E402
from analysis.study import (ROOT, check_seeds, curve, fmt, in_parallel, mean_std, pyplot, read_metrics,  # noqa: E402
                            run_script, save_figure, train_run)
import data as datalib  # noqa: E402
import objectives  # noqa: E402
from checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

SCALE_DIMS = {'tiny': (128, 2, 4), 'small': (256, 4, 8), 'medium': (512, 6, 8), 'large': (768, 8, 12)}

out_dir: Text('folder for the runs and tables') = 'out/encdec_study'
data_root: Text('folder of data sets') = 'data'
textbooks_data: Text('data set name') = 'tiny_textbooks'  # used when prepared; else the stand-in
                                    # data/tiny_textbooks_standin
samsum_data: Text('data set name') = 'samsum'  # used when prepared; else the stand-in data/samsum_standin
standin_vocab: Range(256 + len(datalib.SPECIALS)) = 1024  # bpe vocabulary of the stand-ins (the 256 bytes and the
                                    # special tokens at least, as data.train_bpe requires)
seeds: Each(Range(0), min_len=1) = [1, 2, 3]  # training seeds: every run is trained once per seed
jobs: Range(1) = 2                  # training runs (and evaluations) side by side; never beside the benchmark
max_iters: Range(1) = 250           # every run (overrides the problem configs; their warmup_iters is 30)
small_iters: Range(1) = 100         # samsum_scale_small (about 7x the tiny model's compute per step)
scales: Each(OneOf(tuple(SCALE_DIMS)), min_len=1) = ['tiny', 'small']  # scaling configs trained here (medium/large:
                                    # configs only on CPU)
transfer: bool = True               # samsum_encdec initialized from samsum_deconly (same seed) vs scratch
eval_records: Range(1) = 200        # records scored for perplexity (val split)
generate_records: Range(0) = 50     # SAMSum summaries generated for ROUGE
bench_rounds: Range(1) = 3          # throughput: interleaved rounds of bench_steps steps per model
bench_steps: Range(1) = 4
threads: Range(1) = 1               # torch threads per training, evaluation and the benchmark
reuse: bool = True                  # keep a finished run made with the same arguments (and its evaluation)
quick: bool = False                 # tiny models, a few steps, the first two seeds: the whole study in seconds (tests)
figures_dir: Text('folder for the figures') = 'figures/encdec'
RULES = [("'tiny' in scales", "the tiny scale is samsum_encdec, the study's reference point")]

DATA_SEED = 1337                    # the stand-ins' generator seed: the same data for every training seed
PREDICTIONS = {'ppl': (2.0, 3.0), 'slower': (1.5, 2.0), 'memory': (1.3, 1.5)}
MAIN = ['textbooks_deconly', 'textbooks_encdec', 'samsum_deconly', 'samsum_encdec']
QUICK = dict(max_iters=6, small_iters=3, eval_records=8, generate_records=2, bench_rounds=1, bench_steps=1,
             standin_vocab=300)
QUICK_ARGS = ['--n_embd=32', '--n_head=2', '--batch_size=4', '--eval_interval=3', '--eval_iters=1', '--warmup_iters=1',
              '--log_interval=3', '--log_figures=False']  # tiny models for --quick (after the problem config, before run-specific args)
STANDIN_QUICK = {'textbooks_docs': 150, 'samsum_rows': (300, 30)}


def apply_quick(cfg):
    """--quick=True: smaller everything, the first two seeds, outputs under <out_dir>/quick/."""
    g = globals()
    g.update(QUICK, seeds=seeds[:2], out_dir=os.path.join(out_dir, 'quick'))
    g['figures_dir'] = os.path.join(g['out_dir'], 'figures')
    cfg.update({k: g[k] for k in (*QUICK, 'seeds', 'out_dir', 'figures_dir')})


# ----------------------------------------------------------------------------- offline stand-ins

def standin_textbooks(path, limit=None):
    """Textbook-shaped documents: stdlib docstrings of 300+ characters (prose explaining code)."""
    root = sysconfig.get_paths()['stdlib']
    docs = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ('site-packages', 'dist-packages', '__pycache__', 'test', 'tests',
                                                       'idle_test'))
        for f in sorted(files):
            if not f.endswith('.py'):
                continue
            try:
                with open(os.path.join(d, f), encoding='utf-8') as fh:
                    tree = ast.parse(fh.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                    s = ast.get_docstring(node)
                    if s and len(s) >= 300:
                        docs.append(s)
    rnd = random.Random(DATA_SEED)
    rnd.shuffle(docs)
    docs = docs[:limit] if limit else docs
    os.makedirs(path, exist_ok=True)
    n_test = max(1, len(docs) // 40)
    for name, part in (('train', docs[n_test:]), ('test', docs[:n_test])):  # the hub has train and test
        with open(os.path.join(path, f'{name}.jsonl'), 'w') as f:
            for i, t in enumerate(part):
                f.write(json.dumps({'text': '', 'textbook': t, 'idx': i}) + '\n')
    return len(docs)


NAMES = ['Anna', 'Tom', 'Kate', 'Mike', 'Olivia', 'Jack', 'Emma', 'Liam', 'Sophie', 'Noah', 'Mia', 'Lucas',
         'Chloe', 'Ethan', 'Grace', 'Oscar', 'Ella', 'Leo', 'Ruby', 'Max']
PLACES = ['cinema', 'park', 'gym', 'library', 'cafe', 'station', 'office', 'beach', 'museum', 'restaurant', 'mall', 'pool']
DAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday', 'tomorrow', 'tonight']
TIMES = ['9 am', '10 am', '11 am', 'noon', '1 pm', '3 pm', '5 pm', '6 pm', '7 pm', '8 pm', '9 pm']
ITEMS = ['charger', 'umbrella', 'bike', 'notes', 'book', 'car', 'camera', 'laptop', 'tent', 'drill']
FOOD = ['pizza', 'cake', 'chips', 'juice', 'fruit', 'sandwiches', 'ice cream', 'salad']
FILLER = ['haha', 'ok', ':)', 'sure', 'cool', 'wait a sec', 'lol', 'great']


def standin_dialogue(rnd):
    """One SAMSum-shaped (dialogue, summary): the summary copies names, places, days and times."""
    a, b, c = rnd.sample(NAMES, 3)
    day, place, tm, item, food = rnd.choice(DAYS), rnd.choice(PLACES), rnd.choice(TIMES), rnd.choice(ITEMS), rnd.choice(FOOD)
    k = rnd.randrange(5)
    if k == 0:
        lines = [(a, f"Hi {b}! Are you free {'on ' if day[0].isupper() else ''}{day}?"), (b, 'I think so, why?'),
                 (a, f"Let's go to the {place} at {tm}."), (b, 'Great, see you there!')]
        summ = f"{a} and {b} will go to the {place} {'on ' if day[0].isupper() else ''}{day} at {tm}."
    elif k == 1:
        lines = [(a, f"{b}, do you want to come to the {place} with me {day}?"), (b, "Sorry, I can't, I have to work."),
                 (a, 'No problem, maybe next time.')]
        summ = f"{b} can't go to the {place} with {a} {day} because {b} has to work."
    elif k == 2:
        lines = [(a, f"{b}, can I borrow your {item}?"), (b, 'Sure, when do you need it?'), (a, f'{day.capitalize()}.'),
                 (b, f"OK, I'll bring it to the {place}.")]
        summ = f"{b} will lend {a} the {item} and bring it to the {place} {day}."
    elif k == 3:
        lines = [(a, f"I'm running late, I'll be there at {tm}."), (b, f"OK, we're waiting at the {place}."),
                 (c, f'{a}, hurry up!')]
        summ = f"{a} is late and will come at {tm}. {b} and {c} are waiting at the {place}."
    else:
        n = rnd.choice(['two', 'three', 'four', 'five'])
        lines = [(a, f'Should I buy {n} bottles of juice for the party?'), (b, f'Yes, and get some {food} too.'),
                 (c, f"I'll bring the {item}."), (a, 'OK!')]
        summ = f"{a} will buy {n} bottles of juice and some {food} for the party. {c} will bring the {item}."
    for _ in range(rnd.randrange(3)):  # chit-chat the summary ignores
        lines.insert(rnd.randrange(1, len(lines) + 1), (rnd.choice([a, b]), rnd.choice(FILLER)))
    return '\n'.join(f'{who}: {t}' for who, t in lines), summ


def standin_samsum(path, n_train=6000, n_eval=300):
    rnd = random.Random(DATA_SEED)
    os.makedirs(path, exist_ok=True)
    for split, n in (('train', n_train), ('validation', n_eval), ('test', n_eval)):
        with open(os.path.join(path, f'{split}.jsonl'), 'w') as f:
            for i in range(n):
                d, s = standin_dialogue(rnd)
                f.write(json.dumps({'id': f'{split}{i}', 'dialogue': d, 'summary': s}) + '\n')
    return n_train + 2 * n_eval


def ensure_data(name, standin, script, make, extra):
    """Name of the data set to use and a note on where it came from."""
    d = os.path.join(data_root, name)
    if datalib.is_prepared(d) and 'seq2seq' in datalib.load_meta(d):
        return name, f"data/{name} ({datalib.load_meta(d).get('source', '?')})"
    d = os.path.join(data_root, standin)
    if not (datalib.is_prepared(d) and 'seq2seq' in datalib.load_meta(d)):
        raw = os.path.join(data_root, 'raw', standin)
        n = make(raw)
        print(f"no prepared data/{name}: writing an offline stand-in ({n} rows) at {raw}", flush=True)
        run_script([f'prepare/{script}.py', f'--source={raw}', f'--out_dir={d}', '--tokenizer=bpe',
                    f'--vocab_size={standin_vocab}', '--force=True'] + extra, threads=threads)
    return standin, f"OFFLINE STAND-IN data/{standin}"


def prepare_data():
    """({'textbooks': data name, 'samsum': data name}, {task: where the data came from})."""
    q = '_quick' if quick else ''  # smaller stand-ins for --quick, under their own names
    make_tb = (lambda p: standin_textbooks(p, STANDIN_QUICK['textbooks_docs'])) if quick else standin_textbooks
    make_ss = (lambda p: standin_samsum(p, *STANDIN_QUICK['samsum_rows'])) if quick else standin_samsum
    tb, tb_note = ensure_data(textbooks_data, f'tiny_textbooks_standin{q}', 'tiny_textbooks', make_tb,
                              ['--min_doc_tokens=32', '--max_doc_tokens=126', '--val_fraction=0.05'])
    ss, ss_note = ensure_data(samsum_data, f'samsum_standin{q}', 'samsum', make_ss, [])
    return {'textbooks': tb, 'samsum': ss}, {'textbooks': tb_note, 'samsum': ss_note}


# ----------------------------------------------------------------------------- runs

def task_of(key):
    return 'samsum' if key.startswith('samsum') else 'textbooks'


def run_dir_of(key, seed):
    return os.path.join(out_dir, 'runs', f'{key}_s{seed}')


def train(key, seed, data_of):
    """One run of one seed into <out_dir>/runs/<key>_s<seed>; a finished run of the same arguments is reused.
    key: a problem config, or samsum_encdec_transfer (samsum_encdec from the same seed's samsum_deconly)."""
    problem, extra = key, []
    if key.startswith('samsum_scale_'):
        extra = [f'--max_iters={small_iters}']
    if key == 'samsum_encdec_transfer':
        problem, extra = 'samsum_encdec', [f"--init_from={run_dir_of('samsum_deconly', seed)}"]
    args = [f'config/{problem}.py', f'--data={data_of[task_of(key)]}', f'--data_root={data_root}',
            f'--max_iters={max_iters}', f'--seed={seed}', *(QUICK_ARGS if quick else []), *extra]
    return train_run(args, os.path.join(out_dir, 'runs'), f'{key}_s{seed}', threads=threads, reuse=reuse)


def train_all(data_of):
    """Every run of every seed: {seed: {key: run dir}}, scaling runs under 'samsum_scale_<s>' (tiny = samsum_encdec).
    Seeds outermost (an interrupted study has whole first seeds to reuse), the longest runs of a seed first."""
    keys = [f'samsum_scale_{s}' for s in scales if s != 'tiny'] + MAIN
    items = [(k, s) for s in seeds for k in keys]
    dirs = in_parallel(lambda ks: train(ks[0], ks[1], data_of), items, jobs)
    runs = {s: {} for s in seeds}
    for (k, s), rd in zip(items, dirs):
        runs[s][k] = rd
    if transfer:  # after the first phase: each starts from its seed's finished samsum_deconly
        for s, rd in zip(seeds, in_parallel(lambda s: train('samsum_encdec_transfer', s, data_of), seeds, jobs)):
            runs[s]['samsum_encdec_transfer'] = rd
    for s in seeds:
        runs[s]['samsum_scale_tiny'] = runs[s]['samsum_encdec']
    return runs


def train_seconds(runs):
    """{run name: seconds train.py measured (train_end)}: the study's training cost, for the docs' time estimate."""
    out = {}
    for s, rs in runs.items():
        for k, rd in rs.items():
            if k != 'samsum_scale_tiny':
                ends = [e for e in read_metrics(rd) if e.get('event') == 'train_end']
                out[os.path.basename(rd)] = ends[0].get('seconds') if ends else None
    return out


def evaluate(run_dir, data_name, gen):
    """eval_tasks.py seq2seq of a run; the result file is named by its settings and lives in the run dir, so a
    retrained run (its dir is cleared) or other settings are never served a stale evaluation."""
    path = os.path.join(run_dir, f'eval_seq2seq_r{eval_records}_g{gen}.json')
    if not (reuse and os.path.exists(path)):
        run_script(['eval_tasks.py', 'seq2seq', f'--ckpt={run_dir}', f'--data={data_name}', f'--data_root={data_root}',
                    '--split=val', f'--max_records={eval_records}', f'--generate={gen}', '--num_samples=2',
                    '--max_new_tokens=48', f'--out={path}'], threads=threads)
    with open(path) as f:
        return json.load(f)


def evaluate_all(runs, data_of):
    """Every run of every seed, side by side: {seed: {key: scores}}; ROUGE of generated summaries on SAMSum."""
    items = [(s, k) for s in seeds for k in runs[s] if k != 'samsum_scale_tiny']
    gen = lambda k: generate_records if k in ('samsum_deconly', 'samsum_encdec', 'samsum_encdec_transfer') else 0
    res = in_parallel(lambda sk: evaluate(runs[sk[0]][sk[1]], data_of[task_of(sk[1])], gen(sk[1])), items, jobs)
    ev = {s: {} for s in seeds}
    for (s, k), r in zip(items, res):
        ev[s][k] = r
    for s in seeds:
        ev[s]['samsum_scale_tiny'] = ev[s]['samsum_encdec']
    return ev


def per_seed(ev, key, field):
    """[value of field for key, one per seed] (None where missing)."""
    return [ev[s][key].get(field) for s in seeds]


# ----------------------------------------------------------------------------- speed and memory

def run_setup(run_dir, **override):
    """(cfg, model, training data) of a run, from its config.json (model flags may be overridden)."""
    with open(os.path.join(run_dir, 'config.json')) as f:
        cfg = {**json.load(f), **override}
    model = GPT(GPTConfig(**{k: cfg[k] for k in GPTConfig.__dataclass_fields__}))
    d = objectives.open_objective_data(cfg, os.path.join(cfg['data_root'], cfg['data']), 'train')
    return cfg, model, d


def batch_tokens(cfg, b, pad_id):
    """(tokens read by the model, supervised tokens) of one batch: source + target input, no padding."""
    read = int((b['x'] != pad_id).sum()) if cfg['objective'] == 'seq2seq' else b['x'].numel()
    if 'src' in b:
        read += int((b['src'] >= 0).sum())
    return read, int((b['y'] != -100).sum())


def saved_activation_bytes(model, b, cfg):
    """Bytes of the tensors autograd keeps for the backward pass (parameters excluded), deduplicated
    by storage: the activation part of training memory, exact and independent of the allocator."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = objectives.objective_loss(model, b, cfg)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def bench(run_dirs):
    """Interleaved timing of full training steps (forward, backward, AdamW) on the same machine
    state, plus memory = 16 bytes/parameter (fp32 weights, grads, Adam m and v) + saved activations."""
    torch.set_num_threads(threads)
    setups = {k: run_setup(v[0], **v[1]) if isinstance(v, tuple) else run_setup(v) for k, v in run_dirs.items()}
    stats = {k: {'read': 0, 'sup': 0, 'sec': [], 'act': []} for k in setups}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (c, m, d) in setups.items()}
    for rnd in range(bench_rounds):
        for k, (cfg, model, d) in setups.items():
            pad = d.ids['pad'] if hasattr(d, 'ids') else -1
            model.train()
            bs = [objectives.objective_batch(cfg, d, 10_000 + rnd * 100 + i) for i in range(bench_steps + 1)]
            for i, b in enumerate(bs):
                t0 = time.perf_counter()
                objectives.objective_loss(model, b, cfg).backward()
                opts[k].step()
                opts[k].zero_grad(set_to_none=True)
                if i == 0:
                    continue  # warm-up step
                stats[k]['sec'].append(time.perf_counter() - t0)
                r, s = batch_tokens(cfg, b, pad)
                stats[k]['read'] += r
                stats[k]['sup'] += s
            stats[k]['act'].append(saved_activation_bytes(model, bs[0], cfg))
    out = {}
    for k, (cfg, model, d) in setups.items():
        s = stats[k]
        n = model.num_params()
        out[k] = {'params': n, 'tok_s': s['read'] / sum(s['sec']), 'sup_frac': s['sup'] / s['read'],
                  'tokens_per_step': s['read'] / len(s['sec']), 'mem_mb': (16 * n + max(s['act'])) / 2 ** 20,
                  'act_mb': max(s['act']) / 2 ** 20}
    return out


def bench_all(runs):
    """bench() of the four main runs (of one seed: speed and memory do not depend on it), plus an untrained
    encoder-decoder as deep as the decoder-only (5+5 layers): the predictions' speed/memory setting (same depth
    per stack) next to this study's matched parameters. Run alone: nothing else may compete for the CPU."""
    deep = {'n_layer': 5, 'n_encoder_layer': 5}
    return bench({**{k: runs[k] for k in MAIN}, 'textbooks_encdec_5+5': (runs['textbooks_encdec'], deep),
                  'samsum_encdec_5+5': (runs['samsum_encdec'], deep)})


# ----------------------------------------------------------------------------- figures

def band(ax, run_dirs, label, **kw):
    """Mean validation loss over seeds by step, with a ± 1 std band."""
    cs = [curve(rd) for rd in run_dirs]
    n = min(len(c) for c in cs)
    steps = [p[0] for p in cs[0][:n]]
    ms = [mean_std([c[i][1] for c in cs]) for i in range(n)]
    line = ax.plot(steps, [m for m, _ in ms], marker='o', markersize=3, label=label, **kw)[0]
    ax.fill_between(steps, [m - sd for m, sd in ms], [m + sd for m, sd in ms], color=line.get_color(), alpha=0.25)


def fig_curves(runs, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, task in zip(axes, ('textbooks', 'samsum')):
        for k in (f'{task}_deconly', f'{task}_encdec'):
            what = 'LM loss, all tokens' if k == 'textbooks_deconly' else 'target-token loss'
            band(ax, [runs[s][k] for s in seeds], f'{k} ({what})')
        ax.set_xlabel('optimizer step (same tokens read per step)')
        ax.set_ylabel('validation loss (nats/token)')
        ax.set_title(f'{task}: validation loss, mean ± std over {len(seeds)} seeds')
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def param_count(scale, vocab):
    d, L, h = SCALE_DIMS[scale]
    with torch.device('meta'):
        m = GPT(GPTConfig(vocab_size=vocab, block_size=128, n_layer=L, n_encoder_layer=L, n_head=h, n_embd=d,
                          pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False))
    return m.num_params()


def fig_scaling(points, deconly, vocab, path):
    """points {scale: (params, [target ppl per seed])}, deconly (params, [ppl per seed]): mean with ± std bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = sorted(points, key=lambda s: points[s][0])
    ms = [mean_std(points[s][1]) for s in xs]
    ax.errorbar([points[s][0] for s in xs], [m for m, _ in ms], yerr=[sd for _, sd in ms], marker='o', capsize=4,
                label='encoder-decoder (trained here)')
    for s, (m, _) in zip(xs, ms):
        ax.annotate(s, (points[s][0], m), textcoords='offset points', xytext=(5, 5), fontsize=8)
    m, sd = mean_std(deconly[1])
    ax.errorbar([deconly[0]], [m], yerr=[sd], marker='s', linestyle='none', capsize=4, color='C3',
                label='decoder-only 5 layers (samsum_deconly)')
    for s in SCALE_DIMS:
        if s not in points:
            n = param_count(s, vocab)
            ax.axvline(n, color='gray', linestyle=':', alpha=0.7)
            ax.annotate(f'{s}\n(config only)', (n, ax.get_ylim()[1]), fontsize=7, va='top', ha='right', color='gray')
    ax.set_xscale('log')
    ax.set_xlabel('parameters')
    ax.set_ylabel('summary perplexity (val)')
    ax.set_title(f'SAMSum scaling at {max_iters}/{small_iters} steps (tiny/small), mean ± std, {len(seeds)} seeds',
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def fig_transfer(runs, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    band(ax, [runs[s]['samsum_encdec'] for s in seeds], 'from scratch')
    band(ax, [runs[s]['samsum_encdec_transfer'] for s in seeds],
         'init_from samsum_deconly of the same seed (decoder + encoder copied)')
    ax.set_xlabel('optimizer step')
    ax.set_ylabel('validation summary loss (nats/token)')
    ax.set_title(f'SAMSum encoder-decoder: transfer vs scratch (mean ± std, {len(seeds)} seeds)', fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def fig_attention(runs, data_of):
    """Attention maps of the first seed's encoder-decoders only (a picture of one model, not a measurement)."""
    from analysis.encdec_attention import plot_record
    s = seeds[0]
    for task, data_name in data_of.items():
        ck = load_checkpoint(runs[s][f'{task}_encdec'])
        model, tok = model_from_checkpoint(ck)
        recs = datalib.open_seq2seq(os.path.join(data_root, data_name), 'val')
        plot_record(model, tok, recs[0], os.path.join(figures_dir, f'attention_{task}.png'),
                    f'{task} ({data_name}) val[0]: encoder-decoder attention maps (seed {s})',
                    n_src=64 if task == 'samsum' else 32, n_tgt=24)


def scaling_points(runs, ev):
    """{scale: (params, [target ppl per seed])} of the trained scales."""
    return {s: (run_setup(runs[seeds[0]][f'samsum_scale_{s}'])[1].num_params(), per_seed(ev, f'samsum_scale_{s}', 'target_ppl'))
            for s in scales}


def write_figures(runs, ev, b, data_of):
    """Every figure; returns the scaling points and the padded vocabulary."""
    os.makedirs(figures_dir, exist_ok=True)
    fig_curves(runs, os.path.join(figures_dir, 'curves.png'))
    vocab = datalib.load_meta(os.path.join(data_root, data_of['samsum']))['vocab_size']
    vocab = 64 * math.ceil(vocab / 64)
    pts = scaling_points(runs, ev)
    fig_scaling(pts, (b['samsum_deconly']['params'], per_seed(ev, 'samsum_deconly', 'target_ppl')), vocab,
                os.path.join(figures_dir, 'scaling.png'))
    if transfer:
        fig_transfer(runs, os.path.join(figures_dir, 'transfer.png'))
    fig_attention(runs, data_of)
    return pts, vocab


# ----------------------------------------------------------------------------- tables

def num(x, nd=2):
    return '' if x is None else (f'{x:,.{nd}f}' if isinstance(x, float) else f'{x:,}')


def ms(values, nd=2):
    """'mean ± std' over seeds ('' when a value is missing)."""
    return '' if not values or any(v is None for v in values) else fmt(values, nd)


def verdict(values, lo, hi):
    """The mean against [lo, hi], and how many seeds fall in the range."""
    m = mean_std(values)[0]
    k = sum(lo <= v <= hi for v in values)
    return ('in range' if lo <= m <= hi else ('below' if m < lo else 'above')) + f' ({k}/{len(values)} seeds in range)'


def table_runs(notes, ev, b):
    n = len(seeds)
    L = ["# Encoder-decoder vs decoder-only (CPU scale)", '',
         f"Data: textbooks = {notes['textbooks']}; SAMSum = {notes['samsum']}.",
         f"Every run: {max_iters} steps of 16 sequences/records, block 128, d_model 128, 4 heads, rope/rmsnorm/swiglu; "
         f"encoder-decoder 2+2 layers vs decoder-only 5 layers{' (--quick: overridden by ' + ' '.join(QUICK_ARGS) + ')' if quick else ''}; seeds {seeds} (the data are the same for every seed). "
         f"torch threads: {threads}. Perplexity on {eval_records} val records: target = the second half / the summary "
         f"(+ end token), scored identically for both architectures (fewer when the split is smaller: column 'records'); "
         f"document = every token of the document (decoder-only LM). Perplexity and ROUGE: mean ± std over the {n} seeds; "
         f"tokens/s, memory and supervised fraction: one benchmark of the seed-{seeds[0]} models (the seed changes neither).", '',
         '| problem | form | records | params | target ppl | document ppl | ROUGE-1 | ROUGE-2 | ROUGE-L | train tokens/s | '
         'peak train memory (MB) | supervised-token fraction |', '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for k in MAIN + (['samsum_encdec_transfer'] if transfer else []):
        e, bb = ev[seeds[0]][k], b.get(k, b.get('samsum_encdec'))
        rouge = [ms(per_seed(ev, k, r), 1) if r in e else '' for r in ('rouge1', 'rouge2', 'rougeL')]
        doc = ms(per_seed(ev, k, 'document_ppl')) if 'document_ppl' in e else ''
        L.append(f"| {k} | {e['form']} | {e['records']} | {num(bb['params'])} | {ms(per_seed(ev, k, 'target_ppl'))} | {doc} | "
                 f"{' | '.join(rouge)} | {num(bb['tok_s'], 0) if k in b else '(as samsum_encdec)'} | "
                 f"{num(bb['mem_mb'], 1) if k in b else ''} | {num(bb['sup_frac']) if k in b else ''} |")
    return L


def table_ratios(ev, b):
    """Encoder-decoder / decoder-only ratios per data set: (lines, {task: ratios}); perplexity ratios per seed
    (encoder-decoder of seed s over decoder-only of seed s), then mean ± std."""
    L = ['', f'Ratios, encoder-decoder / decoder-only, next to the predictions for raw text (perplexity ratios: per seed, '
             f'mean ± std over {len(seeds)} seeds; speed, memory, parameters: one benchmark):', '',
         '| data | ppl ratio (target) | ppl ratio vs decoder-only document ppl | slowdown (tok/s dec / enc-dec) | memory ratio | params ratio |',
         '|---|---|---|---|---|---|']
    ratios = {}
    for task in ('textbooks', 'samsum'):
        e, d = f'{task}_encdec', f'{task}_deconly'
        be, bd = b[e], b[d]
        r = {'ppl': [ev[s][e]['target_ppl'] / ev[s][d]['target_ppl'] for s in seeds], 'slower': bd['tok_s'] / be['tok_s'],
             'memory': be['mem_mb'] / bd['mem_mb'], 'params': be['params'] / bd['params']}
        r['ppl_doc'] = ([ev[s][e]['target_ppl'] / ev[s][d]['document_ppl'] for s in seeds]
                        if 'document_ppl' in ev[seeds[0]][d] else None)
        ratios[task] = r
        L.append(f"| {task} | {ms(r['ppl'])} | {ms(r['ppl_doc'])} | {r['slower']:.2f} | {r['memory']:.2f} | {r['params']:.2f} |")
        bx = b[f'{task}_encdec_5+5']
        r['slower_5+5'], r['memory_5+5'] = bd['tok_s'] / bx['tok_s'], bx['mem_mb'] / bd['mem_mb']
        L.append(f"| {task}, enc-dec 5+5 layers (bench only, untrained) | | | {r['slower_5+5']:.2f} | {r['memory_5+5']:.2f} | "
                 f"{bx['params'] / bd['params']:.2f} |")
    return L, ratios


def table_predictions(r):
    """The textbooks ratios r against PREDICTIONS."""
    L = ['', '| prediction (raw text) | predicted | measured (textbooks, matched params 2+2 vs 5) | verdict | '
             'measured (enc-dec 5+5 vs 5, same depth) | verdict |', '|---|---|---|---|---|---|']
    for key, label in (('ppl', 'perplexity worse (target ppl ratio)'), ('slower', 'training slower (tokens/s ratio)'),
                       ('memory', 'memory higher (peak training memory ratio)')):
        lo, hi = PREDICTIONS[key]
        vals = r[key] if isinstance(r[key], list) else [r[key]]
        cell = f"{ms(vals)}x" if len(vals) > 1 else f"{vals[0]:.2f}x (one benchmark)"
        deep_r = r.get(f'{key}_5+5')
        v = verdict(vals, lo, hi) if len(vals) > 1 else verdict(vals, lo, hi).split(' (')[0]
        L.append(f"| {label} | {lo}-{hi}x | {cell} | {v} | "
                 + (f"{deep_r:.2f}x | {verdict([deep_r], lo, hi).split(' (')[0]} |" if deep_r else "not trained | |"))
    return L


def table_scaling(pts, vocab):
    L = ['', f'Scaling (SAMSum encoder-decoder, val summary perplexity, mean ± std over {len(seeds)} seeds):', '',
         '| scale | d_model | layers (enc+dec) | heads | params | steps | target ppl |', '|---|---|---|---|---|---|---|']
    for s, (d, nl, h) in SCALE_DIMS.items():
        if s in pts:
            L.append(f"| {s} | {d} | {nl}+{nl} | {h} | {num(pts[s][0])} | {max_iters if s == 'tiny' else small_iters} | "
                     f"{ms(pts[s][1])} |")
        else:
            L.append(f"| {s} | {d} | {nl}+{nl} | {h} | {num(param_count(s, vocab))} | not run on CPU | |")
    return L


def transfer_curves(runs):
    """{'step': [...], 'scratch': [[loss per seed] per step], 'transfer': [...]} (validation summary loss)."""
    out = {}
    for name, key in (('scratch', 'samsum_encdec'), ('transfer', 'samsum_encdec_transfer')):
        cs = [curve(runs[s][key]) for s in seeds]
        n = min(len(c) for c in cs)
        out['step'] = [p[0] for p in cs[0][:n]]
        out[name] = [[c[i][1] for c in cs] for i in range(n)]
    return out


def transfer_and_samples(runs, ev):
    L = []
    if transfer:
        t = transfer_curves(runs)
        L += ['', f"Transfer: samsum_encdec initialized from samsum_deconly of the same seed vs from scratch "
                  f"(mean ± std over {len(seeds)} seeds):", '', '| step | ' + ' | '.join(map(str, t['step'])) + ' |',
              '|---|' + '---|' * len(t['step']),
              '| scratch: val summary loss | ' + ' | '.join(ms(v, 3) for v in t['scratch']) + ' |',
              '| transfer: val summary loss | ' + ' | '.join(ms(v, 3) for v in t['transfer']) + ' |',
              '| transfer - scratch | ' + ' | '.join(ms([b - a for a, b in zip(x, y)], 3)
                                                     for x, y in zip(t['scratch'], t['transfer'])) + ' |']
    L += ['', f'Samples (greedy, val, seed {seeds[0]}):', '']
    for k in MAIN:
        for s in ev[seeds[0]][k]['samples'][:1]:
            src = s['source'][-160:].replace('\n', ' / ')
            L.append(f"- **{k}** source: `…{src}` | reference: `{s['reference'][:120].replace(chr(10), ' / ')}` | "
                     f"generated: `{s['generated'][:120].replace(chr(10), ' / ')}`")
    return L


def report(notes, runs, ev, b, pts, vocab, t_start, t_train):
    """The study's markdown: (text, ratios)."""
    ratio_lines, ratios = table_ratios(ev, b)
    L = (table_runs(notes, ev, b) + ratio_lines + table_predictions(ratios['textbooks']) + table_scaling(pts, vocab)
         + transfer_and_samples(runs, ev))
    secs = train_seconds(runs)
    total = sum(v for v in secs.values() if v)
    L += ['', f"Throughput/memory: `bench()` in analysis/encdec_study.py, run alone after every training and evaluation, on "
              f"the seed-{seeds[0]} models; {bench_rounds} interleaved rounds x {bench_steps} training steps per model in one "
              f"process; tokens = source + target tokens read (no padding); memory = 16 bytes/parameter "
              f"(fp32 weights, grads, AdamW m, v) + the bytes autograd saves for backward (saved_tensors_hooks).",
          '', f"Time: {len(secs)} training runs, {total:.0f} s of training in all (train_end seconds, {jobs} side by side); "
              f"training phase of this invocation {t_train:.0f} s, study wall time {time.time() - t_start:.0f} s "
              f"(finished runs and evaluations of an earlier invocation are reused)."]
    return '\n'.join(L) + '\n', ratios


def main():
    cfg = configurator.configure(globals())
    check_seeds(seeds)  # before anything is written
    if quick:
        apply_quick(cfg)
    t_start = time.time()
    os.chdir(ROOT)
    torch.manual_seed(seeds[0])
    data_of, notes = prepare_data()
    print(f"== training: seeds {seeds}, {jobs} runs side by side", flush=True)
    runs = train_all(data_of)
    t_train = time.time() - t_start
    print("== evaluating", flush=True)
    ev = evaluate_all(runs, data_of)
    print(f"== speed and memory (interleaved, seed {seeds[0]} models, nothing else running)", flush=True)
    b = bench_all(runs[seeds[0]])
    pts, vocab = write_figures(runs, ev, b, data_of)
    text, ratios = report(notes, runs, ev, b, pts, vocab, t_start, t_train)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'encdec_study.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(out_dir, 'encdec_study.json'), 'w') as f:
        json.dump({'seeds': seeds, 'eval': {str(s): ev[s] for s in seeds}, 'bench': b, 'ratios': ratios,
                   'scaling': {s: {'params': p, 'target_ppl': v} for s, (p, v) in pts.items()},
                   'transfer': transfer_curves(runs) if transfer else None, 'train_seconds': train_seconds(runs),
                   'runs': {str(s): runs[s] for s in seeds}, 'wall_seconds': time.time() - t_start, 'config': cfg},
                  f, indent=1, default=str)
    print(text)
    print(f"wrote {os.path.join(out_dir, 'encdec_study.md')}, encdec_study.json and figures in {figures_dir}/")


if __name__ == '__main__':
    configurator.run_main(main)
