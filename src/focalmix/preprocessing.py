"""Fitted table transforms: missing values, categories and standardization, applied inside the model.

A table reaches the model as "raw rows": one float32 column per feature column, in ``feature_names``
order (:func:`encode_frame`). Numeric columns keep their values, NaN included; categorical columns become
category codes, ``0`` for unknown, unseen or missing and ``i + 1`` for ``categories[i]``. Everything else
happens in :class:`InputEncoder`, the model's first layer: NaN -> the training median, standardization,
one 0/1 missing-indicator per column that had gaps in training, and a one-hot block per categorical
column. So a checkpoint or an ONNX/TorchScript export predicts from raw rows alone, and the only step
left to a caller is the string -> code lookup (strings cannot enter a float tensor).

What is fitted (on the training split only, by :func:`fit_spec`) is a JSON-able dict, saved as a model
hyperparameter and in ``config.yaml``::

    {"version": 1, "columns": [
        {"name": "age", "kind": "numeric", "median": 41.0, "indicator": true, "mean": 40.2, "std": 11.9},
        {"name": "color", "kind": "categorical", "categories": ["blue", "red"]}]}

One-hot rather than a learned embedding: at ``max_categories=100`` the widest block is 101 columns, cheap
for the first Linear layer, and it is a gather and a comparison, which export to ONNX and TorchScript
without custom ops; an embedding (for far more levels) is a later option.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"age": [30.0, None, 50.0], "color": ["red", "blue", None]})
    >>> spec = fit_spec(df, ["age", "color"])
    >>> [c["kind"] for c in spec["columns"]], spec["columns"][1]["categories"]
    (['numeric', 'categorical'], ['blue', 'red'])
    >>> encode_frame(df, spec).tolist()
    [[30.0, 2.0], [nan, 1.0], [50.0, 0.0]]
    >>> encoder = InputEncoder(spec)
    >>> encoder.out_features, encoder.feature_names
    (5, ['age', 'age_missing', 'color=<unknown>', 'color=blue', 'color=red'])
    >>> encoder(torch.tensor([[40.0, 1.0], [float("nan"), 7.0]])).tolist()
    [[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0, 0.0]]
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from focalmix._sources import short_list

if TYPE_CHECKING:
    import pandas as pd

SPEC_VERSION = 1
MISSING = ("impute", "error")
# Largest magnitude accepted: float32 holds 3.4e38, and standardizing computes x - mean in float32.
MAX_ABS = 1e38
_FIX_LEVELS = (
    "raise `max_categories` (--data.max_categories), drop the column (--data.drop_columns) or, if it "
    "is a key, name it in `id_columns` (--data.id_columns)"
)


def fit_spec(
    frame: pd.DataFrame,
    feature_columns: Sequence[str],
    categorical_columns: Sequence[str] | None = None,
    missing: str = "impute",
    max_categories: int = 100,
    standardize: bool = True,
    name: str = "the training rows",
) -> dict:
    """Fit the column transforms on training rows.

    Args:
        frame: the training rows (other columns are ignored).
        feature_columns: the feature columns, in model-input order.
        categorical_columns: columns to treat as categories even if numeric (integer codes); default
            None. Non-numeric columns (strings, booleans, pandas categoricals) are always categorical.
        missing: ``"impute"`` (default): numeric NaN -> training median plus a missing-indicator where
            training had NaN; ``"error"``: NaN in a numeric column raises.
        max_categories: most levels a categorical column may have, >= 1; default 100.
        standardize: store mean/std of the imputed values (else 0 and 1); default True.
        name: the data, for messages.

    Returns:
        The spec dict described in the module docstring.

    Raises:
        ValueError: a column absent or with no values, too many levels, infinite or out-of-range
            values, NaN with ``missing="error"``, or a bad argument.
        TypeError: an argument of the wrong type.
    """
    features = _str_list(feature_columns, "feature_columns")
    if not features:
        raise ValueError("`feature_columns` must name at least one column, got an empty list.")
    categorical = set(_str_list(categorical_columns or [], "categorical_columns"))
    check_options(missing, max_categories, standardize)
    absent = [c for c in [*features, *sorted(categorical)] if c not in frame.columns]
    if absent:
        raise ValueError(
            f"columns {short_list(absent)} not found in {name}; columns are: "
            f"{short_list(list(frame.columns))}."
        )
    unused = sorted(categorical - set(features))
    if unused:
        raise ValueError(
            f"`categorical_columns` {short_list(unused)} are not feature columns; features are "
            f"{short_list(features)}."
        )
    if len(frame) == 0:
        raise ValueError(f"{name} has no rows to fit the preprocessing on.")
    if missing == "error":
        _refuse_nan(frame, [c for c in features if not _is_categorical(frame[c], c in categorical)], name)
    for col in key_like_columns(frame, features, categorical, max_categories):
        _warn(
            f"column {col!r} of {name} looks like a row key (a unique value per row), yet it is a feature; "
            f"if it is an id, name it in `id_columns` (--data.id_columns {col})."
        )
    columns = []
    for col in features:
        series = frame[col]
        if _is_categorical(series, col in categorical):
            columns.append(_fit_categorical(series, col, max_categories, name))
        else:
            columns.append(_fit_numeric(series, col, standardize, name))
    return {"version": SPEC_VERSION, "columns": columns}


def key_like_columns(
    frame: pd.DataFrame,
    columns: Sequence[str],
    categorical: set[str] | frozenset[str] = frozenset(),
    max_categories: int | None = None,
) -> list[str]:
    """Integer or text columns that look like row keys: one value per row, in order or in a long table.

    A column qualifies when its values are all present and distinct and either run monotonically (an
    auto-increment id, a row number, "C0001", "C0002", ...; from 20 rows) or the table has 1,000 rows or
    more (a hashed or shuffled key). Float columns never do (measurements are often distinct); text
    columns with more levels than ``max_categories`` are left to that limit's error, which names
    ``id_columns`` too.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"id": range(100, 130), "age": [30, 40] * 15, "x": np.arange(30) / 2})
        >>> key_like_columns(df, ["id", "age", "x"])
        ['id']
    """
    import pandas as pd

    found = []
    for col in columns:
        series = frame[col]
        integer = pd.api.types.is_integer_dtype(series) and series.dtype != bool
        text = _is_categorical(series, False) and series.dtype != bool and col not in categorical
        if not (integer or text) or len(series) < 20 or series.isna().any():
            continue
        distinct = series.nunique()
        if distinct != len(series) or (text and max_categories is not None and distinct > max_categories):
            continue
        try:
            ordered = series.is_monotonic_increasing or series.is_monotonic_decreasing
        except TypeError:  # text mixed with numbers does not sort
            ordered = False
        if len(series) >= 1000 or ordered:
            found.append(col)
    return found


def _warn(message: str) -> None:
    from lightning.pytorch.utilities import rank_zero_warn  # on rank 0 only; shown by focalmix's console

    rank_zero_warn(message)


def _fit_numeric(series: pd.Series, col: str, standardize: bool, name: str) -> dict:
    values = _numeric(series, col, name)  # float32, NaN kept
    nan = np.isnan(values)
    if nan.all():
        raise ValueError(
            f"column {col!r} of {name} has no values (all missing) in the training rows; drop it with "
            "`drop_columns` (--data.drop_columns)."
        )
    valid = values[~nan].astype(np.float64)
    median = float(np.float32(np.median(valid)))  # float32, as the model sees it
    filled = np.where(nan, median, values.astype(np.float64))
    mean, std = (float(filled.mean()), float(filled.std())) if standardize else (0.0, 1.0)
    return {
        "name": col,
        "kind": "numeric",
        "median": median,
        "indicator": bool(nan.any()),
        "mean": mean,
        "std": max(std, 1e-6),  # a constant column must not divide by zero
    }


def _fit_categorical(series: pd.Series, col: str, max_categories: int, name: str) -> dict:
    codes, labels = _labels(series)
    if (codes < 0).all():
        raise ValueError(
            f"column {col!r} of {name} has no values (all missing) in the training rows; drop it with "
            "`drop_columns` (--data.drop_columns)."
        )
    categories = sorted(set(labels))
    if len(categories) > max_categories:
        raise ValueError(
            f"categorical column {col!r} of {name} has {len(categories)} levels, more than "
            f"`max_categories`={max_categories}: {_FIX_LEVELS}."
        )
    return {"name": col, "kind": "categorical", "categories": categories}


def encode_frame(
    frame: pd.DataFrame, spec: dict, *, name: str = "the table", missing: str = "impute"
) -> np.ndarray:
    """Rows of a DataFrame as the model's raw input: float32 (N, F), columns in the spec's order.

    Numeric columns as values (NaN kept unless ``missing="error"``), categorical ones as codes (0 =
    unknown, unseen or missing; ``i + 1`` = ``categories[i]``). Columns are found by name; others are
    ignored.

    Raises:
        ValueError: a feature column is absent, holds non-numbers where training had numbers, infinite
            or out-of-range values, or NaN with ``missing="error"``.

    Example:
        >>> import pandas as pd
        >>> spec = {"version": 1, "columns": [{"name": "c", "kind": "categorical", "categories": ["x", "y"]}]}
        >>> encode_frame(pd.DataFrame({"c": ["y", "z", None]}), spec).ravel().tolist()
        [2.0, 0.0, 0.0]
    """
    spec = check_spec(spec)
    names = [c["name"] for c in spec["columns"]]
    absent = [c for c in names if c not in frame.columns]
    if absent:
        raise ValueError(
            f"{name} lacks feature columns {short_list(absent)} that the model was trained on; add them "
            f"(empty where unknown) or use the training file's columns: {short_list(names)}."
        )
    if missing == "error":
        _refuse_nan(frame, [c["name"] for c in spec["columns"] if c["kind"] == "numeric"], name)
    out = np.empty((len(frame), len(names)), dtype=np.float32)
    for j, column in enumerate(spec["columns"]):
        series = frame[column["name"]]
        if column["kind"] == "numeric":
            out[:, j] = _numeric(series, column["name"], name)
        else:
            codes, labels = _labels(series)
            lookup = {c: i + 1 for i, c in enumerate(column["categories"])}
            per_unique = np.array([lookup.get(label, 0) for label in labels] + [0], dtype=np.float32)
            out[:, j] = per_unique[codes]  # code -1 (missing) picks the trailing 0
    return out


def _numeric(series: pd.Series, col: str, name: str) -> np.ndarray:
    """Float32 values of a numeric column; non-numbers, infinities and out-of-range values raise."""
    import pandas as pd

    if series.dtype == bool:
        series = series.astype(np.float64)
    elif not pd.api.types.is_numeric_dtype(series):
        coerced = pd.to_numeric(series, errors="coerce")
        bad = coerced.isna() & series.notna()
        if bad.any():
            examples = series[bad].astype(str).unique()[:3].tolist()
            raise ValueError(
                f"column {col!r} of {name} is numeric in training but holds non-numbers, e.g. {examples}; "
                "fix those values or list the column in `categorical_columns`."
            )
        series = coerced
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(values).any():
        rows = int(np.isinf(values).sum())
        raise ValueError(
            f"infinite feature values in {name} in column {col!r}: {rows} rows; replace them (empty cells "
            "are imputed) or drop those rows."
        )
    if (np.abs(values) > MAX_ABS).any():
        raise ValueError(
            f"values beyond +-{MAX_ABS:g} in column {col!r} of {name} (largest "
            f"{np.nanmax(np.abs(values)):g}); float32 cannot standardize them: rescale the column "
            "(e.g. log) or drop it."
        )
    return values.astype(np.float32)


def _labels(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Per-row codes into the unique values (-1 for missing) and each unique value as its category string."""
    import pandas as pd

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, [_label(u) for u in uniques]


