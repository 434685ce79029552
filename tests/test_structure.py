"""Project structure: every module imports on its own, module-level imports between xaikit modules have no cycle, and
the notebooks (the source of the package and of the docs) carry no machine paths in their outputs and no overlong lines.
Modules and notebooks are discovered, so ones added later are covered without editing this file."""
import ast, json, os, pkgutil, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest
import xaikit

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 140  # characters per code or markdown line in a notebook
MACHINE_PATHS = ('/work/', '/root/', '/home/', '/tmp/', 'site-packages')

def xaikit_modules()->dict:
    "Every module of the `xaikit` package (the package itself included): name -> (source file, is a package)"
    mods = {'xaikit': (Path(xaikit.__file__), True)}
    for m in pkgutil.walk_packages(xaikit.__path__, 'xaikit.'):
        mods[m.name] = (Path(m.module_finder.find_spec(m.name).origin), m.ispkg)
    return mods

MODULES = xaikit_modules()
assert Path(xaikit.__file__).resolve().parent == ROOT/'xaikit', f'testing {xaikit.__file__}, not this repository'

# --- Each module imports alone in a fresh interpreter -----------------------------------------------------------------

def _import_alone(name:str):
    "Import `name` in a fresh interpreter that sees this repository first; return the finished process"
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])])}
    return subprocess.run([sys.executable, '-c', f'import {name}'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

@pytest.fixture(scope='module')
def imports():
    "The import of every module, started at once in a few parallel interpreters: name -> future of the finished process"
    with ThreadPoolExecutor(max_workers=max(2, min(8, (os.cpu_count() or 1) + 1))) as ex:
        yield {name: ex.submit(_import_alone, name) for name in MODULES}

@pytest.mark.parametrize('name', sorted(MODULES))
def test_imports_alone(imports, name):
    "The module imports in a fresh interpreter, without any other xaikit module imported first by hand"
    r = imports[name].result()
    assert r.returncode == 0, f'`import {name}` fails in a fresh interpreter:\n{r.stderr[-3000:]}'

# --- The module-level import graph is acyclic --------------------------------------------------------------------------

def _top_level(node):
    "The statements run when the module is imported: not those inside functions, nor under `if TYPE_CHECKING:`"
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)): continue
        if isinstance(child, ast.If) and 'TYPE_CHECKING' in ast.unparse(child.test):
            yield from (s for o in child.orelse for s in [o, *_top_level(o)])
            continue
        yield child
        yield from _top_level(child)

def _owner(name:str, modules)->str|None:
    "The longest module name in `modules` that `name` is or lies in"
    while name and name not in modules: name = name.rpartition('.')[0]
    return name or None

def module_imports(name:str, src:str, is_pkg:bool, modules)->dict:
    "The xaikit modules that module `name` (source `src`) imports at module level: target -> line of the first such import"
    package, found = (name if is_pkg else name.rpartition('.')[0]), {}
    def add(target, line):
        "`target` is imported explicitly; so are the packages above it, except those already running above `name`"
        if (target := _owner(target, modules)) is None: return
        parts = target.split('.')
        for mod in ('.'.join(parts[:i]) for i in range(1, len(parts))):
            if not (name + '.').startswith(mod + '.'): found.setdefault(mod, line)
        if target != name: found.setdefault(target, line)
    for node in _top_level(ast.parse(src)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split('.')[0] == 'xaikit': add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                if node.level > len(base): continue  # above the top package: not xaikit's
                base = '.'.join(base[:len(base) - node.level + 1])
                mod = f'{base}.{node.module}' if node.module else base
            else: mod = node.module
            if mod.split('.')[0] != 'xaikit': continue
            subs = [f'{mod}.{a.name}' for a in node.names if f'{mod}.{a.name}' in modules]
            # `from pkg import submodule` needs only the submodule; any other name needs `pkg` itself to have run
            if len(subs) < len(node.names): add(mod, node.lineno)
            for sub in subs: add(sub, node.lineno)
    return found

def find_cycle(graph:dict)->list|None:
    "A cycle in `graph` (node -> iterable of nodes) as a list of nodes whose last equals its first, or None"
    state, stack = {}, []
    def visit(n):
        state[n] = 'open'; stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 'open': return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)): return c
        state[n] = 'done'; stack.pop()
        return None
    for n in sorted(graph):
        if n not in state and (c := visit(n)): return c
    return None

def import_graph(modules)->dict:
    "The module-level import graph of `modules` (name -> (file, is a package)): name -> {target: line}"
    return {n: module_imports(n, f.read_text(encoding='utf-8'), pkg, modules) for n, (f, pkg) in modules.items()}

