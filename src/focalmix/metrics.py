"""Evaluation metrics per task, computed once per epoch from every validation/test row.

The module gathers the epoch's logits and targets with torchmetrics' ``CatMetric`` (so under DDP every
rank holds every row exactly once), fits the post-hoc calibration on them, and then calls
:func:`epoch_metrics` here: AUROC, AP, ECE (calibrated and not), Brier score, for multiclass tasks each
class's recall and, for binary tasks, the confusion rates at the decision threshold. Everything
torchmetrics has comes from torchmetrics' functional API; what it lacks (the Brier score, counts on a
threshold grid) is a few lines below. :data:`METRICS` names what is logged per task and
:data:`MINIMIZED` which of those are better lower (what tuning needs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.functional import classification as tmf

ECE_BINS = 15  # Guo et al. 2017's reliability diagrams use 15 bins

# The scores the classifier logs every validation and test epoch as ``<stage>/<name>``, per task: ``loss``
# (the recipe's loss), :func:`epoch_metrics` and, for binary tasks, the :func:`rates` at the decision
# threshold. Not listed, as no score to optimize: the binary ``threshold`` (a setting), multiclass
# ``recall/<class>`` (one per class name) and ``frr``/``fa_per_hour`` (only with background audio).
_EVERY_TASK = ("loss", "auroc", "ap", "ece", "ece_uncalibrated", "brier")
METRICS = {
    "binary": (*_EVERY_TASK, "precision", "recall", "f1", "fpr", "acc"),
    "multiclass": (*_EVERY_TASK, "acc", "f1"),
    "multilabel": (*_EVERY_TASK, "acc", "f1"),
}
# The logged values where lower is better (losses, errors and error rates); every other one is a score.
MINIMIZED = ("loss", "ece", "ece_uncalibrated", "brier", "fpr", "frr", "fa_per_hour")


def threshold_counts(probs: Tensor, target: Tensor, thresholds: Tensor) -> dict[str, Tensor]:
    """Confusion counts (K,) of tp, fp, tn, fn at each of K thresholds (predict positive at ``p >= t``).

    torchmetrics' curves give precision/recall or FPR/TPR, each on its own threshold grid; choosing a
    threshold by F1 or by a target FPR and then reporting every rate at it needs all four counts on
    one grid.

    Example:
        >>> grid = torch.tensor([0.0, 0.5, 1.0])
        >>> c = threshold_counts(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]), grid)
        >>> c["tp"].tolist(), c["fp"].tolist()
        ([1.0, 1.0, 0.0], [1.0, 0.0, 0.0])
    """
    pred = probs.reshape(-1, 1) >= thresholds.to(probs)  # (N, K)
    pos = target.reshape(-1, 1) > 0.5
    return {
        "tp": (pred & pos).sum(0).double(),
        "fp": (pred & ~pos).sum(0).double(),
        "tn": (~pred & ~pos).sum(0).double(),
        "fn": (~pred & pos).sum(0).double(),
    }


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


def brier_score(probs: Tensor, target: Tensor, task: str) -> Tensor:
    """Mean squared error of the probabilities (torchmetrics has no Brier score).

    Binary: ``mean((p - y)^2)``, scikit-learn's ``brier_score_loss``. Multiclass: the original
    multi-category score, ``mean_i sum_c (p_ic - [y_i = c])^2``. Multilabel: the binary score averaged
    over every label of every row.
    """
    if task == "multiclass":
        onehot = torch.nn.functional.one_hot(target.long(), probs.shape[-1]).to(probs)
        return ((probs - onehot) ** 2).sum(-1).mean()
    return ((probs - target.to(probs)) ** 2).mean()


def calibration_error(probs: Tensor, target: Tensor, task: str, num_classes: int) -> Tensor:
    """Expected calibration error (15 bins, l1) from torchmetrics; multilabel: the mean over labels."""
    if task == "binary":
        return tmf.binary_calibration_error(probs, target.long(), n_bins=ECE_BINS)
    if task == "multiclass":
        return tmf.multiclass_calibration_error(probs, target.long(), num_classes, n_bins=ECE_BINS)
    per_label = [
        tmf.binary_calibration_error(probs[:, c].contiguous(), target[:, c].long(), n_bins=ECE_BINS)
        for c in range(num_classes)
    ]
    return torch.stack(per_label).mean()


def ranking_metrics(probs: Tensor, target: Tensor, task: str, num_classes: int) -> dict[str, Tensor]:
    """AUROC and average precision (macro over classes/labels) from torchmetrics."""
    t = target.long()
    if task == "binary":
        return {"auroc": tmf.binary_auroc(probs, t), "ap": tmf.binary_average_precision(probs, t)}
    if task == "multiclass":
        return {
            "auroc": tmf.multiclass_auroc(probs, t, num_classes, average="macro"),
            "ap": tmf.multiclass_average_precision(probs, t, num_classes, average="macro"),
            "acc": tmf.multiclass_accuracy(probs, t, num_classes, average="micro"),
            "f1": tmf.multiclass_f1_score(probs, t, num_classes, average="macro"),
        }
    return {
        "auroc": tmf.multilabel_auroc(probs, t, num_classes, average="macro"),
        "ap": tmf.multilabel_average_precision(probs, t, num_classes, average="macro"),
        "acc": tmf.multilabel_accuracy(probs, t, num_classes, average="micro"),
        "f1": tmf.multilabel_f1_score(probs, t, num_classes, average="macro"),
    }


def per_class_recall(probs: Tensor, target: Tensor, num_classes: int, class_names=None) -> dict[str, Tensor]:
    """Recall of each class at the argmax decision, ``{"recall/<class>": value}`` (multiclass).

    Macro scores hide a class that is never predicted; its recall of 0 does not. From torchmetrics'
    ``MulticlassRecall(average=None)`` (a class without rows scores 0).

    Example:
        >>> p = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
        >>> {k: round(v.item(), 2) for k, v in per_class_recall(p, torch.tensor([0, 1, 2]), 3, "abc").items()}
        {'recall/a': 1.0, 'recall/b': 1.0, 'recall/c': 0.0}
    """
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"`class_names` must name {num_classes} classes, got {len(names)}.")
    values = tmf.multiclass_recall(probs, target.long(), num_classes, average=None)  # (C,)
    return {f"recall/{name}": values[c] for c, name in enumerate(names)}


def epoch_metrics(
    probs: Tensor,
    probs_uncalibrated: Tensor,
    target: Tensor,
    task: str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Every probability metric of one epoch: ranking, ECE before/after calibration and Brier score.

    Multiclass tasks also get each class's recall (``recall/<class>``), so a class the model never predicts
    shows as a 0 rather than vanishing into a macro average.

    Args:
        probs: calibrated probabilities, (N,) binary or (N, C).
        probs_uncalibrated: the same rows before calibration.
        target: (N,) 0/1 or class indices, or (N, C) 0/1 for multilabel.
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        num_classes: classes (binary: 2) or labels.
        class_names: names for the per-class keys (multiclass); default None: ``0 .. C-1``.

    Example:
        >>> p = torch.tensor([0.1, 0.4, 0.35, 0.8])
        >>> m = epoch_metrics(p, p, torch.tensor([0, 0, 1, 1]), "binary", 2)
        >>> round(m["auroc"].item(), 2), round(m["brier"].item(), 4)
        (0.75, 0.1581)
    """
    out = ranking_metrics(probs, target, task, num_classes)
    out["ece"] = calibration_error(probs, target, task, num_classes)
    out["ece_uncalibrated"] = calibration_error(probs_uncalibrated, target, task, num_classes)
    out["brier"] = brier_score(probs, target, task)
    if task == "multiclass":
        out.update(per_class_recall(probs, target, num_classes, class_names))
    return out
