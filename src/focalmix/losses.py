"""Focal loss with label smoothing, for binary, multiclass and multilabel classification.

Pure torch: no state, no Lightning, inputs are never modified in place. Focal loss is from
Lin et al., "Focal Loss for Dense Object Detection" (https://arxiv.org/abs/1708.02002).

:func:`focal_loss` is the reference, differentiated by autograd. :func:`focal_mixup_loss` is the training
step's form: the loss of a mixup batch against both targets of every sample, with its gradient derived by
hand and computed in the same pass (:mod:`focalmix.fused_loss`). On small batches the reference's ~30
elementwise kernels and their backward cost as much as the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from focalmix.fused_loss import Alpha, FocalMixupFunction, alpha_weight

TASKS = ("binary", "multiclass", "multilabel")
REDUCTIONS = ("none", "mean", "sum")


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    task: str,
    alpha: Alpha = 0.5,
    gamma: float = 2.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Focal loss with label smoothing.

    ``binary`` and ``multilabel`` use the sigmoid focal loss of torchvision's ``sigmoid_focal_loss``
    per element: ``ce * (1 - p_t) ** gamma``, times ``alpha * t + (1 - alpha) * (1 - t)`` when ``alpha``
    is not None. ``multiclass`` uses the softmax focal loss
    ``-sum_c w_c * t_c * (1 - p_c) ** gamma * log p_c``.
    With ``gamma=0`` and ``alpha=None`` both reduce to plain (label-smoothed) cross-entropy.

    Label smoothing moves targets ``eps / K`` towards uniform, as ``F.cross_entropy`` and Keras do:
    ``t * (1 - eps) + eps / 2`` for sigmoid tasks and ``(1 - eps) * onehot + eps / C`` for multiclass.

    The loss is computed in float32 (or float64 if the logits are float64), also under autocast, and
    in log space, so that it and its gradient stay finite for extreme logits and for ``0 < gamma < 1``.

    Args:
        logits: ``binary``: (N,) or (N, 1). ``multiclass`` and ``multilabel``: (N, C).
        target: ``binary``: same shape as ``logits``, or (N,) for (N, 1) logits, values in [0, 1]
            (hard 0/1 labels or soft targets, int or float). ``multiclass``: int64 class indices (N,)
            in [0, C), or probabilities (N, C). ``multilabel``: (N, C) in [0, 1].
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        alpha: class weighting. Sigmoid tasks: a float in [0, 1], the weight of the positive class (the
            negative class gets ``1 - alpha``); multilabel also takes one float per label. Multiclass:
            a sequence of C non-negative per-class weights ``w_c``, or a float that weights every class
            alike (as kornia's ``focal_loss`` does: it scales the loss). ``None`` turns weighting off.
            Default: 0.5.
        gamma: focusing parameter, >= 0. 0 gives cross-entropy. Default: 2.0.
        label_smoothing: in [0, 1). Default: 0.0.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. ``"mean"`` averages over every element
            (samples for binary and multiclass, samples x labels for multilabel). Default: ``"mean"``.
        validate_args: check the options, shapes and values below before computing (torchmetrics'
            convention). False checks nothing, for a loop that checked its options once; bad input then
            gives a wrong loss or torch's own error. Default: True.

    Returns:
        The loss: a scalar, or per element (shape of ``logits``; (N,) for multiclass) with ``"none"``.

    Raises:
        ValueError: for an unknown task or reduction, a value out of range, mismatched shapes, or class
            indices outside [0, C) (``-100`` is not ignored, unlike ``F.cross_entropy``). On CUDA, target
            values are checked by a device-side assertion instead, which avoids a host sync per call.
        TypeError: for a non-tensor input or an integer ``logits`` tensor.

    Example:
        >>> logits = torch.tensor([2.0, -1.0, 0.5])
        >>> target = torch.tensor([1, 0, 0])
        >>> loss = focal_loss(logits, target, task="binary", gamma=0.0, alpha=None)
        >>> torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, target.float()))
        True
    """
    if validate_args:
        _check_call(logits, target, task, alpha, gamma, label_smoothing, reduction)
    # Hand-written log-softmax and pow stay in bf16/fp16 under CPU autocast: compute in float32 at least.
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x = logits.to(dtype)
        if task == "multiclass":
            loss = _softmax_focal(x, target, alpha, gamma, label_smoothing)
        else:
            loss = _sigmoid_focal(x, _as_logits_shape(x, target), alpha, gamma, label_smoothing)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def focal_mixup_loss(
    logits: Tensor,
    target: Tensor,
    lam: float | Tensor = 1.0,
    perm: Tensor | None = None,
    *,
    task: str,
    alpha: Alpha = 0.5,
    gamma: float = 2.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Focal loss of a mixup batch in one fused step: ``lam * focal_loss(logits, target) + (1 - lam) *
    focal_loss(logits, target[perm])``, each term reduced as ``reduction`` says.

    Equal to :func:`~focalmix.mixup.mixup_loss` with :func:`focal_loss` (the same arguments) to float
    rounding, and so is its gradient; but the loss and its hand-derived gradient are computed together,
    without autograd recording each elementwise kernel, and the backward pass only scales the saved
    gradient. Multiclass targets are mixed before the loss, which is exact there: the softmax focal loss
    is linear in the target. Mixup is Zhang et al., https://arxiv.org/abs/1710.09412.

    No gradient flows to ``target`` or ``lam`` (use :func:`~focalmix.mixup.mixup_loss` for that), nor a
    second derivative to ``logits``.

    Args:
        logits: model outputs for the mixed batch, shaped as for :func:`focal_loss`; float32 and float64
            are computed in their own precision, bfloat16 and float16 in float32.
        target: the targets of the unmixed batch, as for :func:`focal_loss`.
        lam: the mixing weight in [0, 1], a float or a 0-d tensor (as :func:`~focalmix.mixup.mixup`
            returns it; read on the device, never by the host). Default: 1.0.
        perm: the permutation of the batch that mixup used; None: no mixing (``lam`` is ignored).
        task, alpha, gamma, label_smoothing, reduction: as for :func:`focal_loss`.
        validate_args: check every argument first; False checks nothing. Default: True.

    Returns:
        The loss: a scalar, or per element (shape of ``logits``; (N,) for multiclass) with ``"none"``.

    Raises:
        ValueError: as :func:`focal_loss`, for ``lam`` outside [0, 1] or ``perm`` not of shape (N,) with
            values in [0, N) (when ``validate_args``), and for a ``target`` or ``lam`` that requires grad.
        TypeError: as :func:`focal_loss`, and for a ``lam`` that is neither a float nor a 0-d float tensor.

    Example:
        >>> logits, target = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
        >>> perm, lam = torch.tensor([5, 4, 3, 2, 1, 0]), torch.tensor(0.3)
        >>> fused = focal_mixup_loss(logits, target, lam, perm, task="multiclass", label_smoothing=0.1)
        >>> def two(t):
        ...     return focal_loss(logits, t, task="multiclass", label_smoothing=0.1)
        >>> torch.allclose(fused, 0.3 * two(target) + 0.7 * two(target[perm]))
        True
    """
    if validate_args:
        _check_call(logits, target, task, alpha, gamma, label_smoothing, reduction)
        _check_mixup(lam, perm, logits.shape[0])
    if target.requires_grad or (isinstance(lam, Tensor) and lam.requires_grad):
        raise ValueError(
            "focal_mixup_loss does not differentiate `target` or `lam`; use mixup_loss with focal_loss."
        )
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(dtype)  # autograd casts the gradient back to the logits' dtype
    if task != "multiclass":
        target = _as_logits_shape(x, target)
    if perm is not None:
        perm = perm.to(target.device, non_blocking=True)
    return FocalMixupFunction.apply(x, target, lam, perm, task, alpha, gamma, label_smoothing, reduction)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`; the options are checked once, here.

    Args:
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        alpha: class weighting, see :func:`focal_loss`. Default: 0.5.
        gamma: focusing parameter, >= 0. Default: 2.0.
        label_smoothing: in [0, 1). Default: 0.0.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate_args: also check every call's shapes and target values. Default: True.

    Example:
        >>> criterion = FocalLoss("multiclass", alpha=None, gamma=2.0, label_smoothing=0.1)
        >>> criterion(torch.randn(4, 3), torch.tensor([0, 2, 1, 2])).shape
        torch.Size([])
    """

    def __init__(
        self,
        task: str,
        alpha: Alpha = 0.5,
        gamma: float = 2.0,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        _check_options(task, gamma, label_smoothing, reduction)
        check_alpha(alpha, task)
        self.task, self.alpha, self.gamma = task, alpha, gamma
        self.label_smoothing, self.reduction, self.validate_args = label_smoothing, reduction, validate_args

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(
            logits,
            target,
            task=self.task,
            alpha=self.alpha,
            gamma=self.gamma,
            label_smoothing=self.label_smoothing,
            reduction=self.reduction,
            validate_args=self.validate_args,
        )

    def extra_repr(self) -> str:
        return (
            f"task={self.task!r}, alpha={self.alpha}, gamma={self.gamma}, "
            f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}"
        )


def check_alpha(alpha: Alpha, task: str, num_classes: int | None = None, name: str = "alpha") -> None:
    """Check ``alpha`` for ``task`` up front, without any logits; see :func:`focal_loss` for its meaning.

    ``name`` is the argument as the caller's user spells it (``focal_alpha`` for the classifier).

    Raises:
        TypeError: if ``alpha`` is not None, a number or a sequence of numbers.
        ValueError: if a value is out of range or the sequence has the wrong length.
    """
    if alpha is None:
        return
    if isinstance(alpha, str) or not isinstance(alpha, int | float | Sequence | Tensor):
        raise TypeError(f"`{name}` must be None, a float or a sequence of floats, got {alpha!r}.")
    values = torch.as_tensor(alpha, dtype=torch.float64).flatten().tolist()
    if task == "binary" and not isinstance(alpha, int | float):
        raise ValueError(f"binary `{name}` must be a single float in [0, 1], got {alpha}.")
    if task == "multiclass":
        if any(not v >= 0 for v in values):
            raise ValueError(f"multiclass `{name}` weights must be >= 0, got {alpha}.")
    elif any(not 0 <= v <= 1 for v in values):
        raise ValueError(f"`{name}` must be in [0, 1], got {alpha}.")
    if num_classes is not None and task != "binary" and len(values) not in (1, num_classes):
        raise ValueError(f"`{name}` must be one float or {num_classes} (one per class), got {len(values)}.")


# ---- the reference: autograd differentiates these ---------------------------------------------------


def _sigmoid_focal(x: Tensor, target: Tensor, alpha: Alpha, gamma: float, eps: float) -> Tensor:
    t = target.to(x.dtype)
    if eps:
        t = t * (1 - eps) + eps / 2
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if gamma:
        # log(1 - p_t) = log(t * sigmoid(-x) + (1 - t) * sigmoid(x)), exact in log space; its exp stays
        # finite with finite slope where (1 - p_t) ** gamma would have an infinite one at p_t = 1.
        log_1m_pt = torch.logaddexp(t.log() + F.logsigmoid(-x), (1 - t).log() + F.logsigmoid(x))
        ce = ce * torch.exp(gamma * log_1m_pt)
    if alpha is not None:
        a = alpha_weight(alpha, x)
        ce = ce * (a * t + (1 - a) * (1 - t))
    return ce


def _softmax_focal(x: Tensor, target: Tensor, alpha: Alpha, gamma: float, eps: float) -> Tensor:
    c = x.shape[-1]
    t = F.one_hot(target, c).to(x.dtype) if target.ndim == 1 else target.to(x.dtype)  # (N, C)
    if eps:
        t = t * (1 - eps) + eps / c
    log_p = F.log_softmax(x, dim=-1)  # (N, C)
    loss = -t * log_p
    if gamma:
        # 1 - p underflows to 0 for a confident class; the floor keeps the pow's slope finite there.
        one_m_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(x.dtype).tiny)
        loss = loss * one_m_p.pow(gamma)
    if alpha is not None:
        loss = loss * alpha_weight(alpha, x)
    return loss.sum(dim=-1)  # (N,)


