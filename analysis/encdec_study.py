"""Encoder-decoder vs decoder-only: trains (or reuses) the study's runs on local data and writes a
table (perplexity, training tokens/s, peak memory, parameters, supervised-token fraction, samples,
ratios next to the predictions) and figures under figures/encdec/.

    ./launcher.sh encdec_study                       # = python analysis/encdec_study.py config/encdec_study.py
    ./launcher.sh encdec_study --reuse=True          # keep the finished runs (and evals) of an earlier invocation

Data: data/<textbooks_data> and data/<samsum_data> when prepared (prepare/tiny_textbooks.py,
prepare/samsum.py, e.g. from downloaded files with --source). Otherwise offline stand-ins are made
and SAID SO in the table: textbook-shaped documents = the docstrings of this Python's standard
library; SAMSum-shaped pairs = generated chit-chat dialogues with template summaries.
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
from analysis.study import ROOT, curve, pyplot, run_script, train_run  # noqa: E402
import data as datalib  # noqa: E402
import objectives  # noqa: E402
from checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

out_dir = 'out/encdec_study'
data_root = 'data'
textbooks_data = 'tiny_textbooks'   # used when prepared; else the stand-in data/tiny_textbooks_standin
samsum_data = 'samsum'              # used when prepared; else the stand-in data/samsum_standin
standin_vocab = 1024                # bpe vocabulary of the stand-ins
max_iters = 250                     # every run (overrides the problem configs)
small_iters = 100                   # samsum_scale_small (about 7x the tiny model's compute per step)
scales = ['tiny', 'small']          # scaling configs trained here (medium/large: configs only on CPU)
transfer = True                     # samsum_encdec initialized from samsum_deconly vs scratch
eval_records = 200                  # records scored for perplexity (val split)
generate_records = 50               # SAMSum summaries generated for ROUGE
bench_rounds = 3                    # throughput: interleaved rounds of bench_steps steps per model
bench_steps = 4
threads = 1                         # torch threads for training and the benchmark
reuse = False                       # keep a finished run made with the same arguments (and its eval)
figures_dir = 'figures/encdec'
seed = 1337

PREDICTIONS = {'ppl': (2.0, 3.0), 'slower': (1.5, 2.0), 'memory': (1.3, 1.5)}
MAIN = ['textbooks_deconly', 'textbooks_encdec', 'samsum_deconly', 'samsum_encdec']
SCALE_DIMS = {'tiny': (128, 2, 4), 'small': (256, 4, 8), 'medium': (512, 6, 8), 'large': (768, 8, 12)}


# ----------------------------------------------------------------------------- offline stand-ins

def standin_textbooks(path):
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
    rnd = random.Random(seed)
    rnd.shuffle(docs)
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
    rnd = random.Random(seed)
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
    tb, tb_note = ensure_data(textbooks_data, 'tiny_textbooks_standin', 'tiny_textbooks', standin_textbooks,
                              ['--min_doc_tokens=32', '--max_doc_tokens=126', '--val_fraction=0.05'])
    ss, ss_note = ensure_data(samsum_data, 'samsum_standin', 'samsum', standin_samsum, [])
    return {'textbooks': tb, 'samsum': ss}, {'textbooks': tb_note, 'samsum': ss_note}


# ----------------------------------------------------------------------------- runs

def train(problem, data_name, name=None, extra=()):
    """config/<problem>.py into <out_dir>/runs/<name>; --reuse=True keeps a finished run of the same arguments."""
    return train_run([f'config/{problem}.py', f'--data={data_name}', f'--data_root={data_root}',
                      f'--max_iters={max_iters}', f'--seed={seed}', *extra],
                     os.path.join(out_dir, 'runs'), name or f'{problem}_s{seed}', threads=threads, reuse=reuse)


def train_all(data_of):
    """The four main runs (+ transfer) and the scaling runs: ({key: run dir}, {scale: run dir})."""
    runs = {p: train(p, data_of[p.split('_')[0]]) for p in MAIN}
    scale_runs = {'tiny': runs['samsum_encdec']}  # samsum_encdec is the tiny scaling config
    for s in scales:
        if s != 'tiny':
            scale_runs[s] = train(f'samsum_scale_{s}', data_of['samsum'], extra=[f'--max_iters={small_iters}'])
    if transfer:
        runs['samsum_encdec_transfer'] = train('samsum_encdec', data_of['samsum'], name=f'samsum_encdec_transfer_s{seed}',
                                               extra=[f"--init_from={runs['samsum_deconly']}"])
    return runs, scale_runs


def evaluate(run_dir, data_name, gen):
    path = os.path.join(run_dir, 'eval_seq2seq.json')
    if not (reuse and os.path.exists(path)):
        run_script(['eval_tasks.py', 'seq2seq', f'--ckpt={run_dir}', f'--data={data_name}', f'--data_root={data_root}',
                    '--split=val', f'--max_records={eval_records}', f'--generate={gen}', '--num_samples=2',
                    '--max_new_tokens=48', f'--out={path}'], threads=threads)
    with open(path) as f:
        return json.load(f)


def evaluate_all(runs, scale_runs, data_of):
    """eval_tasks.py seq2seq of every run: ({key: scores}, {scale: scores}); ROUGE samples on SAMSum."""
    ev = {k: evaluate(rd, data_of[k.split('_')[0]], generate_records if k.startswith('samsum') else 0)
          for k, rd in runs.items()}
    ev_scale = {s: (ev['samsum_encdec'] if s == 'tiny' else evaluate(rd, data_of['samsum'], 0))
                for s, rd in scale_runs.items()}
    return ev, ev_scale


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
    """bench() of the four main runs, plus an untrained encoder-decoder as deep as the decoder-only (5+5
    layers): the predictions' speed/memory setting (same depth per stack) next to this study's matched parameters."""
    deep = {'n_layer': 5, 'n_encoder_layer': 5}
    return bench({**{k: runs[k] for k in MAIN}, 'textbooks_encdec_5+5': (runs['textbooks_encdec'], deep),
                  'samsum_encdec_5+5': (runs['samsum_encdec'], deep)})


# ----------------------------------------------------------------------------- figures

def fig_curves(runs, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, task in zip(axes, ('textbooks', 'samsum')):
        for k in (f'{task}_deconly', f'{task}_encdec'):
            pts = curve(runs[k])
            what = 'LM loss, all tokens' if k == 'textbooks_deconly' else 'target-token loss'
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=f'{k} ({what})')
        ax.set_xlabel('optimizer step (same tokens read per step)')
        ax.set_ylabel('validation loss (nats/token)')
        ax.set_title(f'{task}: validation loss during training')
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def param_count(scale, vocab):
    d, L, h = SCALE_DIMS[scale]
    with torch.device('meta'):
        m = GPT(GPTConfig(vocab_size=vocab, block_size=128, n_layer=L, n_encoder_layer=L, n_head=h, n_embd=d,
                          pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False))
    return m.num_params()


def fig_scaling(points, deconly, vocab, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = sorted(points)
    ax.plot([points[s][0] for s in xs], [points[s][1] for s in xs], marker='o', label='encoder-decoder (trained here)')
    for s in xs:
        ax.annotate(s, (points[s][0], points[s][1]), textcoords='offset points', xytext=(5, 5), fontsize=8)
    ax.plot([deconly[0]], [deconly[1]], marker='s', linestyle='none', color='C3', label='decoder-only 5 layers (samsum_deconly)')
    for s in SCALE_DIMS:
        if s not in points:
            n = param_count(s, vocab)
            ax.axvline(n, color='gray', linestyle=':', alpha=0.7)
            ax.annotate(f'{s}\n(config only)', (n, ax.get_ylim()[1]), fontsize=7, va='top', ha='right', color='gray')
    ax.set_xscale('log')
    ax.set_xlabel('parameters')
    ax.set_ylabel('summary perplexity (val)')
    ax.set_title(f'SAMSum scaling at {max_iters}/{small_iters} steps (tiny/small)')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fig_transfer(scratch, transferred, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for rd, label in ((scratch, 'from scratch'), (transferred, 'init_from samsum_deconly (decoder + encoder copied)')):
        pts = curve(rd)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=label)
    ax.set_xlabel('optimizer step')
    ax.set_ylabel('validation summary loss (nats/token)')
    ax.set_title('SAMSum encoder-decoder: transfer vs scratch')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fig_attention(runs, data_of):
    from analysis.encdec_attention import plot_record
    for task, data_name in data_of.items():
        ck = load_checkpoint(runs[f'{task}_encdec'])
        model, tok = model_from_checkpoint(ck)
        recs = datalib.open_seq2seq(os.path.join(data_root, data_name), 'val')
        plot_record(model, tok, recs[0], os.path.join(figures_dir, f'attention_{task}.png'),
                    f'{task} ({data_name}) val[0]: encoder-decoder attention maps', n_src=64 if task == 'samsum' else 32,
                    n_tgt=24)


def write_figures(runs, scale_runs, ev, ev_scale, b, data_of):
    """Every figure; returns the scaling points {scale: (params, target ppl)} and the padded vocabulary."""
    os.makedirs(figures_dir, exist_ok=True)
    fig_curves(runs, os.path.join(figures_dir, 'curves.png'))
    vocab = datalib.load_meta(os.path.join(data_root, data_of['samsum']))['vocab_size']
    vocab = 64 * math.ceil(vocab / 64)
    pts = {s: (run_setup(rd)[1].num_params(), ev_scale[s]['target_ppl']) for s, rd in scale_runs.items()}
    fig_scaling(pts, (b['samsum_deconly']['params'], ev['samsum_deconly']['target_ppl']), vocab,
                os.path.join(figures_dir, 'scaling.png'))
    if transfer:
        fig_transfer(runs['samsum_encdec'], runs['samsum_encdec_transfer'], os.path.join(figures_dir, 'transfer.png'))
    fig_attention(runs, data_of)
    return pts, vocab


# ----------------------------------------------------------------------------- table

def fmt(x, nd=2):
    return '' if x is None else (f'{x:,.{nd}f}' if isinstance(x, float) else f'{x:,}')


def verdict(r, lo, hi):
    return 'in range' if lo <= r <= hi else ('below' if r < lo else 'above')


def table_runs(notes, ev, b):
    L = [f"# Encoder-decoder vs decoder-only (CPU scale)", '',
         f"Data: textbooks = {notes['textbooks']}; SAMSum = {notes['samsum']}.",
         f"Every run: {max_iters} steps of 16 sequences/records, block 128, d_model 128, 4 heads, rope/rmsnorm/swiglu; "
         f"encoder-decoder 2+2 layers vs decoder-only 5 layers. torch threads: {threads}. Perplexity on "
         f"{eval_records} val records: target = the second half / the summary (+ end token), scored identically for "
         f"both architectures (fewer when the split is smaller: column 'records'); document = every token of the document (decoder-only LM).", '',
         '| problem | form | records | params | target ppl | document ppl | ROUGE-1/2/L | train tokens/s | peak train memory (MB) | supervised-token fraction |',
         '|---|---|---|---|---|---|---|---|---|---|']
    for k in MAIN + (['samsum_encdec_transfer'] if transfer else []):
        e, bb = ev[k], b.get(k, b.get('samsum_encdec'))
        rouge = f"{e['rouge1']}/{e['rouge2']}/{e['rougeL']}" if 'rouge1' in e else ''
        L.append(f"| {k} | {e['form']} | {e['records']} | {fmt(bb['params'])} | {fmt(e['target_ppl'])} | {fmt(e.get('document_ppl'))} | "
                 f"{rouge} | {fmt(bb['tok_s'], 0) if k in b else '(as samsum_encdec)'} | "
                 f"{fmt(bb['mem_mb'], 1) if k in b else ''} | {fmt(bb['sup_frac']) if k in b else ''} |")
    return L


def table_ratios(ev, b):
    """Encoder-decoder / decoder-only ratios per data set: (lines, {task: ratios})."""
    L = ['', 'Ratios, encoder-decoder / decoder-only, next to the predictions for raw text:', '',
         '| data | ppl ratio (target) | ppl ratio vs decoder-only document ppl | slowdown (tok/s dec / enc-dec) | memory ratio | params ratio |',
         '|---|---|---|---|---|---|']
    ratios = {}
    for task in ('textbooks', 'samsum'):
        e, d = ev[f'{task}_encdec'], ev[f'{task}_deconly']
        be, bd = b[f'{task}_encdec'], b[f'{task}_deconly']
        r = {'ppl': e['target_ppl'] / d['target_ppl'], 'slower': bd['tok_s'] / be['tok_s'], 'memory': be['mem_mb'] / bd['mem_mb'],
             'params': be['params'] / bd['params']}
        r['ppl_doc'] = e['target_ppl'] / d['document_ppl'] if 'document_ppl' in d else None
        ratios[task] = r
        L.append(f"| {task} | {r['ppl']:.2f} | {fmt(r['ppl_doc'])} | {r['slower']:.2f} | {r['memory']:.2f} | {r['params']:.2f} |")
        bx = b[f'{task}_encdec_5+5']
        r['slower_5+5'], r['memory_5+5'] = bd['tok_s'] / bx['tok_s'], bx['mem_mb'] / bd['mem_mb']
        L.append(f"| {task}, enc-dec 5+5 layers (bench only, untrained) | | | {r['slower_5+5']:.2f} | {r['memory_5+5']:.2f} | "
                 f"{bx['params'] / bd['params']:.2f} |")
    return L, ratios


def table_predictions(r):
    """The textbooks ratios r against PREDICTIONS."""
    L = ['', '| prediction (raw text) | predicted | measured (textbooks, matched params 2+2 vs 5) | verdict | measured (enc-dec 5+5 vs 5, same depth) | verdict |',
         '|---|---|---|---|---|---|']
    for key, label in (('ppl', 'perplexity worse (target ppl ratio)'), ('slower', 'training slower (tokens/s ratio)'),
                       ('memory', 'memory higher (peak training memory ratio)')):
        lo, hi = PREDICTIONS[key]
        deep_r = r.get(f'{key}_5+5')
        L.append(f"| {label} | {lo}-{hi}x | {r[key]:.2f}x | {verdict(r[key], lo, hi)} | "
                 + (f"{deep_r:.2f}x | {verdict(deep_r, lo, hi)} |" if deep_r else "not trained | |"))
    return L


def table_scaling(pts, vocab):
    L = ['', 'Scaling (SAMSum encoder-decoder, val summary perplexity):', '', '| scale | d_model | layers (enc+dec) | heads | params | steps | target ppl |',
         '|---|---|---|---|---|---|---|']
    for s, (d, nl, h) in SCALE_DIMS.items():
        if s in pts:
            L.append(f"| {s} | {d} | {nl}+{nl} | {h} | {fmt(pts[s][0])} | {max_iters if s == 'tiny' else small_iters} | {fmt(pts[s][1])} |")
        else:
            L.append(f"| {s} | {d} | {nl}+{nl} | {h} | {fmt(param_count(s, vocab))} | not run on CPU | |")
    return L


def transfer_and_samples(runs, ev):
    L = []
    if transfer:
        ct, cs = curve(runs['samsum_encdec_transfer']), curve(runs['samsum_encdec'])
        L += ['', f"Transfer: samsum_encdec initialized from samsum_deconly; val summary loss by step "
                  f"(scratch -> transfer): " + ', '.join(f"{a[0]}: {a[1]:.3f} -> {c[1]:.3f}" for a, c in zip(cs, ct))]
    L += ['', 'Samples (greedy, val):', '']
    for k in MAIN:
        for s in ev[k]['samples'][:1]:
            src = s['source'][-160:].replace('\n', ' / ')
            L.append(f"- **{k}** source: `…{src}` | reference: `{s['reference'][:120].replace(chr(10), ' / ')}` | "
                     f"generated: `{s['generated'][:120].replace(chr(10), ' / ')}`")
    return L


def report(notes, runs, ev, b, pts, vocab, t_start):
    """The study's markdown: (text, ratios)."""
    ratio_lines, ratios = table_ratios(ev, b)
    L = (table_runs(notes, ev, b) + ratio_lines + table_predictions(ratios['textbooks']) + table_scaling(pts, vocab)
         + transfer_and_samples(runs, ev))
    L += ['', f"Throughput/memory: `bench()` in analysis/encdec_study.py, {bench_rounds} interleaved rounds x {bench_steps} "
          f"training steps per model on the same process; tokens = source + target tokens read (no padding); memory = 16 bytes/parameter "
          f"(fp32 weights, grads, AdamW m, v) + the bytes autograd saves for backward (saved_tensors_hooks)."
          f" Study wall time: {time.time() - t_start:.0f}s."]
    return '\n'.join(L) + '\n', ratios


def main():
    cfg = configurator.configure(globals())
    t_start = time.time()
    os.chdir(ROOT)
    torch.manual_seed(seed)
    data_of, notes = prepare_data()
    runs, scale_runs = train_all(data_of)
    print("== evaluating", flush=True)
    ev, ev_scale = evaluate_all(runs, scale_runs, data_of)
    print("== speed and memory (interleaved)", flush=True)
    b = bench_all(runs)
    pts, vocab = write_figures(runs, scale_runs, ev, ev_scale, b, data_of)
    text, ratios = report(notes, runs, ev, b, pts, vocab, t_start)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'encdec_study.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(out_dir, 'encdec_study.json'), 'w') as f:
        json.dump({'eval': ev, 'bench': b, 'ratios': ratios, 'scaling': pts, 'config': cfg}, f, indent=1, default=str)
    print(text)
    print(f"wrote {os.path.join(out_dir, 'encdec_study.md')} and figures in {figures_dir}/")


if __name__ == '__main__':
    configurator.run_main(main)
