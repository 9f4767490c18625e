"""The arguments of :class:`~focalmix.data.FocalMixDataModule`: one constraints table, and the checks
between arguments that a table cannot state.

Every argument is checked when the datamodule is built, so a bad config fails when it is parsed. Errors are
:class:`~focalmix._checks.ArgumentTypeError` / :class:`~focalmix._checks.ArgumentValueError` carrying the
argument's name and the owner (the command line names ``--data.<argument>``); a source path that does not
exist raises ``FileNotFoundError``.

Example:
    >>> check({"batch_size": 0, "seed": 7}, CONSTRAINTS)
    Traceback (most recent call last):
    ...
    focalmix._checks.ArgumentValueError: `batch_size` must be >= 1, got 0.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from focalmix._checks import ArgumentValueError, Instance, Interval, Options, Satisfies, check
from focalmix.losses import TASKS
from focalmix.preprocessing import check_roles, check_spec
from focalmix.sources import Source, open_source
from focalmix.table_spec import Names

__all__ = [
    "ARRAYS",
    "CONSTRAINTS",
    "Folder",
    "Seconds",
    "attributes",
    "check_arguments",
    "check_target",
    "open_sources",
    "table_spec",
]

ARRAYS = "<arrays>"  # the source name of FocalMixDataModule.from_arrays
SOURCES = ("source", "val_source", "test_source", "predict_source")
# the datamodule's public attributes that are its arguments as given
PLAIN = (
    *SOURCES, "positive_class", "seed", "standardize", "balanced_sampling", "batch_size", "eval_batch_size",
    "num_workers", "pin_memory", "persistent_workers", "max_categories", "missing",
)  # fmt: skip


@dataclass(frozen=True)
class Seconds(Interval):
    """A duration in seconds, in (0, 3600); ``say_seconds`` also names the unit in the range's message."""

    kind: type = float
    low: float | None = 0
    high: float | None = 3600
    closed: str = "neither"
    say_seconds: bool = False

    def describe(self) -> str:
        return ("a number of seconds " if self.say_seconds else "") + super().describe()

    def type_name(self) -> str:
        return "a number of seconds"


@dataclass(frozen=True)
class Folder(Satisfies):
    """A path (a non-empty str or ``os.PathLike``), called ``description`` in messages."""

    kind: Any = (str, os.PathLike)
    test: Callable[[Any], bool] = lambda v: bool(str(v))  # noqa: E731
    description: str = "a folder"

    def type_name(self) -> str:
        return self.description


_FLAG = [Instance(bool)]
CONSTRAINTS: dict[str, list] = {
    "path_column": [None, Instance(str, "a column name")],
    "clip_seconds": [None, Seconds()],
    "bad_files": [Options("error", "skip")],
    "long_files": [Options("split", "crop", "error")],
    "cache_dir": [Folder(description="'auto', 'none' or a folder")],
    "hop_seconds": [Seconds(say_seconds=True)],
    "refractory_seconds": [Seconds(say_seconds=True)],
    "augment_views": [Interval(int, 0)],
    "noise_source": [None, Instance((str, os.PathLike), "a folder of audio")],
    "background_source": [
        None,
        Instance(str, "a folder or file of audio"),
        Names(1, "a list of audio paths"),
    ],
    "target": [Instance(str, "a column name"), Names(1)],
    "feature_columns": [None, Names(1)],
    "task": [None, Options(*TASKS)],
    "val_fraction": [Satisfies(float, lambda v: 0 <= v < 1, "in [0.0, 1)")],
    "test_fraction": [Satisfies(float, lambda v: 0 <= v < 1, "in [0.0, 1)")],
    "seed": [Interval(int, 0)],
    "standardize": _FLAG,
    "balanced_sampling": _FLAG,
    "batch_size": [Interval(int, 1)],
    "eval_batch_size": [None, Interval(int, 1)],
    "num_workers": [Interval(int, 0)],
    "pin_memory": _FLAG,
    "persistent_workers": _FLAG,
    "synthetic_rows": [Interval(int, 4)],
    "synthetic_features": [Interval(int, 1)],
    "synthetic_classes": [Interval(int, 2)],
    "synthetic_positive_fraction": [Satisfies(float, lambda v: 0 < v < 1, "in (0.0, 1)")],
    "categorical_columns": [None, Names()],
    "id_columns": [None, Names()],
    "drop_columns": [None, Names()],
    "max_categories": [Interval(int, 1)],
    "missing": [Options("impute", "error")],
}


