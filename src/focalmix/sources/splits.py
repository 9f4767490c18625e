"""Stratified, seeded train/val/test splits: the same rows on every run and every DDP rank."""

from __future__ import annotations

import math

import numpy as np

from focalmix.sources.base import LISTED, smallest


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
            if k > LISTED:  # many classes: the rare ones are the problem (and the line stays short)
                fix = "Merge or drop rare classes, or pass `val_source`."
            raise ValueError(
                f"cannot split {len(rest)} rows into a stratified {part} split of {n_part} and {n_kept} "
                f"others: every class needs >= 2 rows and each split >= {k} rows (one per class); class "
                f"counts are {smallest(class_names, counts)}. {fix}"
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
