"""xaikit.metrics against brute-force references on small hand-made cases, forward counts, and bad input."""
import math

import numpy as np
import pytest
import torch

from xaikit.core import Explanation, make_generator
from xaikit.data import BoxRecord
from xaikit.models import wrap, tiny_cnn, tiny_vit
from xaikit.perturb import score, grid_coalitions
from xaikit.reference import loop_curves, loop_contrastive
from xaikit.metrics import (Table, SkipSample, as_map, boxes_mask, gt_region, tolerance_region, center_map, center_point,
                            random_map, pointing_game, stochastic_pointing_game, energy_in_region, curve_auc,
                            insertion_deletion, contrastive_faithfulness, Sample, make_sample, to_sample, samples,
                            PointingGame, StochasticPointingGame, Energy, InsertionDeletion, Insertion, Deletion,
                            ContrastiveFaithfulness, evaluate, summarize)


def _tiny(size=24, classes=5, seed=0):
    return tiny_cnn(input_size=size, num_classes=classes, seed=seed)


class _Counter:
    "Counts images through a module (forward hook on the wrapped network)."
    def __init__(self, model): self.n = 0; self.h = model.model.register_forward_hook(self)
    def __call__(self, mod, inp, out): self.n += inp[0].shape[0]
    def close(self): self.h.remove()


def _peak(size, y, x):
    m = torch.zeros(size, size); m[y, x] = 1.
    return m


def _min_dist(point, gt):
    "Brute force: Euclidean distance from `point` to the nearest True pixel of `gt`."
    ys, xs = np.nonzero(np.asarray(gt))
    return float(np.sqrt(((ys - point[0]) ** 2 + (xs - point[1]) ** 2).min()))


# ---------------------------------------------------------------- pointing game family

def test_pointing_game_tolerance_boundary():
    g = boxes_mask([10, 10, 20, 20], (64, 64))          # pixels 10..19
    for dx, hit in [(0, True), (13, True), (14, True), (15, False), (16, False)]:
        assert pointing_game(_peak(64, 15, 19 + dx), g)['pg_hit'] is hit, dx
    assert pointing_game(_peak(64, 15, 19 + 16), g, tolerance=17)['pg_hit'] is True
    assert pointing_game(_peak(64, 15, 15), g, tolerance=0)['pg_hit'] is True   # inside the box is always a hit
    assert pointing_game(_peak(64, 15, 21), g, tolerance=0)['pg_hit'] is False
    # diagonal: (0, 0) to the corner pixel (10, 10) is sqrt(200) = 14.14 px
    assert pointing_game(_peak(64, 0, 0), g)['pg_hit'] is True
    assert pointing_game(_peak(64, 0, 0), g, tolerance=14.1)['pg_hit'] is False


def test_pointing_game_matches_brute_force_on_random_maps():
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        gt = torch.rand(40, 40, generator=gen) > 0.985
        if not gt.any(): continue
        m = torch.rand(40, 40, generator=gen)
        tol = float(torch.randint(1, 12, (1,), generator=gen))
        r = pointing_game(m, gt, tol)
        y, x = divmod(int(m.argmax()), 40)
        assert r['point'] == (y, x)
        assert r['pg_hit'] == (_min_dist((y, x), gt) < tol)
        cy, cx = center_point(40)
        assert r['pg_center'] == (_min_dist((cy, cx), gt) < tol)
        dist = np.array([[_min_dist((i, j), gt) for j in range(40)] for i in range(40)])
        assert r['pg_random'] == pytest.approx((dist < tol).mean())


def test_pointing_game_first_maximum_and_constant_map():
    g = boxes_mask([0, 0, 4, 4], (32, 32))
    m = torch.zeros(32, 32); m[2, 2] = 1; m[30, 30] = 1        # tie: the first in row-major order wins
    assert pointing_game(m, g)['point'] == (2, 2)
    with pytest.raises(SkipSample, match='constant'): pointing_game(torch.ones(32, 32), g)


