"""Experiments at scale (issue 19): an evaluation killed with SIGKILL and resumed equals an uninterrupted one; torchrun with
two CPU processes (gloo) plus `merge` gives exactly the rows of one process; the generic papermill experiment runs with
its defaults and fails clearly on a wrong parameter; stores of another experiment and corrupt stores are refused."""
import json, os, signal, sqlite3, subprocess, sys, time
from pathlib import Path

import pytest

from xaikit import experiments as X
from xaikit.core import assets_dir

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
needs_assets = pytest.mark.skipif(assets_dir(required=False) is None, reason='needs the ImageNet images of $XAIKIT_ASSETS')

# The 35 ImageNet images of the assets at 64 px on a small random CNN with 1000 outputs: Grad-CAM and the random baseline,
# pointing game and insertion/deletion. About 0.2 s an image with one thread.
CONFIG = dict(data='imagenet', model=dict(name='tiny_cnn', params=dict(input_size=64, num_classes=1000)),
              methods=['gradcam', 'random'], metrics={'pointing_game': dict(tolerance=4), 'insertion_deletion': dict(n_steps=8, patch=8)})
N_ROWS = 35 * 2


def _env():
    "This repository first on the path, one thread per process (the same arithmetic in every run)."
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]),
            'OMP_NUM_THREADS': '1', 'XAIKIT_THREADS': '1', 'MPLBACKEND': 'Agg'}


def _config(path:Path, store:Path, **kw)->Path:
    path.write_text(json.dumps({**CONFIG, 'store': str(store), **kw}))
    return path


