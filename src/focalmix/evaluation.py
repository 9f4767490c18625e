"""The classifier's evaluation: every row's logits per stage, then calibration, threshold and epoch metrics.

:class:`Evaluator` is what :class:`~focalmix.FocalMixClassifier` owns as ``evaluator``: it gathers the
logits, targets and losses of each validation/test batch (torchmetrics' ``CatMetric``, so under DDP every
rank holds every row exactly once at ``compute()``), and at the end of the epoch fits the post-hoc
calibration, chooses the binary decision threshold (during ``fit``), computes the epoch's metrics and,
with background audio, the wake-word table of false rejects against false accepts per hour. The math is
in the functional core (:mod:`focalmix.calibration`, :mod:`focalmix.metrics`, :mod:`focalmix.wakeword`);
logging stays with the classifier.

The calibration and the threshold are the classifier's buffers (saved with its weights): the evaluator
updates them in place, handed over as a :class:`Decision` on each call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torchmetrics
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from focalmix import calibration as fm_calibration
from focalmix import metrics as fm_metrics

__all__ = ["GRID", "Decision", "Evaluator", "EvaluatorAttribute", "background_logits", "probabilities"]

GRID = 201  # thresholds 0, 0.005, ..., 1 searched when calibrating the binary decision threshold
STAGES = ("val", "test")
TOP_WINDOWS = 10  # the highest-scoring background events kept with the FRR/FA-h table
# (logits (B, ...), settings) of the background windows, or None: what the FA/h metrics need
Background = Callable[[], tuple[Tensor, dict[str, Any]] | None]


class Decision(NamedTuple):
    """The classifier's buffers the evaluator fits in place: calibrated logits = logits * scale + bias."""

    threshold: Tensor  # () the binary decision threshold
    scale: Tensor  # () or (C,) for multilabel
    bias: Tensor


def probabilities(logits: Tensor, task: str) -> Tensor:
    """Softmax over classes for ``multiclass``, a sigmoid per output otherwise; computed in float32.

    Example:
        >>> [round(p, 6) for p in probabilities(torch.tensor([0.0, 2.0]), "binary").tolist()]
        [0.5, 0.880797]
    """
    logits = logits.float()
    return logits.softmax(-1) if task == "multiclass" else logits.sigmoid()


def calibrated_probabilities(logits: Tensor, task: str, decision: Decision) -> Tensor:
    """Probabilities of the calibrated logits ``logits * decision.scale + decision.bias``."""
    calibrated = fm_calibration.apply_calibration(logits.float(), decision.scale, decision.bias)
    return probabilities(calibrated, task)


