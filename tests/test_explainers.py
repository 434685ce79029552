"""The base explainers' shared API (issue 5): registry wiring, targets, bad input, and a model left untouched even when
its forward raises. Tiny models keep this file fast; real-model checks live in the notebooks, test_peers and test_sanity."""
import pytest
import torch
from torch import nn

import xaikit
from xaikit.core import Explanation
from xaikit.explainers import GradCAM, ExcitationBackprop, RISE, LIME, Occlusion, REGISTRY, get_explainer
from xaikit.models import wrap

METHODS = {'gradcam': ({}, GradCAM), 'mwp': ({}, ExcitationBackprop), 'rise': ({'n_masks': 32, 'seed': 0}, RISE),
           'lime': ({'n_samples': 16, 'seed': 0}, LIME), 'occlusion': ({'window': 8, 'stride': 8}, Occlusion)}


def tiny(act=nn.ReLU):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), act(), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    return wrap(net, input_size=32)


@pytest.fixture(scope='module')
def model(): return tiny()


@pytest.fixture(scope='module')
def image(): return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('name', list(METHODS))
def test_registry_and_api(model, image, name):
    params, cls = METHODS[name]
    assert get_explainer(name) is cls and REGISTRY[name] is cls
    e = xaikit.explain(model, image, method=name, **params)
    assert isinstance(e, Explanation) and e.method == name and e.maps.shape == (1, 32, 32)
    assert e.n_forward >= 1 and e.seconds > 0 and torch.isfinite(e.maps).all()
    top = int(model(model.normalize(image[None])).argmax())
    assert str(top) in e.labels[0] or (model.class_names and model.class_names[top] in e.labels[0])
    # the class API and the registry give the same map; several targets at once equal one target at a time
    e1 = cls(model, **params).explain(image, targets=[top, 3, [2, 5], xaikit.core.LogOdds(top)] if name != 'occlusion'
                                      else [top, 3, [2, 5]])
    e2 = cls(model, **params).explain(image, targets=3)
    assert torch.allclose(e.maps[0], e1.maps[0], atol=1e-6) and torch.allclose(e1.maps[1], e2.maps[0], atol=1e-5)


@pytest.mark.parametrize('name', list(METHODS))
@pytest.mark.parametrize('targets,msg', [(10, 'out of range'), (-1, 'out of range'), ([[1, 1]], 'more than once'),
                                         ([[1, 12]], 'out of range'), ([[]], 'empty')])
def test_bad_targets(model, image, name, targets, msg):
    with pytest.raises(ValueError, match=msg):
        xaikit.explain(model, image, method=name, targets=targets, **METHODS[name][0])


@pytest.mark.parametrize('name,params,msg', [
    ('gradcam', {'layer': '2.wieght'}, "`layer` '2.wieght' not found.*closest names"),
    ('mwp', {'layer': 'nope'}, "`layer` 'nope' not found"),
    ('gradcam', {'variant': 'fancy'}, '`variant`'),
    ('rise', {'n_masks': 0}, '`n_masks`'), ('lime', {'n_samples': 0}, '`n_samples`'), ('lime', {'n_samples': 1}, '`n_samples`'),
    ('occlusion', {'window': 0}, '`window`'), ('occlusion', {'stride': 0}, '`stride`'), ('occlusion', {'window': 64}, '`window`'),
    ('nope', {}, "`method` 'nope' is unknown")])
def test_bad_params(model, image, name, params, msg):
    with pytest.raises(ValueError, match=msg):
        xaikit.explain(model, image, method=name, **params)


def test_mwp_unsupported_layer(image):
    with pytest.raises(ValueError, match=r"`model` layer '1' \(GELU\) is not supported by excitation backprop"):
        ExcitationBackprop(tiny(nn.GELU))


class Boom(nn.Module):
    "Raises in the forward after the hooked layer ran."
    def forward(self, x): raise RuntimeError('boom')


def hooks(net):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules())


@pytest.mark.parametrize('name', list(METHODS))
def test_model_untouched_when_forward_raises(image, name):
    m = tiny()
    state = {k: v.clone() for k, v in m.model.state_dict().items()}
    explainer = get_explainer(name)(m, **METHODS[name][0])
    explainer.explain(image)                                     # a good call first
    m.model[4] = Boom()                                          # after conv/relu layers: hooks are live when it raises
    with pytest.raises(RuntimeError, match='boom'):
        explainer.explain(image)
    assert hooks(m.model) == 0 and hooks(m) == 0
    assert not torch.overrides._is_torch_function_mode_enabled()   # MWP's function mode exited
    assert all(torch.equal(v, state[k]) for k, v in m.model.state_dict().items())
    assert all(not p.requires_grad or p.grad is None for p in m.model.parameters())
