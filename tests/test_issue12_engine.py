"""Issue 12 (reliability), engine and explainers: each test failed before its fix and names the issue item it covers."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xaikit.core import eval_targets, as_targets
from xaikit.models import tiny_cnn, tiny_vit, wrap
from xaikit.perturb import RISEMasks, SoftMasks, grid_coalitions, make_baseline, score, window_regions
from xaikit.explainers.gradcam import GradCAM
from xaikit.explainers.gradcampp import GradCAMPlusPlus
from xaikit.explainers.excitation import ExcitationBackprop
from xaikit.explainers.rise import RISE
from xaikit.explainers.lime import LIME
from xaikit.explainers.occlusion import Occlusion


@pytest.fixture(scope='module')
def net(): return tiny_cnn()


@pytest.fixture(scope='module')
def img(): return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))


def wrapped(module, **kw):
    return wrap(module.eval(), input_size=32, class_names=[f'c{i}' for i in range(10)], **kw)


# ---- item 13 and the engine's weak errors ----

def test_issue12_item13_empty_masks(net, img):
    for m in (torch.zeros(0, 32, 32), torch.zeros(0, 1, 32, 32)):
        with pytest.raises(ValueError, match='`masks` is empty'): score(net, img, m)
        with pytest.raises(ValueError, match='`masks` is empty'): SoftMasks(m)


def test_issue12_weak_batch_size_zero(net, img):
    with pytest.raises(ValueError, match='`batch_size`'): score(net, img, RISEMasks(4, 32, s=4), batch_size=0)
    with pytest.raises(ValueError, match='`batch_size`'): score(net, img, RISEMasks(4, 32, s=4), batch_size=2.0)


def test_issue12_weak_blur_sigma(net, img):
    for s in (0, -1.0, float('nan')):
        with pytest.raises(ValueError, match='`sigma`'): make_baseline(net, img, 'blur', sigma=s)
        with pytest.raises(ValueError, match='`sigma`'): make_baseline(net, img, 'noise', sigma=s)
    assert make_baseline(net, img, 'blur', sigma=0.5).shape == (1, 3, 32, 32)


def test_issue12_weak_rise_grid_larger_than_image(net):
    with pytest.raises(ValueError, match='`s`'): RISEMasks(4, 32, s=33)
    with pytest.raises(ValueError, match='`s`'): RISE(net, s=64)
    assert len(RISEMasks(4, 32, s=32)) == 4


def test_issue12_weak_occlusion_stride_gaps(net):
    with pytest.warns(UserWarning, match='`stride`'): Occlusion(net, window=4, stride=8)
    with pytest.warns(UserWarning, match='`stride`'): window_regions(32, 4, 8)
    with warnings.catch_warnings():
        warnings.simplefilter('error'); Occlusion(net, window=8, stride=8)


def test_issue12_weak_tokens_ignore_baseline(img):
    v = tiny_vit()
    co = grid_coalitions(torch.rand(4, 64, generator=torch.Generator().manual_seed(0)) < 0.5, v.grid, v.input_size)
    with pytest.warns(UserWarning, match='`baseline`'): score(v, img, co, baseline='blur')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        score(v, img, co)                                  # the default baseline: nothing to say
        score(v, img, co, baseline='blur', mode='pixels')  # pixels: the baseline is used


def test_issue12_weak_low_precision_scores_float32(img):
    net16 = tiny_cnn(); net16.model.to(torch.bfloat16)
    masks = RISEMasks(6, 32, s=4, seed=1)
    S = score(net16, img, masks, [1, 2], kind='prob', batch_size=3)
    x = net16.normalize(net16.to_input(img)[None])
    mk = masks.masks(torch.arange(6))[:, None].to(torch.bfloat16)
    with torch.no_grad(): z = net16(x * mk).float()                          # logits in bf16, scores from them in float32
    ref = eval_targets(as_targets([1, 2], kind='prob', n_classes=10), z)
    assert S.dtype == torch.float32
    assert (S - ref).abs().max() <= 1e-6, (S - ref).abs().max()
    occ = Occlusion(net16, window=8, stride=8, batch_size=16)
    e = occ.explain(img, targets=1)
    with torch.no_grad(): p0 = net16(x).float().softmax(-1)[0, 1]
    R = window_regions(32, 8, 8)
    Sk = score(net16, img, torch.stack([1 - r.float() for r in R]), [1])
    ref_map = ((p0 - Sk[:, 0])[:, None, None] * R.float()).sum(0)
    assert (e.maps[0] - ref_map).abs().max() <= 1e-6


class ViewNet(nn.Module):
    "A conv followed by `.view()` (as Captum's test nets and many user models do): channels-last breaks it."
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, 2, 1), nn.Linear(4 * 16 * 16, 10)
    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(x.view(x.shape[0], -1))


def test_issue12_channels_last_view_fallback(img):
    torch.manual_seed(0)
    m = wrapped(ViewNet())
    masks = RISEMasks(5, 32, s=4, seed=0)
    S = score(m, img, masks, [3], batch_size=2)                          # default: channels-last, falls back on the first batch
    ref = score(m, img, masks, [3], batch_size=2, channels_last=False)
    assert torch.allclose(S, ref)
    occ = Occlusion(m, window=8, stride=8)
    assert occ.explain(img, targets=3).maps.shape == (1, 32, 32)
    with pytest.raises(ValueError, match='`channels_last`'): score(m, img, masks, [3], channels_last=True)


# ---- Grad-CAM and MWP (items 3, 7, 8, 4) ----

class AuxNet(nn.Module):
    "An auxiliary head computed in `forward` but not used for the logits, and a layer (`unused`) that never runs."
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.aux = nn.Conv2d(8, 8, 3, 1, 1)
        self.unused = nn.Conv2d(8, 8, 1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 10)
    def forward(self, x):
        f = self.features(x)
        self.aux_out = self.aux(f)
        return self.fc(self.pool(f).flatten(1))


def test_issue12_item03_gradcam_layer_not_feeding_logits(img):
    torch.manual_seed(0)
    m = wrapped(AuxNet())
    with pytest.raises(ValueError, match="`layer` 'aux'.*does not feed"): GradCAM(m, layer='aux').explain(img)
    with pytest.raises(ValueError, match="`layer` 'unused'.*never ran"): GradCAM(m, layer='unused').explain(img)
    assert GradCAM(m, layer='features.3').explain(img).maps.shape == (1, 32, 32)


@pytest.mark.parametrize('cls', [GradCAM, GradCAMPlusPlus, ExcitationBackprop])
def test_issue12_item07_frozen_model(cls, img):
    net = tiny_cnn(); ref = cls(net).explain(img, targets=[1, 2]).maps
    frozen = tiny_cnn(); frozen.model.requires_grad_(False)
    e = cls(frozen).explain(img, targets=[1, 2])
    assert torch.allclose(e.maps, ref, atol=1e-6)
    assert not any(p.requires_grad for p in frozen.model.parameters())          # the caller's flags are kept


@pytest.mark.parametrize('cls', [GradCAM, GradCAMPlusPlus, ExcitationBackprop])
def test_issue12_item08_inference_mode(cls, net, img):
    ref = cls(net).explain(img, targets=[1]).maps
    with torch.inference_mode(): e = cls(net).explain(img, targets=[1])
    assert torch.allclose(e.maps, ref, atol=1e-6)
    with torch.inference_mode(): inf_net = tiny_cnn()                           # parameters made in inference mode
    if cls is ExcitationBackprop:                  # its rules never save the weights for backward: it just works
        assert torch.allclose(cls(inf_net).explain(img, targets=[1]).maps, ref, atol=1e-6)
    else:
        with pytest.raises(ValueError, match='inference mode'): cls(inf_net).explain(img, targets=[1])


class OpNet(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.conv, self.fc, self.op = nn.Conv2d(3, 8, 3, 1, 1), nn.Linear(8, 10), op
    def forward(self, x):
        return self.fc(self.op(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize('op,name', [(F.softplus, 'softplus'), (torch.exp, 'exp'), (lambda t: t.exp(), 'exp'),
                                     (lambda t: t.abs(), 'abs'), (lambda t: t.pow(2), 'pow'), (torch.sin, 'sin')])
def test_issue12_item04_mwp_allow_list(op, name, img):
    torch.manual_seed(0)
    m = wrapped(OpNet(op))
    with pytest.raises(ValueError, match=f'no rule for `{name}`'): ExcitationBackprop(m, layer='conv').explain(img)


def test_issue12_item04_mwp_supported_ops_still_pass(img):
    torch.manual_seed(0)
    m = wrapped(OpNet(lambda t: F.max_pool2d(F.relu(t), 2).flatten(2).view(t.shape[0], 8, 16, 16)))
    e = ExcitationBackprop(m, layer='conv').explain(img)
    assert e.maps.shape == (1, 32, 32) and torch.isfinite(e.maps).all() and (e.maps >= -1e-6).all()


# ---- Grad-CAM: layer resolution and several layers ----

@pytest.mark.parametrize('cls', [GradCAM, ExcitationBackprop])
def test_issue12_upsample_false_layer_resolution(cls):
    torch.manual_seed(0)
    m = wrapped(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)))
    ex, x01 = cls(m, layer='1', upsample=False), torch.rand(3, 32, 32)
    x = m.normalize(x01[None])
    with torch.no_grad(): logits = m(x)
    r = ex._explain(x01, x, logits, ex.resolve_targets(None, logits))     # the method's own result: layer resolution
    assert r.maps.shape == (1, 16, 16)
    e = ex.explain(x01)
    assert e.maps.shape == (1, 16, 16)


def test_issue12_gradcam_several_layers(net, img):
    a, b = GradCAM(net, layer='1').explain(img, targets=[1, 2]), GradCAM(net, layer='3').explain(img, targets=[1, 2])
    both = GradCAM(net, layer=['1', '3']).explain(img, targets=[1, 2])
    assert torch.allclose(both.maps, (a.maps + b.maps) / 2, atol=1e-6)
    assert both.extras['layer'] == ['1', '3']
    with pytest.raises(ValueError, match='`layer`'): GradCAM(net, layer=[])
    with pytest.raises(ValueError, match="`layer` 'nope'"): GradCAM(net, layer=['1', 'nope'])


# ---- LIME (item 14 and weak items) ----

def test_issue12_item14_lime_kernel_width(net):
    for kw in (0, -0.5, float('nan')):
        with pytest.raises(ValueError, match='`kernel_width`'): LIME(net, kernel_width=kw)


def test_issue12_weak_lime_seed_and_alpha(net, img):
    e = LIME(net, n_samples=8, seed=-1).explain(img, targets=[1])       # any int seed is valid (taken modulo 2**31 for quickshift)
    assert torch.isfinite(e.maps).all()
    with pytest.raises(ValueError, match='`alpha`'): LIME(net, alpha=-1.0)


def test_issue12_weak_lime_misspelt_keyword(net, img):
    with pytest.raises(ValueError, match='n_segmets'): LIME(net, segmentation='slic', n_segmets=20)


def test_issue12_weak_lime_own_segments(net, img):
    seg = torch.arange(4).repeat_interleave(8)[None].expand(32, 32) + 10   # four vertical stripes, labels 10..13
    e = LIME(net, n_samples=20, segments=seg).explain(img, targets=[1])
    assert e.extras['n_superpixels'] == 4 and torch.equal(e.extras['segments'], seg - 10)
    for k in range(4): assert e.maps[0][:, 8 * k:8 * k + 8].unique().numel() == 1
    e2 = LIME(net, n_samples=20, segments=lambda x01: seg.numpy()).explain(img, targets=[1])
    assert torch.equal(e.maps, e2.maps)
    with pytest.raises(ValueError, match='`segments`'): LIME(net, segments=torch.zeros(16, 16, dtype=torch.long))
    with pytest.raises(TypeError, match='`segments`'): LIME(net, segments=torch.zeros(32, 32))
    with pytest.raises(ValueError, match='`segments`'): LIME(net, segments=seg, segmentation='slic', n_segments=4)
