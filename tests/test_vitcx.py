"""ViT-CX against a reference written here from the formulas (methods.md §3.3): explicit loops over maps, clusters and
pixels, one forward per image, on tiny random-weight ViTs of Hugging Face, timm, torchvision and a distilled DeiT, and on
a CNN layer. Plus seeds, forward counts, batching, constant maps and bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from xaikit.explainers.vitcx import ViTCX, cluster_noise, cluster_maps
from xaikit.models import tiny_cnn, tiny_vit

IMG = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5))


def reference(model, x01, layer, prefix, targets, seed=0, std=0.1, threshold=0.1):
    "ViT-CX from the formulas: E_c(u) = 1/K sum_k s_k(c) M_k(u) / sum_j M_j(u), s_k = p(x_mask) - p(x_ref) + p(x)."
    x = model.normalize(x01[None])
    H, W = x.shape[-2:]
    out = {}
    h = model.layer(layer).register_forward_hook(lambda m, i, o: out.__setitem__('a', o[0] if isinstance(o, tuple) else o))
    with torch.no_grad(): p = model(x).float().softmax(-1)[0]
    h.remove()
    a = out['a'][0].double()
    if a.ndim == 2:                                          # tokens (P + N, D): drop the prefix, fold to the grid by hand
        gh, gw = model.grid
        a = a[prefix:].T.reshape(-1, gh, gw)
    maps, live = [], []
    for d in range(a.shape[0]):                              # upsample, then min-max normalise, map by map
        u = F.interpolate(a[d][None, None], size=(H, W), mode='bilinear', align_corners=False)[0, 0]
        if u.max() - u.min() <= 1e-5 * u.abs().max(): continue    # constant: dropped
        maps.append((u - u.min()) / (u.max() - u.min() + 1e-8)); live.append(d)
    V = torch.stack(maps).flatten(1)
    n = len(maps)
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n): dist[i, j] = 0 if i == j else 1 - float(V[i] @ V[j] / (V[i].norm() * V[j].norm()))
    lab = fcluster(linkage(squareform(dist, checks=False), 'complete'), np.nextafter(threshold, 0), 'distance')
    order = []                                               # clusters numbered by their first map
    for l in lab:
        if l not in order: order.append(l)
    lab = [order.index(l) for l in lab]
    K = len(order)
    masks = []
    for k in range(K):
        s = sum(maps[i] for i in range(n) if lab[i] == k)
        masks.append(((s - s.min()) / (s.max() - s.min() + 1e-8)).float())
    scores = torch.zeros(K, len(targets))
    with torch.no_grad():
        for k in range(K):
            eps = cluster_noise(torch.tensor([k]), tuple(x.shape[1:]), seed, std)[0]
            M = masks[k]
            p_mask = model(x * M + eps * (1 - M)).float().softmax(-1)[0]
            p_ref = model(x + eps * (1 - M)).float().softmax(-1)[0]
            for t, c in enumerate(targets): scores[k, t] = p_mask[c] - p_ref[c] + p[c]
    E = np.zeros((len(targets), H, W))
    Ms, sc = torch.stack(masks).double().numpy(), scores.double().numpy()
    for y in range(H):                                       # pixel by pixel: the coverage-corrected average over clusters
        for x_ in range(W):
            cov = Ms[:, y, x_].sum()
            if cov > 0: E[:, y, x_] = (sc * (Ms[:, y, x_] / cov)[:, None]).sum(0) / K
    return torch.as_tensor(E).float(), lab, live, torch.stack(masks)


CASES = {'hf': (lambda: tiny_vit('hf'), 1), 'timm': (lambda: tiny_vit('timm'), 1), 'torchvision': (lambda: tiny_vit('torchvision'), 1),
         'deit_distilled': (lambda: tiny_vit('hf', distilled=True), 2)}


@pytest.mark.parametrize('case', list(CASES))
def test_exact_vits(case):
    make, prefix = CASES[case]
    model = make()
    ex = ViTCX(model, seed=3, batch_size=7)
    e = ex.explain(IMG, targets=[1, 4])
    ref, lab, live, masks = reference(model, IMG, ex.layer, prefix, [1, 4], seed=3)
    assert model.n_prefix == prefix
    ours = e.extras['cluster_of_map']
    assert ours[live].tolist() == lab and (ours >= 0).sum() == len(live)
    K = e.extras['n_clusters']
    assert K == len(set(lab)) > 1 and e.n_forward == 1 + 2 * K
    assert (e.extras['masks'] - masks).abs().max() <= 1e-5
    err = (e.maps - ref).abs().max()
    assert err <= 1e-5, (case, err)


def test_exact_cnn_layer():
    "The same on a CNN layer's feature maps; one channel is dead (constant) and dropped."
    model = tiny_cnn(width=6, seed=2)
    with torch.no_grad(): model.model[2].weight[0] = 0; model.model[2].bias[0] = -1     # channel 0 after the ReLU: all zeros
    e = ViTCX(model, seed=1).explain(IMG, targets=[0, 7])
    ref, lab, live, _ = reference(model, IMG, '3', 0, [0, 7], seed=1)
    assert e.extras['layer'] == '3' and e.extras['n_constant'] == 1 and e.extras['cluster_of_map'][0] == -1 and 0 not in live
    assert (e.maps - ref).abs().max() <= 1e-5


def test_distances_equal_the_dense_formula():
    "The distances come from the upsampling's Gram matrix, never from the (D, H, W) upsampled maps: equal to the dense cosine."
    f = torch.randn(12, 5, 7, generator=torch.Generator().manual_seed(0)).exp()
    cl = cluster_maps(f, (40, 56))
    u = F.interpolate(f[:, None].double(), size=(40, 56), mode='bilinear', align_corners=False).flatten(1)
    u = u - u.amin(1, keepdim=True)
    cos = (u @ u.T) / (u.norm(dim=1)[:, None] * u.norm(dim=1)[None])
    assert (cl['distances'].double() - (1 - cos).fill_diagonal_(0)).abs().max() < 1e-6


def test_seeds_and_noise():
    model = tiny_vit('timm')
    a, b = (ViTCX(model, seed=0).explain(IMG, [1, 2]) for _ in range(2))
    c = ViTCX(model, seed=1).explain(IMG, [1, 2])
    assert torch.equal(a.maps, b.maps)
    assert torch.equal(a.extras['masks'], c.extras['masks']) and not torch.allclose(a.maps, c.maps)   # only the noise differs
    q0, q1 = (ViTCX(model, seed=s, noise_std=0).explain(IMG, [1, 2]) for s in (0, 1))
    assert torch.equal(q0.maps, q1.maps) and q0.n_forward == 1 + q0.extras['n_clusters']             # no noise: K + 1 forwards
    small = ViTCX(model, seed=0, batch_size=3).explain(IMG, [1, 2])                                    # batching plays no part
    assert (small.maps - a.maps).abs().max() <= 1e-6


def test_noise_is_per_cluster():
    n = cluster_noise(torch.tensor([0, 1, 2]), (3, 4, 4), seed=7, std=0.1)
    assert torch.equal(cluster_noise(torch.tensor([2]), (3, 4, 4), seed=7, std=0.1)[0], n[2])
    assert not torch.equal(n[0], n[1]) and abs(float(n.std()) - 0.1) < 0.03


def test_max_clusters():
    model = tiny_vit('hf')
    full, capped = (ViTCX(model, max_clusters=m).explain(IMG) for m in (None, 4))
    assert full.extras['n_clusters'] > 4 and capped.extras['n_clusters'] == 4 and capped.n_forward == 9


def test_bad_input():
    v = tiny_vit('timm')
    for t in (0, -0.1, 2.01, float('nan'), True, '0.1'):
        with pytest.raises(ValueError, match='`distance_threshold`'): ViTCX(v, distance_threshold=t)
    with pytest.raises(ValueError, match='`noise_std`'): ViTCX(v, noise_std=-1)
    with pytest.raises(ValueError, match='`max_clusters`'): ViTCX(v, max_clusters=0)
    with pytest.raises(ValueError, match=r"`layer` 'patch_embed' outputs \(1, 64, 48\), not a token sequence"):
        ViTCX(v, layer='patch_embed').explain(IMG)
    with pytest.raises(ValueError, match=r"`layer` 'head' outputs shape \(1, 10\)"): ViTCX(v, layer='head').explain(IMG)
    cnn = tiny_cnn()
    with torch.no_grad(): cnn.model[2].weight.zero_(); cnn.model[2].bias.fill_(-1)
    with pytest.raises(ValueError, match='all 8 feature maps are constant'): ViTCX(cnn).explain(IMG)
