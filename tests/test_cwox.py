"""CWOX-2s on a tiny model: maps equal the formulas computed here from the base explainers' own maps; perturbation bases
score every cluster and class from one set of samples (forward counter); targets, plot and bad input."""
import json

import matplotlib
matplotlib.use('Agg')
import pytest
import torch

import xaikit
from xaikit.core import ClassLogit, ClassProb, ClusterLogit, ClusterProb, normalize_map
from xaikit.explainers.cwox import CWOX, CWOXTarget, class_map_faithfulness, plot_cwox, _top_label_sets
from xaikit.explainers.excitation import ExcitationBackprop
from xaikit.explainers.gradcam import GradCAM
from xaikit.explainers.lime import LIME
from xaikit.explainers.rise import RISE
from xaikit.hltm import LabelTree
from xaikit.models import tiny_cnn

CL = [[1, 2, 3], [4, 5], [6]]


@pytest.fixture(scope='module')
def case():
    return tiny_cnn(), torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))


def formulas(B, b, clusters, delta, scale=normalize_map):
    "Cluster maps then class maps of multi-class clusters, written out from the definitions (loops over clusters and classes)."
    B, b, K = [scale(m) for m in B], {c: scale(m) for c, m in b.items()}, len(clusters)
    H = []
    for i in range(K):
        h = (K - 1) * B[i] - sum(B[j] for j in range(K) if j != i) if K > 1 else B[i]
        H.append(h.clamp_min(0))
    out = list(H)
    for i, C in enumerate(clusters):
        if len(C) < 2: continue
        tau = torch.quantile(H[i].flatten(), delta / 100)
        for c in C:
            D = (len(C) - 1) * b[c] - sum(b[o] for o in C if o != c)
            out.append(((H[i] > tau) * D).clamp_min(0))
    return torch.stack(out)


def test_top_label_sets():
    z = torch.log(torch.tensor([[.5, .3, .1, .06, .04], [.97, .01, .01, .005, .005]]))
    assert _top_label_sets(z) == [[0, 1, 2, 3], [0]]            # .5 + .3 + .1 = .9, + .06 = .96 > .95
    assert _top_label_sets(z, max_k=2) == [[0, 1], [0]] and _top_label_sets(z, mass=.5) == [[0, 1], [0]]


@pytest.mark.parametrize('scale', ['minmax', 'none'])
def test_gradcam_exact(case, scale):
    net, img = case
    e = CWOX(net, clusters=CL, scale=scale).explain(img)
    gc = GradCAM(net, relu=False)
    B = gc.explain(img, [ClusterLogit(C) for C in CL]).maps
    b = dict(zip([1, 2, 3, 4, 5], gc.explain(img, [1, 2, 3, 4, 5]).maps))
    ref = formulas(B, b, CL, 50, normalize_map if scale == 'minmax' else (lambda m: m))
    assert e.maps.shape == (3 + 5, 32, 32) and e.maps.abs().sum() > 0
    assert torch.allclose(e.maps, ref, atol=1e-5 * ref.abs().max())
    assert e.labels[:2] == ['cluster 1: class 1, class 2, class 3', 'cluster 2: class 4, class 5']
    assert e.labels[4] == 'class 2 vs class 1, class 3' and e.extras['clusters'] == CL
    assert e.n_forward == 2                                       # the top-label forward + Grad-CAM's forward (one layer here)
    with torch.no_grad(): p = net(net.normalize(img[None])).softmax(-1)[0]
    assert abs(e.extras['cluster_probs'][0] - float(p[[1, 2, 3]].sum())) < 1e-5


def test_gradcam_map_of_the_contrast_score(case):
    "Unscaled, the cluster-level map before clipping is Grad-CAM of the contrast score (Grad-CAM is linear in the gradient)."
    net, img = case
    cw = CWOX(net, clusters=[[1, 2], [4]], scale='none')
    e = cw.explain(img)
    t = e.targets[0]
    assert isinstance(t, CWOXTarget) and t.negs == ((4,),)
    direct = GradCAM(net, relu=True).explain(img, [t]).maps[0]   # ReLU of the contrast map = the clipped CWOX map
    assert torch.allclose(e.maps[0], direct, atol=1e-5 * direct.abs().max())