class Evaluator(nn.Module):
    """Gathered logits per stage -> calibration, threshold, epoch metrics and the wake-word table.

    An ``nn.Module`` so that its gathered states follow the classifier's device; it holds no persistent
    state (nothing of it is in the checkpoint's ``state_dict``).

    Args:
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        num_classes: classes (binary: 2) or labels.
        calibration: ``"auto"``, ``"platt"``, ``"temperature"`` or ``"none"``
            (see :func:`focalmix.calibration.resolve_method`). Default: ``"auto"``.
        threshold_metric: ``"f1"``, ``"fpr"``, ``"fa_per_hour"`` or ``"none"``: how the binary threshold is
            chosen on validation (:func:`focalmix.metrics.choose_threshold`). Default: ``"f1"``.
        max_fpr: the target false-positive rate of ``"fpr"``. Default: 0.05.
        max_fa_per_hour: the target false accepts per hour of ``"fa_per_hour"``. Default: 0.5.
        class_names: names for the per-class metric keys (multiclass), used when there are
            ``num_classes`` of them. Default: None.

    Example:
        >>> ev = Evaluator("binary", 2, calibration="none")
        >>> decision = Decision(torch.tensor(0.5), torch.tensor(1.0), torch.tensor(0.0))
        >>> ev.update("val", torch.tensor([-2.0, -1.0, 1.0, 2.0]), torch.tensor([0, 1, 0, 1]), torch.ones(4))
        >>> loss, values = ev.epoch_end("val", decision, fitting=True)
        >>> float(loss), float(values["auroc"]), round(float(values["threshold"]), 3), float(values["f1"])
        (1.0, 0.75, 0.195, 0.8)
    """

    def __init__(
        self,
        task: str,
        num_classes: int,
        *,
        calibration: str = "auto",
        threshold_metric: str = "f1",
        max_fpr: float = 0.05,
        max_fa_per_hour: float = 0.5,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.task, self.num_classes = task, num_classes
        self.calibration_method = fm_calibration.resolve_method(task, calibration)
        self.threshold_metric, self.max_fpr, self.max_fa_per_hour = threshold_metric, max_fpr, max_fa_per_hour
        names_fit = class_names is not None and len(class_names) == num_classes
        self.class_names = list(class_names) if names_fit else None
        self.wakeword_table: dict | None = None  # FRR and FA/h per threshold (background_source)
        self._said: set[str] = set()
        # the thresholds searched on validation; built once, moved with the model, not saved
        self.register_buffer("_val_grid", torch.linspace(0, 1, GRID), persistent=False)
        for stage in STAGES:
            self.add_module(f"{stage}_loss", torchmetrics.MeanMetric())
            # every row's logits and targets, gathered over DDP ranks at compute()
            self.add_module(f"{stage}_logits", torchmetrics.CatMetric(nan_strategy="disable"))
            self.add_module(f"{stage}_targets", torchmetrics.CatMetric(nan_strategy="disable"))

    def say_once(self, key: str, message: str) -> None:
        """Log ``message`` on rank zero, the first time ``key`` is said."""
        if key not in self._said:
            self._said.add(key)
            rank_zero_info(message)

    def update(self, stage: str, logits: Tensor, target: Tensor, loss: Tensor) -> None:
        """Gather one batch: its logits, targets (multiclass probabilities -> class indices) and losses."""
        getattr(self, f"{stage}_loss").update(loss)
        target = target.long() if self.task != "multiclass" or target.ndim == 1 else target.argmax(-1)
        getattr(self, f"{stage}_logits").update(logits.detach().float())
        getattr(self, f"{stage}_targets").update(target.float())

    def epoch_end(
        self, stage: str, decision: Decision, *, fitting: bool, background: Background | None = None
    ) -> tuple[Tensor, dict[str, Tensor]] | None:
        """The epoch's mean loss and metrics (keys without the stage), or None when no row was gathered.

        Resets the gathered states. With ``fitting`` (a validation epoch of ``fit``, not the sanity
        check) it first fits the calibration, then, for binary tasks, the threshold, into ``decision``.
        ``background`` is called for the background windows' logits (binary tasks only).
        """
        loss = getattr(self, f"{stage}_loss").compute()
        logits, target = (getattr(self, f"{stage}_{k}").compute() for k in ("logits", "targets"))
        for name in ("loss", "logits", "targets"):
            getattr(self, f"{stage}_{name}").reset()
        if not isinstance(logits, Tensor) or logits.numel() == 0:  # CatMetric: [] before any update
            return None
        task, num_classes = self.task, self.num_classes
        logits = logits.reshape(-1, num_classes) if task != "binary" else logits.reshape(-1)
        target = target.reshape(logits.shape) if task == "multilabel" else target.reshape(-1)
        fit = stage == "val" and fitting
        if fit:
            self.fit_calibration(logits, target, decision)
        probs = calibrated_probabilities(logits, task, decision)
        values = fm_metrics.epoch_metrics(
            probs, probabilities(logits, task), target, task, num_classes, self.class_names
        )
        if task == "binary":
            bg = background() if background is not None else None
            if bg is not None:
                values.update(self.wakeword_metrics(stage, probs, target, decision, fit, bg))
            else:
                values.update(self.threshold_metrics(probs, target, decision, fit))
        return loss, values

    def fit_calibration(self, logits: Tensor, target: Tensor, decision: Decision) -> None:
        """Fit Platt scaling or a temperature on this epoch's validation logits (float64 L-BFGS)."""
        if self.calibration_method == "none":
            return
        scale, bias = fm_calibration.fit_calibration(logits, target, self.task, self.calibration_method)
        decision.scale.copy_(scale.reshape(decision.scale.shape))
        decision.bias.copy_(bias.reshape(decision.bias.shape))
        if fm_calibration.is_identity(decision.scale, decision.bias):
            self.say_once(
                "calibration",
                "focalmix: the validation split cannot calibrate the probabilities (one class only, or too"
                " few rows); they stay uncalibrated for this epoch.",
            )

    def threshold_metrics(self, probs: Tensor, target: Tensor, decision: Decision, fit: bool) -> dict:
        """Rates at the decision threshold; with ``fit``, first chosen by ``threshold_metric``."""
        if fit and self.threshold_metric == "fa_per_hour":
            raise ValueError(
                "`threshold_metric`='fa_per_hour' needs background audio: set the datamodule's"
                " `background_source` (--data.background_source DIR) and a pretrained audio backbone."
            )
        if fit and self.threshold_metric != "none":
            self._choose_threshold(probs, target, decision)
        return self._rates_at(probs, target, decision)

    def wakeword_metrics(
        self, stage: str, probs: Tensor, target: Tensor, decision: Decision, fit: bool, background: tuple
    ) -> dict[str, Tensor]:
        """FRR on the positives and FA/h on the background; with ``fit`` and ``fa_per_hour``, the threshold.

        ``background``: the background windows' (uncalibrated) logits and their settings (``starts``,
        ``hours``, ``hop_seconds``, ``refractory_seconds``, ``file_ids``, ``files``). A validation epoch
        keeps the whole table in :attr:`wakeword_table`.
        """
        from focalmix import wakeword

        bg_logits, bg = background
        bg_probs = calibrated_probabilities(bg_logits, self.task, decision).cpu().numpy()
        positives = probs[target == 1].cpu().numpy()

        def table(thresholds: np.ndarray) -> dict[str, np.ndarray]:
            return wakeword.fa_frr_table(
                positives, bg_probs, bg["starts"], bg["hours"], thresholds,
                refractory_seconds=bg["refractory_seconds"], file_ids=bg["file_ids"],
            )  # fmt: skip

        grid = wakeword.threshold_grid()
        full = table(grid)
        if fit and self.threshold_metric == "fa_per_hour":
            decision.threshold.fill_(float(grid[wakeword.choose_threshold(full, self.max_fa_per_hour)]))
            if bg["hours"] * self.max_fa_per_hour < 1:  # the target allows no event in this much audio
                self.say_once("short background", _short_background(bg["hours"], self.max_fa_per_hour))
        elif fit and self.threshold_metric != "none":
            self._choose_threshold(probs, target, decision)
        if stage == "val":
            self.wakeword_table = {k: v.tolist() for k, v in full.items()} | {
                "background_hours": bg["hours"], "background_files": [str(f) for f in bg["files"]],
                **{k: bg[k] for k in ("hop_seconds", "refractory_seconds")},
                "top_background": _top_windows(bg_probs.reshape(-1), bg),
            }  # fmt: skip
        one = table(np.array([float(decision.threshold)]))
        extra = {"frr": float(one["frr"][0]), "fa_per_hour": float(one["fa_per_hour"][0])}
        return {**self._rates_at(probs, target, decision), **{k: torch.tensor(v) for k, v in extra.items()}}

    def _choose_threshold(self, probs: Tensor, target: Tensor, decision: Decision) -> None:
        grid = self._val_grid
        stats = fm_metrics.threshold_counts(probs, target, grid)
        idx = fm_metrics.choose_threshold(stats, grid, self.threshold_metric, self.max_fpr)
        decision.threshold.fill_(grid[idx])

    @staticmethod
    def _rates_at(probs: Tensor, target: Tensor, decision: Decision) -> dict[str, Tensor]:
        stats = fm_metrics.threshold_counts(probs, target, decision.threshold.view(1))
        at = {k: v.reshape(-1)[0] for k, v in fm_metrics.rates(stats).items()}
        return {**at, "threshold": decision.threshold.clone()}


def background_logits(
    datamodule: Any, head: Callable[[Tensor], Tensor], device: torch.device
) -> tuple[Tensor, dict[str, Any]] | None:
    """Logits of the datamodule's background windows (for FA/h) and their settings, or None.

    ``head`` maps the windows' backbone features (``background["features"]``) to logits.
    """
    dm = datamodule
    background = getattr(dm, "background", None)
    if background is None:
        return None
    with torch.no_grad():
        logits = head(background["features"].to(device))
    return logits, {**background, **dm.wakeword_settings}


class EvaluatorAttribute:
    """An attribute of the classifier that its :class:`Evaluator` (``obj.evaluator``) keeps, same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.evaluator, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.evaluator, self.name, value)


def _top_windows(probs: np.ndarray, bg: Mapping[str, Any], k: int = TOP_WINDOWS) -> list[dict]:
    """The peaks of the ``k`` highest-scoring background events, highest first: the likeliest false accepts
    (listen to them). A window within ``refractory_seconds`` of a higher one in the same file belongs to
    its event and is skipped (overlapping windows score alike). ``file``, ``start_seconds``,
    ``probability``.

    >>> bg = {"files": ["a.wav", "b.wav"], "file_ids": np.array([0, 0, 0, 1]),
    ...       "starts": np.array([0, 0.1, 2.0, 0]), "refractory_seconds": 1.0}
    >>> [(w["file"], w["start_seconds"]) for w in _top_windows(np.array([0.8, 0.9, 0.3, 0.5]), bg)]
    [('a.wav', 0.1), ('b.wav', 0.0), ('a.wav', 2.0)]
    """
    refractory, chosen = float(bg["refractory_seconds"]), []
    for i in np.argsort(-probs, kind="stable"):
        f, t = int(bg["file_ids"][i]), float(bg["starts"][i])
        if all(f != g or abs(t - u) >= refractory for g, u, _ in chosen):
            chosen.append((f, t, float(probs[i])))
            if len(chosen) == k:
                break
    return [
        {"file": str(bg["files"][f]), "start_seconds": round(t, 3), "probability": p} for f, t, p in chosen
    ]


def _short_background(hours: float, max_fa_per_hour: float) -> str:
    """Why a background shorter than ``1 / max_fa_per_hour`` hours cannot show the FA/h target.

    >>> text = _short_background(0.25, 0.5)
    >>> text[:46], "not one false accept" in text
    ('focalmix: the background holds 15 min of audio', True)
    >>> text.endswith("2 h of background or more would measure the rate itself")
    True
    """
    return (
        f"focalmix: the background holds {hours * 60:.0f} min of audio: at --model.max_fa_per_hour"
        f" {max_fa_per_hour:g} not one false accept is allowed, so the threshold sits just above its highest"
        f" window; {1 / max_fa_per_hour:.3g} h of background or more would measure the rate itself"
    )
