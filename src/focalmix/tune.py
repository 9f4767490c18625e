"""``focalmix tune``: an Optuna study over the recipe's hyperparameters, one ``focalmix fit`` per trial.

Every trial is the ``fit`` command the user would type (same ``--config``, ``--data.*``, ``--model.*``,
``--trainer.*`` flags) plus the trial's sampled ``--model.*`` / ``--data.*`` values, its own seed and its
own folder, run in this process. The ranges come from a YAML search space (the packaged
``configs/search/spec.yaml``: the spec's range for every parameter). Trials are pruned by Optuna's
``MedianPruner`` through optuna-integration's ``PyTorchLightningPruningCallback``; the median is only
consulted after the OneCycle warmup, whose epochs say little about the final model.

The study lives in an Optuna RDB storage: an SQLite file in the run folder by default, so running the same
command again continues it; any SQLAlchemy URL (PostgreSQL, MySQL) lets several processes or machines run
the same command against one database and share one study of ``--tune.n_trials`` trials in total.

Trials are compared by ``--tune.metric``, the study's objective (default ``val/auroc``; ``val/acc`` for
multiclass): a trial's value is the best value it reached, its ``best.ckpt`` is the epoch that reached it,
and ``best.yaml`` chooses its checkpoint by the same metric, so the model it trains is judged as the trial
was. A plain ``focalmix fit`` chooses by ``val/loss``.

Outputs in the run folder: ``best.yaml`` (``focalmix fit --config best.yaml`` trains the best trial's
model), ``trials.csv`` (params, metric, epochs, state per trial), ``importance.png`` (with matplotlib),
and ``trial_NNN/`` folders (``fit.log``: the trial's own output; checkpoints only for the best trial unless
``--tune.keep_checkpoints``). The console shows one line per trial and, at the end, the best checkpoint.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import secrets
import shutil
import socket
import sys
import time
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from focalmix.cli import LINKS, FocalMixCLI, _quiet_lightning
from focalmix.console import data_summary
from focalmix.data import FocalMixDataModule
from focalmix.faults import atomic_write
from focalmix.module import FocalMixClassifier

# Logged every validation epoch (module.py); `val/threshold` is a setting, not a score to optimize.
_METRICS = {
    "binary": (
        "loss",
        "auroc",
        "ap",
        "ece",
        "ece_uncalibrated",
        "brier",
        "precision",
        "recall",
        "f1",
        "fpr",
        "acc",
    ),
    "multiclass": ("loss", "auroc", "ap", "ece", "ece_uncalibrated", "brier", "acc", "f1"),
    "multilabel": ("loss", "auroc", "ap", "ece", "ece_uncalibrated", "brier", "acc", "f1"),
}
_MINIMIZE = ("loss", "ece", "ece_uncalibrated", "brier", "fpr")
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_FLAGS = {
    "metric": "validation metric to optimize. Default: val/auroc (binary, multilabel), val/acc (multiclass)",
    "n_trials": "trials in the study, all workers together (pruned ones count). Default: 20",
    "timeout": "seconds after which this process starts no new trial. Default: none",
    "storage": "Optuna RDB storage URL. Default: sqlite:///<output>/study.db",
    "study_name": "Default: <data source>-<metric>-<hash of the data settings>",
    "seed": "seed of the TPE sampler; each trial's seed derives from it and the trial number",
    "search_space": "YAML search space. Default: the packaged configs/search/spec.yaml",
    "space.<param>": "one entry, e.g. --tune.space.model.dropout '{low: 0.3, high: 0.5}'; null drops it",
    "keep_checkpoints": "keep every trial's checkpoints, not only the best trial's. Default: false",
    "output": "run folder. Default: tune_runs/<study_name>",
    "pruner_startup_trials": "complete trials before any pruning. Default: 3",
    "pruner_warmup_epochs": "epochs never pruned. Default: the OneCycle warmup, ceil(warmup_pct*max_epochs)",
}
# LightningCLI warns when given `args` while sys.argv holds arguments too: here they are `tune ...`.
_ARGS_WARNING = ".*LightningCLI's args parameter.*"
_SPEC_KEYS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}}


def metric_direction(metric: str) -> str:
    """``"minimize"`` for losses and error rates, ``"maximize"`` for scores.

    Example:
        >>> metric_direction("val/brier"), metric_direction("val/auroc")
        ('minimize', 'maximize')
    """
    return "minimize" if metric.split("/", 1)[-1] in _MINIMIZE else "maximize"


def check_metric(metric: str, task: str) -> None:
    """Raise ``ValueError`` unless the module logs ``metric`` every validation epoch for ``task``."""
    known = [f"val/{m}" for m in _METRICS[task]]
    if metric not in known:
        raise ValueError(f"--tune.metric {metric!r} is not logged for a {task} task; choose one of {known}.")


def valid_parameters() -> list[str]:
    """Search-space names: the classifier's and the datamodule's arguments (not those set from the data)."""
    names = []
    for prefix, cls in (("model", FocalMixClassifier), ("data", FocalMixDataModule)):
        params = inspect.signature(cls.__init__).parameters
        names += [f"{prefix}.{p}" for p in params if p != "self" and not (prefix == "model" and p in LINKS)]
    return names


def check_space(space: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate a search space ``{name: {type: float|int|categorical, ...}}``; return it normalized.

    Raises:
        ValueError: an unknown parameter (the valid ones are listed), an unknown type or key, an empty
            range (``low >= high``), a log range that reaches 0, or no choices.

    Example:
        >>> check_space({"model.dropout": {"type": "float", "low": 0.2, "high": 0.7}})
        {'model.dropout': {'type': 'float', 'low': 0.2, 'high': 0.7, 'log': False}}
    """
    if not isinstance(space, dict) or not space:
        raise ValueError(f"the search space must be a non-empty mapping of parameters, got {space!r}.")
    valid, out = valid_parameters(), {}
    for name, spec in space.items():
        if name not in valid:
            raise ValueError(f"unknown parameter {name!r} in the search space; valid ones are: {valid}.")
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise ValueError(
                f"search space {name!r}: `type` must be float, int or categorical, got {spec!r}."
            )
        kind, rest = spec["type"], {k: v for k, v in spec.items() if k != "type"}
        if kind == "categorical":
            choices = rest.pop("choices", None)
            if rest or not isinstance(choices, list) or not choices:
                raise ValueError(
                    f"search space {name!r}: categorical needs only a non-empty `choices` list, got {spec!r}."
                )
            out[name] = {"type": kind, "choices": choices}
            continue
        if set(rest) - _SPEC_KEYS[kind] or not {"low", "high"} <= set(rest):
            raise ValueError(
                f"search space {name!r}: {kind} takes low, high and optionally log, step; got {spec!r}."
            )
        cast = float if kind == "float" else int
        low, high = cast(rest["low"]), cast(rest["high"])
        if not low < high:
            raise ValueError(
                f"search space {name!r}: empty range, `low` must be < `high`, got {low} and {high}."
            )
        if rest.get("log") and low <= 0:
            raise ValueError(f"search space {name!r}: a log range needs `low` > 0, got {low}.")
        out[name] = {"type": kind, "low": low, "high": high, "log": bool(rest.get("log", False))}
        if rest.get("step") is not None:
            out[name]["step"] = cast(rest["step"])
    return out