def _label(value: Any) -> str:
    # 1, 1.0 and "1" are one category: CSV readers make integer codes floats when a column has gaps.
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def _is_categorical(series: pd.Series, named: bool) -> bool:
    import pandas as pd

    return named or series.dtype == bool or not pd.api.types.is_numeric_dtype(series)


def _refuse_nan(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    nan = frame[columns].isna().to_numpy() if columns else np.zeros((len(frame), 0), dtype=bool)
    if nan.any():
        bad = [c for c, has in zip(columns, nan.any(axis=0), strict=True) if has]
        raise ValueError(
            f"missing (NaN) feature values in {name} in columns {short_list(bad)}: "
            f"{int(nan.any(axis=1).sum())} rows. "
            "Drop or impute them first, or set `missing='impute'` (--data.missing impute)."
        )


def check_table_args(
    table: bool,
    target: str | list[str],
    feature_columns: list[str] | None,
    categorical_columns: Any,
    id_columns: Any,
    drop_columns: Any,
    spec: Any,
) -> tuple[list[str] | None, list[str] | None, list[str] | None, dict | None]:
    """The datamodule's table arguments, validated: (categorical, id, drop columns, a copy of the spec)."""
    lists = {
        "categorical_columns": categorical_columns,
        "id_columns": id_columns,
        "drop_columns": drop_columns,
    }
    for arg, value in lists.items():
        if value is not None:
            lists[arg] = _str_list(value, arg)
    check_roles(target, feature_columns=feature_columns, **lists)
    given = [a for a, v in {**lists, "preprocessing": spec}.items() if v]
    if given and not table:
        raise ValueError(
            f"{given} apply to tables (CSV/Parquet files, or a DataFrame given to from_arrays), "
            "and the source is not one."
        )
    spec = None if spec is None else check_spec(copy.deepcopy(spec))
    return lists["categorical_columns"], lists["id_columns"], lists["drop_columns"], spec


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


def check_options(missing: Any, max_categories: Any, standardize: Any) -> None:
    """Validate the preprocessing options of :func:`fit_spec` (and the datamodule's)."""
    if missing not in MISSING:
        raise ValueError(f"`missing` must be one of {MISSING}, got {missing!r}.")
    if isinstance(max_categories, bool) or not isinstance(max_categories, int):
        raise TypeError(f"`max_categories` must be an int, got {max_categories!r}.")
    if max_categories < 1:
        raise ValueError(f"`max_categories` must be >= 1, got {max_categories}.")
    if not isinstance(standardize, bool):
        raise TypeError(f"`standardize` must be a bool, got {standardize!r}.")


def _str_list(value: Any, arg: str) -> list[str]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, str) for v in value)
    ):
        raise TypeError(f"`{arg}` must be a list of column names (str), got {value!r}.")
    return list(value)


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


