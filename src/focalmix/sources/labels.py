"""Label coding: raw labels (ints, strings, 0/1 columns) -> class codes, the task, and the class names.

Functions only, numpy-first: the datamodule calls them on the training labels (:func:`class_coding`,
:func:`single_label_task`, :func:`train_class_counts`) and on every later split (:func:`code_labels`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from focalmix.sources.base import short_list, smallest

# A numeric target with more distinct values than this (and than 5% of its rows) is a quantity, not classes.
CONTINUOUS_VALUES, CONTINUOUS_SHARE = 50, 0.05


def clean_labels(y: np.ndarray, name: str) -> np.ndarray:
    """Reject NaN labels; make integral floats ints and objects strings, so classes sort and compare."""
    import pandas as pd

    y = np.asarray(y)
    if y.dtype.kind in "fcO":
        nan = pd.isna(y)
        if nan.any():
            rows = int(nan.any(axis=1).sum()) if nan.ndim > 1 else int(nan.sum())
            raise ValueError(f"NaN labels in {name}: {rows} rows; drop or fill those rows before training.")
    if y.dtype.kind == "O":
        return y.astype(str)
    if y.dtype.kind == "f" and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def class_coding(
    y: np.ndarray, positive_class: int | str | None, name: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sorted raw classes, the map raw class index -> coded class, and the class names (by code).

    Plain labels code as their sorted position (ints numerically, strings alphabetically), except two text
    labels: the minority class (fewer rows in ``y``) becomes code 1, the positive class, so precision,
    recall and the threshold are about the rare class; on a tie the label that sorts last is positive.
    Numeric (and boolean, and number-like text) labels keep the larger as positive: 0/1 means 1.
    ``positive_class=k`` makes ``k`` positive: with two classes the other keeps its name, with more the task
    is one-vs-rest with names ``["not_<k>", "<k>"]``. The positive class is always ``class_names[1]``.

    Raises:
        ValueError: ``positive_class`` is not a label, or numeric labels look continuous.

    Example:
        >>> raw, code_of, names = class_coding(np.array(["good", "bad", "good"]), None, "t")
        >>> raw.tolist(), code_of.tolist(), names
        (['bad', 'good'], [1, 0], ['good', 'bad'])
    """
    raw_classes, counts = np.unique(y, return_counts=True)
    check_not_continuous(y, f"the labels of {name}", raw_classes)
    if positive_class is None:
        code_of = np.arange(len(raw_classes))
        if len(raw_classes) == 2 and _is_text(raw_classes) and counts[0] < counts[1]:
            code_of = np.array([1, 0])  # the minority sorts first: make it positive
    else:
        code_of = (raw_classes.astype(str) == str(positive_class)).astype(np.int64)
        if not code_of.any():
            raise ValueError(
                f"`positive_class`={positive_class!r} is not a label of {name}; "
                f"labels are {short_list(raw_classes.tolist())}."
            )
        if len(raw_classes) != 2:
            return raw_classes, code_of, [f"not_{positive_class}", str(positive_class)]
    names = [""] * len(raw_classes)
    for raw, code in zip(raw_classes, code_of, strict=True):
        names[code] = str(raw)
    return raw_classes, code_of, names


def _is_text(classes: np.ndarray) -> bool:
    """Labels that are words: text that does not read as numbers ("0"/"1" keep the numeric rule)."""
    if classes.dtype.kind not in "USO":
        return False
    try:
        [float(c) for c in classes]
    except (TypeError, ValueError):
        return True
    return False


def check_not_continuous(y: np.ndarray, what: str, classes: np.ndarray | None = None) -> None:
    """Refuse numeric labels with many distinct values: a quantity to regress (or bin), not classes.

    More than 50 distinct values that are also more than 5% of the rows; booleans and text never are.

    Example:
        >>> check_not_continuous(np.arange(200.0), "target 'price'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: target 'price' looks continuous (200 distinct values in 200 rows); focalmix ...
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iuf":
        return
    n_values = len(np.unique(y) if classes is None else classes)
    if n_values > CONTINUOUS_VALUES and n_values > CONTINUOUS_SHARE * len(y):
        raise ValueError(
            f"{what} looks continuous ({n_values:,} distinct values in {len(y):,} rows); focalmix "
            "classifies: bin it into classes first (e.g. pandas.qcut) or pick a class column as the target."
        )


def encode_labels(y: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Class indices (N,) int64 of ``y`` in the sorted training classes; unseen classes raise."""
    if (y.dtype.kind in "USO") != (classes.dtype.kind in "USO"):
        y, classes = y.astype(str), classes.astype(str)
    idx = np.searchsorted(classes, y).clip(0, len(classes) - 1)
    unseen = classes[idx] != y
    if unseen.any():
        raise ValueError(
            f"{name} has labels never seen in training: {short_list(np.unique(y[unseen]).tolist())}; "
            f"training classes are {short_list(classes.tolist())}. Remove those rows or add them to the "
            "training data."
        )
    return idx.astype(np.int64)


def single_label_task(counts: np.ndarray, names: list[str], task: str | None, name: str) -> str:
    """The task of single-label data with these class counts (``task``: the user's choice, or None)."""
    if task == "multilabel":
        raise ValueError(
            f"task='multilabel' needs several 0/1 target columns, but {name} has a single "
            "label per row; pass `target` as a list of columns or drop `task`."
        )
    if (counts > 0).sum() < 2:
        raise ValueError(
            f"the training data ({name}) has a single class {names[int(counts.argmax())]!r}; "
            "a classifier needs rows of at least two classes."
        )
    task = task or ("binary" if len(names) == 2 else "multiclass")
    if task == "binary" and len(names) > 2:
        raise ValueError(
            f"task='binary' but {name} has {len(names)} classes {short_list(names)}; use "
            "task='multiclass', or positive_class=<label> for a one-vs-rest binary task."
        )
    return task


def train_class_counts(train_codes: np.ndarray, counts: np.ndarray, names: list[str]) -> np.ndarray:
    """Rows per class in the training split; a class without any raises."""
    train_counts = np.bincount(train_codes, minlength=len(names))
    if (train_counts == 0).any():
        empty = [n for n, c in zip(names, train_counts, strict=True) if c == 0]
        raise ValueError(
            f"classes {short_list(empty)} have no training rows after the split; class counts are "
            f"{smallest(names, counts)}. Lower `val_fraction`/`test_fraction` or add data."
        )
    return train_counts


def check_multilabel(y: np.ndarray, name: str) -> np.ndarray:
    """Multilabel targets as float32 (N, C) of 0/1."""
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise ValueError(f"multilabel targets in {name} must all be 0 or 1 (or booleans).")
    return y.astype(np.float32)


def code_labels(
    y: np.ndarray, task: str, class_names: list[str], raw_classes: Any, code_of: Any, name: str
) -> torch.Tensor:
    """Labels of a later split (val/test/predict) coded like training's: 0./1., class indices or 0/1 rows."""
    if task == "multilabel":
        if y.ndim != 2 or y.shape[1] != len(class_names):
            raise ValueError(
                f"{name} must have {len(class_names)} target columns like training, "
                f"got labels of shape {y.shape}."
            )
        return torch.from_numpy(check_multilabel(y, name))
    if y.ndim != 1:
        raise ValueError(f"{name} must have one label per row like training, got shape {y.shape}.")
    codes = code_of[encode_labels(y, raw_classes, name)]
    return torch.from_numpy(codes.astype(np.float32) if task == "binary" else codes)
