"""Training diagnostics: each rule on synthetic and recorded curves, and the callback in real fits."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from focalmix import FocalMixClassifier
from focalmix import diagnostics as diag
from focalmix.diagnostics import RULES, Finding, TrainingDiagnostics, check_thresholds, diagnose
from tests.conftest import quiet_trainer

ADVICE = {
    "not_decreasing": ("--model.learning_rate", "--model.dropout", "data quality"),
    "overfitting": ("--model.dropout", "--model.label_smoothing", "--trainer.max_epochs", "training data"),
    "slow_convergence": ("--model.learning_rate", "--data.batch_size"),
}

# Curves recorded from healthy runs of the recipe (lr 1e-4, mixup 0.5, label smoothing 0.1, OneCycleLR),
# on the built-in sets; the first two were ended by EarlyStopping(patience 8), the last by max_epochs=10.
RECORDED_HEALTHY = {
    "breast_cancer_early_stopped": (
        [
            0.0957,
            0.0879,
            0.0796,
            0.0673,
            0.0560,
            0.0518,
            0.0433,
            0.0465,
            0.0417,
            0.0378,
            0.0449,
            0.0430,
            0.0524,
            0.0482,
            0.0446,
            0.0392,
            0.0451,
            0.0419,
        ],
        [
            0.0792,
            0.0706,
            0.0578,
            0.0443,
            0.0333,
            0.0282,
            0.0242,
            0.0225,
            0.0213,
            0.0201,
            0.0203,
            0.0205,
            0.0217,
            0.0238,
            0.0229,
            0.0221,
            0.0217,
            0.0219,
        ],
    ),
    "synthetic_early_stopped": (
        [
            0.1051,
            0.0975,
            0.0942,
            0.0951,
            0.0896,
            0.0829,
            0.0808,
            0.0793,
            0.0768,
            0.0781,
            0.0754,
            0.0723,
            0.0709,
            0.0706,
            0.0701,
            0.0719,
            0.0688,
            0.0717,
            0.0687,
            0.0681,
            0.0689,
            0.0676,
        ],
        [
            0.0911,
            0.0882,
            0.0835,
            0.0783,
            0.0734,
            0.0690,
            0.0674,
            0.0663,
            0.0665,
            0.0660,
            0.0657,
            0.0656,
            0.0655,
            0.0653,
            0.0657,
            0.0659,
            0.0660,
            0.0662,
            0.0662,
            0.0659,
            0.0662,
            0.0666,
        ],
    ),
    "breast_cancer_10_epochs": (
        [0.0945, 0.0647, 0.0521, 0.0481, 0.0437, 0.0437, 0.0485, 0.0512, 0.0432, 0.0440],
        [0.0543, 0.0306, 0.0262, 0.0244, 0.0232, 0.0229, 0.0227, 0.0228, 0.0227, 0.0227],
    ),
}


def _curve(n, start, floor, tau, noise, seed):
    """Exponential decay from `start` to `floor` with time constant `tau`, times (1 + noise * N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    clean = floor + (start - floor) * torch.exp(-torch.arange(n, dtype=torch.float64) / tau)
    return (clean * (1 + noise * torch.randn(n, generator=g, dtype=torch.float64))).tolist()


def _rules(findings):
    return [f.rule for f in findings]


# ---- healthy curves: silence ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("epochs", [10, 30, 100])
def test_healthy_recipe_like_curves_are_silent(seed, epochs):
    # like the recipe: training loss noisy (mixup) and above the validation loss, both converging
    train = _curve(epochs, 0.10, 0.04, epochs / 10, noise=0.12, seed=seed)
    val = _curve(epochs, 0.085, 0.02, epochs / 10, noise=0.03, seed=seed + 100)
    assert diagnose(train, val) == []


@pytest.mark.parametrize("seed", range(20))
def test_noisy_flat_after_convergence_is_silent(seed):
    # converged at epoch 3, then 60 epochs of noise around the plateau
    train = _curve(64, 0.10, 0.04, 1.0, noise=0.15, seed=seed)
    val = _curve(64, 0.09, 0.02, 1.0, noise=0.05, seed=seed + 100)
    assert diagnose(train, val) == []


@pytest.mark.parametrize("name", sorted(RECORDED_HEALTHY))
def test_recorded_healthy_runs_are_silent(name):
    assert diagnose(*RECORDED_HEALTHY[name]) == []


def test_too_few_epochs_are_not_judged():
    flat = [0.5] * 7
    assert diagnose(flat, flat) == []
    assert _rules(diagnose(flat + [0.5], flat + [0.5])) == ["not_decreasing"]  # min_epochs=8 reached
    assert diagnose(flat + [0.5], flat + [0.5], min_epochs=9) == []


# ---- each rule fires, with its numbers and flags -----------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_flat_training_loss_is_not_decreasing(seed):
    train = _curve(30, 0.1, 0.1, 1.0, noise=0.1, seed=seed)  # no decay at all
    val = _curve(30, 0.09, 0.09, 1.0, noise=0.02, seed=seed)
    (finding,) = diagnose(train, val)
    assert finding.rule == "not_decreasing"
    end = sum(train[-5:]) / 5
    assert finding.evidence["train_decrease"] == pytest.approx((train[0] - end) / train[0])
    assert finding.evidence["train_decrease"] < 0.05
    assert f"{train[0]:.4g}" in finding.message and f"{end:.4g}" in finding.message
    assert all(flag in finding.message for flag in ADVICE["not_decreasing"])


def test_rising_training_loss_says_so_and_mentions_a_too_high_learning_rate():
    train = [0.1 * (1 + 0.05 * i) for i in range(12)]
    (finding,) = diagnose(train, [])
    assert finding.rule == "not_decreasing" and "rose by" in finding.message
    assert "too high" in finding.message and finding.evidence["train_decrease"] < 0


@pytest.mark.parametrize("seed", range(5))
def test_rising_validation_loss_with_falling_training_loss_is_overfitting(seed):
    n = 30
    train = _curve(n, 0.1, 0.001, 4.0, noise=0.05, seed=seed)
    val = [0.06 + 0.0004 * (i - 6) ** 2 for i in range(n)]  # minimum 0.06 at epoch 6, then rising
    (finding,) = diagnose(train, val)
    assert finding.rule == "overfitting"
    lowest = min(sum(val[i : i + 5]) / 5 for i in range(n - 4))  # the oracle: lowest 5-epoch mean
    assert lowest == sum(val[4:9]) / 5  # epochs 4-8, around the minimum at 6
    assert finding.evidence["val_rise"] == pytest.approx((sum(val[-5:]) / 5) / lowest - 1)
    assert (finding.evidence["val_best_first_epoch"], finding.evidence["val_best_last_epoch"]) == (4, 8)
    assert finding.evidence["train_at_val_best"] == pytest.approx(sum(train[4:9]) / 5)
    assert finding.evidence["train_end"] < finding.evidence["train_at_val_best"]
    assert "epochs 4-8" in finding.message and f"{finding.evidence['val_rise']:.0%}" in finding.message
    assert all(flag in finding.message for flag in ADVICE["overfitting"])


@pytest.mark.parametrize("rise, fires", [(0.19, False), (0.21, True)])
def test_overfitting_fires_at_the_rise_threshold(rise, fires):
    train = [0.1 - 0.003 * i for i in range(20)]
    val = [0.05] * 15 + [0.05 * (1 + rise)] * 5
    assert _rules(diagnose(train, val, overfit_min_rise=0.2)) == (["overfitting"] if fires else [])


def test_rising_validation_loss_with_flat_training_loss_is_not_overfitting():
    # the training loss did not fall after the validation minimum: not the overfitting pattern
    train = [0.1 - 0.01 * i for i in range(6)] + [0.05] * 14
    val = [0.08 - 0.003 * i for i in range(10)] + [0.09] * 10  # lowest at epochs 5-9, where train is flat
    assert diagnose(train, val) == []
    val_early = [0.05] * 5 + [0.09] * 15  # lowest at epochs 0-4, while the training loss was still falling
    assert _rules(diagnose(train, val_early)) == ["overfitting"]


def test_slow_steady_decrease_is_slow_convergence():
    n = 40
    train = _curve(n, 0.104, 0.0, 180.0, noise=0.03, seed=0)  # about 20% down over the run, noisy
    val = [0.09 * (1 - 0.006 * i) for i in range(n)]  # 23% down, falling every epoch
    (finding,) = diagnose(train, val)
    assert finding.rule == "slow_convergence"
    assert finding.evidence["val_steady_share"] == 1.0
    assert 0.05 <= finding.evidence["train_decrease"] < 0.3
    assert finding.evidence["val_decrease"] == pytest.approx(1 - sum(val[-5:]) / 5 / val[0])
    assert all(flag in finding.message for flag in ADVICE["slow_convergence"])


def test_small_decrease_that_then_plateaus_is_not_slow_convergence():
    # 25% down in a few epochs, then flat with noise: converged (a hard data set), not slow
    train = _curve(40, 0.1, 0.075, 2.0, noise=0.05, seed=1)
    val = _curve(40, 0.09, 0.068, 2.0, noise=0.01, seed=2)
    assert diagnose(train, val) == []


# ---- inputs -------------------------------------------------------------------------------------------


def test_epochs_without_validation_are_nan_and_no_validation_is_empty():
    n = 30
    train = _curve(n, 0.1, 0.001, 4.0, noise=0.05, seed=0)
    val = [0.06 + 0.0004 * (i - 6) ** 2 if i % 2 == 0 else math.nan for i in range(n)]  # every 2nd epoch
    assert _rules(diagnose(train, val)) == ["overfitting"]
    assert diagnose(train, []) == []
    assert _rules(diagnose([0.1] * 10, [])) == ["not_decreasing"]


def test_findings_are_frozen_and_named_by_the_rules():
    findings = diagnose([0.1] * 20, [0.05] * 10 + [0.5] * 10)  # a flat training loss is not overfitting
    assert _rules(findings) == ["not_decreasing"] and set(_rules(findings)) <= set(RULES)
    with pytest.raises(AttributeError):
        findings[0].rule = "other"
    assert Finding("overfitting", "m").evidence == {}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"window": 1}, r"`window` must be >= 2, got 1"),
        ({"min_epochs": 3}, r"`min_epochs` must be >= window \(5\), got 3"),
        ({"min_decrease": 0.0}, r"`min_decrease` must be in \(0, 1\), got 0.0"),
        ({"overfit_min_rise": -0.1}, r"`overfit_min_rise` must be > 0, got -0.1"),
        ({"slow_max_decrease": 0.01}, r"`slow_max_decrease` must be in \(min_decrease, 1\), got 0.01"),
        ({"slow_min_steady": 0.5}, r"`slow_min_steady` must be in \(0.5, 1\], got 0.5"),
        ({"patience": 3}, r"unknown diagnostics thresholds \['patience'\]"),
    ],
)
def test_bad_thresholds_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_thresholds(**kwargs)
    with pytest.raises(ValueError, match=match):
        diagnose([0.1] * 10, [0.1] * 10, **kwargs)
    if "patience" not in kwargs:
        with pytest.raises(ValueError, match=match):
            TrainingDiagnostics(**kwargs)


