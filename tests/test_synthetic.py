"""The synthetic ground-truth benchmark (xaikit.synthetic) and the two models trained on it (xaikit.synthetic_models).

Acceptance checks of the benchmark issue: reproducible generation (checksums), COCO / ImageNet-layout exports read back
by pycocotools and the ILSVRC parser, deterministic training, and, with the committed checkpoints in data/, held-out
accuracy >= 95 %, the planted confusion groups as the CNN's largest off-diagonal blocks, and occlusion tests showing the
models use the planted evidence. Each test uses at most 1300 images of 64 x 64 pixels.
"""
import contextlib, io, json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from xaikit.synthetic import (CLASSES, CLASS_IDS, CLASS_NAMES, HOLDOUT_SEED, background_boxes, confusion_blocks,
                              dataset_sha256, export_coco, export_imagenet_layout, grey_boxes, image_name, make_dataset)
from xaikit.synthetic_models import (CNN_RECIPE, VIT_RECIPE, build_model, confusion_matrix, evidence_test, find_checkpoint,
                                     load_checkpoint, predict_proba, state_sha256, train_model)

ROOT = Path(__file__).resolve().parents[1]

# sha256 of make_dataset(26, 64, seed=0) (images, labels, masks, annotations) on the reference platform (x86-64, torch 2.x CPU)
SHA_26_64_SEED0 = 'f2c8d2542f8a534346c0c377f75f1692cdf7e30fb7d8ca383f22b359f67b2e7c'
# sha256 of the committed checkpoints' weights (xaikit.synthetic_models.state_sha256)
CKPT_SHA = {'cnn': 'ee3888d1db844ced9524dcaa4a4a71cb352368fdda2731b5ca9dc7bf28e58e34',
            'vit': 'df4ba52e367992a2e609f039336046873e74d7f1e05b8f611abb688675d714e7'}


@pytest.fixture(scope='module')
def small():
    return make_dataset(26, 64, seed=0)


def test_generation_checksum(small):
    assert dataset_sha256(make_dataset(26, 64, seed=0)) == dataset_sha256(small)   # same seed, same bytes
    assert dataset_sha256(small) == SHA_26_64_SEED0
    assert dataset_sha256(make_dataset(26, 64, seed=1)) != SHA_26_64_SEED0
    tail = make_dataset(6, 64, seed=0, start=20)                                   # image i depends only on (seed, i)
    assert torch.equal(tail.images, small.images[20:])


@pytest.mark.parametrize('size', [64, 100, 224])
def test_sizes_and_annotations(size):
    ds = make_dataset(13, size, seed=3)
    assert ds.images.shape == (13, 3, size, size) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == list(range(13))
    for a, c in zip(ds.annotations, CLASSES):
        assert a['name'] == c.name and a['kind'] == c.kind
        P = {'none': 0, 'located': 1, 'confusable': 1, 'conjunctive': 2, 'redundant': 2}[c.kind]
        assert a['boxes'].shape == (P, 4) and a['masks'].shape == (P, size, size)
        for b, m in zip(a['boxes'], a['masks']):
            ys, xs = np.nonzero(m)
            assert list(b) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        if P == 2:
            assert a['pair'] == (0, 1)
            assert a['pair_type'] == ('complementary' if c.kind == 'conjunctive' else 'competing')
            assert not (a['masks'][0] & a['masks'][1]).any()
            if c.kind == 'redundant': assert a['parts'][0] == a['parts'][1]
            else: assert a['parts'][0] != a['parts'][1]


def test_bad_arguments():
    for kw, msg in ((dict(n=2, size=32), '`size`'), (dict(n=0), '`n`'), (dict(n=2, labels=[0, 99]), '`labels`'),
                    (dict(n=2, p_decoy=-1), '`p_decoy`'), (dict(n=2, seed=-1), '`seed`')):
        with pytest.raises(ValueError, match=msg): make_dataset(**kw)


def test_coco_export_reads_with_pycocotools(small, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(export_coco(small, tmp_path / 'instances.json')))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == CLASS_NAMES
    assert len(coco.getImgIds()) == len(small)
    for i, a in enumerate(small.annotations):
        img = coco.loadImgs(i + 1)[0]
        assert (img['label'], img['kind'], img['parts']) == (a['label'], a['kind'], a['parts'])
        assert (tmp_path / 'images' / img['file_name']).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=i + 1))
        assert len(anns) == len(a['parts'])
        for k, an in enumerate(anns):
            assert np.array_equal(coco.annToMask(an).astype(bool), a['masks'][k])
            x0, y0, x1, y1 = a['boxes'][k]
            assert an['bbox'] == [x0, y0, x1 - x0, y1 - y0] and an['category_id'] == a['label'] + 1
            if a['pair'] is not None: assert an['pair_type'] == a['pair_type']
    dets = [dict(image_id=d['image_id'], category_id=d['category_id'], bbox=d['bbox'], segmentation=d['segmentation'], score=1.0)
            for d in coco.loadAnns(coco.getAnnIds())]
    for iou in ('bbox', 'segm'):
        with contextlib.redirect_stdout(io.StringIO()):
            E = COCOeval(coco, coco.loadRes(dets), iou); E.evaluate(); E.accumulate(); E.summarize()
        assert abs(E.stats[0] - 1.0) < 1e-6


