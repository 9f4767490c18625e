"""What every source shares: :class:`RawData` (one source as read), the :class:`Source` interface, the
shape checks every kind of data passes.

A source is one small object per kind of data (:mod:`~focalmix.sources.tables`,
:mod:`~focalmix.sources.arrays`, :mod:`~focalmix.sources.builtin`, :mod:`~focalmix.sources.media`);
:func:`focalmix.sources.open_source` picks it from the argument the user gave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from focalmix.messages import LISTED, short_list

if TYPE_CHECKING:  # pandas is imported where a table is read: `import focalmix` stays fast
    import pandas as pd


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

    media_index: Any = None  # a media source's MediaIndex (focalmix.media); x is then empty (N, 0)


@dataclass
class ReadOptions:
    """How the datamodule reads every source: its table and synthetic arguments, checked."""

    target: str | list[str] = "label"
    feature_columns: list[str] | None = None
    id_columns: list[str] = field(default_factory=list)
    drop_columns: list[str] = field(default_factory=list)
    synthetic: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    media: Any = None  # focalmix.data_media.MediaSettings
    input_spec: Any = None  # the attached backbone's InputSpec (media clip length), or None


class Source:
    """One kind of data behind one argument (``source``, ``val_source``, ...).

    Built from the argument alone, which it checks cheaply (``__init__`` of the datamodule: a bad path
    fails when the config is parsed); :meth:`load` reads it. ``stream`` numbers the datamodule's sources
    (0 train, 1 val, 2 test, 3 predict): the synthetic set draws an independent sample per stream.
    ``expected`` are training's feature columns (a later table must hold them), None for the main source.
    """

    table = False  # CSV/Parquet or a DataFrame: encoded by a fitted preprocessing spec
    media = False  # clips or images: decoded per batch or turned into a frozen backbone's features

    def load(
        self, options: ReadOptions, stream: int, need_labels: bool, expected: list[str] | None
    ) -> RawData:
        raise NotImplementedError


def checked(raw: RawData, need_labels: bool) -> RawData:
    """``raw`` after the checks every source passes: (N, ...) samples, numeric x, labels when needed."""
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


def warn(message: str) -> None:
    from lightning.pytorch.utilities import rank_zero_warn

    rank_zero_warn(message)


def smallest(names: list[str], counts: np.ndarray) -> str:
    """Class counts for a message: all in class order, or, when there are many, the three smallest."""
    if len(names) <= LISTED:
        return short_list({names[i]: int(counts[i]) for i in range(len(names))})
    order = np.argsort(counts, kind="stable")
    return short_list({names[i]: int(counts[i]) for i in order}, limit=3)
