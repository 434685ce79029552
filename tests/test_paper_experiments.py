"""The per-paper experiment notebooks of nbs/experiments (issue 19): each runs with papermill and its default parameters
(small subsets, seconds to a minute on a CPU) and writes its table (CSV and markdown) and figure; a wrong parameter
fails with a message that names it."""
import csv, math, os, subprocess, sys
from pathlib import Path

import pytest

from xaikit.core import assets_dir

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
needs_assets = pytest.mark.skipif(assets_dir(required=False) is None, reason='needs $XAIKIT_ASSETS')

# notebook -> (needs the assets, the table's key column, its expected values, the numeric columns)
NOTEBOOKS = {
    'moxi_curves': (False, 'method', ['MoXI', 'self-Shapley', 'Grad-CAM'], ['ins_top1_auc', 'del_top1_auc', 'ins_prob_auc', 'del_prob_auc']),
    'vitcx_auc': (False, 'method', ['vitcx', 'gradcam', 'rise'], ['pg', 'ins_auc', 'del_auc']),
    'cosmax_pairs': (False, 'kind', ['redundant', 'redundant', 'conjunctive', 'conjunctive'], ['found', 'random_pair']),
    'cwox_contrast': (True, 'image', None, ['cauc_cwox', 'cauc_base', 'cdrop_cwox', 'cdrop_base']),
}
# notebook -> (a wrong parameter, the message it must give)
WRONG = {
    'moxi_curves': (['-y', 'methods: [moxi, moxy]'], "`methods` must be a non-empty list of ['moxi', 'self_shapley', 'gradcam']"),
    'vitcx_auc': (['-y', 'methods: {vitcx: {}, moxy: {}}'], "`methods`: 'moxy' is unknown"),
    'cosmax_pairs': (['-p', 'model', 'resnet'], "`model` must be one of ['synthetic_cnn', 'synthetic_vit'], got 'resnet'"),
    'cwox_contrast': (['-y', 'images: [cwox/none.jpg]'], "`images`: 'cwox/none.jpg' matches no file"),
}


def _papermill(name:str, out:Path, *params):
    cmd = [str(BIN/'papermill'), '-k', 'python3', str(ROOT/f'nbs/experiments/{name}.ipynb'), str(out/f'{name}.ipynb'),
           '-p', 'output_dir', str(out), '--cwd', str(ROOT/'nbs/experiments'), *params]
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]), 'MPLBACKEND': 'Agg'}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('name', list(NOTEBOOKS))
def test_defaults(name, tmp_path):
    assets, key, values, cols = NOTEBOOKS[name]
    if assets and assets_dir(required=False) is None: pytest.skip('needs $XAIKIT_ASSETS')
    r = _papermill(name, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path/f'{name}.png').stat().st_size > 5_000
    md = (tmp_path/f'{name}.md').read_text().splitlines()
    assert md[0].startswith(f'| {key} |') and len(md) >= 3
    with open(tmp_path/f'{name}.csv') as f: rows = list(csv.DictReader(f))
    if values is not None: assert [r_[key] for r_ in rows] == values
    else: assert len(rows) >= 2 and rows[-1][key] == 'mean'
    assert all(math.isfinite(float(r_[c])) for r_ in rows for c in cols)


@pytest.mark.parametrize('name', list(WRONG))
def test_wrong_parameter(name, tmp_path):
    params, msg = WRONG[name]
    r = _papermill(name, tmp_path, *params)
    assert r.returncode != 0 and msg in r.stderr + r.stdout, (r.stderr + r.stdout)[-3000:]
    assert not (tmp_path/f'{name}.png').exists()