def test_find_cycle():
    "The import parser and the cycle finder on a made-up package (so the real test is not passing by accident)"
    mods = dict.fromkeys(['xaikit', 'xaikit.a', 'xaikit.b', 'xaikit.c', 'xaikit.p', 'xaikit.p.q'])
    srcs = {'xaikit': 'from .a import f', 'xaikit.a': 'import os\nfrom xaikit.b import g\ndef f():\n    from . import c',
            'xaikit.b': 'from .p.q import h\nclass K:\n    import xaikit.c', 'xaikit.c': 'from xaikit import p, __version__',
            'xaikit.p': 'from . import q\nfrom ..b import g', 'xaikit.p.q': 'from .. import a\nfrom typing import TYPE_CHECKING\n'
            'if TYPE_CHECKING:\n    from xaikit.c import z'}
    pkgs = {'xaikit', 'xaikit.p'}
    g = {n: module_imports(n, s, n in pkgs, mods) for n, s in srcs.items()}
    test = {'xaikit': {'xaikit.a': 1}, 'xaikit.a': {'xaikit.b': 2}, 'xaikit.b': {'xaikit.p': 1, 'xaikit.p.q': 1, 'xaikit.c': 3},
            'xaikit.c': {'xaikit': 1, 'xaikit.p': 1}, 'xaikit.p': {'xaikit.p.q': 1, 'xaikit.b': 2}, 'xaikit.p.q': {'xaikit.a': 1}}
    assert g == test, g
    assert find_cycle(g) == ['xaikit', 'xaikit.a', 'xaikit.b', 'xaikit.c', 'xaikit']
    g['xaikit.c'] = {'xaikit.p': 1}  # `from xaikit import p` alone: a submodule, so xaikit's own __init__ need not have run
    assert find_cycle(g) == ['xaikit.b', 'xaikit.c', 'xaikit.p', 'xaikit.b']
    assert module_imports('xaikit.c', 'from xaikit import p', False, mods) == {'xaikit.p': 1}
    assert find_cycle({'a': ['b'], 'b': ['c'], 'c': []}) is None

def test_no_import_cycle():
    "Module-level imports between xaikit modules form no cycle (imports inside functions do not count)"
    g = import_graph(MODULES)
    if cycle := find_cycle(g):
        steps = [f'{a} -> {b}  ({MODULES[a][0].relative_to(ROOT)}:{g[a][b]})' for a, b in zip(cycle, cycle[1:])]
        pytest.fail('module-level import cycle:\n  ' + '\n  '.join(steps))

# --- Notebook hygiene -------------------------------------------------------------------------------------------------

NOTEBOOKS = sorted(p for p in (ROOT/'nbs').rglob('*.ipynb') if not any(o.startswith('.') for o in p.relative_to(ROOT).parts))
nb_ids = [p.relative_to(ROOT/'nbs').as_posix() for p in NOTEBOOKS]

def _text(x)->str: return ''.join(x) if isinstance(x, list) else x if isinstance(x, str) else json.dumps(x)

def output_texts(out:dict):
    "The texts of one saved output: streams, errors and every textual mime type (not base64 images)"
    if 'text' in out: yield _text(out['text'])
    if out.get('output_type') == 'error': yield from [out.get('ename', ''), out.get('evalue', ''), *out.get('traceback', [])]
    for mime, v in out.get('data', {}).items():
        if mime.startswith('text/') or mime.endswith(('json', 'javascript', 'xml')): yield _text(v)

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=nb_ids)
def test_outputs_have_no_machine_paths(nb):
    "No committed output shows a path of the machine it ran on (home, work or temp folders, site-packages)"
    bad = []
    for i, c in enumerate(json.loads(nb.read_text(encoding='utf-8'))['cells']):
        for out in c.get('outputs', []):
            for text in output_texts(out):
                for line in text.splitlines():
                    if hits := [p for p in MACHINE_PATHS if p in line]: bad.append(f'cell {i}: {hits}: {line.strip()[:160]}')
    assert not bad, f'{nb.name}: {len(bad)} output line(s) with a machine path:\n' + '\n'.join(bad[:20])

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=nb_ids)
def test_line_length(nb):
    "Code and markdown lines are at most MAX_LINE (140) characters"
    bad = []
    for i, c in enumerate(json.loads(nb.read_text(encoding='utf-8'))['cells']):
        if c['cell_type'] not in ('code', 'markdown'): continue
        for j, line in enumerate(_text(c['source']).splitlines(), 1):
            if len(line) > MAX_LINE: bad.append(f'cell {i} ({c["cell_type"]}) line {j}: {len(line)} chars: {line[:80]}...')
    assert not bad, f'{nb.name}: {len(bad)} line(s) over {MAX_LINE} characters:\n' + '\n'.join(bad[:20])