def _as_logits_shape(x: Tensor, target: Tensor) -> Tensor:
    return target.unsqueeze(1) if x.ndim == 2 and target.ndim == 1 else target  # binary (N,) -> (N, 1)


# ---- argument checks (validate_args=True) ---------------------------------------------------------------


def _check_call(
    logits: Tensor, target: Tensor, task: str, alpha: Alpha, gamma: float, eps: float, reduction: str
) -> None:
    _check_options(task, gamma, eps, reduction)
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"`logits` and `target` must be tensors, got {type(logits).__name__} and {type(target).__name__}."
        )
    if not logits.is_floating_point():
        raise TypeError(f"`logits` must be a floating point tensor, got {logits.dtype}.")
    if task == "multiclass":
        _check_softmax_target(logits, target)
        _check_softmax_alpha(alpha, logits)
    else:
        _check_sigmoid_target(logits, target, task)
        _check_sigmoid_alpha(alpha, logits)


def _check_options(task: str, gamma: float, label_smoothing: float, reduction: str) -> None:
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}.")
    if not gamma >= 0:  # also rejects NaN
        raise ValueError(f"`gamma` must be >= 0, got {gamma}.")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing}.")


def _check_sigmoid_target(x: Tensor, target: Tensor, task: str) -> None:
    if task == "binary":
        target = _as_logits_shape(x, target)
        if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] != 1):
            raise ValueError(f"binary `logits` must have shape (N,) or (N, 1), got {tuple(x.shape)}.")
    elif x.ndim != 2:
        raise ValueError(f"multilabel `logits` must have shape (N, C), got {tuple(x.shape)}.")
    if target.shape != x.shape:
        raise ValueError(
            f"{task} `target` must have the shape of `logits` {tuple(x.shape)}, got {tuple(target.shape)}."
        )
    t = target.to(x.dtype)
    _check((t < 0) | (t > 1) | t.isnan(), f"{task} `target` values must be in [0, 1]; got values outside it.")


