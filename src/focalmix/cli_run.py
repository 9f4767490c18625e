"""What the ``focalmix`` commands do once everything is built: train, score, predict, and say how it went.

:class:`RunHooks` is mixed into :class:`focalmix.cli_base.FocalMixCLI`. It uses LightningCLI's public
hooks: ``after_instantiate_classes`` (the data is set up there, so its errors are the user's),
``before_<command>``/``after_<command>``, and a method named after each command, which LightningCLI
calls instead of the Trainer's (tests/test_architecture.py pins that behaviour to the Lightning versions
it was read from).
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import EarlyStopping

from focalmix._cli_text import UsageError
from focalmix.cli_checkpoint import epochs_done
from focalmix.cli_errors import user_errors
from focalmix.console import FocalMixProgressBar, metrics_table, run_folder
from focalmix.optim import ResumeScheduleError

__all__ = ["RunHooks", "fit_summary", "positive_class"]


class RunHooks:
    """The commands' run: Lightning's Trainer call between focalmix's checks and summaries."""

    _nothing_to_train = False

    def after_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        with user_errors(lambda: self.valid_flags(self.subcommand)):  # reading a test/predict file too
            self.datamodule.setup(self.subcommand)

    def fit(self, **kwargs: Any) -> None:
        if not self._nothing_to_train:
            with _resume_errors():
                self.trainer.fit(**kwargs)

    def validate(self, **kwargs: Any) -> None:
        with _resume_errors():
            self.trainer.validate(**kwargs, verbose=self.verbose)

    def test(self, **kwargs: Any) -> None:
        with _resume_errors():
            self.trainer.test(**kwargs, verbose=self.verbose)

    def predict(self, **kwargs: Any) -> None:
        with _resume_errors():
            self.trainer.predict(**kwargs)

    def _already_finished(self) -> bool:
        ckpt = getattr(self, "_ckpt", None)
        if ckpt is None:
            return False
        done = epochs_done(ckpt)
        max_epochs, max_steps = self.trainer.max_epochs, self.trainer.max_steps
        stopped = any(
            isinstance(v, dict) and v.get("stopped_epoch", 0) > 0 for v in ckpt.get("callbacks", {}).values()
        )
        finished = (max_epochs is not None and max_epochs >= 0 and done >= max_epochs) or (
            max_steps is not None and max_steps >= 0 and ckpt.get("global_step", 0) >= max_steps
        )
        if not (finished or stopped):
            return False
        why = (
            "early stopping ended it"
            if stopped and not finished
            else f"{done} of max_epochs={max_epochs} done"
        )
        if self.trainer.is_global_zero:
            print(
                f"focalmix: {self.config['fit']['ckpt_path']} is from a run that had already finished"
                f" ({why}); nothing to train. Use its best.ckpt, or raise --trainer.max_epochs to train on."
            )
        return True

    def before_fit(self) -> None:
        self._nothing_to_train = self._already_finished()
        config = self.config["fit"]
        if self._nothing_to_train or not (config.get("scale_batch_size") or config.get("lr_find")):
            return
        from lightning.pytorch.tuner import Tuner  # only this option needs it: keeps start-up short

        # The Tuner runs the module's own configure_optimizers: the range test swaps OneCycleLR for its own
        # schedule while it runs, then fit builds OneCycleLR again from the (updated) learning_rate.
        tuner = Tuner(self.trainer)
        if config.get("scale_batch_size"):
            size = tuner.scale_batch_size(self.model, datamodule=self.datamodule, mode="power")
            # the power search doubles past the training split; a batch larger than it is the split
            size = min(int(size), len(self.datamodule.split_indices["train"]))
            self.datamodule.batch_size = self.datamodule.hparams["batch_size"] = size  # checkpoints too
            print(f"focalmix: batch size {size} (--data.batch_size {size})")
        if config.get("lr_find"):
            self._find_learning_rate(tuner)

    def _find_learning_rate(self, tuner: Any) -> None:
        # the range test counts steps (100): an epoch limit would cut it short on a small table
        max_epochs = self.trainer.fit_loop.max_epochs
        self.trainer.fit_loop.max_epochs = max(max_epochs or 0, 100)
        bar = self.trainer.progress_bar_callback
        plain = bar is None or not bar.is_enabled
        plain = plain or (isinstance(bar, FocalMixProgressBar) and bar.plain_lines())
        try:
            with _without_range_test_bar(plain):
                finder = tuner.lr_find(self.model, datamodule=self.datamodule)
        finally:
            self.trainer.fit_loop.max_epochs = max_epochs
        lr = self.model.hparams.learning_rate
        if finder is None or finder.suggestion() is None:
            print(f"focalmix: the range test gave no suggestion; keeping --model.learning_rate {lr:.3g}")
        else:
            print(f"focalmix: learning rate {lr:.3g} from the range test (--model.learning_rate {lr:.3g})")

    def after_fit(self) -> None:
        trainer, data = self.trainer, self.datamodule
        if self._nothing_to_train or trainer.fast_dev_run:
            return
        if trainer.progress_bar_callback is not None:  # the scoring below leaves no stale bars behind
            trainer.progress_bar_callback.disable()
        ckpt = trainer.checkpoint_callback
        best = (getattr(ckpt, "best_model_path", "") or "") if ckpt is not None else ""
        # read before scoring: loading the best checkpoint restores EarlyStopping's state of that epoch
        run = f"{trainer.current_epoch} epochs run"
        if any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks):
            run += ", stopped early"
        columns: dict[str, dict[str, Any]] = {}
        if best:
            columns["val"] = self._score("validate", best)
        else:  # no best checkpoint (nothing monitored): the last epoch's validation metrics
            columns["val"] = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if data.test_source is not None or data.test_fraction > 0:
            # the held-out split is scored once, with the best weights, as lightning-hydra-template does
            trainer.test(self.model, datamodule=data, ckpt_path=best or None, verbose=self.verbose)
            columns["test"] = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if trainer.is_global_zero:
            print(fit_summary(run, best, columns, positive_class(data)))
            if self.config["fit"].get("report", True) and best:
                self._write_report(Path(run_folder(trainer)) / "report")
            print(f"focalmix: run folder {run_folder(trainer)}")

    def _score(self, fn: str, ckpt_path: str) -> dict[str, Any]:
        # quietly, and without adding rows to the fit's metrics.csv
        loggers, self.trainer.loggers = self.trainer.loggers, []
        try:
            getattr(self.trainer, fn)(
                self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False
            )
        finally:
            self.trainer.loggers = loggers
        return {k: v for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}

    def _write_report(self, out_dir: Path) -> None:
        from focalmix import report

        if not report.report_available():
            print('focalmix: report skipped: it needs matplotlib (pip install "focalmix[report]")')
            return
        csv = next(
            (
                Path(lg.log_dir) / "metrics.csv"
                for lg in self.trainer.loggers
                if type(lg).__name__ == "CSVLogger"
            ),
            None,
        )
        path = report.report_from_model(
            self.model, self.datamodule, out_dir=out_dir, metrics_csv=csv if csv and csv.is_file() else None
        )
        print(f"focalmix: report {path}")

    def after_validate(self) -> None:
        self._print_scores("val", "validation rows")

    def after_test(self) -> None:
        data = self.datamodule
        if data.test_source is None and data.test_fraction == 0:
            heading = (
                "VALIDATION rows: there is no test split, so `test` scores the rows that chose the checkpoint"
                " and the threshold (optimistic; hold rows out with"
                " --data.test_fraction or --data.test_source)"
            )
        else:
            heading = "test rows"
        self._print_scores("test", heading)

    def _print_scores(self, prefix: str, heading: str) -> None:
        if self.verbose or not self.trainer.is_global_zero:
            return  # Lightning printed its own table
        values = {k: v for k, v in self.trainer.callback_metrics.items() if k.startswith(f"{prefix}/")}
        print(f"focalmix: {self.config[self.subcommand]['ckpt_path']} scored on the {heading}:")
        print(metrics_table({prefix: values}, positive_class(self.datamodule)))


