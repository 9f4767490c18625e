"""Surviving faults: artifacts written whole or not at all, and the random state a resumed run needs.

* :func:`atomic_write` yields a temporary path in the destination's folder and renames it into place
  only when the block finishes, so a kill or a full disk never leaves a half-written file under the
  final name (``os.replace`` is atomic on POSIX and Windows within one filesystem).
* :func:`capture_rng_state` / :func:`restore_rng_state` save and restore every global random stream a
  training step depends on (torch CPU and CUDA, numpy, Python), so a run resumed from a checkpoint
  draws the same numbers as the run it replaces (the model stores them in every checkpoint).
* :class:`PreemptionCheckpoint` saves ``last.ckpt`` when SIGTERM or Ctrl-C stops a fit.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it to ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it was. The folder is created.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_write(out) as tmp:
        ...     _ = tmp.write_text("whole")
        >>> out.read_text()
        'whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files: give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def capture_rng_state() -> dict[str, Any]:
    """The global random states: torch (CPU and every CUDA device), numpy and Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # tensors and plain Python values only, so `torch.load(weights_only=True)` still opens the checkpoint
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned (CUDA states only where the devices match)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


stopped_by: str | None = None  # "SIGINT" or "SIGTERM" once a signal has stopped a fit (the exit code)


class PreemptionCheckpoint(Callback):
    """Save ``last.ckpt`` when a fit is stopped by SIGTERM (preemption, ``scancel``) or Ctrl-C.

    Lightning turns SIGTERM into an exception at the end of the current training batch. While training,
    this makes the first Ctrl-C (SIGINT) do the same (a second one interrupts at once), so both stop at a
    batch boundary: never between a backward pass and its optimizer step. Both reach ``on_exception``,
    where this writes the checkpoint into the folder of the ``last.ckpt`` callback, mid-epoch when the
    signal came mid-epoch; with a resumable training loader (focalmix's own) ``--ckpt_path
    .../last.ckpt`` continues with the next batch of the same order. Lightning's checkpoint writer goes
    through a temporary file, so a second kill during the save leaves the previous ``last.ckpt`` intact.
    Rank 0 writes; every rank takes part under DDP.

    Args:
        filename: the checkpoint's file name. Default: ``"last.ckpt"``.

    Example:
        >>> PreemptionCheckpoint().filename
        'last.ckpt'
    """

    def __init__(self, filename: str = "last.ckpt") -> None:
        self.filename = filename
        self.saved_path: str | None = None
        self._previous_sigint: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        global stopped_by
        stopped_by = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        global stopped_by
        if stopped_by is not None:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        stopped_by = "SIGINT"
        print("\nfocalmix: stopping after this batch (Ctrl-C again to stop at once)", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's own graceful path: it stops at the batch's end

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        global stopped_by
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt) or trainer.state.fn != "fit":
            return
        stopped_by = stopped_by or ("SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT")
        folder = self._folder(trainer)
        if folder is None:
            return
        path = os.path.join(folder, self.filename)
        trainer.save_checkpoint(path)
        self.saved_path = path
        rank_zero_info(f"focalmix: stopped by {stopped_by}; saved {path} (resume with --ckpt_path)")

    def _folder(self, trainer: pl.Trainer) -> str | None:
        callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        for callback in sorted(callbacks, key=lambda c: c.filename != Path(self.filename).stem):
            if callback.dirpath:
                return str(callback.dirpath)
        return None