def test_mwp_exact(case):
    net, img = case
    e = CWOX(net, base='mwp', clusters=CL).explain(img)
    ex = ExcitationBackprop(net)
    B = ex.explain(img, [ClusterLogit(C) for C in CL]).maps
    b = dict(zip([1, 2, 3, 4, 5], ex.explain(img, [1, 2, 3, 4, 5]).maps))
    ref = formulas(B, b, CL, 60)
    assert torch.allclose(e.maps, ref, atol=1e-5)


def test_rise_exact_and_one_pass(case):
    net, img = case
    kw = dict(n_masks=48, s=4, p=0.5, seed=1, batch_size=16)
    e = CWOX(net, base='rise', clusters=CL, cluster_params=kw).explain(img)
    r = RISE(net, **kw)
    B = r.explain(img, [ClusterProb(C) for C in CL]).maps
    b = dict(zip([1, 2, 3, 4, 5], r.explain(img, [ClassProb(c) for c in [1, 2, 3, 4, 5]]).maps))
    assert torch.allclose(e.maps, formulas(B, b, CL, 70), atol=1e-5)
    assert e.n_forward == 1 + 48                                  # one set of samples for 3 clusters and 5 classes
    bm = e.extras['base_maps']                                     # linear estimator, shared samples: cluster = sum of its classes
    assert torch.allclose(bm['clusters'][0], bm['class_maps'][:3].sum(0), atol=1e-5)
    two = CWOX(net, base='rise', clusters=CL, cluster_params=kw, class_params=dict(n_masks=24)).explain(img)
    assert two.n_forward == 1 + 48 + 24                            # different class parameters: the original's two passes
    singles = CWOX(net, base='rise', clusters=[[1], [4]], cluster_params=kw).explain(img)
    assert singles.n_forward == 1 + 48 and len(singles) == 2       # no class pass when no cluster has two classes


def test_lime_exact_and_one_pass(case):
    net, img = case
    seg = torch.arange(16).view(4, 4).repeat_interleave(8, 0).repeat_interleave(8, 1)
    kw = dict(n_samples=40, segments=seg, seed=3)
    e = CWOX(net, base='lime', clusters=CL, cluster_params=kw, delta=85).explain(img)
    lm = LIME(net, **kw)
    B = lm.explain(img, [ClusterProb(C) for C in CL]).maps
    b = dict(zip([1, 2, 3, 4, 5], lm.explain(img, [ClassProb(c) for c in [1, 2, 3, 4, 5]]).maps))
    assert torch.allclose(e.maps, formulas(B, b, CL, 85), atol=1e-5)
    assert e.n_forward <= 1 + 40


def test_fraction_threshold_and_original_scale(case):
    net, img = case
    kw = dict(n_masks=32, s=4, seed=0)
    e = CWOX(net, base='rise', clusters=[[1, 2]], cluster_params=kw, threshold='fraction', delta=30).explain(img)
    B, b = e.extras['base_maps']['clusters'], e.extras['base_maps']['class_maps']
    H = normalize_map(B[0]).clamp_min(0)                           # K = 1: the cluster map is the base map
    gate = H > H.min() + 0.3 * (H.max() - H.min())
    bn = normalize_map(b)
    assert torch.allclose(e.maps[1], (gate * (bn[0] - bn[1])).clamp_min(0), atol=1e-6)
    assert CWOX(net, base='lime', scale='original')._scale_how() == 'lime'
    assert CWOX(net, base='gradcam', scale='original')._scale_how() == 'none'


def test_targets_pick_maps_of_the_whole_output(case):
    net, img = case
    cw = CWOX(net, clusters=CL)
    whole = cw.explain(img)
    sel = cw.explain(img, targets=[2, [4, 5], 6, 7])
    assert torch.allclose(sel.maps[0], whole.maps[4], atol=1e-6)      # class 2 vs 1, 3
    assert torch.allclose(sel.maps[1], whole.maps[1], atol=1e-6)      # cluster 2
    assert torch.allclose(sel.maps[2], whole.maps[2], atol=1e-6)      # class 6 is the singleton cluster 3
    assert sel.labels[3] == 'class 7 vs class 1, class 2, class 3 | class 4, class 5 | class 6'
    via_api = xaikit.explain(net, img, method='cwox', targets=[[4, 5]], clusters=CL)
    assert torch.allclose(via_api.maps[0], whole.maps[1], atol=1e-6)