@contextmanager
def _resume_errors() -> Iterator[None]:
    try:
        yield
    except ResumeScheduleError as exc:
        raise UsageError(
            f"--ckpt_path: {str(exc).split(' (')[0]}",
            "resume with the original --trainer.max_epochs (and batch size, devices), or start a new"
            " fit without --ckpt_path",
        ) from exc


def positive_class(datamodule: Any) -> str | None:
    """A binary task's positive class (``class_names[1]``), for the result tables' header; else None."""
    try:
        return str(datamodule.class_names[1]) if datamodule.task == "binary" else None
    except (AttributeError, IndexError, TypeError):
        return None


def fit_summary(run: str, best: str, columns: dict[str, dict[str, Any]], positive: str | None = None) -> str:
    """The lines after a fit: the best checkpoint (or the last epoch's metrics) and one metrics table."""
    if best:
        epoch = torch.load(best, weights_only=True, map_location="cpu").get("epoch", 0)
        head = f"focalmix: best checkpoint: epoch {epoch + 1} ({run}), {best}"
    else:
        head = f"focalmix: no best checkpoint (nothing monitored); last epoch's metrics ({run})"
    if "test" not in columns:
        head += "\n(no test split: add --data.test_fraction 0.2 or --data.test_source FILE for test metrics)"
    return f"{head}\n{metrics_table(columns, positive)}"


@contextmanager
def _without_range_test_bar(active: bool) -> Iterator[None]:
    """Keep the range test's own tqdm bar (Lightning draws it with no option to turn it off) out of a
    log: stderr is held during the block and written back without the bar's lines."""
    if not active:
        yield
        return
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    finally:
        lines = held.getvalue().replace("\r", "\n").splitlines()
        kept = [line for line in lines if line.strip() and not line.startswith(_RANGE_TEST_BAR)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


_RANGE_TEST_BAR = "Finding best initial lr"  # lightning.pytorch.tuner.lr_finder._LRCallback's tqdm
