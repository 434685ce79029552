"""Property-based tests (hypothesis) of the public functions that take user input: `to_image`, targets, masks and
coalitions, box mapping and the localisation metrics. Random shapes, dtypes, ranges and boxes must give the documented
result (checked against a plain reference computed here) or a `ValueError` / `TypeError` whose message names the argument,
never another exception type.

Runs in well under a minute on two CPU cores. With `CI` set, the 'ci' profile is loaded: derandomized, so every CI run draws
the same examples. Each property that found an issue-12 bug (or a new one) was marked xfail until its fix landed; none is marked now."""
import os, re, tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from PIL import Image

from xaikit.core import ClassLogit, Target, as_targets, eval_targets, to_image
from xaikit.data import map_boxes, map_mask, unmap_boxes
from xaikit.metrics import boxes_mask, energy_in_region, pointing_game, stochastic_pointing_game
from xaikit.metrics.base import SkipSample
from xaikit.models import ModelAdapter, tiny_cnn
from xaikit.perturb import Coalitions, SoftMasks, grid_coalitions, grid_labels, score
from xaikit.reference import loop_scores

settings.register_profile('dev', deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('ci', parent=settings.get_profile('dev'), derandomize=True)
settings.load_profile('ci' if os.environ.get('CI') else 'dev')

FEW, SOME, MANY = settings(max_examples=15), settings(max_examples=40), settings(max_examples=80)


def outcome(fn, *names):
    "Run `fn()`: ('ok', result), or ('error', exc) for a ValueError / TypeError whose message names one of `names`."
    try: return 'ok', fn()
    except (ValueError, TypeError) as e:
        assert any(re.search(f'`{n}[`=\\[ ]', str(e)) for n in names), f"{type(e).__name__} does not name {names}: {e}"
        return 'error', e

def seeded(draw): return np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))

# ---------------------------------------------------------------------------------------------------------------- to_image
NP_DTYPES = ['uint8', 'uint16', 'int32', 'int64', 'float16', 'float32', 'float64', 'bool']
TORCH_DTYPES = {'uint8': torch.uint8, 'int32': torch.int32, 'int64': torch.int64, 'float16': torch.float16,
                'float32': torch.float32, 'float64': torch.float64, 'bool': torch.bool}

@st.composite
def raw_images(draw, min_side=1, layouts=('hw', 'hwc', 'chw', '1chw', 'bchw', 'thw', '1d', '5d')):
    "(image, value_range, info): an ndarray or tensor in a random layout, dtype, shape and value range."
    rng = seeded(draw)
    layout = draw(st.sampled_from(layouts))
    dtype = draw(st.sampled_from(NP_DTYPES if layout in ('hw', 'hwc', '1d') else list(TORCH_DTYPES)))
    h, w = draw(st.integers(min_side, 6)), draw(st.integers(min_side, 6))
    c = draw(st.sampled_from([1, 2, 3, 4, 5]))
    values = draw(st.sampled_from(['inside', 'inside', 'outside', 'nan', 'inf']))
    vr = draw(st.one_of(st.none(), st.tuples(st.floats(-300, 300), st.floats(0.5, 300)).map(lambda t: (t[0], t[0] + t[1]))))
    shape = {'hw': (h, w), 'hwc': (h, w, c), 'chw': (c, h, w), '1chw': (1, c, h, w), 'bchw': (2, c, h, w), 'thw': (h, w),
             '1d': (h,), '5d': (1, 1, c, h, w)}[layout]
    lo, hi = vr or (0., 1.)
    if dtype == 'uint8': a = rng.integers(0, 256, shape).astype(np.uint8)
    elif dtype == 'uint16': a = rng.integers(0, 65536, shape).astype(np.uint16)
    elif dtype.startswith('int'): a = rng.integers(-5, 300, shape).astype(dtype)
    elif dtype == 'bool': a = rng.random(shape) < 0.5
    else:
        u = rng.random(shape)
        if values == 'outside': u = u * 3 + 1.01            # every value is above the range
        a = (lo + (hi - lo) * np.clip(u, 0.001, None)).astype(dtype)
        if values in ('nan', 'inf') and a.size: a.flat[rng.integers(a.size)] = np.nan if values == 'nan' else np.inf
    x = a if layout in ('hw', 'hwc', '1d') else torch.from_numpy(np.ascontiguousarray(a))
    return x, vr, dict(layout=layout, dtype=dtype, values=values)