def default_space_path() -> Path:
    """The packaged search space: inside the installed package, else the source checkout's configs/."""
    packaged = Path(__file__).parent / "configs" / "search" / "spec.yaml"
    return packaged if packaged.is_file() else Path(__file__).parents[2] / "configs" / "search" / "spec.yaml"


def load_space(path: str | Path | None, overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Read a search-space YAML, apply per-parameter overrides (a dict merges, None removes), validate.

    Example:
        >>> space = load_space(None, {"model.dropout": {"low": 0.3}, "model.mixup_alpha": None})
        >>> space["model.dropout"]["low"], "model.mixup_alpha" in space
        (0.3, False)
    """
    path = Path(path) if path is not None else default_space_path()
    if not path.is_file():
        raise FileNotFoundError(f"--tune.search_space: no file {str(path)!r}.")
    space = yaml.safe_load(path.read_text()) or {}
    if not isinstance(space, dict):
        raise ValueError(f"--tune.search_space {str(path)!r} must hold a mapping of parameters.")
    for name, value in (overrides or {}).items():
        if value is None:
            space.pop(name, None)
        elif not isinstance(value, dict):
            raise ValueError(f"--tune.space.{name} must be a YAML mapping or null, got {value!r}.")
        else:  # new bounds keep the entry's type; a new type replaces the entry
            same_type = value.get("type", space.get(name, {}).get("type")) == space.get(name, {}).get("type")
            space[name] = {**space.get(name, {}), **value} if same_type else value
    return check_space(space)


class TrialSeededSampler(BaseSampler):
    """Optuna's TPE sampler, seeded per trial from ``(seed, trial number)``.

    One seeded TPE sampler per process would draw the same startup parameters in every worker that shares
    a study; seeding by the trial number (unique in the storage) keeps a one-process study reproducible
    and gives every worker its own draws. TPE itself reads the shared history from the storage.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._samplers: dict[int, TPESampler] = {}

    def _tpe(self, trial: Any) -> TPESampler:
        if trial.number not in self._samplers:
            self._samplers[trial.number] = TPESampler(seed=derive_seed(self.seed, trial.number, "sampler"))
        return self._samplers[trial.number]

    def infer_relative_search_space(self, study, trial):  # noqa: D102
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):  # noqa: D102
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: D102
        return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):  # noqa: D102
        self._tpe(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values):  # noqa: D102
        self._samplers.pop(trial.number, TPESampler()).after_trial(study, trial, state, values)