def _check_sigmoid_alpha(alpha: Alpha, x: Tensor) -> None:
    if alpha is None:
        return
    if isinstance(alpha, int | float):
        if not 0 <= alpha <= 1:
            raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
        return
    a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    if a.ndim > 1 or (a.ndim == 1 and (x.ndim != 2 or a.numel() != x.shape[-1])):
        raise ValueError(
            f"`alpha` must be a float or, for multilabel, one float per label ({x.shape[-1]}), got {alpha}."
        )
    _check((a < 0) | (a > 1) | a.isnan(), f"`alpha` must be in [0, 1], got {alpha}.")


def _check_softmax_target(x: Tensor, target: Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"multiclass `logits` must have shape (N, C), got {tuple(x.shape)}.")
    n, c = x.shape
    if target.ndim == 1 and not target.is_floating_point():
        if target.shape[0] != n:
            raise ValueError(f"multiclass `target` must have shape ({n},), got {tuple(target.shape)}.")
        bad = (target < 0) | (target >= c)
        if bad.device.type != "cuda" and bool(bad.any()):  # name the offending values where it is cheap
            raise ValueError(
                f"multiclass `target` class indices must be in [0, {c}), got {target[bad].unique().tolist()}."
            )
        _check(bad, f"multiclass `target` class indices must be in [0, {c}).")
    elif target.shape == x.shape and target.is_floating_point():
        t = target.to(x.dtype)
        _check(
            (t < 0) | (t > 1) | t.isnan(),
            "multiclass `target` probabilities must be in [0, 1]; got values outside it.",
        )
    else:
        raise ValueError(
            f"multiclass `target` must be int class indices ({n},) or float probabilities ({n}, {c}), "
            f"got {target.dtype} {tuple(target.shape)}."
        )


