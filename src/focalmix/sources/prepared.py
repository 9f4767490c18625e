"""The main source made ready for training: labels coded, the task found, rows split.

:func:`prepare` is what the datamodule does once with its main source (the same on every rank and run);
standardization statistics or a table's spec are measured afterwards on the training split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from focalmix.sources.base import RawData
from focalmix.sources.labels import (
    check_multilabel,
    class_coding,
    clean_labels,
    single_label_task,
    train_class_counts,
)
from focalmix.sources.splits import split_indices


@dataclass
class Labelling:
    """The datamodule's arguments about labels and splits (fractions already 0 where a source is given)."""

    positive_class: int | str | None
    task: str | None
    val_fraction: float
    test_fraction: float
    seed: int
    balanced_sampling: bool


@dataclass
class Prepared:
    raw: RawData
    y: torch.Tensor  # coded targets of every row of raw.x
    splits: dict[str, np.ndarray]
    task: str
    class_names: list[str]
    raw_classes: np.ndarray | None  # sorted raw training labels (None: multilabel)
    code_of: np.ndarray | None  # raw class index -> coded class (one-vs-rest changes it)
    class_counts: list[int]
    normalization: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def positive_fraction(self) -> float | list[float] | None:
        """Share of positives in the training split: a float (binary), per label (multilabel), or None."""
        n = len(self.splits["train"])
        if self.task == "binary":
            return self.class_counts[1] / n
        return [c / n for c in self.class_counts] if self.task == "multilabel" else None


def prepare(raw: RawData, how: Labelling) -> Prepared:
    """Code the labels of the main source, infer the task and split its rows (stratified, seeded)."""
    y = clean_labels(raw.y, raw.name)
    return _multilabel(raw, y, how) if y.ndim == 2 else _single(raw, y, how)


def _split(strata: np.ndarray, class_names: list[str], how: Labelling) -> dict[str, np.ndarray]:
    return split_indices(strata, how.val_fraction, how.test_fraction, how.seed, class_names)


def _single(raw: RawData, y: np.ndarray, how: Labelling) -> Prepared:
    raw_classes, code_of, names = class_coding(y, how.positive_class, raw.name)
    codes = code_of[np.searchsorted(raw_classes, y)]
    counts = np.bincount(codes, minlength=len(names))
    task = single_label_task(counts, names, how.task, raw.name)
    splits = _split(codes, names, how)
    train_counts = train_class_counts(codes[splits["train"]], counts, names)
    y_t = torch.from_numpy(codes.astype(np.float32) if task == "binary" else codes)
    return Prepared(raw, y_t, splits, task, names, raw_classes, code_of, train_counts.tolist())


def _multilabel(raw: RawData, y: np.ndarray, how: Labelling) -> Prepared:
    if how.task not in (None, "multilabel"):
        raise ValueError(
            f"task={how.task!r} needs one label per row, but {raw.name} has {y.shape[1]} "
            "target columns; use task='multilabel' or a single `target` column."
        )
    if how.balanced_sampling:
        raise ValueError("`balanced_sampling` needs a binary or multiclass task, got multilabel targets.")
    y = check_multilabel(y, raw.name)
    names = raw.label_names or [str(i) for i in range(y.shape[1])]
    # Stratify on the first label: full multilabel stratification is a research problem of its own.
    strata = y[:, 0].astype(np.int64)
    splits = _split(strata, [f"{names[0]}=0", f"{names[0]}=1"], how)
    counts = y[splits["train"]].sum(axis=0).astype(np.int64).tolist()
    return Prepared(raw, torch.from_numpy(y), splits, "multilabel", list(names), None, None, counts)
