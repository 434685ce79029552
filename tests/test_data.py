"""Data loaders: ImageNet-layout folders and lists, COCO, box/mask mapping into the model input, and every error case.

Checks on the real assets skip with a reason when the assets folder (or XAIKIT_IMAGENET / XAIKIT_COCO) is absent;
the geometry and error checks use tiny files written to a temporary folder and always run.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xaikit.data import (CocoDataset, ImageNetFolder, class_index, coco_root, imagenet_root, map_boxes, map_mask,
                         parse_annotation, read_image, unmap_boxes, write_annotation)
from xaikit.models import ModelAdapter, efficientnet_lite0


def _root(fn):
    try: return fn()
    except FileNotFoundError: return None

IN_ROOT, CO_ROOT = _root(imagenet_root), _root(coco_root)
need_imagenet = pytest.mark.skipif(IN_ROOT is None, reason="no ImageNet folder: set XAIKIT_IMAGENET or XAIKIT_ASSETS (assets/imagenet/val)")
need_coco = pytest.mark.skipif(CO_ROOT is None, reason="no COCO folder: set XAIKIT_COCO or XAIKIT_ASSETS (assets/coco)")
META = None if IN_ROOT is None else IN_ROOT.parent / 'wsol_metadata' / 'ILSVRC_val50k'
need_meta = pytest.mark.skipif(META is None or not META.is_dir(), reason="no wsol_metadata/ILSVRC_val50k beside the ImageNet folder")


# ---------------------------------------------------------------- real data

@need_imagenet
def test_imagenet_folder_matches_subset_json():
    sub_f = IN_ROOT / 'subset.json'
    if not sub_f.is_file(): pytest.skip(f"no subset.json in {IN_ROOT}")
    sub = json.loads(sub_f.read_text())['images']
    ds = ImageNetFolder(classes=IN_ROOT.parent / 'imagenet_class_index.json', load_images=True)
    recs = list(ds)
    assert len(recs) == len(sub) == 35 and ds.n_skipped == 0
    for r in recs:
        s = sub[r.path.stem]
        assert (r.label, r.wnid, r.class_name, r.size) == (s['label'], s['wnid'], s['class_name'], (s['height'], s['width']))
        np.testing.assert_array_equal(r.boxes, np.array(s['boxes_xyxy'], np.float32))
        assert r.image.shape == (s['height'], s['width'], 3) and r.difficult.shape == (len(r.boxes),)
        assert (r.box_labels == r.label).all()


@need_imagenet
def test_default_class_names_are_torchvision_names():
    r = ImageNetFolder()[0]
    assert r.class_name == 'recreational vehicle' and r.wnid == 'n04065272' and r.label == 757


@need_meta
def test_localization_lists_match_xml():
    wl = ImageNetFolder.from_localization(META, images_root=IN_ROOT / 'images')
    assert (len(wl), wl.n_missing) == (35, 50000 - 35)
    for a, b in zip(wl, ImageNetFolder()):
        assert (a.path, a.label, a.wnid, a.size) == (b.path, b.label, b.wnid, b.size)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    full = ImageNetFolder.from_localization(META)
    assert len(full) == 50000 and full[1].boxes.shape == (2, 4) and full[1].label == 970
    with pytest.raises(FileNotFoundError, match="absent from"):
        ImageNetFolder.from_localization(META, images_root=IN_ROOT / 'images', missing='error')


@need_coco
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' annToMask under NumPy 2 (the reference union)
def test_coco_subset():
    co = CocoDataset()
    recs = list(co)
    assert (len(recs), len(co.class_names), sum(len(r.boxes) for r in recs)) == (79, 80, 624)
    assert sum(int(r.iscrowd.sum()) for r in recs) == 5
    for r in recs[:5] + [r for r in recs if r.iscrowd.any()]:
        anns = co.coco.imgToAnns[r.image_id]
        ref = np.array([a['bbox'] for a in anns], np.float64); ref[:, 2:] += ref[:, :2]
        np.testing.assert_allclose(r.boxes, ref, rtol=0, atol=1e-4)
        for c, m in zip(r.mask_labels, r.masks):
            u = np.zeros(r.size, bool)
            for a in anns:
                if a['category_id'] == co.cat_ids[c]: u |= co.coco.annToMask(a).astype(bool)
            np.testing.assert_array_equal(m, u)
        assert r.mask_crowd.tolist() == [bool(r.iscrowd[r.labels == c].any()) for c in r.mask_labels]
    cr = next(i for i, r in enumerate(recs) if r.iscrowd.any())
    assert not CocoDataset(crowd=False)[cr].iscrowd.any()


# ---------------------------------------------------------------- geometry

def _models():
    return [efficientnet_lite0(pretrained=False), ModelAdapter(nn.Identity(), input_size=(48, 64)),
            ModelAdapter(nn.Identity(), input_size=(64, 96), resize=80)]


def _found(x):
    m = (x > 0.5).numpy(); out = np.full((len(m), 4), np.nan)
    for c in range(len(m)):
        ys, xs = np.nonzero(m[c].any(1))[0], np.nonzero(m[c].any(0))[0]
        if len(xs): out[c] = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
    return out


@pytest.mark.parametrize('size', [(375, 500), (500, 333), (224, 224), (60, 90)])
def test_map_boxes_matches_to_input(size):
    h, w = size
    rng = np.random.default_rng(h * w)
    for model in _models():
        for _ in range(3):
            x0, y0 = rng.integers(0, w - 8, 3), rng.integers(0, h - 8, 3)
            boxes = np.stack([x0, y0, np.minimum(x0 + rng.integers(6, w // 2, 3), w), np.minimum(y0 + rng.integers(6, h // 2, 3), h)], 1)
            img = np.zeros((3, h, w), np.float32)
            for c, (a, b, cc, dd) in enumerate(boxes): img[c, b:dd, a:cc] = 1
            got = _found(model.to_input(torch.from_numpy(img)))
            mb, keep = map_boxes(model, boxes, size)
            vis = keep & (mb[:, 2] - mb[:, 0] > 1) & (mb[:, 3] - mb[:, 1] > 1)
            assert np.abs(got[vis] - mb[vis]).max(initial=0) <= 1, (model, got, mb)
            assert np.isnan(got[~keep]).all()
            mm = map_mask(model, img > 0.5)
            assert mm.shape == (3, *model.input_size) and mm.dtype == bool
            assert np.abs(_found(torch.from_numpy(mm.astype(np.float32)))[vis] - mb[vis]).max(initial=0) <= 1


def test_map_boxes_known_values_and_inverse():
    net = efficientnet_lite0(pretrained=False)
    mb, keep = map_boxes(net, [[0, 0, 50, 375], [100, 100, 200, 200], [300, 10, 520, 30]], (375, 500))
    assert keep.tolist() == [False, True, True]
    np.testing.assert_allclose(mb[1], [100 * .682 - 58, 100 * 256 / 375 - 16, 200 * .682 - 58, 200 * 256 / 375 - 16], atol=1e-3)
    assert mb[2, 2] == 224                                    # clipped to the input
    back = unmap_boxes(net, mb[1:2], (375, 500))
    np.testing.assert_allclose(back, [[100, 100, 200, 200]], atol=1e-3)
    t, k = map_boxes(net, torch.tensor([100., 100, 200, 200]), (375, 500))
    assert isinstance(t, torch.Tensor) and t.shape == (4,) and bool(k)
    same, _ = map_boxes(net, [[3, 4, 50, 60]], (224, 224))     # an input-size image is taken as preprocessed
    np.testing.assert_array_equal(same, [[3, 4, 50, 60]])
    m = torch.zeros(2, 375, 500, dtype=torch.uint8); m[:, 100:200, 100:200] = 1
    mm = map_mask(net, m)
    assert mm.dtype == torch.uint8 and mm.shape == (2, 224, 224)


def test_geometry_errors():
    net = ModelAdapter(nn.Identity(), input_size=32)
    with pytest.raises(ValueError, match="`boxes`"): map_boxes(net, [[1, 2, 3]], (10, 10))
    with pytest.raises(ValueError, match="`size`"): map_boxes(net, [[1, 2, 3, 4]], (10,))
    with pytest.raises(TypeError, match="ModelAdapter"): map_boxes(nn.Identity(), [[1, 2, 3, 4]], (10, 10))
    with pytest.raises(ValueError, match="`mask`"): map_mask(net, np.zeros((1, 1, 4, 4)))
    with pytest.raises(TypeError, match="`mask`"): map_mask(net, [[0, 1]])


# ---------------------------------------------------------------- generic folders and errors

def _folder(d: Path, n=3, H=20, W=30):
    (d / 'images').mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(d / 'images' / f'img_{i}.png')
        write_annotation(d / 'annotations' / f'img_{i}.xml', [[i, 1, 10 + i, 12], [0, 0, 5, 5]], [['circle', 'square'][i % 2], 'square'],
                         (H, W), difficult=[0, 1])
    return d


def test_generic_folder(tmp_path):
    f = ImageNetFolder(_folder(tmp_path), classes=['circle', 'square'], load_images=True)
    recs = list(f)
    assert [r.label for r in recs] == [0, 1, 0] and [r.box_labels.tolist() for r in recs][0] == [0, 1]
    np.testing.assert_array_equal(recs[1].boxes, [[1, 1, 11, 12], [0, 0, 5, 5]])
    assert recs[2].difficult.tolist() == [False, True] and recs[0].image.shape == (20, 30, 3) and recs[0].wnid is None
    r = parse_annotation(tmp_path / 'annotations' / 'img_0.xml')
    assert r['size'] == (20, 30) and r['names'] == ['circle', 'square']


def test_folder_errors(tmp_path, monkeypatch):
    d = _folder(tmp_path / 'f')
    with pytest.raises(FileNotFoundError, match="no/such"): ImageNetFolder(tmp_path / 'no' / 'such')
    monkeypatch.setenv('XAIKIT_IMAGENET', str(tmp_path / 'gone'))
    with pytest.raises(FileNotFoundError, match="XAIKIT_IMAGENET points to .*gone"): ImageNetFolder()
    monkeypatch.setenv('XAIKIT_IMAGENET', str(d))
    assert len(ImageNetFolder(classes=['circle', 'square'])) == 3
    with pytest.raises(FileNotFoundError, match="`annotations`: no folder"): ImageNetFolder(d, annotations='xml')
    (tmp_path / 'e' / 'images').mkdir(parents=True); (tmp_path / 'e' / 'annotations').mkdir()
    with pytest.raises(FileNotFoundError, match="no images"): ImageNetFolder(tmp_path / 'e')
    with pytest.raises(ValueError, match="`on_error`"): ImageNetFolder(d, on_error='ignore')
    with pytest.raises(ValueError, match="class 'circle' is not in the class index"): ImageNetFolder(d)[0]
    f = ImageNetFolder(d, classes=['circle', 'square'], load_images=True)
    (d / 'annotations' / 'img_0.xml').write_text('<annotation><object>')                      # malformed XML
    with pytest.raises(ValueError, match="img_0.xml is not valid XML"): f[0]
    (d / 'annotations' / 'img_1.xml').unlink()                                               # missing annotation
    with pytest.raises(FileNotFoundError, match="img_1.xml"): f[1]
    (d / 'images' / 'img_2.png').write_bytes(b'garbage')                                     # undecodable image
    with pytest.raises(ValueError, match="could not decode image .*img_2.png"): f[2]
    with pytest.raises(ValueError, match="img_0.xml"): list(f)
    g = ImageNetFolder(d, classes=['circle', 'square'], load_images=True, on_error='skip')
    assert list(g) == [] and g.n_skipped == 3 and [p.name for p, _ in g.skipped] == ['img_0.png', 'img_1.png', 'img_2.png']
    assert ImageNetFolder(d, classes=['circle', 'square'], on_error='skip')[2].path.name == 'img_2.png'  # not decoded: no error


def test_annotation_errors(tmp_path):
    def xml(body): (tmp_path / 'a.xml').write_text(f'<annotation>{body}</annotation>'); return tmp_path / 'a.xml'
    with pytest.raises(ValueError, match="a.xml: object 0 has no <name>"): parse_annotation(xml('<object><bndbox/></object>'))
    with pytest.raises(ValueError, match="has no <bndbox>"): parse_annotation(xml('<object><name>x</name></object>'))
    with pytest.raises(ValueError, match="needs numeric"): parse_annotation(xml('<object><name>x</name><bndbox><xmin>a</xmin></bndbox></object>'))
    bad = '<object><name>x</name><bndbox><xmin>5</xmin><ymin>0</ymin><xmax>1</xmax><ymax>3</ymax></bndbox></object>'
    with pytest.raises(ValueError, match="xmin <= xmax"): parse_annotation(xml(bad))
    with pytest.raises(ValueError, match="<size>"): parse_annotation(xml('<size><width>w</width></size>'))
    (tmp_path / 'b.xml').write_text('<root/>')
    with pytest.raises(ValueError, match="expected <annotation>"): parse_annotation(tmp_path / 'b.xml')
    with pytest.raises(FileNotFoundError, match="c.xml"): parse_annotation(tmp_path / 'c.xml')


def test_size_mismatch(tmp_path):
    d = _folder(tmp_path)
    write_annotation(d / 'annotations' / 'img_0.xml', [[0, 0, 5, 5]], ['circle'], (99, 30))
    with pytest.raises(ValueError, match="img_0.png is .* but its annotation"): ImageNetFolder(d, classes=['circle', 'square'], load_images=True)[0]


def test_localization_generic_and_errors(tmp_path):
    d = _folder(tmp_path / 'f', n=2)
    m = tmp_path / 'meta'; m.mkdir()
    (m / 'localization.txt').write_text('val/img_0.png,1,2,10,12\nval/img_0.png,0,0,5,5\nval/img_1.png,3,3,4,4\nval/img_9.png,1,1,2,2\n')
    (m / 'class_labels.txt').write_text('val/img_0.png,1\nval/img_1.png,0\nval/img_9.png,1')
    (m / 'image_sizes.txt').write_text('val/img_0.png,30,20\nval/img_1.png,30,20\nval/img_9.png,30,20\n')
    w = ImageNetFolder.from_localization(m, images_root=d / 'images', classes=['circle', 'square'], load_images=True)
    assert (len(w), w.n_missing) == (2, 1) and [r.label for r in w] == [1, 0] and w[0].size == (20, 30)
    np.testing.assert_array_equal(w[0].boxes, [[1, 2, 10, 12], [0, 0, 5, 5]])
    assert len(ImageNetFolder.from_localization(m, classes=['circle', 'square'])) == 3
    with pytest.raises(FileNotFoundError, match="absent from"):
        ImageNetFolder.from_localization(m, images_root=d / 'images', classes=['circle', 'square'], missing='error')
    with pytest.raises(FileNotFoundError, match="none of the 3 images"):
        ImageNetFolder.from_localization(m, images_root=tmp_path, classes=['circle', 'square'])
    with pytest.raises(ValueError, match="outside the 1 classes"): ImageNetFolder.from_localization(m, classes=['circle'])
    (m / 'localization.txt').write_text('val/img_0.png,1,2,10,12\nval/img_1.png,3,x,4,4\n')
    with pytest.raises(ValueError, match="localization.txt, line 2"): ImageNetFolder.from_localization(m, classes=['circle', 'square'])
    (m / 'class_labels.txt').unlink()
    with pytest.raises(FileNotFoundError, match="class_labels.txt"): ImageNetFolder.from_localization(m)
    with pytest.raises(FileNotFoundError, match="no localization.txt"): ImageNetFolder.from_localization(tmp_path / 'f')


def _coco(d: Path, H=40, W=60):
    from pycocotools import mask as mu
    (d / 'imgs').mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / 'imgs' / 'a.png')
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / 'imgs' / 'b.png')
    sq = np.zeros((H, W), np.uint8); sq[5:15, 10:30] = 1
    rle = mu.encode(np.asfortranarray(sq)); rle['counts'] = rle['counts'].decode()
    js = dict(images=[dict(id=1, file_name='a.png', height=H, width=W), dict(id=2, file_name='b.png', height=H, width=W)],
              categories=[dict(id=5, name='ring'), dict(id=2, name='bar')],
              annotations=[dict(id=10, image_id=1, category_id=5, bbox=[10, 5, 20, 10], iscrowd=0, segmentation=rle),
                           dict(id=11, image_id=1, category_id=5, bbox=[40, 20, 10, 10], iscrowd=1,
                                segmentation=dict(counts=[40 * 40 + 20] + [10, 30] * 9 + [10, W * H - (40 * 40 + 20) - 9 * 40 - 10], size=[H, W])),
                           dict(id=12, image_id=1, category_id=2, bbox=[0, 30, 10, 5], iscrowd=0, segmentation=[[0, 30, 10, 30, 10, 35, 0, 35]])])
    (d / 'ann.json').write_text(json.dumps(js))
    return d, sq.astype(bool)


def test_coco_generic_json(tmp_path):
    d, sq = _coco(tmp_path)
    g = CocoDataset(ann_file=d / 'ann.json', images=d / 'imgs', load_images=True)
    assert (g.cat_ids, g.class_names, len(g)) == ([2, 5], ['bar', 'ring'], 2)
    r = g[0]
    assert r.labels.tolist() == [1, 1, 0] and r.category_ids.tolist() == [5, 5, 2] and r.iscrowd.tolist() == [False, True, False]
    np.testing.assert_array_equal(r.boxes[0], [10, 5, 30, 15])
    assert r.mask_labels.tolist() == [0, 1] and r.mask_crowd.tolist() == [False, True] and r.class_names == ['bar', 'ring']
    crowd = np.zeros_like(sq); crowd[20:30, 40:50] = True
    np.testing.assert_array_equal(r.mask(1), sq | crowd)
    ys, xs = np.nonzero(r.mask(0))
    assert np.abs(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) - [0, 30, 10, 35]).max() <= 1
    e = g[1]                                                              # an image without annotations
    assert e.boxes.shape == (0, 4) and e.masks.shape == (0, 40, 60) and not e.mask(0).any()
    nc = CocoDataset(ann_file=d / 'ann.json', images=d / 'imgs', crowd=False, masks=False)[0]
    assert nc.masks is None and len(nc.boxes) == 2
    mm = map_mask(ModelAdapter(nn.Identity(), input_size=20, resize=20), r.masks)
    assert mm.shape == (2, 20, 20) and mm.dtype == bool


def test_coco_errors(tmp_path, monkeypatch):
    d, _ = _coco(tmp_path)
    with pytest.raises(FileNotFoundError, match="pass `images=`"): CocoDataset(ann_file=d / 'ann.json')
    with pytest.raises(FileNotFoundError, match="missing.json"): CocoDataset(ann_file=d / 'missing.json', images=d / 'imgs')
    (d / 'bad.json').write_text('{"images": [1,')
    with pytest.raises(ValueError, match="bad.json is not valid JSON"): CocoDataset(ann_file=d / 'bad.json', images=d / 'imgs')
    (d / 'nocat.json').write_text('{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match="no 'categories' list"): CocoDataset(ann_file=d / 'nocat.json', images=d / 'imgs')
    (d / 'empty.json').write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(ValueError, match="lists no images"): CocoDataset(ann_file=d / 'empty.json', images=d / 'imgs')
    monkeypatch.setenv('XAIKIT_COCO', str(d))
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"): CocoDataset()
    js = json.loads((d / 'ann.json').read_text())
    js['annotations'][1]['segmentation']['counts'][-1] += 7                 # a malformed RLE: refused, not decoded
    (d / 'rle.json').write_text(json.dumps(js))
    with pytest.raises(ValueError, match="annotation 11 of image 1: uncompressed RLE counts sum to 2407"): CocoDataset(ann_file=d / 'rle.json', images=d / 'imgs')[0]
    js['annotations'][1]['segmentation']['size'] = [60, 40]
    (d / 'rle.json').write_text(json.dumps(js))
    with pytest.raises(ValueError, match=r"RLE size \[60, 40\] differs"): CocoDataset(ann_file=d / 'rle.json', images=d / 'imgs')[0]
    js['annotations'][1]['segmentation'] = []                              # no polygon: an empty mask
    (d / 'rle.json').write_text(json.dumps(js))
    assert CocoDataset(ann_file=d / 'rle.json', images=d / 'imgs')[0].mask(1).sum() == 200
    del js['annotations'][1]['segmentation']
    (d / 'rle.json').write_text(json.dumps(js))
    with pytest.raises(ValueError, match="no segmentation; pass masks=False"): CocoDataset(ann_file=d / 'rle.json', images=d / 'imgs')[0]
    assert len(CocoDataset(ann_file=d / 'rle.json', images=d / 'imgs', masks=False)[0].boxes) == 3
    (d / 'imgs' / 'b.png').unlink()
    (d / 'imgs' / 'a.png').write_bytes(b'junk')
    g = CocoDataset(ann_file=d / 'ann.json', images=d / 'imgs', load_images=True)
    with pytest.raises(ValueError, match="a.png"): g[0]
    with pytest.raises(FileNotFoundError, match=r"b.png \(id 2\)"): g[1]
    s = CocoDataset(ann_file=d / 'ann.json', images=d / 'imgs', load_images=True, on_error='skip')
    assert list(s) == [] and s.n_skipped == 2


def test_read_image_and_classes(tmp_path):
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / 'g.png')
    assert read_image(tmp_path / 'g.png').shape == (4, 6, 3)
    (tmp_path / 't.jpg').write_bytes(b'\xff\xd8\xff\xe0' + b'\0' * 20)                 # a truncated JPEG
    with pytest.raises(ValueError, match="t.jpg"): read_image(tmp_path / 't.jpg')
    names, wnids = class_index()
    assert (len(names), wnids[0], wnids[-1]) == (1000, 'n01440764', 'n15075141')
    (tmp_path / 'ci.json').write_text('{"0": ["a", "b"]')
    with pytest.raises(ValueError, match="ci.json is not valid JSON"): class_index(tmp_path / 'ci.json')
    with pytest.raises(FileNotFoundError, match="nope.json"): class_index(tmp_path / 'nope.json')
