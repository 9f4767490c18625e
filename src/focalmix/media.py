"""Media sources: folders of audio clips or images, manifests, long recordings, and their dataset.

A source is first indexed (:func:`scan_folder` or :func:`read_manifest`: which files, which labels,
each file probed so a damaged one is reported before training), long recordings are cut into clips
(:func:`split_long_files`), and :class:`MediaDataset` decodes only the items a batch asks for, with a
per-item function built from a backbone's :class:`~focalmix.backbones.spec.InputSpec`
(:func:`make_loader`). This module indexes folders and manifests; decoding one file lives in
:mod:`focalmix.media_io`, long files and windows in :mod:`focalmix.media_windows`, the dataset in
:mod:`focalmix.media_dataset`, all importable from here. No Lightning here.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from focalmix._checks import ArgumentValueError, Satisfies, check_one
from focalmix.media_dataset import MediaDataset, make_loader
from focalmix.media_io import (
    AUDIO_SUFFIXES,
    IMAGE_SUFFIXES,
    MEDIA_KIND,
    MediaDecodeError,
    audio_duration,
    load_audio,
    load_image,
    media_suffix_kind,
    probe,
)
from focalmix.media_windows import LONG_FILE_TOLERANCE, split_long_files, windows
from focalmix.table_io import TABLE_SUFFIXES, read_table

__all__ = [
    "AUDIO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "LONG_FILE_TOLERANCE",
    "MediaDataset",
    "MediaDecodeError",
    "MediaIndex",
    "audio_duration",
    "load_audio",
    "load_image",
    "make_loader",
    "media_kind",
    "probe",
    "read_manifest",
    "scan_folder",
    "split_long_files",
    "windows",
]

_SUPPORTED = f"audio {list(AUDIO_SUFFIXES)} or images {list(IMAGE_SUFFIXES)}"
_NOUN = {"audio": ("audio", "clips"), "image": ("image", "images")}
_BAD_FILES = Satisfies(str, lambda v: v in ("error", "skip"), "'error' or 'skip'")


@dataclass
class MediaIndex:
    """The items of a media source: one file (or one clip of a file) each, with its label.

    Args:
        paths: absolute file paths; a folder's sorted by class then file name, a manifest's in row order.
        labels: str labels aligned with ``paths``, or None (unlabelled prediction data).
        kind: ``"audio"`` or ``"image"``.
        name: the source as the user named it, for messages.
        starts: float64 offset in seconds of each item into its file; default all 0.
        skipped: (path, reason) of the files left out as undecodable (``bad_files="skip"``).

    Example:
        >>> MediaIndex(["/d/a.wav", "/d/b.wav"], None, "audio", "d").starts.tolist()
        [0.0, 0.0]
    """

    paths: list[str]
    labels: np.ndarray | None
    kind: str
    name: str
    starts: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_one(self.kind, "kind", [MEDIA_KIND], MediaIndex)
        n = len(self.paths)
        self.starts = np.zeros(n) if self.starts is None else np.asarray(self.starts, dtype=np.float64)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=str)
        if len(self.starts) != n or (self.labels is not None and len(self.labels) != n):
            raise ArgumentValueError(
                f"MediaIndex of {self.name}: paths, labels and starts must have equal lengths.",
                "paths",
                MediaIndex,
            )

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: Sequence[int]) -> MediaIndex:
        """The items at these rows, in this order (``skipped`` kept)."""
        rows = np.asarray(rows, dtype=np.int64)
        labels = None if self.labels is None else self.labels[rows]
        paths = [self.paths[r] for r in rows]
        return MediaIndex(paths, labels, self.kind, self.name, self.starts[rows], list(self.skipped))


def _kind_of(paths: Iterable[str | os.PathLike], where: str) -> str | None:
    """The one media kind among these paths (None if none); mixing audio and images is an error."""
    first: dict[str, str] = {}
    for path in paths:
        kind = media_suffix_kind(path)
        if kind is not None:
            first.setdefault(kind, str(path))
    if len(first) > 1:
        raise ValueError(
            f"{where} mixes audio and image files (e.g. {first['audio']} and {first['image']}); "
            "keep one kind of media per dataset."
        )
    return next(iter(first), None)


def _visible(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files, folders) directly in ``folder``, hidden ones (name starting with '.') left out, sorted."""
    entries = sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    return [e for e in entries if e.is_file()], [e for e in entries if e.is_dir()]