def derive_seed(seed: int, number: int, purpose: str) -> int:
    """A 31-bit seed from a base seed, a trial number and a purpose (numpy's ``SeedSequence``).

    Example:
        >>> derive_seed(0, 3, "fit") == derive_seed(0, 3, "fit") != derive_seed(0, 4, "fit")
        True
    """
    entropy = [seed, number, zlib.crc32(purpose.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


# ---- the command line ------------------------------------------------------------------------------


def _split_argv(argv: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """``--tune.*`` flags (``--tune.x v`` or ``--tune.x=v``) apart from the ``fit`` arguments."""
    tune, rest, i = {}, [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--tune."):
            rest.append(token)
            i += 1
            continue
        key, eq, value = token[len("--tune.") :].partition("=")
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value, i = argv[i + 1], i + 1
        tune[key] = value if (eq or value) else None
        i += 1
    return tune, rest


def _number(flag: str, value: str | None, cast: type, low: float) -> Any:
    try:
        number = cast(value)
    except (TypeError, ValueError):
        raise ValueError(f"--tune.{flag} must be a {cast.__name__} >= {low}, got {value!r}.") from None
    if number < low:
        raise ValueError(f"--tune.{flag} must be >= {low}, got {number}.")
    return number


def parse_tune_args(flags: dict[str, str | None]) -> dict[str, Any]:
    """Validate the ``--tune.*`` flags; return the options with their defaults filled in."""
    opts: dict[str, Any] = {
        "metric": None,
        "n_trials": 20,
        "timeout": None,
        "storage": None,
        "study_name": None,
        "seed": None,
        "search_space": None,
        "keep_checkpoints": False,
        "output": None,
        "pruner_startup_trials": 3,
        "pruner_warmup_epochs": None,
        "space": {},
    }
    for key, value in flags.items():
        if key.startswith("space."):
            opts["space"][key[len("space.") :]] = yaml.safe_load(value) if value is not None else None
        elif key not in opts:
            flags = [f"--tune.{k}" for k in _FLAGS]
            raise ValueError(f"unknown flag --tune.{key}; the tune flags are: {flags}.")
        elif key == "keep_checkpoints":
            if value not in (None, "true", "True", "false", "False"):
                raise ValueError(f"--tune.keep_checkpoints must be true or false, got {value!r}.")
            opts[key] = value in (None, "true", "True")
        elif value is None:
            raise ValueError(f"--tune.{key} needs a value.")
        elif key in ("n_trials", "pruner_startup_trials", "pruner_warmup_epochs", "seed"):
            opts[key] = _number(key, value, int, 1 if key == "n_trials" else 0)
        elif key == "timeout":
            opts[key] = _number(key, value, float, 1e-9)
        else:
            opts[key] = value
    return opts


class _ParseOnlyCLI(FocalMixCLI):
    """Parses the ``fit`` arguments once (base config, task, study name); builds nothing."""

    def instantiate_classes(self) -> None:
        pass


class _TrialCLI(FocalMixCLI):
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
    params = ", ".join(f"{k.rpartition('.')[2]}={_short(v)}" for k, v in trial.params.items())
    return f"focalmix tune: {head}, {score}; {params}".rstrip("; ")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _flag(name: str, value: Any) -> str:
    return f"--{name}={value if isinstance(value, str) else yaml.safe_dump(value).splitlines()[0]}"


def _suggest(trial: optuna.Trial, name: str, spec: dict[str, Any]) -> Any:
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
        params = {name: _suggest(trial, name, spec) for name, spec in self.space.items()}
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
                warnings.filterwarnings("ignore", _ARGS_WARNING)
                _TrialCLI(args=args, on_trainer=attach)
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


# ---- the study and its outputs -----------------------------------------------------------------------


def open_study(url: str, name: str, direction: str, sampler: BaseSampler, pruner: Any) -> optuna.Study:
    """Create or load the study ``name`` in the RDB storage ``url`` (several processes may race here).

    Raises:
        ValueError: the storage cannot be opened, or it holds ``name`` with the other direction.
    """
    racing = ("already exists", "locked", "UNIQUE constraint failed")  # workers creating the schema at once
    for attempt in range(4):
        try:
            # a heartbeat lets the next worker mark trials of a killed process failed instead of running
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # SQLite: wait for a busy writer (another worker) up to 60 s instead of pysqlite's 5 s
                engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=60, grace_period=180
                )
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                direction=direction,
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
            break
        except Exception as err:  # noqa: BLE001 - SQLAlchemy and drivers raise many kinds
            # two workers creating the same tables (or alembic's version row) at once: the loser retries
            if attempt == 3 or not any(text in str(err) for text in racing):
                raise ValueError(
                    f"--tune.storage {url!r} cannot be opened ({type(err).__name__}: {err}). Give an "
                    "SQLAlchemy URL such as sqlite:///study.db or postgresql://user:password@host/db."
                ) from err
            time.sleep(0.5 + attempt)
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {name!r} in {url} was created to {study.direction.name.lower()} its metric, but "
            f"--tune.metric asks to {direction}; choose another --tune.study_name."
        )
    return study


def trials_table(study: optuna.Study, metric: str) -> pd.DataFrame:
    """One row per trial: number, state, the metric, validation epochs run, seed, then the params."""
    rows = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            metric: t.value,
            "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
            "seed": t.user_attrs.get("seed"),
            **t.params,
        }
        for t in study.trials
    ]
    return pd.DataFrame(rows)


