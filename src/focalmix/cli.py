"""The ``focalmix`` command: LightningCLI with the recipe's defaults, its callbacks, presets and short errors.

User errors (a bad flag or value, a missing file, bad data, an unreadable checkpoint) end in one line,
``focalmix: error: <message>``, at most one hint line and exit code 2; ``--debug`` (or
``FOCALMIX_DEBUG=1``) shows the traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError, Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from focalmix._cli_text import (
    PRESETS,
    UsageError,
    compact_help,
    expand_args,
    parse_error_message,
    preset_path,
    top_help,
)
from focalmix.callbacks import PredictionWriter
from focalmix.console import (
    ConsoleSummary,
    FocalMixProgressBar,
    metrics_table,
    plain,
    quiet_console,
    run_folder,
)
from focalmix.data import FocalMixDataModule
from focalmix.diagnostics import TrainingDiagnostics
from focalmix.module import FocalMixClassifier
from focalmix.optim import ResumeScheduleError
from focalmix.table_io import is_table
from focalmix.trust import UntrustedClassError, check_hyperparameters

__all__ = ["LINKS", "PRESETS", "FocalMixCLI", "UsageError", "load_checkpoint", "main", "preset_path"]

# Datamodule attributes the model is built from; read after the datamodule is created.
LINKS = (
    "num_features",
    "num_classes",
    "task",
    "input_shape",
    "class_names",
    "feature_names",
    "preprocessing",
)
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, MisconfigurationException)
_GROUPS = {  # config group of the object whose constructor raised
    LightningDataModule: "data",
    LightningModule: "model",
    Trainer: "trainer",
    EarlyStopping: "early_stopping",
    ModelCheckpoint: "checkpoint",
    PredictionWriter: "prediction_writer",
    TrainingDiagnostics: "diagnostics",
}


class FocalMixCLI(LightningCLI):
    """LightningCLI for :class:`FocalMixClassifier` and :class:`FocalMixDataModule`.

    Adds Lightning's ``EarlyStopping`` (``early_stopping.*``, monitor ``val/loss``, patience 8),
    ``ModelCheckpoint`` (``checkpoint.*``: ``best.ckpt`` by ``val/loss``; ``last_checkpoint.*``: ``last.ckpt``
    every epoch, in the same folder), ``LearningRateMonitor`` and the CSV ``PredictionWriter``
    (``prediction_writer.path``) and ``TrainingDiagnostics`` (``diagnostics.*``); links the data's shape,
    classes and task into the model; keeps early stopping off while OneCycleLR warms up (``min_epochs``);
    ``--preset NAME`` loads a packaged preset. After ``fit`` it scores the best checkpoint on the
    validation (and test) rows, prints one table and writes ``report/`` in the run folder (the logger's
    version folder).

    Bad input raises :class:`UsageError` (a ``ValueError``) with a message naming the flag, from Python
    too (``FocalMixCLI(args=[...], run=False)``).
    """

    command: str | None = None  # the name shown in messages when not the subcommand (`report`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", {"max_epochs": 100})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault(
            "parser_kwargs",
            {
                "description": "focalmix: focal loss, label smoothing and mixup for imbalanced classifiers."
                " Commands: fit, validate, test, predict, report (figures from a checkpoint), tune (Optuna),"
                " export (ONNX/TorchScript); each with --help. Presets: focalmix fit --preset"
                f" {'|'.join(PRESETS)}. --verbose shows all of Lightning's output, --debug tracebacks."
            },
        )
        self.verbose = False
        super().__init__(FocalMixClassifier, FocalMixDataModule, *args, **kwargs)

    # ------------------------------------------------------------------------------------------------
    # parser

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # errors come back as exceptions (printed by main() in one line); no prefix matching of flags
        kwargs.update(exit_on_error=False, allow_abbrev=False)
        return super().init_parser(**kwargs)

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        # as Lightning's, except that Trainer.test's/validate's `verbose` is our --verbose (all commands)
        parser = self.init_parser(**kwargs)
        self._add_arguments(parser)
        skip = set(self.subcommands()[subcommand]) | {"verbose"}
        self._subcommand_method_arguments[subcommand] = parser.add_method_arguments(
            klass, subcommand, skip=skip
        )
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {"early_stopping.monitor": "val/loss", "early_stopping.mode": "min", "early_stopping.patience": 8}
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {"checkpoint.monitor": "val/loss", "checkpoint.mode": "min", "checkpoint.filename": "best"}
        )
        # Lightning 2.6 writes `save_last` only when a best checkpoint is written in the same step, so
        # last.ckpt (what a resume needs) comes from a second, unmonitored callback saving every epoch.
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False}
        )
        parser.link_arguments("checkpoint.dirpath", "last_checkpoint.dirpath")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(TrainingDiagnostics, "diagnostics")
        parser.add_argument(
            "--scale_batch_size",
            type=bool,
            default=False,
            help="fit: before training, find the largest batch size that fits in memory with Lightning's"
            " Tuner (doubling from 2 up to the training split); combine with --model.lr_scaling linear to"
            " follow the spec's advice of adjusting the learning rate with the batch size.",
        )
        parser.add_argument(
            "--lr_find",
            type=bool,
            default=False,
            help="fit: before training, run Lightning's learning-rate range test (100 steps) and use its"
            " suggestion as --model.learning_rate, the peak of the OneCycle schedule.",
        )
        parser.add_argument(
            "--report",
            type=bool,
            default=True,
            help="fit: write report/ (report.html + PNG figures) in the run folder; needs"
            ' matplotlib (pip install "focalmix[report]").',
        )
        parser.add_argument(
            "--detections",
            type=bool,
            default=False,
            help="predict (wake words on long recordings): write the detected events (path, start, peak"
            " probability; runs of windows above the threshold, at most one per"
            " --data.refractory_seconds) instead of one row per window.",
        )
        parser.link_arguments("detections", "prediction_writer.detections")
        parser.add_argument(
            "--verbose",
            type=bool,
            default=False,
            help="show everything Lightning prints (seed, devices, warnings, model summary, result tables).",
        )
        for name in LINKS:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if isinstance(args, dict | Namespace):
            self.config = parser.parse_object(args)
        else:
            argv = expand_args(list(sys.argv[1:] if args is None else args))
            _help(self, argv)
            try:
                self.config = parser.parse_args(argv)
            except ArgumentError as exc:
                raise UsageError(*parse_error_message(exc, self, argv)) from exc
        sub = self.config.get("subcommand")
        self.verbose = bool((self.config[sub] if sub else self.config).get("verbose"))
        quiet_console(self.verbose)  # before the seed is set: that prints too

    def _valid_flags(self, subcommand: str | None) -> list[str]:
        parser = self._parser(subcommand) if subcommand else self.parser
        flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
        return [*flags, "--preset", "--help_all", "--debug"]

    # ------------------------------------------------------------------------------------------------
    # checkpoint, settings, instantiation

    def _parse_ckpt_path(self) -> None:
        # Lightning applies the checkpoint's model hyperparameters to the config. The ones our links set
        # come from the data instead (the same values, since the data's hyperparameters are applied too).
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or (ckpt_path in ("last", "best", "hpc", "registry") and subcommand == "fit"):
            return
        ckpt = load_checkpoint(ckpt_path)
        model_hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k not in LINKS}
        model_hparams.pop("_instantiator", None)
        model_hparams.pop("_class_path", None)
        update: dict[str, Any] = {"model": model_hparams}
        data_hparams = ckpt.get("datamodule_hyper_parameters") or {}
        defaults = self._parser(subcommand).get_defaults()["data"]
        current = self.config[subcommand]["data"]
        # the training run's data settings, except where this command line sets its own
        update["data"] = {
            k: v for k, v in data_hparams.items() if k in current and current[k] == defaults.get(k)
        }
        # The weights were trained on the checkpoint's table encoding (categories in its order, its
        # medians): the data is encoded with that one, never refitted on the rows at hand.
        spec = ckpt["hyper_parameters"].get("preprocessing")
        source = update["data"].get("source", current.get("source"))
        if spec is None and is_table(source):
            raise UsageError(
                f"--ckpt_path: {ckpt_path} holds no table encoding (it was trained before focalmix encoded"
                " tables inside the model, or on arrays); its inputs cannot be rebuilt from a table",
                "train it again with this version of focalmix",
            )
        update["data"]["preprocessing"] = spec
        positive = _checkpoint_positive(ckpt, data_hparams)
        if positive is not None and current.get("positive_class") == defaults.get("positive_class"):
            update["data"]["positive_class"] = positive
        try:
            self.config = self.parser.parse_object({subcommand: update}, self.config)
        except ArgumentError as exc:
            raise UsageError(f"--ckpt_path: the hyperparameters in {ckpt_path} do not parse: {exc}") from exc
        self._ckpt = ckpt

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer, model = config["trainer"], config["model"]
        if self.subcommand == "fit":
            _check_trains(trainer)
        # Early stopping never ends a run while the one-cycle warmup is still raising the learning rate:
        # the Trainer ignores a stop signal until min_epochs, here the warmup's share of max_epochs.
        max_epochs = trainer.get("max_epochs")
        warmup = model.get("warmup_pct", 0.1) if isinstance(model, dict) else model.warmup_pct
        if max_epochs and max_epochs > 0:
            trainer["min_epochs"] = max(trainer.get("min_epochs") or 0, math.ceil(warmup * max_epochs))
        name = self.command or self.subcommand
        if self.subcommand in ("validate", "test", "predict") and not config.get("ckpt_path"):
            raise UsageError(
                f"`focalmix {name}` needs trained weights: give --ckpt_path",
                "the `best.ckpt` or `last.ckpt` under the fit run's checkpoints/ folder",
            )
        if self.subcommand not in (None, "fit"):
            # scoring or predicting writes no lightning_logs/version_N and no config.yaml of its own
            if trainer.get("logger") in (None, True):
                trainer["logger"] = False
            self.save_config_callback = None
        if not self.verbose and trainer.get("enable_model_summary") is None:
            trainer["enable_model_summary"] = False  # ConsoleSummary prints one line instead

    def instantiate_classes(self) -> None:
        with user_errors(self):
            super().instantiate_classes()

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        ours = [ConsoleSummary()]
        given = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in given
        ):
            ours.append(FocalMixProgressBar())
        preemption = _preemption_callback()
        if (
            self.subcommand == "fit"
            and preemption is not None
            and not any(type(c) is type(preemption) for c in given)
        ):
            ours.append(preemption)
        trainer = super()._instantiate_trainer(config, [*callbacks, *ours])
        ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand == "fit" else None
        if ckpt_path and config.get("logger") in (None, True):
            trainer.loggers = resume_logger(ckpt_path) or trainer.loggers
        if trainer.logger is None:  # LearningRateMonitor refuses to run without a logger
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        return trainer

    # ------------------------------------------------------------------------------------------------
    # running

    def _run_subcommand(self, subcommand: str) -> None:
        stage = {"fit": "fit", "validate": "validate", "test": "test", "predict": "predict"}[subcommand]
        with user_errors(self):  # reading a test/predict file happens here: its errors are the user's
            self.datamodule.setup(stage)
        if subcommand == "fit" and self._already_finished():
            return
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        kwargs = self._prepare_subcommand_kwargs(subcommand)
        if subcommand in ("validate", "test"):
            kwargs["verbose"] = self.verbose
        try:
            getattr(self.trainer, subcommand)(**kwargs)
        except ResumeScheduleError as exc:
            raise UsageError(
                f"--ckpt_path: {str(exc).split(' (')[0]}",
                "resume with the original --trainer.max_epochs (and batch size, devices), or start a new"
                " fit without --ckpt_path",
            ) from exc
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _already_finished(self) -> bool:
        ckpt = getattr(self, "_ckpt", None)
        if ckpt is None:
            return False
        done = _epochs_done(ckpt)
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
        config = self.config["fit"]
        if not (config.get("scale_batch_size") or config.get("lr_find")):
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
            # the range test counts steps (100): an epoch limit would cut it short on a small table
            max_epochs = self.trainer.fit_loop.max_epochs
            self.trainer.fit_loop.max_epochs = max(max_epochs or 0, 100)
            try:
                finder = tuner.lr_find(self.model, datamodule=self.datamodule)
            finally:
                self.trainer.fit_loop.max_epochs = max_epochs
            lr = self.model.hparams.learning_rate
            if finder is None or finder.suggestion() is None:
                print(f"focalmix: the range test gave no suggestion; keeping --model.learning_rate {lr:.3g}")
            else:
                print(
                    f"focalmix: learning rate {lr:.3g} from the range test (--model.learning_rate {lr:.3g})"
                )

    def after_fit(self) -> None:
        trainer, data = self.trainer, self.datamodule
        if trainer.fast_dev_run:
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
            print(_fit_summary(run, best, columns, _positive(data)))
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
        print(metrics_table({prefix: values}, _positive(self.datamodule)))


class _ReportCLI(FocalMixCLI):
    """``focalmix report``: parsed like ``validate``; loads the checkpoint and writes the report."""

    command = "report"

    def _run_subcommand(self, subcommand: str) -> None:
        ckpt = Path(self.config[subcommand]["ckpt_path"])
        with user_errors(self):
            self.datamodule.setup("validate")
        self._score("validate", str(ckpt))  # loads the weights, calibration and threshold
        self._write_report(ckpt.parent.parent / "report")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a focalmix checkpoint, or raise :class:`UsageError` naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"--ckpt_path: no checkpoint at {path}",
            "give the best.ckpt or last.ckpt under a fit run's checkpoints/ folder",
        )
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # zip, pickle and EOF errors of a cut-short or foreign file: all the user's
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"--ckpt_path: {path} is not a readable checkpoint (truncated or corrupted? {reason})"
        ) from exc
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "focal_gamma" not in hparams or "state_dict" not in ckpt:
        raise UsageError(
            f"--ckpt_path: {path} is not a focalmix checkpoint (no FocalMixClassifier hyperparameters in it)"
        )
    try:  # before jsonargparse or Lightning import anything the checkpoint names
        check_hyperparameters([hparams, ckpt.get("datamodule_hyper_parameters")], f"--ckpt_path {path}")
    except UntrustedClassError as err:
        raise UsageError(err.summary, err.hint) from None
    return ckpt


def resume_logger(ckpt_path: str) -> list[Any] | None:
    """A resumed fit logs into its run folder: the default logger pinned to the checkpoint's version.

    Only for checkpoints under ``<save_dir>/<name>/<version>/checkpoints/`` of a folder a logger wrote
    (``hparams.yaml`` there); else None (Lightning's default logger: a new version folder).
    """
    run = Path(ckpt_path).resolve().parent.parent
    if Path(ckpt_path).resolve().parent.name != "checkpoints" or not (run / "hparams.yaml").is_file():
        return None
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    kind = TensorBoardLogger if any(run.glob("events.out.tfevents.*")) else CSVLogger
    rows = _logged_rows(run / "metrics.csv", ckpt_path) if kind is CSVLogger else []
    with warnings.catch_warnings():  # "the folder exists and is not empty": on purpose
        warnings.simplefilter("ignore")
        logger = kind(save_dir=str(run.parent.parent), name=run.parent.name, version=run.name)
        if kind is CSVLogger:
            # Lightning's CSV writer deletes metrics.csv when it opens the folder: hand it back the rows
            # logged up to the checkpoint, so the curves (and the report) cover the whole run
            writer = logger.experiment
            writer.metrics = rows
    return [logger]


def _logged_rows(csv_path: Path, ckpt_path: str) -> list[dict[str, Any]]:
    """Rows of a run's metrics.csv logged up to the checkpoint's step (later ones are logged again)."""
    import csv

    if not csv_path.is_file():
        return []
    step = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("global_step", 0)
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    return [r for r in rows if r.get("step", "") == "" or float(r["step"]) < step]


def _epochs_done(ckpt: dict[str, Any]) -> int:
    try:
        # saved in on_train_epoch_end: the epoch is "processed" but not yet counted "completed"
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(ckpt.get("epoch", 0))


def _check_trains(trainer: dict[str, Any]) -> None:
    """Refuse settings under which fit would train zero steps (and write nothing)."""
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if max_epochs == 0:
        raise UsageError("--trainer.max_epochs 0 trains nothing; give 1 or more (the default is 100)")
    if max_steps == 0:
        raise UsageError("--trainer.max_steps 0 trains nothing; give -1 (no limit) or a positive number")
    limit = trainer.get("limit_train_batches")
    if limit is not None and limit == 0:
        raise UsageError("--trainer.limit_train_batches 0 trains nothing; give a positive number or fraction")
    if (max_epochs is not None and max_epochs < 0) and (max_steps is None or max_steps < 0):
        raise UsageError(
            f"--trainer.max_epochs {max_epochs} with no --trainer.max_steps never ends, and the one-cycle"
            " schedule needs a finite number of steps; give --trainer.max_epochs >= 1"
        )


def _preemption_callback() -> Any:
    try:
        from focalmix.faults import PreemptionCheckpoint
    except ImportError:
        return None
    return PreemptionCheckpoint()


def _positive(datamodule: Any) -> str | None:
    """A binary task's positive class (``class_names[1]``), for the result tables' header; else None."""
    try:
        return str(datamodule.class_names[1]) if datamodule.task == "binary" else None
    except (AttributeError, IndexError, TypeError):
        return None


def _checkpoint_positive(ckpt: dict[str, Any], data_hparams: dict[str, Any]) -> str | None:
    """The positive class a binary checkpoint was trained with, when its data settings did not name one.

    Checkpoints from before text labels took the minority class as positive coded the label sorting last
    as 1: the weights predict that class, so the data is coded as they were trained.
    """
    hparams = ckpt["hyper_parameters"]
    names = hparams.get("class_names")
    if hparams.get("task") != "binary" or data_hparams.get("positive_class") is not None:
        return None
    if not isinstance(names, list) or len(names) != 2 or str(names[0]) == f"not_{names[1]}":
        return None
    return str(names[1])


def _fit_summary(run: str, best: str, columns: dict[str, dict[str, Any]], positive: str | None = None) -> str:
    if best:
        epoch = torch.load(best, weights_only=True, map_location="cpu").get("epoch", 0)
        head = f"focalmix: best checkpoint: epoch {epoch + 1} ({run}), {best}"
    else:
        head = f"focalmix: no best checkpoint (nothing monitored); last epoch's metrics ({run})"
    if "test" not in columns:
        head += "\n(no test split: add --data.test_fraction 0.2 or --data.test_source FILE for test metrics)"
    return f"{head}\n{metrics_table(columns, positive)}"


# --------------------------------------------------------------------------------------------------
# errors


@contextmanager
def user_errors(cli: FocalMixCLI) -> Iterator[None]:
    """Turn the bad-value errors our constructors and data readers raise into :class:`UsageError`."""
    try:
        yield
    except UsageError:
        raise
    except _USER_ERRORS as exc:
        raise UsageError(_name_flags(str(exc), _group_of(exc), cli)) from exc


def _group_of(exc: BaseException) -> str | None:
    group, tb = None, exc.__traceback__
    while tb is not None:  # the innermost constructor of a configured object
        obj = tb.tb_frame.f_locals.get("self") if tb.tb_frame.f_code.co_name == "__init__" else None
        for cls, name in _GROUPS.items():
            if obj is not None and isinstance(obj, cls):
                group = name
        tb = tb.tb_next
    return group


def _name_flags(message: str, group: str | None, cli: FocalMixCLI) -> str:
    """`dropout` -> `--model.dropout`: messages name the flag the user typed."""
    if group is None:
        return message
    flags = set(cli._valid_flags(cli.subcommand))

    def repl(m: re.Match) -> str:
        flag = f"--{group}.{m.group(1)}"
        return f"`{flag}`" if flag in flags else m.group(0)

    return re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)`", repl, message)


# --------------------------------------------------------------------------------------------------
# arguments and help


def _help(cli: FocalMixCLI, argv: list[str]) -> None:
    """``--help``: the recipe's flags, one line each; ``--help_all``: jsonargparse's full help, plain text."""
    sub = next((a for a in argv if not a.startswith("-")), None)
    if sub is None and ("-h" in argv or "--help" in argv):  # every command, report/tune/export too
        print(top_help())
        raise SystemExit(0)
    if sub not in cli.subcommands():
        return
    parser = cli._parser(sub)
    if "--help_all" in argv:
        print(plain(parser.format_help()))
        raise SystemExit(0)
    if "-h" not in argv and "--help" not in argv:
        return
    print(compact_help(parser, sub, hidden=LINKS))
    raise SystemExit(0)


# --------------------------------------------------------------------------------------------------
# entry point


def _quiet_lightning() -> None:
    """Kept for callers (``focalmix tune``): the quiet console of :func:`focalmix.console.quiet_console`."""
    quiet_console(verbose=False)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``focalmix`` and ``python -m focalmix``: dispatch, and print user errors in one line."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("FOCALMIX_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        _dispatch(argv)
    except SIGTERMException as exc:
        # Lightning stops a fit on SIGTERM with a SystemExit of code None (0): a preempted run must not
        # look successful to a scheduler (PreemptionCheckpoint has saved last.ckpt and said so).
        # 130 after Ctrl-C, 143 after SIGTERM, as a shell reports them.
        from focalmix import faults

        raise SystemExit(128 + (signal.SIGINT if faults.stopped_by == "SIGINT" else signal.SIGTERM)) from exc
    except UsageError as exc:
        _fail(exc, exc.message, exc.hint, debug)
    except (ValueError, FileNotFoundError) as exc:
        if not (argv and argv[0] == "tune"):
            raise
        _fail(exc, str(exc).strip().splitlines()[0], None, debug)  # tune's documented bad-input errors


def _fail(exc: BaseException, message: str, hint: str | None, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc)
    print(f"focalmix: error: {message}", file=sys.stderr)
    if hint:
        print(f"  {hint.strip()}", file=sys.stderr)
    raise SystemExit(2)


def _dispatch(argv: list[str]) -> None:
    command = argv[0] if argv else None
    if command == "export":
        from focalmix.export import main as export_main

        export_main(argv[1:])
    elif command == "tune":
        quiet_console("--verbose" in argv)
        from focalmix.tune import main as tune_main

        tune_main(argv[1:])
    elif command == "report":
        _ReportCLI(args=["validate", *argv[1:]])
    else:
        FocalMixCLI(args=argv)
