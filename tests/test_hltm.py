"""Label trees (xaikit.hltm): CWOX's JSON read and written exactly, cuts into clusters, rendering, and the HLTA learner
(label sets, mutual information, EM, UD-test islands, levels), checked on planted groups, on the synthetic CNN's label sets
and against scikit-learn's adjusted Rand index. Bad input must give errors that name the file or the argument.
Small data only: the real-data learning run lives in a `#| slow` cell of nbs/20_hltm.ipynb."""
import json, warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from xaikit.core import assets_dir
from xaikit.hltm import (LabelTree, TreeNode, adjusted_rand_index, bic, cooccurrence_clusters, fit_lcm, fit_ltm2,
                         label_matrix, label_sets, label_sets_from_probs, lcm_posterior, learn, pairwise_mi,
                         read_label_sets, _patterns)

MUSIC = [486, 889, 402, 420, 546]      # cello, violin, acoustic guitar, banjo, electric guitar


def _cwox(name):
    d = assets_dir(required=False)
    if d is None or not (d/'cwox'/name).is_file(): pytest.skip(f'asset cwox/{name} not available')
    return d/'cwox'/name


@pytest.fixture(scope='module')
def r50(): return LabelTree.from_json(_cwox('ResNet50.json'))


# --- reading, writing, cutting -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name,depth,roots,leaves', [('ResNet50.json', 4, 6, 287), ('GoogleNet.json', 5, 8, 410)])
def test_round_trip_published(tmp_path, name, depth, roots, leaves):
    p = _cwox(name)
    t = LabelTree.from_json(p)
    assert t.to_dicts() == json.loads(p.read_text())
    t.to_json(tmp_path/'t.json')
    assert json.loads((tmp_path/'t.json').read_text()) == json.loads(p.read_text())
    assert (t.depth, len(t.roots), len(t.leaves())) == (depth, roots, leaves)
    assert t.classes == list(range(1000))


def test_clusters_verified_example(r50):
    assert r50.clusters(MUSIC, cut_level=0) == [[486, 889], [402, 420, 546]]
    for cut in (1, 2, 3, 4, 7): assert r50.clusters(MUSIC, cut_level=cut) == [MUSIC]
    assert r50.clusters([402, 486, 889]) == [[402], [486, 889]]          # first-appearance order
    assert [n.name for n in r50.path(486)] == ['Z41', 'Z32', 'Z29', 'Z136']
    with pytest.raises(ValueError, match='1000'): r50.clusters([486, 1000])
    with pytest.raises(ValueError, match='cut_level'): r50.clusters([486], cut_level=-1)
    with pytest.raises(ValueError, match='repeats'): r50.clusters([486, 486])


def test_partition_render_plot(r50):
    p = r50.partition()
    assert p[486] == p[889] != p[402] == p[420] == p[546]
    assert len(set(p)) == 287 and len(set(r50.partition(cut_level=3))) == 6
    txt = r50.render(MUSIC)
    assert txt.splitlines()[0].startswith('Z41 (level 4') and 'cello*' in txt and 'harp' in txt and 'harp*' not in txt
    assert sum(line.strip().startswith('Z1') for line in txt.splitlines()) == 2      # only the two leaves above MUSIC
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig = r50.plot(MUSIC)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert 'cello' in texts and any(t.startswith('Z136') for t in texts)
    plt.close(fig)
    with pytest.raises(ValueError, match='not in'): r50.render([5000])


def _node(i, cls, kids=(), level=1):
    return {'id': f'Z{i}', 'text': ' '.join(f'c{c:03d}-n{c} 0.01' for c in cls),
            'data': {'name': f'Z{i}', 'level': level, 'percentage': 0.5}, 'children': list(kids)}


