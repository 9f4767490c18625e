"""Figures and one self-contained ``report.html`` from a model's predictions on held-out rows.

The figures: loss and learning-rate curves (from Lightning's ``CSVLogger`` ``metrics.csv``), ROC and
precision-recall curves with the decision threshold marked, a reliability diagram before and after
calibration with the expected calibration error (ECE, torchmetrics, 15 bins) in the legend, and a
confusion matrix at the decision threshold. Binary tasks also get a threshold table (precision, recall,
false-positive and false-negative rates at about ten thresholds). Every PNG is inlined in the HTML, so the
one file can be mailed or attached to a ticket. matplotlib is an optional extra: ``focalmix[report]``.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from focalmix._checks import Options, Satisfies, check_one
from focalmix.faults import atomic_write
from focalmix.losses import TASKS
from focalmix.metrics import ECE_BINS, calibration_error, epoch_metrics, threshold_counts

_HINT = 'the report needs matplotlib: pip install "focalmix[report]"'


def report_available() -> bool:
    """Whether matplotlib, which the report's figures need, is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def threshold_table(target: Any, probs: Any, threshold: float = 0.5, n: int = 10):
    """Counts and rates at about ``n`` thresholds (quantiles of ``probs``) and at ``threshold``.

    A row is positive when ``probs >= t``, as the model's decision threshold decides. Rates whose
    denominator is 0 (e.g. precision when nothing is flagged) are NaN.

    Args:
        target: (N,) 0/1 labels (array or tensor).
        probs: (N,) predicted probabilities of the positive class.
        threshold: the decision threshold, in [0, 1], always one of the rows. Default: 0.5.
        n: number of quantile thresholds, >= 2. Default: 10.

    Returns:
        A ``pandas.DataFrame`` sorted by ``threshold``, columns ``threshold, precision, recall, fpr, fnr,
        tp, fp, tn, fn``.

    Example:
        >>> t = threshold_table([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], threshold=0.5, n=2)
        >>> t[["threshold", "precision", "recall", "fpr"]].to_numpy().tolist()
        [[0.1, 0.5, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.6, 0.5, 0.5, 0.5]]
    """
    import pandas as pd

    y, p = _binary_arrays(target, probs)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1], got {threshold}.")
    check_one(n, "n", [Satisfies(int, lambda v: v >= 2, "an int >= 2")])
    levels = np.linspace(0.05, 0.95, n) if len(p) else np.zeros(0)
    grid = np.unique(np.r_[np.quantile(p, levels, method="lower") if len(p) else [], float(threshold)])
    counts = threshold_counts(torch.from_numpy(p), torch.from_numpy(y), torch.from_numpy(grid))
    tp, fp, tn, fn = (counts[k].long().numpy() for k in ("tp", "fp", "tn", "fn"))
    with np.errstate(invalid="ignore", divide="ignore"):
        table = {"threshold": grid, "precision": tp / (tp + fp), "recall": tp / (tp + fn)}
        table.update(fpr=fp / (fp + tn), fnr=fn / (tp + fn))
    return pd.DataFrame({**table, "tp": tp, "fp": fp, "tn": tn, "fn": fn})


