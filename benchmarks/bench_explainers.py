"""Base explainers against Captum and pytorch-grad-cam at equal settings (CPU or GPU); writes
benchmarks/explainers_<device>.md and .json.

EfficientNet-Lite0 (real ImageNet weights), scikit-image's chelsea photo, its top-1 class, in one run on one machine:
- Grad-CAM (default layer `bn2`) vs pytorch_grad_cam.GradCAM on the same layer;
- Occlusion, 32 px window, stride 16 (169 windows), zero baseline in the normalised space, target probability,
  vs captum.attr.Occlusion;
- FeatureAblation: a 14 x 14 grid of 16 px cells (196 features) vs captum.attr.FeatureAblation with that feature mask
  (xaikit: `Occlusion(window=16, stride=16)`, the same ablations);
- LIME: 500 samples over the same quickshift superpixels, exponential kernel (width 0.25) on cosine distance, ridge
  (alpha 1), black baseline, vs captum.attr.Lime with the same kernel and sklearn Ridge; the segmentation time is counted
  on both sides. LIME draws its samples from different generators, so "equal output" is the Pearson r of the two
  superpixel weight vectors, not equality.
Captum runs at its default `perturbations_per_eval=1` (what its tutorials show) and at 8, the batch xaikit's engine
picks on CPU for 224 px. xaikit's edge at equal forwards comes from the engine: channels-last batches (oneDNN's fast
NHWC convolutions) and that cache-sized batch; Grad-CAM's from back-propagating only to the layer.
Times are medians of interleaved repetitions (each contender once per round), after a warm-up round.
Usage: .venv/bin/python benchmarks/bench_explainers.py [--reps 5] [--lime-samples 500]
"""
import argparse, json, platform, statistics, time
from pathlib import Path

import numpy as np
import torch

from captum.attr import FeatureAblation, Lime, Occlusion as CaptumOcclusion
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr._core.lime import get_exp_kernel_similarity_function
from pytorch_grad_cam import GradCAM as PgcGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from xaikit.core import sample_image
from xaikit.explainers import GradCAM, LIME, Occlusion
from xaikit.explainers.lime import segment
from xaikit.models import efficientnet_lite0


def sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()


def race(contenders:dict, reps:int)->dict:
    "Median seconds per contender over `reps` interleaved rounds (after one warm-up round); also the last outputs."
    times, out = {k: [] for k in contenders}, {}
    for r in range(reps + 1):
        for k, fn in contenders.items():
            sync(); t0 = time.perf_counter(); out[k] = fn(); sync()
            if r: times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, out


