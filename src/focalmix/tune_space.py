"""``focalmix tune``'s search space and metrics: what may be searched, in which ranges, toward which end.

The ranges come from a YAML search space (the packaged ``configs/search/spec.yaml``: the spec's range for
every parameter), overridden per parameter on the command line (``--tune.space.<param>``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

from focalmix._cli_text import LINKS
from focalmix.data import FocalMixDataModule
from focalmix.metrics import METRICS, MINIMIZED
from focalmix.module import FocalMixClassifier

__all__ = [
    "check_metric",
    "check_space",
    "default_space_path",
    "load_space",
    "metric_direction",
    "unknown_parameter",
    "valid_parameters",
]

_SPEC_KEYS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}}


def metric_direction(metric: str) -> str:
    """``"minimize"`` for losses and error rates, ``"maximize"`` for scores.

    Example:
        >>> metric_direction("val/brier"), metric_direction("val/auroc")
        ('minimize', 'maximize')
    """
    return "minimize" if metric.split("/", 1)[-1] in MINIMIZED else "maximize"


def check_metric(metric: str, task: str) -> None:
    """Raise ``ValueError`` unless the module logs ``metric`` every validation epoch for ``task``."""
    known = [f"val/{m}" for m in METRICS[task]]  # `val/threshold` is a setting, not a score
    if metric not in known:
        raise ValueError(f"--tune.metric {metric!r} is not logged for a {task} task; choose one of {known}.")


def valid_parameters() -> list[str]:
    """Search-space names: the classifier's and the datamodule's arguments (not those set from the data)."""
    names = []
    for prefix, cls in (("model", FocalMixClassifier), ("data", FocalMixDataModule)):
        params = inspect.signature(cls.__init__).parameters
        names += [f"{prefix}.{p}" for p in params if p != "self" and not (prefix == "model" and p in LINKS)]
    return names


def unknown_parameter(name: str, valid: list[str] | None = None) -> ValueError:
    """The error for a search-space entry that is no argument of the classifier or the datamodule."""
    valid = valid_parameters() if valid is None else valid
    return ValueError(f"unknown parameter {name!r} in the search space; valid ones are: {valid}.")


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
            raise unknown_parameter(name, valid)
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