def test_spg_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    gt = boxes_mask([[5, 5, 12, 9], [20, 22, 30, 31]], (32, 32))
    m = torch.randn(32, 32, generator=gen)
    r = stochastic_pointing_game(m, gt, n_points=500, tolerance=3, seed=7)
    p = m.double().clamp_min(0); p = p / p.sum()
    idx = torch.multinomial(p.flatten(), 500, replacement=True, generator=make_generator(7))
    hits = [_min_dist(divmod(int(i), 32), gt) < 3 for i in idx]
    assert r['spg'] == pytest.approx(np.mean(hits))
    assert stochastic_pointing_game(m, gt, n_points=500, tolerance=3, seed=7) == r        # same seed, same draw
    assert stochastic_pointing_game(m, gt, n_points=500, tolerance=3, seed=8)['spg'] != r['spg']
    near = tolerance_region(gt, 3)
    assert r['spg_random'] == pytest.approx(near.double().mean().item())
    # a map concentrated on one pixel: every draw lands there
    assert stochastic_pointing_game(_peak(32, 7, 7), gt)['spg'] == 1.0


def test_energy_known_maps():
    g = boxes_mask([0, 0, 8, 4], (16, 16))                   # 32 of 256 pixels
    m = torch.zeros(16, 16); m[:4, :8] = 3.; m[10:, 10:] = 1.; m[8, :] = -5.   # negatives are clipped
    r = energy_in_region(m, g)
    assert r['energy'] == pytest.approx(96 / (96 + 36))
    assert r['energy_random'] == pytest.approx(32 / 256)
    c = center_map(16).double()
    assert r['energy_center'] == pytest.approx((c[:4, :8].sum() / c.sum()).item())
    mm = energy_in_region(m, g, normalize='minmax')['energy']
    q = (m - m.min()) / (m.max() - m.min())
    assert mm == pytest.approx((q[:4, :8].sum() / q.sum()).item())
    with pytest.raises(SkipSample, match='no positive mass'): energy_in_region(-torch.ones(16, 16), g)


def test_boxes_and_masks():
    g = boxes_mask([[1.2, 0, 2.1, 1], [3, 3, 5, 5]], (8, 8))
    assert g.sum() == 2 + 4 and g[0, 1] and g[0, 2] and not g[0, 3]
    assert boxes_mask([-3, -3, 2, 2], (8, 8)).sum() == 4
    mk = torch.zeros(8, 8, dtype=torch.bool); mk[6, 6] = True
    assert gt_region((8, 8), boxes=[3, 3, 5, 5], mask=mk).sum() == 5


# ---------------------------------------------------------------- insertion / deletion (reference: xaikit.reference)

@pytest.mark.parametrize('patch,kind,subs', [(None, 'prob', ('blur', 'zero')), (4, 'logodds', ('mean', 'black')),
                                             (None, 'top1', ('zero', 'zero')), (6, 'prob', (0.3, 'blur'))])
