"""Mixup: train on convex combinations of pairs of samples.

Zhang et al., "mixup: Beyond Empirical Risk Minimization" (https://arxiv.org/abs/1710.09412).
Pure torch: no state, inputs are never modified in place. The mixing weight is drawn by torch's own
Beta sampler from a ``torch.Generator`` (or torch's global RNG) and stays a 0-d tensor: nothing is read
back by the host, so a training step never waits on it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def sample_beta(alpha: float, generator: torch.Generator | None = None) -> Tensor:
    """Draw one sample of Beta(alpha, alpha), as a 0-d float64 tensor on the generator's device.

    ``torch.distributions.Beta`` takes no generator; its sampler does: the first component of a
    Dirichlet(alpha, alpha) draw, two Gamma(alpha) variates normalised, X / (X + Y) ~ Beta(alpha, alpha).
    One kernel, no Python float in between.

    Args:
        alpha: concentration, > 0.
        generator: a ``torch.Generator``, whose device the draw runs on; None uses torch's global CPU RNG.

    Returns:
        A 0-d float64 tensor in (0, 1) (torch keeps a Dirichlet draw off the exact ends 0 and 1).

    Raises:
        ValueError: if ``alpha`` is not > 0.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> lam = sample_beta(0.5, g)
        >>> lam.shape, lam.dtype, bool(0.0 < lam < 1.0)
        (torch.Size([]), torch.float64, True)
    """
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0, got {alpha}.")
    device = generator.device if generator is not None else torch.device("cpu")
    concentration = torch.full((2,), float(alpha), dtype=torch.float64, device=device)
    return torch._sample_dirichlet(concentration, generator=generator)[0]


def sample_mixup(
    batch_size: int, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor | float, Tensor | None]:
    """Draw the mixing weight ``lam ~ Beta(alpha, alpha)`` and a permutation of the batch.

    The same generator state gives the same ``lam`` and ``perm``. Both are tensors on the generator's
    device, never read by the host: :func:`mix`, :func:`mixup_loss` and
    :func:`~focalmix.losses.focal_mixup_loss` use ``lam`` as it is.

    Args:
        batch_size: number of samples, >= 1.
        alpha: Beta concentration, >= 0. 0 turns mixup off: returns ``(1.0, None)`` and draws nothing.
        generator: a ``torch.Generator``; None uses torch's global CPU RNG.

    Returns:
        ``(lam, perm)``: a 0-d float64 tensor in (0, 1) and an int64 permutation (batch_size,), or
        ``(1.0, None)`` (a Python float) when ``alpha`` is 0. ``float(lam)`` reads the value (and on a GPU
        waits for it).

    Raises:
        ValueError: if ``alpha`` < 0 or ``batch_size`` < 1.

    Example:
        >>> sample_mixup(4, alpha=0.0)
        (1.0, None)
        >>> lam, perm = sample_mixup(4, alpha=0.5, generator=torch.Generator().manual_seed(0))
        >>> lam.dtype, sorted(perm.tolist())
        (torch.float64, [0, 1, 2, 3])
    """
    if not alpha >= 0:
        raise ValueError(f"`alpha` must be >= 0 (0 turns mixup off), got {alpha}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if alpha == 0:
        return 1.0, None
    lam = sample_beta(alpha, generator)
    return lam, torch.randperm(batch_size, generator=generator, device=lam.device)


def mix(x: Tensor, lam: float | Tensor, perm: Tensor | None) -> Tensor:
    """Return ``lam * x + (1 - lam) * x[perm]``, a new tensor; ``x`` itself is untouched.

    Works for any sample shape: (B, F) rows, (B, C, H, W) images or spectrograms. bfloat16 and float16
    batches are mixed in float32 and rounded once.

    Args:
        x: a batch (B, ...).
        lam: mixing weight in [0, 1], a float or a 0-d tensor (moved to ``x``'s device, not read).
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
    if isinstance(lam, Tensor):
        lam = lam.to(x.device, non_blocking=True)  # a 0-d weight of another float dtype is read as x's
    other = x.index_select(0, perm.to(x.device, non_blocking=True))
    if x.dtype in (torch.float16, torch.bfloat16):  # a low-precision weight would shift lam itself
        return torch.lerp(other.float(), x.float(), lam).to(x.dtype)
    return torch.lerp(other, x, lam)


def mixup(
    x: Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor | float, Tensor | None]:
    """Mix a batch: :func:`sample_mixup` then :func:`mix`.

    Args:
        x: a batch (B, ...), float.
        alpha: Beta concentration, >= 0; 0 gives ``(x, 1.0, None)`` and draws no random numbers.
        generator: a ``torch.Generator``; None uses torch's global CPU RNG.

    Returns:
        ``(mixed_x, lam, perm)``, ``lam`` a 0-d tensor (see :func:`sample_mixup`). Compute the loss with
        :func:`mixup_loss`, or :func:`~focalmix.losses.focal_mixup_loss`, and the same ``lam`` and ``perm``.

    Example:
        >>> x = torch.randn(8, 3, 16, 16)
        >>> mixed, lam, perm = mixup(x, alpha=0.5, generator=torch.Generator().manual_seed(0))
        >>> mixed.shape == x.shape and bool(0 <= lam <= 1)
        True
    """
    lam, perm = sample_mixup(x.shape[0], alpha, generator)
    return mix(x, lam, perm), lam, perm


def mixup_loss(
    criterion: Callable[[Tensor, Tensor], Tensor],
    logits: Tensor,
    target: Tensor,
    lam: float | Tensor,
    perm: Tensor | None,
    *,
    per_sample: bool = False,
) -> Tensor:
    """Loss of a mixed batch: ``lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])``.

    Mixing the losses, rather than the targets, keeps non-linear losses such as focal loss exact; for
    cross-entropy the two are the same. For focal loss, :func:`~focalmix.losses.focal_mixup_loss` computes
    the same in one fused step.

    Args:
        criterion: a loss ``(logits, target) -> Tensor``, e.g. a :class:`~focalmix.losses.FocalLoss`.
        logits: model outputs for the mixed batch.
        target: the targets of the unmixed batch.
        lam: the mixing weight that :func:`mixup` returned (a float or a 0-d tensor).
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
    if perm is None or (not isinstance(lam, Tensor) and lam == 1.0):
        loss = criterion(logits, target)
        return loss.mean() if per_sample else loss
    target_perm = target.index_select(0, perm.to(target.device, non_blocking=True))
    if per_sample:
        n = logits.shape[0]
        both = criterion(torch.cat([logits, logits]), torch.cat([target, target_perm]))
        return _mix_terms(lam, both[:n].mean(), both[n:].mean())
    return _mix_terms(lam, criterion(logits, target), criterion(logits, target_perm))


def _mix_terms(lam: float | Tensor, own: Tensor, partner: Tensor) -> Tensor:
    if isinstance(lam, Tensor):  # in the losses' dtype: a 0-d float64 lam would promote 0-d losses
        lam = lam.to(device=own.device, dtype=own.dtype, non_blocking=True)
    return lam * own + (1 - lam) * partner
