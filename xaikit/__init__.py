"xaikit: explain image classifiers. `xaikit.explain(model, image, method=...)` is the one-line entry point."
__version__ = "0.0.1"
# Hand-written (nbdev never regenerates package __init__ files): re-exports only, the code lives in the notebooks.
# Importing the explainers package registers every built-in method.
from .explainers import explain, get_explainer, list_explainers, register, REGISTRY
