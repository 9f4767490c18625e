"""Post-hoc calibration of logits: Platt scaling per output and temperature scaling.

Pure torch: no state, no Lightning, inputs are never modified. Both fits minimise the negative
log-likelihood of held-out (validation) rows with L-BFGS in float64, as in Guo et al., "On Calibration
of Modern Neural Networks" (https://arxiv.org/abs/1706.04599). Platt scaling is from J. Platt,
"Probabilistic Outputs for Support Vector Machines and Comparisons to Regularized Likelihood Methods"
(1999). Every fit returns ``(scale, bias)`` for :func:`apply_calibration`: calibrated logits are
``logits * scale + bias``.

The scale is kept positive (it is fitted as ``exp(log_scale)``), so calibration is monotone: Platt
scaling leaves AUROC and temperature scaling leaves the argmax unchanged.

Degenerate input (no rows, one class only, non-finite logits) cannot be fitted: the affected outputs get
the identity ``scale=1, bias=0``; :func:`is_identity` tells the caller so it can say it once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from focalmix._checks import Options, Satisfies, check_one

# A temperature is clamped to [1 / _MAX_SCALE, _MAX_SCALE]: on rows the model separates perfectly the
# NLL keeps falling as T -> 0, so an unclamped fit would return an arbitrary, huge scale.
_MAX_SCALE = 100.0


def fit_platt(
    logits: Tensor, target: Tensor, max_iter: int = 100, prior_correction: bool = True
) -> tuple[Tensor, Tensor]:
    """Fit Platt scaling ``sigmoid(a * z + b)`` per output by minimising binary cross-entropy.

    With ``prior_correction`` (Platt 1999, and scikit-learn's ``CalibratedClassifierCV(method="sigmoid")``)
    the 0/1 targets become ``1 / (N- + 2)`` and ``(N+ + 1) / (N+ + 2)``: the fit stays finite when the
    logits separate the classes perfectly, where the plain maximum-likelihood ``a`` grows without bound.
    Without it the fit is logistic regression of the target on the logit.

    Args:
        logits: (N,) for one binary output or (N, C) for C multilabel outputs; any float dtype.
        target: same shape, values in [0, 1] (0/1 labels; int, bool or float).
        max_iter: L-BFGS iterations, >= 1. Default: 100.
        prior_correction: use Platt's smoothed targets. Default: True.

    Returns:
        ``(scale, bias)``: shape () for (N,) logits, (C,) for (N, C), in the logits' float dtype
        (float32 for integer logits) and device. ``scale > 0``. An output with no rows, a single class
        or a non-finite logit gets ``scale=1, bias=0``.

    Raises:
        TypeError: for a non-tensor input or a non-int ``max_iter``.
        ValueError: for mismatched shapes, more than 2 dimensions, targets outside [0, 1] or
            ``max_iter < 1``.

    Example:
        >>> z = torch.linspace(-3, 3, 200)
        >>> y = (torch.rand(200, generator=torch.Generator().manual_seed(0)) < torch.sigmoid(2 * z)).float()
        >>> scale, bias = fit_platt(z, y)
        >>> scale.shape, bool(scale > 1)
        (torch.Size([]), True)
    """
    _check_tensors(logits, target, max_iter)
    if target.shape != logits.shape or logits.ndim not in (1, 2):
        raise ValueError(
            f"`logits` must be (N,) or (N, C) and `target` the same shape, got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}."
        )
    with torch.inference_mode(False), torch.enable_grad():
        z = logits.detach().to(torch.float64, copy=True)
        z = z.unsqueeze(1) if z.ndim == 1 else z  # (N, C)
        t = target.detach().to(device=z.device, dtype=torch.float64, copy=True).reshape(z.shape)
        if t.numel() and bool(((t < 0) | (t > 1)).any()):
            raise ValueError("`target` values must be in [0, 1] (0/1 labels).")
        ok = _fittable_columns(z, t)  # (C,)
        log_a, b = (torch.zeros(z.shape[1], dtype=torch.float64, device=z.device) for _ in range(2))
        if bool(ok.any()):
            z_ok, t_ok = z[:, ok], t[:, ok]
            if prior_correction:
                t_ok = _platt_targets(t_ok)
            log_a[ok], b[ok] = _lbfgs_platt(z_ok, t_ok, max_iter)
    out_dtype = logits.dtype if logits.is_floating_point() else torch.float32
    scale, bias = (v.to(device=logits.device, dtype=out_dtype) for v in (log_a.exp(), b))
    if logits.ndim == 1:
        return scale.reshape(()), bias.reshape(())
    return scale, bias


def fit_temperature(logits: Tensor, target: Tensor, max_iter: int = 100) -> tuple[Tensor, Tensor]:
    """Fit one temperature ``T`` for ``softmax(z / T)`` by minimising cross-entropy (Guo et al. 2017).

    Args:
        logits: (N, C) with C >= 2; any float dtype.
        target: (N,) integer class indices in [0, C).
        max_iter: L-BFGS iterations, >= 1. Default: 100.

    Returns:
        ``(scale, bias)`` = ``(1 / T, 0)``, both shape (), in the logits' float dtype and device. ``T`` is
        clamped to [0.01, 100]. No rows, one class present or a non-finite logit give ``(1, 0)``.

    Raises:
        TypeError: for a non-tensor input, a floating-point ``target`` or a non-int ``max_iter``.
        ValueError: for mismatched shapes, class indices outside [0, C) or ``max_iter < 1``.

    Example:
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
        >>> scale, bias = fit_temperature(z, torch.tensor([0, 1, 1, 0]))
        >>> bool(scale < 1), float(bias)  # one error in four: softer than the raw logits
        (True, 0.0)
    """
    _check_tensors(logits, target, max_iter)
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"`logits` must be (N, C) and `target` (N,), got {tuple(logits.shape)} and {tuple(target.shape)}."
        )
    if target.is_floating_point():
        raise TypeError(f"`target` must hold integer class indices, got dtype {target.dtype}.")
    num_classes = logits.shape[1]
    if target.numel() and bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(f"`target` class indices must be in [0, {num_classes}).")
    out_dtype = logits.dtype if logits.is_floating_point() else torch.float32
    one = torch.ones((), dtype=out_dtype, device=logits.device)
    degenerate = num_classes < 2 or target.unique().numel() < 2 or not bool(logits.isfinite().all())
    if degenerate:
        return one, torch.zeros_like(one)
    with torch.inference_mode(False), torch.enable_grad():
        z = logits.detach().to(torch.float64, copy=True)
        t = target.detach().to(device=z.device, dtype=torch.long, copy=True)
        log_s = torch.zeros((), dtype=torch.float64, device=z.device, requires_grad=True)
        _minimise([log_s], lambda: F.cross_entropy(z * log_s.exp(), t), max_iter)
    log_s = log_s.detach().clamp(-math.log(_MAX_SCALE), math.log(_MAX_SCALE))
    return log_s.exp().to(out_dtype), torch.zeros_like(one)


METHODS = ("auto", "temperature", "platt", "none")


def resolve_method(task: str, method: str = "auto") -> str:
    """``"auto"`` is Platt scaling for binary and multilabel outputs, one temperature for multiclass.

    Example:
        >>> resolve_method("multiclass"), resolve_method("binary"), resolve_method("binary", "temperature")
        ('temperature', 'platt', 'temperature')
    """
    check_one(method, "calibration", [Options(*METHODS)])
    if method == "auto":
        return "temperature" if task == "multiclass" else "platt"
    return method


def fit_calibration(logits: Tensor, target: Tensor, task: str, method: str = "auto") -> tuple[Tensor, Tensor]:
    """Fit ``method`` for a classifier's ``task``: the ``(scale, bias)`` of :func:`apply_calibration`.

    Binary ``"temperature"`` fits one ``T`` of ``sigmoid(z / T)``, which is ``softmax([0, z] / T)[1]``.
    ``"none"`` returns the identity.

    Args:
        logits: (N,) binary, (N, C) multiclass or multilabel.
        target: (N,) 0/1 or class indices, or (N, C) 0/1 for multilabel.
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        method: one of :data:`METHODS`. Default: ``"auto"``.

    Example:
        >>> z = torch.tensor([-2.0, -1.0, 1.0, 2.0, 0.5, -0.5])
        >>> scale, bias = fit_calibration(z, torch.tensor([0, 0, 1, 1, 0, 1]), "binary")
        >>> bool(scale > 0)
        True
    """
    method = resolve_method(task, method)
    if method == "none":
        one = torch.ones(logits.shape[1:] if task == "multilabel" else (), dtype=logits.dtype)
        return one, torch.zeros_like(one)
    if method == "platt":
        return fit_platt(logits, target)
    if task == "binary":
        return fit_temperature(torch.stack([torch.zeros_like(logits), logits], dim=-1), target.long())
    return fit_temperature(logits, target.long())


def apply_calibration(logits: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """Calibrated logits ``logits * scale + bias`` (a new tensor).

    Args:
        logits: (N,) or (N, C).
        scale: shape () (one value for every output, e.g. ``1 / T``) or (C,) (one per output).
        bias: same shape as ``scale``.

    Returns:
        Calibrated logits, the shape of ``logits``; apply ``sigmoid`` or ``softmax`` for probabilities.

    Example:
        >>> apply_calibration(torch.tensor([1.0, -2.0]), torch.tensor(2.0), torch.tensor(0.5))
        tensor([ 2.5000, -3.5000])
    """
    return logits * scale + bias


def is_identity(scale: Tensor, bias: Tensor) -> bool:
    """Whether a fit returned the identity for every output (degenerate input: nothing was fitted)."""
    return bool((scale == 1).all() and (bias == 0).all())


def _check_tensors(logits: object, target: object, max_iter: int) -> None:
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"`logits` and `target` must be tensors, got {type(logits).__name__} and {type(target).__name__}."
        )
    check_one(max_iter, "max_iter", [Satisfies(int, lambda v: v >= 1, "an int >= 1")])


def _fittable_columns(z: Tensor, t: Tensor) -> Tensor:
    """(C,) bool: columns with rows, finite logits and both classes present."""
    if z.shape[0] == 0:
        return torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
    return z.isfinite().all(0) & (t.amax(0) > t.amin(0))


def _platt_targets(t: Tensor) -> Tensor:
    """Platt's (1999) out-of-sample targets: 1 -> (N+ + 1) / (N+ + 2), 0 -> 1 / (N- + 2), per column."""
    n_pos = t.sum(0)
    n_neg = t.shape[0] - n_pos
    hi, lo = (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)
    return lo + t * (hi - lo)


def _lbfgs_platt(z: Tensor, t: Tensor, max_iter: int) -> tuple[Tensor, Tensor]:
    """Minimise the mean BCE of every column at once (the columns are independent). Returns (log_a, b)."""
    log_a = torch.zeros(z.shape[1], dtype=z.dtype, device=z.device, requires_grad=True)
    b = torch.zeros(z.shape[1], dtype=z.dtype, device=z.device, requires_grad=True)

    def loss() -> Tensor:
        nll = F.binary_cross_entropy_with_logits(z * log_a.exp() + b, t, reduction="none")  # (N, C)
        return nll.mean(0).sum()

    _minimise([log_a, b], loss, max_iter)
    return log_a.detach(), b.detach()


def _minimise(params: list[Tensor], loss_fn, max_iter: int) -> None:
    # Tight tolerances: the problems are tiny and convex in (a, b) and in 1/T, so float64 L-BFGS
    # reaches the optimum to about 1e-8 in a few dozen iterations.
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        value = loss_fn()
        value.backward()
        return value

    opt.step(closure)
