#!/usr/bin/env python
"""MoXI's insertion/deletion comparison on the real ImageNet images of the assets, with EfficientNet-Lite0 (pixel mode).

For every assets image the model classifies correctly (the seed keeps only those): MoXI's insertion and deletion orders
(`curve='both'`), self-Shapley's orders (MoXI's first greedy step scores every v({i}) and v(N \\ {i}), which are exactly
self-Shapley's values: tested in tests/test_moxi.py) and Grad-CAM's map ranked by its patch means, each evaluated by
`insertion_deletion` at every patch (`order=` for the orders; substrate 0 in normalised space, MoXI's own baseline),
as probability and as top-1 (`rescore`, no extra forwards). Results are appended per image to the JSON file, so an
interrupted run resumes where it stopped.

Usage: XAIKIT_ASSETS=... python benchmarks/moxi_imagenet.py [--grid 7] [--out benchmarks/moxi_imagenet_cpu.json] [--reverse]
(two workers: one plain, one with `--reverse --out benchmarks/moxi_imagenet_cpu_b.json`; the notebook merges the files)
"""
import argparse, json, os, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xaikit.explainers import get_explainer                  # noqa: E402
from xaikit.explainers.moxi import MoXI                       # noqa: E402
from xaikit.metrics.faithfulness import insertion_deletion    # noqa: E402
from xaikit.models import efficientnet_lite0, imagenet_subset # noqa: E402


def curves(net, x01, label, grid, order=None, saliency=None, which='both'):
    "Probability and top-1 curves (insertion and/or deletion) at every patch, substrate 0 for both."
    H = x01.shape[-1]
    c = insertion_deletion(net, x01, saliency, target=label, n_steps=grid * grid, patch=H // grid, order=order, which=which,
                           kind='prob', insertion_substrate='zero', deletion_substrate='zero')
    t = c.rescore('top1')
    out = {}
    for w, a, b in (('ins', c.insertion, t.insertion), ('del', c.deletion, t.deletion)):
        if a is not None: out[f'{w}_prob'], out[f'{w}_top1'] = a.tolist(), b.tolist()
    return out


def run(out:Path, grid:int=7, patience:int=1, limit:int|None=None, reverse:bool=False):
    "Process the assets images in order, appending one record per image to `out` (skipping those already there)."
    net = efficientnet_lite0()
    done = json.loads(out.read_text()) if out.is_file() else dict(grid=grid, patience=patience, threads=torch.get_num_threads(),
                                                                   images={})
    items = imagenet_subset()[:limit]
    if reverse: items = items[::-1]                # a second worker takes the list from the end
    for path, label in items:
        key = path.name
        if key in done['images']: continue
        t0 = time.perf_counter()
        x01 = net.to_input(path)
        with torch.inference_mode(): top = int(net(net.normalize(x01[None])).argmax())
        rec = dict(label=label, top1=top, correct=top == label)
        if top == label:
            e = MoXI(net, grid=grid, curve='both', patience=patience, k=0).explain(x01, targets=label)
            gc = get_explainer('gradcam')(net).explain(x01, targets=label)
            ins_self = e.extras['self_values'][0].argsort(descending=True, stable=True)
            del_self = e.extras['deletion']['self'][0].argsort(stable=True)
            rec.update(moxi_forwards=e.n_forward, moxi_seconds=e.seconds, stop_ins=int(e.extras['stop_step'][0]),
                       stop_del=int(e.extras['deletion']['stop_step'][0]), count_ins=int(e.extras['count'][0]),
                       count_del=int(e.extras['deletion']['count'][0]))
            rec['moxi'] = {**curves(net, x01, label, grid, order=e.extras['order'][0], which='insertion'),
                           **curves(net, x01, label, grid, order=e.extras['deletion']['order'][0], which='deletion')}
            rec['self_shapley'] = {**curves(net, x01, label, grid, order=ins_self, which='insertion'),
                                   **curves(net, x01, label, grid, order=del_self, which='deletion')}
            rec['gradcam'] = curves(net, x01, label, grid, saliency=gc.maps[0])
        rec['seconds'] = time.perf_counter() - t0
        done['images'][key] = rec
        out.write_text(json.dumps(done))
        print(f"{key}: correct={rec['correct']} {rec['seconds']:.0f} s", flush=True)
    return done


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--grid', type=int, default=7)
    ap.add_argument('--patience', type=int, default=1)
    ap.add_argument('--limit', type=int, default=None)
    ap.add_argument('--reverse', action='store_true')
    ap.add_argument('--out', default=str(Path(__file__).with_name('moxi_imagenet_cpu.json')))
    a = ap.parse_args()
    run(Path(a.out), a.grid, a.patience, a.limit, a.reverse)
