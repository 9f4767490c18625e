"""The classifier's constructor arguments: their constraints, the rules across them, how a backbone is saved.

:class:`~focalmix.FocalMixClassifier` checks every argument in ``__init__``, so a bad config fails when it
is parsed: one table of constraints (:mod:`focalmix._checks`: a wrong type raises ``ArgumentTypeError``, a
value out of range ``ArgumentValueError``, both naming the argument and the classifier) and a few rules
that tie two arguments together, plain code raising the same errors. The hyperparameters a checkpoint
holds are primitives: a pretrained adapter is saved as its class path and ``config()``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from focalmix import optim
from focalmix._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    Instance,
    Interval,
    Options,
    Satisfies,
    check,
)
from focalmix.calibration import METHODS
from focalmix.losses import TASKS, check_alpha

__all__ = ["CONSTRAINTS", "backbone_hparams", "check_arguments", "unsaved_module"]

_POSITIVE = Interval(float, 0, None, closed="neither")


def _width(h: Any) -> bool:
    return isinstance(h, int) and not isinstance(h, bool) and h >= 1


# One line per argument: types and ranges; the rules across arguments are in check_arguments.
CONSTRAINTS = {
    "backbone": [None, Instance((nn.Module, dict), "an nn.Module, a class_path dict")],
    "task": [Options(*TASKS)],
    "num_classes": [Interval(int, 1)],
    "num_features": [None, Interval(int, 1)],
    "backbone_features": [None, Interval(int, 1)],
    "head_hidden_sizes": [Satisfies((list, tuple), lambda v: all(map(_width, v)), "a list of ints >= 1")],
    "head_type": [Options("mlp", "temporal")],
    "reference_batch_size": [Interval(int, 1)],
    "dropout": [Interval(float, 0, 1, closed="left")],
    "label_smoothing": [Interval(float, 0, 1, closed="left")],
    "base_momentum": [Interval(float, 0, 1, closed="left")],
    "max_momentum": [Interval(float, 0, 1, closed="left")],
    "learning_rate": [_POSITIVE],
    "div_factor": [_POSITIVE],
    "final_div_factor": [_POSITIVE],
    "weight_decay": [Interval(float, 0)],
    "focal_gamma": [Interval(float, 0)],
    "mixup_alpha": [Interval(float, 0)],
    "warmup_pct": [Interval(float, 0, 1, closed="neither")],
    "max_fpr": [Interval(float, 0, 1, closed="neither")],
    "max_fa_per_hour": [_POSITIVE],
    "anneal_strategy": [Options("cos", "linear")],
    "lr_scaling": [Options(*optim.SCALINGS)],
    "threshold_metric": [Options("f1", "fpr", "fa_per_hour", "none")],
    "calibration": [Options(*METHODS)],
    "preprocessing": [None, Instance(dict, "a dict (a datamodule's fitted spec)")],
}


def check_arguments(args: dict[str, Any], owner: type | None = None) -> None:
    """Check the classifier's constructor arguments (its ``locals()``): the table, then the rules across them.

    Raises:
        ArgumentTypeError: an argument of the wrong type (a ``TypeError``), naming it and ``owner``.
        ArgumentValueError: an argument out of range (a ``ValueError``), naming it and ``owner``.

    Example:
        >>> args = {k: None for k in ("backbone", "num_features", "backbone_features", "preprocessing")}
        >>> args |= {"task": "binary", "num_classes": 2, "reference_batch_size": 32, "dropout": 1.5}
        >>> check_arguments(args)
        Traceback (most recent call last):
        ...
        focalmix._checks.ArgumentValueError: `dropout` must be in [0, 1), got 1.5.
    """
    a = args
    check(a, CONSTRAINTS, owner=owner)

    def bad(argument: str, message: str) -> ArgumentValueError:
        return ArgumentValueError(message, argument=argument, owner=owner)

    task, num_classes = a["task"], a["num_classes"]
    if task == "binary" and num_classes != 2:
        raise bad("num_classes", f"`num_classes` must be 2 for task='binary', got {num_classes}.")
    if task == "multiclass" and num_classes < 2:
        raise bad("num_classes", f"`num_classes` must be >= 2 for task='multiclass', got {num_classes}.")
    if a["base_momentum"] > a["max_momentum"]:
        message = f"`base_momentum` ({a['base_momentum']}) must be <= `max_momentum` ({a['max_momentum']})."
        raise bad("base_momentum", message)
    if a["calibration"] == "platt" and task == "multiclass":
        raise bad(
            "calibration",
            "`calibration`='platt' scales each output on its own and would break the softmax of a"
            " multiclass task; use 'temperature' (or 'auto').",
        )
    if a["calibration"] == "temperature" and task == "multilabel":
        message = "`calibration`='temperature' needs a binary or multiclass task; use 'platt' or 'auto'."
        raise bad("calibration", message)
    if a["focal_alpha"] != "auto":
        try:
            check_alpha(a["focal_alpha"], task, num_classes, name="focal_alpha")
        except TypeError as exc:
            raise ArgumentTypeError(str(exc), argument="focal_alpha", owner=owner) from None
        except ValueError as exc:
            raise bad("focal_alpha", str(exc)) from None
    for name, want in (("class_names", num_classes), ("feature_names", a["num_features"])):
        if a[name] is not None and want is not None and len(a[name]) != want:
            raise bad(name, f"`{name}` must have {want} entries, got {len(a[name])}: {a[name]}.")


def backbone_hparams(backbone: nn.Module) -> dict[str, Any]:
    """A pretrained adapter as the hyperparameters hold it: its class path and its ``config()``."""
    cls = type(backbone)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": backbone.config()}


def unsaved_module(backbone: Any) -> bool:
    """A backbone object the hyperparameters cannot hold, unless LightningCLI gave its class_path dict."""
    if not isinstance(backbone, nn.Module):
        return False
    try:  # LightningCLI's instantiator hands the config (with the backbone's class_path) to hparams
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - a Lightning without it: the object is not saved
        return True
    return not isinstance((_given_hyperparameters.get() or {}).get("backbone"), dict)