def _check_softmax_alpha(alpha: Alpha, x: Tensor) -> None:
    if alpha is None:
        return
    if isinstance(alpha, int | float):
        if not alpha >= 0:
            raise ValueError(f"multiclass `alpha` weights must be >= 0, got {alpha}.")
        return
    w = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    if w.ndim > 1 or (w.ndim == 1 and w.numel() != x.shape[-1]):
        raise ValueError(
            f"multiclass `alpha` must be a float or one weight per class ({x.shape[-1]}), got {alpha}."
        )
    _check((w < 0) | w.isnan(), f"multiclass `alpha` weights must be >= 0, got {alpha}.")


def _check_mixup(lam: float | Tensor, perm: Tensor | None, n: int) -> None:
    if isinstance(lam, Tensor):
        if lam.ndim != 0 or not lam.is_floating_point():
            raise TypeError(
                f"`lam` must be a float or a 0-d float tensor, got {lam.dtype} {tuple(lam.shape)}."
            )
        _check((lam < 0) | (lam > 1) | lam.isnan(), "`lam` must be in [0, 1]; got a value outside it.")
    elif isinstance(lam, bool) or not isinstance(lam, int | float):
        raise TypeError(f"`lam` must be a float or a 0-d float tensor, got {lam!r}.")
    elif not 0 <= lam <= 1:
        raise ValueError(f"`lam` must be in [0, 1], got {lam}.")
    if perm is None:
        return
    if not isinstance(perm, Tensor) or perm.is_floating_point() or perm.shape != (n,):
        raise ValueError(f"`perm` must be an int tensor of shape ({n},), a permutation of the batch.")
    _check((perm < 0) | (perm >= n), f"`perm` values must be in [0, {n}).")


def _check(bad: Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` where ``bad`` has a True element.

    On CUDA the check is a device-side assertion queued with the kernels (``torch._assert_async``), so
    training does not wait for the GPU at every step to read one boolean back.
    """
    if bad.device.type == "cuda":
        torch._assert_async(~bad.any(), message)
    elif bool(bad.any()):
        raise ValueError(message)
