"""Agreement of xaikit's base explainers with independent implementations (issue 5).

The peers (pytorch-grad-cam, Captum) are test-only dependencies from requirements-peers.txt; xaikit never imports them.
"""
import numpy as np
import pytest
import torch
import torchvision

from xaikit.core import sample_image, seed_everything
from xaikit.explainers.gradcam import GradCAM
from xaikit.explainers.occlusion import Occlusion
from xaikit.models import efficientnet_lite0, wrap

pgc = pytest.importorskip('pytorch_grad_cam', reason='pytorch-grad-cam (requirements-peers.txt) is not installed')
captum_attr = pytest.importorskip('captum.attr', reason='captum (requirements-peers.txt) is not installed')
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


def pearson(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope='module')
def lite0(): return efficientnet_lite0()


@pytest.fixture(scope='module')
def resnet():
    seed_everything(0)
    net = torchvision.models.resnet18(num_classes=1000).eval()   # random weights (no network): agreement is about the algorithm
    return wrap(net)


def images(model):
    return [model.to_input(sample_image(n)) for n in ('chelsea', 'coffee')]


def pgc_gradcam(model, layer, x01, classes):
    x = model.normalize(x01[None])
    with pgc.GradCAM(model=model.model, target_layers=[model.layer(layer)]) as cam:
        return [cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c))])[0] for c in classes]


@pytest.mark.parametrize('which', ['lite0', 'resnet'])
def test_gradcam_matches_pytorch_grad_cam(which, request):
    model = request.getfixturevalue(which)
    gc = GradCAM(model)                                   # default layer: the last spatial map
    for x01 in images(model):
        with torch.no_grad(): top = model(model.normalize(x01[None])).topk(2).indices[0].tolist()
        ours = gc.explain(x01, targets=top)
        theirs = pgc_gradcam(model, gc.layer, x01, top)
        for t in range(len(top)):
            r = pearson(ours.maps[t], theirs[t])
            assert r >= 0.999, (which, gc.layer, top[t], r)


def test_occlusion_matches_captum(lite0):
    window, stride = 56, 28
    occ = Occlusion(lite0, window=window, stride=stride, baseline='zero', cover_border=False)
    probs = lambda x: torch.softmax(lite0.model(x), -1)
    cap = captum_attr.Occlusion(probs)
    for x01 in images(lite0):
        x = lite0.normalize(x01[None])
        c = int(lite0.model(x).argmax())
        ours = occ.explain(x01, targets=c)
        with torch.no_grad():
            theirs = cap.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                   baselines=0.0, target=c, perturbations_per_eval=16)
        theirs = theirs[0].mean(0)                       # the same value on all three channels
        assert ours.n_forward == 1 + 7 * 7
        r = pearson(ours.maps[0], theirs)
        assert r >= 0.999, r
        assert torch.allclose(ours.maps[0], theirs.float(), atol=1e-4)   # not only correlated: the same numbers


@pytest.mark.parametrize('window,stride', [(48, 32)])
def test_issue12_occlusion_cut_windows_match_captum(lite0, window, stride):
    "Issue 12: `(224 - window)` not a multiple of the stride: `cover_border='cut'` places the windows as Captum does."
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no stride-gap warning here
        occ = Occlusion(lite0, window=window, stride=stride, baseline='zero', cover_border='cut', batch_size=32)
    cap = captum_attr.Occlusion(lambda x: torch.softmax(lite0.model(x), -1))
    x01 = images(lite0)[0]
    x = lite0.normalize(x01[None])
    with torch.no_grad(): c = int(lite0.model(x).argmax())
    ours = occ.explain(x01, targets=c)
    with torch.no_grad():
        theirs = cap.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                               baselines=0.0, target=c, perturbations_per_eval=32)[0].mean(0)
    n = 1 + -(-(224 - window) // stride)               # Captum: 1 + ceil((224 - window) / stride) positions per axis
    assert ours.n_forward == 1 + n * n
    assert torch.allclose(ours.maps[0], theirs.float(), atol=1e-4)
