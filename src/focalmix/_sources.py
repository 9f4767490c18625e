"""Reading and preparing the data behind :class:`focalmix.data.FocalMixDataModule`.

Private helpers, numpy-first: open a source (built-in set, CSV/Parquet table, NPZ, a directory of
memory-mapped ``.npy`` files, in-memory arrays), code its labels, split it with stratification and
compute standardization statistics in chunks, so memory-mapped data is never read whole.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pandas is imported where a table is read: `import focalmix` stays fast
    import pandas as pd

BUILTINS = ("breast_cancer", "digits", "synthetic")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SUFFIXES = (*TABLE_SUFFIXES, ".npz")
SUPPORTED = (
    f"a built-in name {list(BUILTINS)}, a file ending in {list(SUFFIXES)}, "
    "or a directory holding x.npy (and y.npy)"
)
_CHUNK_ELEMENTS = 1 << 22  # values per chunk when scanning (32 MB of float64)
_SNIFF_BYTES = 16 * 1024  # of a CSV's head, to find its delimiter and header
# A numeric target with more distinct values than this (and than 5% of its rows) is a quantity, not classes.
CONTINUOUS_VALUES, CONTINUOUS_SHARE = 50, 0.05
_LISTED = 8  # items of a long list that an error message shows


def short_list(items: Sequence[Any] | dict, limit: int = _LISTED) -> str:
    """A list (or ``{name: count}`` mapping) for a one-line message: the first ``limit`` items, then a count.

    Example:
        >>> short_list(["a", "b", "c"], limit=2), short_list({"x": 3, "y": 1})
        ("['a', 'b', ... 1 more]", "{'x': 3, 'y': 1}")
    """
    pairs = list(items.items()) if isinstance(items, dict) else list(items)
    shown = pairs[:limit]
    more = f", ... {len(pairs) - limit} more" if len(pairs) > limit else ""
    if isinstance(items, dict):
        return f"{{{', '.join(f'{_brief(k)}: {_brief(v)}' for k, v in shown)}{more}}}"
    return f"[{', '.join(_brief(v) for v in shown)}{more}]"


def _brief(value: Any, width: int = 40) -> str:
    """``repr(value)``, a long one cut in the middle (a column name can be a sentence)."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 13]}...{text[-10:]}"


@dataclass
class RawData:
    """One source as read from disk or memory, labels not yet coded."""

    x: np.ndarray | torch.Tensor | None  # (N, *sample_shape); np.memmap for a directory; None: table
    y: np.ndarray | None  # (N,) raw labels, (N, C) 0/1 multilabel, or None (predict data)
    feature_names: list[str] | None
    name: str  # for messages
    label_names: list[str] | None = None  # multilabel target columns
    x_path: str | None = None  # the .npy behind a memmap, so worker processes can reopen it
    frame: pd.DataFrame | None = None  # a table's feature columns, until preprocessing encodes them as x
    ids: pd.DataFrame | None = None  # a table's id columns, row-aligned with frame


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


def check_str_list(value: Any, name: str, optional: bool = False) -> list[str] | None:
    if optional and value is None:
        return None
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, str) for v in value)
    ):
        raise TypeError(f"`{name}` must be a list of column names (str), got {value!r}.")
    if not value:
        raise ValueError(f"`{name}` must name at least one column, got an empty list.")
    return list(value)


def check_target(
    target: Any, task: Any, positive_class: Any, balanced_sampling: Any, tasks: tuple[str, ...]
) -> str | list[str]:
    """Validate ``target`` with the arguments that depend on it; return it (a list means multilabel)."""
    target = target if isinstance(target, str) else check_str_list(target, "target")
    if isinstance(target, list) and len(target) < 2:
        raise ValueError(
            f"a list `target` means multilabel and needs >= 2 columns, got {target}; "
            "pass a single column name as a string for binary or multiclass."
        )
    if task is not None and task not in tasks:
        raise ValueError(f"`task` must be one of {tasks} or None, got {task!r}.")
    multilabel = isinstance(target, list) or task == "multilabel"
    if positive_class is not None and (multilabel or not isinstance(positive_class, (int, str))):
        raise ValueError(
            f"`positive_class` must be an int or str label of a single-target task, "
            f"got {positive_class!r} with target={target!r}, task={task!r}."
        )
    if balanced_sampling is True and multilabel:
        raise ValueError(
            "`balanced_sampling` needs a binary or multiclass task; multilabel rows have no "
            "single class to weight. Set balanced_sampling=False."
        )
    return target


