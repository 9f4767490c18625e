"""report.py: the threshold table against scikit-learn's curves, valid PNG/HTML files for every task, and a
report from a real fitted model."""

from __future__ import annotations

import base64
import re
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from focalmix import report
from focalmix.data import FocalMixDataModule
from focalmix.module import FocalMixClassifier
from focalmix.report import report_available, threshold_table, write_report
from tests.conftest import quiet_trainer

PNG = b"\x89PNG\r\n\x1a\n"
needs_matplotlib = pytest.mark.skipif(not report_available(), reason="matplotlib is not installed")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _binary(n: int = 200, seed: int = 0):
    z = 2 * torch.randn(n, generator=_gen(seed))
    y = torch.bernoulli(torch.sigmoid(1.5 * z), generator=_gen(seed + 1))
    # rounded, so that many rows tie at one threshold, as real probabilities often do
    return y, torch.round(torch.sigmoid(z) * 50) / 50, torch.sigmoid(z / 2)


def _multiclass(n: int = 150, c: int = 3, seed: int = 0):
    z = 2 * torch.randn(n, c, generator=_gen(seed))
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=_gen(seed + 1)).squeeze(1)
    return y, torch.softmax(z, 1), torch.softmax(z / 3, 1)


def _multilabel(n: int = 150, c: int = 3, seed: int = 0):
    z = 2 * torch.randn(n, c, generator=_gen(seed))
    y = torch.bernoulli(torch.sigmoid(z), generator=_gen(seed + 1)).long()
    return y, torch.sigmoid(z), torch.sigmoid(z / 3)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


# ---- threshold table ----------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.5, 0.37, 0.0, 0.999])
def test_threshold_table_equals_sklearn_curves(threshold):
    y, p, _ = _binary(seed=3)
    y, p = y.numpy(), p.numpy()
    table = threshold_table(y, p, threshold)
    assert threshold in table["threshold"].to_numpy() and table["threshold"].is_monotonic_increasing
    assert 8 <= len(table) <= 11
    precision, recall, pr_thr = precision_recall_curve(y, p)
    fpr, tpr, roc_thr = roc_curve(y, p, drop_intermediate=False)
    for row in table.itertuples():
        # `probs >= t` flags the same rows as `probs >= (the smallest score >= t)`: sklearn's row for t
        above = pr_thr[pr_thr >= row.threshold]
        tn, fp, fn, tp = confusion_matrix(y, p >= row.threshold, labels=[0, 1]).ravel()
        assert (row.tp, row.fp, row.tn, row.fn) == (tp, fp, tn, fn)
        if len(above) == 0:  # above every score: nothing flagged
            assert np.isnan(row.precision) and row.recall == 0 and row.fpr == 0
            continue
        i, j = np.flatnonzero(pr_thr == above.min())[0], np.flatnonzero(roc_thr == above.min())[0]
        assert row.precision == pytest.approx(precision[i], abs=1e-12)
        assert row.recall == pytest.approx(recall[i], abs=1e-12) == pytest.approx(tpr[j], abs=1e-12)
        assert row.fpr == pytest.approx(fpr[j], abs=1e-12)
        assert row.fnr == pytest.approx(1 - tpr[j], abs=1e-12)


def test_threshold_table_accepts_tensors_and_rejects_bad_input():
    y, p, _ = _binary(seed=4)
    a, b = threshold_table(y, p.clone().requires_grad_(), 0.4), threshold_table(y.numpy(), p.numpy(), 0.4)
    assert a.equals(b) and a.equals(threshold_table(y.tolist(), p.tolist(), 0.4))
    with pytest.raises(ValueError, match=r"`threshold` must be in \[0, 1\], got 1.5"):
        threshold_table(y, p, 1.5)
    with pytest.raises(ValueError, match="`n` must be an int >= 2"):
        threshold_table(y, p, 0.5, n=1)
    with pytest.raises(ValueError, match=r"both be \(N,\)"):
        threshold_table(y[:-1], p, 0.5)
    with pytest.raises(ValueError, match="0/1 labels"):
        threshold_table(y * 2, p, 0.5)


# ---- write_report -------------------------------------------------------------------------------------


def _check_files(out, html_path, names):
    assert html_path == out / "report.html"
    pngs = {f.stem: f.read_bytes() for f in out.glob("*.png")}
    assert set(pngs) == set(names)
    assert all(b.startswith(PNG) for b in pngs.values())
    page = _Page()
    text = html_path.read_text(encoding="utf-8")
    page.feed(text)
    page.close()
    assert '<img src="data:image/png;base64,' in text and {"html", "body", "table", "h1"} <= set(page.tags)
    inlined = [base64.b64decode(src.split(",", 1)[1]) for src in page.images]
    assert sorted(inlined) == sorted(pngs.values())  # every figure inlined, byte for byte
    assert not list(out.glob(".*.tmp"))
    return text