def _evaluate(cfg:Path, **kw):
    return subprocess.Popen([sys.executable, '-m', 'xaikit.experiments', 'evaluate', '--config', str(cfg)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _count(store:Path)->int:
    "Rows committed so far (0 while the store is being created), read while another process writes."
    if not store.exists(): return 0
    try:
        con = sqlite3.connect(f'file:{store}?mode=ro', uri=True, timeout=5)
        try: return con.execute('SELECT count(*) FROM results').fetchone()[0]
        finally: con.close()
    except sqlite3.Error: return 0


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "An uninterrupted single-process run of CONFIG (through the command line)."
    d = tmp_path_factory.mktemp('reference')
    p = _evaluate(_config(d/'run.json', d/'ref.sqlite'))
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    assert 'rank 0/1: 35 images, 70 rows computed, 0 already stored' in out
    return d/'ref.sqlite'


@needs_assets
def test_kill_and_resume(reference, tmp_path):
    "SIGKILL midway, then the same command again: the store equals the uninterrupted run's (same rows, no duplicates, same values)."
    store = tmp_path/'run.sqlite'
    cfg = _config(tmp_path/'run.json', store)
    p = _evaluate(cfg)
    t0 = time.monotonic()
    while _count(store) < 10 and p.poll() is None and time.monotonic() - t0 < 300: time.sleep(0.05)
    assert p.poll() is None, f'the run ended before it could be killed: {p.communicate()[1][-2000:]}'
    p.send_signal(signal.SIGKILL); p.communicate()
    assert p.returncode == -signal.SIGKILL
    before = X.store_rows(store)
    assert 10 <= len(before) < N_ROWS, f'killed midway: {len(before)} of {N_ROWS} rows'
    q = _evaluate(cfg)
    out, err = q.communicate(timeout=600)
    assert q.returncode == 0, err[-3000:]
    assert f'{N_ROWS - len(before)} rows computed, {len(before)} already stored' in out
    after, ref = X.store_rows(store), X.store_rows(reference)
    assert len(after) == N_ROWS and after == ref                             # same keys, samples, targets, methods, values
    assert set(before) <= set(after)                                         # nothing committed before the kill was lost
    t = X.load(store)
    assert len({(r['id'], r['method']) for r in t}) == N_ROWS                # one row per (image, method): no duplicates
    assert t['pg_hit'] == X.load(reference)['pg_hit']


@needs_assets
def test_torchrun_two_processes(reference, tmp_path):
    "torchrun --nproc-per-node 2 (gloo on the CPU): each rank its own file, merged by rank 0: exactly the rows of one process."
    store = tmp_path/'sharded.sqlite'
    cfg = _config(tmp_path/'run.json', store)
    cmd = [str(BIN/'torchrun'), '--standalone', '--nproc-per-node', '2', '-m', 'xaikit.experiments', 'evaluate', '--config', str(cfg)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try: out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.communicate()                    # torchrun and its workers: no process left behind
        raise
    r = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'rank 0/2: 18 images, 36 rows computed' in r.stdout and 'rank 1/2: 17 images, 34 rows computed' in r.stdout
    assert [p.name for p in X.shard_files(store)] == ['sharded.rank00000-of-00002.sqlite', 'sharded.rank00001-of-00002.sqlite']
    assert X.store_rows(store) == X.store_rows(reference)
    con = sqlite3.connect(store)
    try: assert {r_[0] for r_ in con.execute('SELECT rank FROM results')} == {0, 1}      # rows written by both ranks
    finally: con.close()
    # merging again (here through the command line) adds nothing
    m = subprocess.run([sys.executable, '-m', 'xaikit.experiments', 'merge', '--store', str(store)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert m.returncode == 0 and json.loads(m.stdout) == dict(files=2, rows=N_ROWS, added=0, duplicates=N_ROWS, conflicts=0,
                                                              store_rows=N_ROWS)


# --- Bad input --------------------------------------------------------------------------------------------------------

SMALL = dict(data=dict(kind='synthetic', n=3), model=dict(name='tiny_cnn', params=dict(input_size=64, num_classes=13)),
             methods=['random'], metrics=['energy'])


def test_store_of_another_experiment_refused(tmp_path):
    st = tmp_path/'s.sqlite'
    X.evaluate(**SMALL, store=st)
    rows = X.store_rows(st)
    other = dict(SMALL, model=dict(name='tiny_cnn', params=dict(input_size=64, num_classes=13, width=16)))
    with pytest.raises(X.StoreError, match=r"holds another experiment's results \(model.params.width: store has null, this run has 16\)"):
        X.evaluate(**other, store=st)
    with pytest.raises(X.StoreError, match='seed: store has 0, this run has 3'): X.evaluate(**SMALL, store=st, seed=3)
    assert X.store_rows(st) == rows
    # methods and metrics may be added to the same experiment's store: their rows get their own keys
    t = X.evaluate(**dict(SMALL, methods=['random', 'center']), store=st)
    assert (t.meta['run']['computed'], t.meta['run']['reused'], len(t)) == (3, 3, 6)


def test_corrupt_store_reported_never_overwritten(tmp_path, capsys):
    st = tmp_path/'s.sqlite'
    X.evaluate(**SMALL, store=st)
    data = bytearray(st.read_bytes()); data[100:] = bytes(len(data) - 100)     # header kept, every page zeroed
    st.write_bytes(bytes(data))
    with pytest.raises(X.StoreError, match='is corrupt'): X.evaluate(**SMALL, store=st)
    with pytest.raises(X.StoreError, match='is corrupt'): X.load(st)
    assert st.read_bytes() == bytes(data)
    txt = tmp_path/'notes.sqlite'; txt.write_text('not a database')
    cfg = tmp_path/'run.json'; cfg.write_text(json.dumps(dict(SMALL, store=str(txt))))
    assert X.main(['evaluate', '--config', str(cfg)]) == 2
    assert 'is not an SQLite file' in capsys.readouterr().err and txt.read_text() == 'not a database'


def test_cli_names_wrong_parameters(tmp_path, capsys):
    for bad, msg in ((dict(methods=['gradcam', 'moxy']), "`methods`: 'moxy' is unknown"),
                     (dict(metrics=['pointing_gam']), "`metrics`: 'pointing_gam' is unknown"),
                     (dict(data=dict(kind='imagenet', root=str(tmp_path/'none'))), "`data`: root"),
                     (dict(methods={'rise': dict(n_mask=3)}), "method 'rise' has no parameter 'n_mask'"),
                     (dict(stroe='x'), "unknown keys ['stroe']")):
        cfg = tmp_path/'bad.json'; cfg.write_text(json.dumps({**SMALL, 'store': str(tmp_path/'b.sqlite'), **bad}))
        assert X.main(['evaluate', '--config', str(cfg)]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path/'b.sqlite').exists()                                  # refused before a store was created


# --- The papermill experiment -----------------------------------------------------------------------------------------

def _papermill(out:Path, *params):
    cmd = [str(BIN/'papermill'), '-k', 'python3', str(ROOT/'nbs/experiments/evaluate.ipynb'), str(out/'evaluate.ipynb'),
           '-p', 'output_dir', str(out), '--cwd', str(ROOT/'nbs/experiments'), *params]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)


@needs_assets
def test_evaluate_notebook_defaults(tmp_path):
    r = _papermill(tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sm = (tmp_path/'evaluate_summary.md').read_text().splitlines()
    assert sm[0].startswith('| method | n | pg ↑ |') and [l.split(' | ')[0] for l in sm[2:]] == ['| gradcam', '| center', '| random']
    assert (tmp_path/'evaluate.png').stat().st_size > 5_000
    assert len(X.load(tmp_path/'evaluate.sqlite')) == 4 * 3


def test_evaluate_notebook_wrong_method(tmp_path):
    r = _papermill(tmp_path, '-y', 'methods: [gradcam, moxy]')
    assert r.returncode != 0 and "`methods`: 'moxy' is unknown" in r.stderr + r.stdout
