"""Screenshot a page of analysis/attention_explorer.py in headless Chromium (Selenium + chromedriver, as the
browser test uses them): pick the map, layer and head, pin a query token, save the whole page as a PNG.

    python analysis/explorer_screenshot.py --page=out/samsum_encdec/attention_explorer.html \
        --view=cross --layer=1 --head=1 --query=15 --out=figures/explorer/samsum_encdec_cross.png

Needs chromium + chromium-driver from the distribution (apt-get install -y chromium chromium-driver; .ci/run
installs them) and selenium (requirements.txt).
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text, UserError  # noqa: E402

page: Text("the explorer's HTML file") = ''
out: Text('PNG path') = ''         # '' = the page's path with .png
view: OneOf('', 'self', 'enc', 'cross', 'diff', 'attn1', 'attn2') = ''  # the map ids analysis/attention_explorer.py
                                   # writes ('' = the page's first map); which ones a page has is checked on the page
layer: Range(0) = 0
head: Range(0, also=(-1,)) = -1    # -1 = the mean over heads
query: Range(0, also=(-1,)) = -1   # query token to pin (-1 = none: the page shows the last one)
width: Range(1) = 1500             # window width in pixels; the height follows the page

CHROMIUM, CHROMEDRIVER = shutil.which('chromium') or '/usr/bin/chromium', '/usr/bin/chromedriver'
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
         '--hide-scrollbars')


def chromium(profile, size=(1400, 1000)):
    """A headless Chromium driven by Selenium, its profile in `profile`, the console log kept (the test reads it)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        raise UserError("chromium + chromium-driver are needed: apt-get install -y chromium chromium-driver "
                        "(see .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + (f'--user-data-dir={profile}', f'--window-size={size[0]},{size[1]}'):
        opts.add_argument(flag)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def choose(d, view_id, layer_i, head_i, query_i):
    """Set the page's selectors and pin a query; bad choices are UserErrors naming what the page has."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    ids = d.execute_script("return P.views.map(v => v.id)")
    if view_id and view_id not in ids:
        raise UserError(f"--view={view_id} is not on this page; it has {', '.join(ids)}")
    v = ids.index(view_id) if view_id else 0
    Select(d.find_element(By.ID, 'kind')).select_by_value(str(v))
    n_layer, n_head, n_q = d.execute_script(f"const m = P.views[{v}].maps; "  # (layers, heads, queries, keys)
                                            "return [m.length, m[0].length, m[0][0].length]")
    for name, plural, i, n, low in (('layer', 'layers', layer_i, n_layer, 0), ('head', 'heads', head_i, n_head, -1),
                                    ('query', 'queries', query_i, n_q, -1)):
        if not low <= i < n:
            raise UserError(f"--{name}={i} is out of range: the map has {n} {plural} (0..{n - 1}"
                            + (", or -1)" if low < 0 else ")"))
    Select(d.find_element(By.ID, 'layer')).select_by_value(str(layer_i))
    Select(d.find_element(By.ID, 'head')).select_by_value('mean' if head_i < 0 else str(head_i))
    if query_i >= 0:
        d.find_element(By.CSS_SELECTOR, f'#qtext .tok[data-i="{query_i}"]').click()


def main():
    configurator.configure(globals())
    if not os.path.isfile(page):
        raise UserError(f"no page at --page='{page}'; write one with analysis/attention_explorer.py")
    path = out or os.path.splitext(page)[0] + '.png'
    profile = tempfile.mkdtemp(prefix='explorer-chromium-')
    d = chromium(profile, (width, 1000))
    try:
        d.get('file://' + os.path.abspath(page))
        choose(d, view, layer, head, query)
        for _ in range(3):  # fit the window to the page; the layout reflows when the window changes
            h = d.execute_script("return Math.ceil(document.body.getBoundingClientRect().bottom)")
            d.set_window_size(width, h + 140)  # outer size: the window's own frame takes part of it, even headless
            time.sleep(0.3)
        errors = [e['message'] for e in d.get_log('browser') if e['level'] == 'SEVERE']
        if errors:
            raise UserError(f"the page logged errors: {errors[0][:200]}")
        png = d.get_screenshot_as_png()
        print(f"{d.find_element('id', 'maptitle').text}; {d.find_element('id', 'qsel').text}")
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'wb') as f:  # temporary name, then rename: no half-written PNG
        f.write(png)
    os.replace(path + '.tmp', path)
    print(f"wrote {path}")


if __name__ == '__main__':
    configurator.run_main(main)
