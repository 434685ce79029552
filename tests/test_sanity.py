"""Sanity checks of Adebayo et al. (NeurIPS 2018) for every registered explainer, on real photos with EfficientNet-Lite0.

Driven by the registry: each class declares `sanity_params`, `sanity_images` and the checks it passes (`sanity_checks`).

1. Model randomisation: re-initialising the top of the network (classifier, head conv, last two stages) must change the
   map: Spearman rank correlation with the trained model's map < 0.5.
2. Class sensitivity: the map of the top class and of a class ranked 500th must differ: Spearman < 0.5.

Plain MWP is known to be nearly class-insensitive (Zhang et al. 2016 introduced contrastive MWP for that reason; we
measured Spearman 0.93 between its maps of two classes), so the checks run on contrastive MWP; plain MWP's measured values (class 0.93/0.94, randomised 0.44/0.52 on chelsea/coffee)
are pinned as a property test, and it does not pass the randomisation bar on coffee. RISE runs with
`center=True`: at the few hundred masks a test can afford, the uncentred estimator's map is dominated by the masks'
coverage noise, which is identical for both models at the same seed (see the RISE notebook).
Perturbation budgets are small to keep the suite fast; maps are compared at 56 x 56 (average-pooled) to avoid ties.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import xaikit
from xaikit.explainers import REGISTRY
from xaikit.core import sample_image
from xaikit.models import efficientnet_lite0

TOP = ('classifier', 'conv_head', 'bn2', 'blocks.6', 'blocks.5')
NAMES = sorted(REGISTRY)


def randomized(model, names=TOP, seed=0):
    "A copy of `model` whose modules `names` are re-initialised (He-normal weights, zero biases, identity batch norm)."
    r = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n in names:
            for mod in r.model.get_submodule(n).modules():
                for pn, p in mod.named_parameters(recurse=False):
                    if p.ndim > 1: p.copy_(torch.randn(p.shape, generator=g) * (2 / p[0].numel()) ** 0.5)
                    else: p.fill_(1.0 if pn == 'weight' else 0.0)
                if getattr(mod, 'running_mean', None) is not None: mod.running_mean.zero_(); mod.running_var.fill_(1.0)
    return r


def spearman(a, b):
    def rank(m): return F.adaptive_avg_pool2d(m[None, None].double(), 56).flatten().argsort().argsort().double()
    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()))


@pytest.fixture(scope='module')
def models():
    m = efficientnet_lite0()
    return m, randomized(m)


def _maps(models, name, params, img):
    trained, rand = models
    x = trained.to_input(sample_image(img))
    with torch.no_grad(): order = trained(trained.normalize(x[None]))[0].argsort(descending=True)
    targets = [int(order[0]), int(order[500])]
    e = xaikit.explain(trained, x, method=name, targets=targets, **params)
    er = xaikit.explain(rand, x, method=name, targets=targets, **params)
    assert e.maps.shape == er.maps.shape == (2, 224, 224) and torch.isfinite(e.maps).all()
    return spearman(e.maps[0], er.maps[0]), spearman(e.maps[0], e.maps[1])


@pytest.mark.parametrize('name', NAMES)
def test_sanity(models, name):
    "Every registered method, with its `sanity_params` (default: its `test_params`) on its `sanity_images`, for the checks it declares."
    cls = REGISTRY[name]
    params = cls.sanity_params if cls.sanity_params is not None else cls.test_params
    assert not any(torch.equal(p, q) for p, q in zip(models[0].model.classifier.parameters(), models[1].model.classifier.parameters()))
    for img in cls.sanity_images:
        r_model, r_class = _maps(models, name, params, img)
        if 'model' in cls.sanity_checks: assert r_model < 0.5, (name, img, 'randomised model', r_model)
        if 'class' in cls.sanity_checks: assert r_class < 0.5, (name, img, 'other class', r_class)


def test_plain_mwp_is_class_insensitive(models):
    "A documented property, not a pass: plain MWP is class-insensitive and only weakly model-sensitive."
    for img in ('chelsea', 'coffee'):
        r_model, r_class = _maps(models, 'mwp', {}, img)
        assert r_class > 0.8 and r_model < 0.6, (img, r_class, r_model)