def reference_image(x, vr, info):
    "The documented conversion: ('ok', float64 (3, H, W) array), ('either', None) or ('error', None)."
    a = x.numpy() if isinstance(x, torch.Tensor) else x
    lay, dt = info['layout'], info['dtype']
    if lay in ('1d', '5d') or (lay == 'bchw'): return 'error', None
    if lay == 'hw': a = a[None]
    elif lay == 'hwc': a = a.transpose(2, 0, 1)
    elif lay == '1chw': a = a[0]
    elif lay == 'thw': a = a[None]
    if a.shape[0] not in (1, 3, 4): return 'error', None
    if a.shape[1] == 0 or a.shape[2] == 0: return 'error', None                          # issue 12 item 1
    rgb = np.repeat(a, 3, 0) if a.shape[0] == 1 else a[:3]
    if dt == 'uint8': return 'ok', rgb / 255.
    if dt == 'uint16': return 'either', rgb / 65535.        # refusing 16-bit data is fine; accepting it means scaling by 65535
    if dt.startswith('int') or dt == 'bool': return 'either', None
    f = a.astype(np.float64)                                # NaN, infinity and the range are checked on every channel, alpha too
    if not np.isfinite(f).all(): return 'error', None
    lo, hi = vr or (0., 1.)
    if f.min() < lo - 1e-6 or f.max() > hi + 1e-6: return 'error', None
    return 'ok', (rgb.astype(np.float64) - lo) / (hi - lo)

def check_image(got, ref=None, atol=1e-5):
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32, (type(got), getattr(got, 'dtype', None))
    assert got.ndim == 3 and got.shape[0] == 3, got.shape
    assert torch.isfinite(got).all() and got.min() >= 0 and got.max() <= 1, (got.min(), got.max())
    if ref is not None:
        assert got.shape == ref.shape, (got.shape, ref.shape)
        np.testing.assert_allclose(got.double().numpy(), ref, atol=atol, rtol=1e-5)

@MANY
@given(raw_images())
def test_to_image_random_inputs(case):
    "Any layout / dtype / shape / range: the documented float32 (3, H, W) image in [0, 1], or an error naming `image`."
    x, vr, info = case
    kind, ref = reference_image(x, vr, info)
    res, got = outcome(lambda: to_image(x, value_range=vr), 'image')
    if kind == 'error': assert res == 'error', f"{info}: accepted, expected an error"
    elif kind == 'ok': assert res == 'ok', f"{info}: refused: {got}"
    lo, hi = vr or (0., 1.)
    scale = max(1., abs(lo) / (hi - lo), abs(hi) / (hi - lo))       # float32 rounding of values far from 0 in a narrow range
    if res == 'ok': check_image(got, ref, atol=(1e-3 if info['dtype'] == 'float16' else 1e-5) * scale)

@FEW
@given(raw_images())
def test_to_image_does_not_modify_input(case):
    "The caller's array or tensor is never written to."
    x, vr, _ = case
    before = x.copy() if isinstance(x, np.ndarray) else x.clone()
    outcome(lambda: to_image(x, value_range=vr), 'image')
    b, a = np.asarray(before), np.asarray(x)
    assert np.array_equal(b, a, equal_nan=b.dtype.kind == 'f')

@SOME
@given(raw_images(min_side=0))
def test_to_image_empty_images(case):
    "Shapes with a zero side (`3x0x0` tensors, `0x5x3` arrays): a ValueError naming `image`, never a crash."
    x, vr, info = case
    assume(0 in tuple(x.shape)[-2:] or (info['layout'] == 'hwc' and 0 in x.shape[:2]))
    kind, ref = reference_image(x, vr, info)
    res, got = outcome(lambda: to_image(x, value_range=vr), 'image')
    if kind == 'error': assert res == 'error'
    if res == 'ok': check_image(got, ref)

@SOME
@given(raw_images(layouts=('hwc',)), st.sampled_from(['rows', 'cols', 'channels']))
def test_to_image_negative_strides(case, axis):
    "A flipped view (`img[::-1]`, `img[..., ::-1]`) converts like its contiguous copy."
    x, vr, info = case
    v = {'rows': x[::-1], 'cols': x[:, ::-1], 'channels': x[..., ::-1]}[axis]
    want, _ = outcome(lambda: to_image(v.copy(), value_range=vr), 'image')
    res, got = outcome(lambda: to_image(v, value_range=vr), 'image')
    assert res == want
    if res == 'ok': assert torch.equal(got, to_image(v.copy(), value_range=vr))

@SOME
@given(st.sampled_from([(0, 0), (2., 2.), (1, 0), (0, float('nan')), (float('-inf'), 1), (0, 1, 2), (5,), 'ab', 3]),
       st.sampled_from(['array', 'tensor']))
def test_to_image_bad_value_range(vr, kind):
    "A value_range that is not two finite numbers lo < hi: an error naming `value_range`, never NaN pixels."
    x = np.full((4, 5, 3), 0.5) if kind == 'array' else torch.full((3, 4, 5), 0.5)
    res, got = outcome(lambda: to_image(x, value_range=vr), 'value_range')
    assert res == 'error', f"value_range={vr!r} accepted: {got.flatten()[:3]}"

PIL_MODES = ['L', 'RGB', 'RGBA', 'P', 'LA', '1']