def media_kind(source: str | os.PathLike, path_column: str | None = None) -> str | None:
    """``"audio"`` or ``"image"`` when ``source`` is a media source, else None (a table, arrays, a name).

    A folder is media when it holds media files, directly or in subfolders one level down (a folder
    holding ``x.npy`` is an array source). A single media file is media too. A CSV/Parquet file is a
    manifest when ``path_column`` is given and is one of its columns; only its first rows are read.

    Args:
        source: a path or a built-in data set's name.
        path_column: the manifest column of file paths, or None.

    Raises:
        ValueError: a folder or manifest mixing audio and images, or a path column without media paths.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "dog").mkdir(); (root / "dog" / "a.WAV").touch()
        >>> media_kind(root), media_kind("breast_cancer")
        ('audio', None)
    """
    path = Path(source)
    if not path.exists():
        return None
    if path.is_dir():
        if (path / "x.npy").exists():
            return None
        files, folders = _visible(path)
        for folder in folders:
            files += _visible(folder)[0]
        return _kind_of(files, str(path))
    if path.suffix.lower() in TABLE_SUFFIXES and path_column is not None:
        return _manifest_kind(path, path_column)
    return media_suffix_kind(path)


def _manifest_kind(path: Path, path_column: str) -> str | None:
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            with open(path, encoding="utf-8-sig", errors="replace") as f:
                sample = f.read(16384)
            try:  # the delimiters read_table accepts; comma when unsure (one column)
                sep = csv.Sniffer().sniff(sample[: sample.rfind("\n") + 1] or sample, ",;\t|").delimiter
            except csv.Error:
                sep = ","
            head = pd.read_csv(path, nrows=50, sep=sep, encoding="utf-8-sig")
        else:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            if path_column not in parquet.schema_arrow.names:
                return None
            head = next(parquet.iter_batches(batch_size=50, columns=[path_column])).to_pandas()
    except Exception:  # a damaged table: reading it as a table gives the clear error
        return None
    if path_column not in head.columns:
        return None
    values = head[path_column].dropna().astype(str).tolist()
    kind = _kind_of(values, f"column {path_column!r} of {path}")
    if kind is None:
        raise ValueError(
            f"column {path_column!r} of {path} holds no media paths (first values: {values[:3]}); "
            f"it should list {_SUPPORTED} files."
        )
    return kind


def _check_bad_files(bad_files: Any) -> None:
    check_one(bad_files, "bad_files", [_BAD_FILES])


