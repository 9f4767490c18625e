"""The classifier's Evaluator on its own, without a Trainer: gathered rows in, calibration, threshold and
metrics out, each against the functional core (calibration, metrics, wakeword) on the same rows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from focalmix import FocalMixClassifier, wakeword
from focalmix.calibration import apply_calibration, fit_calibration
from focalmix.evaluation import GRID, Decision, Evaluator, probabilities
from focalmix.metrics import METRICS, MINIMIZED, choose_threshold, epoch_metrics, rates, threshold_counts


def _rows(task, num_classes=2, n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    if task == "binary":
        target = torch.randint(0, 2, (n,), generator=g)
        logits = 3 * (target.float() - 0.5) + 1.5 * torch.randn(n, generator=g)  # over-confident, noisy
    elif task == "multiclass":
        target = torch.randint(0, num_classes, (n,), generator=g)
        logits = 4 * torch.nn.functional.one_hot(target, num_classes) + 2 * torch.randn(
            n, num_classes, generator=g
        )
    else:
        target = torch.randint(0, 2, (n, num_classes), generator=g)
        logits = 3 * (target.float() - 0.5) + 1.5 * torch.randn(n, num_classes, generator=g)
    return logits, target


def _decision(task, num_classes=2):
    shape = (num_classes,) if task == "multilabel" else ()
    return Decision(torch.tensor(0.5), torch.ones(shape), torch.zeros(shape))


def _gather(evaluator, stage, logits, target, batch=32):
    for i in range(0, len(logits), batch):  # several batches, as validation_step hands them over
        rows = slice(i, i + batch)
        evaluator.update(stage, logits[rows], target[rows], torch.ones(len(logits[rows])))


@pytest.mark.parametrize("task, num_classes", [("binary", 2), ("multiclass", 4), ("multilabel", 3)])
def test_a_validation_epoch_fits_calibration_then_scores_calibrated_probabilities(task, num_classes):
    logits, target = _rows(task, num_classes)
    evaluator = Evaluator(task, num_classes)
    decision = _decision(task, num_classes)
    _gather(evaluator, "val", logits, target)
    loss, values = evaluator.epoch_end("val", decision, fitting=True)
    # the oracle: the functional core on the same rows, all at once
    scale, bias = fit_calibration(logits, target.float(), task)
    assert_close(decision.scale, scale.reshape(decision.scale.shape))
    assert_close(decision.bias, bias.reshape(decision.bias.shape))
    assert not torch.equal(decision.scale, torch.ones_like(decision.scale))
    probs = probabilities(apply_calibration(logits, decision.scale, decision.bias), task)
    expected = epoch_metrics(probs, probabilities(logits, task), target, task, num_classes)
    if task == "binary":
        grid = torch.linspace(0, 1, GRID)
        threshold = grid[choose_threshold(threshold_counts(probs, target, grid), grid, "f1", 0.05)]
        assert decision.threshold.item() == threshold.item()
        at = threshold_counts(probs, target, threshold.view(1))
        expected |= {k: v[0] for k, v in rates(at).items()} | {"threshold": threshold}
    assert loss.item() == 1.0
    assert list(values) == list(expected)  # the same keys, in the order they are logged
    for key, value in expected.items():
        assert_close(values[key].double(), value.double(), msg=key)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_the_epoch_resets_what_it_gathered_and_only_validation_while_fitting_moves_the_decision():
    logits, target = _rows("binary")
    evaluator, decision = Evaluator("binary", 2), _decision("binary")
    for stage, fitting in (("val", False), ("test", True)):  # the sanity check; a test epoch
        _gather(evaluator, stage, logits, target)
        assert evaluator.epoch_end(stage, decision, fitting=fitting) is not None
        assert decision == _decision("binary")  # threshold 0.5, identity calibration, untouched
    assert evaluator.epoch_end("val", decision, fitting=True) is None  # nothing gathered since


def test_calibration_none_and_threshold_none_keep_the_decision():
    logits, target = _rows("binary")
    evaluator = Evaluator("binary", 2, calibration="none", threshold_metric="none")
    decision = _decision("binary")
    _gather(evaluator, "val", logits, target)
    _, values = evaluator.epoch_end("val", decision, fitting=True)
    assert decision == _decision("binary")
    assert values["threshold"].item() == 0.5 and values["ece"] == values["ece_uncalibrated"]


def test_fpr_rule_keeps_the_false_positive_rate_within_the_target():
    logits, target = _rows("binary", seed=3)
    evaluator = Evaluator("binary", 2, threshold_metric="fpr", max_fpr=0.1)
    _gather(evaluator, "val", logits, target)
    _, values = evaluator.epoch_end("val", _decision("binary"), fitting=True)
    assert values["fpr"].item() <= 0.1


def test_multiclass_probability_targets_become_class_indices_and_class_names_key_the_recalls():
    logits, target = _rows("multiclass", 3)
    evaluator = Evaluator("multiclass", 3, class_names=["cat", "dog", "eel"])
    evaluator.update("val", logits, torch.nn.functional.one_hot(target, 3).float(), torch.ones(len(target)))
    _, values = evaluator.epoch_end("val", _decision("multiclass"), fitting=False)
    reference = Evaluator("multiclass", 3)  # class indices, classes numbered
    reference.update("val", logits, target, torch.ones(len(target)))
    _, numbered = reference.epoch_end("val", _decision("multiclass"), fitting=False)
    assert {k for k in values if k.startswith("recall/")} == {"recall/cat", "recall/dog", "recall/eel"}
    assert values["recall/dog"] == numbered["recall/1"] and values["auroc"] == numbered["auroc"]


@pytest.mark.parametrize("task, num_classes", [("binary", 2), ("multiclass", 4), ("multilabel", 3)])
def test_metrics_names_what_an_epoch_logs(task, num_classes):
    logits, target = _rows(task, num_classes)
    evaluator = Evaluator(task, num_classes)
    _gather(evaluator, "val", logits, target)
    _, values = evaluator.epoch_end("val", _decision(task, num_classes), fitting=True)
    scores = {"loss", *values} - {"threshold"} - {k for k in values if k.startswith("recall/")}
    assert scores == set(METRICS[task])
    assert set(MINIMIZED) <= {n for names in METRICS.values() for n in names} | {"frr", "fa_per_hour"}


def _background(seed=1, windows=400):
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(windows, generator=g) - 1.0
    half = windows // 2
    settings = {
        "starts": np.r_[np.arange(half), np.arange(half)] * 0.1,
        "file_ids": np.repeat([0, 1], half),
        "hours": windows * 0.1 / 3600,
        "files": ["a.wav", "b.wav"],
        "hop_seconds": 0.1,
        "refractory_seconds": 1.0,
    }
    return logits, settings


@pytest.mark.parametrize("rule", ["fa_per_hour", "f1"])
def test_wake_word_epochs_choose_by_false_accepts_per_hour_and_keep_the_table(rule):
    logits, target = _rows("binary")
    bg_logits, bg = _background()
    evaluator = Evaluator("binary", 2, threshold_metric=rule, max_fa_per_hour=500.0)
    decision = _decision("binary")
    _gather(evaluator, "val", logits, target)
    _, values = evaluator.epoch_end("val", decision, fitting=True, background=lambda: (bg_logits, bg))
    # the oracle: the wakeword module on the calibrated probabilities of the same rows and windows
    probs = probabilities(apply_calibration(logits, decision.scale, decision.bias), "binary")
    bg_probs = probabilities(apply_calibration(bg_logits, decision.scale, decision.bias), "binary")

    def table(thresholds):
        return wakeword.fa_frr_table(
            probs[target == 1].numpy(), bg_probs.numpy(), bg["starts"], bg["hours"], thresholds,
            refractory_seconds=bg["refractory_seconds"], file_ids=bg["file_ids"],
        )  # fmt: skip

    grid = wakeword.threshold_grid()
    full = table(grid)
    if rule == "fa_per_hour":
        assert decision.threshold.item() == pytest.approx(grid[wakeword.choose_threshold(full, 500.0)])
        assert values["fa_per_hour"].item() <= 500.0
    one = table(np.array([decision.threshold.item()]))
    assert values["frr"].item() == pytest.approx(one["frr"][0])
    assert values["fa_per_hour"].item() == pytest.approx(one["fa_per_hour"][0])
    kept = evaluator.wakeword_table
    assert kept["threshold"] == full["threshold"].tolist() and kept["frr"] == full["frr"].tolist()
    assert kept["background_files"] == ["a.wav", "b.wav"] and kept["refractory_seconds"] == 1.0
    # the 10 highest events' peaks: what they must be, not how they are found
    top, p = kept["top_background"], bg_probs.numpy()
    window = {
        (bg["files"][f], round(float(t), 3)): float(q)
        for f, t, q in zip(bg["file_ids"], bg["starts"], p, strict=True)
    }
    assert len(top) == 10 and top[0]["probability"] == pytest.approx(p.max())
    assert [w["probability"] for w in top] == sorted((w["probability"] for w in top), reverse=True)
    assert all(window[w["file"], w["start_seconds"]] == pytest.approx(w["probability"]) for w in top)
    for a, b in itertools.combinations(top, 2):  # one peak per event: apart by the refractory time
        assert a["file"] != b["file"] or abs(a["start_seconds"] - b["start_seconds"]) >= 1.0 - 1e-9
    for (file, start), q in window.items():  # any window above the 10th peak is inside a higher event
        if q > top[-1]["probability"] and not any(
            w["file"] == file and w["start_seconds"] == start for w in top
        ):
            assert any(
                w["file"] == file and abs(w["start_seconds"] - start) < 1.0 and w["probability"] >= q
                for w in top
            ), (file, start, q)


def test_fa_per_hour_without_background_is_a_clear_error_while_fitting():
    logits, target = _rows("binary")
    evaluator = Evaluator("binary", 2, threshold_metric="fa_per_hour")
    _gather(evaluator, "val", logits, target)
    with pytest.raises(ValueError, match="needs background audio"):
        evaluator.epoch_end("val", _decision("binary"), fitting=True, background=lambda: None)


def test_the_classifier_owns_an_evaluator_outside_its_checkpoint():
    model = FocalMixClassifier(num_features=3, task="multilabel", num_classes=2, calibration="platt")
    assert not any(key.startswith("evaluator") for key in model.state_dict())  # the checkpoint as before
    assert model.val_logits is model.evaluator.val_logits and model.test_loss is model.evaluator.test_loss
    model.wakeword_table = {"threshold": [0.5]}  # read and written through the classifier, as before
    assert model.evaluator.wakeword_table == {"threshold": [0.5]}
    assert model._calibration_method() == model.evaluator.calibration_method == "platt"
    assert model.evaluator.task == "multilabel" and model.evaluator.num_classes == 2