@st.composite
def pil_images(draw, modes):
    rng = seeded(draw)
    mode = draw(st.sampled_from(modes))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    if mode == 'I;16': im = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16))
    elif mode == 'I': im = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.int32))
    elif mode == 'F': im = Image.fromarray(rng.random((h, w)).astype(np.float32))
    else: im = Image.fromarray(rng.integers(0, 256, (h, w, 4)).astype(np.uint8), 'RGBA').convert(mode)
    return im, draw(st.booleans())

def _via(im, via_path, fn):
    if not via_path: return fn(im)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / ('x.tif' if im.mode in ('F', 'I') else 'x.png')
        im.save(p)
        return fn(p)

@pytest.mark.filterwarnings('ignore:Palette images with Transparency')
@SOME
@given(pil_images(PIL_MODES))
def test_to_image_pil_8bit(case):
    "8-bit PIL images (and their PNG files): the RGB conversion / 255."
    im, via_path = case
    got = _via(im, via_path, lambda x: to_image(x))
    check_image(got, np.asarray(im.convert('RGB')).transpose(2, 0, 1) / 255.)

@SOME
@given(pil_images(['I;16', 'F', 'I']))
def test_to_image_pil_high_bit_depth(case):
    "16-bit, 32-bit int and float PIL images (and files): scaled correctly (16-bit / 65535, float as is), or refused naming the mode."
    im, via_path = case
    a = np.asarray(im).astype(np.float64)
    try: got = _via(im, via_path, lambda x: to_image(x))
    except (ValueError, TypeError) as e:
        assert im.mode in str(e) and '`image`' in str(e), e
        return
    check_image(got)
    g = got[0].double().numpy()
    if im.mode == 'I;16': np.testing.assert_allclose(g, a / 65535, atol=1e-5)
    elif im.mode == 'F': np.testing.assert_allclose(g, a, atol=1e-5)
    else:   # 'I': no documented scale, but distinct values must stay distinct and ordered (no saturation)
        order = np.argsort(a.ravel(), kind='stable')
        assert (np.diff(g.ravel()[order]) > 0).sum() == (np.diff(a.ravel()[order]) > 0).sum()

# ----------------------------------------------------------------------------------------------------------------- targets
def int_like(x): return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))

atoms = st.one_of(st.integers(-3, 14), st.integers(0, 9).map(np.int64), st.integers(0, 9).map(np.int32), st.booleans(),
                  st.none(), st.floats(-1, 12), st.text(max_size=2))
tensor_targets = st.tuples(st.sampled_from([torch.int64, torch.int32, torch.float32, torch.bool]),
                           st.sampled_from([(1,), (3,), (2, 2), (0,)]), st.integers(0, 2 ** 16)).map(
    lambda t: torch.randint(0, 12, t[1], generator=torch.Generator().manual_seed(t[2])).to(t[0]))   # 0-d tensors: see below
element = st.one_of(atoms, st.lists(st.one_of(st.integers(-2, 12), st.floats(0, 9), st.lists(st.integers(0, 3), max_size=1)),
                                    max_size=4), st.integers(-2, 12).map(ClassLogit))   # 0-d tensors: see below
user_targets = st.one_of(atoms, tensor_targets, st.lists(element, max_size=4), st.lists(element, max_size=3).map(tuple),
                         st.integers(0, 9).map(ClassLogit), st.integers(0, 9).map(lambda i: np.array([i])))

def reference_targets(t, n, top):
    "The classes of each expected target (a tuple per target), or None when an error is documented."
    def one(c):
        if isinstance(c, torch.Tensor) and c.ndim == 0 and not c.is_floating_point() and c.dtype != torch.bool: c = c.item()
        return (int(c),) if int_like(c) and 0 <= c < n else None
    if t is None: return [(top,)]
    if isinstance(t, torch.Tensor) and t.ndim > 0: t = t.tolist()
    if isinstance(t, Target): return [t.classes] if all(0 <= c < n for c in t.classes) else None
    if not isinstance(t, (list, tuple)): return None if one(t) is None else [one(t)]
    if len(t) == 0: return None
    out = []
    for e in t:
        if e is None: out.append((top,))
        elif isinstance(e, Target): out.append(e.classes if all(0 <= c < n for c in e.classes) else None)
        elif isinstance(e, (list, tuple)):
            cs = [one(c) for c in e]
            out.append(None if not cs or None in cs or len(set(cs)) < len(cs) else tuple(c[0] for c in cs))
        else: out.append(one(e))
    return None if None in out else out

def brute_score(t:Target, z:torch.Tensor)->torch.Tensor:
    z = z.double(); cs = list(t.classes)
    if t.kind == 'logit': return z[:, cs[0]]
    if t.kind == 'prob': return z.softmax(-1)[:, cs[0]]
    if t.kind == 'logodds': return z[:, cs[0]] - torch.logsumexp(z[:, [c for c in range(z.shape[1]) if c != cs[0]]], -1)
    if t.kind == 'cluster_logit': return torch.logsumexp(z[:, cs], -1)
    if t.kind == 'cluster_prob': return z.softmax(-1)[:, cs].sum(-1)
    raise AssertionError(t.kind)

