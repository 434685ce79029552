"""The docs site builds offline and its pages render in headless Chromium (served from 127.0.0.1)."""
import functools, html, re, shutil, subprocess, sys, threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import numpy as np, pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--window-size=1280,2000']
MAX_NAV = 30  # characters of a nav label: longer ones wrap in Material's sidebar
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site built by scripts/build_docs.py"
    out = tmp_path_factory.mktemp('docs')/'site'
    r = subprocess.run([sys.executable, ROOT/'scripts'/'build_docs.py', '--out', out], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out

@pytest.fixture(scope='module')
def url(site):
    "Base URL of `site` served over HTTP on a free local port"
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown(); srv.server_close()

def chromium(tmp_path, *args)->str:
    "Run headless Chromium with a fresh profile; return its stdout"
    prof = tmp_path/f'profile{len(list(tmp_path.glob("profile*")))}'
    r = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={prof}', *args], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout

def test_build(site):
    "Every notebook gets a page, images are copied, nbdev's show_doc is rendered and export code is gone"
    nbs = [p for p in (ROOT/'nbs').rglob('*.ipynb') if not any(o[0] in '._' for o in p.relative_to(ROOT/'nbs').parts)]
    assert {p.relative_to(ROOT/'nbs').parent for p in nbs} == {p.relative_to(site).parent for p in site.rglob('*.ipynb')}
    assert len(list(site.rglob('*.ipynb'))) == len(nbs)
    for f in (ROOT/'nbs').rglob('*'):
        if f.suffix.lower() in ('.png', '.jpg', '.jpeg', '.gif', '.svg'): assert (site/f.relative_to(ROOT/'nbs')).exists(), f
    core = (site/'core.html').read_text()
    assert re.search(r'<h3[^>]*>\s*to_image', core) and '#| export' not in core and '{target=' not in core

def _text(s:str)->str: return re.sub(r'\s+', ' ', html.unescape(re.sub(r'<[^>]+>', '', s))).strip()

def nav_entries(site)->list:
    "(page, label) of every page link in the site's navigation sidebar (read from the home page)"
    links = re.findall(r'<a\s([^>]*\bclass="md-nav__link\b[^>]*)>(.*?)</a>', (site/'index.html').read_text(), re.S)
    return [(m[1], _text(label)) for attrs, label in links if (m := re.search(r'\bhref="([^"#]+\.html)"', attrs))]

def test_nav_titles(site):
    "Each nav entry is its page's title (the notebook's `# Title`): one line, no description; the page keeps its description"
    entries = nav_entries(site)
    assert sorted(p for p, _ in entries) == sorted(p.relative_to(site).with_suffix('.html').as_posix() for p in site.rglob('*.ipynb'))
    for page, label in entries:
        src = (site/page).read_text()
        m = re.search(r'<h1\b[^>]*>(.*?)</h1>\s*<blockquote>(.*?)</blockquote>', src, re.S)
        assert m, f'{page}: no title followed by its description'
        h1, desc = _text(re.sub(r'<a class="anchor-link".*?</a>', '', m[1])), _text(m[2])
        assert label == ('Home' if page == 'index.html' else h1), f'{page}: nav label {label!r}, page title {h1!r}'
        assert desc and desc not in label and '>' not in label, f'{page}: nav label {label!r} carries the description'
        if page != 'index.html': assert _text(re.search(r'<title>(.*?)</title>', src, re.S)[1]) == f'{label} - xaikit'

def test_nav_titles_short(site):
    "Nav labels are short (at most MAX_NAV characters): they fit on one line of the sidebar"
    long = [f'{page}: {label!r} ({len(label)} characters)' for page, label in nav_entries(site) if len(label) > MAX_NAV]
    assert not long, f'nav labels over {MAX_NAV} characters (shorten the notebook\'s `# Title`):\n' + '\n'.join(long)

@needs_chromium
@pytest.mark.parametrize('page,headings', [('index.html', [('h1', 'xaikit')]),
                                           ('core.html', [('h1', 'Core'), ('h2', 'Explanation'), ('h2', 'Targets')])])
def test_page_renders(url, tmp_path, page, headings):
    "The page has its headings and a figure, loads nothing from the network, and its screenshot is not blank"
    dom = chromium(tmp_path, '--dump-dom', url + page)
    for tag, text in headings: assert re.search(rf'<{tag}[^>]*>\s*{text}\b', dom), f'{page}: no <{tag}> {text}'
    assert '<img' in dom, f'{page}: no figure'
    # MathJax loads its own files by absolute URLs on the serving host (127.0.0.1): those are local
    remote = re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//(?!127\.0\.0\.1[:/])[^"]*', dom)
    assert not remote, f'{page}: loads from the network: {remote}'
    png = tmp_path/'shot.png'
    chromium(tmp_path, f'--screenshot={png}', url + page)
    px = np.asarray(Image.open(png).convert('L'), dtype=float)[100:]  # below the header bar
    assert px.shape == (1900, 1280) and px.std() > 20, f'{page}: blank screenshot (std {px.std():.1f})'