def write_report(
    out_dir: str | Path,
    *,
    task: str,
    class_names: list[str] | None,
    target: Any,
    probs: Any,
    probs_uncalibrated: Any = None,
    threshold: float | None = None,
    metrics_csv: str | Path | None = None,
    title: str = "focalmix report",
    summary: Mapping[str, Any] | None = None,
    wakeword: Mapping[str, Any] | None = None,
) -> Path:
    """Write the figures as PNGs and ``report.html`` (figures inlined, tables) into ``out_dir``.

    Args:
        out_dir: folder for the files (created).
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        class_names: names of the C classes or labels (binary: 2); None numbers them.
        target: binary (N,) 0/1; multiclass (N,) class indices; multilabel (N, C) 0/1.
        probs: calibrated probabilities: binary (N,) of the positive class, else (N, C).
        probs_uncalibrated: the same before calibration, for the reliability diagram; optional.
        threshold: binary decision threshold in [0, 1]; default 0.5. Ignored for other tasks.
        metrics_csv: a ``CSVLogger`` ``metrics.csv`` for the loss and learning-rate curves; optional.
        title: the page heading.
        summary: metric name -> value, shown as a table at the top; optional.
        wakeword: a wake-word model's table per threshold (``threshold``, ``frr``, ``fa_per_hour``, ...,
            :func:`focalmix.wakeword.fa_frr_table`): adds the FRR against FA/h curve and its table, and
            with ``top_background`` (``file``, ``start_seconds``, ``probability`` per event) a table of
            the highest-scoring background events.

    Returns:
        The path of ``report.html``.

    Raises:
        ModuleNotFoundError: without matplotlib.
        ValueError: for an unknown task, mismatched shapes or a threshold outside [0, 1].
        FileNotFoundError: when ``metrics_csv`` is given but missing.
    """
    check_one(task, "task", [Options(*TASKS)])
    if metrics_csv is not None and not Path(metrics_csv).is_file():
        raise FileNotFoundError(f"`metrics_csv` not found: {metrics_csv}")
    if not report_available():
        raise ModuleNotFoundError(_HINT)
    threshold = 0.5 if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1], got {threshold}.")
    y, p, pu, names = _check_predictions(task, class_names, target, probs, probs_uncalibrated)
    figures = _figures(task, names, y, p, pu, threshold, metrics_csv)
    out_dir = Path(out_dir)
    sections = [f"<h1>{html.escape(title)}</h1>", f"<p>{len(y)} rows, task {task}.</p>"]
    if summary:
        sections.append(_html_table(summary))
    num_classes = 2 if task == "binary" else p.shape[1]
    scores = epoch_metrics(
        p, p if pu is None else pu, y, task, num_classes, names if task == "multiclass" else None
    )
    if pu is None:
        del scores["ece_uncalibrated"]
    sections += ["<h2>Metrics on these rows (calibrated probabilities)</h2>", _html_table(scores)]
    for name, (caption, png) in figures.items():
        with atomic_write(out_dir / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        data = base64.b64encode(png).decode("ascii")
        sections.append(
            f'<h2>{html.escape(caption)}</h2>\n<img src="data:image/png;base64,{data}" alt="{name}">'
        )
    if task == "binary":
        table = threshold_table(y.numpy(), p.numpy(), threshold)
        table.insert(0, "", np.where(table["threshold"] == threshold, "decision", ""))
        sections += [f"<h2>Thresholds (decision threshold {threshold:.4g})</h2>", _frame_html(table)]
    if task == "multilabel":
        sections += ["<h2>Confusion counts per label at 0.5</h2>", _frame_html(_label_counts(names, y, p))]
    if wakeword and task == "binary":
        sections += _wakeword_sections(wakeword, threshold, out_dir)
    page = _PAGE.format(title=html.escape(title), body="\n".join(sections))
    with atomic_write(out_dir / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out_dir / "report.html"


def report_from_model(
    model: Any, datamodule: Any, out_dir: str | Path, metrics_csv: str | Path | None = None
) -> Path:
    """Predict the test rows (the validation rows when there is no test split) and write the report.

    Args:
        model: a fitted ``FocalMixClassifier`` (its training mode is restored afterwards).
        datamodule: the ``FocalMixDataModule`` it was fitted with.
        out_dir: folder for ``report.html`` and the PNGs.
        metrics_csv: the fit's ``CSVLogger`` ``metrics.csv``, for the loss and learning-rate curves.

    Returns:
        The path of ``report.html``.
    """
    if not report_available():
        raise ModuleNotFoundError(_HINT)
    has_test = datamodule.test_source is not None or datamodule.test_fraction > 0
    datamodule.setup("test" if has_test else "validate")
    split = "test" if has_test else "val"
    if hasattr(datamodule, "unsharded_dataloader"):  # under DDP the stage loaders hold one rank's share
        loader = datamodule.unsharded_dataloader(split) if len(datamodule._dataset(split)) else []
    else:
        loader = datamodule.test_dataloader() if has_test else datamodule.val_dataloader()
    if isinstance(loader, list) and not loader:
        raise ValueError("no rows to report on: the datamodule has neither a test nor a validation split.")
    target, probs, raw = _predict(model, loader)
    hp = model.hparams
    rows = "test rows" if has_test else "validation rows (no test split: they also chose the threshold)"
    summary = {"calibration": hp.get("calibration", "none")}
    if hp.task == "binary":
        summary["decision threshold"] = float(model.threshold)
    return write_report(
        out_dir, task=hp.task, class_names=hp.get("class_names") or datamodule.class_names,
        target=target, probs=probs, probs_uncalibrated=raw,
        threshold=float(model.threshold) if hp.task == "binary" else None, metrics_csv=metrics_csv,
        title=f"focalmix report: {rows}", summary=summary, wakeword=getattr(model, "wakeword_table", None),
    )  # fmt: skip


def _predict(model: Any, loader: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    targets, probs, raw = [], [], []
    try:
        with torch.no_grad():
            for batch in loader:  # raw inputs, or a frozen backbone's cached features (media)
                if "features" in batch:
                    logits = model._head_logits(batch["features"].to(device))
                else:
                    logits = model(batch["x"].to(device))
                probs.append(model._to_probs(model.calibrate_logits(logits)).cpu())
                raw.append(model._to_probs(logits).cpu())
                targets.append(batch["y"].cpu())
    finally:
        model.train(was_training)
    return torch.cat(targets), torch.cat(probs), torch.cat(raw)


def _check_predictions(task, class_names, target, probs, probs_uncalibrated):
    y, p = _tensor(target).long(), _tensor(probs).float()
    want_p = 1 if task == "binary" else 2
    want_y = 2 if task == "multilabel" else 1
    shapes_ok = (p.ndim, y.ndim) == (want_p, want_y) and y.shape[0] == p.shape[0]
    if not shapes_ok or (want_y == 2 and y.shape != p.shape):
        raise ValueError(
            f"{task}: `probs` must be {'(N,)' if want_p == 1 else '(N, C)'} and `target` "
            f"{'(N, C)' if want_y == 2 else '(N,)'}, got {tuple(p.shape)} and {tuple(y.shape)}."
        )
    if p.shape[0] == 0:
        raise ValueError("`target` and `probs` hold no rows: there is nothing to report.")
    pu = None if probs_uncalibrated is None else _tensor(probs_uncalibrated).float()
    if pu is not None and pu.shape != p.shape:
        raise ValueError(
            f"`probs_uncalibrated` must be shaped like `probs` {tuple(p.shape)}, got {tuple(pu.shape)}."
        )
    num = 2 if task == "binary" else p.shape[1]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(num)]
    if len(names) != num:
        raise ValueError(f"`class_names` must name {num} classes for this {task} task, got {names}.")
    return y, p, pu, names


def _tensor(values: Any) -> torch.Tensor:
    """A CPU tensor from a tensor (any device, grad or not), an array or a list."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    return torch.as_tensor(np.asarray(values))


def _binary_arrays(target: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p = _tensor(target).numpy(), _tensor(probs).double().numpy()
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"`target` and `probs` must both be (N,), got {y.shape} and {p.shape}.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("`target` must hold 0/1 labels.")
    return y.astype(np.int64), p


# ---- figures ------------------------------------------------------------------------------------------


def _figures(task, names, y, p, pu, threshold, metrics_csv) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, PNG bytes), in page order."""
    out = {}
    if metrics_csv is not None and (fig := _curves_figure(metrics_csv)) is not None:
        out["curves"] = ("Loss and learning rate", _png(fig))
    out["roc_pr"] = ("ROC and precision-recall curves", _png(_roc_pr_figure(task, names, y, p, threshold)))
    out["reliability"] = (f"Reliability diagram ({ECE_BINS} bins)", _png(_reliability_figure(task, y, p, pu)))
    if task != "multilabel":
        caption = f"Confusion matrix at threshold {threshold:.4g}" if task == "binary" else "Confusion matrix"
        out["confusion"] = (caption, _png(_confusion_figure(task, names, y, p, threshold)))
    return out


def _wakeword_sections(table: Mapping[str, Any], threshold: float, out_dir: Path) -> list[str]:
    """FRR against false accepts per hour of background, the decision threshold marked, a table, and the
    highest-scoring background events when the table holds them."""
    import pandas as pd

    frame = pd.DataFrame({k: table[k] for k in ("threshold", "frr", "fa_per_hour")})
    at = frame.iloc[int((frame["threshold"] - threshold).abs().argmin())]
    fig, (ax,) = _new_figure(1)
    ax.plot(frame["fa_per_hour"].clip(lower=1e-2), frame["frr"], marker=".", lw=1)
    ax.plot([max(at["fa_per_hour"], 1e-2)], [at["frr"]], "o", color="C3", label=f"threshold {threshold:.4g}")
    ax.set(xscale="log", xlabel="false accepts per hour (background; 0 shown at 0.01)",
           ylabel="false-reject rate (validation positives)")  # fmt: skip
    ax.legend()
    png = _png(fig)
    with atomic_write(out_dir / "frr_fa.png") as tmp:
        tmp.write_bytes(png)
    hours = table.get("background_hours", float("nan"))
    data = base64.b64encode(png).decode("ascii")
    picks = sorted({int(i) for i in np.linspace(0, len(frame) - 1, 12).round()} | {int(at.name)})
    rows = frame.iloc[picks].assign(decision=lambda f: np.where(f.index == at.name, "decision", ""))
    out = [
        f"<h2>False rejects against false accepts per hour ({hours:.2f} h of background)</h2>",
        f'<img src="data:image/png;base64,{data}" alt="frr_fa">',
        _frame_html(rows.round(4)),
    ]
    if table.get("top_background"):  # what the model takes for the wake word: worth listening to
        shown = {"start_seconds": "{:.2f}".format, "probability": "{:.6f}".format}
        top = pd.DataFrame(table["top_background"]).to_html(index=False, border=0, formatters=shown)
        out += ["<h2>Highest-scoring background events: the likeliest false accepts</h2>", top]
    return out


def _new_figure(ncols: int = 1):
    # A bare Figure renders with Agg and leaves pyplot's global state and the user's backend alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * ncols, 4.4), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _png(fig) -> bytes:
    fig.savefig(buf := io.BytesIO(), format="png", dpi=100)
    return buf.getvalue()


def _curves_figure(metrics_csv: str | Path):
    import pandas as pd

    frame = pd.read_csv(metrics_csv)
    x = next((c for c in ("step", "epoch") if c in frame.columns), None)
    groups = [
        ("loss", [c for c in frame.columns if c.rsplit("/", 1)[-1].startswith("loss")]),
        ("learning rate", [c for c in frame.columns if c.startswith("lr")]),
    ]
    groups = [(label, cols) for label, cols in groups if cols]
    if x is None or not groups:
        return None
    fig, axes = _new_figure(len(groups))
    for ax, (label, cols) in zip(axes, groups, strict=True):
        for col in cols:
            rows = frame[[x, col]].dropna()
            ax.plot(rows[x], rows[col], marker="o" if len(rows) < 30 else None, ms=3, label=col)
        ax.set(xlabel=x, ylabel=label)
        ax.legend(fontsize="small")
    return fig


def _roc_pr_figure(task, names, y, p, threshold):
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    fig, (ax_roc, ax_pr) = _new_figure(2)
    ax_roc.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    for name, yc, pc in _one_vs_rest(task, names, y.numpy(), p.numpy()):
        fpr, tpr, _ = roc_curve(yc, pc)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(yc, pc):.3f})")
        precision, recall, _ = precision_recall_curve(yc, pc)
        ax_pr.plot(
            recall,
            precision,
            drawstyle="steps-post",
            label=f"{name} (AP {average_precision_score(yc, pc):.3f})",
        )
    if task == "binary":
        at = threshold_table(y.numpy(), p.numpy(), threshold, n=2).set_index("threshold").loc[threshold]
        ax_roc.plot(at.fpr, at.recall, "o", c="black", label=f"threshold {threshold:.3g}")
        ax_pr.plot(at.recall, at.precision, "o", c="black", label=f"threshold {threshold:.3g}")
    ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate (recall)", title="ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize="x-small" if len(names) > 4 else "small")
    return fig