def check_arguments(params: Mapping[str, Any], owner: type | None = None) -> None:
    """Check the datamodule's arguments: the table above, then the rules that tie arguments together."""
    check(params, CONSTRAINTS, owner)
    if params["noise_source"] is not None and not os.path.isdir(str(params["noise_source"])):
        raise FileNotFoundError(f"`noise_source` {params['noise_source']!r} is not a folder of audio.")
    background = params["background_source"]
    for src in [background] if isinstance(background, str) else background or []:
        if not os.path.exists(src) or _media_kind(src) != "audio":
            raise FileNotFoundError(f"`background_source` {src!r} is not a folder or file of audio.")
    check_target(params, owner)
    val, test = params["val_fraction"], params["test_fraction"]
    if val + test >= 1:
        raise ArgumentValueError(
            f"`val_fraction` + `test_fraction` must be < 1 to leave training rows, got {val} + {test}.",
            "test_fraction",
            owner,
        )
    if params["persistent_workers"] and params["num_workers"] == 0:
        raise ArgumentValueError(
            "`persistent_workers=True` needs `num_workers` > 0; set num_workers or drop it.",
            "persistent_workers",
            owner,
        )


def check_target(params: Mapping[str, Any], owner: type | None = None) -> None:
    """``target`` with the arguments that depend on it (a list ``target`` means multilabel)."""
    target, task, positive = params["target"], params["task"], params["positive_class"]
    if not isinstance(target, str) and len(target) < 2:
        raise ArgumentValueError(
            f"a list `target` means multilabel and needs >= 2 columns, got {list(target)}; "
            "pass a single column name as a string for binary or multiclass.",
            "target",
            owner,
        )
    multilabel = not isinstance(target, str) or task == "multilabel"
    if positive is not None and (multilabel or not isinstance(positive, int | str)):
        raise ArgumentValueError(
            f"`positive_class` must be an int or str label of a single-target task, "
            f"got {positive!r} with target={target!r}, task={task!r}.",
            "positive_class",
            owner,
        )
    if params["balanced_sampling"] is True and multilabel:
        raise ArgumentValueError(
            "`balanced_sampling` needs a binary or multiclass task; multilabel rows have no "
            "single class to weight. Set balanced_sampling=False.",
            "balanced_sampling",
            owner,
        )


def attributes(params: Mapping[str, Any]) -> dict[str, Any]:
    """The datamodule's attributes from its checked arguments: lists copied, fractions as floats."""
    out = {name: params[name] for name in PLAIN}
    out["target"] = params["target"] if isinstance(params["target"], str) else list(params["target"])
    for name in ("feature_columns", "categorical_columns", "id_columns", "drop_columns"):
        out[name] = None if params[name] is None else list(params[name])
    out["val_fraction"], out["test_fraction"] = float(params["val_fraction"]), float(params["test_fraction"])
    background = params["background_source"]
    out["background_source"] = [background] if isinstance(background, str) else background
    out["_task_arg"] = params["task"]
    return out


def open_sources(
    params: Mapping[str, Any], arrays: Source | None, owner: type | None = None
) -> dict[str, Source]:
    """One :class:`~focalmix.sources.Source` per source argument given (``source`` always); ``arrays``:
    the data of ``from_arrays``."""
    opened: dict[str, Source] = {}
    if params["source"] == ARRAYS and arrays is not None:
        opened["source"] = arrays
    for arg in SOURCES:
        if arg not in opened and (arg == "source" or params[arg] is not None):
            need_labels = arg != "predict_source"
            opened[arg] = open_source(params[arg], arg, need_labels, params["path_column"], owner)
    return opened


def table_spec(params: Mapping[str, Any], table: bool, owner: type | None = None) -> dict | None:
    """Check the table arguments against each other and the source; return a copy of a given spec."""
    lists = ("feature_columns", "categorical_columns", "id_columns", "drop_columns")
    check_roles(params["target"], **{name: params[name] for name in lists})
    given = [a for a in (*lists[1:], "preprocessing") if params[a]]
    if given and not table:
        raise ArgumentValueError(
            f"{given} apply to tables (CSV/Parquet files, or a DataFrame given to from_arrays), "
            "and the source is not one.",
            given[0],
            owner,
        )
    spec = params["preprocessing"]
    return None if spec is None else check_spec(copy.deepcopy(spec))


def _media_kind(path: str) -> str | None:
    from focalmix import media

    return media.media_kind(path)
