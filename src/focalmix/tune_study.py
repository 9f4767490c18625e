"""``focalmix tune``'s study: the per-trial seeded sampler, the RDB storage, and the outputs it writes.

The study lives in an Optuna RDB storage: an SQLite file in the run folder by default, so running the same
command again continues it; any SQLAlchemy URL (PostgreSQL, MySQL) lets several processes or machines run
the same command against one database and share one study.
"""

from __future__ import annotations

import shutil
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import TrialState

from focalmix.faults import atomic_write
from focalmix.tune_space import metric_direction

__all__ = [
    "FINISHED",
    "TrialSeededSampler",
    "best_config",
    "derive_seed",
    "format_value",
    "open_study",
    "trials_table",
    "write_outputs",
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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
    for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL)):
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
    params = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    print(f"focalmix tune: best trial {best.number}, {metric} {best.value:.4g}: {params}")
    ckpt = (
        Path(best.user_attrs.get("folder", output / f"trial_{best.number:03d}")) / "checkpoints" / "best.ckpt"
    )
    if ckpt.is_file():  # another worker's trial may live on another machine
        print(f"focalmix tune: its checkpoint (best epoch by {metric}): {ckpt}")
    print(f"focalmix tune: train it again with `focalmix fit --config {output / 'best.yaml'}`")
    print(f"focalmix tune: trials in {output / 'trials.csv'}; the study: `optuna-dashboard {url}`")


def format_value(value: Any) -> str:
    """A parameter's value as the console shows it: floats with 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