@MANY
@given(user_targets, st.integers(2, 12), st.sampled_from(['logit', 'prob', 'logodds']), st.integers(0, 2 ** 16),
       st.booleans())
def test_as_targets(targets, n, kind, seed, use_logits):
    "Ints, numpy ints, bools, None, lists, clusters, tensors, out-of-range values: the documented targets or a clear error."
    z = torch.randn(3, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    top = int(z[0].argmax())
    want = reference_targets(targets, n, top)
    if not use_logits and want is not None and any(e is None for e in (targets if isinstance(targets, (list, tuple)) else [targets])):
        want = None                                   # None means the top class, which needs logits
    res, got = outcome(lambda: as_targets(targets, logits=z[:1] if use_logits else None, kind=kind,
                                          n_classes=None if use_logits else n), 'targets', 'cluster')
    assert res == ('error' if want is None else 'ok'), f"{targets!r} (n={n}): {res} {got!r}, expected {want}"
    if res == 'error': return
    assert [t.classes for t in got] == [tuple(w) for w in want]
    S = eval_targets(got, z)
    assert S.shape == (3, len(got))
    for j, t in enumerate(got): torch.testing.assert_close(S[:, j].double(), brute_score(t, z), atol=1e-6, rtol=1e-6)

@FEW
@given(st.integers(0, 9), st.booleans(), st.booleans())
def test_as_targets_0d_tensors(c, as_array, in_list):
    "`torch.tensor(c)`, `[torch.tensor(c)]`, `[np.array(c)]` (e.g. `logits.argmax()`) mean class c, as `_class_index` documents."
    x = np.array(c) if as_array else torch.tensor(c)
    assume(in_list or not as_array)
    res, got = outcome(lambda: as_targets([x] if in_list else x, n_classes=10), 'targets')
    assert res == 'ok' and [t.classes for t in got] == [(c,)], got

# ------------------------------------------------------------------------------------------------------ masks, coalitions
@st.composite
def coalitions_case(draw):
    rng = seeded(draw)
    M, N = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    zdt = draw(st.sampled_from(['bool', 'int64', 'uint8', 'float32', 'bad']))
    Z = rng.random((M, N)) < 0.5
    Z = Z.astype(np.float32) * 2 if zdt == 'bad' else Z.astype(zdt)
    form = draw(st.sampled_from(['regions', 'labels', 'labels', 'float labels', 'bool labels', 'numpy labels']))
    if form == 'regions': players = torch.from_numpy(rng.random((N, H, W)) < 0.4)
    else:
        hi = N + draw(st.sampled_from([0, 0, 0, 1]))        # sometimes a label out of range
        players = rng.integers(0, hi, (H, W))
        players = {'float labels': torch.from_numpy(players.astype(np.float32)), 'bool labels': torch.from_numpy(players > 0),
                   'numpy labels': players}.get(form, torch.from_numpy(players))
    return torch.from_numpy(Z), players

@SOME
@given(coalitions_case())
def test_coalitions_masks(case):
    "`Coalitions.masks`, `unique` and `weighted_sum` equal a brute-force computation, or a clear error for bad `Z` / `players`."
    Z, players = case
    res, co = outcome(lambda: Coalitions(Z, players), 'Z', 'players')
    p = np.asarray(players)
    bad = bool(((Z != 0) & (Z != 1)).any()) or (p.ndim == 2 and (p.dtype.kind in 'fb' or int(p.max()) >= Z.shape[1]))
    assert res == ('error' if bad else 'ok'), co
    if bad: return
    z = Z.bool().numpy(); M, N = z.shape
    if p.ndim == 2: want = z[:, p]
    else: want = ~((~z)[:, :, None, None] & p[None]).any(1)          # a pixel is kept unless a removed region covers it
    got = co.masks(torch.arange(M))
    assert got.dtype == torch.float32 and got.shape == (M, *p.shape[-2:])
    np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))
    u = co.unique()
    if u is not None:
        first, inv = u
        assert torch.equal(co.Z[first[inv]], co.Z) and len(first) == len(torch.unique(co.Z, dim=0))
    else: assert len(torch.unique(co.Z, dim=0)) == M
    w = torch.randn(M, 2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(co.weighted_sum(w).numpy(), np.einsum('mt,mhw->thw', w.numpy(), want.astype(np.float32)),
                               atol=1e-5, rtol=1e-5)

@SOME
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2 ** 16), st.integers(-1, 1))
def test_grid_coalitions(gh, gw, H, W, seed, extra):
    "Grid cells are contiguous row/column bands covering the image; a wrong `Z` width or a too-fine `grid` is a clear error."
    Z = torch.rand(3, gh * gw + extra, generator=torch.Generator().manual_seed(seed)) < 0.5
    res, co = outcome(lambda: grid_coalitions(Z, (gh, gw), (H, W)), 'Z', 'grid')
    assert res == ('error' if extra or gh > H or gw > W else 'ok'), co
    if res == 'error': return
    lab = grid_labels((gh, gw), (H, W)).numpy()
    rows, cols = lab // gw, lab % gw
    assert (np.diff(rows, axis=0) >= 0).all() and (np.diff(cols, axis=1) >= 0).all()
    assert set(np.unique(lab)) == set(range(gh * gw))                   # every cell has at least one pixel
    assert (rows == rows[:, :1]).all() and (cols == cols[:1]).all()      # bands
    np.testing.assert_array_equal(co.masks(torch.arange(3)).numpy(), Z.numpy()[:, lab].astype(np.float32))