def check_split(val_fraction: Any, test_fraction: Any) -> tuple[float, float]:
    val, test = check_fraction(val_fraction, "val_fraction"), check_fraction(test_fraction, "test_fraction")
    if val + test >= 1:
        raise ValueError(
            f"`val_fraction` + `test_fraction` must be < 1 to leave training rows, got {val} + {test}."
        )
    return val, test


def check_synthetic(rows: Any, features: Any, classes: Any, positive_fraction: Any) -> dict[str, Any]:
    return {
        "rows": check_int(rows, "synthetic_rows", 4),
        "features": check_int(features, "synthetic_features", 1),
        "classes": check_int(classes, "synthetic_classes", 2),
        "positive_fraction": check_fraction(positive_fraction, "synthetic_positive_fraction", low_open=True),
    }


def is_table(source: object) -> bool:
    return str(source).lower().endswith(TABLE_SUFFIXES)


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
    id_columns: Sequence[str] = (),
    drop_columns: Sequence[str] = (),
) -> RawData:
    """Read one source; ``stream`` picks an independent synthetic sample (0 train, 1 val, ...).

    A table comes back with ``frame`` (its feature columns, still raw) instead of ``x``; ``expected_features``
    are training's feature columns (a later file must hold them; other columns are ignored).
    """
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
                    f"{path.name} has no array 'x'; arrays are {short_list(npz.files)}. "
                    "Save np.savez(f, x=, y=)."
                )
            y = npz["y"] if "y" in npz.files else None
            return _checked(RawData(npz["x"], y, None, path.name), need_labels)
    keys = (list(id_columns), list(drop_columns))
    return _load_table(path, target, feature_columns, need_labels, expected_features, keys)


