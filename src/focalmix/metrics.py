"""Evaluation metrics per task, all torchmetrics objects so that DDP syncs their states, not their means."""

from __future__ import annotations

import torch
import torchmetrics
from torch import Tensor
from torchmetrics import classification as tmc


class BinaryThresholdStats(torchmetrics.Metric):
    """Confusion counts of a binary classifier at several thresholds at once, summed over DDP ranks.

    torchmetrics' curves give precision/recall or FPR/TPR, each on its own threshold grid; choosing a
    threshold by F1 or by a target FPR and then reporting precision, recall, F1, FPR and accuracy at it
    needs all four counts on one grid, which this keeps: (K,) counts of tp, fp, tn, fn.

    Example:
        >>> m = BinaryThresholdStats(num_thresholds=3)
        >>> m.update(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]), torch.tensor([0.0, 0.5, 1.0]))
        >>> m.compute()["tp"].tolist()
        [1.0, 1.0, 0.0]
    """

    full_state_update = False

    def __init__(self, num_thresholds: int, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("tp", "fp", "tn", "fn"):
            self.add_state(
                name, default=torch.zeros(num_thresholds, dtype=torch.float64), dist_reduce_fx="sum"
            )

    def update(self, probs: Tensor, target: Tensor, thresholds: Tensor) -> None:
        pred = probs.reshape(-1, 1) >= thresholds.to(probs)  # (N, K)
        pos = target.reshape(-1, 1) > 0.5
        self.tp += (pred & pos).sum(0)
        self.fp += (pred & ~pos).sum(0)
        self.tn += (~pred & ~pos).sum(0)
        self.fn += (~pred & pos).sum(0)

    def compute(self) -> dict[str, Tensor]:
        # torchmetrics squeezes one-element results; keep (K,) for K = 1 too
        return {name: getattr(self, name).reshape(-1) for name in ("tp", "fp", "tn", "fn")}


def rates(stats: dict[str, Tensor]) -> dict[str, Tensor]:
    """Accuracy, precision, recall, F1 and FPR from confusion counts (0 where undefined)."""
    tp, fp, tn, fn = stats["tp"], stats["fp"], stats["tn"], stats["fn"]

    def div(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(b > 0, a / b.clamp_min(1), torch.zeros_like(a))

    return {
        "acc": div(tp + tn, tp + fp + tn + fn),
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
        "fpr": div(fp, fp + tn),
    }


def choose_threshold(stats: dict[str, Tensor], thresholds: Tensor, rule: str, max_fpr: float) -> int:
    """Index of the chosen threshold in ``thresholds`` (ascending).

    ``rule="f1"``: the highest F1; where several thresholds tie, the middle one of them, which sits in the
    middle of the gap between the scores it separates. ``rule="fpr"``: the lowest threshold (highest
    recall) whose false-positive rate is at most ``max_fpr``.
    """
    r = rates(stats)
    if rule == "fpr":
        ok = torch.nonzero(r["fpr"] <= max_fpr).flatten()
        return int(ok[0]) if len(ok) else len(thresholds) - 1
    best = torch.nonzero(r["f1"] == r["f1"].max()).flatten()
    return int(best[len(best) // 2])


def probability_metrics(task: str, num_classes: int) -> torchmetrics.MetricCollection:
    """AUROC, average precision and expected calibration error (where torchmetrics has one) for ``task``."""
    if task == "binary":
        metrics = {
            "auroc": tmc.BinaryAUROC(),
            "ap": tmc.BinaryAveragePrecision(),
            "ece": tmc.BinaryCalibrationError(),
        }
    elif task == "multiclass":
        metrics = {
            "auroc": tmc.MulticlassAUROC(num_classes, average="macro"),
            "ap": tmc.MulticlassAveragePrecision(num_classes, average="macro"),
            "ece": tmc.MulticlassCalibrationError(num_classes),
        }
    else:
        metrics = {
            "auroc": tmc.MultilabelAUROC(num_classes, average="macro"),
            "ap": tmc.MultilabelAveragePrecision(num_classes, average="macro"),
        }
    return torchmetrics.MetricCollection(metrics)


def label_metrics(task: str, num_classes: int) -> torchmetrics.MetricCollection:
    """Accuracy and macro F1 of argmax (multiclass) or 0.5-thresholded (multilabel) predictions."""
    if task == "multiclass":
        metrics = {
            "acc": tmc.MulticlassAccuracy(num_classes, average="micro"),
            "f1": tmc.MulticlassF1Score(num_classes, average="macro"),
        }
    else:
        metrics = {
            "acc": tmc.MultilabelAccuracy(num_classes, average="micro"),
            "f1": tmc.MultilabelF1Score(num_classes, average="macro"),
        }
    return torchmetrics.MetricCollection(metrics)
