"""The calibrated binary decision threshold, against scikit-learn's metrics on the same probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from sklearn.metrics import f1_score, precision_score, recall_score, roc_curve

from focalmix import FocalMixClassifier, FocalMixDataModule
from focalmix.callbacks import predictions_frame
from tests.conftest import quiet_trainer

GRID = torch.linspace(0, 1, 201).numpy()  # the grid the model searches, in its float32 values


def _fit(tmp_path, **kwargs):
    seed_everything(0, verbose=False)
    data = FocalMixDataModule("breast_cancer", seed=1)
    model = FocalMixClassifier(
        num_features=data.num_features, class_names=data.class_names, learning_rate=3e-3, **kwargs
    )
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, datamodule=data)
    val = data.val_dataloader()
    model.eval()
    with torch.no_grad():
        probs = torch.cat([model.predict_proba(b["x"]) for b in val]).numpy()
    y = torch.cat([b["y"] for b in val]).numpy().astype(int)
    return model, trainer, data, probs, y


def test_f1_rule_picks_the_best_f1_threshold(tmp_path):
    model, trainer, _, probs, y = _fit(tmp_path)
    f1s = np.array([f1_score(y, probs >= t, zero_division=0) for t in GRID])
    chosen = model.threshold.item()
    assert f1_score(y, probs >= chosen) == pytest.approx(f1s.max())
    metrics = trainer.callback_metrics
    assert metrics["val/threshold"].item() == pytest.approx(chosen)
    assert metrics["val/f1"].item() == pytest.approx(f1s.max(), abs=1e-6)
    assert metrics["val/precision"].item() == pytest.approx(precision_score(y, probs >= chosen), abs=1e-6)
    assert metrics["val/recall"].item() == pytest.approx(recall_score(y, probs >= chosen), abs=1e-6)
    assert 0 <= metrics["val/ece"].item() <= 1


def test_fpr_rule_gives_the_highest_recall_within_max_fpr(tmp_path):
    model, _, _, probs, y = _fit(tmp_path, threshold_metric="fpr", max_fpr=0.02)
    chosen = model.threshold.item()
    pred = probs >= chosen
    fpr = (pred & (y == 0)).sum() / (y == 0).sum()
    assert fpr <= 0.02
    # no grid threshold below the chosen one keeps the FPR within the target (so none has more recall)
    for t in GRID[GRID < chosen - 1e-9]:
        assert ((probs >= t) & (y == 0)).sum() / (y == 0).sum() > 0.02
    fprs, tprs, _ = roc_curve(y, probs)
    assert recall_score(y, pred) <= tprs[fprs <= 0.02].max() + 1e-9


def test_threshold_travels_in_the_checkpoint_and_drives_test_and_predict(tmp_path):
    model, trainer, data, _, _ = _fit(tmp_path)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = FocalMixClassifier.load_from_checkpoint(path)
    assert loaded.threshold.item() == pytest.approx(model.threshold.item())
    (result,) = trainer.test(loaded, datamodule=data, verbose=False)
    assert result["test/threshold"] == pytest.approx(model.threshold.item())
    x, y = zip(*[(b["x"], b["y"]) for b in data.test_dataloader()], strict=True)
    loaded.eval()
    with torch.no_grad():
        probs = loaded.predict_proba(torch.cat(x)).numpy()
    y = torch.cat(y).numpy().astype(int)
    assert result["test/f1"] == pytest.approx(f1_score(y, probs >= model.threshold.item()), abs=1e-6)
    frame = predictions_frame(probs, loaded)
    expected = np.where(probs >= model.threshold.item(), "malignant", "benign")
    assert (frame["prediction"].to_numpy() == expected).all()


def test_threshold_metric_none_keeps_one_half(tmp_path):
    model, *_ = _fit(tmp_path, threshold_metric="none")
    assert model.threshold.item() == 0.5
