"""COSMAX cost benchmark (CPU or GPU): writes benchmarks/cosmax_<device>.md and .json.

One run of COSMAX with the original's setting (EfficientNet-Lite0, real weights, 224 px, 28 px windows: K = 64, the top-5
classes) against (a) the original's forward count, 1 + K^2 = 4,097 (every ordered pair, one class per run), and (b) the
model's own batched throughput: the same number of pre-built masked images pushed through the model at the same batch
size and memory format, with nothing else. Target: COSMAX forwards/s >= 0.9 x the model's throughput.
Usage: .venv/bin/python benchmarks/bench_cosmax.py [--window 28] [--batch 8] [--images 256]
"""
import argparse, json, platform, time
from pathlib import Path

import torch

from xaikit.core import sample_image
from xaikit.explainers.cosmax import COSMAX, pair_coalitions
from xaikit.models import efficientnet_lite0
from xaikit.perturb import make_baseline


def sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--window', type=int, default=28)
    ap.add_argument('--batch', type=int, default=None, help='images per forward (default: the engine default)')
    ap.add_argument('--images', type=int, default=256, help='pre-built images for the throughput baseline')
    a = ap.parse_args()
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    net = efficientnet_lite0(); net.model.to(dev)
    img = sample_image('chelsea')
    x01 = net.to_input(img)
    ex = COSMAX(net, window=a.window, batch_size=a.batch, progress=False)
    K = ex.n_windows
    bs = a.batch or (8 if dev == 'cpu' else 256)
    ex.batch_size = bs
    # (b) the model alone: pre-built masked images (the first pair masks), channels-last as the engine sends them
    co = pair_coalitions(ex._regions)
    n = min(a.images, len(co))
    xn, bn = net.normalize(x01[None]), make_baseline(net, x01, 'zero')
    pre = [(xn * mk[:, None] + bn * (1 - mk[:, None])).contiguous(memory_format=torch.channels_last)
           for mk in (co.masks(i, dev) for i in torch.arange(n).split(bs))]
    def plain():
        with torch.inference_mode():
            sync(); t0 = time.perf_counter()
            for xb in pre: net(xb)
            sync(); return time.perf_counter() - t0
    with torch.inference_mode(): net(pre[0])                               # warm-up
    if dev == 'cuda': ex.explain(img, targets=[281])                       # warm-up on GPU only (a CPU run is minutes)
    t_before = plain()                                                     # the model alone, before and after COSMAX,
    sync(); t0 = time.perf_counter()                                       # so that a change in the machine's load shows
    e = ex.explain(img)                                                    # targets=None: the top-5 classes
    sync(); t_cosmax = time.perf_counter() - t0
    t_after = plain()
    t_plain = (t_before + t_after) / 2
    del pre
    cpu = f"CPU x{torch.get_num_threads()} threads ({platform.processor() or platform.machine()})"
    res = dict(device=torch.cuda.get_device_name() if dev == 'cuda' else cpu, torch=torch.__version__, model=net.name,
               window=a.window, windows=K, targets=len(e), batch_size=bs,
               forwards=e.n_forward, forwards_formula=1 + K + K * (K - 1) // 2, original_forwards=1 + K * K,
               original_forwards_all_targets=len(e) * (1 + K * K),
               seconds=round(t_cosmax, 3), forwards_per_s=round(e.n_forward / t_cosmax, 2),
               model_images=n, model_seconds=round(t_plain, 3), model_images_per_s=round(n / t_plain, 2),
               model_images_per_s_before=round(n / t_before, 2), model_images_per_s_after=round(n / t_after, 2))
    res['throughput_ratio'] = round(res['forwards_per_s'] / res['model_images_per_s'], 3)
    tag = 'gpu' if dev == 'cuda' else 'cpu'
    out = Path(__file__).with_name(f'cosmax_{tag}')
    out.with_suffix('.json').write_text(json.dumps(res, indent=1))
    r = res
    md = f"""# COSMAX cost benchmark ({r['device']}, torch {r['torch']})

{r['model']}, 224 px, window {r['window']} px: K = {r['windows']} windows, the top-{r['targets']} classes, batch {r['batch_size']}.

| quantity | original (Allenator/cosmax) | xaikit | ratio | target |
|---|---|---|---|---|
| forwards, one class | 1 + K^2 = {r['original_forwards']} | 1 + K + K(K-1)/2 = {r['forwards']} | {r['forwards'] / r['original_forwards']:.3f} | 0.5 |
| forwards, top-{r['targets']} classes | {r['targets']} x {r['original_forwards']} = {r['original_forwards_all_targets']} | {r['forwards']} (shared) | {r['forwards'] / r['original_forwards_all_targets']:.3f} | |
| seconds | | {r['seconds']} s | | |
| throughput | the model alone, {r['model_images']} pre-built images: {r['model_images_per_s']} img/s (before {r['model_images_per_s_before']}, after {r['model_images_per_s_after']}) | COSMAX: {r['forwards_per_s']} forwards/s | {r['throughput_ratio']} | >= 0.9 |

Produced by `benchmarks/bench_cosmax.py` (one run each; the machine may be shared, so the ratio, measured in the same
run, is the number to read, not the seconds).
"""
    out.with_suffix('.md').write_text(md)
    print(md)


if __name__ == '__main__':
    main()
