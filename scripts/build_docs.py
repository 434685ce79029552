#!/usr/bin/env python
"""Build the offline docs site: nbdev's notebook processing, then MkDocs Material with mkdocs-jupyter.

Usage: `python scripts/build_docs.py [--out DIR]` (default `_site/`). Every notebook under nbs/ gets a page (folders
become nav sections) showing the outputs saved in it. This file is also the site's MkDocs hook module (`on_post_page`).
"""
import argparse, ast, json, os, re, shutil, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import yaml
from nbdev.config import get_config, nbpath2html

ROOT = Path(__file__).resolve().parents[1]
MATHJAX_URL = 'xaikit-mathjax-url'  # placeholder for the MathJax script, made page-relative by `on_post_page`
MATHJAX_CONFIG = 'MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe'
_re_dir = re.compile(r'^#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
_re_pandoc_attr = re.compile(r'\[([^\]]*)\]\(([^)\s]*)\)\{([^}\n]*)\}')  # `[x](url){target="_blank" ...}`: shown literally
_re_callout = re.compile(r'^:::+ *\{?\.?callout-(\w+)[^\n]*\n(.*?)^:::+ *$', re.M | re.S)
_re_fence = re.compile(r'^:::+.*$\n?', re.M)
_re_nb_link = re.compile(r'(\]\()([^)\s:]+\.ipynb)(?=[#)\s])')  # `[x](00_core.ipynb#y)`: a relative link to a notebook

def _do_eval_defs_only(orig):
    "nbdev's rule for cells run while rendering `show_doc`, minus cells mixing imports with other code (examples)"
    def _do_eval(cell):
        if not (res := orig(cell)): return res
        if cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or 'show_doc' in cell.source: return True
        return all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in cell.parsed_())
    return _do_eval

def proc_nbs(stage:Path)->Path:
    "Run nbdev's docs processing (show_doc rendering, export and hide removal) on a copy of the project in `stage`"
    shutil.copy(ROOT/'pyproject.toml', stage)
    shutil.copytree(ROOT/'nbs', stage/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '__pycache__'))
    import nbdev.processors, nbdev.serve
    nbdev.processors._do_eval = _do_eval_defs_only(nbdev.processors._do_eval)
    warnings.filterwarnings('ignore', 'Found cells containing imports and other code')  # such cells are not run here
    return nbdev.serve.proc_nbs(str(stage/'nbs'), n_workers=0)  # in-process, so the patch applies

def _directives(src:str):
    "Split quarto `#| key: value` lines off the top of a code cell"
    lines, d = src.splitlines(), {}
    while lines and (m := _re_dir.match(lines[0])): d[m[1]] = m[2].lower(); lines.pop(0)
    return d, '\n'.join(lines)

def _html_link(m)->str:
    "A Pandoc link with attributes as an HTML link (plain markdown if the attributes are not all `key=\"value\"`)"
    if re.fullmatch(r'(\s*[\w-]+="[^"]*")+\s*', m[3]): return f'<a href="{m[2]}" {m[3].strip()}>{m[1]}</a>'
    return f'[{m[1]}]({m[2]})'

def _md(src:str)->str:
    "Markdown without the Pandoc/Quarto syntax that MkDocs renders literally"
    src = _re_pandoc_attr.sub(_html_link, src)
    src = _re_nb_link.sub(lambda m: m[1] + nbpath2html(m[2]).as_posix(), src)
    src = _re_callout.sub(lambda m: f'> **{m[1].capitalize()}**\n>\n' + re.sub(r'^', '> ', m[2].strip(), flags=re.M), src)
    return _re_fence.sub('', src)

def _cells(nb:dict):
    "The cells of a processed notebook, ready for mkdocs-jupyter"
    for c in nb['cells']:
        c['metadata'].pop('execution', None)  # float timings make mkdocs-jupyter fail
        src = ''.join(c.get('source', ''))
        if c['cell_type'] == 'raw' and src.startswith('---'):  # nbdev's frontmatter: back to a title and a summary
            fm = yaml.safe_load(src.strip().strip('-')) or {}
            src = f"# {fm.get('title', '')}" + (f"\n\n> {fm['description']}" if fm.get('description') else '')
            yield dict(cell_type='markdown', metadata={}, source=src)
        elif c['cell_type'] == 'markdown': yield {**c, 'source': _md(src)}
        elif c['cell_type'] == 'code':
            d, src = _directives(src)
            if d.get('include') == 'false': continue
            if d.get('output') == 'false': c['outputs'] = []
            mds = [''.join(o['data']['text/markdown']) for o in c['outputs'] if 'text/markdown' in o.get('data', {})]
            if d.get('echo') == 'false' and d.get('output') == 'asis' and mds:  # show_doc: its markdown is the cell
                yield dict(cell_type='markdown', metadata={}, source=_md('\n\n'.join(mds)))
            elif src.strip() or c['outputs']:
                if d.get('echo') == 'false': c['metadata']['tags'] = c['metadata'].get('tags', []) + ['remove_input']
                yield {**c, 'source': src}
        else: yield c

