"""analysis/attention_explorer.py: the payload of every model kind, the CLI's errors, and the page itself in a
real headless Chromium (Selenium): no console errors, layer/head switches redraw, hover shows the weights."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

import data
from checkpoint import save_checkpoint
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'analysis'))
import attention_explorer as ax  # noqa: E402

BYTE = {'kind': 'byte'}
PROMPT = 'def f(x): return x'


def make_ckpt(path, seed=0, **flags):
    """A tiny byte-level checkpoint in train.py's format, weights moved off their init."""
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=320, block_size=48, n_layer=2, n_head=2, n_embd=32, **flags)
    m = GPT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    if cfg.ngpt:
        m.normalize_weights()
    save_checkpoint(str(path), {'model': m.state_dict(), 'model_config': cfg.to_dict(), 'tokenizer': BYTE, 'step': 3})
    return m.eval()


def run(*args):
    return subprocess.run([sys.executable, 'analysis/attention_explorer.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})


def payload_of(html):
    m = re.search(r'<script id="payload" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


# ----------------------------------------------------------------------------- python side

@pytest.mark.parametrize('flags, kinds', [
    (dict(), ['self']),
    (dict(pos_emb='rope', ngpt=True, bias=False, mlp='swiglu'), ['self']),
    (dict(attn='diff'), ['diff', 'attn1', 'attn2']),
    (dict(attn='linear', linear_chunk=4), ['self']),
    (dict(n_encoder_layer=3), ['enc', 'self', 'cross'])])
def test_payload_kinds_shapes_and_row_sums(tmp_path, flags, kinds):
    m = make_ckpt(tmp_path / 'c.pt', **flags)
    tok = data.get_tokenizer(BYTE)
    src, x = (tok.encode('Anna: see you at 5?'), [tok.sep_id] + tok.encode('Anna')) if m.config.n_encoder_layer else \
        (None, tok.encode(PROMPT))
    p = ax.build_payload(m, tok, x, src, 'test')
    json.dumps(p)  # plain JSON
    assert [v['id'] for v in p['views']] == kinds
    T, S = len(x), len(src or x)
    assert p['tokens']['tgt'][0] == ('<sep>' if src else 'd') and len(p['tokens']['tgt']) == T
    for v in p['views']:
        a = np.array(v['maps'])
        L = 3 if v['id'] == 'enc' else 2
        assert a.shape == (L, 2, S if v['q'] == 'src' else T, S if v['k'] == 'src' else T), v['id']
        rows = a.sum(-1)
        if v['id'] == 'diff':  # A1 - lambda A2: rows sum to 1 - lambda, and it is the difference of the two maps
            lam = np.array(v['lambda'])[:, None, None]
            assert np.allclose(rows, 1 - lam, atol=2e-3)
            maps = {w['id']: np.array(w['maps']) for w in p['views']}
            assert np.allclose(a, maps['attn1'] - lam[..., None] * maps['attn2'], atol=2e-3)
            assert (a < 0).any() and v['signed']
        else:
            assert np.allclose(rows, 1, atol=2e-3), v['id']
            assert (a >= 0).all() and not v['signed']
        if v['causal']:  # nothing on future keys
            assert np.abs(np.triu(a, 1)).max() == 0
    if 'enc' in kinds:  # the encoder and cross maps really are unmasked
        assert np.array(p['views'][0]['maps'])[0, 0, 0, -1] > 0 and p['views'][2]['k'] == 'src'


def test_payload_equals_the_recording_hook(tmp_path):
    m = make_ckpt(tmp_path / 'c.pt', attn='diff')
    tok = data.get_tokenizer(BYTE)
    x = tok.encode(PROMPT)
    with torch.no_grad(), m.record() as rec:
        m(torch.tensor([x]))
    p = ax.build_payload(m, tok, x, None, 't')
    for v, key in zip(p['views'], ('attn', 'attn1', 'attn2')):
        assert np.allclose(np.array(v['maps'][1]), rec[f'layer1.{key}'][0].numpy(), atol=6e-5)
    assert p['views'][0]['lambda'][1] == pytest.approx(float(m.h[1].attn.diff_lambda().detach()), abs=1e-6)


def test_cli_writes_page_next_to_the_run_and_from_data(tmp_path, tiny_data):
    run_dir = tmp_path / 'run'
    make_ckpt(run_dir / 'ckpt' / 'last.pt')
    r = run(f'--ckpt={run_dir}', f'--prompt={PROMPT}')
    assert r.returncode == 0, r.stderr
    page = (run_dir / 'attention_explorer.html').read_text()
    assert payload_of(page)['tokens']['tgt'] == list(PROMPT)
    assert not re.search(r'(src|href)=["\']?(https?:|//)', page)  # nothing loaded from elsewhere
    out = tmp_path / 'w.html'
    r = run(f'--ckpt={run_dir}/ckpt/last.pt', f'--data={tiny_data}/tiny', '--split=val', '--index=2', '--max_tokens=20',
            f'--out={out}')
    assert r.returncode == 0, r.stderr
    shard = np.concatenate([np.asarray(s) for s in data.open_split(f'{tiny_data}/tiny', 'val')])
    assert payload_of(out.read_text())['tokens']['tgt'] == ax.token_labels(data.get_tokenizer(BYTE), shard[40:60])


def test_init_from_checkpoint_from_a_real_run(tmp_path, tiny_data):
    """A checkpoint that train.py wrote with init_from=<decoder-only ckpt>."""
    base = tmp_path / 'base.pt'
    make_ckpt(base)
    common = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=48', '--batch_size=2', '--max_iters=2',
              '--warmup_iters=1', '--eval_interval=2', '--eval_iters=1', '--log_tensorboard=False', '--log_figures=False', '--device=cpu',
              f'--data_root={tiny_data}', '--data=tiny', f'--out_dir={tmp_path}', '--run_name=ft', '--vocab_size=320']
    r = subprocess.run([sys.executable, 'train.py', *common, f'--init_from={base}'], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(f'--ckpt={tmp_path / "ft"}', '--prompt=import os')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'ft' / 'attention_explorer.html').exists()


@pytest.mark.parametrize('make, args, message', [
    ('text', [], 'not found'),
    ('junk', [], 'cannot be read'),
    ('dec', ['--src=hello'], '--src is for encoder-decoder'),
    ('encdec', ['--prompt=hi'], 'pass the source text'),
    ('dec', ['--prompt=' + 'x' * 60], 'more than 48'),
    ('dec', [], 'nothing to look at'),
    ('dec', ['--prompt=a', '--data=tiny'], 'not both'),
    ('dec', ['--data=nowhere'], 'not found'),
    ('dec', ['--prompt=a', '--layer=1'], "unknown config key 'layer'")])
def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, make, args, message):
    path = tmp_path / 'ckpt.pt'
    if make == 'junk':
        path.write_text('not a checkpoint')
    elif make in ('dec', 'encdec'):
        make_ckpt(path, n_encoder_layer=2 if make == 'encdec' else 0)
    r = run(f'--ckpt={path}', f'--data_root={tmp_path}', *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith('error: ')
    assert not list(tmp_path.rglob('*.html')) and not list(tmp_path.rglob('*.tmp'))


# ----------------------------------------------------------------------------- the page in a real browser

@pytest.fixture(scope='module')
def browser():
    """Headless Chromium through Selenium, set up as analysis/explorer_screenshot.py does; .ci/run installs both
    (a missing one is a failure, not a skip)."""
    from explorer_screenshot import chromium
    profile = tempfile.mkdtemp(prefix='explorer-chromium-')
    driver = chromium(profile)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def severe(driver):
    return [e for e in driver.get_log('browser') if e['level'] == 'SEVERE']


def test_page_in_headless_chromium(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    m = make_ckpt(tmp_path / 'run' / 'ckpt' / 'last.pt', attn='diff')
    r = run(f'--ckpt={tmp_path / "run"}', f'--prompt={PROMPT}')
    assert r.returncode == 0, r.stderr
    page = tmp_path / 'run' / 'attention_explorer.html'
    browser.get(page.as_uri())
    assert severe(browser) == []
    d = browser
    pixels = lambda: d.execute_script("return document.getElementById('heat').toDataURL()")
    kinds = [o.text for o in Select(d.find_element(By.ID, 'kind')).options]
    assert len(kinds) == 3 and 'lambda' in kinds[0]
    assert d.find_element(By.ID, 'lambda').text.startswith('λ (layer 0) =')
    seen = {pixels()}
    Select(d.find_element(By.ID, 'layer')).select_by_value('1')
    seen.add(pixels())
    Select(d.find_element(By.ID, 'head')).select_by_value('1')
    seen.add(pixels())
    Select(d.find_element(By.ID, 'kind')).select_by_index(1)  # attn1, layer 1, head 1 stay chosen
    seen.add(pixels())
    assert len(seen) == 4  # every switch redrew a different matrix
    assert d.find_element(By.ID, 'heat').get_attribute('data-view') == 'attn1'
    # hover query 7: the key tokens carry exactly the recorded weights of layer 1, head 1 (A1)
    with torch.no_grad(), m.record() as rec:
        m(torch.tensor([data.get_tokenizer(BYTE).encode(PROMPT)]))
    want = rec['layer1.attn1'][0, 1, 7].numpy()
    ActionChains(d).move_to_element(d.find_element(By.CSS_SELECTOR, '#qtext .tok[data-i="7"]')).perform()
    keys = d.find_elements(By.CSS_SELECTOR, '#ktext .tok')
    got = [k.get_attribute('data-w') for k in keys]
    assert all(w is not None for w in got[:8]) and all(w is None for w in got[8:])  # future keys masked
    assert np.allclose([float(w) for w in got[:8]], want[:8], atol=1e-4)
    strongest = int(np.argmax(want[:8]))  # the darkest background is on the largest weight
    bg = [sum(int(c) for c in re.findall(r'\d+', k.value_of_css_property('background-color'))[:3]) for k in keys[:8]]
    assert int(np.argmin(bg)) == strongest
    assert 'query 7' in d.find_element(By.ID, 'qsel').text
    # the mean over heads is the mean of the heads, shown the same way
    Select(d.find_element(By.ID, 'head')).select_by_value('mean')
    ActionChains(d).move_to_element(d.find_element(By.CSS_SELECTOR, '#qtext .tok[data-i="5"]')).perform()
    got = [float(k.get_attribute('data-w')) for k in d.find_elements(By.CSS_SELECTOR, '#ktext .tok')[:6]]
    assert np.allclose(got, rec['layer1.attn1'][0, :, 5, :6].mean(0).numpy(), atol=2e-4)
    assert severe(d) == []


def shoot(*args):
    return subprocess.run([sys.executable, 'analysis/explorer_screenshot.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_screenshot_script_pins_the_chosen_map_and_query(tmp_path):
    run_dir = tmp_path / 'run'
    make_ckpt(run_dir / 'ckpt' / 'last.pt', n_encoder_layer=2)
    assert run(f'--ckpt={run_dir}', '--src=Anna: see you at 5?', '--prompt=Anna will').returncode == 0
    page, png = run_dir / 'attention_explorer.html', tmp_path / 'shots' / 'cross.png'
    r = shoot(f'--page={page}', '--view=cross', '--layer=1', '--head=0', '--query=3', '--width=900', f'--out={png}')
    assert r.returncode == 0, r.stderr
    assert 'cross-attention' in r.stdout and 'layer 1, head 0' in r.stdout and 'query 3' in r.stdout, r.stdout
    head = png.read_bytes()[:24]  # a PNG as wide as asked (the height follows the page)
    assert head[:8] == b'\x89PNG\r\n\x1a\n' and int.from_bytes(head[16:20], 'big') == 900
    for bad, message in (('--view=diff', 'it has enc, self, cross'), ('--head=2', 'has 2 heads'),
                         ('--view=cross --query=30', 'queries (0..9, or -1)')):
        r = shoot(f'--page={page}', *bad.split(), f'--out={tmp_path / "bad.png"}')
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / 'bad.png').exists()
