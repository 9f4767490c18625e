"""One ``focalmix tune`` trial: the ``focalmix fit`` a user would type, with the trial's sampled values.

Every trial is that ``fit`` command plus the trial's sampled ``--model.*`` / ``--data.*`` values, its own
seed and its own folder, run in this process. Trials are pruned by Optuna's ``MedianPruner`` through
optuna-integration's ``PyTorchLightningPruningCallback``, judging only the fit's own validation epochs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from focalmix.cli_base import FocalMixCLI
from focalmix.tune_space import metric_direction
from focalmix.tune_study import derive_seed, format_value

__all__ = ["ARGS_WARNING", "FitPruning", "Objective", "TrialCLI", "suggest", "trial_line"]

# LightningCLI warns when given `args` while sys.argv holds arguments too: here they are `tune ...`.
ARGS_WARNING = ".*LightningCLI's args parameter.*"


class TrialCLI(FocalMixCLI):
    """``focalmix fit`` for one trial: hands its Trainer to ``on_trainer`` before training starts."""

    def __init__(self, *args: Any, on_trainer: Any, **kwargs: Any) -> None:
        self._on_trainer = on_trainer
        super().__init__(*args, **kwargs)

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        self._on_trainer(trainer)
        return trainer


class FitPruning(PyTorchLightningPruningCallback):
    """optuna-integration's pruning callback, judging only the fit's own validation epochs, and counting them.

    After training, ``focalmix fit`` scores the best checkpoint once more (a ``validate`` run): reported to
    the trial, that score read as one more epoch (6 for a 5-epoch trial) and could prune a finished trial.
    The epochs run so far are kept in the trial's ``epochs`` user attribute.
    """

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._trial.set_user_attr("epochs", int(pl_module.current_epoch) + 1)
        super().on_validation_end(trainer, pl_module)


@contextlib.contextmanager
def _output_to(path: Path | None):
    """Send what a trial prints (its ``focalmix fit`` lines, warnings, Lightning's log) to ``path``."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers = [
        h
        for name in ("lightning.pytorch", "lightning.fabric", "lightning")
        for h in logging.getLogger(name).handlers
        if type(h) is logging.StreamHandler
    ]
    with open(path, "a", encoding="utf-8") as log:
        streams = [h.setStream(log) for h in handlers]
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            for handler, stream in zip(handlers, streams, strict=True):
                handler.setStream(stream)


def trial_line(trial: optuna.trial.FrozenTrial, metric: str) -> str:
    """One console line for a finished trial: number, state, epochs, the metric and the params.

    Example:
        >>> from optuna.trial import create_trial
        >>> from optuna.distributions import FloatDistribution
        >>> t = create_trial(value=0.91, params={"model.dropout": 0.31},
        ...                  distributions={"model.dropout": FloatDistribution(0.2, 0.7)},
        ...                  user_attrs={"epochs": 5})
        >>> trial_line(t, "val/auroc")  # a trial made outside a study is numbered -1
        'focalmix tune: trial -1 complete, 5 epochs, val/auroc 0.91 (its best epoch); dropout=0.31'
    """
    epochs = trial.user_attrs.get("epochs", len(trial.intermediate_values))
    epochs = f"{epochs} epoch{'' if epochs == 1 else 's'}"
    if trial.state == TrialState.PRUNED:
        head = f"trial {trial.number} pruned after {epochs}"
        last = (
            trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None
        )
        score = f"{metric} {last:.4g} (last epoch)" if last is not None else f"{metric} -"
    else:
        head = f"trial {trial.number} {trial.state.name.lower()}, {epochs}"
        score = f"{metric} {trial.value:.4g} (its best epoch)" if trial.value is not None else f"{metric} -"
    params = ", ".join(f"{k.rpartition('.')[2]}={format_value(v)}" for k, v in trial.params.items())
    return f"focalmix tune: {head}, {score}; {params}".rstrip("; ")


def _flag(name: str, value: Any) -> str:
    return f"--{name}={value if isinstance(value, str) else yaml.safe_dump(value).splitlines()[0]}"


def suggest(trial: optuna.Trial, name: str, spec: dict[str, Any]) -> Any:
    """The trial's value for one search-space entry (``float``, ``int`` or ``categorical``)."""
    if spec["type"] == "categorical":
        return trial.suggest_categorical(name, spec["choices"])
    suggest = trial.suggest_float if spec["type"] == "float" else trial.suggest_int
    return suggest(name, spec["low"], spec["high"], log=spec["log"], step=spec.get("step"))


class Objective:
    """One trial: sample the space, run ``focalmix fit`` with those values, return the best metric value.

    The best checkpoint is chosen by the tuned metric, so the value returned is the one its weights reach.
    """

    def __init__(self, fit_args: list[str], space: dict, metric: str, seed: int, output: Path) -> None:
        self.fit_args, self.space, self.metric, self.seed, self.output = fit_args, space, metric, seed, output
        # a trial's own output goes to trial_NNN/fit.log; --verbose keeps it on the console
        self.quiet = not any(a == "--verbose" or a.startswith("--verbose=") for a in fit_args)

    def __call__(self, trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, spec) for name, spec in self.space.items()}
        seed, folder = derive_seed(self.seed, trial.number, "fit"), self.output / f"trial_{trial.number:03d}"
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("folder", str(folder))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # where its folder is
        mode = "min" if metric_direction(self.metric) == "minimize" else "max"
        # figures for every trial cost seconds each; a --report flag of the user's still decides
        report = [] if any(a.startswith("--report") for a in self.fit_args) else ["--report=false"]
        args = [
            "fit",
            *self.fit_args,
            *report,
            *(_flag(k, v) for k, v in params.items()),
            f"--seed_everything={seed}",
            f"--trainer.default_root_dir={folder}",
            f"--checkpoint.dirpath={folder / 'checkpoints'}",
            f"--checkpoint.monitor={self.metric}",
            f"--checkpoint.mode={mode}",
        ]
        box: dict[str, Any] = {}

        def attach(trainer: Any) -> None:
            trainer.callbacks.append(FitPruning(trial, monitor=self.metric))
            box["trainer"] = trainer

        try:
            with warnings.catch_warnings(), _output_to(folder / "fit.log" if self.quiet else None):
                warnings.filterwarnings("ignore", ARGS_WARNING)
                TrialCLI(args=args, on_trainer=attach)
        except MisconfigurationException as err:  # ModelCheckpoint found no such key after validation
            if self.metric not in str(err):
                raise
            raise self._never_logged(trial, box) from err
        trainer = box["trainer"]
        best = next((c for c in trainer.checkpoint_callbacks if c.monitor == self.metric), None)
        value = best.best_model_score if best is not None else None
        value = trainer.callback_metrics.get(self.metric) if value is None else value
        if value is None:
            raise self._never_logged(trial, box)
        return float(value)

    def _never_logged(self, trial: optuna.Trial, box: dict) -> ValueError:
        logged = sorted(box["trainer"].callback_metrics) if "trainer" in box else []
        return ValueError(
            f"--tune.metric {self.metric!r} was never logged in trial {trial.number}; logged: {logged}."
        )
