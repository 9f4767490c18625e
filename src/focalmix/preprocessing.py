"""Fitted table transforms: missing values, categories and standardization, applied inside the model.

A table reaches the model as "raw rows": one float32 column per feature column, in ``feature_names``
order (:func:`encode_frame`). Numeric columns keep their values, NaN included; categorical columns become
category codes, ``0`` for unknown, unseen or missing and ``i + 1`` for ``categories[i]``. Everything else
happens in :class:`InputEncoder`, the model's first layer: NaN -> the training median, standardization,
one 0/1 missing-indicator per column that had gaps in training, and a one-hot block per categorical
column. So a checkpoint or an ONNX/TorchScript export predicts from raw rows alone, and the only step
left to a caller is the string -> code lookup (strings cannot enter a float tensor).

This module fits and encodes; the spec's checks and the encoded columns' names are
:mod:`focalmix.table_spec`, the encoder is :mod:`focalmix.encoder` (both importable from here).

What is fitted (on the training split only, by :func:`fit_spec`) is a JSON-able dict, saved as a model
hyperparameter and in ``config.yaml``::

    {"version": 1, "columns": [
        {"name": "age", "kind": "numeric", "median": 41.0, "indicator": true, "mean": 40.2, "std": 11.9},
        {"name": "color", "kind": "categorical", "categories": ["blue", "red"]}]}

One-hot rather than a learned embedding: at ``max_categories=100`` the widest block is 101 columns, cheap
for the first Linear layer, and it is a gather and a comparison, which export to ONNX and TorchScript
without custom ops; an embedding (for far more levels) is a later option.

Example:
    >>> import pandas as pd, torch
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

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from focalmix._checks import check_one
from focalmix.encoder import InputEncoder
from focalmix.messages import short_list
from focalmix.sources.statistics import feature_std
from focalmix.table_spec import (
    MISSING,
    SPEC_VERSION,
    Names,
    check_options,
    check_roles,
    check_same_spec,
    check_spec,
    describe,
    encoded_names,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_ABS",
    "MISSING",
    "SPEC_VERSION",
    "InputEncoder",
    "check_options",
    "check_roles",
    "check_same_spec",
    "check_spec",
    "describe",
    "encode_frame",
    "encoded_names",
    "fit_spec",
    "key_like_columns",
]
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
    features = list(check_one(feature_columns, "feature_columns", [Names(1)]))
    categorical = set(check_one(categorical_columns or [], "categorical_columns", [Names()]))
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
        # constant in training (at rounding level): centred, not scaled
        "std": float(feature_std(*torch.tensor([std, mean], dtype=torch.float64))),
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
