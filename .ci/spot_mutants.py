"""Spot-check that tests fail when the line they test is removed (a mutant per row; not run by CI).

Run: ``python .ci/spot_mutants.py`` (about a minute). Each row copies ``src/`` to a temporary folder,
removes or replaces one line under test, and runs the test file that should catch it; a mutant that
survives (the tests still pass) prints SURVIVED and the script exits 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (file, text under test, what replaces it, the test file that must fail)
MUTANTS = [
    ("losses.py", "    if eps:\n        t = t * (1 - eps) + eps / 2\n", "", "tests/test_losses.py"),
    ("wakeword.py", "    new_run[1:] = np.diff(t) > hop + _EPS\n", "", "tests/test_wakeword.py"),
    ("trust.py", "    if is_trusted(class_path):\n        return\n", "    return\n", "tests/test_trust.py"),
    ("mixup.py", "    return lam * own + (1 - lam) * partner\n", "    return own\n", "tests/test_mixup.py"),
    ("cache.py", "            if hit is not None:\n", "            if False:\n", "tests/test_cache.py"),
]


def main() -> int:
    survived = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, old, new, test in MUTANTS:
            src = Path(tmp) / "src"
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(ROOT / "src", src)
            path = next(src.rglob(name))
            text = path.read_text()
            if text.count(old) != 1:
                print(f"{name}: the line under test moved; update MUTANTS: {old.strip()!r}")
                return 2
            path.write_text(text.replace(old, new))
            env = {**os.environ, "PYTHONPATH": str(src)}
            cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", test]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
            caught = done.returncode == 1 and failed and failed[0].startswith("FAILED")
            survived += not caught
            verdict = f"caught by {failed[0][7:]}" if caught else f"SURVIVED ({done.stdout[-300:]!r})"
            print(f"{name}: without {old.strip().splitlines()[-1]!r}: {verdict}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
