"""Where the datamodule's data comes from: one small class per kind of source, behind one interface.

Every source is a :class:`Source`, built from the user's argument (cheap checks only: a bad path fails
when the config is parsed) and read by ``load(options, stream, need_labels, expected)`` into a
:class:`RawData` (samples, raw labels, names). :func:`open_source` picks the kind:

* :class:`~focalmix.sources.media.MediaSource`: a folder of clips/images, or a manifest (``path_column``);
* :class:`~focalmix.sources.builtin.Builtin`: ``"breast_cancer"``, ``"digits"``, ``"synthetic"``;
* :class:`~focalmix.sources.arrays.NpyFolder`, :class:`~focalmix.sources.arrays.NpzFile`: NumPy files;
* :class:`~focalmix.sources.tables.TableFile`: CSV/Parquet (:mod:`focalmix.table_io` reads them);
* :func:`in_memory`: arrays or a DataFrame given to ``FocalMixDataModule.from_arrays``.

What happens next is functions, one idea per module: :mod:`~focalmix.sources.labels` (label coding, the
task), :mod:`~focalmix.sources.splits` (stratified splits), :mod:`~focalmix.sources.statistics`
(finite values, standardization statistics) and :mod:`focalmix.preprocessing` (the table encoding).

Example:
    >>> src = open_source("synthetic", "source", need_labels=True)
    >>> options = ReadOptions(synthetic=dict(rows=8, features=2, classes=2, positive_fraction=0.5))
    >>> raw = src.load(options, stream=0, need_labels=True, expected=None)
    >>> type(src).__name__, raw.x.shape, raw.y.tolist()
    ('Builtin', (8, 2), [0, 1, 0, 1, 1, 0, 0, 1])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from focalmix._checks import ArgumentTypeError, ArgumentValueError
from focalmix.sources.arrays import InMemory, NpyFolder, NpzFile
from focalmix.sources.base import RawData, ReadOptions, Source
from focalmix.sources.builtin import BUILTINS, Builtin
from focalmix.sources.media import MediaSource
from focalmix.sources.tables import Frame, TableFile
from focalmix.table_io import TABLE_SUFFIXES, is_table, read_table

__all__ = [
    "BUILTINS",
    "SUFFIXES",
    "TABLE_SUFFIXES",
    "RawData",
    "ReadOptions",
    "Source",
    "in_memory",
    "is_table",
    "open_source",
    "read_table",
]

SUFFIXES = (*TABLE_SUFFIXES, ".npz")
SUPPORTED = (
    f"a built-in name {list(BUILTINS)}, a file ending in {list(SUFFIXES)}, "
    "or a directory holding x.npy (and y.npy)"
)


def open_source(
    value: Any, arg: str, need_labels: bool, path_column: str | None = None, owner: type | None = None
) -> Source:
    """The :class:`Source` for one argument (``arg``: its name in messages), checked without reading data.

    Raises:
        TypeError: not a string or path.
        FileNotFoundError: a path that does not exist, or a directory without ``x.npy`` (``y.npy``).
        ValueError: a file of an unknown type.
    """
    from focalmix import data_media  # media decoding is imported when a source may be media

    if data_media.is_media(value, path_column):
        return MediaSource(value)
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"`{arg}` must be a string or path ({SUPPORTED}), got {type(value).__name__}.", arg, owner
        )
    if str(value) in BUILTINS:
        return Builtin(str(value))
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"`{arg}`={str(value)!r} is neither an existing path nor {SUPPORTED}.")
    if path.is_dir():
        return NpyFolder(path, arg, need_labels)
    if path.suffix.lower() == ".npz":
        return NpzFile(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return TableFile(path)
    raise ArgumentValueError(
        f"`{arg}`: unknown file type {path.suffix!r} for {path.name}; supported suffixes: "
        f"{list(SUFFIXES)} (or a directory holding x.npy and y.npy).",
        arg,
        owner,
    )


def in_memory(x: Any, y: Any) -> Source:
    """The source of ``FocalMixDataModule.from_arrays(x, y)``: arrays, a tensor, or a DataFrame (a table).

    Raises:
        TypeError: ``x`` is none of those, or a complex/boolean tensor.
        ValueError: ``x`` and ``y`` lengths differ, no rows, or ``x`` is not (N, ...).
    """
    if not isinstance(x, (np.ndarray, torch.Tensor)) and not hasattr(x, "columns"):
        raise TypeError(f"`x` must be a numpy array, torch tensor or DataFrame, got {type(x).__name__}.")
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return Frame(x, y) if hasattr(x, "columns") else InMemory(x, y)