def _checked(raw: RawData, need_labels: bool) -> RawData:
    x, y = raw.x if raw.frame is None else raw.frame, raw.y
    if x.ndim < 2:
        raise ValueError(f"x in {raw.name} must have shape (N, *sample_shape), got {tuple(x.shape)}.")
    if len(x) == 0:
        raise ValueError(f"{raw.name} is empty (0 rows); it needs at least a few rows per class.")
    if isinstance(x, np.ndarray) and x.dtype.kind not in "biuf":
        raise TypeError(
            f"x in {raw.name} must be numeric, got dtype {x.dtype}; encode it as numbers first, or pass "
            "a DataFrame (its text, boolean and categorical columns are encoded as categories)."
        )
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


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame with str column names; one clear error for a bad file.

    CSV: UTF-8 with or without a byte-order mark; the delimiter (``,`` ``;`` tab ``|``) is sniffed from
    the first 16 KB (comma when unsure). Empty, duplicate or mangled column names, rows with more fields
    than the header, a last line cut short and unparsable or non-UTF-8 files raise ``ValueError``.
    """
    import pandas as pd

    if path.suffix.lower() == ".csv":
        df = _read_csv(path)
    else:
        try:
            df = pd.read_parquet(path)
        except ImportError:
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others on a damaged file
            raise ValueError(
                f"could not read {path.name} as Parquet ({type(e).__name__}: {str(e)[:120]}); the file "
                "may be truncated or not Parquet: re-create it."
            ) from e
    if len(df) == 0:
        raise ValueError(f"{path.name} is empty (no rows); check the file, it needs a header and data rows.")
    df.columns = [str(c) for c in df.columns]
    _check_names(list(df.columns), path.name)
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.strip():
        raise ValueError(f"{path.name} is empty (no rows); check the file, it needs a header and data rows.")
    try:  # a character cut at the sample's end is not an error
        text = head.decode("utf-8-sig", errors="strict" if len(head) < _SNIFF_BYTES else "ignore")
    except UnicodeDecodeError as e:
        raise ValueError(_not_utf8(path, e)) from e
    cut = text.rfind("\n") + 1 if len(head) == _SNIFF_BYTES else 0
    sample = text[:cut] or text  # whole lines only
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:  # one column, or too few lines to tell
        sep = ","
    try:
        header = next(csv.reader(io.StringIO(sample, newline=""), delimiter=sep), [])
    except csv.Error as e:
        raise ValueError(f"could not read the header of {path.name} ({e}); check the first line.") from e
    _check_names(header, path.name)
    try:
        with warnings.catch_warnings():
            # without index_col=False, rows longer than the header silently turn column 1 into the index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig", index_col=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except UnicodeDecodeError as e:
        raise ValueError(_not_utf8(path, e)) from e
    except (pd.errors.ParserError, pd.errors.ParserWarning, csv.Error, ValueError) as e:
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"could not read {path.name} as a {_SEP_NAMES.get(sep, repr(sep))}-separated CSV ({detail}); "
            "the file may be truncated, or rows have more fields than the header: check or re-create it."
        ) from e
    _check_last_line(path, sep, len(header))
    return df


_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    return (
        f"{path.name} is not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at offset "
        f"{error.start}); save it as UTF-8 (Excel: 'CSV UTF-8'), or as Parquet."
    )


def _check_names(names: list[str], name: str) -> None:
    empty = [i + 1 for i, n in enumerate(names) if n == "" or n.startswith("Unnamed: ")]
    if empty:
        raise ValueError(
            f"columns {short_list(empty)} (1-based) of {name} have no name; name them in the header, or, "
            "for an index saved by pandas, re-save with `to_csv(..., index=False)`."
        )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(
            f"column names {short_list(dup)} appear more than once in {name}; give each column its own name."
        )


def _check_last_line(path: Path, sep: str, width: int) -> None:
    """A last line without a line end and with fewer fields than the header: a file cut short."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - _SNIFF_BYTES))
        tail = f.read()
    if not tail or tail.endswith((b"\n", b"\r")):
        return
    last = tail.splitlines()[-1].decode("utf-8", errors="replace")
    fields = next(csv.reader([last], delimiter=sep), [])
    if len(fields) < width:
        raise ValueError(
            f"{path.name} looks truncated: its last line has {len(fields)} of {width} fields and no line "
            "end (an interrupted copy or a full disk?); re-create the file, or delete that line."
        )


def _load_table(
    path: Path,
    target: str | list[str],
    feature_columns: list[str] | None,
    need_labels: bool,
    expected: list[str] | None,
    keys: tuple[list[str], list[str]],
) -> RawData:
    df = read_table(path)
    cols = list(df.columns)
    targets = [target] if isinstance(target, str) else list(target)
    missing_t = [t for t in targets if t not in cols]
    if missing_t and (need_labels or len(missing_t) < len(targets)):
        raise ValueError(
            f"target column(s) {short_list(missing_t)} not found in {path.name}; columns are: "
            f"{short_list(cols)}. Set `target`."
        )
    y = None
    if not missing_t:
        y = df[targets[0]].to_numpy() if isinstance(target, str) else df[targets].to_numpy()
        if isinstance(target, str) and expected is None:  # the training file: name the column
            check_not_continuous(_integral(y), f"target {target!r}")
    labels = targets if not isinstance(target, str) else None
    return table_source(df, y, path.name, feature_columns, need_labels, expected, keys, targets, labels)


def _integral(y: np.ndarray) -> np.ndarray:
    """Numeric labels without NaN (as :func:`clean_labels` leaves them), for the continuity check."""
    if y.dtype.kind == "f":
        return y[~np.isnan(y)]
    return y


