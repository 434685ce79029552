#!/usr/bin/env python
"""Execute notebooks in place, for their committed outputs (the docs show them).

Usage: `python scripts/run_nb.py NB.ipynb [NB2.ipynb ...] [--flags "slow cuda"]`.
Cells flagged `#| slow` or `#| cuda` are not run unless named in `--flags`; they keep the outputs they had, so a notebook
whose heavy cells did not change can be refreshed in seconds. Each notebook runs in a fresh Jupyter kernel started in
its own folder (as nbdev-test runs it); the first failing cell stops that notebook and is reported. Run `nbdev-clean`
afterwards.
"""
import argparse, os, re, sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

_flag = re.compile(r'^#\|\s*(slow|cuda|notest)\b', re.M)


def flags_of(src:str)->set:
    "The test flags (`slow`, `cuda`, `notest`) among a cell's leading `#|` directives."
    head = []
    for line in src.splitlines():
        if not line.startswith('#|'): break
        head.append(line)
    return {m[1] for m in _flag.finditer('\n'.join(head))}


def run(path:Path, force:set, timeout:int=3600)->bool:
    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}   # inline figures in the saved outputs
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    t0, ok = time.perf_counter(), True
    os.environ.pop('MPLBACKEND', None)
    with client.setup_kernel(env=env):
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != 'code': continue
            f = flags_of(cell.source)
            if f and not (f & force): continue
            try: client.execute_cell(cell, i)
            except CellExecutionError as e:
                print(f"{path}: cell {i} failed:\n{str(e)[-3000:]}", file=sys.stderr); ok = False; break
    nbformat.write(nb, path)
    print(f"{path}: {'ok' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return ok


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='+', type=Path)
    ap.add_argument('--flags', default='', help='flags whose cells run too, e.g. "slow cuda"')
    a = ap.parse_args()
    results = [run(p, set(a.flags.split())) for p in a.notebooks]
    sys.exit(0 if all(results) else 1)
