"""Mixup: train on convex combinations of pairs of samples.

Zhang et al., "mixup: Beyond Empirical Risk Minimization" (https://arxiv.org/abs/1710.09412).
Pure torch: no state, inputs are never modified in place. The mixing weight is drawn on the CPU from a
``torch.Generator`` (or torch's global RNG) and returned as a Python float, so mixing a GPU batch needs
no host-device synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def sample_beta(alpha: float, generator: torch.Generator | None = None) -> float:
    """Draw one sample of Beta(alpha, alpha).

    ``torch.distributions.Beta`` takes no generator, so this draws two Gamma(alpha) variates with
    Marsaglia and Tsang's method (ACM TOMS 26(3), 2000) from ``generator``: X / (X + Y) ~ Beta(alpha, alpha).

    Args:
        alpha: concentration, > 0.
        generator: a CPU ``torch.Generator``; None uses torch's global RNG.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: if ``alpha`` is not > 0.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> 0.0 <= sample_beta(0.5, g) <= 1.0
        True
    """
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0, got {alpha}.")
    x, y = _sample_gamma(alpha, generator), _sample_gamma(alpha, generator)
    if x + y == 0.0:  # both underflowed (alpha far below 1): the limit is a fair coin on {0, 1}
        return float(torch.rand((), generator=generator) < 0.5)
    return x / (x + y)


def _sample_gamma(alpha: float, generator: torch.Generator | None) -> float:
    # Candidates come from the generator in one call; accept/reject runs on Python floats, ~20x faster
    # than tensor arithmetic on 8-element tensors.
    boost = 1.0
    if alpha < 1:  # Gamma(a) = Gamma(a + 1) * U ** (1 / a)
        boost = torch.rand((), generator=generator, dtype=torch.float64).item() ** (1.0 / alpha)
        alpha += 1.0
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:  # each candidate is accepted with probability > 0.95
        uniforms = torch.rand(8, generator=generator, dtype=torch.float64).tolist()
        normals = torch.randn(8, generator=generator, dtype=torch.float64).tolist()
        for z, u in zip(normals, uniforms, strict=True):
            v = (1 + c * z) ** 3
            if v > 0 and u > 0 and math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
                return d * v * boost


def sample_mixup(
    batch_size: int, alpha: float, generator: torch.Generator | None = None
) -> tuple[float, Tensor | None]:
    """Draw the mixing weight ``lam ~ Beta(alpha, alpha)`` and a permutation of the batch.

    Args:
        batch_size: number of samples, >= 1.
        alpha: Beta concentration, >= 0. 0 turns mixup off: returns ``(1.0, None)`` and draws nothing.
        generator: a CPU ``torch.Generator``; None uses torch's global RNG.

    Returns:
        ``(lam, perm)``: a float in [0, 1] and a CPU int64 permutation (batch_size,), or ``(1.0, None)``.

    Raises:
        ValueError: if ``alpha`` < 0 or ``batch_size`` < 1.

    Example:
        >>> sample_mixup(4, alpha=0.0)
        (1.0, None)
    """
    if not alpha >= 0:
        raise ValueError(f"`alpha` must be >= 0 (0 turns mixup off), got {alpha}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if alpha == 0:
        return 1.0, None
    lam = sample_beta(alpha, generator)
    return lam, torch.randperm(batch_size, generator=generator)


def mix(x: Tensor, lam: float, perm: Tensor | None) -> Tensor:
    """Return ``lam * x + (1 - lam) * x[perm]``, a new tensor; ``x`` itself is untouched.

    Works for any sample shape: (B, F) rows, (B, C, H, W) images or spectrograms.

    Args:
        x: a batch (B, ...).
        lam: mixing weight in [0, 1].
        perm: a permutation of range(B), or None for no mixing (returns ``x`` itself).

    Example:
        >>> x = torch.tensor([[0.0], [10.0]])
        >>> mix(x, 0.75, torch.tensor([1, 0])).flatten().tolist()
        [2.5, 7.5]
    """
    if perm is None:
        return x
    if not x.is_floating_point():
        raise TypeError(f"mixup needs floating point inputs, got {x.dtype}.")
    return torch.lerp(x[perm.to(x.device, non_blocking=True)], x, lam)


def mixup(
    x: Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor, float, Tensor | None]:
    """Mix a batch: :func:`sample_mixup` then :func:`mix`.

    Args:
        x: a batch (B, ...), float.
        alpha: Beta concentration, >= 0; 0 gives ``(x, 1.0, None)`` and draws no random numbers.
        generator: a CPU ``torch.Generator``; None uses torch's global RNG.

    Returns:
        ``(mixed_x, lam, perm)``. Compute the loss with :func:`mixup_loss` and the same ``lam`` and ``perm``.

    Example:
        >>> x = torch.randn(8, 3, 16, 16)
        >>> mixed, lam, perm = mixup(x, alpha=0.5, generator=torch.Generator().manual_seed(0))
        >>> mixed.shape == x.shape and 0 <= lam <= 1
        True
    """
    lam, perm = sample_mixup(x.shape[0], alpha, generator)
    return mix(x, lam, perm), lam, perm


def mixup_loss(
    criterion: Callable[[Tensor, Tensor], Tensor],
    logits: Tensor,
    target: Tensor,
    lam: float,
    perm: Tensor | None,
    *,
    per_sample: bool = False,
) -> Tensor:
    """Loss of a mixed batch: ``lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])``.

    Mixing the losses, rather than the targets, keeps non-linear losses such as focal loss exact; for
    cross-entropy the two are the same.

    Args:
        criterion: a loss ``(logits, target) -> Tensor``, e.g. a :class:`~focalmix.losses.FocalLoss`.
        logits: model outputs for the mixed batch.
        target: the targets of the unmixed batch.
        lam: the mixing weight that :func:`mixup` returned.
        perm: the permutation that :func:`mixup` returned (None: no mixing).
        per_sample: ``criterion`` returns unreduced losses (``reduction="none"``); both terms are then
            computed in one call on the batch stacked twice (half the kernels and autograd nodes) and
            each term is averaged. Default: False.

    Example:
        >>> import torch.nn.functional as F
        >>> logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> loss = mixup_loss(F.cross_entropy, logits, target, 1.0, None)
        >>> torch.equal(loss, F.cross_entropy(logits, target))
        True
    """
    if perm is None or lam == 1.0:
        loss = criterion(logits, target)
        return loss.mean() if per_sample else loss
    target_perm = target[perm.to(target.device, non_blocking=True)]
    if per_sample:
        n = logits.shape[0]
        both = criterion(torch.cat([logits, logits]), torch.cat([target, target_perm]))
        return lam * both[:n].mean() + (1 - lam) * both[n:].mean()
    return lam * criterion(logits, target) + (1 - lam) * criterion(logits, target_perm)