@st.composite
def soft_masks_case(draw, min_m=1):
    rng = seeded(draw)
    M, H, W = draw(st.integers(min_m, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    layout = draw(st.sampled_from(['mhw', 'm1hw', 'hw', 'mchw', 'flat']))
    dt = draw(st.sampled_from(['float32', 'float64', 'float16', 'bool', 'uint8', 'int64']))
    values = draw(st.sampled_from(['unit', 'unit', 'above', 'below', 'nan']))
    shape = {'mhw': (M, H, W), 'm1hw': (M, 1, H, W), 'hw': (H, W), 'mchw': (M, 3, H, W), 'flat': (M * H * W,)}[layout]
    a = rng.random(shape)
    if dt in ('bool', 'uint8', 'int64'): a = a < 0.5
    if a.size and values != 'unit' and dt not in ('bool',):
        a = a.astype(np.float64); a.flat[rng.integers(a.size)] = {'above': 2., 'below': -1., 'nan': np.nan}[values]
        if dt in ('uint8', 'int64') and values == 'nan': a = np.nan_to_num(a, nan=3.)
        if dt == 'uint8' and values == 'below': a = np.where(a < 0, 7, a)
    return torch.from_numpy(a.astype(dt)), dict(layout=layout, dtype=dt)

def reference_masks(m):
    "The documented (M, H, W) float masks, or None for an error."
    a = m.double().numpy()
    if a.ndim == 4 and a.shape[1] == 1: a = a[:, 0]
    if a.ndim == 2: a = a[None]
    if a.ndim != 3 or a.shape[0] == 0 or np.isnan(a).any() or a.min() < 0 or a.max() > 1: return None
    return a

@SOME
@given(soft_masks_case())
def test_soft_masks(case):
    "`SoftMasks` of any shape / dtype / range: the masks as float32 (M, H, W), or an error naming `masks`."
    m, info = case
    want = reference_masks(m)
    res, sm = outcome(lambda: SoftMasks(m), 'masks')
    assert res == ('error' if want is None else 'ok'), (info, sm)
    if res == 'error': return
    got = sm.masks(torch.arange(len(sm)))
    assert got.dtype == torch.float32 and len(sm) == want.shape[0] and sm.size == want.shape[1:]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-3)

@pytest.fixture(scope='module')
def net(): return tiny_cnn(input_size=(6, 7), width=4, num_classes=5)

@SOME
@given(soft_masks_case(), st.lists(st.integers(-1, 6), min_size=1, max_size=3), st.sampled_from(['prob', 'logit', 'logodds']),
       st.booleans())
def test_score_random_masks(net, case, targets, kind, right_size):
    "`score` on the tiny CNN with random masks and classes: the plain per-mask loop's scores, or an error naming `masks` / `targets`."
    m, info = case
    if right_size: m = torch.from_numpy(np.resize(m.numpy(), m.shape[:-2] + (6, 7))) if m.ndim >= 2 else m
    img = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(len(targets)))
    want = reference_masks(m)
    if want is not None and want.shape[1:] != (6, 7): want = None
    if not all(0 <= t < 5 for t in targets): want = None
    res, S = outcome(lambda: score(net, img, m, targets=targets, kind=kind), 'masks', 'targets')
    assert res == ('error' if want is None else 'ok'), (info, tuple(m.shape), S)
    if res == 'error': return
    ref = loop_scores(net, net.to_input(img), torch.from_numpy(want).float(), targets, kind=kind)
    assert S.shape == (want.shape[0], len(targets)) and S.dtype == torch.float32
    torch.testing.assert_close(S, ref, atol=1e-3 if info['dtype'] == 'float16' else 1e-5, rtol=1e-4)

@FEW
@given(st.integers(0, 4), st.integers(0, 2 ** 16))
def test_score_grid_coalitions(net, M, seed):
    "`score` with grid coalitions equals the per-mask loop over the same masks; no coalition is an error naming `masks`."
    Z = torch.rand(M, 6, generator=torch.Generator().manual_seed(seed)) < 0.5
    co = grid_coalitions(Z, (2, 3), (6, 7))
    img = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(seed))
    if M == 0: assert outcome(lambda: score(net, img, co), 'masks')[0] == 'error'; return
    S = score(net, img, co, targets=[0, 3])
    torch.testing.assert_close(S, loop_scores(net, net.to_input(img), co.masks(torch.arange(M)), [0, 3]), atol=1e-5, rtol=1e-4)