def test_curves_equal_a_plain_loop(patch, kind, subs):
    m = _tiny()
    gen = torch.Generator().manual_seed(3)
    x, sal = torch.rand(3, 24, 24, generator=gen), torch.rand(24, 24, generator=gen)
    n = 8 if patch is None else min(8, (24 // patch) ** 2)
    c = insertion_deletion(m, x, sal, target=3, n_steps=n, patch=patch, kind=kind, insertion_substrate=subs[0],
                           deletion_substrate=subs[1], batch_size=5)
    ri, rd = loop_curves(m, x, sal, 3, n, subs[0], subs[1], patch, kind)
    assert (c.insertion - ri).abs().max() < 1e-4 and (c.deletion - rd).abs().max() < 1e-4
    # forwards: 2n+1, or 2n when both curves share the substrate
    assert c.n_forward == 2 * n + (0 if subs[0] == subs[1] else 1)
    assert c.ins_auc == pytest.approx(float(torch.trapezoid(ri.double(), c.fractions.double())), abs=1e-5)


def test_curves_step_mode_and_fractions():
    m = _tiny()
    x, sal = torch.rand(3, 24, 24), torch.rand(24, 24)
    c = insertion_deletion(m, x, sal, target=0, step=100)          # 576 px in steps of 100: 6 steps, the last of 76
    assert torch.allclose(c.fractions, torch.tensor([0, 100, 200, 300, 400, 500, 576]) / 576)
    assert len(c.insertion) == 7 and c.n_forward == 13
    c = insertion_deletion(m, x, sal, target=0, step=3, patch=5)   # a 4 x 4 grid of 6 px cells, 3 cells a step
    assert torch.allclose(c.fractions, torch.tensor([0, 3, 6, 9, 12, 15, 16]) / 16)
    c1 = insertion_deletion(m, x, sal, target=0, n_steps=4, which='insertion')
    c2 = insertion_deletion(m, x, sal, target=0, n_steps=4, which='deletion')
    c3 = insertion_deletion(m, x, sal, target=0, n_steps=4)
    assert (c1.n_forward, c2.n_forward, c3.n_forward) == (5, 5, 9)
    assert torch.allclose(c1.insertion, c3.insertion) and torch.allclose(c2.deletion, c3.deletion)
    assert c1.deletion is None and c1.del_auc is None


def test_curves_default_target_is_top1_and_explanation_input():
    from xaikit.core import Explanation, ClassLogit
    m = _tiny()
    x, sal = torch.rand(3, 24, 24), torch.rand(24, 24)
    top = int(m(m.preprocess(x)).argmax())
    c = insertion_deletion(m, x, sal, n_steps=4)
    assert c.target.classes == (top,) and c.kind == 'prob'
    e = Explanation(sal[None], [ClassLogit(2)], 'test', image=x)
    c2 = insertion_deletion(m, None, e, n_steps=4)
    assert c2.target.classes == (2,) and type(c2.target).__name__ == 'ClassProb'   # re-scored with the metric's kind


def test_hundred_steps_forward_budget():
    "One 224 px image, 100 steps of both curves: at most 2 x 100 + 1 forwards, counted by the engine and by a hook."
    m = _tiny(size=224)
    x, sal = torch.rand(3, 224, 224), torch.rand(224, 224)
    cnt = _Counter(m)
    try: c = insertion_deletion(m, x, sal, target=1, n_steps=100)
    finally: cnt.close()
    assert c.n_forward == cnt.n == 201 <= 2 * 101
    cnt = _Counter(m)
    try: c = insertion_deletion(m, x, sal, target=1, n_steps=100, insertion_substrate='zero', deletion_substrate='zero')
    finally: cnt.close()
    assert c.n_forward == cnt.n == 200


def test_token_dropping_curves_match_engine_per_step():
    vit = tiny_vit('timm', image_size=32, patch_size=8, dim=24, depth=1, heads=2, num_classes=4, seed=0)
    x, sal = torch.rand(3, 32, 32), torch.rand(32, 32)
    c = insertion_deletion(vit, x, sal, target=1, n_steps=4, insertion_substrate='drop', deletion_substrate='drop')
    assert c.n_forward == 8 and c.params['patch'] == (8, 8)
    vals = torch.nn.functional.avg_pool2d(sal[None, None], 8).flatten()
    order = torch.sort(vals, descending=True, stable=True).indices
    for r in range(5):
        keep = torch.zeros(16, dtype=torch.bool); keep[order[:r * 4]] = True
        si = score(vit, x, grid_coalitions(keep[None], (4, 4), (32, 32)), [1], mode='tokens')[0, 0]
        sd = score(vit, x, grid_coalitions(~keep[None], (4, 4), (32, 32)), [1], mode='tokens')[0, 0]
        assert abs(float(si) - float(c.insertion[r])) < 1e-4 and abs(float(sd) - float(c.deletion[r])) < 1e-4


def test_curve_auc_known_curves():
    assert curve_auc([0., 1.]) == pytest.approx(0.5)
    assert curve_auc([1., 1., 1.]) == pytest.approx(1.0)
    assert curve_auc([1., 0., 0., 0., 0.]) == pytest.approx(0.125)
    assert curve_auc([0., 1., 1.], [0., 0.1, 1.]) == pytest.approx(0.95)
    assert torch.allclose(curve_auc(torch.tensor([[0., 1.], [1., 1.]])), torch.tensor([0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match='`x` must rise from 0 to 1'): curve_auc([0., 1.], [0., 0.5])
    with pytest.raises(ValueError, match='`y` contains NaN'): curve_auc([0., float('nan')])


# ---------------------------------------------------------------- CAUC / CDROP (reference: xaikit.reference)

@pytest.mark.parametrize('delta,step,smooth,pos,neg', [(0.5, 16, 3, 1, [3]), (0.2, 5, 3, [0, 2], [3, 4]), (40, 7, 2, 4, [0]),
                                                        (0.9, 64, 3, 2, [1]), (1.0, 16, 3, 2, [1]), (0.3, 9, 5, 0, [])])
def test_cauc_cdrop_equal_a_plain_loop(delta, step, smooth, pos, neg):
    m = _tiny()
    gen = torch.Generator().manual_seed(5)
    x, sal = torch.rand(3, 24, 24, generator=gen), torch.randn(24, 24, generator=gen)
    r = contrastive_faithfulness(m, x, sal, pos, neg, delta=delta, step=step, smooth=smooth, batch_size=4)
    ref = loop_contrastive(m, x, sal, pos, neg, delta, step, 0.05, smooth)
    L = len(ref['curve'])
    assert L == max(math.ceil(ref['n_delta'] / step), 1)
    assert (r['n_delta'], r['n_forward'], len(r['curve'])) == (ref['n_delta'], L, L)
    assert r['cauc'] == pytest.approx(ref['cauc'], abs=1e-6) and r['cdrop'] == pytest.approx(ref['cdrop'], abs=1e-6)


def test_cwox_negatives_by_count():
    m = _tiny()
    x, sal = torch.rand(3, 24, 24), torch.rand(24, 24)
    p = m(m.preprocess(x)).softmax(-1)[0]
    r = contrastive_faithfulness(m, x, sal, 0, negatives=2, step=50)
    q = p.clone(); q[0] = -1
    assert r['negatives'] == q.topk(2).indices.tolist()
    assert contrastive_faithfulness(m, x, sal, 0, negatives=r['negatives'], step=50)['cauc'] == pytest.approx(r['cauc'])


# ---------------------------------------------------------------- data sets

def _record(tmp_path, boxes, labels, difficult=None, size=(40, 60)):
    img = (np.random.default_rng(0).random((*size, 3)) * 255).astype(np.uint8)
    return BoxRecord(tmp_path / 'x.JPEG', int(labels[0]), 'c', None, np.asarray(boxes, np.float32), size,
                     np.asarray(labels, np.int64), None if difficult is None else np.asarray(difficult, bool), None, img)


def test_samples_difficult_and_missing_class(tmp_path):
    m = _tiny(size=32)
    rec = _record(tmp_path, [[5, 5, 20, 20], [30, 10, 50, 30]], [1, 2], difficult=[False, True])
    s = to_sample(rec, m)
    assert s.label == 1 and s.gt is not None and s.skip is None
    s2 = to_sample(rec, m, label=2)                 # its only box is difficult: kept, with a counted skip
    assert s2.gt is None and 'difficult' in s2.skip
    with pytest.raises(ValueError, match='`label` 3 has no annotation'): to_sample(rec, m, label=3)
    res = evaluate([s, s2], 'center', [PointingGame(), Energy()])
    assert res.meta['skipped'] == {'pointing_game': 1, 'energy': 1}
    assert res[1]['pg_hit'] is None and 'difficult' in res[1]['skip'] and res[0]['pg_hit'] is not None


def test_make_sample_maps_boxes_through_resize_and_crop():
    m = wrap(_tiny(size=32).model, input_size=32, resize=40)    # resize shorter side to 40, center-crop 32
    img = torch.rand(3, 80, 120)                                # -> 40 x 60, crop rows 4..36, cols 14..46
    s = make_sample(img, 1, m, boxes=[[40, 20, 60, 40]])         # -> (20, 10, 30, 20) -> crop (6, 6, 16, 16)
    assert torch.equal(s.gt, boxes_mask([6, 6, 16, 16], (32, 32)))
    s = make_sample(img, 1, m, boxes=[[0, 0, 10, 10]])           # wholly cut away by the crop
    assert s.gt is None and 'outside the input crop' in s.skip
    with pytest.raises(ValueError, match='lies outside'): make_sample(img, 1, m, boxes=[[200, 0, 220, 10]])
    with pytest.raises(ValueError, match='`boxes` is empty'): make_sample(img, 1, m, boxes=np.zeros((0, 4)))
    with pytest.raises(ValueError, match='`mask` is empty'): make_sample(img, 1, m, mask=np.zeros((80, 120), bool))


def test_synthetic_samples():
    from xaikit.synthetic import make_dataset
    ds = make_dataset(13, 64, seed=0)
    m = wrap(_tiny(size=64, classes=13).model, input_size=64)
    S = samples(ds, m)
    assert len(S) == 13
    for s, a in zip(S, ds.annotations):
        if len(a['masks']): assert torch.equal(s.gt, torch.from_numpy(a['masks'].any(0)))
        else: assert s.gt is None and s.skip
    Sb = samples(ds, m, source='boxes')
    assert all((b.gt is None) == (s.gt is None) for b, s in zip(Sb, S))


def test_evaluate_table_and_summary():
    m = _tiny(size=32)
    gen = torch.Generator().manual_seed(0)
    S = [Sample(f'i{i}', torch.rand(3, 32, 32, generator=gen), i % 2, boxes_mask([8 * i, 4, 8 * i + 8, 20], (32, 32))) for i in range(4)]
    mets = [PointingGame(tolerance=2), StochasticPointingGame(n_points=50, tolerance=2), Energy(), InsertionDeletion(m, n_steps=4, patch=8)]
    maps = [boxes_mask([8 * i, 4, 8 * i + 8, 20], (32, 32)).float() + 0.01 * torch.rand(32, 32, generator=gen) for i in range(4)]
    t = evaluate(S, maps, mets, method='oracle') + evaluate(S, 'random', mets, seed=1)
    assert len(t) == 8 and t.meta['n_forward']['insertion_deletion'] == 4 * 9
    assert t.meta['parts'][1]['n_forward']['insertion_deletion'] == 4 * 9       # counted per call of `evaluate`
    assert t.where(method='oracle')['pg_hit'] == [True] * 4
    sm = summarize(t, mets)
    row = {r['method']: r for r in sm}
    assert row['oracle']['pg'] == 1 and row['oracle']['energy'] > 0.9 and row['oracle']['spg'] > 0.9
    # class-averaged vs image-averaged pointing game
    t2 = Table([dict(label=0, pg_hit=True), dict(label=0, pg_hit=True), dict(label=0, pg_hit=False), dict(label=1, pg_hit=False)])
    s2 = PointingGame().summarize(t2)
    assert s2['pg'] == pytest.approx((2 / 3 + 0) / 2) and s2['pg_image'] == pytest.approx(0.5)
    assert evaluate(S, 'random', mets, seed=1)['ins_auc'] == evaluate(S, 'random', mets, seed=1)['ins_auc']
    assert InsertionDeletion.higher_is_better['del_auc'] is False
    assert Insertion(m).higher_is_better is True and Deletion(m).higher_is_better is False
    assert ContrastiveFaithfulness(m).higher_is_better == {'cauc': False, 'cdrop': True}
    # the directions live on the classes; summarize reads them from the metrics it is given
    assert sm.meta['higher_is_better'] == dict(pg=True, pg_image=True, spg=True, energy=True, ins_auc=True, del_auc=False)
    md = t.select('id', 'method', 'pg_hit').to_markdown()
    assert md.splitlines()[0] == '| id | method | pg_hit |' and '| i0 | oracle | 1 |' in md


def test_evaluate_skips_and_errors():
    S = [Sample(f'i{i}', torch.rand(3, 16, 16), 0, boxes_mask([2, 2, 6, 6], (16, 16))) for i in range(3)]
    maps = [torch.rand(16, 16), -torch.ones(16, 16), torch.full((16, 16), float('nan'))]
    with pytest.raises(ValueError, match='`saliency` contains NaN'): evaluate(S, maps, [Energy()])
    t = evaluate(S, maps, [Energy(), PointingGame()], on_error='skip')
    assert t.meta['skipped'] == {'energy': 1, 'pointing_game': 1}          # zero mass; constant map
    assert t.meta['errors'] == [('i2', '`saliency` contains NaN values')]
    assert t[1]['energy'] is None and t[2]['error'] == '`saliency` contains NaN values'
    with pytest.raises(ValueError, match='`saliency` has 2 maps for 3 samples'): evaluate(S, maps[:2], [Energy()])
    with pytest.raises(ValueError, match="is \\(8, 8\\) but the sample image is \\(16, 16\\)"): evaluate(S, [torch.rand(8, 8)] * 3, [Energy()])


# ---------------------------------------------------------------- bad input

def test_bad_input_errors():
    m = _tiny()
    x = torch.rand(3, 24, 24)
    g = boxes_mask([2, 2, 6, 6], (24, 24))
    with pytest.raises(ValueError, match='`gt` is \\(24, 24\\) but `saliency` is \\(12, 12\\)'): pointing_game(torch.rand(12, 12), g)
    with pytest.raises(ValueError, match='`saliency` contains NaN'): stochastic_pointing_game(torch.full((24, 24), float('nan')), g)
    with pytest.raises(ValueError, match='`saliency` contains infinite'): energy_in_region(torch.full((24, 24), float('inf')), g)
    with pytest.raises(ValueError, match='`gt` is empty'): energy_in_region(torch.rand(24, 24), torch.zeros(24, 24, dtype=torch.bool))
    with pytest.raises(ValueError, match='`saliency` is \\(20, 20\\) but the model input is \\(24, 24\\)'): insertion_deletion(m, x, torch.rand(20, 20))
    with pytest.raises(ValueError, match='`saliency` must be one map'): insertion_deletion(m, x, torch.rand(2, 24, 24))
    with pytest.raises(ValueError, match='`n_steps` must be an int from 1 to 576'): insertion_deletion(m, x, torch.rand(24, 24), n_steps=1000)
    with pytest.raises(ValueError, match='give `n_steps` or `step`'): insertion_deletion(m, x, torch.rand(24, 24), n_steps=4, step=4)
    with pytest.raises(ValueError, match='`patch`'): insertion_deletion(m, x, torch.rand(24, 24), patch=30)
    with pytest.raises(ValueError, match='`which`'): insertion_deletion(m, x, torch.rand(24, 24), which='up')
    with pytest.raises(ValueError, match='`targets`: class 9 is out of range'): insertion_deletion(m, x, torch.rand(24, 24), target=9, n_steps=2)
    with pytest.raises(ValueError, match='`image` is required'): insertion_deletion(m, None, torch.rand(24, 24))
    with pytest.raises(ValueError, match='`negatives`: class 7 is out of range'): contrastive_faithfulness(m, x, torch.rand(24, 24), 1, [7])
    with pytest.raises(ValueError, match='`delta` must be a positive number'): contrastive_faithfulness(m, x, torch.rand(24, 24), 1, [2], delta=0)
    with pytest.raises(ValueError, match='`step` must be a positive int'): contrastive_faithfulness(m, x, torch.rand(24, 24), 1, [2], step=0)
    with pytest.raises(ValueError, match='`boxes`: box 0 .* is empty'): boxes_mask([5, 5, 5, 9], (24, 24))
    with pytest.raises(ValueError, match='lies outside the 24 x 24 image'): boxes_mask([30, 30, 40, 40], (24, 24))
    with pytest.raises(ValueError, match='`boxes` must have shape'): boxes_mask([[1, 2, 3]], (24, 24))
    with pytest.raises(ValueError, match='`mask` is \\(5, 5\\) but the map is \\(24, 24\\)'): gt_region((24, 24), mask=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match='`tolerance`'): tolerance_region(g, -1)
    with pytest.raises(ValueError, match='`n_points`'): stochastic_pointing_game(torch.rand(24, 24), g, n_points=0)
    with pytest.raises(ValueError, match='`normalize`'): energy_in_region(torch.rand(24, 24), g, normalize='softmax')
    with pytest.raises(TypeError, match='`saliency` must be a tensor'): as_map('map')
    with pytest.raises(ValueError, match="'center' or 'random'"): evaluate([], 'uniform', [Energy()])


def test_coco_samples_use_the_category_masks():
    from xaikit.core import assets_dir
    from xaikit.data import CocoDataset, map_mask
    a = assets_dir(required=False)
    if a is None or not (a / 'coco').is_dir(): pytest.skip('no COCO assets (set XAIKIT_ASSETS)')
    ds = CocoDataset()
    m = wrap(_tiny(size=64).model, input_size=64, resize=72)
    with pytest.raises(ValueError, match='`label_map` is required: COCO labels index its 80 categories, not the model.s 5 classes'):
        samples(ds, m, limit=2)
    lm = {i: i % 5 for i in range(80)}
    S = samples(ds, m, limit=2, label_map=lm)
    recs = [ds[0], ds[1]]
    assert len(S) == sum(len(set(r.labels.tolist())) for r in recs)
    s, r = S[0], recs[0]
    c = sorted(set(r.labels.tolist()))[0]
    ref = torch.as_tensor(np.asarray(map_mask(m, r.mask(c))))
    assert s.id == f'{r.image_id}:{c}' and s.label == c and s.target == c % 5 == s.model_target
    assert (s.gt is None and not ref.any()) or torch.equal(s.gt, ref.bool())
    with pytest.raises(ValueError, match='has no annotation in COCO image'): to_sample(r, m, label=999)


def test_label_map_coco_to_imagenet():
    "COCO categories asked as ImageNet classes or clusters: unmapped categories left out, names resolved, bad maps refused."
    from xaikit.core import assets_dir
    from xaikit.data import CocoDataset, COCO_TO_IMAGENET
    a = assets_dir(required=False)
    if a is None or not (a / 'coco').is_dir(): pytest.skip('no COCO assets (set XAIKIT_ASSETS)')
    ds = CocoDataset()
    m = wrap(tiny_cnn(num_classes=1000).model, input_size=64, resize=72)
    S = samples(ds, m, limit=6, label_map=COCO_TO_IMAGENET)
    present = [(r.image_id, c) for r in (ds[i] for i in range(6)) for c in sorted(set(r.labels.tolist()))]
    want = [(i, c) for i, c in present if ds.class_names[c] in COCO_TO_IMAGENET]
    assert 0 < len(want) < len(present)                                    # person (and others) have no ImageNet class
    assert [s.id for s in S] == [f'{i}:{c}' for i, c in want]
    for s in S: assert s.target == list(COCO_TO_IMAGENET[ds.class_names[s.label]])
    dog = ds.class_names.index('dog')
    assert all(s.target == [3] for s in samples(ds, m, limit=6, label_map={'dog': 3, 0: [1, 2]}) if s.label == dog)
    with pytest.raises(ValueError, match="`label_map`: the data has no class named 'dragon'"): samples(ds, m, limit=1, label_map={'dragon': 1})
    with pytest.raises(ValueError, match='`label_map`: class 1000 .* out of range'): samples(ds, m, limit=1, label_map={'dog': [5, 1000]})
    with pytest.raises(ValueError, match='`label_map`: the value for'): samples(ds, m, limit=1, label_map={'dog': []})
    with pytest.raises(TypeError, match='`label_map` must be a non-empty dict'): samples(ds, m, limit=1, label_map=[1, 2])


def test_evaluate_scores_the_mapped_target():
    "A sample's `target` (class or cluster) is what the explainer is asked for and what the curves score; `label` stays in the row."
    m = _tiny()
    x, g = torch.rand(3, 24, 24), boxes_mask([2, 2, 12, 12], (24, 24))
    base = [Sample('a', x, 7, g), Sample('b', x, 8, g)]
    S = samples(base, m, label_map={7: [1, 2], 9: 0})
    assert [(s.id, s.label, s.target) for s in S] == [('a', 7, [1, 2])]
    seen = []
    class Spy:
        name = 'spy'
        def explain(self, image, targets):
            seen.append(targets)
            return Explanation(torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(0)), targets, 'spy', image=image)
    t = evaluate(S, Spy(), [InsertionDeletion(m, n_steps=4)])
    assert seen == [[[1, 2]]] and t[0]['label'] == 7
    ref = insertion_deletion(m, x, torch.rand(24, 24, generator=torch.Generator().manual_seed(0)), target=[1, 2], n_steps=4)
    assert ref.target.classes == (1, 2) and t[0]['ins_auc'] == pytest.approx(ref.ins_auc) and t[0]['del_auc'] == pytest.approx(ref.del_auc)


# ---------------------------------------------------------------- the package

def test_package_reexports_every_public_name_and_directions_live_on_the_classes():
    "`from xaikit.metrics import X` works for every public name of the five modules; no direction table is left."
    import importlib, xaikit.metrics as M
    for mod in ('table', 'base', 'localization', 'faithfulness', 'evaluation'):
        sub = importlib.import_module(f'xaikit.metrics.{mod}')
        missing = [n for n in sub.__all__ if getattr(M, n, None) is not getattr(sub, n)]
        assert not missing, (mod, missing)
        assert not hasattr(sub, 'HIGHER_IS_BETTER')
    assert not hasattr(M, 'HIGHER_IS_BETTER') and callable(M.samples)
    m = _tiny()
    dirs = {}
    for mt in (PointingGame(), StochasticPointingGame(), Energy(), InsertionDeletion(m), ContrastiveFaithfulness(m)):
        dirs.update(mt.directions())
    assert dirs == dict(pg=True, pg_image=True, spg=True, energy=True, ins_auc=True, del_auc=False, cauc=False, cdrop=True)
    assert InsertionDeletion(m, which='deletion').directions() == {'del_auc': False}
