"""Every registered explainer, driven by the registry: a method added in its own notebook is tested here without editing
this file. The checks themselves live in `xaikit.explainers.checks` (nbs/09a_checks.ipynb) so that a notebook can run them
on its own method too; each class declares its cheap `test_params` and its `bad_params`."""
import pytest
import torch
from torch import nn

import xaikit
from xaikit.explainers import REGISTRY, ExcitationBackprop, get_explainer
from xaikit.explainers import checks
from xaikit.models import tiny_cnn

NAMES = sorted(REGISTRY)


def test_registry_lists_the_builtins():
    assert {'gradcam', 'mwp', 'rise', 'lime', 'occlusion'} <= set(NAMES)
    assert xaikit.list_explainers() == {n: REGISTRY[n].summary() for n in NAMES}
    assert all(xaikit.list_explainers().values())
    with pytest.raises(ValueError, match="`method` 'nope' is unknown"): get_explainer('nope')


@pytest.mark.parametrize('check', ['api', 'bad_input', 'untouched', 'seeded'])
@pytest.mark.parametrize('name', NAMES)
def test_explainer(name, check):
    getattr(checks, f'check_{check}')(REGISTRY[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
@pytest.mark.parametrize('name', NAMES)
def test_explainer_cuda(name):
    checks.check_device(REGISTRY[name], 'cuda')


def test_value_range_forwarded():
    net, img = tiny_cnn(), torch.rand(3, 32, 32)
    a = xaikit.explain(net, img * 255, method='gradcam', value_range=(0, 255))
    b = xaikit.explain(net, img, method='gradcam')
    assert torch.allclose(a.maps, b.maps, atol=1e-5)
    with pytest.raises(ValueError, match='value_range'): xaikit.explain(net, img * 255, method='gradcam')


def test_mwp_unsupported_layer():
    with pytest.raises(ValueError, match=r"`model` layer '1' \(GELU\) is not supported by excitation backprop"):
        ExcitationBackprop(tiny_cnn(act=nn.GELU))
