"""Every notebook under nbs/ as one pytest test, run by nbdev's own test runner with nbdev-test's skip rules.

Cells flagged `#| slow` or `#| cuda` (the `tst_flags` in pyproject.toml) are skipped unless named in the
environment variable XAIKIT_TEST_FLAGS, e.g. `XAIKIT_TEST_FLAGS="slow cuda" make test`.
Folders holding a `.notest` file (papermill experiments) are left out, as `nbdev-test` leaves them out.
"""
import os
from pathlib import Path

import pytest
import nbdev.test as nbtest  # imported as a module so pytest does not collect nbdev's `test_nb` as a test
from nbdev.config import get_config

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'


def _notebooks():
    out = []
    for p in sorted(NBS.rglob('*.ipynb')):
        if '.ipynb_checkpoints' in p.parts or p.name.startswith('_'): continue
        if any((NBS / d / '.notest').exists() for d in p.relative_to(NBS).parents): continue
        out.append(p)
    return out


def _flags():
    cfg = get_config(ROOT)
    skip = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags)
    return skip, os.environ.get('XAIKIT_TEST_FLAGS', '').split()


@pytest.mark.parametrize('nb', _notebooks(), ids=lambda p: str(p.relative_to(NBS)))
def test_notebook(nb):
    from xaikit.explainers.base import REGISTRY
    skip, force = _flags()
    saved = dict(REGISTRY)   # notebooks run in this process: classes they define and `@register` must not leak out
    try: ok, secs = nbtest.test_nb(nb, skip_flags=skip, force_flags=force, basepath=ROOT, showerr=True)
    finally:
        REGISTRY.clear(); REGISTRY.update(saved)
    assert ok, f"{nb.relative_to(ROOT)} failed (traceback above)"


def test_notebooks_found():
    names = {p.name for p in _notebooks()}
    assert {'00_core.ipynb', '01_models.ipynb'} <= names
