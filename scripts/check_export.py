"""Fail if `nbdev-export` would change xaikit/: the notebooks in nbs/ and the module must be in sync."""
import subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
lib = root / 'xaikit'

def snapshot(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob('*.py')) if '__pycache__' not in p.parts}

before = snapshot(lib)
exe = Path(sys.executable).parent / 'nbdev-export'
subprocess.run([str(exe)], cwd=root, check=True)
after = snapshot(lib)
changed = sorted(str(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k))
if changed:
    print("nbdev-export changed these files, so notebooks and module were out of sync:", *changed, sep='\n  ')
    print("Commit the re-exported module (edit the notebooks, never xaikit/*.py).")
    sys.exit(1)
print(f"nbdev-export: xaikit/ is in sync with nbs/ ({len(after)} modules)")
