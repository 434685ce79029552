#!/usr/bin/env python
"""MoXI benchmark (CPU or GPU): writes benchmarks/moxi_<device>.md and .json. Every ratio is measured within one run.

(a) Early stop: forwards and seconds per image of MoXI's insertion search with and without early stop (patience 3), on
    held-out images of the synthetic benchmark that the model classifies correctly (synthetic CNN in pixel mode and
    synthetic ViT in token mode, 8 x 8 grid, N = 64); the early-stopped prefix must equal the full greedy order.
(b) Token dropping vs pixel masking: the full greedy search (no early stop, N(N+1)/2 coalitions of sizes 1..N) on the
    synthetic ViT, `mode='tokens'` against `mode='pixels'`; the time ratio.
(c) Throughput: MoXI's forwards per second (full greedy, EfficientNet-Lite0, a 4 x 4 grid, pixel mode) against the model's
    own throughput on the same number of pre-built images in batches of the engine's batch size.
Usage: python benchmarks/bench_moxi.py [--images 4] [--threads 1]
"""
import argparse, json, platform, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xaikit.core import sample_image                                  # noqa: E402
from xaikit.explainers.moxi import MoXI                                # noqa: E402
from xaikit.models import efficientnet_lite0                           # noqa: E402
from xaikit.perturb import grid_coalitions, make_baseline              # noqa: E402
from xaikit.synthetic import make_dataset, HOLDOUT_SEED               # noqa: E402
from xaikit.synthetic_models import synthetic_cnn, synthetic_vit      # noqa: E402


def sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()


def bench_early_stop(models, n_images:int)->list:
    "(a) Per model: mean forwards and seconds per image with and without early stop, and whether the prefixes agree."
    ds = make_dataset(8 * n_images, seed=HOLDOUT_SEED)
    out = []
    for m in models:
        with torch.inference_mode(): pred = m(m.normalize(ds.x01())).argmax(-1).cpu()
        idx = [i for i in range(len(ds)) if int(pred[i]) == int(ds.labels[i]) and int(ds.labels[i]) != 0][:n_images]
        row = dict(model=m.name, mode=None, images=len(idx), full_forwards=[], fast_forwards=[], full_s=[], fast_s=[],
                   stop_step=[], prefix_equal=[])
        for i in idx:
            y = int(ds.labels[i])
            full = MoXI(m, grid=8, early_stop=False, k=0).explain(ds.x01(i), targets=y)
            fast = MoXI(m, grid=8, patience=3, k=0).explain(ds.x01(i), targets=y)
            s = int(fast.extras['stop_step'][0])
            row['mode'] = fast.extras['mode']
            row['full_forwards'].append(full.n_forward); row['fast_forwards'].append(fast.n_forward)
            row['full_s'].append(full.seconds); row['fast_s'].append(fast.seconds); row['stop_step'].append(s)
            row['prefix_equal'].append(bool(torch.equal(full.extras['order'][0, :s], fast.extras['order'][0, :s])))
        mean = lambda v: sum(v) / len(v)
        row.update(mean_full_forwards=mean(row['full_forwards']), mean_fast_forwards=mean(row['fast_forwards']),
                   mean_full_s=round(mean(row['full_s']), 3), mean_fast_s=round(mean(row['fast_s']), 3),
                   forwards_ratio=round(mean(row['full_forwards']) / mean(row['fast_forwards']), 2),
                   seconds_ratio=round(mean(row['full_s']) / mean(row['fast_s']), 2), all_prefixes_equal=all(row['prefix_equal']))
        out.append(row)
    return out


def bench_tokens(vit)->dict:
    "(b) The full greedy search on the synthetic ViT with token dropping and with pixel masking."
    ds = make_dataset(1, seed=HOLDOUT_SEED, labels=[9])
    res = {}
    for mode in ('tokens', 'pixels'):
        e = MoXI(vit, early_stop=False, k=0, mode=mode).explain(ds.x01(0), targets=9)
        res[mode] = dict(seconds=round(e.seconds, 3), forwards=e.n_forward)
    return dict(model=vit.name, grid=list(vit.grid), tokens_s=res['tokens']['seconds'], pixels_s=res['pixels']['seconds'],
                forwards=res['tokens']['forwards'], ratio=round(res['tokens']['seconds'] / res['pixels']['seconds'], 3))


