"""The ``focalmix`` command: LightningCLI with the recipe's defaults, its callbacks and argument links."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.tuner import Tuner

from focalmix.callbacks import PredictionWriter
from focalmix.data import FocalMixDataModule
from focalmix.diagnostics import TrainingDiagnostics
from focalmix.module import FocalMixClassifier

# Datamodule attributes the model is built from; read after the datamodule is created.
LINKS = ("num_features", "num_classes", "task", "input_shape", "class_names", "feature_names")


class FocalMixCLI(LightningCLI):
    """LightningCLI for :class:`FocalMixClassifier` and :class:`FocalMixDataModule`.

    Adds Lightning's ``EarlyStopping`` (``early_stopping.*``, monitor ``val/loss``, patience 8),
    ``ModelCheckpoint`` (``checkpoint.*``: ``best.ckpt`` by ``val/loss``; ``last_checkpoint.*``: ``last.ckpt``
    every epoch, in the same folder), ``LearningRateMonitor`` and the
    CSV :class:`~focalmix.callbacks.PredictionWriter` (``prediction_writer.path``) and
    :class:`~focalmix.diagnostics.TrainingDiagnostics` (``diagnostics.*``); links the data's shape,
    classes and task into the model; keeps early stopping off while OneCycleLR warms up (``min_epochs``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", {"max_epochs": 100})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault(
            "parser_kwargs",
            {
                "description": "focalmix: focal loss, label smoothing and mixup for imbalanced classifiers."
                " Subcommands fit, validate, test, predict (each with --help); `focalmix export --help`"
                " exports a checkpoint to ONNX or TorchScript."
            },
        )
        super().__init__(FocalMixClassifier, FocalMixDataModule, *args, **kwargs)

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
        for name in LINKS:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # Lightning applies the checkpoint's model hyperparameters to the config. The ones our links set
        # come from the data instead (the same values, since the data's hyperparameters are applied too).
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        model_hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if k not in LINKS}
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
        self.config = self.parser.parse_object({subcommand: update}, self.config)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer, model = config["trainer"], config["model"]
        # Early stopping never ends a run while the one-cycle warmup is still raising the learning rate:
        # the Trainer ignores a stop signal until min_epochs, here the warmup's share of max_epochs.
        max_epochs = trainer.get("max_epochs")
        warmup = model.get("warmup_pct", 0.1) if isinstance(model, dict) else model.warmup_pct
        if max_epochs and max_epochs > 0:
            trainer["min_epochs"] = max(trainer.get("min_epochs") or 0, math.ceil(warmup * max_epochs))
        if self.subcommand in ("validate", "test", "predict") and not config.get("ckpt_path"):
            raise ValueError(
                f"`focalmix {self.subcommand}` needs trained weights: give --ckpt_path (the `best.ckpt` or"
                " `last.ckpt` under the fit run's checkpoints/ folder)."
            )

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.logger is None:  # LearningRateMonitor refuses to run without a logger
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        return trainer

    def before_fit(self) -> None:
        config = self.config["fit"]
        if not (config.get("scale_batch_size") or config.get("lr_find")):
            return
        # The Tuner runs the module's own configure_optimizers: the range test swaps OneCycleLR for its own
        # schedule while it runs, then fit builds OneCycleLR again from the (updated) learning_rate.
        tuner = Tuner(self.trainer)
        if config.get("scale_batch_size"):
            size = tuner.scale_batch_size(self.model, datamodule=self.datamodule, mode="power")
            print(f"focalmix: batch size {size} (--data.batch_size {size})")
        if config.get("lr_find"):
            finder = tuner.lr_find(self.model, datamodule=self.datamodule)
            lr = self.model.hparams.learning_rate
            if finder is None or finder.suggestion() is None:
                print(f"focalmix: the range test gave no suggestion; keeping --model.learning_rate {lr:.3g}")
            else:
                print(
                    f"focalmix: learning rate {lr:.3g} from the range test (--model.learning_rate {lr:.3g})"
                )

    def after_fit(self) -> None:
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        if best and self.trainer.is_global_zero:
            score = self.trainer.checkpoint_callback.best_model_score
            print(f"focalmix: best checkpoint {best} (val/loss {float(score):.4g})")
        data = self.datamodule
        if (data.test_source is not None or data.test_fraction > 0) and not self.trainer.fast_dev_run:
            # the held-out split is scored once, with the best weights, as lightning-hydra-template does
            self.trainer.test(self.model, datamodule=data, ckpt_path="best" if best else None)


def _quiet_lightning() -> None:
    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Tip:" not in record.getMessage()

    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())
    # Batches are whole tensors sliced in the main process: worker processes would only add overhead.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")


def main(args: list[str] | None = None) -> None:
    """Entry point of ``focalmix`` and ``python -m focalmix``."""
    _quiet_lightning()
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] == "export":
        from focalmix.export import main as export_main

        export_main(argv[1:])
        return
    FocalMixCLI(args=args)
