"""COSMAX (nbs/17_cosmax.ipynb): exactness against plain loops, forwards (each unordered pair once), bounded memory,
token dropping on a ViT, the figure, and bad input. The registry-driven checks (tests/test_explainers.py,
tests/test_sanity.py) run on it too."""
import subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch

from xaikit.explainers.cosmax import COSMAX, pair_coalitions, pair_index, show_cosmax, top_pairs, window_boxes
from xaikit.models import tiny_cnn, tiny_vit
from xaikit.perturb import window_regions, make_baseline
from xaikit.reference import loop_scores

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def case():
    net = tiny_cnn(24, width=4, num_classes=6, seed=3)
    x = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(5))
    return net, x


@pytest.mark.parametrize('score,baseline', [('logit', 'zero'), ('prob', 0.3), ('logodds', 'blur')])
def test_equals_plain_pair_loop(case, score, baseline):
    "S1, S2, C, A and the maps equal one forward per window and per ordered pair in a plain loop (overlapping windows)."
    net, x = case
    targets = [4, [0, 2]]
    ex = COSMAX(net, window=10, stride=7, score=score, baseline=baseline, n_pairs=4, batch_size=23)
    e = ex.explain(x, targets)
    R = window_regions(24, 10, 7); K = len(R)                       # positions 0, 7, 14 per axis: 9 overlapping windows
    assert K == 9 and (R[0] & R[1]).any()
    b = make_baseline(net, x, baseline)
    s = lambda masks: loop_scores(net, x, masks, targets, kind=score, baseline=b)          # (M, T)
    s0 = s(torch.ones(1, 24, 24))[0]
    S1 = torch.stack([s0 - s((~R[k]).float()[None])[0] for k in range(K)], 1)
    S2 = torch.stack([torch.stack([s0 - s((~(R[k] | R[l])).float()[None])[0] for l in range(K)], 1) for k in range(K)], 1)
    C = S2 - S1[:, :, None] - S1[:, None, :]
    C[:, range(K), range(K)] = 0
    tol = 1e-5 * max(1.0, float(S2.abs().max()))
    cover = R.flatten(1).float()
    disjoint = (cover @ cover.T) == 0                               # pairs of windows that share no pixel
    assert torch.equal(e.extras['disjoint'], disjoint) and 0 < disjoint.sum() < K * (K - 1)
    A = (C * disjoint).sum(2) / disjoint.sum(1).clamp_min(1)
    for name, ref in (('single', S1), ('joint', S2), ('interaction', C), ('aggregate', A)):
        assert (e.extras[name] - ref).abs().max() <= tol, name
    assert (e.maps.flatten(1) - S1 @ cover / cover.sum(0)).abs().max() <= tol
    for t in range(2):
        comp = e.extras['pairs'][t]['competing']
        kl = pair_index(K); kl = kl[disjoint[kl[:, 0], kl[:, 1]]]
        vals = C[t][kl[:, 0], kl[:, 1]]
        assert [c for *_, c in comp] == pytest.approx(vals.sort(descending=True).values[:len(comp)].tolist(), abs=tol)
        assert all(disjoint[k, l] for k, l, _ in comp + e.extras['pairs'][t]['complementary'])
        assert all(c > 0 for *_, c in comp) and all(c < 0 for *_, c in e.extras['pairs'][t]['complementary'])
    assert e.extras['windows'].tolist()[:2] == [[0, 0, 10, 10], [7, 0, 17, 10]]


