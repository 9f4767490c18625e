"""The built-in sets: scikit-learn's breast cancer and digits, and seeded synthetic Gaussian classes."""

from __future__ import annotations

import math

import numpy as np

from focalmix.sources.base import RawData, ReadOptions, Source

BUILTINS = ("breast_cancer", "digits", "synthetic")


class Builtin(Source):
    """``"breast_cancer"`` (binary, positive class ``"malignant"``), ``"digits"`` (10 classes of (1, 8, 8)
    images) or ``"synthetic"`` (:func:`make_synthetic`; a fresh sample per stream)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def load(
        self, options: ReadOptions, stream: int, need_labels: bool, expected: list[str] | None
    ) -> RawData:
        from sklearn.datasets import load_breast_cancer, load_digits

        name = self.name
        if name == "breast_cancer":
            bunch = load_breast_cancer()
            # String labels so the positive class (sorted last) is 'malignant', as clinicians mean it.
            y = bunch.target_names[bunch.target].astype(str)
            return RawData(bunch.data.astype(np.float32), y, [str(f) for f in bunch.feature_names], name)
        if name == "digits":
            bunch = load_digits()
            return RawData(
                bunch.images.astype(np.float32)[:, None], bunch.target.astype(np.int64), None, name
            )
        x, y = make_synthetic(**options.synthetic, seed=options.seed, stream=stream)
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