def pearson(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--reps', type=int, default=5, help='rounds for Grad-CAM (perturbation methods: max(1, reps // 5))')
    ap.add_argument('--lime-samples', type=int, default=500)
    a = ap.parse_args()
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    net = efficientnet_lite0(); net.model.to(dev)
    x01 = net.to_input(sample_image('chelsea')).to(dev)
    x = net.normalize(x01[None])
    with torch.no_grad(): c = int(net(x).argmax())
    probs = lambda z: torch.softmax(net.model(z), -1)
    rows, res = [], {'device': torch.cuda.get_device_name() if dev == 'cuda' else
                     f"CPU x{torch.get_num_threads()} threads ({platform.processor() or platform.machine()})",
                     'torch': torch.__version__, 'target': c}
    prep = max(1, a.reps // 5)

    def add(method, ours_key, t, out, n_forward, agree, agree_name):
        for k, sec in t.items():
            rows.append(dict(method=method, impl=k, seconds=sec, forwards=n_forward[k], fps=n_forward[k] / sec,
                             speedup=(sec / t[ours_key]) if k != ours_key else 1.0, agreement=agree.get(k), agree_name=agree_name))

    # Grad-CAM ----------------------------------------------------------------------------------------------------
    gc = GradCAM(net)
    pgc = PgcGradCAM(model=net.model, target_layers=[net.layer(gc.layer)])
    t, out = race({'xaikit': lambda: gc.explain(x01, targets=c),
                   'pytorch-grad-cam': lambda: pgc(input_tensor=x, targets=[ClassifierOutputTarget(c)])}, a.reps)
    add('Grad-CAM', 'xaikit', t, out, {'xaikit': 1, 'pytorch-grad-cam': 1},
        {'pytorch-grad-cam': pearson(out['xaikit'].maps[0], out['pytorch-grad-cam'][0])}, 'Pearson r')

    # Occlusion and FeatureAblation -------------------------------------------------------------------------------
    for method, w, s in (('Occlusion 32/16', 32, 16), ('FeatureAblation 14x14 grid', 16, 16)):
        occ = Occlusion(net, window=w, stride=s, baseline='zero', cover_border=False, progress=False)
        K = ((224 - w) // s + 1) ** 2
        if w == s:
            grid = (torch.arange(224, device=dev) // s)
            fmask = (grid[:, None] * (224 // s) + grid[None, :])[None, None]
            cap = FeatureAblation(probs)
            run = lambda ppe: cap.attribute(x, target=c, feature_mask=fmask, baselines=0.0, perturbations_per_eval=ppe)
        else:
            cap = CaptumOcclusion(probs)
            run = lambda ppe: cap.attribute(x, sliding_window_shapes=(3, w, w), strides=(3, s, s), baselines=0.0,
                                            target=c, perturbations_per_eval=ppe)
        def captum(ppe):
            with torch.no_grad(): return run(ppe)[0].mean(0)
        t, out = race({'xaikit': lambda: occ.explain(x01, targets=c), 'captum (ppe=1)': lambda: captum(1),
                       'captum (ppe=8)': lambda: captum(8)}, prep)
        ours = out['xaikit'].maps[0].to(dev)
        add(method, 'xaikit', t, out, {'xaikit': out['xaikit'].n_forward, 'captum (ppe=1)': K + 1, 'captum (ppe=8)': K + 1},
            {k: float((ours - out[k].float()).abs().max()) for k in ('captum (ppe=1)', 'captum (ppe=8)')}, 'max |diff|')

    # LIME ---------------------------------------------------------------------------------------------------------
    N = a.lime_samples
    lime = LIME(net, n_samples=N, seed=0, kernel_width=0.25, alpha=1.0, baseline='black', progress=False)
    black = net.normalize(torch.zeros(1, 3, 1, 1, device=dev))
    cap = Lime(probs, interpretable_model=SkLearnRidge(alpha=1.0),
               similarity_func=get_exp_kernel_similarity_function('cosine', kernel_width=0.25))
    def captum_lime(ppe):
        seg = segment(x01, 'quickshift', 0).to(dev)
        torch.manual_seed(0)
        with torch.no_grad():
            attr = cap.attribute(x, target=c, feature_mask=seg[None, None], baselines=black, n_samples=N,
                                 perturbations_per_eval=ppe)
        return seg, attr[0, 0]
    t, out = race({'xaikit': lambda: lime.explain(x01, targets=c), 'captum (ppe=1)': lambda: captum_lime(1),
                   'captum (ppe=8)': lambda: captum_lime(8)}, prep)
    e = out['xaikit']
    agree = {}
    for k in ('captum (ppe=1)', 'captum (ppe=8)'):
        seg, attr = out[k]
        F_ = int(seg.max()) + 1
        w_cap = torch.zeros(F_, device=dev).scatter_(0, seg.flatten(), attr.flatten().float())   # one value per superpixel
        agree[k] = pearson(e.extras['coef'][0], w_cap.cpu())
    add(f'LIME {N} samples', 'xaikit', t, out, {'xaikit': e.n_forward, 'captum (ppe=1)': N + 1, 'captum (ppe=8)': N + 1},
        agree, 'Pearson r of superpixel weights')

    res['rows'] = rows
    tag = 'cuda' if dev == 'cuda' else 'cpu'
    here = Path(__file__).parent
    (here/f'explainers_{tag}.json').write_text(json.dumps(res, indent=1))
    lines = [f"# Base explainers vs Captum and pytorch-grad-cam ({res['device']}, torch {res['torch']})", '',
             'EfficientNet-Lite0, chelsea, top-1 class; median seconds per explanation over interleaved rounds. '
             '"speed-up" = peer seconds / xaikit seconds.', '',
             '| method | implementation | seconds | forwards | forwards/s | xaikit speed-up | agreement |', '|---|---|---|---|---|---|---|']
    for r in rows:
        ag = '' if r['agreement'] is None else f"{r['agree_name']} {r['agreement']:.4g}"
        sp = '' if r['impl'] == 'xaikit' else f"{r['speedup']:.2f}x"
        lines.append(f"| {r['method']} | {r['impl']} | {r['seconds']:.3f} | {r['forwards']} | {r['fps']:.1f} | {sp} | {ag} |")
    (here/f'explainers_{tag}.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
