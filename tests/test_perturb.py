"""Engine properties outside the notebook: peak memory does not grow with the number of masks (in a fresh process),
`score` equals the plain per-mask loop on the tiny CNN, and the engine's modules import one way."""
import ast, json, re, subprocess, sys, textwrap
from pathlib import Path

import torch

from xaikit.models import tiny_cnn
from xaikit.perturb import RISEMasks, grid_coalitions, make_baseline, score
from xaikit.reference import loop_scores

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent('''
    import json, resource, sys, torch
    from torch import nn
    from xaikit.models import wrap
    from xaikit.perturb import score, RISEMasks, grid_coalitions
    torch.manual_seed(0)
    # a stride-8 convolution rather than `tiny_cnn`: its forward costs next to nothing at 224 x 224, so the peak is the
    # engine's own memory and 2 x 4352 masks stay fast (tiny_cnn's full-resolution convolutions would double the run)
    net = wrap(nn.Sequential(nn.Conv2d(3, 8, 8, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval(),
               input_size=224, class_names=[str(i) for i in range(10)])
    img = torch.rand(3, 224, 224)
    score(net, img, RISEMasks(8, 224, seed=0), targets=[1], batch_size=64)        # warm-up: allocator, threads
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    M, kind = int(sys.argv[1]), sys.argv[2]
    masks = RISEMasks(M, 224, s=7, seed=0) if kind == 'rise' else grid_coalitions(torch.rand(M, 196) < 0.5, (14, 14), 224)
    S = score(net, img, masks, targets='all', batch_size=64)
    assert S.shape == (M, 10)
    print(json.dumps({'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'base_kb': base}))
''')


def _peak(M, kind):
    r = subprocess.run([sys.executable, '-c', CHILD, str(M), kind], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_memory_flat_in_number_of_masks():
    for kind in ('rise', 'grid'):
        small, large = _peak(256, kind), _peak(4096, kind)
        # all 4096 masks at 224 x 224 in float32 would be 822 MB; lazily made batches keep the peak flat
        assert large['peak_kb'] <= 1.15 * small['peak_kb'], (kind, small, large)


def test_score_matches_loop_on_tiny_cnn():
    net = tiny_cnn()
    x01 = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = RISEMasks(10, 32, s=4, seed=1).masks(torch.arange(10))
    masks = torch.cat([masks, masks[:4]])                                  # 14 masks, 10 distinct
    for kind, baseline in (('prob', 'zero'), ('logodds', 'blur')):
        S, info = score(net, x01, masks, [3, [1, 7]], kind=kind, baseline=baseline, batch_size=3, return_info=True)
        ref = loop_scores(net, x01, masks, [3, [1, 7]], kind=kind, baseline=make_baseline(net, x01, baseline))
        assert (S - ref).abs().max() <= 1e-5, (kind, (S - ref).abs().max())
        assert (info['n_forward'], info['n_unique'], info['mode']) == (10, 10, 'pixels')
    Z = torch.rand(6, 16, generator=torch.Generator().manual_seed(2)) < 0.5
    co = grid_coalitions(Z, 4, 32)
    S = score(net, x01, co, 'all', kind='logit')
    assert S.shape == (6, 10) and (S - loop_scores(net, x01, co.masks(torch.arange(6)), list(range(10)), 'logit')).abs().max() <= 1e-5


def _imports(mod):
    "The xaikit modules `mod` imports at module level."
    tree = ast.parse((ROOT / 'xaikit' / f'{mod}.py').read_text())
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('xaikit')):
            out.add((node.module or '').removeprefix('xaikit.').split('.')[0])
        elif isinstance(node, ast.Import): out |= {a.name.removeprefix('xaikit.') for a in node.names if a.name.startswith('xaikit')}
    return out


def test_one_way_imports():
    "core <- models <- vit <- perturb: no module imports a later one (not even inside a function)"
    assert _imports('core') == set()
    assert _imports('models') == {'core'}
    assert _imports('vit') == {'models'}
    assert _imports('perturb') == {'core', 'models', 'vit'}
    for mod in ('core', 'models', 'vit'):
        assert not re.search(r'(from|import)\s+(\.|xaikit\.)?(perturb|vit)\b', (ROOT / 'xaikit' / f'{mod}.py').read_text()), mod