def best_config(base_yaml: str, best: optuna.trial.FrozenTrial, metric: str) -> dict[str, Any]:
    """The base ``fit`` config with the best trial's params, seed and checkpoint metric applied."""
    config = yaml.safe_load(base_yaml)
    for name, value in best.params.items():
        section, key = name.split(".", 1)
        config.setdefault(section, {})[key] = value
    config["seed_everything"] = best.user_attrs.get("seed", config.get("seed_everything"))
    config.setdefault("checkpoint", {})["monitor"] = metric
    config["checkpoint"]["mode"] = "min" if metric_direction(metric) == "minimize" else "max"
    return config


def _remove_checkpoints(study: optuna.Study, keep: int | None) -> None:
    for t in study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.FAIL)):
        folder = t.user_attrs.get("folder")
        if t.number != keep and folder and (Path(folder) / "checkpoints").is_dir():
            shutil.rmtree(Path(folder) / "checkpoints", ignore_errors=True)


def _plot_importance(study: optuna.Study, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization.matplotlib import plot_param_importances

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = plot_param_importances(study)
        with atomic_write(out) as tmp:
            ax.figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        matplotlib.pyplot.close(ax.figure)
        return out
    except Exception as err:  # noqa: BLE001 - optional: too few trials, no matplotlib, one parameter
        print(f"focalmix tune: no importance plot ({type(err).__name__}: {err})")
        return None


def write_outputs(
    study: optuna.Study, metric: str, base_yaml: str, output: Path, keep: bool, url: str
) -> None:
    """trials.csv, best.yaml and importance.png in ``output``; prints the table and where things are."""
    table = trials_table(study, metric)
    with atomic_write(output / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        print("focalmix tune: no trial completed yet, so no best.yaml.")
        return
    best = study.best_trial
    text = yaml.safe_dump(best_config(base_yaml, best, metric), sort_keys=False)
    with atomic_write(output / "best.yaml") as tmp:
        tmp.write_text(
            f"# focalmix tune: trial {best.number} of study {study.study_name!r}: {metric} {best.value:.6g}\n"
            f"# trials were compared by {metric} (the study's objective); this config chooses its best.ckpt"
            f" by {metric} too (checkpoint.monitor), as the trial did\n"
            f"#   focalmix fit --config {output / 'best.yaml'}\n{text}"
        )
    if not keep:
        _remove_checkpoints(study, keep=best.number)
    if len(complete) >= 2 and len(best.params) >= 2:
        _plot_importance(study, output / "importance.png")
    params = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
    print(f"focalmix tune: best trial {best.number}, {metric} {best.value:.4g}: {params}")
    ckpt = (
        Path(best.user_attrs.get("folder", output / f"trial_{best.number:03d}")) / "checkpoints" / "best.ckpt"
    )
    if ckpt.is_file():  # another worker's trial may live on another machine
        print(f"focalmix tune: its checkpoint (best epoch by {metric}): {ckpt}")
    print(f"focalmix tune: train it again with `focalmix fit --config {output / 'best.yaml'}`")
    print(f"focalmix tune: trials in {output / 'trials.csv'}; the study: `optuna-dashboard {url}`")


def _base(fit_args: list[str]) -> tuple[str, Any]:
    """The parsed ``fit`` config (as YAML) and its data settings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _ARGS_WARNING)
        cli = _ParseOnlyCLI(args=fit_args, run=False)
    return cli.parser.dump(cli.config, skip_none=False), cli.config


def _study_name(config: Any, metric: str) -> str:
    data = config["data"].as_dict()
    digest = f"{zlib.crc32(yaml.safe_dump(data, sort_keys=True).encode()):08x}"[:6]
    return f"{Path(str(data['source'])).stem}-{metric.replace('/', '_')}-{digest}"


def _usage() -> str:
    lines = [f"  --tune.{k:<22} {v}" for k, v in _FLAGS.items()]
    return "\n".join(
        [
            "usage: focalmix tune [fit arguments] [--tune.* flags]",
            "",
            "Every `focalmix fit` argument applies (see `focalmix fit --help`), and:",
            *lines,
        ]
    )


def main(argv: list[str]) -> None:
    """Entry point of ``focalmix tune``: parse, run this process's share of the study, write the outputs.

    Raises:
        ValueError: a bad ``--tune.*`` value, search space, metric or storage, with the reason.
        FileNotFoundError: ``--tune.search_space`` does not exist.
    """
    if "-h" in argv or "--help" in argv:
        print(_usage())
        return
    _quiet_lightning()
    flags, fit_args = _split_argv(list(argv))
    if "--verbose" not in fit_args:  # one focalmix line per trial says what Optuna's log line would
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    opts = parse_tune_args(flags)
    space = load_space(opts["search_space"], opts["space"])
    base_yaml, config = _base(fit_args)
    datamodule = FocalMixDataModule(**config["data"].as_dict())
    task = datamodule.task
    metric = opts["metric"] or ("val/acc" if task == "multiclass" else "val/auroc")
    check_metric(metric, task)
    name = opts["study_name"] or _study_name(config, metric)
    output = Path(opts["output"] or Path("tune_runs") / name).resolve()
    output.mkdir(parents=True, exist_ok=True)
    url = opts["storage"] or f"sqlite:///{output / 'study.db'}"
    seed = opts["seed"] if opts["seed"] is not None else secrets.randbits(31)
    warmup = opts["pruner_warmup_epochs"]
    if warmup is None:
        warmup = math.ceil(config["model"]["warmup_pct"] * max(config["trainer"]["max_epochs"] or 1, 1))
    pruner = optuna.pruners.MedianPruner(opts["pruner_startup_trials"], n_warmup_steps=warmup)
    study = open_study(url, name, metric_direction(metric), TrialSeededSampler(seed), pruner)
    done = len(study.get_trials(deepcopy=False, states=_FINISHED))
    # the small-class hint is moot when the search tries focal_alpha itself (auto among its choices)
    alpha = "auto" if "model.focal_alpha" in space else config["model"]["focal_alpha"]
    for line in data_summary(datamodule, SimpleNamespace(hparams={"focal_alpha": alpha})):
        print(line)
    print(
        f"focalmix tune: study {name!r} in {url}: {done} of {opts['n_trials']} trials done, sampler seed "
        f"{seed}, output {output}"
    )
    print(
        f"focalmix tune: trials are compared by {metric} ({metric_direction(metric)}), the study's objective;"
        " each trial's best.ckpt is its best epoch by it (a plain fit chooses by val/loss)"
    )
    if done < opts["n_trials"]:
        # every worker stops once the study holds n_trials finished or running trials, so N in total
        stop = optuna.study.MaxTrialsCallback(opts["n_trials"], states=(*_FINISHED, TrialState.RUNNING))
        study.optimize(
            Objective(fit_args, space, metric, seed, output),
            n_trials=opts["n_trials"] - done,
            timeout=opts["timeout"],
            callbacks=[stop, lambda _, trial: print(trial_line(trial, metric), flush=True)],
            gc_after_trial=True,
        )
    write_outputs(study, metric, base_yaml, output, opts["keep_checkpoints"], url)


if __name__ == "__main__":
    main(sys.argv[1:])