def _one_vs_rest(task, names, y, p):
    """(name, 0/1 target, score) per curve; outputs whose rows hold one class only have no curve."""
    if task == "binary":
        pairs = [(names[1], y, p)]
    elif task == "multiclass":
        pairs = [(names[c], (y == c).astype(int), p[:, c]) for c in range(p.shape[1])]
    else:
        pairs = [(names[c], y[:, c], p[:, c]) for c in range(p.shape[1])]
    return [(n, yc, pc) for n, yc, pc in pairs if yc.min() != yc.max()]


def _reliability_figure(task, y, p, pu):
    from sklearn.calibration import calibration_curve

    fig, (ax,) = _new_figure(1)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    for label, probs in (("uncalibrated", pu), ("calibrated", p)):
        if probs is None:
            continue
        if task == "multiclass":  # top-label confidence against accuracy, as torchmetrics' ECE bins it
            conf, hit = probs.max(1).values.numpy(), (probs.argmax(1) == y).long().numpy()
        else:
            conf, hit = probs.reshape(-1).numpy(), y.reshape(-1).numpy()
        observed, predicted = calibration_curve(hit, conf, n_bins=ECE_BINS, pos_label=1)
        ece = float(calibration_error(probs, y, task, probs.shape[-1] if probs.ndim == 2 else 2))
        ax.plot(predicted, observed, "o-", ms=4, label=f"{label} (ECE {ece:.3f})")
    what = "confidence of the top class" if task == "multiclass" else "predicted probability"
    ax.set(xlabel=what, ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize="small", loc="upper left")
    # how many rows each bin holds: a bin of three rows may sit far from the diagonal by chance alone
    rows = ax.twinx()
    rows.hist(conf, bins=ECE_BINS, range=(0, 1), color="C1", alpha=0.15)
    rows.set_ylabel("rows (calibrated)", color="grey")
    ax.set_zorder(rows.get_zorder() + 1)  # the curves in front of the histogram
    ax.patch.set_visible(False)
    return fig


