"""ViT-CX benchmark (CPU or GPU): writes benchmarks/vitcx_<device>.md and .json.

xaikit's `ViTCX` against the reference code's procedure, re-implemented here from the formulas of methods.md §3.3:
a softmax forward, a forward + backward to read the layer (the gradient is unused), all D maps upsampled to the input,
dense cosine similarities, one mask per cluster in a Python loop, all 2K masked and reference images materialised at once,
then forwards in batches. Both run the same model (a ViT-B/16-sized timm model with random weights: D = 768 maps on a
14 x 14 grid), the same layer (the last block's norm1), the same cut of the dendrogram (at most --clusters masks) and
the same forward batch size. Each variant runs in its own subprocess; peak memory is the rise of the process's peak
resident set (CPU; VmHWM reset after the model is loaded and warmed up) or of `torch.cuda.max_memory_allocated` (GPU).
Usage: PYTHONPATH=. .venv/bin/python benchmarks/bench_vitcx.py [--clusters 24] [--batch 8] [--device cpu]
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _rss(field:str)->int:
    "VmRSS / VmHWM of this process in bytes (Linux)."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'): return int(line.split()[1]) * 1024
    raise RuntimeError(f'no {field} in /proc/self/status')


def original(m, x01, layer:str, max_clusters:int, batch:int, threshold:float=0.1, std:float=0.1, seed:int=0):
    "The reference code's procedure (methods.md §3.3), with the same clustering cut as xaikit's; returns (map, K, forwards)."
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    x = m.normalize(x01[None])
    with torch.no_grad(): p = m(x).softmax(-1)[0]
    t = int(p.argmax())
    acts = {}
    h = m.layer(layer).register_forward_hook(lambda mod, i, o: acts.__setitem__('a', o))
    try:
        z = m(x.clone().requires_grad_())                    # forward + backward of z_t, as BaseCAM does
        z[0, t].backward()
    finally: h.remove()
    m.model.zero_grad(set_to_none=True)
    gh, gw = m.grid
    Fm = acts['a'].detach()[:, m.n_prefix:, :].transpose(1, 2).reshape(1, -1, gh, gw)
    Ft = F.interpolate(Fm, size=m.input_size, mode='bilinear', align_corners=False)[0]       # D x H x W
    lo, hi = Ft.flatten(1).amin(1)[:, None, None], Ft.flatten(1).amax(1)[:, None, None]
    Mm = (Ft - lo) / (hi - lo)                                                              # no epsilon, as the original
    V = Mm.flatten(1)
    sim = torch.nan_to_num((V @ V.T) / (V.norm(dim=1)[:, None] * V.norm(dim=1)[None]))
    dist = (1 - sim).clamp_min(0).double().numpy(); np.fill_diagonal(dist, 0)
    Z = linkage(squareform((dist + dist.T) / 2, checks=False), 'complete')
    lab = fcluster(Z, np.nextafter(threshold, 0), 'distance')
    if lab.max() > max_clusters: lab = fcluster(Z, max_clusters, 'maxclust')
    masks = []
    for k in np.unique(lab):                                  # one mask per cluster, in a loop
        s = Mm[torch.as_tensor(lab == k)].sum(0)
        masks.append((s - s.min()) / (s.max() - s.min()))
    M = torch.stack(masks)[:, None]                           # K x 1 x H x W
    K = len(M)
    eps = torch.randn(K, *x.shape[1:], generator=torch.Generator().manual_seed(seed)).to(x) * std
    imgs = torch.cat([x * M + eps * (1 - M), x + eps * (1 - M)])                            # all 2K images at once
    with torch.no_grad(): probs = torch.cat([m(imgs[i:i + batch]).softmax(-1) for i in range(0, 2 * K, batch)])
    s = probs[:K, t] - probs[K:, t] + p[t]
    E = (s[:, None, None] * M[:, 0]).sum(0) / M[:, 0].sum(0) / K
    return E, K, 2 + 2 * K


def run_one(variant:str, a)->dict:
    "One variant in this process: its time and peak memory."
    import timm
    from xaikit.core import sample_image
    from xaikit.models import ModelAdapter
    from xaikit.explainers.vitcx import ViTCX
    torch.set_num_threads(a.threads) if a.threads else None
    dev = torch.device(a.device)
    torch.manual_seed(0)
    m = ModelAdapter(timm.create_model(a.model, pretrained=False).eval(), name=f'{a.model} (random)')
    m.model.to(dev)
    x01 = m.to_input(sample_image('chelsea')).to(dev)
    layer = m.default_cam_layer()
    with torch.no_grad(): m(m.normalize(x01[None]).expand(a.batch, -1, -1, -1))        # warm-up at the forward batch size
    if dev.type == 'cuda': torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else: Path('/proc/self/clear_refs').write_text('5'); base = _rss('VmRSS')
    t0 = time.perf_counter()
    if variant == 'original':
        E, K, n = original(m, x01, layer, a.clusters, a.batch)
    else:
        e = ViTCX(m, layer=layer, max_clusters=a.clusters, batch_size=a.batch, progress=False).explain(x01)
        E, K, n = e.maps[0], e.extras['n_clusters'], e.n_forward
    if dev.type == 'cuda': torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if dev.type == 'cuda' else _rss('VmHWM')) - base
    assert torch.isfinite(E).all()
    return dict(variant=variant, seconds=round(sec, 2), peak_mb=round(peak / 2**20, 1), clusters=K, forwards=n,
                maps=int(m.model.embed_dim), layer=layer)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', default='vit_base_patch16_224')
    ap.add_argument('--clusters', type=int, default=24, help='at most this many masks K (both variants cut the same dendrogram)')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--one', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a))); return
    res = {}
    for v in ('original', 'xaikit'):
        cmd = [sys.executable, __file__, '--one', v] + sum([[f'--{k}', str(getattr(a, k))] for k in
                                                              ('model', 'clusters', 'batch', 'device', 'threads')], [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        res[v] = json.loads(out.strip().splitlines()[-1]); print(res[v], flush=True)
    o, x = res['original'], res['xaikit']
    dev = (torch.cuda.get_device_name(0) if a.device == 'cuda' else
           f"CPU x{torch.get_num_threads()} threads ({platform.machine()})")
    load = [round(v, 1) for v in os.getloadavg()]             # a shared machine: other jobs' load is part of the times
    out = dict(device=dev, torch=torch.__version__, load_average=load, model=f'{a.model} (random weights)', layer=o['layer'],
               maps=o['maps'],
               clusters=o['clusters'], batch_size=a.batch, original=o, xaikit=x,
               time_ratio=round(x['seconds'] / o['seconds'], 3), memory_ratio=round(x['peak_mb'] / o['peak_mb'], 3))
    tag = 'cuda' if a.device == 'cuda' else 'cpu'
    here = Path(__file__).parent
    (here / f'vitcx_{tag}.json').write_text(json.dumps(out, indent=1) + '\n')
    md = [f"# ViT-CX benchmark ({dev}, torch {torch.__version__})", '',
          f"{a.model} with random weights, layer `{o['layer']}` ({o['maps']} maps on 14 x 14), K = {o['clusters']} clusters, "
          f"forward batch {a.batch}; one run of each variant in its own process.", '',
          '| variant | forwards (+ backward) | seconds | peak memory rise (MB) |', '|---|---|---|---|',
          f"| reference code's procedure (re-implemented) | {o['forwards']} + 1 backward | {o['seconds']} | {o['peak_mb']} |",
          f"| xaikit `ViTCX` | {x['forwards']} | {x['seconds']} | {x['peak_mb']} |",
          f"| ratio xaikit / original | | {out['time_ratio']} | {out['memory_ratio']} |", '',
          'Produced by `benchmarks/bench_vitcx.py`. The original holds the D upsampled maps and all 2K images at once; xaikit '
          'computes the similarities from the low-resolution maps and makes one batch of images at a time. '
          f'Load average of the machine at the end of the run (1, 5, 15 min): {load}: times on a shared machine are indicative.']
    (here / f'vitcx_{tag}.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__':
    main()