def _existing(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; check the path (relative to {Path.cwd()}).")
    return path


def _probed(index: MediaIndex, bad_files: str) -> MediaIndex:
    """``index`` with every file probed: the first bad one raises, or (``"skip"``) bad ones are left out."""
    keep, bad = [], []
    for row, path in enumerate(index.paths):
        reason = probe(path, index.kind)
        if reason is None:
            keep.append(row)
        elif bad_files == "error":
            raise MediaDecodeError(path, reason)
        else:
            bad.append((row, reason))
    if not keep:
        raise ValueError(
            f"none of the {len(index)} {index.kind} files of {index.name} can be decoded (first: "
            f"{index.paths[bad[0][0]]}: {bad[0][1]}); check the files."
        )
    out = index.take(keep)
    out.skipped = [*index.skipped, *((index.paths[row], reason) for row, reason in bad)]
    if index.labels is not None and len(lost := sorted(set(index.labels) - set(out.labels))):
        example = next(index.paths[row] for row, _ in bad if index.labels[row] == lost[0])
        raise ValueError(
            f"class '{lost[0]}' of {index.name} has no decodable files left after skipping the bad ones "
            f"(e.g. {example}); fix its files or remove the class."
        )
    return out


def scan_folder(root: str | os.PathLike, need_labels: bool = True, bad_files: str = "error") -> MediaIndex:
    """Index a folder of media: one subfolder per class (its name is the label) holding the files.

    Hidden files and folders (name starting with '.') are skipped, other non-media files ignored, and
    only files directly inside a class folder count. Every file is probed (:func:`probe`).

    Args:
        root: the folder; for prediction (``need_labels=False``) it may hold the files directly, or be
            a single media file (then ``labels`` is None).
        need_labels: require class folders (training, validation, test).
        bad_files: ``"error"`` (default): an undecodable file raises; ``"skip"``: it is left out and
            listed in ``skipped``.

    Returns:
        A :class:`MediaIndex`, sorted by class then file name.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no media; audio and images mixed; files both loose and in class folders; an empty
            class folder; a single class (with ``need_labels``); no class folders (with ``need_labels``).
        MediaDecodeError: an undecodable file (with ``bad_files="error"``).

    Example:
        >>> import tempfile, soundfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for label in ["yes", "no"]:
        ...     (root / label).mkdir()
        ...     soundfile.write(root / label / "1.wav", np.zeros(800, dtype=np.float32), 8000)
        >>> scan_folder(root).labels.tolist()
        ['no', 'yes']
    """
    _check_bad_files(bad_files)
    root = _existing(root, "media folder")
    if root.is_file():
        return _single_file(root, need_labels, bad_files)
    files, folders = _visible(root)
    classes = {folder.name: _visible(folder)[0] for folder in folders}
    kind = _kind_of([*files, *(f for fs in classes.values() for f in fs)], str(root))
    if kind is None:
        raise ValueError(_no_media(root, files, folders))
    loose = [f for f in files if media_suffix_kind(f) == kind]
    classes = {name: [f for f in fs if media_suffix_kind(f) == kind] for name, fs in classes.items()}
    if loose:
        return _probed(_loose_index(root, loose, classes, need_labels), bad_files)
    noun, items = _NOUN[kind]
    empty = [name for name, fs in classes.items() if not fs]
    if empty:
        raise ValueError(f"class folder {root / empty[0]} has no {noun} files; remove it or add {items}.")
    if need_labels and len(classes) < 2:
        raise ValueError(
            f"{root} has a single class folder ({next(iter(classes))!r}); a classifier needs at least two: "
            "add a folder per class."
        )
    paths = [str(f.absolute()) for fs in classes.values() for f in fs]  # folders and files sorted
    labels = np.array([name for name, fs in classes.items() for _ in fs], dtype=str)
    return _probed(MediaIndex(paths, labels, kind, str(root)), bad_files)


def _loose_index(
    root: Path, loose: list[Path], classes: dict[str, list[Path]], need_labels: bool
) -> MediaIndex:
    kind = media_suffix_kind(loose[0])
    labelled = [name for name, fs in classes.items() if fs]
    if labelled:
        raise ValueError(
            f"{root} holds {kind} files both directly (e.g. {loose[0].name}) and in class folders (e.g. "
            f"{labelled[0]}/); move the loose files into their class folder."
        )
    if need_labels:
        raise ValueError(
            f"{root} holds {kind} files but no class folders; put each class's files in a subfolder named "
            f"after the class (e.g. {root / '<class>' / loose[0].name})."
        )
    return MediaIndex([str(f.absolute()) for f in loose], None, kind, str(root))  # type: ignore[arg-type]


def _single_file(path: Path, need_labels: bool, bad_files: str) -> MediaIndex:
    kind = media_suffix_kind(path)
    if kind is None:
        raise ValueError(f"{path} is not a media file; expected {_SUPPORTED}, or a folder of them.")
    if need_labels:
        raise ValueError(f"{path} is a single file, with no class; pass a folder with a subfolder per class.")
    return _probed(MediaIndex([str(path.absolute())], None, kind, str(path)), bad_files)


def _no_media(root: Path, files: list[Path], folders: list[Path]) -> str:
    found = [f.name for f in files] + [f"{f.name}/" for f in folders]
    listing = f"found: {', '.join(found[:5])}{', ...' if len(found) > 5 else ''}" if found else "it is empty"
    return (
        f"{root} holds no media files ({listing}); expected one subfolder per class holding {_SUPPORTED} "
        "files."
    )


def read_manifest(
    path: str | os.PathLike,
    path_column: str,
    target: str | None,
    need_labels: bool = True,
    bad_files: str = "error",
) -> MediaIndex:
    """Index the media files listed in a CSV or Parquet manifest, one row per file.

    Relative paths are read from the manifest's folder; absolute paths are kept. Rows keep their order.

    Args:
        path: the manifest (``.csv``, ``.parquet`` or ``.pq``).
        path_column: the column of file paths.
        target: the label column; may be None or absent when ``need_labels`` is False.
        need_labels: require ``target``.
        bad_files: ``"error"`` (default) or ``"skip"``, as in :func:`scan_folder`.

    Raises:
        FileNotFoundError: the manifest, or files it lists, do not exist.
        ValueError: a missing column, empty paths or labels, unsupported or mixed file kinds, one class.
        MediaDecodeError: an undecodable file (with ``bad_files="error"``).

    Example:
        >>> import tempfile, soundfile, pandas as pd
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ["a.wav", "b.wav"]:
        ...     soundfile.write(root / name, np.zeros(800, dtype=np.float32), 8000)
        >>> pd.DataFrame({"file": ["a.wav", "b.wav"], "y": [1, 0]}).to_csv(root / "m.csv", index=False)
        >>> read_manifest(root / "m.csv", "file", "y").labels.tolist()
        ['1', '0']
    """
    _check_bad_files(bad_files)
    path = _existing(path, "manifest")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"manifest {path} must be a {list(TABLE_SUFFIXES)} file, got {path.suffix!r}.")
    table = read_table(path)
    columns = list(table.columns)
    if path_column not in columns:
        raise ValueError(f"path column {path_column!r} not found in {path.name}; columns are: {columns}")
    if need_labels and target not in columns:
        raise ValueError(f"target column {target!r} not found in {path.name}; columns are: {columns}")
    paths = _manifest_paths(path, table[path_column], path_column)
    kind = _kind_of(paths, f"column {path_column!r} of {path}")
    labels = None
    if target is not None and target in columns:
        labels = _manifest_labels(path, table[target], target, need_labels)
    return _probed(MediaIndex(paths, labels, kind, str(path)), bad_files)  # type: ignore[arg-type]


