"""Reading and preparing the data behind :class:`focalmix.data.FocalMixDataModule`.

Private helpers, numpy-first: open a source (built-in set, CSV/Parquet table, NPZ, a directory of
memory-mapped ``.npy`` files, in-memory arrays), code its labels, split it with stratification and
compute standardization statistics in chunks, so memory-mapped data is never read whole.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

BUILTINS = ("breast_cancer", "digits", "synthetic")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SUFFIXES = (*TABLE_SUFFIXES, ".npz")
SUPPORTED = (
    f"a built-in name {list(BUILTINS)}, a file ending in {list(SUFFIXES)}, "
    "or a directory holding x.npy (and y.npy)"
)
_CHUNK_ELEMENTS = 1 << 22  # values per chunk when scanning (32 MB of float64)


@dataclass
class RawData:
    """One source as read from disk or memory, labels not yet coded."""

    x: np.ndarray | torch.Tensor  # (N, *sample_shape); np.memmap for a directory source
    y: np.ndarray | None  # (N,) raw labels, (N, C) 0/1 multilabel, or None (predict data)
    feature_names: list[str] | None
    name: str  # for messages
    label_names: list[str] | None = None  # multilabel target columns
    x_path: str | None = None  # the .npy behind a memmap, so worker processes can reopen it


def check_int(value: Any, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r}).")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return value


def check_fraction(value: Any, name: str, low: float = 0.0, low_open: bool = False) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a float, got {type(value).__name__} ({value!r}).")
    if not (low < value < 1 if low_open else low <= value < 1):
        raise ValueError(f"`{name}` must be in {'(' if low_open else '['}{low}, 1), got {value}.")
    return float(value)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__} ({value!r}).")
    return value


def check_str_list(value: Any, name: str) -> list[str]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, str) for v in value)
    ):
        raise TypeError(f"`{name}` must be a list of column names (str), got {value!r}.")
    if not value:
        raise ValueError(f"`{name}` must name at least one column, got an empty list.")
    return list(value)


def check_source(source: object, arg: str, need_labels: bool) -> None:
    """Validate a source argument without reading the data (cheap, for ``__init__``)."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"`{arg}` must be a string or path ({SUPPORTED}), got {type(source).__name__}.")
    if str(source) in BUILTINS:
        return
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"`{arg}`={str(source)!r} is neither an existing path nor {SUPPORTED}.")
    if path.is_dir():
        wanted = ["x.npy", "y.npy"] if need_labels else ["x.npy"]
        missing = [f for f in wanted if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"`{arg}`: directory {path} has no {missing}; it must hold {wanted}.")
    elif path.suffix.lower() not in SUFFIXES:
        raise ValueError(
            f"`{arg}`: unknown file type {path.suffix!r} for {path.name}; supported suffixes: "
            f"{list(SUFFIXES)} (or a directory holding x.npy and y.npy)."
        )


def load_source(
    source: str | os.PathLike,
    *,
    target: str | list[str],
    feature_columns: list[str] | None,
    need_labels: bool,
    synthetic: dict[str, float],
    seed: int,
    stream: int = 0,
    expected_features: list[str] | None = None,
) -> RawData:
    """Read one source; ``stream`` picks an independent synthetic sample (0 train, 1 val, ...)."""
    if str(source) in BUILTINS:
        return _load_builtin(str(source), synthetic, seed, stream)
    path = Path(source)
    if path.is_dir():
        x = np.load(path / "x.npy", mmap_mode="r")
        y = np.load(path / "y.npy") if (path / "y.npy").is_file() else None
        return _checked(RawData(x, y, None, str(path), x_path=str(path / "x.npy")), need_labels)
    if path.suffix.lower() == ".npz":
        with np.load(path) as npz:
            if "x" not in npz.files:
                raise ValueError(
                    f"{path.name} has no array 'x'; arrays are {npz.files}. Save np.savez(f, x=, y=)."
                )
            y = npz["y"] if "y" in npz.files else None
            return _checked(RawData(npz["x"], y, None, path.name), need_labels)
    return _load_table(path, target, feature_columns, need_labels, expected_features)


