"""Real 2-process DDP on CPU (gloo): the schedule, metrics, early stopping, mixup, predict and resume.

Each run is a subprocess (`strategy="ddp"` inside pytest would re-launch pytest itself) in its own
process group, killed with every rank after a time limit, and DDP has a 180 s collective timeout: a hang
fails in minutes instead of blocking CI. Run alone: `pytest -m ddp`. `focalmix fit` under DDP and
torchrun, with the console, logger and report users get, is tested in tests/test_entrypoints.py.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from focalmix import FocalMixClassifier
from tests import _ddp_run as run
from tests._run import check_ok, run_command, shared_run
from tests.conftest import quiet_trainer

pytestmark = pytest.mark.ddp
SCRIPT = Path(__file__).with_name("_ddp_run.py")
ROOT = SCRIPT.parents[1]
HANG = 300


def launch(case: str, out: Path, check: bool = True) -> subprocess.CompletedProcess:
    # 6 epochs of 2 processes take 20-60 s on 2 busy cores (5x margin); past HANG the process tree is killed
    proc = run_command(
        [sys.executable, str(SCRIPT), case, str(out)], ROOT, HANG, {"PYTHONWARNINGS": "ignore"}
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"DDP case {case!r} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def ranks(out: Path, case: str) -> list[dict]:
    return [json.loads((out / f"{case}-rank{r}.json").read_text()) for r in (0, 1)]


def reference_lrs(total: int, max_lr: float) -> list[float]:
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=0.1)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    # once per session, not once per xdist worker that draws a test of this module
    out, proc = shared_run(tmp_path_factory, "ddp_run_fit", lambda out: launch("fit", out, check=False))
    check_ok(proc, "DDP case 'fit'")
    return out


def test_schedule_counts_world_size_and_accumulation(fitted):
    r0, r1 = ranks(fitted, "fit")
    train_rows = len(run.data().split_indices["train"])
    per_rank = math.ceil(train_rows / 2)  # DistributedSampler shards the training split
    steps_per_epoch = math.ceil(math.ceil(per_rank / run.BATCH) / run.ACCUMULATE)
    assert r0["total_steps"] == r1["total_steps"] == run.EPOCHS * steps_per_epoch
    # lr_scaling="linear": batch 16 x 2 ranks x accumulate 2 over the reference 32
    assert r0["max_lr"] == pytest.approx(3e-3 * 16 * 2 * 2 / 32)
    expected = reference_lrs(r0["total_steps"], r0["max_lr"])
    for r in (r0, r1):
        assert_close(r["lrs"], expected[: len(r["lrs"])])


def test_early_stopping_stops_every_rank_at_the_same_epoch(fitted):
    r0, r1 = ranks(fitted, "fit")
    assert r0["stopped_epoch"] == r1["stopped_epoch"] == 2  # best at epoch 0, no improvement at epoch 1


def test_metrics_equal_on_every_rank_and_to_one_process(fitted, tmp_path):
    r0, r1 = ranks(fitted, "fit")
    assert r0["val"] == r1["val"]
    model = FocalMixClassifier.load_from_checkpoint(fitted / "ckpt" / "last.ckpt")
    (single,) = quiet_trainer(tmp_path).validate(model, datamodule=run.data(), verbose=False)
    assert set(single) == set(r0["val"])
    for key, value in single.items():
        assert r0["val"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_calibration_is_equal_on_every_rank_and_to_one_process(fitted):
    from focalmix.calibration import fit_platt

    r0, r1 = ranks(fitted, "fit")
    assert r0["calibration"] == r1["calibration"] and r0["threshold"] == r1["threshold"]
    assert r0["calibration"] != [1.0, 0.0]  # fitted, not the identity it starts from
    # one process, the same weights and the same validation rows: the same Platt fit
    model = FocalMixClassifier.load_from_checkpoint(fitted / "ckpt" / "last.ckpt").eval()
    batches = list(run.data().val_dataloader())
    x, y = torch.cat([b["x"] for b in batches]), torch.cat([b["y"] for b in batches])
    with torch.no_grad():
        scale, bias = fit_platt(model(x), y)
    assert [scale.item(), bias.item()] == pytest.approx(r0["calibration"], rel=1e-4, abs=1e-5)
    assert [model.calibration_scale.item(), model.calibration_bias.item()] == r0["calibration"]


def test_mixup_differs_across_ranks_and_repeats_for_a_seed(fitted, tmp_path):
    r0, r1 = ranks(fitted, "fit")
    assert r0["mixup_seed"] != r1["mixup_seed"] and r0["first_perm"] != r1["first_perm"]
    launch("seed", tmp_path)  # a fresh start in a folder of its own: the shared run stays as it is
    s0, s1 = ranks(tmp_path, "seed")
    assert (s0["mixup_seed"], s0["first_perm"]) == (r0["mixup_seed"], r0["first_perm"])
    assert (s1["mixup_seed"], s1["first_perm"]) == (r1["mixup_seed"], r1["first_perm"])


def test_predict_writes_every_row_once_in_input_order(fitted, tmp_path):
    written = pd.read_csv(fitted / "predictions.csv")
    data = run.data()
    model = FocalMixClassifier.load_from_checkpoint(fitted / "ckpt" / "last.ckpt")
    probs = torch.cat(quiet_trainer(tmp_path).predict(model, datamodule=data))  # one process
    assert len(written) == len(probs)
    assert_close(
        torch.tensor(written.iloc[:, 1].to_numpy(), dtype=torch.float32), probs, rtol=1e-5, atol=1e-6
    )


def _copy_of_the_run(fitted: Path, tmp_path: Path) -> Path:
    """The shared run's checkpoints in a folder of this test's own: a resume rewrites last.ckpt, which
    the other tests read (run in another order or in parallel, they would read the resumed weights)."""
    shutil.copytree(fitted / "ckpt", tmp_path / "ckpt")
    return tmp_path


def test_resume_continues_the_schedule(fitted, tmp_path):
    out = _copy_of_the_run(fitted, tmp_path)
    state = torch.load(out / "ckpt" / "last.ckpt", weights_only=True)
    launch("resume", out)
    r0, r1 = ranks(out, "resume")
    fit0 = ranks(fitted, "fit")[0]
    expected = reference_lrs(fit0["total_steps"], fit0["max_lr"])
    step = state["global_step"]
    assert r0["lrs"] == r1["lrs"] and len(r0["lrs"]) > 0
    assert_close(r0["lrs"], expected[step : step + len(r0["lrs"])])  # no restarted warmup
    assert r0["last_epoch"] == r0["global_step"] <= fit0["total_steps"]
    # the shared run's checkpoint is untouched
    assert torch.load(fitted / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == step


def test_resume_with_a_longer_horizon_stops_with_an_explanation(fitted, tmp_path):
    out = _copy_of_the_run(fitted, tmp_path)
    proc = launch("resume_longer", out, check=False)
    assert proc.returncode != 0
    assert "cannot be stretched" in proc.stderr


# `focalmix fit` with 2 processes and with torchrun: tests/test_entrypoints.py, with the default console
# (the tests here once turned the logger and progress bar off, and missed a hang in the console).