def test_non_int_thresholds_are_type_errors():
    match = r"`window` must be an int, got 2.5"
    with pytest.raises(TypeError, match=match):
        check_thresholds(window=2.5)
    with pytest.raises(TypeError, match=match):
        diagnose([0.1] * 10, [0.1] * 10, window=2.5)
    with pytest.raises(TypeError, match=match):
        TrainingDiagnostics(window=2.5)


def test_curves_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match=r"one value per epoch of `train_loss` \(10\), got 9"):
        diagnose([0.1] * 10, [0.1] * 9)


# ---- the callback in real fits ------------------------------------------------------------------------


def _overfitting_data(n_train=40, noise=0.2, seed=0):
    """40 rows of breast_cancer with 20% of their labels flipped to train on; the other 529 to validate."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    train, val = perm[:n_train], perm[n_train:]
    y_train = y[train].clone()
    flip = torch.rand(n_train, generator=g) < noise
    y_train[flip] = 1 - y_train[flip]
    return (x[train], y_train), (x[val], y[val])


def test_a_run_that_overfits_on_purpose_is_reported(tmp_path, monkeypatch):
    torch.manual_seed(0)
    (x_train, y_train), (x_val, y_val) = _overfitting_data()
    model = FocalMixClassifier(
        num_features=30,
        dropout=0.0,
        mixup_alpha=0.0,
        label_smoothing=0.0,
        learning_rate=1e-2,
        hidden_sizes=(512, 512),
    )
    model.set_normalization(x_train.mean(0), x_train.std(0))
    printed = []
    monkeypatch.setattr(diag, "rank_zero_info", printed.append)
    callback = TrainingDiagnostics()
    logger = CSVLogger(tmp_path, name="diag")
    trainer = quiet_trainer(tmp_path, max_epochs=30, callbacks=[callback], logger=logger)
    trainer.fit(
        model,
        DataLoader(TensorDataset(x_train, y_train), batch_size=8, shuffle=True),
        DataLoader(TensorDataset(x_val, y_val), batch_size=256),
    )
    # one (train, val) pair per epoch, the last one what the trainer holds at the end
    assert len(callback.train_loss) == len(callback.val_loss) == 30
    assert callback.train_loss[-1] == pytest.approx(float(trainer.callback_metrics["train/loss"]))
    assert callback.val_loss[-1] == pytest.approx(float(trainer.callback_metrics["val/loss"]))
    assert "overfitting" in _rules(callback.findings)
    overfit = next(f for f in callback.findings if f.rule == "overfitting")
    # the evidence is the rule applied to the curves the callback recorded, against its own threshold
    w, val = callback.thresholds["window"], callback.val_loss
    windows = [sum(val[i : i + w]) / w for i in range(len(val) - w + 1)]
    best, end = min(windows), windows[-1]
    first = windows.index(best)
    ev = overfit.evidence
    assert ev["val_best"] == pytest.approx(best) and ev["val_end"] == pytest.approx(end)
    assert (ev["val_best_first_epoch"], ev["val_best_last_epoch"]) == (first, first + w - 1)
    assert ev["val_rise"] == pytest.approx(end / best - 1)
    assert ev["val_rise"] >= callback.thresholds["overfit_min_rise"]
    # while the training loss kept falling, by the rule's margin
    assert ev["train_end"] <= ev["train_at_val_best"] * (1 - callback.thresholds["min_decrease"])
    assert any(m.endswith(overfit.message) for m in printed)
    metrics = pd.read_csv(f"{logger.log_dir}/metrics.csv")
    assert metrics["diagnostics/overfitting"].dropna().tolist() == [1.0]
    assert metrics["diagnostics/slow_convergence"].dropna().tolist() == [0.0]


def test_a_healthy_run_of_the_recipe_reports_nothing(tmp_path, monkeypatch):
    from focalmix.data import FocalMixDataModule

    torch.manual_seed(0)
    data = FocalMixDataModule("breast_cancer", batch_size=32)
    model = FocalMixClassifier(num_features=data.num_features, learning_rate=1e-3)
    printed = []
    monkeypatch.setattr(diag, "rank_zero_info", printed.append)
    callback = TrainingDiagnostics()
    trainer = quiet_trainer(tmp_path, max_epochs=10, callbacks=[callback])
    trainer.fit(model, data)
    assert len(callback.train_loss) == 10 and all(map(math.isfinite, callback.train_loss + callback.val_loss))
    assert callback.findings == [] and printed == []


def test_validation_every_other_epoch_and_a_second_fit(tmp_path):
    (x_train, y_train), (x_val, y_val) = _overfitting_data()
    model = FocalMixClassifier(num_features=30, learning_rate=1e-3)
    callback = TrainingDiagnostics()
    train_data, val_data = TensorDataset(x_train, y_train), TensorDataset(x_val, y_val)
    loaders = DataLoader(train_data, batch_size=20), DataLoader(val_data, batch_size=256)
    trainer = quiet_trainer(tmp_path, max_epochs=4, check_val_every_n_epoch=2, callbacks=[callback])
    trainer.fit(model, *loaders)
    assert [math.isnan(v) for v in callback.val_loss] == [True, False, True, False]
    assert callback.findings == []  # 4 epochs < min_epochs
    second = FocalMixClassifier(num_features=30)
    quiet_trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(second, *loaders)
    assert len(callback.train_loss) == len(callback.val_loss) == 2  # reset at each fit
