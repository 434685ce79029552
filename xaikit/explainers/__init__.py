"The explainers: `GradCAM`, `ExcitationBackprop`, `RISE`, `LIME`, `Occlusion`, and the registry behind `xaikit.explain`."
# Hand-written re-exports (nbdev never regenerates package __init__ files); each class is imported on first access.
from .base import Explainer, explain, get_explainer, register, REGISTRY, BUILTIN

_CLASSES = {'GradCAM': 'gradcam', 'ExcitationBackprop': 'excitation', 'RISE': 'rise', 'LIME': 'lime', 'Occlusion': 'occlusion'}

def __getattr__(name):
    if name in _CLASSES:
        import importlib
        return getattr(importlib.import_module(f'.{_CLASSES[name]}', __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

def __dir__(): return sorted(list(globals()) + list(_CLASSES))
