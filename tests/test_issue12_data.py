"""Issue 12 (reliability), data loaders and metrics: each test failed before its fix and names the issue item it covers."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaikit.data import CocoDataset, ImageNetFolder, write_annotation
from xaikit.models import tiny_cnn
from xaikit.metrics import (Sample, SkipSample, boxes_mask, samples, insertion_deletion, contrastive_faithfulness,
                            InsertionDeletion, ContrastiveFaithfulness, evaluate, summarize)


# ---------------------------------------------------------------- tiny files

def _folder(d: Path, n=3, H=20, W=30):
    (d / 'images').mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(d / 'images' / f'img_{i}.png')
        write_annotation(d / 'annotations' / f'img_{i}.xml', [[i, 1, 10 + i, 12]], ['circle'], (H, W))
    return d


def _coco(d: Path, H=40, W=60, images=None, anns=None):
    (d / 'imgs').mkdir(parents=True, exist_ok=True)
    for n in ('a.png', 'b.png'): Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / 'imgs' / n)
    js = dict(images=images or [dict(id=1, file_name='a.png', height=H, width=W), dict(id=2, file_name='b.png', height=H, width=W)],
              categories=[dict(id=5, name='ring'), dict(id=2, name='bar')],
              annotations=anns or [dict(id=10, image_id=1, category_id=5, bbox=[10, 5, 20, 10], iscrowd=0, segmentation=[]),
                                   dict(id=11, image_id=2, category_id=2, bbox=[0, 30, 10, 5], iscrowd=0, segmentation=[])])
    (d / 'ann.json').write_text(json.dumps(js))
    return d / 'ann.json', d / 'imgs'


def _tiny(size=24, classes=5): return tiny_cnn(input_size=size, num_classes=classes, seed=0)


class _Counter:
    "Counts images through the wrapped network."
    def __init__(self, model): self.n = 0; self.h = model.model.register_forward_hook(self)
    def __call__(self, mod, inp, out): self.n += inp[0].shape[0]
    def close(self): self.h.remove()


# ---------------------------------------------------------------- COCO

def test_issue12_item09_coco_entry_without_bbox_or_height(tmp_path):
    ann = [dict(id=10, image_id=1, category_id=5, iscrowd=0, segmentation=[]),            # no bbox
           dict(id=11, image_id=2, category_id=2, bbox=[0, 30, 10, 5], iscrowd=0, segmentation=[])]
    a, im = _coco(tmp_path / 'b', anns=ann)
    g = CocoDataset(ann_file=a, images=im)
    with pytest.raises(ValueError, match=r"ann.json: annotation 10 of image 1 has no 'bbox'"): g[0]
    assert g[1].boxes.shape == (1, 4)
    s = CocoDataset(ann_file=a, images=im, on_error='skip')
    assert [r.image_id for r in s] == [2] and s.n_skipped == 1 and "no 'bbox'" in s.skipped[0][1]
    imgs = [dict(id=1, file_name='a.png', width=60), dict(id=2, file_name='b.png', height=40, width=60)]   # no height
    a, im = _coco(tmp_path / 'h', images=imgs)
    g = CocoDataset(ann_file=a, images=im)
    with pytest.raises(ValueError, match=r"ann.json: image 1 \(a.png\) has no 'height'"): g[0]
    s = CocoDataset(ann_file=a, images=im, on_error='skip')
    assert [r.image_id for r in s] == [2] and s.n_skipped == 1
    imgs = [dict(id=1, height=40, width=60), dict(id=2, file_name='b.png', height=40, width=60)]               # no file_name
    a, im = _coco(tmp_path / 'f', images=imgs)
    s = CocoDataset(ann_file=a, images=im, on_error='skip')
    assert [r.image_id for r in s] == [2] and "image 1 has no 'file_name'" in s.skipped[0][1]
    imgs = [dict(id=1, file_name='a.png', height='tall', width=60)]
    a, im = _coco(tmp_path / 'n', images=imgs)
    with pytest.raises(ValueError, match=r"image 1 \(a.png\) has 'height' 'tall'"): CocoDataset(ann_file=a, images=im)[0]


def test_issue12_item10_coco_duplicate_image_ids(tmp_path):
    imgs = [dict(id=1, file_name='a.png', height=40, width=60), dict(id=1, file_name='b.png', height=40, width=60)]
    a, im = _coco(tmp_path, images=imgs)
    with pytest.raises(ValueError, match=r"ann.json lists image id 1 twice \(a.png and b.png\)"): CocoDataset(ann_file=a, images=im)


def test_issue12_weak_coco_negative_box(tmp_path):
    ann = [dict(id=10, image_id=1, category_id=5, bbox=[10, 5, -20, 10], iscrowd=0, segmentation=[])]
    a, im = _coco(tmp_path, anns=ann)
    with pytest.raises(ValueError, match=r"ann.json: annotation 10 of image 1 has 'bbox' \[10, 5, -20, 10\]"):
        CocoDataset(ann_file=a, images=im)[0]
    ann[0]['bbox'] = [10, 5, 'x', 10]
    a, im = _coco(tmp_path / 's', anns=ann)
    with pytest.raises(ValueError, match="annotation 10 of image 1 has 'bbox'"): CocoDataset(ann_file=a, images=im)[0]
    s = CocoDataset(ann_file=a, images=im, on_error='skip')
    assert [r.image_id for r in s] == [2] and s.n_skipped == 1


def test_issue12_weak_coco_samples_on_error(tmp_path):
    a, im = _coco(tmp_path)
    (im / 'a.png').unlink()
    m = _tiny(classes=2)
    with pytest.raises(FileNotFoundError, match="a.png"): samples(CocoDataset(ann_file=a, images=im), m, source='boxes')
    g = CocoDataset(ann_file=a, images=im, on_error='skip')
    S = samples(g, m, source='boxes')
    assert [s.id for s in S] == ['2:0'] and g.n_skipped == 1 and g.skipped[0][0].name == 'a.png'


# ---------------------------------------------------------------- ImageNet layout

def test_issue12_weak_imagenet_samples_on_error_without_load(tmp_path):
    d = _folder(tmp_path)
    (d / 'images' / 'img_1.png').write_bytes(b'garbage')
    m = _tiny(classes=2)
    with pytest.raises(ValueError, match="img_1.png"): samples(ImageNetFolder(d, classes=['circle', 'square']), m)
    f = ImageNetFolder(d, classes=['circle', 'square'], on_error='skip')           # load_images=False
    S = samples(f, m)
    assert [s.id for s in S] == ['img_0', 'img_2'] and f.n_skipped == 1 and f.skipped[0][0].name == 'img_1.png'
    assert len(samples(f, m, limit=2)) == 1 and f.n_skipped == 1


def test_issue12_weak_imagenet_xml_without_image_counted(tmp_path):
    d = _folder(tmp_path)
    write_annotation(d / 'annotations' / 'img_9.xml', [[0, 0, 5, 5]], ['circle'], (20, 30))
    f = ImageNetFolder(d, classes=['circle', 'square'])
    assert len(f) == 3 and f.n_missing == 1 and '1 annotations without an image' in repr(f)
    assert [p.name for p in f.missing] == ['img_9.xml']
    s = ImageNetFolder(d, classes=['circle', 'square'], on_error='skip')
    assert len(list(s)) == 3 and s.n_skipped == 1 and s.skipped[0][0].name == 'img_9.xml' and 'no image' in s.skipped[0][1]
    with pytest.raises(FileNotFoundError, match="img_9.xml"): list(ImageNetFolder(d, classes=['circle', 'square'], missing='error'))
    with pytest.raises(ValueError, match="`missing`"): ImageNetFolder(d, classes=['circle', 'square'], missing='ignore')


def test_issue12_weak_imagenet_xml_size_checked_against_header(tmp_path):
    d = _folder(tmp_path)
    write_annotation(d / 'annotations' / 'img_0.xml', [[0, 0, 5, 5]], ['circle'], (99, 30))   # the image is 20 x 30
    f = ImageNetFolder(d, classes=['circle', 'square'])                                       # not decoding the pixels
    with pytest.raises(ValueError, match=r"img_0.png is \(20, 30\) \(H, W\) but its annotation .*img_0.xml says <size> \(99, 30\)"): f[0]
    s = ImageNetFolder(d, classes=['circle', 'square'], on_error='skip')
    assert [r.path.name for r in s] == ['img_1.png', 'img_2.png'] and s.n_skipped == 1


def test_issue12_weak_localization_reversed_box(tmp_path):
    d = _folder(tmp_path / 'f', n=2)
    m = tmp_path / 'meta'; m.mkdir()
    (m / 'localization.txt').write_text('val/img_0.png,1,2,10,12\nval/img_1.png,8,3,4,4\n')
    (m / 'class_labels.txt').write_text('val/img_0.png,1\nval/img_1.png,0\n')
    (m / 'image_sizes.txt').write_text('val/img_0.png,30,20\nval/img_1.png,30,20\n')
    with pytest.raises(ValueError, match=r"localization.txt, line 2: box \[8.0, 3.0, 4.0, 4.0\] of val/img_1.png"):
        ImageNetFolder.from_localization(m, images_root=d / 'images', classes=['circle', 'square'])


# ---------------------------------------------------------------- faithfulness metrics

def test_issue12_item11_contrastive_constant_map():
    m, x = _tiny(), torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    for mp in (torch.zeros(24, 24), torch.ones(24, 24), torch.full((24, 24), -2.)):
        with pytest.raises(SkipSample, match="`saliency` is constant"): contrastive_faithfulness(m, x, mp, 0, [1], step=50)
    assert issubclass(SkipSample, ValueError)
    # over a data set, a constant map is a counted skip and never beats a random map
    S = [Sample(f'i{i}', torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(i)), i % 5) for i in range(4)]
    cf = ContrastiveFaithfulness(m, negatives=1, step=50)
    tr = evaluate(S, 'random', [cf], method='random')
    for const in (0., 1.):
        tc = evaluate(S, [torch.full((24, 24), const)] * 4, [cf], method='constant')
        assert tc.meta['skipped'] == {'contrastive_faithfulness': 4} and all(r['cauc'] is None for r in tc)
        sm = {r['method']: r for r in summarize(tr + tc, [cf])}
        c = sm['constant']['cauc']
        assert c is None or c != c or c >= sm['random']['cauc']      # no score at all, never the best


def test_issue12_item12_contrastive_target_among_negatives():
    m, x = _tiny(), torch.rand(3, 24, 24)
    with pytest.raises(ValueError, match="`negatives`: class 2 is also the `target`"): contrastive_faithfulness(m, x, torch.rand(24, 24), 2, [1, 2])
    with pytest.raises(ValueError, match="`negatives`: class 0 is also"): contrastive_faithfulness(m, x, torch.rand(24, 24), [0, 3], [0])


def test_issue12_weak_insertion_deletion_constant_map():
    m, x = _tiny(), torch.rand(3, 24, 24)
    for mp in (torch.zeros(24, 24), torch.full((24, 24), 3.)):
        with pytest.raises(SkipSample, match="`saliency` is constant"): insertion_deletion(m, x, mp, target=0, n_steps=4)
    checker = ((torch.arange(24)[:, None] + torch.arange(24)[None]) % 2).float()     # every 2 x 2 cell has the mean 0.5
    with pytest.raises(SkipSample, match="constant over its step units"): insertion_deletion(m, x, checker, target=0, n_steps=4, patch=2)
    insertion_deletion(m, x, checker, target=0, n_steps=4)                            # pixels: not constant
    S = [Sample(f'i{i}', torch.rand(3, 24, 24), 0) for i in range(2)]
    t = evaluate(S, [torch.zeros(24, 24), torch.rand(24, 24)], [InsertionDeletion(m, n_steps=4)])
    assert t.meta['skipped'] == {'insertion_deletion': 1} and t[0]['ins_auc'] is None and t[1]['ins_auc'] is not None


def test_issue12_weak_insertion_deletion_target_validated_first():
    m, x = _tiny(), torch.rand(3, 24, 24)
    cnt = _Counter(m)
    try:
        with pytest.raises(ValueError, match="out of range"): insertion_deletion(m, x, torch.rand(24, 24), target=7, n_steps=50)
        with pytest.raises(TypeError, match="`targets?` must be"): insertion_deletion(m, x, torch.rand(24, 24), target='cat')
    finally: cnt.close()
    assert cnt.n == 0
