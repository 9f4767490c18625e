"""Standardization statistics of array data, in chunks: memory-mapped data is never read whole."""

from __future__ import annotations

import math

import numpy as np
import torch

from focalmix.sources.base import short_list

_CHUNK_ELEMENTS = 1 << 22  # values per chunk when scanning (32 MB of float64)


def feature_std(std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``std`` with 1 where a feature is constant on the training rows: centred, not scaled.

    Constant means a spread at the level of rounding: ``std <= 8 * eps * |mean|`` in ``std``'s dtype (0 for
    a feature that is 0 everywhere), as scikit-learn's ``StandardScaler`` decides; any other spread, however
    small, is divided out. A floor instead (``std.clamp_min(1e-6)``) turns a feature that is 0 on every
    training item but not on a new one into values near 1e5 (a frozen EfficientNet-Lite0 on MNIST digits:
    136 of 1,280 features are 0 on every training image), the logits into thousands and the Platt scale
    fitted on them into ~0, so every calibrated probability came out the same.

    Example:
        >>> x = torch.tensor([[1.0, 0.0, 3.0, 1e-7], [3.0, 0.0, 3.0, 3e-7]])
        >>> [f"{s:.3g}" for s in feature_std(x.std(0, correction=0), x.mean(0)).tolist()]
        ['1', '1', '1', '1e-07']
    """
    constant = std <= 8 * torch.finfo(std.dtype).eps * mean.abs()
    return torch.where(constant, torch.ones_like(std), std)


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
    std = torch.from_numpy(np.sqrt(np.asarray(m2)[0] / max(n, 1)))
    return mean_t, feature_std(std, torch.from_numpy(np.asarray(mean)[0])).float()