def _rows(mask: Any, path: Path) -> str:
    rows = np.flatnonzero(np.asarray(mask))
    where = "lines" if path.suffix.lower() == ".csv" else "rows"
    first = rows[:5] + (2 if where == "lines" else 0)  # a CSV's line 1 is its header
    return f"{len(rows)} {where} ({', '.join(map(str, first))}{', ...' if len(rows) > 5 else ''})"


def _manifest_paths(path: Path, column: Any, name: str) -> list[str]:
    text = column.astype(str).str.strip()
    empty = column.isna() | (text == "")
    if empty.any():
        raise ValueError(
            f"path column {name!r} of {path.name} is empty on {_rows(empty, path)}; fill or drop them."
        )
    paths = [os.path.abspath(path.parent / p) for p in text]  # an absolute p replaces the folder
    odd = [p for p in paths if media_suffix_kind(p) is None]
    if odd:
        raise ValueError(
            f"{len(odd)} paths in column {name!r} of {path.name} are not media files (e.g. {odd[0]}); "
            f"expected {_SUPPORTED}."
        )
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} files listed in column {name!r} of {path} do not exist: "
            f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}; relative paths are read from "
            f"the manifest's folder {path.parent.absolute()}."
        )
    return paths


def _manifest_labels(path: Path, column: Any, name: str, need_labels: bool) -> np.ndarray:
    empty = column.isna() | (column.astype(str).str.strip() == "")
    if empty.any():
        raise ValueError(
            f"target column {name!r} of {path.name} is empty on {_rows(empty, path)}; fill or drop them."
        )
    labels = column.astype(str).to_numpy(dtype=str)
    if need_labels and len(np.unique(labels)) < 2:
        raise ValueError(
            f"target column {name!r} of {path.name} has a single class ({labels[0]!r}); a classifier needs "
            "at least two."
        )
    return labels
