import os
from pathlib import Path

os.environ.setdefault('MPLBACKEND', 'Agg')
_assets = Path(__file__).resolve().parents[2] / 'shared' / 'assets'
if 'XAIKIT_ASSETS' not in os.environ and _assets.is_dir(): os.environ['XAIKIT_ASSETS'] = str(_assets)
