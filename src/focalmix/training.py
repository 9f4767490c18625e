"""What the classifier takes from its Trainer and datamodule: batches, fit-time statistics, run settings.

Helpers of :class:`~focalmix.FocalMixClassifier`'s Lightning hooks, so that the class only connects
pieces: the batch formats it accepts, the training split's standardization and class counts taken at
``fit`` (:func:`auto_alpha` for ``focal_alpha="auto"``), the effective batch size of the learning-rate
scaling, mixup's random stream (continued on resume), and Lightning's advice that does not apply here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from focalmix.faults import restore_rng_state

__all__ = [
    "auto_alpha",
    "effective_batch",
    "has_features",
    "mixup_stream",
    "quiet_lightning_advice",
    "quiet_sanity_check",
    "take_training_statistics",
    "unpack",
]


def auto_alpha(task: str, class_counts: Any) -> Tensor:
    """Resolve ``focal_alpha="auto"`` from the training split's class counts.

    Binary (counts of class 0 and class 1) and multilabel (per label: ``(negatives, positives)`` pairs,
    shape (C, 2)): ``alpha = n_neg / n``, the weight of the positives, so that both classes carry the same
    total weight, clipped to [0.25, 0.75] (the range of the spec's alpha guidelines: focal loss already
    shifts weight towards the rare class's hard examples, and an alpha near 1 would drown the negatives).
    Multiclass: ``n / (C * n_c)`` per class, scikit-learn's ``class_weight="balanced"``.

    Example:
        >>> auto_alpha("binary", [90, 10]).item()
        0.75
        >>> [round(w, 3) for w in auto_alpha("multiclass", [50, 25, 25]).tolist()]
        [0.667, 1.333, 1.333]
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float32)
    if task == "multiclass":
        return counts.sum() / (len(counts) * counts.clamp_min(1))
    return (counts[..., 0] / counts.sum(-1)).clamp(0.25, 0.75)


def quiet_lightning_advice(world_size: int, fit_frozen: bool) -> None:
    """Silence Lightning's advice that does not apply to the classifier (see the comments)."""
    if world_size > 1:
        # Lightning advises sync_dist for epoch-level values under DDP; ours are computed from states
        # gathered over every rank (identical everywhere), so the advice is noise (12 lines an epoch)
        warnings.filterwarnings("ignore", r".*self\.log\('(val|test)/.*on epoch level in distributed")
    if fit_frozen:
        # Lightning warns about modules left in eval mode: a frozen backbone is, on purpose.
        warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")


@contextmanager
def quiet_sanity_check(trainer: Any) -> Iterator[None]:
    """During Lightning's sanity check, drop torchmetrics' one-class warnings; otherwise do nothing.

    The sanity check scores two validation batches, which may hold one class only (a media folder lists
    its classes in order): "No positive samples in targets" there says nothing about the user's data.
    """
    with warnings.catch_warnings():
        if trainer is not None and trainer.sanity_checking:
            warnings.filterwarnings("ignore", "No (positive|negative) samples")
        yield


def take_training_statistics(model: Any, datamodule: Any, frozen: bool) -> None:
    """At fit: the datamodule's input (and frozen features') standardization, and ``focal_alpha="auto"``."""
    norm = getattr(datamodule, "normalization", None)
    if norm is not None:
        model.set_normalization(*norm)
    feature_norm = getattr(datamodule, "feature_normalization", None)
    if feature_norm is not None and frozen:
        model.feature_mean, model.feature_std = (t.to(model.device) for t in feature_norm)
    if model.hparams.focal_alpha == "auto":
        counts = torch.as_tensor(datamodule.class_counts)
        if model.hparams.task == "multilabel":  # positives per label -> (negatives, positives)
            counts = torch.stack([len(datamodule.train_dataset) - counts, counts], dim=-1)
        model.alpha_weights = auto_alpha(model.hparams.task, counts).to(model.device)


def mixup_stream(saved: dict[str, Any] | None, world_size: int, rank: int, step: int) -> torch.Generator:
    """The generator mixup draws from: the checkpoint's streams when a run resumes, else a fresh seed."""
    generator = torch.Generator()
    if saved is not None and saved.get("world_size") == world_size == 1:
        # Exact resumption: the random streams continue where the checkpoint's run left them.
        restore_rng_state(saved["global"])
        generator.set_state(saved["mixup"])
    else:
        generator.manual_seed(hash((torch.initial_seed(), rank, step)) % 2**63)  # distinct per rank
    return generator


def effective_batch(trainer: Any) -> int | None:
    """Samples per optimizer step over all processes, or None when the loader has no batch size."""
    batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if batch_size is None:
        batch_size = getattr(trainer.train_dataloader, "batch_size", None)
    if batch_size is None:
        return None
    return batch_size * trainer.world_size * trainer.accumulate_grad_batches


def has_features(batch: Any) -> bool:
    """Whether a batch holds a frozen backbone's cached ``"features"`` (they go to the head alone)."""
    return isinstance(batch, dict) and "features" in batch


def unpack(batch: Any) -> tuple[Tensor, Tensor]:
    """(inputs, targets): ``"x"``, or ``"features"`` (a frozen backbone's cached output), and ``"y"``."""
    if isinstance(batch, dict):
        x = batch.get("features", batch.get("x"))
        if x is None or "y" not in batch:
            raise KeyError(
                f"a batch dict needs keys 'x' and 'y' (or 'features' and 'y'), got {sorted(batch)}."
            )
        return x, batch["y"]
    if isinstance(batch, list | tuple) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"a batch must be a dict with 'x' and 'y' or an (x, y) tuple, got {type(batch).__name__}."
    )
