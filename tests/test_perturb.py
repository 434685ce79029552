"""Engine properties that need a fresh process: peak memory does not grow with the number of masks."""
import json, subprocess, sys, textwrap

CHILD = textwrap.dedent('''
    import json, resource, sys, torch
    from torch import nn
    from xaikit.models import wrap
    from xaikit.perturb import score, RISEMasks, grid_coalitions
    torch.manual_seed(0)
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
