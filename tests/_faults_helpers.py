"""Callbacks the fault tests inject into `focalmix fit` subprocesses (via --trainer.callbacks+=)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtEpochStart(Callback):
    """SIGKILL this process when epoch ``epoch`` (0-based) starts: the previous epoch's checkpoints exist."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalMidEpoch(Callback):
    """Send this process ``signum`` at the end of training batch ``batch`` of epoch ``epoch``.

    The signal's handler runs before ``os.kill`` returns to Python code here (a signal sent to the
    process itself is delivered at once), so no sleep is needed for it to take effect.
    """

    def __init__(self, epoch: int = 1, batch: int = 2, signum: int = int(signal.SIGTERM)) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)
