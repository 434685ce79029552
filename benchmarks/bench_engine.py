"""Engine benchmark (CPU or GPU): writes benchmarks/engine_<device>.md and .json.

(a) Engine overhead: `score` wall time / wall time of the same number of pre-built masked images pushed through the
    model at the same batch size (EfficientNet-Lite0, real weights, RISE masks).
(b) Token dropping vs grey-pixel masking on a ViT-S/16-sized timm model (random weights): MoXI-style insertion
    coalitions of sizes 1..N (N = 196) for several patch orderings; the time ratio tokens / pixels.
Usage: .venv/bin/python benchmarks/bench_engine.py [--masks 512] [--orderings 4] [--reps 2]
"""
import argparse, json, platform, time
from pathlib import Path

import torch
import timm

from xaikit.core import sample_image, make_generator
from xaikit.models import efficientnet_lite0, ModelAdapter
from xaikit.perturb import RISEMasks, grid_coalitions, make_baseline, score


def timed(fn, reps):
    best = float('inf')
    for _ in range(reps):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        t0 = time.perf_counter(); fn()
        if torch.cuda.is_available(): torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_overhead(a, dev)->dict:
    "(a) `score` against the same masked images pre-built and pushed through EfficientNet-Lite0 at the same batch size."
    net = efficientnet_lite0(); net.model.to(dev)
    x01 = net.to_input(sample_image('chelsea'))
    masks = RISEMasks(a.masks, 224, s=7, p=0.5, seed=0)
    xn, bn = net.normalize(x01[None]), make_baseline(net, x01, 'zero')
    # the same memory format as `score` uses for a conv net (channels-last), so the ratio is the overhead alone;
    # `prebuilt` lives only in this function, so its memory is freed before the ViT benchmark
    prebuilt = [(xn * mk[:, None] + bn * (1 - mk[:, None])).contiguous(memory_format=torch.channels_last)
                for mk in (masks.masks(i, dev) for i in torch.arange(a.masks).split(a.batch))]
    def plain():
        with torch.inference_mode():
            for xb in prebuilt: net(xb)
    engine = lambda: score(net, x01, masks, targets=[281], batch_size=a.batch, progress=False)
    plain(); engine()                                              # warm-up
    t_plain, t_engine = timed(plain, a.reps), timed(engine, a.reps)
    return dict(model='efficientnet_lite0', masks=a.masks, batch_size=a.batch, plain_s=round(t_plain, 3),
                score_s=round(t_engine, 3), ratio=round(t_engine / t_plain, 3), images_per_s=round(a.masks / t_engine, 1))


def bench_tokens(a, dev)->dict:
    "(b) Token dropping against grey-pixel masking on a ViT-S/16-sized model, MoXI-style insertion coalitions."
    torch.manual_seed(0)
    vit = ModelAdapter(timm.create_model('vit_small_patch16_224', pretrained=False).eval(), name='vit_small_patch16_224 (random)')
    vit.model.to(dev)
    N = vit.grid[0] * vit.grid[1]
    g = make_generator(0)
    orders = torch.stack([torch.randperm(N, generator=g) for _ in range(a.orderings)])          # (O, N) patch orderings
    ranks = torch.empty_like(orders).scatter_(1, orders, torch.arange(N).expand(a.orderings, N))
    Z = (ranks[:, None, :] < torch.arange(1, N + 1)[None, :, None]).reshape(-1, N)              # sizes 1..N per ordering
    co = grid_coalitions(Z, vit.grid, vit.input_size)
    img = sample_image('astronaut')
    tok = lambda: score(vit, img, co, targets=[0], batch_size=a.batch, mode='tokens', progress=False)
    pix = lambda: score(vit, img, co, targets=[0], batch_size=a.batch, mode='pixels', baseline='zero', progress=False)
    t_tok, t_pix = timed(tok, 1), timed(pix, 1)
    return dict(model=vit.name, coalitions=len(co), sizes=f"1..{N}", orderings=a.orderings, batch_size=a.batch,
                tokens_s=round(t_tok, 3), pixels_s=round(t_pix, 3), ratio=round(t_tok / t_pix, 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--masks', type=int, default=512)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--orderings', type=int, default=4)
    ap.add_argument('--reps', type=int, default=2)
    a = ap.parse_args()
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    cpu = f"CPU x{torch.get_num_threads()} threads ({platform.processor() or platform.machine()})"
    res = {'device': torch.cuda.get_device_name() if dev == 'cuda' else cpu, 'torch': torch.__version__}
    res['overhead'] = bench_overhead(a, dev)
    res['token_dropping'] = bench_tokens(a, dev)

    tag = 'gpu' if dev == 'cuda' else 'cpu'
    out = Path(__file__).with_name(f'engine_{tag}')
    out.with_suffix('.json').write_text(json.dumps(res, indent=1))
    o, t = res['overhead'], res['token_dropping']
    md = f"""# Engine benchmark ({res['device']}, torch {res['torch']})

| benchmark | setting | baseline | xaikit | ratio | target |
|---|---|---|---|---|---|
| engine overhead | {o['model']}, {o['masks']} RISE masks, batch {o['batch_size']} | pre-built images through the model: {o['plain_s']} s | `score`: {o['score_s']} s ({o['images_per_s']} img/s) | {o['ratio']} | <= 1.10 |
| token dropping | {t['model']}, {t['coalitions']} insertion coalitions (sizes {t['sizes']}, {t['orderings']} orderings), batch {t['batch_size']} | grey-pixel masking: {t['pixels_s']} s | token dropping: {t['tokens_s']} s | {t['ratio']} | <= 0.6 |

Produced by `benchmarks/bench_engine.py`; times are the best of {a.reps} runs for the overhead and one run for token dropping.
"""
    out.with_suffix('.md').write_text(md)
    print(md)


if __name__ == '__main__':
    main()