@pytest.mark.parametrize('bad,msg', [
    ([{'id': 'Z1', 'text': 'c001-a 0.1', 'children': []}], 'lacks the key'),
    ([{**_node(1, [1]), 'data': {'name': 'Z1', 'level': 1}}], 'percentage'),
    ([_node(21, [1, 2], [_node(11, [1]), _node(12, [1, 2])], 2)], 'class 1 appears in two leaves'),
    ([{**_node(1, [1]), 'text': 'c001-a 0.1 banana 0.2'}], 'not a class token'),
    ([{**_node(1, [1]), 'text': 'c001-a 0.1 c002-b'}], 'odd number'),
    ({'id': 'Z1'}, 'list of root nodes'),
])
def test_malformed_json(tmp_path, bad, msg):
    p = tmp_path/'broken.json'; p.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=msg) as e: LabelTree.from_json(p)
    assert 'broken.json' in str(e.value)


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.json'): LabelTree.from_json(tmp_path/'nope.json')
    (tmp_path/'x.json').write_text('[{')
    with pytest.raises(ValueError, match='x.json'): LabelTree.from_json(tmp_path/'x.json')


# --- label sets ----------------------------------------------------------------------------------------------------------

def test_label_sets_from_probs():
    p = np.array([[0.96, 0.02, 0.01, 0.01], [0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25], [0.1, 0.6, 0.3, 0.0]])
    assert label_sets_from_probs(p) == [[0], [0, 1, 2], [0, 1, 2, 3], [1, 2, 0]]
    assert label_sets_from_probs(p, max_k=2) == [[0], [0, 1], [0, 1], [1, 2]]
    with pytest.raises(ValueError, match='mass'): label_sets_from_probs(p, mass=0)
    with pytest.raises(ValueError, match='max_k'): label_sets_from_probs(p, max_k=0)
    with pytest.raises(ValueError, match='probs'): label_sets_from_probs(-p)