def test_imagenet_layout_export(small, tmp_path):
    root = export_imagenet_layout(small, tmp_path / 'inet')
    idx = json.loads((root / 'class_index.json').read_text())
    assert [idx[str(k)] for k in range(13)] == [[w, n] for w, n in zip(CLASS_IDS, CLASS_NAMES)]
    sub = json.loads((root / 'subset.json').read_text())['images']
    for i, a in enumerate(small.annotations):
        name = image_name(small, i)
        assert (root / 'images' / f'{name}.png').is_file() and sub[name]['label'] == a['label']
        x = ET.parse(root / 'annotations' / f'{name}.xml').getroot()
        assert [x.findtext(f'size/{k}') for k in ('width', 'height', 'depth')] == ['64', '64', '3']
        objs = x.findall('object')
        assert [o.findtext('name') for o in objs] == [CLASS_IDS[a['label']]] * len(a['parts'])
        assert all(o.findtext('difficult') == '0' for o in objs)
        assert [[int(o.findtext(f'bndbox/{k}')) for k in ('xmin', 'ymin', 'xmax', 'ymax')] for o in objs] == a['boxes'].tolist()
    from xaikit.models import imagenet_subset
    assert sorted(l for _, l in imagenet_subset(root)) == sorted(small.labels.tolist())
    try: from xaikit.data import ImageNetFolder
    except ImportError: return
    recs = list(ImageNetFolder(root, classes=str(root / 'class_index.json')))
    assert sorted(r.label for r in recs if r.label is not None) == sorted(l for l in small.labels.tolist() if l != 0)


def test_training_is_reproducible():
    data = make_dataset(48, 64, seed=1, single_copy=0.3)
    for rec in (CNN_RECIPE, VIT_RECIPE):
        r = dict(rec, batch_size=16)
        (m1, i1), (m2, i2) = train_model(r, data, max_steps=2), train_model(r, data, max_steps=2)
        assert i1['steps'] == 2 and i1['state_sha256'] == i2['state_sha256']
        assert i1['state_sha256'] != state_sha256(build_model(r).model)
        for (k, v), w in zip(m1.model.state_dict().items(), m2.model.state_dict().values()): assert torch.equal(v, w), k


# ---------------------------------------------------------------- the committed models
def _ckpt(arch):
    p = ROOT / 'data' / f'synthetic_{arch}.pt'
    if not p.is_file(): pytest.skip(f"no committed checkpoint {p}")
    return p


@pytest.mark.parametrize('arch', ['cnn', 'vit'])
def test_checkpoint_committed(arch):
    p = _ckpt(arch)
    assert p.stat().st_size < 3e6
    model, ck = load_checkpoint(p)
    assert ck['recipe'] == {'cnn': CNN_RECIPE, 'vit': VIT_RECIPE}[arch] and ck['classes'] == CLASS_NAMES
    assert state_sha256(model.model) == ck['info']['state_sha256'] == CKPT_SHA[arch]
    assert find_checkpoint(arch) is not None


@pytest.fixture(scope='module')
def holdout():
    return make_dataset(1300, 64, seed=HOLDOUT_SEED)


@pytest.fixture(scope='module')
def occl():
    return make_dataset(390, 64, seed=HOLDOUT_SEED + 1000)


def _model(arch):
    return load_checkpoint(_ckpt(arch))[0]


@pytest.mark.parametrize('arch', ['cnn', 'vit'])
def test_heldout_accuracy(arch, holdout):
    C = confusion_matrix(_model(arch), holdout)
    assert np.trace(C) / C.sum() >= 0.95, f"{arch}: {np.trace(C) / C.sum():.1%}"


def test_cnn_confusion_groups_are_the_largest_blocks(holdout):
    r = confusion_blocks(confusion_matrix(_model('cnn'), holdout))
    assert r['ok'], r
    assert all(v > 0 for v in r['within'].values())


@pytest.mark.parametrize('arch', ['cnn', 'vit'])
def test_models_use_the_planted_evidence(arch, occl):
    e = evidence_test(_model(arch), occl)
    assert e['evidence_drop'] >= 0.5, e
    assert e['background_change'] < 0.05, e
    assert e['n_pairs']['conjunctive'] >= 50 and e['conjunctive_flip'] >= 0.9, e
    assert e['n_pairs']['redundant'] >= 50 and e['redundant_flip'] <= 0.1, e


def test_grey_and_background_boxes(small):
    a = small.annotations[9]
    bg = background_boxes(a['boxes'], 64, np.random.default_rng(0))
    assert (bg[:, 2:] - bg[:, :2] == a['boxes'][:, 2:] - a['boxes'][:, :2]).all()
    x = grey_boxes(small.x01(9), a['boxes'])
    assert (x[:, a['masks'].any(0)] == 0.5).all()
    with pytest.raises(ValueError, match='`images`'): predict_proba(build_model(CNN_RECIPE), make_dataset(1, 96).images)
