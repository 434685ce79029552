"""Model adapters and the zoo: accuracy on real data (skips without the assets folder), one adapter test on three libraries."""
import numpy as np
import pytest
import torch

from xaikit.core import assets_dir, sample_image
from xaikit.models import accuracy, cifar_resnet, efficientnet_lite0, imagenet_subset, tiny_cnn, tiny_vit, wrap

ASSETS = assets_dir(required=False)
need_assets = pytest.mark.skipif(ASSETS is None, reason="no assets folder: set XAIKIT_ASSETS to the folder holding imagenet/, cifar10/, models/")


@need_assets
def test_efficientnet_lite0_imagenet_top1():
    pairs = imagenet_subset()
    assert len(pairs) == 35
    acc = accuracy(efficientnet_lite0(), [p for p, _ in pairs], [l for _, l in pairs])
    assert acc >= 0.70, f"top-1 {acc:.1%} on the 35 ImageNet val images"


@need_assets
def test_cifar_resnet20_accuracy():
    z = np.load(ASSETS / 'cifar10' / 'cifar10_test_jpg_1000.npz')
    m = cifar_resnet(20)
    x = m.normalize(torch.from_numpy(z['images']).permute(0, 3, 1, 2).float() / 255)
    with torch.inference_mode(): acc = (m(x).argmax(-1) == torch.from_numpy(z['labels'])).float().mean().item()
    assert acc >= 0.75, f"ResNet-20 {acc:.1%} on 1000 CIFAR-10 JPEGs"


def _resnet():
    from torchvision.models import resnet18
    torch.manual_seed(0)
    return wrap(resnet18(num_classes=1000).eval())


@pytest.mark.parametrize('make, layer, grid', [
    (_resnet, 'layer4.1.conv2', None),
    (lambda: tiny_vit('timm'), 'blocks.1.norm1', (8, 8)),
    (lambda: tiny_vit('hf'), 'vit.layers.1.layernorm_before', (8, 8)),
    (lambda: tiny_vit('torchvision'), 'encoder.layers.encoder_layer_1.ln_1', (8, 8)),
], ids=['torchvision-resnet', 'timm-vit', 'hf-vit', 'torchvision-vit'])
def test_adapter(make, layer, grid):
    m = make()
    x = m.preprocess(sample_image('chelsea'))
    assert x.shape == (1, 3, *m.input_size)
    with torch.inference_mode(), m.record(layer) as rec: logits = m(x)
    assert logits.shape == (1, m.n_classes) and torch.isfinite(logits).all()
    assert m.layer(layer) is dict(m.model.named_modules())[layer]
    assert m.grid == grid and m.is_vit == (grid is not None)
    if grid is not None:
        assert m.n_prefix == 1 and m.tokens_to_grid(rec[layer]).shape[-2:] == grid
    with pytest.raises(ValueError, match="closest names"): m.layer(layer + 'x')


def test_hf_deit_distilled_prefix():
    m = tiny_vit('hf', distilled=True)
    assert m.n_prefix == 2
    with torch.inference_mode(): assert m(m.preprocess(sample_image('coffee'))).shape == (1, 10)


def test_bad_inputs_named():
    m = tiny_vit('hf')
    with pytest.raises(TypeError, match="`model`"): wrap(object())
    with pytest.raises(ValueError, match="`std`"): wrap(torch.nn.Linear(2, 2), std=(0, 1, 1))
    with pytest.raises(ValueError, match="`resize`"): wrap(torch.nn.Linear(2, 2), input_size=224, resize=100)
    with pytest.raises(ValueError, match="`image`"): m.preprocess(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="NaN"): m.preprocess(torch.full((3, 8, 8), float('nan')))
    with pytest.raises(TypeError, match="`layer`"): m.layer(3)


ADAPTER_API = ['to_input', 'normalize', 'denormalize', 'preprocess', 'forward', 'predict', 'layer', 'layer_names',
               'resolve_layer_name', 'tokens_to_grid', 'grid_to_tokens', 'record', 'resize_geometry', 'default_cam_layer',
               'evaluating']
ADAPTER_PROPS = ['device', 'dtype', 'n_classes']


def test_adapter_methods_documented():
    "The adapter's methods are real methods of `ModelAdapter` with a docstring, and nbdev's index links each to the docs"
    from xaikit import _modidx
    from xaikit.models import ModelAdapter
    index = _modidx.d['syms']['xaikit.models']
    for name in ADAPTER_API + ADAPTER_PROPS:
        attr = ModelAdapter.__dict__[name]
        fn = attr.fget if isinstance(attr, property) else attr
        assert isinstance(attr, property) == (name in ADAPTER_PROPS), name
        assert fn.__qualname__ == f'ModelAdapter.{name}' and fn.__doc__, name
        assert f'xaikit.models.ModelAdapter.{name}' in index, name


def test_tiny_cnn_adapter():
    m = tiny_cnn(24, num_classes=5)
    x = m.preprocess(sample_image('chelsea'))
    assert x.shape == (1, 3, 24, 24) and m.n_classes == 5 and m.default_cam_layer() == '3'
    with torch.inference_mode(), m.record(['0', '3']) as rec: m(x)
    assert rec['0'].shape == rec['3'].shape == (1, 8, 24, 24)
    assert m.predict(sample_image('coffee'), k=2)[0][1].startswith('class ')