@FEW
@given(st.sampled_from([0, -1, 1.5, True, '2']))
def test_score_bad_batch_size(net, bs):
    "A `batch_size` that is not a positive int: an error naming `batch_size`, never the default in its place."
    assert outcome(lambda: score(net, torch.rand(3, 6, 7), torch.ones(2, 6, 7), batch_size=bs), 'batch_size')[0] == 'error'

@FEW
@given(st.sampled_from([(0, 6, 7), (0, 1, 6, 7), (0, 0, 0), (3, 0, 7), (0,)]), st.sampled_from([torch.float32, torch.bool]))
def test_empty_masks(net, shape, dtype):
    "Empty masks (no mask, or masks of a zero side): an error naming `masks` from `SoftMasks` and from `score`."
    m = torch.zeros(shape, dtype=dtype)
    assert outcome(lambda: SoftMasks(m), 'masks')[0] == 'error'
    assert outcome(lambda: score(net, torch.rand(3, 6, 7), m), 'masks')[0] == 'error'

@FEW
@given(st.sampled_from([((2, 3), (0, 4)), ((2, 3), (4, 0)), ((2, 0), (4, 4)), ((2, 3), (3, 0, 4)), ((2, 0), (0, 4, 4))]))
def test_empty_coalitions(shapes):
    "Coalitions with no player or over an empty image: an error naming `Z` or `players`, never a crash."
    zs, ps = shapes
    Z, players = torch.zeros(zs, dtype=torch.bool), torch.zeros(ps, dtype=torch.long if len(ps) == 2 else torch.bool)
    assert outcome(lambda: Coalitions(Z, players), 'Z', 'players')[0] == 'error'

# ------------------------------------------------------------------------------------------------------------- box mapping
_adapters = {}
def adapter(H, W, resize):
    k = (H, W, resize)
    if k not in _adapters: _adapters[k] = ModelAdapter(torch.nn.Identity(), input_size=(H, W), resize=resize, class_names=['a'])
    return _adapters[k]

@st.composite
def geometry(draw):
    H, W = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    resize = draw(st.one_of(st.none(), st.integers(min(H, W), 60)))
    h, w = draw(st.integers(2, 90)), draw(st.integers(2, 90))
    return adapter(H, W, resize), (h, w)

@st.composite
def boxes_in(draw, h, w, k=None):
    k = k or draw(st.integers(1, 4))
    out = []
    for _ in range(k):
        x0, x1 = sorted(draw(st.lists(st.floats(0, w), min_size=2, max_size=2, unique=True)))
        y0, y1 = sorted(draw(st.lists(st.floats(0, h), min_size=2, max_size=2, unique=True)))
        out.append([x0, y0, x1, y1])
    return np.array(out)

@MANY
@given(geometry(), st.data(), st.booleans())
def test_map_unmap_round_trip(geo, data, as_tensor):
    "`unmap_boxes(map_boxes(b))` is `b` (unclipped), `keep` says whether the box overlaps the crop, clipped boxes stay inside."
    m, (h, w) = geo
    b = data.draw(boxes_in(h, w))
    bb = torch.from_numpy(b) if as_tensor else b
    mapped, keep = map_boxes(m, bb, (h, w), clip=False)
    assert isinstance(mapped, torch.Tensor) == as_tensor and isinstance(keep, torch.Tensor) == as_tensor
    back = unmap_boxes(m, mapped, (h, w), clip=False)
    np.testing.assert_allclose(np.asarray(back, dtype=np.float64), b, rtol=1e-4, atol=1e-3 * max(h, w))
    H, W = m.input_size
    nh, nw, top, left = m.resize_geometry(h, w)
    mp = b * [nw / w, nh / h, nw / w, nh / h] - [left, top, left, top]          # the mapping, in float64
    np.testing.assert_allclose(np.asarray(mapped, dtype=np.float64), mp, rtol=1e-5, atol=1e-4)
    overlap = (mp[:, 0] < W) & (mp[:, 2] > 0) & (mp[:, 1] < H) & (mp[:, 3] > 0)
    np.testing.assert_array_equal(np.asarray(keep), overlap)
    clipped, keep2 = map_boxes(m, bb, (h, w))
    c = np.asarray(clipped, dtype=np.float64)
    assert (c >= 0).all() and (c[:, [0, 2]] <= W).all() and (c[:, [1, 3]] <= H).all()
    np.testing.assert_array_equal(np.asarray(keep2), np.asarray(keep))
    inside = (mp[:, 0] >= 0) & (mp[:, 1] >= 0) & (mp[:, 2] <= W) & (mp[:, 3] <= H)   # boxes inside the crop are unchanged
    np.testing.assert_allclose(c[inside], mp[inside], atol=1e-4)

