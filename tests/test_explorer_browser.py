"""The explorer in a real browser: Voila serves `nbs/_explorer_app.ipynb` on 127.0.0.1, headless Chromium loads it.

Chromium is driven over the DevTools protocol (the `websockets` client that Voila installs): the page is polled until
the widgets are rendered, then screenshot. Skipped, with the reason, only where Chromium or Voila is absent.

Run as a script to record the docs screenshot:
`python tests/test_explorer_browser.py --shot nbs/images/explorer.png --model efficientnet_lite0 --methods gradcam,rise`."""
import argparse, base64, io, json, os, re, shutil, socket, subprocess, sys, time, urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT/'nbs'/'_explorer_app.ipynb'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
try:
    import voila, websockets.sync.client  # noqa: F401  (test-only dependencies: requirements-peers.txt)
    HAVE_VOILA = True
except ImportError: HAVE_VOILA = False
SIZE = (1280, 1500)   # browser window (w, h)

def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@contextmanager
def voila_app(model='tiny_cnn', methods='gradcam'):
    "Voila serving the explorer app on a free local port; yields its URL"
    port = free_port()
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]),
           'XAIKIT_EXPLORER_MODEL': model, 'XAIKIT_EXPLORER_METHODS': methods, 'MPLBACKEND': 'Agg'}
    p = subprocess.Popen([sys.executable, '-m', 'voila', '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1', str(APP)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
            except OSError:
                if p.poll() is not None: raise RuntimeError(f"voila exited: {p.stdout.read()[-3000:]}")
                time.sleep(0.3)
        yield f'http://127.0.0.1:{port}/'
    finally:
        p.terminate()
        try: p.wait(20)
        except subprocess.TimeoutExpired: p.kill()

class Browser:
    "Headless Chromium driven over the DevTools protocol"
    def __init__(self, profile:Path):
        from websockets.sync.client import connect
        self.p = subprocess.Popen([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-quic',
                                   '--disable-background-networking', '--disable-component-update', '--disable-sync',
                                   '--remote-debugging-port=0', '--remote-allow-origins=*', f'--user-data-dir={profile}',
                                   f'--window-size={SIZE[0]},{SIZE[1]}', 'about:blank'],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0, m = time.time(), None
        while m is None and time.time() - t0 < 60:
            line = self.p.stderr.readline()
            if not line and self.p.poll() is not None: raise RuntimeError('chromium exited before it listened')
            m = re.search(r'DevTools listening on ws://127\.0\.0\.1:(\d+)/', line)
        port = m[1]
        pages = json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=30))
        self._conn = connect(next(x['webSocketDebuggerUrl'] for x in pages if x['type'] == 'page'), max_size=2**27, open_timeout=30)
        self.ws = self._conn.__enter__()
        self.n = 0

    def call(self, method, **params)->dict:
        self.n += 1
        self.ws.send(json.dumps({'id': self.n, 'method': method, 'params': params}))
        while True:
            r = json.loads(self.ws.recv(timeout=120))
            if r.get('id') == self.n:
                if 'error' in r: raise RuntimeError(f"{method}: {r['error']}")
                return r['result']

    def eval(self, js:str):
        r = self.call('Runtime.evaluate', expression=js, returnByValue=True)
        return r['result'].get('value')

    def screenshot(self)->Image.Image:
        png = base64.b64decode(self.call('Page.captureScreenshot', format='png')['data'])
        return Image.open(io.BytesIO(png)).convert('RGB')

    def close(self):
        try: self._conn.__exit__(None, None, None)
        finally:
            self.p.terminate()
            try: self.p.wait(20)
            except subprocess.TimeoutExpired: self.p.kill()

STATE = """(() => {
  if (!document.body) return null;
  const vis = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && e.offsetParent !== null; };
  const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const imgs = [...document.querySelectorAll('img.widget-image')].filter(vis);
  const sel = document.querySelector('.widget-select-multiple select');
  return {images: imgs.filter(i => i.complete && i.naturalWidth > 0).map(rect), n_images: imgs.length,
          methods: sel ? [...sel.options].map(o => o.textContent) : [],
          selected: sel ? [...sel.selectedOptions].map(o => o.textContent) : [],
          selector: sel && vis(sel) ? rect(sel) : null, text: document.body.innerText};
})()"""

def load_explorer(browser:Browser, url:str, n_maps:int=1, timeout:float=150)->dict:
    "Open the app and wait until the image, the method selector and `n_maps` maps are rendered; returns the page state"
    browser.call('Emulation.setDeviceMetricsOverride', width=SIZE[0], height=SIZE[1], deviceScaleFactor=1, mobile=False)
    browser.call('Page.navigate', url=url)
    t0, st = time.time(), None
    while time.time() - t0 < timeout:
        st = browser.eval(STATE)
        if st and st['n_images'] >= 1 + n_maps and len(st['images']) == st['n_images'] and st['selector'] and 'done:' in st['text']:
            return st
        time.sleep(0.5)
    raise AssertionError(f"the explorer did not render in {timeout} s; last state: "
                         f"{ {k: v for k, v in (st or {}).items() if k != 'text'} }, text: {(st or {}).get('text', '')[:500]!r}")

def crop(shot:Image.Image, r)->np.ndarray:
    return np.asarray(shot.crop(tuple(int(round(v)) for v in r)), dtype=float)

@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")
@pytest.mark.skipif(not HAVE_VOILA, reason="voila not installed (test-only dependency: requirements-peers.txt)")
def test_explorer_in_voila(tmp_path):
    "The page shows the image, a selector listing every registered method, and a rendered map; the screenshot is not blank"
    import xaikit
    from xaikit.core import sample_image
    from xaikit.models import tiny_cnn
    browser = Browser(tmp_path/'profile')
    try:
        with voila_app('tiny_cnn', 'gradcam') as url:
            st = load_explorer(browser, url)
            shot = browser.screenshot()
    finally: browser.close()
    assert st['methods'] == list(xaikit.list_explainers()) and st['selected'] == ['gradcam']
    assert 'xaikit explorer: tiny_cnn' in st['text'] and 'done: 1 of 1 methods' in st['text'] and 'Traceback' not in st['text']
    px = np.asarray(shot.convert('L'), dtype=float)
    assert shot.size == SIZE and px.std() > 20, f'blank screenshot (std {px.std():.1f})'
    # the image: the preview (first image widget) is the model-input photo
    view = crop(shot, st['images'][0]).mean(-1)
    ref = tiny_cnn(64).to_input(sample_image('chelsea')).mean(0).numpy()
    small = lambda a: np.asarray(Image.fromarray(a.astype(np.float32)).resize((32, 32), Image.BILINEAR), dtype=float)
    corr = np.corrcoef(small(view).ravel(), small(ref * 255).ravel())[0, 1]
    assert view.shape[0] > 100 and corr > 0.8, f'the image preview does not show the photo (correlation {corr:.2f})'
    # a rendered map: a saturated colour map over the photo
    m = crop(shot, st['images'][1])
    sat = (m.max(-1) - m.min(-1) > 80).mean()
    assert m.shape[0] > 100 and sat > 0.2, f'no colour map in the map panel (saturated share {sat:.2f})'
    # the method selector is on screen, inside the screenshot
    x0, y0, x1, y1 = st['selector']
    assert 0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1] and crop(shot, st['selector']).std() > 5

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description='Record a screenshot of the explorer served by Voila')
    ap.add_argument('--shot', type=Path, required=True)
    ap.add_argument('--model', default='efficientnet_lite0')
    ap.add_argument('--methods', default='gradcam,rise')
    ap.add_argument('--height', type=int, default=1100, help='crop the screenshot to this height')
    a = ap.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        b = Browser(Path(d)/'profile')
        try:
            with voila_app(a.model, a.methods) as url:
                st = load_explorer(b, url, n_maps=len(a.methods.split(',')), timeout=600)
                shot = b.screenshot()
        finally: b.close()
    a.shot.parent.mkdir(parents=True, exist_ok=True)
    shot = shot.crop((0, 0, SIZE[0], min(a.height, SIZE[1])))
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(a.shot, optimize=True)  # ~100 KB
    print(f"wrote {a.shot} ({shot.size})")
