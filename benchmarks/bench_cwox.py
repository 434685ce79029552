"""CWOX-2s evaluation (CPU or GPU): writes benchmarks/cwox_<device>.json and .md.

(a) Contrastive faithfulness (CWOX's CAUC, lower is better, and CDROP, higher is better; `xaikit.metrics` implements the
    original's definition) of every class-level CWOX map against the base class map it is built from, with the class as
    target and its cluster mates as C'. EfficientNet-Lite0 (real weights), the published ResNet50 label tree cut at level
    0, on cello_guitar.jpg and on each of the 35 ImageNet validation images in $XAIKIT_ASSETS whose top-label set splits
    into >= 2 clusters. One row per (base, image, class); results are appended as they come (a rerun resumes).
(b) Synthetic tags (`tag_dot` vs `tag_bar`, which differ only in the small mark): on synthetic-CNN test images of the two
    tags with a visible mark, how often the class-level map (true tag vs the other) and the base class map put their
    maximum on the mark (its box grown by `--margin` pixels).
Usage: .venv/bin/python benchmarks/bench_cwox.py [--bases gradcam rise] [--step 16] [--rise-masks 5000] [--tags 60]
"""
import argparse, json, platform, time
from pathlib import Path

import numpy as np
import torch

from xaikit.core import assets_dir
from xaikit.explainers.cwox import CWOX, class_map_faithfulness
from xaikit.models import efficientnet_lite0, imagenet_subset


def faithfulness_rows(cw, image, name, **kw)->list:
    "CAUC/CDROP of each class-level map of `cw` on `image` and of its base class map."
    e = cw.explain(image)
    rows = [dict(image=name, n_clusters=len(e.extras['clusters']), n_forward=e.n_forward, seconds=e.seconds,
                 **{k: v for k, v in r.items() if k != 'target'}) for r in class_map_faithfulness(e, cw.model, **kw)]
    return rows, e


def summary(rows, base)->dict:
    rs = [r for r in rows if r['base'] == base and r.get('cls') is not None and r['cwox_cauc'] is not None and r['base_cauc'] is not None]
    if not rs: return {}
    f = lambda k: float(np.mean([r[k] for r in rs]))
    return dict(base=base, images=len({r['image'] for r in rows if r['base'] == base and r.get('qualifies')}),
                images_with_class_maps=len({r['image'] for r in rs}), class_maps=len(rs),
                cauc_cwox=f('cwox_cauc'), cauc_base=f('base_cauc'), cdrop_cwox=f('cwox_cdrop'), cdrop_base=f('base_cdrop'),
                cauc_wins=float(np.mean([r['cwox_cauc'] < r['base_cauc'] for r in rs])),
                cdrop_wins=float(np.mean([r['cwox_cdrop'] > r['base_cdrop'] for r in rs])),
                cdrop_diff_median=float(np.median([r['cwox_cdrop'] - r['base_cdrop'] for r in rs])),
                n_delta_cwox=float(np.median([r['cwox_n_delta'] for r in rs])), n_delta_base=float(np.median([r['base_n_delta'] for r in rs])))


def tags(n, base, margin, params)->dict:
    from xaikit.synthetic import make_dataset, CONFUSION_GROUPS
    from xaikit.synthetic_models import synthetic_cnn
    m = synthetic_cnn()
    group = CONFUSION_GROUPS['tags']
    ds = make_dataset(n, labels=[group[i % 2] for i in range(n)], seed=123)
    cw = CWOX(m, base=base, clusters=[group], **params)
    hits, used = {'cwox': 0, 'base': 0}, 0
    for i in range(n):
        a = ds.annotations[i]
        if not a.get('mark_visible') or a['detail'] is None: continue
        x0, y0, x1, y1 = a['detail']
        e = cw.explain(ds.images[i], targets=[a["label"]])
        bm = e.extras['base_maps']
        base_map = bm['class_maps'][bm['classes'].index(a['label'])]
        used += 1
        for which, mp in (('cwox', e.maps[0]), ('base', base_map)):
            y, x = divmod(int(mp.argmax()), mp.shape[-1])
            hits[which] += (x0 - margin <= x < x1 + margin) and (y0 - margin <= y < y1 + margin)
    return dict(base=base, images=used, on_mark_cwox=hits['cwox'] / max(used, 1), on_mark_base=hits['base'] / max(used, 1),
                margin=margin, params=params)


