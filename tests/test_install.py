"""`pip install .` (not editable) carries what the command needs: the presets run from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_package_fits_with_a_packaged_preset(tmp_path):
    # a copy of the tree without its build outputs, so pip builds from sources only
    src = tmp_path / "src_tree"
    ignore = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "lightning_logs", "__pycache__")
    shutil.copytree(ROOT, src, ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Reuse torch, Lightning, pip, setuptools ... of this environment (no downloads). A venv's
    # --system-site-packages would reach the base interpreter's packages, not this environment's; a plain
    # path entry (not a site dir) also leaves out the editable install's import hook, so the copy installed
    # below is the only focalmix the new venv sees.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (Path(site) / "project_env.pth").write_text("\n".join(ours) + "\n")
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", str(src)]
    subprocess.run(pip, check=True, capture_output=True, text=True, timeout=600)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(python), "-c", "import focalmix.cli as c; print(c.__file__)"],
        cwd=run_dir, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert str(venv) in where.stdout  # the installed copy, not the source tree
    command = [str(venv / "bin" / "focalmix"), "fit", "--preset", "fast", "--trainer.max_epochs", "1"]
    proc = subprocess.run(
        [*command, "--report", "false"],
        cwd=run_dir, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "focalmix: best checkpoint" in proc.stdout
    assert (run_dir / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt").is_file()
    config = (run_dir / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "batch_size: 64" in config  # the fast preset's value, read from the installed package
