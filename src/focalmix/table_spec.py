"""The preprocessing spec: its shape, its checks, and what it tells an exported model's caller.

A spec is the JSON-able dict :func:`focalmix.preprocessing.fit_spec` fits on a table's training rows
(numeric columns: median, mean, std, missing indicator; categorical columns: their categories). This
module checks one (from a checkpoint or a config file), compares a model's with a datamodule's, and
names the encoded columns; :class:`focalmix.encoder.InputEncoder` applies it inside the model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from focalmix._checks import Instance, Interval, Options, check
from focalmix.messages import short_list

SPEC_VERSION = 1
MISSING = ("impute", "error")
OPTIONS = {
    "missing": [Options(*MISSING)],
    "max_categories": [Interval(int, 1)],
    "standardize": [Instance(bool)],
}


@dataclass(frozen=True)
class Names:
    """A constraint (:mod:`focalmix._checks`): a list of strings, at least ``minimum`` of them.

    Example:
        >>> from focalmix._checks import check_one
        >>> check_one("id", "id_columns", [None, Names()])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        focalmix._checks.ArgumentTypeError: `id_columns` must be a list of column names (str) or None, got ...
    """

    minimum: int = 0
    what: str = "a list of column names (str)"

    def type_ok(self, value: Any) -> bool:
        strings = isinstance(value, Sequence) and not isinstance(value, str)
        return strings and all(isinstance(v, str) for v in value)

    def value_ok(self, value: Any) -> bool:
        return len(value) >= self.minimum

    def describe(self) -> str:
        return "a list of at least one column name"

    def type_name(self) -> str:
        return self.what


def check_options(missing: Any, max_categories: Any, standardize: Any) -> None:
    """Validate the options of :func:`~focalmix.preprocessing.fit_spec` (and of the datamodule)."""
    check({"missing": missing, "max_categories": max_categories, "standardize": standardize}, OPTIONS)


def check_roles(target: str | list[str], **roles: list[str] | None) -> None:
    """Refuse a column named in two roles (``target``, ``feature_columns``, ``id_columns``, ...).

    ``categorical_columns`` may repeat ``feature_columns`` (it is a property of features, not a role).

    Example:
        >>> check_roles("y", id_columns=["y"])
        Traceback (most recent call last):
        ...
        ValueError: column 'y' is named in both `target` and `id_columns`; give each column one role.
    """
    seen: dict[str, str] = {}
    all_roles = {"target": [target] if isinstance(target, str) else target, **roles}
    for role, names in all_roles.items():
        for n in names or []:
            other = seen.setdefault(n, role)
            if other != role and {other, role} != {"feature_columns", "categorical_columns"}:
                raise ValueError(
                    f"column {n!r} is named in both `{other}` and `{role}`; give each column one role."
                )


def check_spec(spec: Any, arg: str = "preprocessing") -> dict:
    """Validate a spec (from :func:`fit_spec`, a checkpoint or a config file) and return it.

    Raises:
        TypeError: not a dict of the documented shape.
        ValueError: an unknown version or kind, duplicate names, or non-finite statistics.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("columns"), list):
        raise TypeError(f"`{arg}` must be a dict with a 'columns' list (from fit_spec), got {spec!r:.200}.")
    if spec.get("version") != SPEC_VERSION:
        raise ValueError(f"`{arg}` has version {spec.get('version')!r}; this focalmix reads version 1.")
    if not spec["columns"]:
        raise ValueError(f"`{arg}` must describe at least one column, got none.")
    numeric_keys = ("median", "mean", "std")
    for c in spec["columns"]:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise TypeError(f"every column of `{arg}` must be a dict with a str 'name', got {c!r:.200}.")
        if c.get("kind") == "numeric":
            stats = [c.get(k) for k in numeric_keys]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in stats) or stats[2] <= 0:
                raise ValueError(f"column {c['name']!r} of `{arg}` needs finite median/mean and std > 0.")
            if not isinstance(c.get("indicator"), bool):
                raise TypeError(f"column {c['name']!r} of `{arg}` needs a bool 'indicator'.")
        elif c.get("kind") == "categorical":
            cats = c.get("categories")
            if not isinstance(cats, list) or not all(isinstance(v, str) for v in cats):
                raise TypeError(f"column {c['name']!r} of `{arg}` needs 'categories', a list of str.")
        else:
            raise ValueError(
                f"column {c['name']!r} of `{arg}` has kind {c.get('kind')!r}; expected "
                "'numeric' or 'categorical'."
            )
    names = [c["name"] for c in spec["columns"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"`{arg}` names columns {dup} more than once.")
    return spec


def check_same_spec(model_spec: dict | None, data_spec: Any) -> None:
    """Refuse a datamodule whose table the model cannot read: raw codes and NaN would reach the network.

    The datamodule turns categories into codes by its spec and the model one-hot encodes codes by its own,
    so both must list the same columns, kinds and categories in the same order (numeric statistics live
    in the model alone). Anything that is not a spec (another datamodule's ``preprocessing``) is ignored.

    Raises:
        ValueError: the data has a fitted spec and the model none, or their columns, kinds or categories
            differ.

    Example:
        >>> spec = {"version": 1, "columns": [{"name": "c", "kind": "categorical", "categories": ["x"]}]}
        >>> check_same_spec(spec, spec), check_same_spec(None, None)
        (None, None)
    """
    if not (isinstance(data_spec, dict) and isinstance(data_spec.get("columns"), list)):
        return
    if model_spec is None:
        raise ValueError(
            "the datamodule's table is encoded by a fitted spec (missing values, categories) that the "
            "model does not hold; build it with FocalMixClassifier(..., num_features=dm.num_features, "
            "preprocessing=dm.preprocessing)."
        )

    def layout(spec: dict) -> list[tuple]:
        return [(c["name"], c["kind"], c.get("categories")) for c in spec["columns"]]

    if layout(model_spec) != layout(data_spec):
        data_names = short_list([c["name"] for c in data_spec["columns"]])
        raise ValueError(
            f"the datamodule encodes its table ({data_names}) with "
            "other columns or categories than the model was trained on; give the datamodule the model's: "
            "FocalMixDataModule(..., preprocessing=model.hparams.preprocessing)."
        )


def encoded_names(spec: dict) -> list[str]:
    """Names of :class:`InputEncoder`'s output columns, in order."""
    cols = check_spec(spec)["columns"]
    num = [c for c in cols if c["kind"] == "numeric"]
    names = [c["name"] for c in num] + [f"{c['name']}_missing" for c in num if c["indicator"]]
    for c in cols:
        if c["kind"] == "categorical":
            names += [f"{c['name']}=<unknown>"] + [f"{c['name']}={v}" for v in c["categories"]]
    return names


def describe(spec: dict) -> dict:
    """What an exported model expects, for its metadata: columns in order, kinds, codes, indicators.

    It is a spec too: ``encode_frame(frame, describe(spec))`` equals ``encode_frame(frame, spec)``, so an
    export's ``features`` metadata turns a DataFrame into the exported model's input.

    Example:
        >>> spec = {"version": 1, "columns": [
        ...     {"name": "n", "kind": "numeric", "median": 0.0, "indicator": True, "mean": 0.0, "std": 1.0},
        ...     {"name": "c", "kind": "categorical", "categories": ["x", "y"]}]}
        >>> d = describe(spec)
        >>> d["feature_names"], d["columns"][1]["codes"], d["missing_indicators"]
        (['n', 'c'], {'x': 1, 'y': 2}, ['n'])
    """
    cols = check_spec(spec)["columns"]
    columns = []
    for c in cols:
        entry = copy.deepcopy(c)
        if c["kind"] == "categorical":
            entry["codes"] = {v: i + 1 for i, v in enumerate(c["categories"])}
        columns.append(entry)
    return {
        "version": SPEC_VERSION,  # so that encode_frame(frame, <this>) reads it like the spec itself
        "feature_names": [c["name"] for c in cols],
        "columns": columns,
        "missing_indicators": [c["name"] for c in cols if c["kind"] == "numeric" and c["indicator"]],
        "input": "float32 (B, F), one column per feature in `feature_names` order: numeric columns raw "
        "(NaN allowed, imputed with the training median), categorical columns as codes (0 = unknown, "
        "unseen or missing; 1 + the index in `categories`).",
        "encoded_features": encoded_names(spec),
    }