def _shown(text: str, label: str) -> float:
    return float(re.search(rf"<td>{re.escape(label)}</td>\s*<td>([^<]+)</td>", text).group(1))


@needs_matplotlib
def test_binary_report(tmp_path):
    y, p, pu = _binary(seed=5)
    out = tmp_path / "r"
    path = write_report(
        out,
        task="binary",
        class_names=["neg", "pos"],
        target=y,
        probs=p,
        probs_uncalibrated=pu,
        threshold=0.42,
        summary={"val/auroc": 0.91},
    )
    text = _check_files(out, path, {"roc_pr", "reliability", "confusion"})
    ece = BinaryCalibrationError(n_bins=15)
    assert _shown(text, "ece") == pytest.approx(float(ece(p, y.long())), rel=1e-3)
    assert _shown(text, "ece_uncalibrated") == pytest.approx(float(ece(pu, y.long())), rel=1e-3)
    assert _shown(text, "auroc") == pytest.approx(roc_auc_score(y, p), rel=1e-3)
    assert _shown(text, "brier") == pytest.approx(brier_score_loss(y, p), rel=1e-3)
    assert _shown(text, "val/auroc") == 0.91
    assert "Thresholds (decision threshold 0.42)" in text and "<td>decision</td>" in text


@needs_matplotlib
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_multiclass_and_multilabel_reports(tmp_path, task):
    y, p, pu = (_multiclass if task == "multiclass" else _multilabel)(seed=6)
    path = write_report(
        tmp_path,
        task=task,
        class_names=["a", "b", "c"],
        target=y,
        probs=p,
        probs_uncalibrated=pu,
        threshold=0.9,
    )
    figures = {"roc_pr", "reliability"} | ({"confusion"} if task == "multiclass" else set())
    text = _check_files(tmp_path, path, figures)
    assert "Thresholds" not in text
    if task == "multiclass":
        ece = MulticlassCalibrationError(num_classes=3, n_bins=15)
        assert _shown(text, "ece") == pytest.approx(float(ece(p, y)), rel=1e-3)
        assert _shown(text, "acc") == pytest.approx(accuracy_score(y, p.argmax(1)), rel=1e-3)
    else:
        assert "Confusion counts per label at 0.5" in text


@needs_matplotlib
def test_loss_and_lr_curves_from_metrics_csv(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,lr-AdamW,train/loss,val/loss,val/auroc\n"
        "0,0,0.001,,,\n0,9,,0.7,0.6,0.8\n1,10,0.002,,,\n1,19,,0.5,0.45,0.9\n"
    )
    y, p, _ = _binary(seed=7)
    _check_files(
        tmp_path,
        write_report(tmp_path, task="binary", class_names=None, target=y, probs=p, metrics_csv=csv),
        {"curves", "roc_pr", "reliability", "confusion"},
    )
    bare = tmp_path / "bare"
    (csv_bare := tmp_path / "bare.csv").write_text("epoch,step,val/auroc\n0,9,0.8\n")
    _check_files(
        bare,
        write_report(bare, task="binary", class_names=None, target=y, probs=p, metrics_csv=csv_bare),
        {"roc_pr", "reliability", "confusion"},
    )


@needs_matplotlib
def test_write_report_rejects_bad_input(tmp_path):
    y, p, _ = _binary(n=20, seed=8)
    ok = dict(task="binary", class_names=None, target=y, probs=p)
    cases = [
        (dict(task="regression"), ValueError, "`task` must be one of"),
        (dict(threshold=1.2), ValueError, r"`threshold` must be in \[0, 1\], got 1.2"),
        (dict(probs=p[:-1]), ValueError, "got \\(19,\\) and \\(20,\\)"),
        (dict(probs_uncalibrated=p[:5]), ValueError, "`probs_uncalibrated` must be shaped like"),
        (dict(class_names=["a", "b", "c"]), ValueError, "must name 2 classes"),
        (dict(target=y[:0], probs=p[:0]), ValueError, "no rows"),
        (dict(metrics_csv=tmp_path / "nope.csv"), FileNotFoundError, "nope.csv"),
    ]
    for change, error, match in cases:
        with pytest.raises(error, match=match):
            write_report(tmp_path / "r", **{**ok, **change})
    assert not (tmp_path / "r" / "report.html").exists()