def test_top_label_set_and_tree(case, tmp_path):
    net, img = case
    top = _top_label_sets(net(net.normalize(img[None])), 0.5, 5)[0]
    e = CWOX(net, mass=0.5).explain(img)                           # no tree: each top label its own cluster
    assert e.extras['clusters'] == [[c] for c in top] and len(e) == len(top)
    leaf = lambda i, cs: dict(id=f'Z{i}', text=' '.join(f'c{c:03d}-n{c} 0.5' for c in cs),
                              data=dict(name=f'Z{i}', level=1, percentage=.5), children=[])
    root = dict(id='Z9', text='c000-n0 0.5', data=dict(name='Z9', level=2, percentage=.5),
                children=[leaf(1, range(0, 5)), leaf(2, range(5, 10))])
    (tmp_path / 't.json').write_text(json.dumps([root]))
    e = CWOX(net, tree=tmp_path / 't.json', mass=0.99, max_k=10).explain(img)
    assert sorted(map(sorted, e.extras['clusters'])) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    e1 = CWOX(net, tree=tmp_path / 't.json', cut_level=1, mass=0.99, max_k=10).explain(img)
    assert len(e1.extras['clusters']) == 1 and len(e1) == 1 + 10
    small = dict(root, children=[leaf(1, range(0, 3))])
    (tmp_path / 's.json').write_text(json.dumps([small]))
    with pytest.raises(ValueError, match='`tree`.*not in the tree'):
        CWOX(net, tree=tmp_path / 's.json', mass=0.99, max_k=10).explain(img)


def test_plot(case):
    net, img = case
    fig = plot_cwox(CWOX(net, clusters=CL).explain(img))
    assert fig.axes[0].get_title().startswith('cluster 1: class 1, class 2, class 3\np = ')
    assert len(fig.axes) == 3 * 4                                  # 3 rows (clusters), 4 columns (cluster map + 3 classes)
    fig1 = plot_cwox(CWOX(net, clusters=[[1], [2], [3]]).explain(img))   # all singletons: one row
    assert len(fig1.axes) == 3
    with pytest.raises(ValueError, match='`expl`'): plot_cwox(GradCAM(net).explain(img))


@pytest.mark.parametrize('params, msg', [
    (dict(clusters=[[1, 2], [2, 3]]), '`clusters` overlap: class 2'), (dict(clusters=[]), '`clusters` is empty'),
    (dict(clusters=[[]]), 'empty'), (dict(delta=101), '`delta`'), (dict(delta=-0.5), '`delta`'), (dict(base='nope'), '`base`'),
    (dict(threshold='min'), '`threshold`'), (dict(cluster_score='mean'), '`cluster_score`'), (dict(max_k=0), '`max_k`'),
    (dict(tree=[1]), '`tree`'), (dict(tree='/no/such/tree.json'), 'not found')])
def test_bad_input(case, params, msg):
    net, img = case
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=msg): CWOX(net, **params).explain(img)


def test_bad_targets(case):
    net, img = case
    cw = CWOX(net, clusters=CL)
    with pytest.raises(ValueError, match='empty'): cw.explain(img, targets=[])
    with pytest.raises(TypeError, match='`targets`'):
        from xaikit.core import Contrast
        cw.explain(img, targets=Contrast(ClassLogit(1), ClassLogit(2)))
    with pytest.raises(ValueError, match='out of range'): CWOX(net, clusters=[[1, 12]]).explain(img)


def test_class_map_faithfulness(case):
    "One row per class-level map, each scored exactly as `contrastive_faithfulness` scores the two maps on their own."
    from xaikit.metrics.faithfulness import contrastive_faithfulness
    m, x = case
    e = CWOX(m, clusters=CL).explain(x)
    rows = class_map_faithfulness(e, m, step=64)
    assert [r['cls'] for r in rows] == [1, 2, 3, 4, 5]
    bm = e.extras['base_maps']
    for r in rows:
        j = next(j for j, t in enumerate(e.targets) if t.level == 'class' and t.pos[0] == r['cls'])
        assert r['target'] is e.targets[j] and sorted(r['negatives']) == sorted(c for C in CL if r['cls'] in C for c in C if c != r['cls'])
        for w, mp in (('cwox', e.maps[j]), ('base', bm['class_maps'][bm['classes'].index(r['cls'])])):
            if r[f'{w}_cauc'] is None: continue
            d = contrastive_faithfulness(m, x, mp, r['cls'], r['negatives'], step=64)
            assert (r[f'{w}_cauc'], r[f'{w}_cdrop'], r[f'{w}_n_delta']) == (d['cauc'], d['cdrop'], d['n_delta'])