def _checked(raw: RawData, need_labels: bool) -> RawData:
    x, y = raw.x, raw.y
    if x.ndim < 2:
        raise ValueError(f"x in {raw.name} must have shape (N, *sample_shape), got {tuple(x.shape)}.")
    if len(x) == 0:
        raise ValueError(f"{raw.name} is empty (0 rows); it needs at least a few rows per class.")
    if isinstance(x, np.ndarray) and x.dtype.kind not in "biuf":
        raise TypeError(f"x in {raw.name} must be numeric, got dtype {x.dtype}; encode it as numbers first.")
    if y is None and need_labels:
        raise ValueError(f"{raw.name} has no labels (y); training, validation and test data need them.")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x and y lengths differ in {raw.name}: {len(x)} rows of x, {len(y)} labels.")
    return raw


def _load_builtin(name: str, synthetic: dict[str, float], seed: int, stream: int) -> RawData:
    from sklearn.datasets import load_breast_cancer, load_digits

    if name == "breast_cancer":
        bunch = load_breast_cancer()
        # String labels so the positive class (sorted last) is 'malignant', as clinicians mean it.
        y = bunch.target_names[bunch.target].astype(str)
        return RawData(bunch.data.astype(np.float32), y, [str(f) for f in bunch.feature_names], name)
    if name == "digits":
        bunch = load_digits()
        return RawData(bunch.images.astype(np.float32)[:, None], bunch.target.astype(np.int64), None, name)
    x, y = make_synthetic(**synthetic, seed=seed, stream=stream)
    return RawData(x, y, None, name)