def test_each_unordered_pair_forwarded_once(case):
    "1 + K + K(K-1)/2 images reach the network, all different: no ordered duplicate, no pair of overlapping windows twice."
    net, x = case
    net.n_classes                                                   # the adapter's one-time output-size probe
    seen = []
    h = net.model.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    try: e = COSMAX(net, window=8, stride=4, batch_size=50).explain(x, targets=[1, 2, 3])
    finally: h.remove()
    K = len(window_regions(24, 8, 4))
    imgs = torch.cat(seen)
    assert K == 25 and e.n_forward == len(imgs) == 1 + K + K * (K - 1) // 2
    assert len(torch.unique(imgs.flatten(1), dim=0)) == len(imgs)
    masks = pair_coalitions(window_regions(24, 8, 4)).masks(torch.arange(K + K * (K - 1) // 2))
    assert len(torch.unique(masks.flatten(1), dim=0)) == len(masks)


def test_targets_share_forwards_and_default_top_k(case):
    net, x = case
    e3 = COSMAX(net, window=8).explain(x, targets=[0, 5, [1, 2]])
    e1 = COSMAX(net, window=8).explain(x, targets=5)
    assert e3.n_forward == e1.n_forward == 1 + 9 + 36
    assert torch.allclose(e3.extras['interaction'][1], e1.extras['interaction'][0], atol=1e-6)
    e = COSMAX(net, window=8, top_k=4).explain(x)
    top = net(net.normalize(x[None]))[0].topk(4).indices.tolist()
    assert [t.classes[0] for t in e.targets] == top and e.maps.shape == (4, 24, 24)
    assert e.extras['interaction'].shape == (4, 9, 9) and e.extras['aggregate'].shape == (4, 9)
    assert torch.allclose(e.extras['probs'], net(net.normalize(x[None]))[0].softmax(-1)[top])
    assert e.params['score'] == 'logit' and 'target_kind' not in e.params


def test_top_pairs_signs():
    C = torch.tensor([[0., 2, -1], [2, 0, 0.5], [-1, 0.5, 0]])[None]
    assert top_pairs(C, 3) == [{'competing': [(0, 1, 2.0), (1, 2, 0.5)], 'complementary': [(0, 2, -1.0)]}]
    allowed = ~torch.eye(3, dtype=torch.bool); allowed[0, 1] = allowed[1, 0] = False
    assert top_pairs(C, 3, allowed) == [{'competing': [(1, 2, 0.5)], 'complementary': [(0, 2, -1.0)]}]


def test_linear_model_has_no_interaction():
    "A linear score has no interaction: C = 0 for disjoint windows; overlapping windows get minus the overlap's drop."
    from torch import nn
    from xaikit.models import wrap
    torch.manual_seed(0)
    lin = wrap(nn.Sequential(nn.Flatten(), nn.Linear(3 * 20 * 20, 4)).eval(), input_size=20)
    x = torch.rand(3, 20, 20)
    e = COSMAX(lin, window=8, stride=6, n_pairs=1).explain(x, targets=2)
    R = window_regions(20, 8, 6); cover = R.flatten(1).float()
    C, dis = e.extras['interaction'][0], e.extras['disjoint']
    assert C[dis].abs().max() < 1e-4 and C[~dis].abs().max() > 1e-2
    xn = lin.normalize(x[None])[0]
    w = lin.model[1].weight[2].detach().view(3, 20, 20)
    drop = (w * xn).sum(0)                                          # each pixel's share of the logit (baseline 0)
    ov = (R[:, None] & R[None]).flatten(2).float() @ drop.flatten()  # (K, K) the overlap's drop
    off = ~torch.eye(len(R), dtype=torch.bool)
    assert torch.allclose(C[off], -ov[off], atol=1e-4)


def test_window_boxes_and_grid():
    R = window_regions((12, 16), (4, 8), (4, 8))
    assert window_boxes(R).tolist()[:3] == [[0, 0, 8, 4], [8, 0, 16, 4], [0, 4, 8, 8]]
    co = pair_coalitions(R)
    assert co.grid == (3, 2) and co.labels is not None


def test_vit_token_dropping():
    "Windows that are the ViT's patches run as token dropping (mode='tokens' accepted); coarser windows cannot."
    vit = tiny_vit('timm', image_size=16, depth=1)                       # a 4 x 4 grid of 4 px patches
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    e = COSMAX(vit, window=8, stride=4, mode='pixels').explain(x, targets=1)
    assert e.n_forward == 1 + 9 + 36
    with pytest.raises(ValueError, match='does not match the ViT patch grid'):
        COSMAX(vit, window=8, mode='tokens').explain(x, targets=1)
    et = COSMAX(vit, window=4, mode='tokens', n_pairs=2).explain(x, targets=1)
    ea = COSMAX(vit, window=4, n_pairs=2).explain(x, targets=1)          # 'auto' picks token dropping
    assert et.n_forward == 1 + 16 + 16 * 15 // 2 and torch.equal(et.extras['interaction'], ea.extras['interaction'])


def test_bad_input(case):
    net, x = case
    with pytest.raises(ValueError, match='`window`.*larger than the image'): COSMAX(net, window=25)
    for s in (0, -4, (4, 0)):
        with pytest.raises(ValueError, match='`stride`'): COSMAX(net, window=8, stride=s)
    with pytest.raises(ValueError, match=r'`n_pairs` \(37\) exceeds the 36 pairs of disjoint windows'): COSMAX(net, window=8, n_pairs=37)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match='`n_pairs`'): COSMAX(net, window=8, n_pairs=bad)
    with pytest.raises(ValueError, match='exceeds the 0 pairs of disjoint'): COSMAX(net, window=20, stride=4)
    with pytest.raises(ValueError, match='`top_k`'): COSMAX(net, window=8, top_k=0)
    with pytest.raises(ValueError, match='`score`'): COSMAX(net, window=8, score='odds')
    with pytest.raises(ValueError, match='pairs need at least 2 windows'): COSMAX(net, window=24)
    with pytest.raises(ValueError, match='`cover_border`'): COSMAX(net, window=8, cover_border='captum')
    with pytest.raises(ValueError, match='`regions`'): pair_coalitions(torch.zeros(3, 4, 4))


def test_figure(case):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    net, x = case
    e = COSMAX(net, window=8, n_pairs=3).explain(x, targets=[0, 1])
    axes = show_cosmax(e)
    assert axes.shape == (2, 4)
    for t in range(2):
        n_arrows = len([c for c in axes[t, 3].texts])                   # one annotation per pair
        assert n_arrows == len(e.extras['pairs'][t]['competing']) + len(e.extras['pairs'][t]['complementary'])
    labels = [a.get_ylabel() for a in axes[0, 0].figure.axes if a not in axes.flat]
    assert any('drop' in l for l in labels) and any('interaction C[k, l]' in l for l in labels) and len(labels) == 6
    plt.close('all')
    from xaikit.explainers.occlusion import Occlusion
    with pytest.raises(ValueError, match='`e`'): show_cosmax(Occlusion(net, window=8, stride=8).explain(x))


_RSS = textwrap.dedent("""
    import resource, sys, torch
    from torch import nn
    from xaikit.explainers.cosmax import COSMAX
    from xaikit.models import wrap
    torch.set_num_threads(1)
    torch.manual_seed(0)                     # a cheap 224 px classifier: the engine's masks and images are full size
    net = wrap(nn.Sequential(nn.AvgPool2d(16), nn.Flatten(), nn.Linear(3 * 14 * 14, 10)).eval(), input_size=224)
    e = COSMAX(net, window=int(sys.argv[1]), top_k=1, batch_size=32).explain(torch.rand(3, 224, 224))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, e.n_forward)
""")


def test_memory_bounded():
    "Peak RSS with K = 64 windows at 224 px is within 15 % of K = 16 (each run in its own process)."
    out = {}
    for w in (56, 28):
        r = subprocess.run([sys.executable, '-c', _RSS, str(w)], capture_output=True, text=True, cwd=ROOT, check=True)
        out[w] = tuple(int(v) for v in r.stdout.split())
    (rss16, n16), (rss64, n64) = out[56], out[28]
    assert (n16, n64) == (1 + 16 * 17 // 2, 1 + 64 * 65 // 2)
    assert rss64 <= 1.15 * rss16, (rss16, rss64)
