"""MoXI (nbs/16_moxi.ipynb) against brute force written here with explicit loops: the greedy orders (insertion and deletion,
pixel and token mode), the early-stopped prefix, the exact Shapley value of a 4-player game, the interactions; bad input."""
import itertools, math

import pytest
import torch
import torch.nn.functional as F

from xaikit.core import LogOdds
from xaikit.explainers.moxi import MoXI, ClusterLogOdds, ClassLogProb, shapley_samples, shapley_coalitions
from xaikit.models import tiny_cnn, tiny_vit

G = 4                  # a 4 x 4 grid: N = 16 players


def _img(size=16, seed=1): return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def _log_odds(z, c):
    "log-odds of class c from logits (1, C), written out."
    others = torch.cat([z[0, :c], z[0, c + 1:]])
    return float(z[0, c] - torch.logsumexp(others, 0))


def _pixel_value(m, x01, keep, c):
    "v(S) by hand: patches of `keep` (a list of cell indices) kept, the others replaced by 0 in normalised space."
    H = x01.shape[-1]; p = H // G
    mask = torch.zeros(H, H, dtype=torch.float64)
    for i in keep: mask[(i // G) * p:(i // G + 1) * p, (i % G) * p:(i % G + 1) * p] = 1
    x = m.normalize(x01[None]) * mask
    with torch.no_grad(): return _log_odds(m.model(x), c)


def _token_value(m, x01, keep, c):
    "v(S) by hand on a timm ViT: embed, keep the CLS token and the patch tokens of `keep`, run the blocks and the head."
    vit = m.model
    with torch.no_grad():
        t = vit.norm_pre(vit._pos_embed(vit.patch_embed(m.normalize(x01[None]))))
        t = torch.cat([t[:, :1]] + [t[:, 1 + i:2 + i] for i in sorted(keep)], 1)
        return _log_odds(vit.forward_head(vit.norm(vit.blocks(t))), c)


def _brute_greedy(value, N, deletion):
    "The seed's greedy search, one coalition and one forward at a time."
    S, vals = [], []
    for _ in range(N):
        best, best_v = None, None
        for i in range(N):
            if i in S: continue
            keep = [j for j in range(N) if j not in S + [i]] if deletion else S + [i]
            v = value(keep)
            if best is None or (v < best_v if deletion else v > best_v): best, best_v = i, v
        S.append(best); vals.append(best_v)
    return S, vals


def _case(kind):
    if kind == 'pixels':
        m = tiny_cnn(input_size=16); m.model.double(); return m, _pixel_value
    m = tiny_vit('timm', image_size=16, patch_size=4); m.model.double(); return m, _token_value


@pytest.mark.parametrize('kind', ['pixels', 'tokens'])
@pytest.mark.parametrize('curve', ['insertion', 'deletion'])
def test_greedy_equals_brute_force(kind, curve):
    m, vf = _case(kind)
    x01 = _img()
    c = 3
    e = MoXI(m, grid=G, curve=curve, early_stop=False, k=0).explain(x01, targets=c)
    assert e.extras['mode'] == kind and e.extras['grid'] == (G, G)
    order, vals = _brute_greedy(lambda keep: vf(m, x01, keep, c), G * G, curve == 'deletion')
    assert e.extras['order'][0].tolist() == order
    assert torch.allclose(e.extras['values'][0].double(), torch.tensor(vals, dtype=torch.float64), atol=1e-4)
    N = G * G
    assert e.n_forward == N * (N + 1) // 2 + 1          # every remaining candidate at every step, plus the unperturbed image


@pytest.mark.parametrize('kind', ['pixels', 'tokens'])
def test_early_stop_prefix_and_completion(kind):
    m, vf = _case(kind)
    x01 = _img(seed=2)
    full = MoXI(m, grid=G, early_stop=False, k=0).explain(x01)
    fast = MoXI(m, grid=G, patience=2, k=0).explain(x01)
    c = fast.targets[0].c
    s = int(fast.extras['stop_step'][0])
    assert s < G * G and fast.n_forward < full.n_forward / 2
    assert torch.equal(fast.extras['order'][0, :s], full.extras['order'][0, :s])      # the prefix is the full greedy's
    assert torch.isnan(fast.extras['values'][0, s:]).all()
    # the rest: the remaining patches sorted by v(S + i) of the last evaluated step (S = the first s - 1 patches)
    prefix = fast.extras['order'][0, :s - 1].tolist()
    rest = [i for i in range(G * G) if i not in fast.extras['order'][0, :s].tolist()]
    v = {i: vf(m, x01, prefix + [i], c) for i in rest}
    assert fast.extras['order'][0, s:].tolist() == sorted(rest, key=lambda i: -v[i])
    assert sorted(fast.extras['order'][0].tolist()) == list(range(G * G))           # a permutation of all patches


def _exact_shapley(value, n):
    "Shapley values by the subset formula."
    phi = [0.0] * n
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for r in range(n):
            w = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
            for S in itertools.combinations(others, r): phi[i] += w * (value(list(S) + [i]) - value(list(S)))
    return phi


@pytest.mark.parametrize('kind', ['pixels', 'tokens'])
def test_shapley_all_permutations_is_exact(kind):
    m, vf = _case(kind)
    m = tiny_cnn(input_size=16) if kind == 'pixels' else tiny_vit('timm', image_size=16, patch_size=8)
    m.model.double()
    x01 = _img(seed=3)
    g = 2                                                  # 2 x 2 = 4 players
    e = MoXI(m, grid=g, algorithm='shapley', n_permutations='all').explain(x01, targets=5)
    p = x01.shape[-1] // g
    def value(keep):
        if kind == 'tokens':
            vit = m.model
            with torch.no_grad():
                t = vit.norm_pre(vit._pos_embed(vit.patch_embed(m.normalize(x01[None]))))
                t = torch.cat([t[:, :1]] + [t[:, 1 + i:2 + i] for i in sorted(keep)], 1)
                return _log_odds(vit.forward_head(vit.norm(vit.blocks(t))), 5)
        mask = torch.zeros(16, 16, dtype=torch.float64)
        for i in keep: mask[(i // g) * p:(i // g + 1) * p, (i % g) * p:(i % g + 1) * p] = 1
        with torch.no_grad(): return _log_odds(m.model(m.normalize(x01[None]) * mask), 5)
    phi = torch.tensor(_exact_shapley(value, 4), dtype=torch.float64)
    assert torch.allclose(e.extras['patch_values'][0].double(), phi, atol=1e-4), (e.extras['patch_values'], phi)
    assert abs(phi.sum() - (value([0, 1, 2, 3]) - value([]))) < 1e-6                  # efficiency, as a check of the check
    assert e.n_forward <= 2 ** 4 + 1                                                  # every coalition scored once


def test_shapley_samples_are_uniform_subsets():
    "Monte-Carlo samples: the size is uniform on 0..N-1 and, given the size, S_i avoids i and has that size."
    sizes, perms = shapley_samples(6, 2000, seed=0)
    w, wo = shapley_coalitions(sizes, perms)
    assert (wo.sum(-1) == sizes[:, None]).all() and not wo.diagonal(dim1=1, dim2=2).any()
    assert (w.sum(-1) == sizes[:, None] + 1).all()
    counts = torch.bincount(sizes, minlength=6).float() / 2000
    assert (counts - 1 / 6).abs().max() < 0.04
    with pytest.raises(ValueError, match='n <= 6'): shapley_samples(7, 'all')


def test_self_shapley_and_interactions_by_hand():
    m, vf = _case('pixels')
    x01 = _img(seed=4)
    c = 2
    e = MoXI(m, grid=G, algorithm='self-shapley', curve='both').explain(x01, targets=c)
    single = torch.tensor(dtype=torch.float64, data=[vf(m, x01, [i], c) for i in range(G * G)])
    drop = torch.tensor(dtype=torch.float64, data=[vf(m, x01, [j for j in range(G * G) if j != i], c) for i in range(G * G)])
    assert torch.allclose(e.extras['patch_values'][0].double(), single, atol=1e-5)
    assert e.extras['order'][0].tolist() == single.argsort(descending=True, stable=True).tolist()
    assert e.extras['deletion']['order'][0].tolist() == drop.argsort(stable=True).tolist()
    assert e.n_forward == 2 * G * G + 1
    g = MoXI(m, grid=G, k=4, early_stop=False).explain(x01, targets=c)
    P = g.extras['interaction_patches'][0].tolist()
    assert P == g.extras['order'][0, :4].tolist()
    v0 = vf(m, x01, [], c)
    for a, i in enumerate(P):
        for b, j in enumerate(P):
            want = vf(m, x01, [i], c) - v0 if a == b else vf(m, x01, [i, j], c) - vf(m, x01, [i], c) - vf(m, x01, [j], c) + v0
            assert abs(float(g.extras['interactions'][0, a, b]) - want) < 1e-4, (a, b)
    # the first greedy step scores every singleton: MoXI's self-values are self-Shapley's
    assert torch.allclose(g.extras['self_values'][0].double(), single, atol=1e-5)


def test_targets_values_and_heat():
    m = tiny_cnn(input_size=16)
    x01 = _img(seed=5)
    e = MoXI(m, grid=G, k=2).explain(x01, targets=[None, [2, 5], 7])
    assert isinstance(e.targets[0], LogOdds) and isinstance(e.targets[1], ClusterLogOdds)
    with torch.no_grad(): z = m(m.normalize(x01[None])).float()
    p = z.softmax(-1)[0]
    assert abs(float(e.targets[1](z)) - math.log(float(p[[2, 5]].sum()) / (1 - float(p[[2, 5]].sum())))) < 1e-5
    one = MoXI(m, grid=G, k=2).explain(x01, targets=[2, 5][:1] and [[2, 5]])
    assert torch.equal(one.extras['order'][0], e.extras['order'][1])                # targets are independent
    lp = MoXI(m, grid=G, value='logprob', k=0).explain(x01, targets=4)
    assert isinstance(lp.targets[0], ClassLogProb)
    # the heat: the `count` first patches weighted count - rank, upsampled; the count is where the target first is top-1
    cnt = int(e.extras['count'][0])
    assert e.maps.shape == (3, 16, 16) and float(e.maps[0].max()) <= 1 + 1e-6
    assert 1 <= cnt <= G * G and e.extras['stop_step'][0] >= cnt
    heat = F.adaptive_avg_pool2d(e.maps[0][None], G)[0].flatten()
    assert heat.argmax() == e.extras['order'][0, 0]


@pytest.mark.parametrize('params, msg', [
    (dict(grid=5), '`grid` (5, 5) does not divide'), (dict(grid=3), 'does not divide'),
    (dict(k=17), '`k` must be an int from 0 to the number of patches N = 16'),
    (dict(algorithm='full-shapley'), '`algorithm` must be one of'), (dict(value='prob'), '`value` must be one of'),
    (dict(curve='up'), '`curve` must be one of'), (dict(patience=0), '`patience`'),
    (dict(n_permutations=-1), '`n_permutations`'), (dict(n_permutations='all'), 'up to 6 players')])
def test_bad_input(params, msg):
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)')): MoXI(tiny_cnn(input_size=16), **{'grid': G, **params})


def test_vit_grid_mismatch_runs_as_pixels():
    v = tiny_vit('timm', image_size=16, patch_size=4)
    assert MoXI(v, k=0).explain(_img()).extras['mode'] == 'tokens'
    assert MoXI(v, grid=2, k=0).explain(_img()).extras['mode'] == 'pixels'
    with pytest.raises(ValueError, match='does not match the ViT patch grid'): MoXI(v, grid=2, mode='tokens', k=0).explain(_img())
