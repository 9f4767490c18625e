"""A 2-process DDP fit through `focalmix fit` with the default console (logger, progress bar, report).

This is the path that deadlocked (the run-folder line asked `Trainer.log_dir`, a broadcast, on rank 0
only) while the quiet-flag DDP tests passed. The run is in its own process group and the whole group is
killed on timeout, so a hang fails in two minutes instead of blocking CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_fit_with_the_default_console_finishes_and_prints_its_summary_once(tmp_path: Path):
    args = [
        sys.executable, "-m", "focalmix", "fit", "--data.source", "breast_cancer",
        "--data.test_fraction", "0.2", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.max_epochs", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # rank 1 too, not only the launcher
        out, err = proc.communicate()
        pytest.fail(f"the DDP fit hung (killed after 150 s); last output:\n{out[-1500:]}\n{err[-1500:]}")
    assert proc.returncode == 0, err[-3000:]
    assert out.count("focalmix: best checkpoint:") == 1, out
    assert out.count("focalmix: model parameters:") == 1, out
    run = tmp_path / "lightning_logs" / "version_0"
    assert f"focalmix: run folder {run}" in out
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "report" / "report.html").is_file()
    table = [line.split() for line in out.splitlines() if line.startswith(("metric", "auroc"))]
    assert table[0] == ["metric", "val", "test"] and len(table) == 2, out  # both splits scored, once
    assert 0.5 < float(table[1][2]) <= 1.0
    metrics = pd.read_csv(run / "metrics.csv")
    assert {0.0, 1.0} <= set(metrics["epoch"].dropna())  # both epochs logged, in the one run folder
    assert "Traceback" not in err