def _confusion_figure(task, names, y, p, threshold):
    from sklearn.metrics import confusion_matrix

    pred = (p >= threshold).long() if task == "binary" else p.argmax(1)
    counts = confusion_matrix(y.numpy(), pred.numpy(), labels=list(range(len(names))))
    fig, (ax,) = _new_figure(1)
    ax.imshow(counts, cmap="Blues")
    for (i, j), v in np.ndenumerate(counts):
        ax.text(j, i, str(v), ha="center", va="center", c="white" if v > counts.max() / 2 else "black")
    ticks = list(range(len(names)))
    ax.set_xticks(ticks, names, rotation=45 if len(names) > 4 else 0)
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="true")
    return fig


# ---- tables and page ----------------------------------------------------------------------------------


def _label_counts(names, y, p):
    import pandas as pd
    from sklearn.metrics import multilabel_confusion_matrix

    cm = multilabel_confusion_matrix(y.numpy(), (p >= 0.5).long().numpy())  # (C, 2, 2): [[tn, fp], [fn, tp]]
    return pd.DataFrame(
        {"label": names, "tn": cm[:, 0, 0], "fp": cm[:, 0, 1], "fn": cm[:, 1, 0], "tp": cm[:, 1, 1]}
    )


def _html_table(rows: Mapping[str, Any]) -> str:
    import pandas as pd

    values = [float(v) if isinstance(v, torch.Tensor) else v for v in rows.values()]
    return _frame_html(pd.DataFrame({"metric": list(rows), "value": values}))


def _frame_html(frame) -> str:
    return frame.to_html(index=False, border=0, na_rep="-", float_format=lambda v: f"{v:.4g}")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}}
img{{max-width:100%}}</style></head>
<body>
{body}
</body></html>
"""