def page_title(cells, default:str)->str:
    "The nav title of a page: the text of its first `# Title` heading (not the `> description` under it), else `default`"
    src = next((c['source'] for c in cells if c['cell_type'] == 'markdown' and c['source'].startswith('# ')), '')
    return src.splitlines()[0][2:].replace('`', '').strip() if src else default

def prepare(proc:Path, docs:Path):
    "Copy `proc` to `docs` with notebooks cleaned and named as nbdev names their pages; return nav entries"
    shutil.copytree(proc, docs, ignore=shutil.ignore_patterns('*.ipynb', '_quarto.yml', '_brand.yml'))
    pages = []
    for p in sorted(proc.rglob('*.ipynb'), key=lambda p: (p.parent.relative_to(proc).parts, p.stem != 'index', p.name)):
        nb = json.loads(p.read_text(encoding='utf-8'))
        nb['cells'] = list(_cells(nb))
        nb['metadata'].pop('widgets', None)  # widget state would load its JavaScript from a CDN
        title = 'Home' if p == proc/'index.ipynb' else page_title(nb['cells'], p.stem)
        dest = docs/nbpath2html(p.relative_to(proc)).with_suffix('.ipynb')
        dest.write_text(json.dumps(nb, indent=1), encoding='utf-8')
        pages.append((dest.relative_to(docs), title))
    return pages

def nav(pages):
    "MkDocs nav mirroring the folders of `pages` (a list of (path, title))"
    res = []
    for path, title in pages:
        items = res
        for folder in path.parent.parts:
            name = folder.replace('_', ' ').capitalize()
            sect = next((o for o in items if name in o and isinstance(o[name], list)), None)
            if sect is None: items.append(sect := {name: []})
            items = sect[name]
        items.append({title: path.as_posix()})
    return res

def mathjax(docs:Path)->bool:
    "Copy MathJax (from the `jupyter-server-mathjax` package, if installed) into the site; return whether it is there"
    try: import jupyter_server_mathjax
    except ImportError: return False
    static = Path(jupyter_server_mathjax.__file__).parent/'static'
    shutil.copytree(static, docs/'assets'/'mathjax', ignore=shutil.ignore_patterns('localization', 'SVG'))
    return True

def mkdocs_config(docs:Path, out:Path, pages, has_mathjax:bool, doc_url:str)->dict:
    "The MkDocs configuration of the site"
    return dict(
        site_name='xaikit', docs_dir=str(docs), site_dir=str(out), use_directory_urls=False,
        theme=dict(name='material', font=False, features=['navigation.sections']),
        plugins=['search', {'mkdocs-jupyter': dict(include_source=True, execute=False, cache=False, ignore_h1_titles=True,
                                                   custom_mathjax_url=MATHJAX_URL,
                                                   remove_tag_config=dict(remove_input_tags=['remove_input']))}],
        hooks=[str(Path(__file__).resolve())], nav=nav(pages), extra=dict(xaikit_mathjax=has_mathjax, xaikit_doc_url=doc_url))

def on_post_page(output:str, page, config)->str:
    "MkDocs hook: make nbdev's links to the hosted docs and the MathJax script page-relative"
    up = '../' * page.file.dest_uri.count('/')
    if config.extra['xaikit_doc_url']: output = output.replace(f'href="{config.extra["xaikit_doc_url"]}', f'href="{up}')
    if config.extra['xaikit_mathjax']: return output.replace(MATHJAX_URL, f'{up}assets/mathjax/{MATHJAX_CONFIG}')
    return re.sub(rf'<script src="{MATHJAX_URL}">\s*</script>', '', output)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'_site'), help='output folder (replaced)')
    ap.add_argument('--no-strict', action='store_true', help='do not fail on MkDocs warnings')
    args = ap.parse_args()
    out, t0 = Path(args.out).resolve(), time.time()
    if out.is_dir() and any(out.iterdir()) and not (out/'sitemap.xml').exists(): sys.exit(f'{out} is not a built site: not replacing it')
    with tempfile.TemporaryDirectory(prefix='xaikit-docs-') as tmp:
        tmp = Path(tmp)
        proc = proc_nbs(tmp)
        cfg = get_config(tmp)
        doc_url = cfg.doc_host.rstrip('/') + cfg.doc_baseurl.rstrip('/') + '/' if cfg.doc_host else ''
        pages = prepare(proc, tmp/'docs')
        if not pages: sys.exit('No notebooks found in nbs/')
        conf = mkdocs_config(tmp/'docs', out, pages, mathjax(tmp/'docs'), doc_url)
        (tmp/'mkdocs.yml').write_text(json.dumps(conf, indent=1))  # JSON is YAML
        cmd = [sys.executable, '-m', 'mkdocs', 'build', '--clean', '-f', str(tmp/'mkdocs.yml')]
        env = {**os.environ, 'NO_MKDOCS_2_WARNING': '1'}
        r = subprocess.run(cmd + ([] if args.no_strict else ['--strict']), cwd=tmp, env=env)
        if r.returncode: sys.exit(f'mkdocs build failed (exit {r.returncode})')
    print(f'Built {len(pages)} pages into {out} in {time.time()-t0:.0f}s')

if __name__ == '__main__': main()