def make_synthetic(
    rows: int, features: int, classes: int, positive_fraction: float, seed: int, stream: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around random means: a linear (LDA) Bayes rule, about 15% Bayes error when binary.

    The last class holds ``positive_fraction`` of the rows, the others share the rest evenly. Means and
    per-feature scales/offsets depend on ``seed`` only; the rows also on ``stream``, so val/test
    sources named ``synthetic`` are fresh samples of the same task. 10^6 x 20 takes well under a second.
    """
    task_rng = np.random.default_rng(seed)
    means = task_rng.standard_normal((classes, features)) * (1.5 / math.sqrt(features))
    scale = task_rng.uniform(0.5, 5.0, features)  # unequal scales so standardization matters
    offset = task_rng.uniform(-3.0, 3.0, features)
    rng = np.random.default_rng([seed, stream])
    n_last = round(rows * positive_fraction)
    counts = np.full(classes - 1, (rows - n_last) // (classes - 1))
    counts[: (rows - n_last) - counts.sum()] += 1
    y = rng.permutation(np.repeat(np.arange(classes), [*counts, n_last]))
    x = rng.standard_normal((rows, features), dtype=np.float32)
    x += means.astype(np.float32)[y]
    x *= scale.astype(np.float32)
    x += offset.astype(np.float32)
    return x, y.astype(np.int64)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    if len(df) == 0:
        raise ValueError(f"{path.name} is empty (no rows); check the file, it needs a header and data rows.")
    df.columns = [str(c) for c in df.columns]
    return df


def _load_table(
    path: Path,
    target: str | list[str],
    feature_columns: list[str] | None,
    need_labels: bool,
    expected: list[str] | None,
) -> RawData:
    df = _read_table(path)
    cols = list(df.columns)
    targets = [target] if isinstance(target, str) else list(target)
    missing_t = [t for t in targets if t not in cols]
    if missing_t and (need_labels or len(missing_t) < len(targets)):
        raise ValueError(
            f"target column(s) {missing_t} not found in {path.name}; columns are: {cols}. Set `target`."
        )
    has_y = not missing_t
    if feature_columns is not None:
        feats = list(feature_columns)
        missing_f = [c for c in feats if c not in cols]
        if missing_f:
            raise ValueError(f"feature_columns {missing_f} not found in {path.name}; columns are: {cols}.")
    else:
        feats = [c for c in cols if c not in targets]
        if expected is not None:
            feats = _aligned(feats, expected, path.name)
    if not feats:
        raise ValueError(f"{path.name} has no feature columns besides the target {targets}.")
    bad = [c for c in feats if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(
            f"non-numeric feature columns {bad} in {path.name}; select numeric columns with "
            "`feature_columns` or encode these as numbers (e.g. one-hot) before training."
        )
    x = df[feats].to_numpy(dtype=np.float32)
    y = None
    if has_y:
        y = df[targets[0]].to_numpy() if isinstance(target, str) else df[targets].to_numpy()
    labels = targets if not isinstance(target, str) else None
    return _checked(RawData(x, y, feats, path.name, label_names=labels), need_labels)


def _aligned(feats: list[str], expected: list[str], name: str) -> list[str]:
    """Training's feature order; a different set of columns is an error, never a silent misalignment."""
    missing = [c for c in expected if c not in feats]
    extra = [c for c in feats if c not in expected]
    if missing or extra:
        raise ValueError(
            f"feature columns of {name} differ from training: missing {missing}, extra {extra}. "
            "Make the files match, or list the training columns in `feature_columns`."
        )
    return list(expected)


def clean_labels(y: np.ndarray, name: str) -> np.ndarray:
    """Reject NaN labels; make integral floats ints and objects strings, so classes sort and compare."""
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
    """Sorted raw classes, the map raw class index -> coded class, and the class names.

    Plain labels code as their sorted position; ``positive_class`` makes one-vs-rest codes with names
    ``["not_<k>", "<k>"]``, so the positive class is still ``class_names[1]``.
    """
    raw_classes = np.unique(y)
    if positive_class is None:
        return raw_classes, np.arange(len(raw_classes)), [str(c) for c in raw_classes]
    code_of = (raw_classes.astype(str) == str(positive_class)).astype(np.int64)
    if not code_of.any():
        raise ValueError(
            f"`positive_class`={positive_class!r} is not a label of {name}; "
            f"labels are {raw_classes.tolist()}."
        )
    return raw_classes, code_of, [f"not_{positive_class}", str(positive_class)]


def encode_labels(y: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Class indices (N,) int64 of ``y`` in the sorted training classes; unseen classes raise."""
    if (y.dtype.kind in "USO") != (classes.dtype.kind in "USO"):
        y, classes = y.astype(str), classes.astype(str)
    idx = np.searchsorted(classes, y).clip(0, len(classes) - 1)
    unseen = classes[idx] != y
    if unseen.any():
        raise ValueError(
            f"{name} has labels never seen in training: {np.unique(y[unseen]).tolist()}; training "
            f"classes are {classes.tolist()}. Remove those rows or add them to the training data."
        )
    return idx.astype(np.int64)


def check_multilabel(y: np.ndarray, name: str) -> np.ndarray:
    """Multilabel targets as float32 (N, C) of 0/1."""
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise ValueError(f"multilabel targets in {name} must all be 0 or 1 (or booleans).")
    return y.astype(np.float32)


def split_indices(
    strata: np.ndarray, val_fraction: float, test_fraction: float, seed: int, class_names: list[str]
) -> dict[str, np.ndarray]:
    """Stratified, seeded train/val/test row indices (each sorted); the same on every rank and run."""
    rng = np.random.default_rng(seed)
    rest = np.arange(len(strata))
    out = {"val": rest[:0], "test": rest[:0]}
    for part, frac in (("test", test_fraction), ("val", val_fraction / (1.0 - test_fraction))):
        if frac == 0:
            continue
        counts = np.bincount(strata[rest], minlength=len(class_names))
        n_part = math.ceil(frac * len(rest))
        n_kept = len(rest) - n_part
        k = int((counts > 0).sum())
        if counts[counts > 0].min() < 2 or n_part < k or n_kept < k:
            raise ValueError(
                f"cannot split {len(rest)} rows into a stratified {part} split of {n_part} and {n_kept} "
                f"others: every class needs >= 2 rows and each split >= {k} rows (one per class); class "
                f"counts are {dict(zip(class_names, counts.tolist(), strict=True))}. Lower `val_fraction`/"
                "`test_fraction`, add data, or pass `val_source`/`test_source`."
            )
        rest, out[part] = _stratified_take(rest, strata[rest], counts, n_part, rng)
    out["train"] = rest
    return out


def _stratified_take(
    rows: np.ndarray, strata: np.ndarray, counts: np.ndarray, n_take: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (kept, taken), both sorted, taking ``n_take`` rows in proportion to ``counts``.

    Written here rather than with scikit-learn's ``train_test_split``, whose index arrays peaked at
    ~850 MB for 10^7 rows: this keeps one index array per class. Each class gets ``floor`` of its share,
    the remainder goes to the largest fractional parts; within a class the rows are a seeded shuffle.
    """
    exact = n_take * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    extra = np.argsort(-(exact - quota), kind="stable")[: n_take - int(quota.sum())]
    quota[extra] += 1
    order = np.argsort(strata, kind="stable")  # rows grouped by class, each group in row order
    starts = np.concatenate([[0], np.cumsum(counts)])
    taken = []
    for c in np.flatnonzero(quota):
        members = order[starts[c] : starts[c + 1]]
        taken.append(members[rng.permutation(len(members))[: quota[c]]])
    picked = np.zeros(len(rows), dtype=bool)
    picked[np.concatenate(taken)] = True
    return rows[~picked], rows[picked]


def scan(
    x: np.ndarray | torch.Tensor, rows: np.ndarray | None, names: list[str] | None, name: str
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Check every value is finite and return (mean, std) over ``rows`` (None: no statistics).

    One chunked pass (memory-mapped data is never read whole), Chan et al.'s pairwise update in
    float64. Per feature for (N, F) data, per channel (shape (C, 1, ..)) for (N, C, ...) data.
    """
    xn = x.numpy() if isinstance(x, torch.Tensor) else x
    axes = (0,) if xn.ndim == 2 else (0, *range(2, xn.ndim))
    chunk = max(1, _CHUNK_ELEMENTS // max(1, math.prod(xn.shape[1:])))
    mask = None
    if rows is not None:
        mask = np.zeros(len(xn), dtype=bool)
        mask[rows] = True
    n, mean, m2 = 0, 0.0, 0.0
    bad_rows, bad_feats = 0, np.zeros(xn.shape[1], dtype=bool)
    for start in range(0, len(xn), chunk):
        block = np.asarray(xn[start : start + chunk])
        if block.dtype.kind == "f":
            finite = np.isfinite(block).reshape(len(block), -1) if xn.ndim > 2 else np.isfinite(block)
            if not finite.all():
                bad_rows += int((~finite.all(axis=1)).sum())
                if xn.ndim == 2:
                    bad_feats |= ~finite.all(axis=0)
                continue
        if mask is None:
            continue
        sel = block[mask[start : start + chunk]].astype(np.float64)
        if len(sel) == 0:
            continue
        nb = sel.size // xn.shape[1]
        mb = sel.mean(axis=axes, keepdims=True)
        m2b = ((sel - mb) ** 2).sum(axis=axes, keepdims=True)
        delta, total = mb - mean, n + nb
        mean, m2, n = mean + delta * (nb / total), m2 + m2b + delta**2 * (n * nb / total), total
    if bad_rows:
        cols = np.flatnonzero(bad_feats).tolist()
        where = f" in columns {[names[i] for i in cols] if names else cols}" if cols else ""
        raise ValueError(
            f"NaN or infinite feature values in {name}{where}: {bad_rows} rows. Drop or impute them first."
        )
    if mask is None:
        return None
    mean_t = torch.from_numpy(np.asarray(mean)[0]).float()
    std_t = torch.from_numpy(np.sqrt(np.asarray(m2)[0] / max(n, 1))).float().clamp_min(1e-6)
    return mean_t, std_t
