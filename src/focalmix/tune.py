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

import math
import secrets
import sys
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import yaml
from jsonargparse import ArgumentError, ArgumentParser
from optuna.trial import TrialState

from focalmix._checks import ArgumentTypeError, ArgumentValueError, Interval, check
from focalmix._cli_text import UsageError, parse_error_message
from focalmix.cli_base import FocalMixCLI
from focalmix.console import data_summary, quiet_console
from focalmix.data import FocalMixDataModule
from focalmix.tune_space import (
    check_metric,
    check_space,
    load_space,
    metric_direction,
    unknown_parameter,
    valid_parameters,
)
from focalmix.tune_study import FINISHED, TrialSeededSampler, derive_seed, open_study, write_outputs
from focalmix.tune_trial import ARGS_WARNING, FitPruning, Objective, suggest, trial_line

__all__ = [
    "FitPruning",
    "Objective",
    "TrialSeededSampler",
    "check_metric",
    "check_space",
    "derive_seed",
    "load_space",
    "main",
    "metric_direction",
    "open_study",
    "parse_tune_args",
    "suggest",
    "trial_line",
    "valid_parameters",
]

# The --tune.* flags: type, default, help (the help is what `focalmix tune --help` prints).
_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "metric": (
        str | None,
        None,
        "validation metric to optimize. Default: val/auroc (binary, multilabel), val/acc (multiclass)",
    ),
    "n_trials": (int, 20, "trials in the study, all workers together (pruned ones count). Default: 20"),
    "timeout": (float | None, None, "seconds after which this process starts no new trial. Default: none"),
    "storage": (str | None, None, "Optuna RDB storage URL. Default: sqlite:///<output>/study.db"),
    "study_name": (str | None, None, "Default: <data source>-<metric>-<hash of the data settings>"),
    "seed": (
        int | None,
        None,
        "seed of the TPE sampler; each trial's seed derives from it and the trial number",
    ),
    "search_space": (str | None, None, "YAML search space. Default: the packaged configs/search/spec.yaml"),
    "space.<param>": (
        Any,
        None,
        "one entry, e.g. --tune.space.model.dropout '{low: 0.3, high: 0.5}'; null drops it",
    ),
    "keep_checkpoints": (
        bool,
        False,
        "keep every trial's checkpoints, not only the best trial's. Default: false",
    ),
    "output": (str | None, None, "run folder. Default: tune_runs/<study_name>"),
    "pruner_startup_trials": (int, 3, "complete trials before any pruning. Default: 3"),
    "pruner_warmup_epochs": (
        int | None,
        None,
        "epochs never pruned. Default: the OneCycle warmup, ceil(warmup_pct*max_epochs)",
    ),
}
_RANGES = {
    "n_trials": [Interval(int, 1)],
    "timeout": [None, Interval(float, 0, closed="neither")],
    "seed": [None, Interval(int, 0)],
    "pruner_startup_trials": [Interval(int, 0)],
    "pruner_warmup_epochs": [None, Interval(int, 0)],
}
_SPACE = "--tune.space."


def tune_parser() -> ArgumentParser:
    """The jsonargparse parser of the ``--tune.*`` flags: one ``--tune.space.<param>`` per valid parameter."""
    parser = ArgumentParser(prog="focalmix tune", exit_on_error=False, allow_abbrev=False)
    for name, (kind, default, text) in _OPTIONS.items():
        names = [f"space.{p}" for p in valid_parameters()] if name == "space.<param>" else [name]
        for flag in names:
            parser.add_argument(f"--tune.{flag}", type=kind, default=default, help=text)
    return parser


def _split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """The ``--tune.*`` flags and their values apart from the ``fit`` arguments (each has its parser)."""
    tune: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        (tune if token.startswith("--tune.") else rest).append(token)
        if token.startswith("--tune.") and "=" not in token:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                tune.append(argv[i + 1])
                i += 1
            elif token == "--tune.keep_checkpoints":
                tune.append("true")  # given bare
        i += 1
    return tune, rest


def parse_tune_args(tokens: list[str]) -> dict[str, Any]:
    """Parse and check the ``--tune.*`` flags; the options with their defaults filled in.

    ``space``: the ``--tune.space.<param>`` entries given (a mapping merges, None removes the entry).

    Example:
        >>> opts = parse_tune_args(["--tune.n_trials", "5", "--tune.space.model.dropout", "{low: 0.3}"])
        >>> opts["n_trials"], opts["space"], opts["keep_checkpoints"]
        (5, {'model.dropout': {'low': 0.3}}, False)
    """
    try:
        config = tune_parser().parse_args(tokens)
    except ArgumentError as exc:
        raise _parse_error(exc) from exc
    opts = config.tune.as_dict()
    given = [t.split("=", 1)[0][len(_SPACE) :] for t in tokens if t.startswith(_SPACE)]
    opts["space"] = {name: config[f"tune.space.{name}"] for name in given}
    try:
        check(opts, _RANGES)
    except (ArgumentTypeError, ArgumentValueError) as err:
        raise UsageError(str(err).replace(f"`{err.argument}`", f"--tune.{err.argument}")) from None
    return opts


def _parse_error(exc: ArgumentError) -> ValueError:
    """A parse error in the words of the other flags; unknown flags and parameters say what is known."""
    text = str(exc).strip()
    if text.startswith("unrecognized arguments:"):
        flag = next(t for t in text.split(":", 1)[1].split() if t.startswith("--")).split("=", 1)[0]
        if flag.startswith(_SPACE):
            return unknown_parameter(flag[len(_SPACE) :])
        return UsageError(f"unknown flag {flag}; the tune flags are: {[f'--tune.{k}' for k in _OPTIONS]}.")
    return UsageError(*parse_error_message(exc))


class _ParseOnlyCLI(FocalMixCLI):
    """Parses the ``fit`` arguments once (base config, task, study name); builds nothing."""

    def instantiate_classes(self) -> None:
        pass


def _base(fit_args: list[str]) -> tuple[str, Any]:
    """The parsed ``fit`` config (as YAML) and its data settings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ARGS_WARNING)
        cli = _ParseOnlyCLI(args=fit_args, run=False)
    return cli.parser.dump(cli.config, skip_none=False), cli.config


def _study_name(config: Any, metric: str) -> str:
    data = config["data"].as_dict()
    digest = f"{zlib.crc32(yaml.safe_dump(data, sort_keys=True).encode()):08x}"[:6]
    return f"{Path(str(data['source'])).stem}-{metric.replace('/', '_')}-{digest}"


def _usage() -> str:
    lines = [f"  --tune.{k:<22} {text}" for k, (_, _, text) in _OPTIONS.items()]
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
    quiet_console(verbose=False)
    tune_args, fit_args = _split_argv(list(argv))
    if "--verbose" not in fit_args:  # one focalmix line per trial says what Optuna's log line would
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    opts = parse_tune_args(tune_args)
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
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
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
        _optimize(study, Objective(fit_args, space, metric, seed, output), opts, done, metric)
    write_outputs(study, metric, base_yaml, output, opts["keep_checkpoints"], url)


def _optimize(
    study: optuna.Study, objective: Objective, opts: dict[str, Any], done: int, metric: str
) -> None:
    # every worker stops once the study holds n_trials finished or running trials, so N in total
    stop = optuna.study.MaxTrialsCallback(opts["n_trials"], states=(*FINISHED, TrialState.RUNNING))
    study.optimize(
        objective,
        n_trials=opts["n_trials"] - done,
        timeout=opts["timeout"],
        callbacks=[stop, lambda _, trial: print(trial_line(trial, metric), flush=True)],
        gc_after_trial=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
