"""``FocalMixCLI``: LightningCLI with the recipe's defaults, its callbacks, presets and short errors.

User errors (a bad flag or value, a missing file, bad data, an unreadable checkpoint) raise
:class:`UsageError`, which :func:`focalmix.cli.main` prints as one line. Built on LightningCLI's public
hooks; the one private method overridden, ``_parse_ckpt_path``, and the private ``_parser`` it calls are
pinned to the Lightning versions they were read from in tests/test_architecture.py.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from focalmix._cli_text import (
    LINKS,
    PRESETS,
    UsageError,
    compact_help,
    expand_args,
    parse_error_message,
    top_help,
)
from focalmix.callbacks import PredictionWriter
from focalmix.cli_checkpoint import checkpoint_settings, load_checkpoint, resume_logger
from focalmix.cli_errors import user_errors
from focalmix.cli_run import RunHooks
from focalmix.console import ConsoleSummary, FocalMixProgressBar, plain, quiet_console
from focalmix.data import FocalMixDataModule
from focalmix.diagnostics import TrainingDiagnostics
from focalmix.module import FocalMixClassifier

__all__ = ["FocalMixCLI", "ReportCLI"]


class FocalMixCLI(RunHooks, LightningCLI):
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

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # Trainer.test's/validate's `verbose` is our --verbose (all commands), not a flag of its own
        return {name: {*skip, "verbose"} for name, skip in LightningCLI.subcommands().items()}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        _add_callback_arguments(parser)
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
            " probability; a window at or above the threshold fires unless one fired less than"
            " --data.refractory_seconds before) instead of one row per window.",
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
                raise UsageError(*parse_error_message(exc, self.valid_flags, argv)) from exc
        sub = self.config.get("subcommand")
        self.verbose = bool((self.config[sub] if sub else self.config).get("verbose"))
        quiet_console(self.verbose)  # before the seed is set: that prints too

    def valid_flags(self, subcommand: str | None) -> list[str]:
        """Every ``--flag`` of a command (None: of the main parser), for suggestions and messages."""
        parser = self._parser(subcommand) if subcommand else self.parser
        flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
        return [*flags, "--preset", "--help_all", "--debug"]

    # ------------------------------------------------------------------------------------------------
    # checkpoint, settings, instantiation

    def _parse_ckpt_path(self) -> None:
        # Private in LightningCLI, and replaced, not extended: Lightning's loads the checkpoint before the
        # trust check of `load_checkpoint` and applies every model hyperparameter, the linked ones too.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or (ckpt_path in ("last", "best", "hpc", "registry") and subcommand == "fit"):
            return
        ckpt = load_checkpoint(ckpt_path)
        defaults = self._parser(subcommand).get_defaults()["data"]
        update = checkpoint_settings(ckpt, ckpt_path, defaults, self.config[subcommand]["data"])
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
        with user_errors(lambda: self.valid_flags(self.subcommand)):
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = {
            **(self.config_init.get(str(self.subcommand), self.config_init).get("trainer") or {}),
            **kwargs,
        }
        # Ours go in as "persistent callbacks" (LightningCLI's trainer_defaults), after the configured ones.
        defaults = self.trainer_defaults
        persistent = defaults.get("callbacks") or []
        persistent = persistent if isinstance(persistent, list) else [persistent]
        self.trainer_defaults = {**defaults, "callbacks": [*self._own_callbacks(config), *persistent]}
        try:
            trainer = super().instantiate_trainer(**kwargs)
        finally:
            self.trainer_defaults = defaults
        ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand == "fit" else None
        if ckpt_path and config.get("logger") in (None, True):
            trainer.loggers = resume_logger(ckpt_path) or trainer.loggers
        if trainer.logger is None:  # LearningRateMonitor refuses to run without a logger
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        return trainer

    def _own_callbacks(self, config: dict[str, Any]) -> list[Any]:
        """The console's callbacks, and the preemption checkpoint for fit, unless the config has its own."""
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        ours: list[Any] = [ConsoleSummary()]
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
        return ours


class ReportCLI(FocalMixCLI):
    """``focalmix report``: parsed like ``validate``; loads the checkpoint and writes the report."""

    command = "report"

    def validate(self, **kwargs: Any) -> None:
        ckpt = Path(self.config["validate"]["ckpt_path"])
        self._score("validate", str(ckpt))  # loads the weights, calibration and threshold
        self._write_report(ckpt.parent.parent / "report")

    def after_validate(self) -> None:
        pass  # the report, not a table of scores


def _add_callback_arguments(parser: LightningArgumentParser) -> None:
    """The configurable callbacks: early stopping, best and last checkpoints, LR monitor, writers."""
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
    parser.set_defaults({"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False})
    parser.link_arguments("checkpoint.dirpath", "last_checkpoint.dirpath")
    parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
    parser.set_defaults({"lr_monitor.logging_interval": "step"})
    parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
    parser.add_lightning_class_args(TrainingDiagnostics, "diagnostics")


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