def test_label_sets_model_batches():
    import torch
    from xaikit.models import tiny_cnn
    m = tiny_cnn(input_size=16, num_classes=7)
    x = torch.rand(11, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(): p = m(m.normalize(x)).softmax(-1)
    assert label_sets(m, x, batch_size=4) == label_sets_from_probs(p)
    assert label_sets(m, (x * 255).round().to(torch.uint8), max_k=3) == \
        label_sets_from_probs(m(m.normalize((x * 255).round() / 255)).softmax(-1).detach(), max_k=3)
    with pytest.raises(ValueError, match='images'): label_sets(m, x[0])
    with pytest.raises(ValueError, match='batch_size'): label_sets(m, x, batch_size=0)


def test_label_matrix_and_bad_sets(tmp_path):
    X = label_matrix([[0, 2], [1], [2, 0, 2], [3, 1, 0]], 4)
    assert sparse.issparse(X) and X.shape == (3, 4) and X.nnz == 7
    with pytest.raises(ValueError, match='`label_sets` is empty'): label_matrix([], 4)
    with pytest.raises(ValueError, match='no set with 2'): learn([[3], [1]], 4)
    with pytest.raises(ValueError, match='set 1 holds class 12'): learn([[0, 1], [2, 12]], 10)
    with pytest.raises(ValueError, match='class -2'): learn([[0, -2]], 10)
    with pytest.raises(ValueError, match='n_classes'): learn([[0, 1]], 0)
    with pytest.raises(ValueError, match='label_sets'): learn([[0, 'a']], 4)
    p = tmp_path/'sets.json'
    p.write_text('{"a": [1, 2], "b": [3]}'); assert read_label_sets(p) == [[1, 2], [3]]
    p.write_text('[[1, 2], 3]')
    with pytest.raises(ValueError, match='sets.json: entry 1'): read_label_sets(p)
    with pytest.raises(FileNotFoundError, match='none.json'): read_label_sets(tmp_path/'none.json')


def test_real_label_sets_file():
    sets = read_label_sets(_cwox('labels_resnet50_val50k.json'))
    assert len(sets) == 50000 and 27000 < sum(len(s) > 1 for s in sets) < 29000
    X = label_matrix(sets, 1000)
    assert X.shape == (28097, 1000) and (np.asarray(X.sum(1)).ravel() >= 2).all()


# --- MI and EM -----------------------------------------------------------------------------------------------------------

def test_pairwise_mi_matches_direct_count():
    rng = np.random.default_rng(0)
    D = (rng.random((400, 5)) < [0.5, 0.2, 0.05, 0.5, 0.0]).astype(float); D[:, 3] = np.maximum(D[:, 0], D[:, 3])
    def direct(a, b):
        out = 0.0
        for u in (0, 1):
            for v in (0, 1):
                j = np.mean((a == u) & (b == v))
                if j > 0: out += j * np.log(j / (np.mean(a == u) * np.mean(b == v)))
        return out
    M = pairwise_mi(sparse.csr_matrix(D))
    np.testing.assert_allclose(M, [[direct(D[:, i], D[:, j]) for j in range(5)] for i in range(5)], atol=1e-12)
    np.testing.assert_allclose(pairwise_mi(D), M)


def test_lcm_em_recovers_parameters_and_ud_test():
    rng = np.random.default_rng(1)
    z = rng.random(20000) < 0.3
    th = np.array([[0.05, 0.1, 0.02, 0.2], [0.9, 0.7, 0.8, 0.6]])
    D = sparse.csc_matrix(rng.random((20000, 4)) < th[z.astype(int)])
    P, w, idx = _patterns(D, [0, 1, 2, 3])
    assert w.sum() == 20000 and (P[idx] == D.toarray()).all()
    m = fit_lcm(P, w, np.random.default_rng(0))
    np.testing.assert_allclose(m['pi'][1], 0.3, atol=0.02); np.testing.assert_allclose(m['theta'], th, atol=0.03)
    assert ((lcm_posterior(m, P)[idx] >= 0.5) == z).mean() > 0.95
    two = rng.random(20000) < 0.3
    D2 = sparse.csc_matrix(np.column_stack([rng.random((20000, 2)) < np.where(z, 0.8, 0.05)[:, None],
                                            rng.random((20000, 2)) < np.where(two, 0.8, 0.05)[:, None]]))
    for data, two_latents in ((D, False), (D2, True)):
        P, w, _ = _patterns(data, [0, 1, 2, 3]); g = np.random.default_rng(0)
        assert (bic(fit_ltm2(P, w, [0, 1], [2, 3], g), 20000) - bic(fit_lcm(P, w, g), 20000) > 3) == two_latents


def test_ud_test_on_sparse_real_labels():
    "cock, hen | vulture, bald eagle on ResNet50's label sets: two groups (random EM starts alone missed the sparse optimum)"
    X = label_matrix(read_label_sets(_cwox('labels_resnet50_val50k.json')), 1000).tocsc()
    N, g = X.shape[0], np.random.default_rng(0)
    P, w, _ = _patterns(X, [7, 8, 23, 22])                   # cock, hen, vulture, bald eagle
    m1 = fit_lcm(P, w, g)
    m2 = fit_ltm2(P, w, [0, 1], [2, 3], g, start=m1)
    assert m2['loglik'] >= m1['loglik'] - 1e-6               # the nested start: never below the one-latent model
    assert bic(m2, N) - bic(m1, N) > 3                       # the UD-test fails: a second latent is needed
    P, w, _ = _patterns(X, [486, 889, 402])                  # cello, violin, acoustic guitar
    theta = fit_lcm(P, w, g)['theta']
    assert theta[1].min() > theta[0].max()                   # state 1 = labels on


# --- learning ------------------------------------------------------------------------------------------------------------

GROUPS = [[0, 1, 2], [3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13]]

def planted_sets(n=3000, n_classes=30, noise=0.05, seed=0):
    "Sets of two or more members of one planted group, with one unrelated label (14 .. n_classes-1) in `noise` of them"
    rng, sets = np.random.default_rng(seed), []
    for g in rng.integers(len(GROUPS), size=n):
        s = set(rng.choice(GROUPS[g], rng.integers(2, len(GROUPS[g]) + 1), replace=False).tolist())
        if rng.random() < noise: s.add(int(rng.integers(14, n_classes)))
        sets.append(sorted(s))
    return sets


@pytest.mark.parametrize('seed', [0, 1])
def test_learn_recovers_planted_groups(tmp_path, seed):
    sets = planted_sets(seed=seed)
    t = learn(sets, 40, seed=seed)                     # classes 30..39 never appear
    leaves = [sorted(l.classes) for l in t.leaves()]
    for g in GROUPS: assert g in leaves, leaves
    assert sorted(c for l in leaves for c in l) == list(range(40))     # every class in exactly one leaf
    for c in range(14, 40): assert [c] in leaves                       # unrelated and unseen labels stay alone
    assert len({r.level for r in t.roots}) == 1 and t.depth >= 1
    assert t.clusters([0, 3, 1, 4]) == [[0, 1], [3, 4]]
    t.to_json(tmp_path/'t.json')
    assert LabelTree.from_json(tmp_path/'t.json').to_dicts() == t.to_dicts()
    for n in (n for r in t.roots for n in r.walk()):
        assert 0 <= n.percentage <= 1 and all(0 <= w <= 1 for _, _, w in n.labels)
        assert len(n.labels) == len({c for m in n.walk() if m.is_leaf for c in m.classes})


def test_learn_is_seeded_and_names_tokens():
    sets = planted_sets(n=1500)
    a = learn(sets, 30, names=[f'label {c}' for c in range(30)], seed=3)
    assert a.to_dicts() == learn(sets, 30, names=[f'label {c}' for c in range(30)], seed=3).to_dicts()
    assert a.path(0)[-1].text().split()[0] in ('c000-label_0', 'c001-label_1', 'c002-label_2')
    with pytest.raises(ValueError, match='names'): learn(sets, 30, names=['a', 'b'])
    with pytest.raises(ValueError, match='max_island'): learn(sets, 30, max_island=1)
    with pytest.raises(ValueError, match='max_seconds'): learn(sets, 30, max_seconds=0)


def test_learn_time_guard_returns_a_tree():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        t = learn(planted_sets(n=1000), 30, max_seconds=1e-9)
    assert any('max_seconds' in str(c.message) for c in caught)
    assert t.classes == list(range(30)) and t.depth == 1


def test_synthetic_cnn_planted_confusion_groups():
    "Label sets of the synthetic CNN on 2,000 benchmark images: the planted confusion groups are finest clusters"
    from xaikit.synthetic import CLASS_NAMES, CONFUSION_GROUPS, make_dataset
    from xaikit.synthetic_models import find_checkpoint, synthetic_cnn
    if find_checkpoint('cnn') is None: pytest.skip('no synthetic CNN checkpoint')
    sets = label_sets(synthetic_cnn(), make_dataset(2000, 64, seed=5).images, batch_size=250)
    assert len(sets) == 2000 and sum(len(s) > 1 for s in sets) > 150
    t = learn(sets, len(CLASS_NAMES), names=CLASS_NAMES)
    leaves = [sorted(l.classes) for l in t.leaves()]
    for g in CONFUSION_GROUPS.values(): assert sorted(g) in leaves, leaves
    assert t.classes == list(range(len(CLASS_NAMES)))


# --- comparing partitions ------------------------------------------------------------------------------------------------

def test_adjusted_rand_index_matches_sklearn():
    sk = pytest.importorskip('sklearn.metrics')
    rng = np.random.default_rng(0)
    for n, ka, kb in ((50, 3, 4), (200, 20, 7), (10, 10, 1), (1000, 287, 300)):
        a, b = rng.integers(ka, size=n), rng.integers(kb, size=n)
        b2 = np.where(rng.random(n) < 0.7, a, b)
        for x, y in ((a, b), (a, b2), (a, a)):
            assert abs(adjusted_rand_index(x, y) - sk.adjusted_rand_score(x, y)) < 1e-10
    with pytest.raises(ValueError, match='same items'): adjusted_rand_index([0, 1], [0])


def test_cooccurrence_baseline():
    sets = planted_sets(noise=0)
    lab = cooccurrence_clusters(sets, 14, 4)
    assert adjusted_rand_index(lab, [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3]) == 1.0
    with pytest.raises(ValueError, match='n_clusters'): cooccurrence_clusters(sets, 14, 0)