def test_without_matplotlib_the_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what a missing package looks like to importlib
    assert not report_available()
    y, p, _ = _binary(n=20, seed=9)
    with pytest.raises(ModuleNotFoundError, match=re.escape('pip install "focalmix[report]"')):
        write_report(tmp_path, task="binary", class_names=None, target=y, probs=p)
    with pytest.raises(ModuleNotFoundError, match="focalmix\\[report\\]"):
        report.report_from_model(None, None, tmp_path)


# ---- from a fitted model ------------------------------------------------------------------------------


def _calibration_api():
    return hasattr(FocalMixClassifier, "predict_proba") and hasattr(FocalMixClassifier, "calibrate_logits")


@needs_matplotlib
@pytest.mark.parametrize("test_fraction", [0.0, 0.2])
def test_report_from_a_fitted_model(tmp_path, test_fraction):
    if not _calibration_api():
        pytest.skip("FocalMixClassifier has no predict_proba(calibrated=...) yet (module.py, the lead's)")
    dm = FocalMixDataModule("breast_cancer", test_fraction=test_fraction, batch_size=64)
    model = FocalMixClassifier(num_features=dm.num_features, class_names=dm.class_names, hidden_sizes=(16,))
    logger = CSVLogger(tmp_path, name="logs")
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, logger=logger, callbacks=[LearningRateMonitor()], log_every_n_steps=1
    )
    trainer.fit(model, datamodule=dm)
    model.train()
    csv = tmp_path / "logs" / "version_0" / "metrics.csv"
    path = report.report_from_model(model, dm, tmp_path / "report", metrics_csv=csv)
    assert model.training  # the mode it had is restored
    text = _check_files(tmp_path / "report", path, {"curves", "roc_pr", "reliability", "confusion"})
    rows = "test rows" if test_fraction else "validation rows"
    assert f"focalmix report: {rows}" in text
    n = len(dm.split_indices["test" if test_fraction else "val"])
    assert f"<p>{n} rows, task binary.</p>" in text
    assert f"Thresholds (decision threshold {float(model.threshold):.4g})" in text


@needs_matplotlib
@pytest.mark.filterwarnings("ignore:.*(samples|nan|recall is undefined).*:UserWarning")
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_rows_with_a_class_missing_still_make_a_report(tmp_path, task):
    """A small validation split can miss a class: that class gets no ROC/PR curve, the rest still do."""
    y, p, pu = {"binary": _binary, "multiclass": _multiclass, "multilabel": _multilabel}[task](n=40, seed=10)
    if task == "multilabel":
        y[:, 2] = 0  # label 2 never present
    else:
        y = torch.ones_like(y) if task == "binary" else y.clamp(max=1)  # positives only / no class 2
    path = write_report(tmp_path, task=task, class_names=None, target=y, probs=p, probs_uncalibrated=pu)
    assert path.is_file() and (tmp_path / "roc_pr.png").read_bytes().startswith(PNG)


@needs_matplotlib
def test_a_wake_word_report_shows_frr_against_fa_and_the_windows_that_fire(tmp_path):
    from focalmix import wakeword

    y, p, _ = _binary(seed=7)
    rng = np.random.default_rng(0)
    bg = rng.random(600)
    starts = np.arange(600) * 0.1
    grid = wakeword.threshold_grid()
    table = wakeword.fa_frr_table(p[y == 1].numpy(), bg, starts, 600 * 0.1 / 3600, grid)
    top = np.argsort(-bg)[:3]
    windows = [
        {"file": "talk.wav", "start_seconds": float(starts[i]), "probability": float(bg[i])} for i in top
    ]
    windows[-1]["start_seconds"] = 12345.678  # hours into a long file: shown to the hundredth
    wake = {k: v.tolist() for k, v in table.items()} | {"background_hours": 600 * 0.1 / 3600}
    path = write_report(
        tmp_path, task="binary", class_names=None, target=y, probs=p, threshold=0.9,
        wakeword=wake | {"top_background": windows},
    )  # fmt: skip
    text = _check_files(tmp_path, path, {"roc_pr", "reliability", "confusion", "frr_fa"})
    assert "False rejects against false accepts per hour (0.02 h of background)" in text
    assert "Highest-scoring background events: the likeliest false accepts" in text
    shown = re.findall(r"<td>talk.wav</td>\s*<td>([^<]+)</td>\s*<td>([^<]+)</td>", text)
    expected = [(w["start_seconds"], w["probability"]) for w in windows]
    assert np.allclose([(float(a), float(b)) for a, b in shown], expected, atol=6e-3, rtol=0), (
        shown
    )  # highest first
    plain = write_report(
        tmp_path / "plain", task="binary", class_names=None, target=y, probs=p, wakeword=wake
    )
    assert "Highest-scoring" not in plain.read_text()  # a table from before the windows were kept
