"""Training diagnostics: read the loss curves of a finished fit and print the spec's advice that fits them.

:func:`diagnose` is the pure core: per-epoch training and validation losses in, a list of
:class:`Finding` out. :class:`TrainingDiagnostics` is the Lightning shell that records the curves, calls
it when training ends and reports. The advice is the Troubleshooting section of the training spec
(``training-hyperparameters.md``), with the command-line flags that carry it out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_debug, rank_zero_info

from focalmix._checks import ArgumentValueError, Instance, Interval, Satisfies, check

RULES = ("not_decreasing", "overfitting", "slow_convergence")
DEFAULTS: dict[str, int | float] = {
    "window": 5,
    "min_epochs": 8,
    "min_decrease": 0.05,
    "overfit_min_rise": 0.2,
    "slow_max_decrease": 0.3,
    "slow_min_steady": 0.75,
}
# Each threshold's type and range; `min_epochs` and `slow_max_decrease` also depend on another one.
_CONSTRAINTS = {
    "window": [Interval(int, 2)],
    "min_epochs": [Interval(int)],
    "min_decrease": [Interval(float, 0, 1, closed="neither")],
    "overfit_min_rise": [Satisfies(float, lambda v: v > 0, "> 0")],  # inf turns the rule off
    "slow_max_decrease": [Instance(float)],
    "slow_min_steady": [Interval(float, 0.5, 1, closed="right")],
}


@dataclass(frozen=True)
class Finding:
    """One problem seen in the loss curves.

    Attributes:
        rule: which rule fired, one of :data:`RULES`.
        message: what was seen, with the numbers, and what to change, with the CLI flags.
        evidence: the measurements that fired the rule, by name.
    """

    rule: str
    message: str
    evidence: dict[str, float] = field(default_factory=dict)


def diagnose(
    train_loss: Sequence[float], val_loss: Sequence[float] = (), **thresholds: float
) -> list[Finding]:
    """Judge per-epoch loss curves against three rules; an empty list means nothing to fix.

    Entry ``i`` of each curve is epoch ``i``'s mean loss; a NaN marks an epoch without that value (no
    validation that epoch); ``val_loss`` may be empty (no validation at all). Nothing is judged before
    ``min_epochs`` epochs with a training loss. Below, "start" is the first epoch's value, "end" the mean
    of the last ``window`` values (averaging out the batch noise that mixup adds to the training loss),
    and "decrease" is ``(start - end) / start``. The recipe's training loss sits above the validation
    loss (mixup, label smoothing, dropout), so no rule compares the two levels; each compares a curve
    with itself.

    * ``not_decreasing``: the training loss decreased by less than ``min_decrease`` (or rose).
    * ``overfitting``: the validation loss ends ``overfit_min_rise`` or more above its lowest (end over
      lowest, minus 1; the lowest mean of ``window`` consecutive validations, since the single minimum of
      a noisy curve is biased low) while the training loss fell since then: its end is at least
      ``min_decrease`` below its mean over those same epochs.
    * ``slow_convergence`` (only when ``not_decreasing`` did not fire): both losses decreased, by at least
      ``min_decrease`` but by less than ``slow_max_decrease``, and the validation loss was still going down
      steadily in the second half of the run: at least ``slow_min_steady`` of its epoch-to-epoch steps there
      did not rise (by more than 0.1% of its level). A converged curve plateaus and its steps go both
      ways; a curve that has only found a noisy plateau after a small decrease is left alone.

    Args:
        train_loss: training loss per epoch.
        val_loss: validation loss per epoch, the same length as ``train_loss``, or empty.
        **thresholds: any of ``window`` (epochs averaged at the end, int >= 2, default 5), ``min_epochs``
            (int >= ``window``, default 8), ``min_decrease`` (in (0, 1), default 0.05),
            ``overfit_min_rise`` (> 0, default 0.2), ``slow_max_decrease`` (in (min_decrease, 1), default
            0.3), ``slow_min_steady`` (in (0.5, 1], default 0.75).

    Returns:
        The findings, in the order of :data:`RULES`.

    Raises:
        ValueError: for curves of different lengths, or a threshold that is unknown or out of range.
        TypeError: a non-int ``window`` or ``min_epochs``, or a threshold that is not a number.

    Example:
        >>> train = [0.7, 0.5, 0.4, 0.35, 0.33, 0.32, 0.31, 0.31, 0.3]
        >>> diagnose(train, [0.6, 0.45, 0.4, 0.38] + [0.37] * 5)
        []
        >>> [f.rule for f in diagnose([0.7] * 10, [0.6] * 10)]
        ['not_decreasing']
    """
    t = check_thresholds(**thresholds)
    train, val = [float(v) for v in train_loss], [float(v) for v in val_loss]
    if val and len(val) != len(train):
        raise ValueError(
            f"`val_loss` must be empty or have one value per epoch of `train_loss` ({len(train)}), got"
            f" {len(val)}; put NaN for epochs without validation."
        )
    if sum(map(math.isfinite, train)) < t["min_epochs"]:
        return []
    findings = [_not_decreasing(train, t)]
    if sum(map(math.isfinite, val)) >= t["min_epochs"]:
        findings.append(_overfitting(train, val, t))
        if findings[0] is None:
            findings.append(_slow_convergence(train, val, t))
    return [f for f in findings if f is not None]


def check_thresholds(**thresholds: float) -> dict[str, Any]:
    """The rule thresholds with defaults filled in, checked; see :func:`diagnose`.

    Raises:
        ValueError: an unknown name or a value out of range, naming both.
        TypeError: a non-int ``window`` or ``min_epochs``, or a threshold that is not a number.

    Example:
        >>> check_thresholds(window=4)["min_epochs"]
        8
    """
    return _check_thresholds(thresholds)


def _check_thresholds(thresholds: dict[str, Any], owner: type | None = None) -> dict[str, Any]:
    unknown = sorted(set(thresholds) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown diagnostics thresholds {unknown}; known ones are {sorted(DEFAULTS)}.")
    t = {**DEFAULTS, **thresholds}
    check(t, _CONSTRAINTS, owner=owner)
    if not t["min_epochs"] >= t["window"]:
        message = f"`min_epochs` must be >= window ({t['window']}), got {t['min_epochs']}."
        raise ArgumentValueError(message, argument="min_epochs", owner=owner)
    if not t["min_decrease"] < t["slow_max_decrease"] < 1:
        message = f"`slow_max_decrease` must be in (min_decrease, 1), got {t['slow_max_decrease']}."
        raise ArgumentValueError(message, argument="slow_max_decrease", owner=owner)
    return t


def _not_decreasing(train: list[float], t: dict[str, Any]) -> Finding | None:
    xs = _finite(train)
    start, end = xs[0], _mean(xs[-t["window"] :])
    decrease = _decrease(start, end)
    if decrease >= t["min_decrease"]:
        return None
    verb = f"rose by {-decrease:.0%}" if decrease < 0 else f"decreased by only {decrease:.0%}"
    message = (
        f"Training loss not decreasing: it {verb} (first epoch {start:.4g}, mean of the last {t['window']}"
        f" epochs {end:.4g}; expected a decrease of at least {t['min_decrease']:.0%}). Raise the learning"
        " rate (--model.learning_rate, e.g. x3), check data quality (labels, features, leakage), and lower"
        " dropout for a while (--model.dropout 0.2)."
    )
    if decrease < 0:
        message += " If the loss rose or jumped, the learning rate may be too high instead: lower it."
    evidence = {"train_start": start, "train_end": end, "train_decrease": decrease}
    return Finding("not_decreasing", message, evidence)


def _overfitting(train: list[float], val: list[float], t: dict[str, Any]) -> Finding | None:
    w = t["window"]
    epochs = [i for i, v in enumerate(val) if math.isfinite(v)]
    # the lowest mean of `window` consecutive validations: the minimum of a noisy curve is biased low
    first = min(range(len(epochs) - w + 1), key=lambda i: _mean([val[e] for e in epochs[i : i + w]]))
    best_epochs = epochs[first : first + w]
    best, end = _mean([val[e] for e in best_epochs]), _mean([val[e] for e in epochs[-w:]])
    rise = end / best - 1 if best > 0 else math.inf
    train_then, train_end = _mean(_finite([train[e] for e in best_epochs])), _mean(_finite(train)[-w:])
    if rise < t["overfit_min_rise"] or not train_end <= train_then * (1 - t["min_decrease"]):
        return None
    a, b = best_epochs[0], best_epochs[-1]
    message = (
        f"Validation loss rising while training loss falls (overfitting): validation loss {end:.4g} (mean"
        f" of the last {w} epochs) is {rise:.0%} above its lowest, {best:.4g} (mean of epochs {a}-{b}),"
        f" while training loss fell from {train_then:.4g} to {train_end:.4g}. Raise dropout (--model.dropout"
        " 0.5 to 0.6), raise label smoothing (--model.label_smoothing, e.g. 0.2), add training data, and"
        f" train fewer epochs (--trainer.max_epochs {b + 1}, or a smaller --early_stopping.patience)."
    )
    evidence = {
        "val_best": best,
        "val_best_first_epoch": float(a),
        "val_best_last_epoch": float(b),
        "val_end": end,
        "val_rise": rise,
        "train_at_val_best": train_then,
        "train_end": train_end,
    }
    return Finding("overfitting", message, evidence)


def _slow_convergence(train: list[float], val: list[float], t: dict[str, Any]) -> Finding | None:
    w, lo, hi = t["window"], t["min_decrease"], t["slow_max_decrease"]
    tr, va = _finite(train), _finite(val)
    train_decrease, val_decrease = _decrease(tr[0], _mean(tr[-w:])), _decrease(va[0], _mean(va[-w:]))
    late = va[len(va) // 2 :]
    steps = [b - a for a, b in zip(late, late[1:], strict=False)]
    level = abs(_mean(late)) or 1.0
    steady = sum(s <= 1e-3 * level for s in steps) / max(len(steps), 1)
    slow = lo <= train_decrease < hi and lo <= val_decrease < hi and steady >= t["slow_min_steady"]
    if not slow:
        return None
    message = (
        f"Both losses decreasing too slowly: over {len(tr)} epochs training loss fell by {train_decrease:.0%}"
        f" and validation loss by {val_decrease:.0%} (less than {hi:.0%}), and validation loss was still"
        f" going down in {steady:.0%} of the steps of the second half. Raise the learning rate"
        " (--model.learning_rate, e.g. x3 to x10) or the batch size (--data.batch_size, e.g. x2, with"
        " --model.lr_scaling linear to scale the learning rate with it), or train longer"
        " (--trainer.max_epochs); check for data issues."
    )
    evidence = {"train_decrease": train_decrease, "val_decrease": val_decrease, "val_steady_share": steady}
    return Finding("slow_convergence", message, evidence)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _decrease(start: float, end: float) -> float:
    return (start - end) / abs(start) if start else 0.0


class TrainingDiagnostics(pl.Callback):
    """Watch ``train/loss`` and ``val/loss`` per epoch; when training ends, print the advice that fits.

    One ``(train, val)`` pair is recorded per training epoch at ``on_train_epoch_end``: the epoch-mean
    training loss and the last validation loss of that epoch (NaN if validation did not run; the
    sanity check is skipped). When training ends (``on_train_end``: also after ``EarlyStopping`` stops
    the run, and while the loggers are still open) the curves go through :func:`diagnose`, whose
    docstring defines the rules. Each finding is printed once on rank 0 with
    :func:`~lightning.pytorch.utilities.rank_zero_info`, kept in :attr:`findings`, and, if the trainer has
    loggers, logged as ``diagnostics/<rule>`` = 1.0 (0.0 for the rules that did not fire). A healthy run
    prints nothing (``"no problems found"`` at debug level).

    Rules and their defaults (see :func:`diagnose`):

    * ``not_decreasing``: training loss decreased by less than ``min_decrease`` = 5% from the first epoch
      to the mean of the last ``window`` = 5 epochs. Advice: raise ``--model.learning_rate``, check the
      data, lower ``--model.dropout`` for a while.
    * ``overfitting``: validation loss ends >= ``overfit_min_rise`` = 20% above its lowest ``window``-epoch
      mean while the training loss fell by >= 5% since those epochs. Advice: ``--model.dropout`` 0.5-0.6,
      higher ``--model.label_smoothing``, more data, fewer ``--trainer.max_epochs``.
    * ``slow_convergence``: both losses fell by 5% to ``slow_max_decrease`` = 30% only, and validation
      loss still fell in >= ``slow_min_steady`` = 75% of the epochs of the second half. Advice: raise
      ``--model.learning_rate`` or ``--data.batch_size``.

    Nothing is judged before ``min_epochs`` = 8 epochs. The thresholds are relative, so they hold for
    any loss scale; they were set on the recipe's own curves, where mixup and label smoothing keep the
    training loss noisy and above the validation loss, and OneCycleLR's warmup and annealing bend both.

    Args:
        window: epochs averaged for a curve's end (and for the validation loss's lowest), >= 2. Default: 5.
        min_epochs: epochs before anything is judged, >= ``window``. Default: 8.
        min_decrease: the smallest relative decrease of the training loss that counts as decreasing, in
            (0, 1). Default: 0.05.
        overfit_min_rise: the relative rise of the validation loss over its lowest that counts as
            overfitting, > 0. Default: 0.2.
        slow_max_decrease: a relative decrease of both losses below this is slow, in (min_decrease, 1).
            Default: 0.3.
        slow_min_steady: share of the second half's validation steps that must not rise for a slow run,
            in (0.5, 1]. Default: 0.75.
        train_key: the logged training loss. Default: ``"train/loss"``.
        val_key: the logged validation loss. Default: ``"val/loss"``.

    Attributes:
        train_loss: the recorded training loss per epoch.
        val_loss: the recorded validation loss per epoch (NaN where validation did not run).
        findings: the findings of the last fit.

    Raises:
        ValueError: a threshold that is unknown or out of range.
        TypeError: a non-int ``window`` or ``min_epochs``, or a threshold that is not a number.

    Example:
        >>> callback = TrainingDiagnostics(overfit_min_rise=0.3)
        >>> callback.thresholds["overfit_min_rise"], callback.thresholds["window"]
        (0.3, 5)
    """

    def __init__(
        self,
        window: int = 5,
        min_epochs: int = 8,
        min_decrease: float = 0.05,
        overfit_min_rise: float = 0.2,
        slow_max_decrease: float = 0.3,
        slow_min_steady: float = 0.75,
        train_key: str = "train/loss",
        val_key: str = "val/loss",
    ) -> None:
        super().__init__()
        self.train_key, self.val_key = train_key, val_key
        self.thresholds = _check_thresholds(
            {
                "window": window,
                "min_epochs": min_epochs,
                "min_decrease": min_decrease,
                "overfit_min_rise": overfit_min_rise,
                "slow_max_decrease": slow_max_decrease,
                "slow_min_steady": slow_min_steady,
            },
            owner=TrainingDiagnostics,
        )
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []
        self.findings: list[Finding] = []
        self._val_this_epoch, self._epoch_open = math.nan, False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_loss, self.val_loss, self.findings = [], [], []
        self._val_this_epoch, self._epoch_open = math.nan, False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
        # module's, so `val/loss` of this epoch is only in callback_metrics by now.
        if not trainer.sanity_checking:
            self._val_this_epoch = _metric(trainer, self.val_key)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # An epoch's pair is complete once all its epoch-end hooks ran (FocalMixClassifier logs
        # `train/loss` in its own on_train_epoch_end, after the callbacks'): record it here or at the end.
        self._close_epoch(trainer)
        self._epoch_open = True

    def _close_epoch(self, trainer: pl.Trainer) -> None:
        if self._epoch_open:
            self.train_loss.append(_metric(trainer, self.train_key))
            self.val_loss.append(self._val_this_epoch)
        self._val_this_epoch, self._epoch_open = math.nan, False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_epoch(trainer)
        self.findings = diagnose(self.train_loss, self.val_loss, **self.thresholds)
        for finding in self.findings:
            rank_zero_info(f"focalmix diagnostics: {finding.message}")
        if not self.findings:
            rank_zero_debug(f"focalmix diagnostics: no problems found in {len(self.train_loss)} epochs.")
        fired = {f.rule for f in self.findings}
        verdict = {f"diagnostics/{rule}": float(rule in fired) for rule in RULES}
        for logger in trainer.loggers:
            logger.log_metrics(verdict, step=trainer.global_step)


def _metric(trainer: pl.Trainer, key: str) -> float:
    value = trainer.callback_metrics.get(key)
    return math.nan if value is None else float(value)
