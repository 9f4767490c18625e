"""The fused form of focal loss on a mixup batch: the loss and its hand-derived gradient in one pass.

:func:`focalmix.losses.focal_mixup_loss` (checked arguments, the public entry point) calls
:class:`FocalMixupFunction` here: its forward computes the loss of a mixup batch against both targets of
every sample together with the gradient with respect to the logits, and its backward only scales that
gradient, so autograd records one node instead of the reference's ~30 elementwise kernels. The formulas
are those of :func:`focalmix.losses.focal_loss` (Lin et al., arXiv 1708.02002) and mixup (Zhang et al.,
arXiv 1710.09412); the tests hold both forms to each other, to float rounding.

Pure torch, no state; the arguments are checked by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

Alpha = float | Sequence[float] | Tensor | None


class FocalMixupFunction(torch.autograd.Function):
    """Forward computes the loss and its gradient with respect to the logits; backward scales the latter.

    ``apply(x, target, lam, perm, task, alpha, gamma, label_smoothing, reduction)``, with ``x`` the logits
    in their compute dtype and the binary/multilabel ``target`` shaped like them, as
    :func:`~focalmix.losses.focal_mixup_loss` prepares them after checking every argument.
    """

    @staticmethod
    def forward(ctx, x, target, lam, perm, task, alpha, gamma, eps, reduction):
        # Autocast leaves these ops in x's precision: none of them is on a lower-precision list.
        fused = _softmax_focal_mixup if task == "multiclass" else _sigmoid_focal_mixup
        loss, grad = fused(x, target, lam, perm, alpha, gamma, eps, reduction, ctx.needs_input_grad[0])
        ctx.save_for_backward(grad)
        ctx.per_row = reduction == "none" and task == "multiclass"  # (N,) losses of (N, C) logits
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.per_row:
            grad_output = grad_output.unsqueeze(-1)
        return grad_output * grad, None, None, None, None, None, None, None, None


def _sigmoid_focal_mixup(
    x: Tensor,
    target: Tensor,
    lam: float | Tensor,
    perm: Tensor | None,
    alpha: Alpha,
    gamma: float,
    eps: float,
    reduction: str,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    # Per element, with p = sigmoid(x), r = 1 - p = sigmoid(-x) and t the smoothed target:
    #   ce = -(t log p + (1 - t) log r),   q = 1 - p_t = (1 - t) p + t r,   w = alpha t + (1 - alpha)(1 - t),
    #   loss = w ce q^g,   d loss / dx = w q^g ((p - t) + g ce (dq/dx) / q),   dq/dx = (1 - 2t) p r.
    # ce and the gradient are computed negated and the sign folds into the final scale, with 1 / count and
    # alpha = 0.5. Python numbers go in as lerp weights, pow exponents and addcmul values: as an operand
    # of an elementwise op each would cost a tensor copy, more than the op itself on a small batch.
    if perm is not None:
        target = torch.stack((target, target.index_select(0, perm)))  # (2, *x.shape): own, partner's
    raw = target.to(x.dtype)
    half = torch.full_like(raw, 0.5)
    t = torch.lerp(half, raw, 1.0 - eps) if eps else raw  # t (1 - eps) + eps / 2
    neg_x = torch.neg(x)
    neg_ce = torch.lerp(F.logsigmoid(neg_x), F.logsigmoid(x), t)
    scale = -1.0 / x.numel() if reduction == "mean" else -1.0
    factor = None  # w q^g
    if isinstance(alpha, int | float) and alpha == 0.5:
        scale *= 0.5
    elif alpha is not None:  # w = 1/2 + (2 alpha - 1)(t - 1/2) = lerp(1/2, raw, (2 alpha - 1)(1 - eps))
        factor = torch.lerp(half, raw, (2 * alpha_weight(alpha, x) - 1) * (1 - eps))
    p = torch.sigmoid(x) if need_grad or gamma else None
    if gamma:
        r = torch.sigmoid(neg_x)
        # floored as focal_loss floors 1 - p: with eps = 0, q underflows for logits beyond +-88 (float32)
        q = torch.lerp(p, r, t).clamp_min_(torch.finfo(x.dtype).tiny)
        factor = q.pow(gamma) if factor is None else factor.mul_(q.pow(gamma))
    loss = neg_ce if factor is None else neg_ce * factor
    grad = None
    if need_grad:
        grad = t - p
        if gamma:
            d_q = p * r * (raw - half)  # (dq/dx) / (-2 (1 - eps))
            grad = torch.addcmul(grad, neg_ce, d_q.div_(q), value=-2.0 * gamma * (1.0 - eps))
        if factor is not None:
            grad = grad.mul_(factor)
    if perm is not None:  # lam * own + (1 - lam) * partner's
        if isinstance(lam, Tensor):
            lam = lam.to(device=x.device, dtype=x.dtype, non_blocking=True)
        loss = _mix_rows(loss, lam)
        grad = None if grad is None else _mix_rows(grad, lam)
    loss = (loss if reduction == "none" else loss.sum()).mul_(scale)
    return loss, None if grad is None else grad.mul_(scale)


def _mix_rows(v: Tensor, lam: float | Tensor) -> Tensor:
    own, partner = v.unbind()  # (2, *shape) -> lam * own + (1 - lam) * partner
    return torch.lerp(partner, own, lam)


def _softmax_focal_mixup(
    x: Tensor,
    target: Tensor,
    lam: float | Tensor,
    perm: Tensor | None,
    alpha: Alpha,
    gamma: float,
    eps: float,
    reduction: str,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    # loss = -sum_c t_c w_c u_c^g log p_c with u = 1 - p, linear in t: mixing the targets mixes the losses.
    # d loss / dx_j = p_j K - k_j,   k_c = t_c w_c (u_c^g - g u_c^(g-1) p_c log p_c),   K = sum_c k_c.
    # Both are computed negated; the sign folds into the final scale with 1 / N and a float alpha.
    t = _mixed_softmax_target(x, target, lam, perm, eps)  # (N, C)
    log_p = F.log_softmax(x, dim=-1)
    per_class = log_p
    if gamma:
        # the floor as in focal_loss: u^(g - 1) stays finite for g < 1 where p_c rounds to 1
        u = torch.expm1(log_p).neg_().clamp_min_(torch.finfo(x.dtype).tiny)
        u_g = u.pow(gamma)
        per_class = per_class * u_g
    w = None if alpha is None else alpha_weight(alpha, x)
    if isinstance(w, Tensor):
        per_class = per_class * w
    scale = -(1.0 if w is None or isinstance(w, Tensor) else w)
    scale = scale / x.shape[0] if reduction == "mean" else scale
    loss = (t * per_class).sum(-1)  # (N,)
    loss = loss.mul_(scale) if reduction == "none" else loss.sum().mul_(scale)
    if not need_grad:
        return loss, None
    p = log_p.exp()
    k = t
    if gamma:
        k = k * torch.addcmul(u_g, u.pow(gamma - 1.0), p * log_p, value=-gamma)
    if isinstance(w, Tensor):
        k = k * w
    return loss, torch.addcmul(k, p, k.sum(-1, keepdim=True), value=-1.0).mul_(scale)


def _mixed_softmax_target(
    x: Tensor, target: Tensor, lam: float | Tensor, perm: Tensor | None, eps: float
) -> Tensor:
    n, c = x.shape
    if target.is_floating_point():  # probabilities (N, C)
        t = target.to(x.dtype)
    else:  # class indices: one-hot rows
        t = x.new_zeros(n, c).scatter_(1, target.unsqueeze(1), 1.0)
    if perm is not None:  # a 0-d lam of another float dtype is read as t's; on t's device
        t = torch.lerp(
            t.index_select(0, perm),
            t,
            lam.to(x.device, non_blocking=True) if isinstance(lam, Tensor) else lam,
        )
    if eps:
        t = torch.lerp(torch.full_like(t, 1.0 / c), t, 1.0 - eps)  # t (1 - eps) + eps / C
    return t


def alpha_weight(alpha: Alpha, x: Tensor) -> Tensor | float:
    """``alpha`` as the loss multiplies by it: a Python float stays one, anything else a tensor like ``x``."""
    # a Python float stays one: no tensor to build or move to the device
    return (
        float(alpha)
        if isinstance(alpha, int | float)
        else torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    )
