"""Sharding benchmark: writes benchmarks/sharding_cpu.md and .json.

The acceptance run of issue 19: the 35 ImageNet validation images of the assets, EfficientNet-Lite0 (real weights),
Grad-CAM, pointing game and insertion/deletion (16 px patches, 28 steps: 57 forwards a map). The same experiment runs
(a) in one process with one thread (`python -m xaikit.experiments evaluate`), and (b) under
`torchrun --nproc-per-node 2` with one thread per process (gloo), merged by rank 0. Both are timed end to end as a user
runs them (interpreter start, model load, the run, and for (b) the merge), each in a fresh store; the rows of (b) are
checked to equal those of (a). Speed-up = time (a) / time (b); efficiency = speed-up / 2 (target >= 0.9).

The two runs alternate (a, b, a, b, ...) and the best time of each is kept, so that load from other programs on the
machine hits both alike; the load average before and after is recorded. On a machine with fewer than two idle cores the
speed-up says more about the other load than about xaikit (it can come out too low or, since two processes take a larger
share of a contended CPU than one, too high): rerun it on an idle machine.
Usage: .venv/bin/python benchmarks/bench_sharding.py [--reps 2] [--limit 35]
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from xaikit import experiments as X

CONFIG = dict(data='imagenet', model='efficientnet_lite0', methods=['gradcam'],
              metrics={'pointing_game': {}, 'insertion_deletion': dict(n_steps=28, patch=16)})


def env():
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]),
            'OMP_NUM_THREADS': '1', 'XAIKIT_THREADS': '1', 'MKL_NUM_THREADS': '1'}


def timed_run(cmd, store:Path)->float:
    for p in [store, *X.shard_files(store)]: p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode: raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-3000:]}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reps', type=int, default=2)
    ap.add_argument('--limit', type=int, default=35)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    cfgs = {}
    for k in ('one', 'two'):
        cfgs[k] = d/f'{k}.json'
        cfgs[k].write_text(json.dumps({**CONFIG, 'data': dict(kind='imagenet', limit=a.limit), 'store': str(d/f'{k}.sqlite')}))
    one = [sys.executable, '-m', 'xaikit.experiments', 'evaluate', '--config', str(cfgs['one'])]
    two = [str(Path(sys.executable).parent/'torchrun'), '--standalone', '--nproc-per-node', '2', '-m', 'xaikit.experiments',
           'evaluate', '--config', str(cfgs['two'])]
    load0 = os.getloadavg()
    times = {'one': [], 'two': []}
    for _ in range(a.reps):
        times['one'].append(timed_run(one, d/'one.sqlite'))
        times['two'].append(timed_run(two, d/'two.sqlite'))
    load1 = os.getloadavg()
    same = X.store_rows(d/'one.sqlite') == X.store_rows(d/'two.sqlite')
    n = len(X.store_rows(d/'one.sqlite'))
    t1, t2 = min(times['one']), min(times['two'])
    res = dict(setting=f"{a.limit} ImageNet images, efficientnet_lite0, gradcam, pointing game + insertion/deletion (28 steps, 16 px)",
               rows=n, same_rows=same, one_process_s=times['one'], two_processes_s=times['two'], speedup=t1 / t2,
               efficiency=t1 / t2 / 2, target_efficiency=0.9, cpus=os.cpu_count(), loadavg_before=load0, loadavg_after=load1,
               torch=torch.__version__, machine=platform.machine())
    busy = load0[0] > (os.cpu_count() or 1) - 2 + 0.5          # the 1-minute load before (the load after includes these runs)
    note = (f"The machine was loaded by other programs while this ran (load average {load0[0]:.1f} before, {load1[0]:.1f} after, "
            f"on {os.cpu_count()} CPUs). Two processes did not get two idle cores, and among that many runnable threads two processes "
            "also get a larger share of the CPUs than one, so this ratio is not a clean measure in either direction: rerun on an idle "
            "machine." if busy else f"Load average {load0[0]:.1f} before, {load1[0]:.1f} after, on {os.cpu_count()} CPUs.")
    md = [f"# Sharding benchmark (CPU, {os.cpu_count()} cores, torch {torch.__version__})", '',
          '| setting | 1 process x 1 thread | 2 processes x 1 thread (torchrun, gloo) | speed-up | efficiency | target |',
          '|---|---|---|---|---|---|',
          f"| {res['setting']}, {n} rows | {t1:.1f} s | {t2:.1f} s | {t1 / t2:.2f} | {t1 / t2 / 2:.2f} | >= 0.90 |", '',
          f"Rows of the two runs identical: {same}. Best of {a.reps} alternating runs each, end to end (interpreter start, model "
          "load, run, merge); all times: " + json.dumps({k: [round(t, 1) for t in v] for k, v in times.items()}) + '.', '', note, '',
          'Produced by `benchmarks/bench_sharding.py`.']
    out = ROOT/'benchmarks'
    (out/'sharding_cpu.json').write_text(json.dumps(res, indent=1) + '\n')
    (out/'sharding_cpu.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))
    if not same: raise SystemExit('the rows of the sharded run differ from the single run')


if __name__ == '__main__':
    main()