def write_md(res, path):
    L = [f"# CWOX-2s evaluation ({res['device']}, {res['machine']})", '', res['note'], '',
         '| base | qualifying images | images with class maps | class maps | CAUC cwox | CAUC base | CDROP cwox | CDROP base '
         '| CAUC cwox < base | CDROP cwox > base | median CDROP cwox - base | median salient pixels cwox / base |', '|' + '---|' * 12]
    for s in res['summary']:
        if s: L.append(f"| {s['base']} | {s['images']} | {s['images_with_class_maps']} | {s['class_maps']} | {s['cauc_cwox']:.4f} "
                       f"| {s['cauc_base']:.4f} | {s['cdrop_cwox']:.4f} | {s['cdrop_base']:.4f} "
                       f"| {s['cauc_wins']:.0%} | {s['cdrop_wins']:.0%} | {s['cdrop_diff_median']:+.4f} "
                       f"| {s['n_delta_cwox']:.0f} / {s['n_delta_base']:.0f} |")
    if res.get('tags'):
        L += ['', '| tags base | images | max on the mark: cwox | max on the mark: base |', '|---|---|---|---|']
        for t in res['tags']: L.append(f"| {t['base']} | {t['images']} | {t['on_mark_cwox']:.0%} | {t['on_mark_base']:.0%} |")
    Path(path).write_text('\n'.join(L) + '\n')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bases', nargs='*', default=['gradcam', 'rise', 'mwp', 'lime'])
    ap.add_argument('--step', type=int, default=16)
    ap.add_argument('--rise-masks', type=int, default=5000)
    ap.add_argument('--lime-samples', type=int, default=2000)
    ap.add_argument('--tags', type=int, default=60)
    ap.add_argument('--tag-bases', nargs='*', default=['gradcam', 'rise'])
    ap.add_argument('--margin', type=int, default=2)
    ap.add_argument('--tag-masks', type=int, default=1000)
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    out = Path(a.out or Path(__file__).parent / f'cwox_{dev}.json')
    res = json.loads(out.read_text()) if out.exists() else dict(rows=[], tags=[])
    res.update(device=dev, machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
               args=vars(a), note=(f"EfficientNet-Lite0, ResNet50.json tree (cut 0), step {a.step}, RISE {a.rise_masks} masks, "
                                   f"LIME {a.lime_samples} samples; means over class-level maps where both maps are not constant; "
                                   f"salient pixels: n_delta, the pixels above half the map's range, where the curve stops."))
    net = efficientnet_lite0().to(dev)
    A = assets_dir()
    tree = A / 'cwox' / 'ResNet50.json'
    imgs = [(A / 'cwox' / 'eval_image' / 'cello_guitar.jpg', None)] + imagenet_subset()
    extra = dict(rise=dict(n_masks=a.rise_masks, batch_size=a.batch_size), lime=dict(n_samples=a.lime_samples, batch_size=a.batch_size))
    done = {(r['base'], r['image']) for r in res['rows']}
    for base in a.bases:
        cw = CWOX(net, base=base, tree=tree, cluster_params=extra.get(base))
        for p, _ in imgs:
            if (base, p.name) in done: continue
            with torch.inference_mode(): ctx = cw.label_clusters(net(net.preprocess(p)))
            if len(ctx) < 2: res['rows'].append(dict(base=base, image=p.name, qualifies=False)); continue
            t0 = time.perf_counter()
            rows, e = faithfulness_rows(cw, p, p.name, step=a.step, batch_size=a.batch_size)
            if not rows: rows = [dict(image=p.name, cls=None)]
            for r in rows: r.update(base=base, qualifies=True, wall=time.perf_counter() - t0)
            res['rows'] += rows
            print(base, p.name, ctx, [(r.get('cls'), r.get('cwox_cauc'), r.get('base_cauc'), r.get('cwox_cdrop'), r.get('base_cdrop'))
                                      for r in rows], f"{time.perf_counter() - t0:.0f}s", flush=True)
            res['summary'] = [summary(res['rows'], b) for b in dict.fromkeys(r['base'] for r in res['rows'])]
            out.write_text(json.dumps(res, indent=1)); write_md(res, out.with_suffix('.md'))
    if a.tags:
        res['tags'] = [t for t in res.get('tags', []) if t['base'] not in a.tag_bases]
        for base in a.tag_bases:
            params = dict(cluster_params=dict(n_masks=a.tag_masks, s=8, batch_size=a.batch_size)) if base == 'rise' else {}
            t0 = time.perf_counter()
            res['tags'].append(dict(tags(a.tags, base, a.margin, params), seconds=time.perf_counter() - t0))
            print(res['tags'][-1], flush=True)
    res['summary'] = [summary(res['rows'], b) for b in dict.fromkeys(r['base'] for r in res['rows'])]
    out.write_text(json.dumps(res, indent=1)); write_md(res, out.with_suffix('.md'))


if __name__ == '__main__': main()