class InputEncoder(nn.Module):
    """Raw rows (B, F) -> model features (B, out_features), from a spec alone (nothing to load).

    Output columns: the standardized numeric columns (NaN -> training median first), then one 0/1
    missing-indicator per numeric column with ``indicator``, then per categorical column a one-hot
    block of ``K + 1`` slots (slot 0: unknown, unseen, missing or out-of-range codes). The statistics
    are non-persistent buffers (they move with ``.to(device)`` but are not in the ``state_dict``: the
    spec is a hyperparameter). Only tensor ops without data-dependent branches, so it traces to ONNX
    and TorchScript.

    Args:
        spec: a dict from :func:`fit_spec`.

    Attributes:
        out_features: width of the output.
        feature_names: name of each output column (:func:`encoded_names`).
    """

    def __init__(self, spec: dict) -> None:
        super().__init__()
        cols = check_spec(spec)["columns"]
        num = [i for i, c in enumerate(cols) if c["kind"] == "numeric"]
        cat = [i for i, c in enumerate(cols) if c["kind"] == "categorical"]
        sizes = [len(cols[i]["categories"]) for i in cat]

        def buffer(name: str, values: list, dtype: torch.dtype) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)

        buffer("num_index", num, torch.long)
        for key in ("median", "mean", "std"):
            buffer(key, [cols[i][key] for i in num], torch.float32)
        buffer("indicator_index", [j for j, i in enumerate(num) if cols[i]["indicator"]], torch.long)
        buffer("cat_index", cat, torch.long)
        buffer("max_code", [float(k) for k in sizes], torch.float32)
        # one output slot per (categorical column, code): slot s is 1 where that column's code is slot_code[s]
        buffer("slot_column", [j for j, k in enumerate(sizes) for _ in range(k + 1)], torch.long)
        buffer("slot_code", [float(v) for k in sizes for v in range(k + 1)], torch.float32)
        self._parts = (bool(num), any(cols[i]["indicator"] for i in num), bool(cat))  # fixed by the spec
        self.feature_names = encoded_names(spec)
        self.out_features = len(self.feature_names)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.mean.dtype)  # (B, F)
        parts = []
        has_num, has_indicator, has_cat = self._parts
        if has_num:
            values = x.index_select(1, self.num_index)  # (B, Fn)
            nan = torch.isnan(values)
            values = torch.where(nan, self.median, values)
            parts.append((values - self.mean) / self.std)
            if has_indicator:
                parts.append(nan.index_select(1, self.indicator_index).to(x.dtype))  # (B, Fi)
        if has_cat:
            codes = torch.round(x.index_select(1, self.cat_index))  # (B, Fc)
            # NaN compares False, so missing and out-of-range codes both land in slot 0 (unknown)
            known = (codes >= 1) & (codes <= self.max_code)
            codes = torch.where(known, codes, torch.zeros_like(codes))
            parts.append((codes.index_select(1, self.slot_column) == self.slot_code).to(x.dtype))  # (B, S)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}"
