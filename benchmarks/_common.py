"""Helpers shared by the benchmark scripts: the run header, a step clock, the CLI's callbacks, quiet logs.

Not a benchmark itself. Every script prints :func:`header` first, so a pasted table carries the
machine, the date and the command that produced it.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

try:
    import focalmix
except ImportError:  # a source checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import focalmix

import lightning
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from focalmix.callbacks import PredictionWriter
from focalmix.console import FocalMixProgressBar
from focalmix.diagnostics import TrainingDiagnostics
from focalmix.faults import PreemptionCheckpoint


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(title: str) -> str:
    """The lines every benchmark prints first: what, when, how it was started and on what machine."""
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    return "\n".join(
        [
            f"# {title}",
            f"date:    {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
            f"command: {command}",
            f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"(torch threads: {torch.get_num_threads()}), lightning {lightning.__version__}, "
            f"focalmix {focalmix.__version__}, Python {platform.python_version()}",
        ]
    )


def quiet_lightning() -> None:
    """Silence Lightning's per-fit info lines and the warnings that do not apply to in-memory batches."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*Trying to infer the `batch_size`.*")


def cli_callbacks(root: str | Path, progress_bar: bool = True) -> list[Callback]:
    """The callbacks ``focalmix fit`` adds by default (see ``FocalMixCLI``), writing under ``root``.

    ``progress_bar``: its time-budgeted bar as on a terminal (the caller sends stdout to a file).
    """
    root = Path(root)
    callbacks = [
        EarlyStopping(monitor="val/loss", mode="min", patience=8),
        ModelCheckpoint(dirpath=root / "checkpoints", monitor="val/loss", mode="min", filename="best"),
        ModelCheckpoint(dirpath=root / "checkpoints", filename="last", enable_version_counter=False),
        LearningRateMonitor(logging_interval="step"),
        PredictionWriter(root / "predictions.csv"),
        TrainingDiagnostics(),
        PreemptionCheckpoint(),
    ]
    return [*callbacks, FocalMixProgressBar(terminal=True)] if progress_bar else callbacks


def cli_logger(root: str | Path) -> TensorBoardLogger | CSVLogger:
    """The logger a plain ``focalmix fit`` gets: Lightning's default, TensorBoard when it is installed,
    else a CSV logger (as the Trainer falls back)."""
    try:
        return TensorBoardLogger(str(root), name="lightning_logs")
    except ModuleNotFoundError:
        return CSVLogger(str(root), name="lightning_logs")


class StepClock(Callback):
    """Stamps the wall clock and the process's CPU clock after every optimizer step, grouped by epoch.

    As a Lightning callback it stamps in ``on_train_batch_end``; a hand-written loop calls :meth:`tick`
    after ``optimizer.step()``. The time from the last step of epoch ``w - 1`` to the last step of the
    final epoch covers every later step with its share of epoch-end work (validation, checkpointing,
    logging), but neither Trainer start-up nor the warm-up epochs.

    ``clock="cpu"`` (``time.process_time``: CPU seconds of every thread of this process) does not count
    time the process waits for a core, so on a shared machine it is far steadier than the wall clock; with
    one torch thread it measures what a dedicated core would do. It does not count waits for disk either.
    """

    CLOCKS = ("wall", "cpu")

    def __init__(self) -> None:
        self.stamps: list[list[tuple[float, float]]] = []

    def tick(self, epoch: int) -> None:
        while len(self.stamps) <= epoch:
            self.stamps.append([])
        self.stamps[epoch].append((time.perf_counter(), time.process_time()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.tick(trainer.current_epoch)

    def steps_per_second(self, warmup_epochs: int = 1, clock: str = "cpu") -> float:
        """Optimizer steps per second after ``warmup_epochs``, epoch ends (validation, checkpoints) in."""
        c = self.CLOCKS.index(clock)
        measured = self.stamps[warmup_epochs:]
        if not measured or not self.stamps[warmup_epochs - 1]:
            raise RuntimeError(f"need more than {warmup_epochs} epochs of stamps, got {len(self.stamps)}")
        steps = sum(len(s) for s in measured)
        return steps / (measured[-1][-1][c] - self.stamps[warmup_epochs - 1][-1][c])

    def in_epoch_steps_per_second(self, warmup_epochs: int = 1, clock: str = "cpu") -> float:
        """Steps per second counting only step-to-step gaps inside an epoch (no epoch-end work)."""
        c = self.CLOCKS.index(clock)
        gaps = [b[c] - a[c] for s in self.stamps[warmup_epochs:] for a, b in zip(s, s[1:], strict=False)]
        return len(gaps) / sum(gaps)


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> float:
    """Half the min-max range relative to the median, e.g. 0.03 for +-3%."""
    return (max(values) - min(values)) / 2 / statistics.median(values)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