@SOME
@given(geometry(), st.data())
def test_map_boxes_agrees_with_map_mask(geo, data):
    "A box mapped with `map_boxes` covers the same input pixels as its mask mapped with `map_mask` (one resize, one crop)."
    m, (h, w) = geo
    x0, x1 = sorted(data.draw(st.lists(st.integers(0, w), min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(data.draw(st.lists(st.integers(0, h), min_size=2, max_size=2, unique=True)))
    mk = np.zeros((h, w), bool); mk[y0:y1, x0:x1] = True
    got = map_mask(m, mk)
    (bx0, by0, bx1, by1), = np.asarray(map_boxes(m, [[x0, y0, x1, y1]], (h, w), clip=False)[0], dtype=np.float64)
    H, W = m.input_size
    ys, xs = np.arange(H)[:, None], np.arange(W)[None]
    fully_in = (ys >= by0 - 1e-4) & (ys + 1 <= by1 + 1e-4) & (xs >= bx0 - 1e-4) & (xs + 1 <= bx1 + 1e-4)
    fully_out = (ys + 1 <= by0 + 1e-4) | (ys >= by1 - 1e-4) | (xs + 1 <= bx0 + 1e-4) | (xs >= bx1 - 1e-4)
    assert got[fully_in].all() and not got[fully_out].any()

@SOME
@given(st.one_of(st.just('abc'), st.just([[1, 2, 3]]), st.just(np.zeros((2, 5))), st.just(np.zeros((1, 2, 4))), st.just([['a'] * 4]),
                 st.just(object())),
       st.sampled_from([(10, 12), 0, (5, -1), (3,), 'x']))
def test_map_boxes_errors(boxes, size):
    "Malformed boxes or sizes: an error naming `boxes` or `size`."
    m = adapter(8, 8, None)
    assert outcome(lambda: map_boxes(m, boxes, size), 'boxes', 'size')[0] == 'error'
    assert outcome(lambda: unmap_boxes(m, boxes, size), 'boxes', 'size')[0] == 'error'

# ---------------------------------------------------------------------------------------------------- localisation metrics
@st.composite
def box_case(draw):
    H, W = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    k = draw(st.integers(0, 3))
    c = st.floats(-4, 16) | st.just(float('nan')) if draw(st.booleans()) and draw(st.booleans()) else st.floats(-4, 16)
    return (H, W), [[draw(c) for _ in range(4)] for _ in range(k)], draw(st.sampled_from(['list', 'array', 'tensor', 'flat']))

@MANY
@given(box_case())
def test_boxes_mask(case):
    "`boxes_mask`: a pixel is in when it overlaps a box (brute force); no, empty, NaN or out-of-image boxes are errors naming `boxes`."
    (H, W), b, form = case
    a = np.array(b, dtype=np.float64).reshape(-1, 4)
    arg = {'list': b, 'array': a, 'tensor': torch.from_numpy(a), 'flat': a[0] if len(a) == 1 else a}[form]
    ys, xs = np.arange(H)[:, None, None], np.arange(W)[None, :, None]
    with np.errstate(invalid='ignore'):
        per_box = (xs + 1 > a[:, 0]) & (xs < a[:, 2]) & (ys + 1 > a[:, 1]) & (ys < a[:, 3]) & (xs >= 0)
        ok = len(a) > 0 and np.isfinite(a).all() and (a[:, 2] > a[:, 0]).all() and (a[:, 3] > a[:, 1]).all() and per_box.any((0, 1)).all()
    res, got = outcome(lambda: boxes_mask(arg, (H, W)), 'boxes')
    assert res == ('ok' if ok else 'error'), (a, got)
    if ok:
        assert got.dtype == torch.bool and tuple(got.shape) == (H, W)
        np.testing.assert_array_equal(got.numpy(), per_box.any(-1))

@st.composite
def map_case(draw):
    rng = seeded(draw)
    H, W = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    dt = draw(st.sampled_from(['float32', 'float64', 'float16', 'int64', 'bool']))
    kind = draw(st.sampled_from(['random', 'random', 'constant', 'negative', 'nan', 'ties']))
    m = rng.normal(size=(H, W))
    if kind == 'constant': m[:] = draw(st.sampled_from([0., 1., -2.]))
    elif kind == 'negative': m = -np.abs(m) - 0.1
    elif kind == 'ties': m = np.round(m)
    elif kind == 'nan': m.flat[rng.integers(m.size)] = np.nan
    if dt in ('int64',): m = np.nan_to_num(np.round(m * 3), nan=0)
    if dt == 'bool': m = np.nan_to_num(m) > 0
    gt = rng.random((H, W)) < draw(st.sampled_from([0., 0.1, 0.5, 1.]))
    shape_ok = draw(st.sampled_from([True, True, True, False]))
    if not shape_ok: gt = np.zeros((H + 1, W), bool); gt[0, 0] = True
    m = m.astype(dt)
    return (torch.from_numpy(m) if draw(st.booleans()) else m), gt, float(draw(st.sampled_from([0, 0.5, 1, 2.5, 15])))

def near_region(gt, tol):
    "Pixels within Euclidean distance < tol of the ground truth (brute force), the region included."
    H, W = gt.shape
    gy, gx = np.nonzero(gt)
    yy, xx = np.mgrid[:H, :W]
    d = np.sqrt((yy[..., None] - gy) ** 2 + (xx[..., None] - gx) ** 2).min(-1)
    return (d < tol) | gt

def metric_reference(m, gt):
    "None if the map or gt is invalid (an error naming `saliency` / `gt`), else the float64 map."
    a = np.asarray(m).astype(np.float32).astype(np.float64)     # `as_map` documents float32 maps
    if np.isnan(a).any() or gt.shape != a.shape or not gt.any(): return None
    return a

def _check_metric(fn, m, gt):
    a = metric_reference(m, gt)
    def run():
        try: return 'ok', fn()
        except SkipSample as e: return 'skip', e
    res, got = outcome(run, 'saliency', 'gt')
    if res == 'ok': res, got = got
    if res == 'skip': return res, got, a
    assert res == ('error' if a is None else 'ok'), got
    return res, got, a

@MANY
@given(map_case())
def test_pointing_game(case):
    "The hit is the brute-force one: the first maximum (row-major) within `tolerance` of the ground truth; constant maps skip."
    m, gt, tol = case
    res, got, a = _check_metric(lambda: pointing_game(m, gt, tol), m, gt)
    if res == 'skip': assert a is not None and a.max() == a.min(); return
    if res == 'error': return
    assert a.max() > a.min(), 'a constant map was scored'
    y, x = np.unravel_index(int(np.argmax(a)), a.shape)
    near = near_region(gt, tol)
    H, W = a.shape
    assert got['point'] == (y, x) and got['pg_hit'] == bool(near[y, x])
    assert got['pg_center'] == bool(near[(H - 1) // 2, (W - 1) // 2])
    assert got['pg_random'] == pytest.approx(near.mean())

@MANY
@given(map_case(), st.sampled_from(['clamp', 'minmax']))
def test_energy_in_region(case, normalize):
    "Energy is the brute-force share of the normalised map inside the ground truth, in [0, 1]; maps with no mass skip."
    m, gt, _ = case
    res, got, a = _check_metric(lambda: energy_in_region(m, gt, normalize), m, gt)
    if res == 'error': return
    p = np.clip(a, 0, None) if normalize == 'clamp' else ((a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else 0 * a)
    if res == 'skip': assert not p.sum() > 0; return
    H, W = a.shape
    cy, cx, s = (H - 1) // 2, (W - 1) // 2, min(H, W) / 4
    c = np.exp(-((np.arange(H)[:, None] - cy) ** 2 + (np.arange(W)[None] - cx) ** 2) / (2 * s * s))
    assert got['energy'] == pytest.approx(p[gt].sum() / p.sum(), abs=1e-9)
    assert got['energy_center'] == pytest.approx(c[gt].sum() / c.sum(), abs=1e-6)
    assert got['energy_random'] == pytest.approx(gt.mean())
    assert all(0 <= got[k] <= 1 + 1e-12 for k in got)

@SOME
@given(map_case(), st.sampled_from(['clamp', 'minmax']), st.integers(1, 50), st.integers(0, 99))
def test_stochastic_pointing_game(case, normalize, n_points, seed):
    "Shares in [0, 1] on a 1/n_points grid; all mass near the ground truth scores 1, all mass away from it 0."
    m, gt, tol = case
    res, got, a = _check_metric(lambda: stochastic_pointing_game(m, gt, n_points, tol, seed, normalize), m, gt)
    if res == 'error': return
    p = np.clip(a, 0, None) if normalize == 'clamp' else ((a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else 0 * a)
    if res == 'skip': assert not p.sum() > 0; return
    near = near_region(gt, tol)
    assert got['spg_random'] == pytest.approx(near.mean())
    for k in ('spg', 'spg_center'):
        assert 0 <= got[k] <= 1 and got[k] * n_points == pytest.approx(round(got[k] * n_points), abs=1e-6)
    if p[~near].sum() == 0: assert got['spg'] == 1
    if p[near].sum() == 0: assert got['spg'] == 0

@SOME
@given(st.sampled_from([0, -1, 2.5, True, '3', None]), st.sampled_from([-1, float('nan'), 'x', None, True]))
def test_localisation_argument_errors(n_points, tolerance):
    "Bad `n_points` or `tolerance`: an error naming them."
    m, gt = torch.rand(5, 5), torch.zeros(5, 5, dtype=torch.bool); gt[1, 1] = True
    assert outcome(lambda: stochastic_pointing_game(m, gt, n_points=n_points), 'n_points')[0] == 'error'
    assert outcome(lambda: pointing_game(m, gt, tolerance=tolerance), 'tolerance')[0] == 'error'
    assert outcome(lambda: stochastic_pointing_game(m, gt, tolerance=tolerance), 'tolerance')[0] == 'error'
