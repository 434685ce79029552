"""The main job: papermill runs the quickstart experiment notebook and it writes its figure and table."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_papermill(tmp_path):
    papermill = Path(sys.executable).parent / 'papermill'
    out_nb = tmp_path / 'quickstart.ipynb'
    cmd = [str(papermill), '-k', 'python3', str(ROOT / 'nbs/experiments/quickstart.ipynb'), str(out_nb),
           '-p', 'output_dir', str(tmp_path), '-y', 'images: [chelsea]', '-y', 'methods: [gradcam, cwox]', '--cwd', str(ROOT / 'nbs/experiments')]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    res = json.loads((tmp_path / 'quickstart.json').read_text())
    assert res['model'] == 'efficientnet_lite0' and [r['image'] for r in res['results']] == ['chelsea']
    top1 = res['results'][0]['top5'][0]['name']
    assert top1 in ('tabby', 'tiger cat', 'Egyptian cat')
    assert res['results'][0]['explanations'][0]['method'] == 'gradcam'
    assert (tmp_path / 'quickstart.png').stat().st_size > 10_000 and out_nb.exists()
