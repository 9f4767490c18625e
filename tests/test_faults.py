"""Faults: a killed fit resumes to the very same weights, SIGTERM leaves a resumable last.ckpt, and
artifacts are written whole or not at all."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from focalmix.faults import atomic_write, capture_rng_state, restore_rng_state

ROOT = Path(__file__).resolve().parents[1]
# tiny and fast: 240 synthetic rows, 12 steps an epoch, no progress bar, no logger, no report
FIT = [
    "fit",
    "--data.source", "synthetic", "--data.synthetic_rows", "240", "--data.synthetic_features", "6",
    "--data.batch_size", "16", "--trainer.max_epochs", "5", "--seed_everything", "7",
    "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
]  # fmt: skip


def _focalmix(*args: str, folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run_args = [*FIT, *args, "--trainer.default_root_dir", str(folder), "--checkpoint.dirpath", str(folder)]
    return subprocess.run(
        [sys.executable, "-m", "focalmix", *run_args],
        cwd=ROOT,  # tests._faults_helpers is importable from here
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.exhaustive  # the quick run's shuffled-late-SIGKILL case resumes from the same epoch-2 checkpoint
@pytest.mark.parametrize("balanced", [False, True], ids=["shuffled", "balanced"])
def test_a_run_killed_after_epoch_2_resumes_to_the_same_weights(tmp_path, balanced):
    extra = ["--data.balanced_sampling", "true"] if balanced else []
    whole = _focalmix(*extra, folder=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = _focalmix(
        *extra,
        "--trainer.callbacks+=tests._faults_helpers.KillAtEpochStart",
        "--trainer.callbacks.epoch", "2",
        folder=tmp_path / "killed",
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "killed" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # epochs 0 and 1 done, then SIGKILL
    resumed = _focalmix(*extra, "--ckpt_path", str(last), folder=tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = _weights(tmp_path / "whole" / "last.ckpt"), _weights(last)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for sampling, extra in (("shuffled", []), ("balanced", ["--data.balanced_sampling", "true"])):
        folder = tmp_path_factory.mktemp(f"whole_{sampling}")
        assert _focalmix(*extra, folder=folder).returncode == 0
        runs[sampling] = folder / "last.ckpt"
    return runs


# (epoch, batch): the end of epoch 0's 4th batch, epoch 2's first batch, epoch 3's last-but-one batch
POINTS = {"early": (0, 3), "epoch_start": (2, 0), "late": (3, 10)}
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


# The quick run (CI) takes a diagonal: every signal once and every point once, and balanced sampling once;
# `pytest -m exhaustive` runs the other combinations (each is two more CLI processes).
QUICK = {("shuffled", "early", "SIGINT"), ("shuffled", "epoch_start", "SIGTERM"),
         ("shuffled", "late", "SIGKILL"), ("balanced", "early", "SIGTERM")}  # fmt: skip
CASES = [
    pytest.param(
        sampling,
        point,
        signum,
        id=f"{sampling}-{point}-{signum.name}",
        marks=() if (sampling, point, signum.name) in QUICK else pytest.mark.exhaustive,
    )  # fmt: skip
    for sampling in ("shuffled", "balanced")
    for point in (POINTS if sampling == "shuffled" else ["early"])  # balanced: the same resumable loader
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
]


@pytest.mark.slow
@pytest.mark.parametrize("sampling, point, signum", CASES)
def test_a_stopped_run_resumes_to_the_same_weights(tmp_path, uninterrupted, signum, point, sampling):
    extra = ["--data.balanced_sampling", "true"] if sampling == "balanced" else []
    epoch, batch = POINTS[point]
    stopped = _focalmix(
        *extra,
        "--trainer.callbacks+=tests._faults_helpers.SignalMidEpoch",
        "--trainer.callbacks.epoch", str(epoch),
        "--trainer.callbacks.batch", str(batch),
        "--trainer.callbacks.signum", str(int(signum)),
        folder=tmp_path,
    )  # fmt: skip
    assert stopped.returncode == EXIT[signum], stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
    last = tmp_path / "last.ckpt"
    if signum == signal.SIGKILL and epoch == 0:
        assert not last.exists()  # killed before the first end-of-epoch checkpoint: nothing to resume
        return
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    if signum == signal.SIGKILL:  # no chance to save: the last end-of-epoch checkpoint
        assert ckpt["global_step"] == 12 * epoch
    else:  # saved at the end of the batch the signal came in: mid-epoch
        assert ckpt["epoch"] == epoch and ckpt["global_step"] == 12 * epoch + batch + 1
    resumed = _focalmix(*extra, "--ckpt_path", str(last), folder=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "not resumable" not in resumed.stderr
    expected, got = _weights(uninterrupted[sampling]), _weights(last)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_atomic_write_gives_the_file_the_usual_permissions(tmp_path):
    with atomic_write(tmp_path / "report.html") as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(OSError, match="disk full"), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_rng_state_round_trip_replays_every_stream():
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]
    # weights_only checkpoints can hold it (no numpy objects)
    buffer = __import__("io").BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    assert torch.equal(torch.rand(3), first[0])
