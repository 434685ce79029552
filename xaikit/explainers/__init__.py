"""The explainers: the contract (`Explainer`, `PerturbationExplainer`, `Result`), the registry, and every built-in method.

Hand-written (nbdev never regenerates package `__init__` files). Every module of this package is imported here, so the
registry is complete as soon as `xaikit` is imported, and a new method module (`#| default_exp explainers.NAME`) is found
without editing this file. Each module's public names (its `__all__`) are re-exported: `from xaikit.explainers import RISE`.
"""
import importlib as _importlib, pkgutil as _pkgutil

from .base import *
from .base import __all__ as _base_all

__all__ = list(_base_all)
for _m in sorted(_m.name for _m in _pkgutil.iter_modules(__path__)):
    if _m == 'base' or _m.startswith('_'): continue
    _mod = _importlib.import_module(f'{__name__}.{_m}')
    for _n in getattr(_mod, '__all__', ()):
        globals()[_n] = getattr(_mod, _n); __all__.append(_n)