def bench_throughput(grid:int=4)->dict:
    "(c) MoXI's forwards/s (full greedy, pixel mode) against the model on the same number of pre-built images."
    net = efficientnet_lite0()
    if torch.cuda.is_available(): net.model.cuda()
    x01 = net.to_input(sample_image('chelsea'))
    ex = MoXI(net, grid=grid, early_stop=False, k=0)
    ex.explain(x01)                                                  # warm-up
    sync(); e = ex.explain(x01)
    n, bs = e.n_forward, 8 if not torch.cuda.is_available() else 64
    N = grid * grid
    Z = torch.rand(n, N, generator=torch.Generator().manual_seed(0)) < 0.5
    masks = grid_coalitions(Z, grid, 224).masks(torch.arange(n), net.device)
    xn, bn = net.normalize(x01[None]), make_baseline(net, x01, 'zero')
    pre = [(xn * mk[:, None] + bn * (1 - mk[:, None])).contiguous(memory_format=torch.channels_last) for mk in masks.split(bs)]
    with torch.inference_mode():
        net(pre[0]); sync(); t0 = time.perf_counter()
        for xb in pre: net(xb)
        sync(); t_plain = time.perf_counter() - t0
    return dict(model=net.name, grid=[grid, grid], forwards=n, moxi_s=round(e.seconds, 3), moxi_fps=round(n / e.seconds, 2),
                plain_s=round(t_plain, 3), plain_fps=round(n / t_plain, 2), batch_size=bs,
                ratio=round((n / e.seconds) / (n / t_plain), 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--images', type=int, default=4)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    cpu = f"CPU x{torch.get_num_threads()} threads ({platform.processor() or platform.machine()})"
    res = {'device': torch.cuda.get_device_name() if dev == 'cuda' else cpu, 'torch': torch.__version__}
    scnn, svit = synthetic_cnn(), synthetic_vit()
    if dev == 'cuda': scnn.model.cuda(); svit.model.cuda()
    res['early_stop'] = bench_early_stop([scnn, svit], a.images)
    res['token_dropping'] = bench_tokens(svit)
    res['throughput'] = bench_throughput()
    tag = 'gpu' if dev == 'cuda' else 'cpu'
    out = Path(__file__).with_name(f'moxi_{tag}')
    out.with_suffix('.json').write_text(json.dumps(res, indent=1))
    t, th = res['token_dropping'], res['throughput']
    rows = '\n'.join(f"| early stop | {r['model']} ({r['mode']}), 8 x 8 grid, {r['images']} images | full greedy: {r['mean_full_forwards']:.0f} "
                     f"forwards, {r['mean_full_s']} s | patience 3: {r['mean_fast_forwards']:.0f} forwards, {r['mean_fast_s']} s "
                     f"(prefix identical: {r['all_prefixes_equal']}) | {r['forwards_ratio']}x fewer forwards, {r['seconds_ratio']}x faster | >= 5x |"
                     for r in res['early_stop'])
    md = f"""# MoXI benchmark ({res['device']}, torch {res['torch']})

| benchmark | setting | baseline | xaikit | ratio | target |
|---|---|---|---|---|---|
{rows}
| token dropping | {t['model']}, full greedy ({t['forwards']} forwards) | pixel masking: {t['pixels_s']} s | token dropping: {t['tokens_s']} s | {t['ratio']} | <= 0.6 |
| throughput | {th['model']}, full greedy on a {th['grid'][0]} x {th['grid'][1]} grid ({th['forwards']} forwards) | the model on pre-built batches of {th['batch_size']}: {th['plain_fps']} img/s | MoXI: {th['moxi_fps']} forwards/s | {th['ratio']} | >= 0.9 |

Produced by `benchmarks/bench_moxi.py` (one run each; the original's greedy search costs N^2 = 4096 forwards per image on
an 8 x 8 grid). The CPU numbers were measured on a shared 2-core machine under heavy load from other jobs, so absolute
times are slow and noisy; the ratios compare runs made one after the other in the same process.
"""
    out.with_suffix('.md').write_text(md)
    print(md)


if __name__ == '__main__':
    main()
