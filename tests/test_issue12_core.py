"""Issue 12 (reliability), core part: image input, the model adapter and the explainer base. One test per item."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import xaikit
from xaikit.core import Explanation, ClassLogit, ClassProb, assets_dir, sample_image, to_image
from xaikit.models import ModelAdapter, tiny_cnn, wrap


def _img(seed=0): return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- images ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('bad', [torch.rand(3, 0, 0), np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.float32),
                                 torch.zeros(1, 3, 5, 0)], ids=['3x0x0', '0x5x3', '4x0', '1x3x5x0'])
def test_issue12_item01_empty_images(bad):
    with pytest.raises(ValueError, match="`image` is empty"): to_image(bad)
    with pytest.raises(ValueError, match="`image` is empty"): xaikit.explain(tiny_cnn(), bad, method='gradcam')


def test_issue12_item02_16bit_png_and_float_tiff(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)          # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / 'a.png')
    assert Image.open(tmp_path / 'a.png').mode in ('I;16', 'I')
    x = to_image(tmp_path / 'a.png')
    assert x.shape == (3, 64, 64)
    torch.testing.assert_close(x[0], torch.from_numpy(ramp.astype(np.float32) / 65535))
    assert (x >= 1).float().mean() < 0.01                                         # was: 99.6 % of pixels saturated
    torch.testing.assert_close(to_image(ramp)[1], x[1])                           # a uint16 array: the same
    f = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(f).save(tmp_path / 'f.tif')
    assert Image.open(tmp_path / 'f.tif').mode == 'F'
    torch.testing.assert_close(to_image(tmp_path / 'f.tif')[2], torch.from_numpy(f))   # was: all values <= 0.004
    Image.fromarray(f * 1000).save(tmp_path / 'g.tif')
    with pytest.raises(ValueError, match="value_range"): to_image(tmp_path / 'g.tif')
    torch.testing.assert_close(to_image(tmp_path / 'g.tif', value_range=(0, 1000))[0], torch.from_numpy(f), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="mode 'I'"): to_image(Image.fromarray(np.array([[0, 70000]], np.int32)))


def test_issue12_weak_negative_strides():
    rgb = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    torch.testing.assert_close(to_image(rgb[..., ::-1]), to_image(rgb[..., ::-1].copy()))
    torch.testing.assert_close(to_image(rgb[::-1, ::2]), to_image(np.ascontiguousarray(rgb[::-1, ::2])))
    torch.testing.assert_close(to_image(rgb.astype(np.float32)[:, ::-1] / 255), to_image(rgb[:, ::-1]))


def test_issue12_weak_sample_image_allow_list():
    assert sample_image('coffee').shape == (400, 600, 3)
    for name in ('download_all', 'lfw_subset', 'binary_blobs', 'data_dir', 'load', '__name__'):
        with pytest.raises(ValueError, match="`name`"): sample_image(name)
    with pytest.raises(TypeError, match="`name`"): sample_image(3)


def test_issue12_weak_assets_dir_no_walking_up(tmp_path, monkeypatch):
    (tmp_path / 'shared' / 'assets').mkdir(parents=True)
    (tmp_path / 'a' / 'b').mkdir(parents=True)
    monkeypatch.delenv('XAIKIT_ASSETS', raising=False)
    monkeypatch.chdir(tmp_path / 'a' / 'b')
    assert assets_dir(required=False) is None
    with pytest.raises(FileNotFoundError, match="XAIKIT_ASSETS"): assets_dir()
    assert assets_dir(path=tmp_path / 'shared' / 'assets') == tmp_path / 'shared' / 'assets'
    monkeypatch.setenv('XAIKIT_ASSETS', str(tmp_path / 'shared' / 'assets'))
    assert assets_dir() == tmp_path / 'shared' / 'assets'


# --- model mode --------------------------------------------------------------------------------------------------------
def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


@pytest.mark.parametrize('method, params', [('gradcam', {}), ('rise', dict(n_masks=16)), ('occlusion', dict(window=112, stride=112))])
def test_issue12_item05_explain_keeps_train_mode(method, params):
    net = _bn_net().train()
    xaikit.explain(net, _img(), method=method, **params)
    assert all(m.training for m in net.modules()), "the caller's model was left in eval mode"
    net.eval(); wrap(net); assert not any(m.training for m in net.modules())    # and an eval model stays in eval
    net.train(); wrap(net); assert all(m.training for m in net.modules())       # `wrap` itself changes nothing


@pytest.mark.parametrize('method, params', [('gradcam', {}), ('rise', dict(n_masks=16)), ('occlusion', dict(window=8, stride=8)),
                                            ('lime', dict(n_samples=16)), ('mwp', {})])
def test_issue12_item06_wrapped_train_model_explained_in_eval(method, params):
    net = _bn_net(); m = wrap(net.eval(), input_size=32)
    ref = xaikit.explain(m, _img(), method=method, targets=1, **params).maps
    net.train(); net[1].eval()                                                     # a mixed state the caller chose
    modes = [x.training for x in net.modules()]
    stats = net[1].running_mean.clone(), net[1].running_var.clone(), int(net[1].num_batches_tracked)
    e = xaikit.explain(m, _img(), method=method, targets=1, **params)
    torch.testing.assert_close(e.maps, ref)                                       # dropout and batch statistics were off
    assert [x.training for x in net.modules()] == modes
    net[1].train(); xaikit.explain(m, _img(), method=method, targets=1, **params)
    torch.testing.assert_close(net[1].running_mean, stats[0]); assert int(net[1].num_batches_tracked) == stats[2]


def test_issue12_evaluating_restores_on_error():
    net = _bn_net().train(); m = wrap(net)
    with pytest.raises(RuntimeError, match='boom'):
        with m.evaluating():
            assert not any(x.training for x in net.modules()); raise RuntimeError('boom')
    assert all(x.training for x in net.modules())


# --- model outputs ---------------------------------------------------------------------------------------------------
class _Head(nn.Module):
    "Conv features, then a head whose output `f` reshapes (dict, (B, C, 1, 1), one logit ...)."
    def __init__(self, f, n=10):
        super().__init__(); torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc, self.f = nn.Linear(8, n), f
    def forward(self, x): return self.f(self.fc(self.features(x).mean((2, 3))))


def test_issue12_item15_one_logit_model():
    m = wrap(_Head(lambda z: z, n=1), input_size=32, class_names=['dog'])
    with torch.inference_mode(): z = m.model(m.preprocess(_img()))[:, 0]
    assert m.n_classes == 2 and m.class_names == ['not dog', 'dog']
    p = ClassProb(1)(m(m.preprocess(_img())))
    torch.testing.assert_close(p, z.sigmoid())                                    # was: softmax of one logit, always 1
    for method, params in [('rise', dict(n_masks=64)), ('occlusion', dict(window=8, stride=8))]:
        e = xaikit.explain(m, _img(), method=method, targets=1, **params)
        assert e.maps.std() > 1e-4, f"{method}: a flat map on a one-logit model"
        e0 = xaikit.explain(m, _img(), method=method, targets=0, **params)
        if method == 'occlusion': torch.testing.assert_close(e0.maps, -e.maps)  # p(0) = 1 - p(1)
    g = xaikit.explain(m, _img(), method='gradcam', targets=1)
    assert torch.isfinite(g.maps).all() and g.maps.abs().sum() > 0


@pytest.mark.parametrize('f', [lambda z: {'logits': z}, lambda z: {'out': z}, lambda z: z[:, :, None, None],
                               lambda z: (z, z.detach())], ids=['dict-logits', 'dict-one', 'B-C-1-1', 'tuple'])
def test_issue12_item16_17_model_outputs(f):
    ref = wrap(_Head(lambda z: z), input_size=32)
    m = wrap(_Head(f), input_size=32)
    with torch.inference_mode(): assert m(m.preprocess(_img())).shape == (1, 10)
    assert m.n_classes == 10
    for method, params in (('gradcam', {}), ('rise', dict(n_masks=16))):
        a = xaikit.explain(m, _img(), method=method, targets=2, **params)
        b = xaikit.explain(ref, _img(), method=method, targets=2, **params)
        torch.testing.assert_close(a.maps, b.maps)


def test_issue12_item16_17_bad_outputs_named():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(TypeError, match="'logits'"): wrap(_Head(lambda z: {'a': z, 'b': z}), input_size=32)(x)
    with pytest.raises(ValueError, match=r"logits \(B, C\)"): wrap(_Head(lambda z: z[:, :, None].expand(-1, -1, 3)), input_size=32)(x)
    with pytest.raises(ValueError, match=r"logits \(B, C\)"): wrap(_Head(lambda z: z[0]), input_size=32)(x)
    with pytest.raises(TypeError, match="logits"): wrap(_Head(lambda z: z.tolist()), input_size=32)(x)


# --- layers ------------------------------------------------------------------------------------------------------------
class _Aux(nn.Module):
    def __init__(self):
        super().__init__(); torch.manual_seed(0)
        self.block = nn.Conv2d(3, 3, 3, padding=1); self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.aux = nn.Conv2d(8, 8, 1); self.fc = nn.Linear(8, 10)
    def forward(self, x): return self.fc(self.conv(self.block(self.block(x))).relu().mean((2, 3)))


def test_issue12_weak_layer_never_runs():
    m = wrap(_Aux(), input_size=32)
    with pytest.raises(ValueError, match="`layer` 'aux' (did not run|never ran)"): xaikit.explain(m, _img(), method='gradcam', layer='aux')
    with torch.inference_mode(), m.record('aux') as rec: m(m.preprocess(_img()))
    with pytest.raises(ValueError, match="`layer`"): rec['aux']


def test_issue12_weak_layer_called_twice_warns():
    m = wrap(_Aux(), input_size=32)
    with pytest.warns(UserWarning, match="more than once per forward"): xaikit.explain(m, _img(), method='gradcam', layer='block')
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                             # a layer that runs once: no warning
        xaikit.explain(m, _img(), method='gradcam', layer='conv')
        with torch.inference_mode(), m.record('conv'): m(m.preprocess(_img())); m(m.preprocess(_img()))   # two forwards: fine


# --- channels ----------------------------------------------------------------------------------------------------------
def _gray_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_issue12_weak_one_channel_model():
    m = wrap(_gray_net(), input_size=32, mean=(0.5,), std=(0.25,))
    assert m.channels == 1 and m.n_classes == 4
    rgb = _img()
    x = m.to_input(rgb)
    assert x.shape == (1, 32, 32)
    torch.testing.assert_close(x[0], (rgb * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0))
    torch.testing.assert_close(m.to_input(x), x)                                  # a gray image passes through
    assert m.preprocess(np.zeros((32, 32), np.uint8)).shape == (1, 1, 32, 32)
    e = xaikit.explain(m, rgb, method='gradcam')
    assert e.maps.shape == (1, 32, 32) and e.image.shape == (1, 32, 32)
    e.show()
    with pytest.raises(ValueError, match="`std` has 3 values but `mean` has 1"): wrap(_gray_net(), mean=(0.5,), std=(0.2,) * 3)
    with pytest.raises(ValueError, match=r"`x` must be a normalised batch \(B, 1, H, W\)"): m(torch.rand(1, 3, 32, 32))
    rgb_model = tiny_cnn()                                                  # 3-channel behaviour unchanged
    assert rgb_model.channels == 3 and rgb_model.to_input(np.zeros((32, 32), np.uint8)).shape == (3, 32, 32)


def test_issue12_weak_many_channel_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(5, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    m = wrap(net, input_size=16, mean=(0.5,) * 5, std=(0.5,) * 5)
    x = torch.rand(5, 16, 16)
    assert m.to_input(x).shape == (5, 16, 16)
    with pytest.raises(ValueError, match="takes 5"): m.to_input(_img())
    assert xaikit.explain(m, x, method='gradcam', layer='0').maps.shape == (1, 16, 16)


# --- Explanation -------------------------------------------------------------------------------------------------------
def test_issue12_weak_coarse_maps():
    e = Explanation(torch.rand(1, 4, 4), [ClassLogit(0)], 'demo', image=torch.rand(3, 32, 32))
    assert e.maps.shape == (1, 4, 4) and len(e.show()) == 1
    g = xaikit.explain(tiny_cnn(), _img(), method='gradcam', layer='0', upsample=False)
    assert g.maps.shape[-2:] == (32, 32)
    r = wrap(_Head(lambda z: z), input_size=32)
    r.model.features[1] = nn.Sequential(nn.ReLU(), nn.MaxPool2d(4))
    g = xaikit.explain(r, _img(), method='gradcam', layer='features.1', upsample=False)
    assert g.maps.shape == (1, 8, 8) and g.image.shape == (3, 32, 32)
    g.show()
