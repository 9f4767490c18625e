"""Table sources: a CSV/Parquet file (:class:`TableFile`) or a DataFrame in memory (:class:`Frame`).

A table comes back as :class:`~focalmix.sources.base.RawData` with ``frame`` (its feature columns, still
raw: text, booleans, gaps) instead of ``x``; the datamodule encodes it with a preprocessing spec fitted on
the training split. Later tables (val/test/predict) are matched to training's feature columns by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from focalmix.sources.base import RawData, ReadOptions, Source, checked, short_list, warn
from focalmix.sources.labels import check_not_continuous
from focalmix.table_io import read_table

if TYPE_CHECKING:
    import pandas as pd


class TableFile(Source):
    """A ``.csv``/``.parquet``/``.pq`` file: a ``target`` column (or several: multilabel) and features."""

    table = True

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(
        self, options: ReadOptions, stream: int, need_labels: bool, expected: list[str] | None
    ) -> RawData:
        path, target = self.path, options.target
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
        keys = (options.id_columns, options.drop_columns)
        return table_data(
            df, y, path.name, options.feature_columns, need_labels, expected, keys, targets, labels
        )


class Frame(Source):
    """A DataFrame given to ``from_arrays`` with its labels: columns become ``feature_names``."""

    table = True
    NAME = "the arrays given to from_arrays"

    def __init__(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        self.raw = checked(RawData(None, y, None, self.NAME, frame=frame.rename(columns=str)), True)

    def load(
        self, options: ReadOptions, stream: int, need_labels: bool, expected: list[str] | None
    ) -> RawData:
        raw, keys = self.raw, (options.id_columns, options.drop_columns)
        return table_data(raw.frame, raw.y, raw.name, options.feature_columns, True, expected, keys)


def _integral(y: np.ndarray) -> np.ndarray:
    """Numeric labels without NaN (as :func:`~focalmix.sources.labels.clean_labels` leaves them)."""
    if y.dtype.kind == "f":
        return y[~np.isnan(y)]
    return y


def table_data(
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
            warn(f"{name} has no id columns {short_list(absent_ids)}; the predictions will not carry them.")
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
    return checked(raw, need_labels)


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
        warn(
            f"{name}: ignoring columns {short_list(extra)}, which are not features of the model (name keys "
            "in `id_columns` to carry them into the predictions)."
        )
    return list(expected)
