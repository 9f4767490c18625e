"""The recipe's optimizer and schedule as plain functions: AdamW without decay on biases and norm weights,
OneCycleLR over the run's optimizer steps, and the learning rate scaled to the effective batch.

:meth:`focalmix.FocalMixClassifier.configure_optimizers` calls these with the Trainer's numbers; they
take no Lightning object, so a hand-written loop can build the same pair.

Example:
    >>> net = torch.nn.Linear(4, 1)
    >>> opt = adamw(net.parameters(), lr=1e-3, weight_decay=0.01)
    >>> [g["weight_decay"] for g in opt.param_groups]
    [0.01, 0.0]
    >>> sched = one_cycle(opt, total_steps=100, max_lr=1e-3, warmup_pct=0.1)
    >>> round(opt.param_groups[0]["lr"], 8)
    4e-05
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

SCALINGS = ("none", "linear", "sqrt")


def adamw(params: Iterable[Tensor], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable ``params``: weight decay on matrices and kernels, none on biases and norm
    weights (1-D tensors), with the fastest implementation torch has for them (:func:`fastest_adamw`)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        weight_decay=weight_decay,
        **fastest_adamw(params),
    )


def fastest_adamw(params: list[Tensor]) -> dict[str, bool]:
    """``fused=True`` where torch has a fused AdamW kernel for these tensors, else ``foreach=True``.

    The fused kernel does the whole update in one pass (on CPU: 250 instead of 650 microseconds a step
    for the default MLP); torch has it for floating-point tensors on CPU, CUDA, MPS and XPU, all on one
    device type.
    """
    devices = {p.device.type for p in params}
    fusable = len(devices) == 1 and devices <= {"cpu", "cuda", "mps", "xpu"}
    if fusable and all(p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}


def one_cycle(
    optimizer: torch.optim.Optimizer,
    total_steps: float,
    max_lr: float,
    warmup_pct: float,
    **kwargs: object,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's ``OneCycleLR`` over ``total_steps`` optimizer steps; ``kwargs`` go to it unchanged.

    Raises:
        ValueError: ``total_steps`` is not a finite positive number (a Trainer without ``max_epochs`` or
            ``max_steps``, or an empty training loader).
    """
    if not math.isfinite(total_steps) or total_steps <= 0:
        raise ValueError(
            f"OneCycleLR needs a finite, positive number of optimizer steps, got {total_steps}. With a"
            " Trainer: set `max_epochs` (>= 1) or `max_steps` (> 0), and check that the training"
            " dataloader is not empty."
        )
    # torch's OneCycleLR divides 0 by 0 when warmup_pct * total_steps is exactly 1 (e.g. 0.1 of 10
    # steps): warm up over 2 steps then (1.5 of a 2-step schedule, where 2 would divide 0 by 0 again).
    pct_start = min(2, total_steps - 0.5) / total_steps if warmup_pct * total_steps == 1 else warmup_pct
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=int(total_steps), pct_start=pct_start, **kwargs
    )


def scaled_lr(learning_rate: float, scaling: str, effective_batch: int, reference_batch: int) -> float:
    """``learning_rate`` scaled by ``effective_batch / reference_batch``: "none", "linear" or "sqrt".

    Example:
        >>> scaled_lr(1e-4, "linear", 256, 32), scaled_lr(1e-4, "sqrt", 128, 32)
        (0.0008, 0.0002)
    """
    if scaling not in SCALINGS:
        raise ValueError(f"`lr_scaling` must be one of {SCALINGS}, got {scaling!r}.")
    if not (effective_batch >= 1 and reference_batch >= 1):
        raise ValueError(f"batch sizes must be >= 1, got {effective_batch} and {reference_batch}.")
    ratio = effective_batch / reference_batch
    return learning_rate * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


class ResumeScheduleError(RuntimeError):
    """A resumed run's Trainer plans another number of steps than its one-cycle schedule was built for."""


def check_resumed_schedule(scheduler: object, planned_steps: float) -> None:
    """Refuse to resume a one-cycle schedule built for another number of steps than the Trainer plans."""
    total = getattr(scheduler, "total_steps", planned_steps)
    if total != planned_steps:
        raise ResumeScheduleError(
            f"This run resumes a OneCycleLR schedule built for {total} optimizer steps,"
            f" but the Trainer now plans {planned_steps} (max_epochs, max_steps, limit_train_batches,"
            " accumulate_grad_batches, devices or batch size changed). A one-cycle schedule cannot be"
            " stretched: resume with the settings of the original run, or start a new fit from the"
            " checkpoint's weights (FocalMixClassifier.load_from_checkpoint) without `ckpt_path`."
        )


# the classifier's hyperparameters that OneCycleLR takes as they are
_ONE_CYCLE = (
    "anneal_strategy",
    "cycle_momentum",
    "base_momentum",
    "max_momentum",
    "div_factor",
    "final_div_factor",
)


def recipe(
    params: Iterable[Tensor], settings: Mapping[str, Any], total_steps: float, effective_batch: int | None
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR, float]:
    """The recipe's AdamW and OneCycleLR from a classifier's hyperparameters, and the peak learning rate.

    Args:
        params: the parameters to train.
        settings: ``learning_rate``, ``lr_scaling``, ``reference_batch_size``, ``weight_decay``,
            ``warmup_pct`` and OneCycleLR's ``anneal_strategy``, ``cycle_momentum``, ``base_momentum``,
            ``max_momentum``, ``div_factor``, ``final_div_factor`` (a classifier's ``hparams``).
        total_steps: optimizer steps of the run.
        effective_batch: samples per optimizer step over all processes; None when unknown.

    Raises:
        ValueError: ``lr_scaling`` is not ``"none"`` and ``effective_batch`` is None, or as :func:`one_cycle`.
    """
    s = settings
    if effective_batch is None and s["lr_scaling"] != "none":
        raise ValueError("`lr_scaling` needs the training batch size; use a DataLoader with `batch_size`.")
    lr = scaled_lr(s["learning_rate"], s["lr_scaling"], effective_batch or 1, s["reference_batch_size"])
    optimizer = adamw(params, lr=lr, weight_decay=s["weight_decay"])
    cycle = {k: s[k] for k in _ONE_CYCLE}
    scheduler = one_cycle(optimizer, total_steps, max_lr=lr, warmup_pct=s["warmup_pct"], **cycle)
    return optimizer, scheduler, lr