def table_source(
    df: pd.DataFrame,
    y: np.ndarray | None,
    name: str,
    feature_columns: list[str] | None,
    need_labels: bool,
    expected: list[str] | None,
    keys: tuple[list[str], list[str]],
    targets: Sequence[str] = (),
    label_names: list[str] | None = None,
) -> RawData:
    """A table's features (raw, in ``frame``) and id columns; ``expected``: training's feature columns."""
    cols = [str(c) for c in df.columns]
    ids, drops = keys
    not_features = {*targets, *ids, *drops}
    if expected is None:  # the training source
        absent = [c for c in [*ids, *drops, *(feature_columns or [])] if c not in cols]
        if absent:
            raise ValueError(
                f"columns {short_list(absent)} (of `feature_columns`/`id_columns`/`drop_columns`) not found "
                f"in {name}; columns are: {short_list(cols)}."
            )
        feats = list(feature_columns) if feature_columns else [c for c in cols if c not in not_features]
    else:
        feats = _secondary_features(cols, expected, not_features, feature_columns is None, name)
        absent_ids = [c for c in ids if c not in cols]
        if absent_ids and not need_labels:
            _warn(f"{name} has no id columns {short_list(absent_ids)}; the predictions will not carry them.")
    if not feats:
        raise ValueError(
            f"{name} has no feature columns besides the target {short_list(targets)} and id/drop columns."
        )
    kept = [c for c in ids if c in cols]
    raw = RawData(
        None,
        y,
        feats,
        name,
        label_names=label_names,
        frame=df[feats],
        ids=df[kept].reset_index(drop=True) if kept else None,
    )
    return _checked(raw, need_labels)


def numeric_matrix(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A table's values as float32 (N, F), for data whose training source was not a table."""
    import pandas as pd

    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool]
    if bad:
        raise ValueError(
            f"non-numeric feature columns {short_list(bad)} in {name}; the training data was not a table, "
            "so every feature must be a number here."
        )
    return frame.to_numpy(dtype=np.float32)


def _secondary_features(
    cols: list[str], expected: list[str], not_features: set[str], warn_extra: bool, name: str
) -> list[str]:
    """Training's feature columns, found by name; absent ones raise, extra ones are ignored (one warning)."""
    absent = [c for c in expected if c not in cols]
    extra = [c for c in cols if c not in expected and c not in not_features]
    if absent:
        renamed = f"; it has other columns {short_list(extra)} (renamed?)" if extra else ""
        raise ValueError(
            f"{name} lacks feature columns {short_list(absent)} that the model was trained on{renamed}. Add "
            f"them (empty where unknown); training's feature columns are {short_list(expected)}."
        )
    if extra and warn_extra:
        _warn(
            f"{name}: ignoring columns {short_list(extra)}, which are not features of the model (name keys "
            "in `id_columns` to carry them into the predictions)."
        )
    return list(expected)


def _warn(message: str) -> None:
    from lightning.pytorch.utilities import rank_zero_warn

    rank_zero_warn(message)


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
            f"{_smallest(names, counts)}. Lower `val_fraction`/`test_fraction` or add data."
        )
    return train_counts


def _smallest(names: list[str], counts: np.ndarray) -> str:
    """Class counts for a message: all in class order, or, when there are many, the three smallest."""
    if len(names) <= _LISTED:
        return short_list({names[i]: int(counts[i]) for i in range(len(names))})
    order = np.argsort(counts, kind="stable")
    return short_list({names[i]: int(counts[i]) for i in order}, limit=3)


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
            fix = "Lower `val_fraction`/`test_fraction`, add data, or pass `val_source`/`test_source`."
            if k > _LISTED:  # many classes: the rare ones are the problem (and the line stays short)
                fix = "Merge or drop rare classes, or pass `val_source`."
            raise ValueError(
                f"cannot split {len(rest)} rows into a stratified {part} split of {n_part} and {n_kept} "
                f"others: every class needs >= 2 rows and each split >= {k} rows (one per class); class "
                f"counts are {_smallest(class_names, counts)}. {fix}"
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
        where = f" in columns {short_list([names[i] for i in cols] if names else cols)}" if cols else ""
        raise ValueError(
            f"NaN or infinite feature values in {name}{where}: {bad_rows} rows. Drop or impute them first."
        )
    if mask is None:
        return None
    mean_t = torch.from_numpy(np.asarray(mean)[0]).float()
    std_t = torch.from_numpy(np.sqrt(np.asarray(m2)[0] / max(n, 1))).float().clamp_min(1e-6)
    return mean_t, std_t
