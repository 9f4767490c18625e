"""What ``focalmix`` prints: a quiet console, a time-budgeted progress bar, the data and result summaries.

* :func:`quiet_console` keeps Lightning's informational lines and the warnings a user cannot act on off
  the screen (seed, GPU/TPU, TensorBoard, ``log_every_n_steps``, dirpath, model summary table); focalmix's
  own lines (``focalmix: ...``) stay. Any other warning is shown as one ``focalmix: warning:`` line.
* :class:`FocalMixProgressBar` is Lightning's tqdm bar refreshed on a time budget instead of every step;
  when stdout is not a terminal it prints one plain line per epoch instead.
* :class:`ConsoleSummary` prints the data summary, a one-line model summary and the run folder.
* :func:`metrics_table` formats the end-of-fit and test tables.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

# Warnings nobody can act on from the command line (matched against the start of the message).
_DROPPED_WARNINGS = (
    r"No seed found",
    r"Starting from v1\.9\.0, `tensorboardX`",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"The dirpath has changed",
    r"Checkpoint directory .* exists and is not empty",
    r"You have multiple `ModelCheckpoint` callback states",
    r".*does not have many workers",
    r".*isinstance.treespec, LeafSpec",
    r"The `srun` command is available",
    r"You called `self.log\(.*on_epoch=True",
)
_DROPPED = re.compile("|".join(f"(?:{p})" for p in _DROPPED_WARNINGS), re.DOTALL)
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


class _FocalmixLinesOnly(logging.Filter):
    """Lets warnings and errors through, and of the informational lines only focalmix's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.getMessage().startswith("focalmix")


_FILTER = _FocalmixLinesOnly()
_original_showwarning = warnings.showwarning


def _showwarning(
    message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
):
    text = str(message).strip()
    if _DROPPED.match(text):
        return
    # One line, without the `path:NN:` prefix: the path is Lightning's, the remedy is in the message.
    first = text.splitlines()[0] if text else category.__name__
    print(f"focalmix: warning: {first}", file=sys.stderr if file is None else file)


def quiet_console(verbose: bool = False) -> None:
    """Keep Lightning's informational lines and unactionable warnings off the console (idempotent).

    Args:
        verbose: True restores Lightning's own output (every log line and warning, as it prints them).
    """
    # Batches are whole tensors sliced in the main process: worker processes would only add overhead.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if verbose:
                target.removeFilter(_FILTER)
            elif _FILTER not in target.filters:
                target.addFilter(_FILTER)
    # children log through their parents' handlers; a logger's own filter only sees its own records
    for name in ("lightning.fabric.utilities.seed", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if verbose:
            logger.removeFilter(_FILTER)
        elif _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    global _original_showwarning
    if verbose:
        if warnings.showwarning is _showwarning:
            warnings.showwarning = _original_showwarning
    elif warnings.showwarning is not _showwarning:
        _original_showwarning, warnings.showwarning = warnings.showwarning, _showwarning


def _is_terminal() -> bool:
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


class FocalMixProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, redrawn at most ``1 / refresh_seconds`` times per second.

    Redrawing on every step costs as much as a step of a small MLP; a time budget keeps the bar live
    while it costs nothing measurable. When stdout is not a terminal (a log file, a pipe, CI) the bars
    are off and each epoch prints one line: ``epoch 3/100  train/loss 0.081  val/loss 0.0419 ...``.

    Args:
        refresh_seconds: least time between two redraws, > 0. Default: 0.25 (4 per second).
        terminal: force the bar (True) or the per-epoch lines (False); None: ``sys.stdout.isatty()``.

    Example:
        >>> FocalMixProgressBar(refresh_seconds=0.5).refresh_seconds
        0.5
    """

    def __init__(self, refresh_seconds: float = 0.25, terminal: bool | None = None, **kwargs: Any) -> None:
        if not refresh_seconds > 0:
            raise ValueError(f"`refresh_seconds` must be > 0, got {refresh_seconds}.")
        super().__init__(**kwargs)
        self.refresh_seconds = refresh_seconds
        self.terminal = terminal
        self._last_draw = 0.0
        self._lines = False
        self._pending: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._lines = self.plain_lines() and self.is_enabled
        if self._lines:
            self.disable()

    def plain_lines(self) -> bool:
        """True when stdout is not a terminal (or ``terminal=False``): one plain line per epoch, no bars."""
        return not (_is_terminal() if self.terminal is None else self.terminal)

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self._last_draw >= self.refresh_seconds:
            self._last_draw = now
            return True
        return False

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    # The module logs train/loss in its own on_train_epoch_end, which runs after the callbacks' hook: the
    # line for an epoch is printed when the next one starts, or when training ends.
    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._flush(trainer)
        super().on_train_epoch_start(trainer, *args)
        self._pending = trainer.current_epoch
        if self.is_enabled:  # counted from 1 of max_epochs, as the per-epoch lines and the summary count
            self.train_progress_bar.set_description(f"Epoch {_epoch_of(trainer, trainer.current_epoch)}")

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # a fit resumed mid-epoch starts in a batch: Lightning skips that epoch's on_train_epoch_start
        if self._pending is None:
            self._pending = trainer.current_epoch
        super().on_train_batch_start(trainer, *args)

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._flush(trainer)
        super().on_train_end(trainer, *args)

    def _flush(self, trainer: pl.Trainer) -> None:
        if not self._lines or self._pending is None or not trainer.is_global_zero:
            return
        epoch, self._pending = self._pending, None
        metrics = {k: v for k, v in trainer.progress_bar_metrics.items() if k != "v_num"}
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        print(f"epoch {_epoch_of(trainer, epoch)}  {shown}".rstrip(), flush=True)


def _epoch_of(trainer: pl.Trainer, epoch: int) -> str:
    """``"3/100"``: the 0-based ``epoch`` counted from 1, of ``max_epochs`` ("?" when unbounded)."""
    total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
    return f"{epoch + 1}/{total}"


def _fmt(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{value:.4g}"


def _count(n: int) -> str:
    for unit, size in (("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


class ConsoleSummary(Callback):
    """Prints what a user needs at the start of a fit: the data, the model's size and the run folder.

    Replaces Lightning's model summary table (which lists metric objects and FLOPs) with one line.
    """

    def __init__(self) -> None:
        self._summarized = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # once: --lr_find / --scale_batch_size run the Tuner's fits before the fit, each calling setup
        first = stage == "fit" and not self._summarized
        if first and trainer.is_global_zero and trainer.datamodule is not None:
            self._summarized = True
            for line in data_summary(trainer.datamodule, pl_module):
                print(line)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        parts = []
        for name in ("backbone", "head"):
            part = getattr(pl_module, name, None)
            if part is not None:
                n = sum(p.numel() for p in part.parameters())
                parts.append(f"{name} {type(part).__name__} {_count(n)}")
        if parts:
            print(f"focalmix: model parameters: {', '.join(parts)}")
        print(f"focalmix: run folder {run_folder(trainer)}")


def run_folder(trainer: pl.Trainer) -> str:
    """The folder a fit writes to: the logger's version folder, else the checkpoints' parent.

    Read from the first logger on this rank, never through ``Trainer.log_dir``: that property broadcasts
    from rank 0, a collective, and the console asks only on rank 0 (a DDP fit hung there).
    """
    ckpt = trainer.checkpoint_callback
    if trainer.loggers:
        logger = trainer.loggers[0]  # what Trainer.log_dir reads, without its broadcast
        folder = logger.log_dir if isinstance(logger, CSVLogger | TensorBoardLogger) else logger.save_dir
        return str(folder or trainer.default_root_dir)
    if ckpt is not None and getattr(ckpt, "dirpath", None):
        return str(Path(ckpt.dirpath).parent)
    return str(trainer.default_root_dir)


def data_summary(datamodule: Any, model: Any = None) -> list[str]:
    """Lines describing the fit's data: source, task, features, rows per split, training class balance.

    Binary tasks name the positive class; multiclass tasks with a class under 10% of the training rows get
    a hint towards ``--model.focal_alpha auto`` unless ``model`` (the module, optional) already weights
    classes or the data is sampled balanced. A datamodule's optional ``summary_lines()`` hook adds lines
    of its own (e.g. a media source and its feature cache), any datamodule's.
    """
    lines = _focalmix_data_lines(datamodule, model)
    hook = getattr(datamodule, "summary_lines", None)
    if callable(hook):
        lines += [ln if ln.startswith("focalmix") else f"focalmix: {ln}" for ln in hook() or []]
    return lines


_SHOWN_CLASSES = 8  # classes listed on the class-balance line; the rest are counted
SMALL_CLASS = 0.10  # a multiclass class under this share of the training rows gets the focal_alpha hint


def _focalmix_data_lines(datamodule: Any, model: Any) -> list[str]:
    try:
        splits = {k: len(v) for k, v in datamodule.split_indices.items()}
        counts = list(datamodule.class_counts)
        names = list(datamodule.class_names)
        source, task = datamodule.source, datamodule.task
    except (AttributeError, TypeError):  # a datamodule other than ours
        return []
    if datamodule.test_source is not None:
        test = f"test from {datamodule.test_source}"
    elif splits.get("test"):
        test = f"test {splits['test']}"
    else:
        test = "no test split"
    rows = f"train {splits.get('train', 0)}, val {splits.get('val', 0)}, {test}"
    total = splits.get("train", 0) or 1
    kind = "positives per label" if task == "multilabel" else "training rows"
    shares = [(str(n), c, 100 * c / total) for n, c in zip(names, counts, strict=False)]
    balance = ", ".join(f"{n} {c} ({pct:.1f}%)" for n, c, pct in shares[:_SHOWN_CLASSES])
    if len(shares) > _SHOWN_CLASSES:
        balance += f", ... {len(shares) - _SHOWN_CLASSES} more"
    width = getattr(datamodule, "num_features", None)
    features = f" {width} features," if width is not None else ""  # media: the backbone's input
    lines = [
        f"focalmix: data {source}: {task},{features} {len(names)} classes; rows: {rows}",
        f"focalmix: class balance ({kind}): {balance}",
    ]
    if task == "binary" and len(shares) == 2:
        lines.append(
            f"focalmix: positive class: {shares[1][0]} ({shares[1][2]:.1f}% of training rows); precision,"
            " recall, F1 and the threshold are about it (--data.positive_class LABEL picks another)"
        )
    alpha = _focal_alpha(model)
    if task == "multiclass" and not (getattr(datamodule, "balanced_sampling", False) or alpha is None):
        small = sorted((s for s in shares if s[2] < 100 * SMALL_CLASS), key=lambda s: s[2])
        if small:
            which = ", ".join(f"{n} ({pct:.1f}%)" for n, _, pct in small[:3])
            which += f", ... {len(small) - 3} more" if len(small) > 3 else ""
            kind = _plural(len(small), "class", "classes")
            lines.append(
                f"focalmix: hint: small {kind} {which}: with equal class weights (focal_alpha {alpha}) a"
                " small class may never be predicted; try --model.focal_alpha auto"
                " (or --data.balanced_sampling true)"
            )
    return lines


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _focal_alpha(model: Any) -> Any:
    """The model's scalar ``focal_alpha`` (one weight for every class), or None when it weights classes."""
    hparams = getattr(model, "hparams", None)
    alpha = hparams.get("focal_alpha", 0.5) if hparams is not None else 0.5
    if alpha == "auto" or isinstance(alpha, list | tuple):
        return None
    return "null" if alpha is None else alpha  # null: no weighting, equal weights too


# Rows of the result tables, in order, with the names the module logs (`val/<name>`, `test/<name>`).
_ROWS = (
    "loss",
    "auroc",
    "ap",
    "ece",
    "ece_uncalibrated",
    "brier",
    "threshold",
    "precision",
    "recall",
    "f1",
    "fpr",
    "frr",  # wake words: false-reject rate and false accepts per hour of background at the threshold
    "fa_per_hour",
    "acc",
)


def metrics_table(columns: Mapping[str, Mapping[str, Any]], positive: str | None = None) -> str:
    """A compact table: one row per metric, one column per split (``{"val": {"val/auroc": 0.9}, ...}``).

    Per-class rows (``recall/<class>``, multiclass) follow the others. ``positive``: a binary task's
    positive class, named on a line heading the table (the columns stay one word each, for parsers).

    Example:
        >>> val, test = {"val/loss": 0.0412, "val/auroc": 0.99}, {"test/loss": 0.05}
        >>> print(metrics_table({"val": val, "test": test}, positive="bad"))
        (positive class: bad; precision, recall, F1, FPR and the threshold are about it)
        metric            val       test
        loss              0.0412    0.05
        auroc             0.99      -
    """
    names: list[str] = []
    for prefix, values in columns.items():
        for key in values:
            name = key.split("/", 1)[1] if key.startswith(f"{prefix}/") else None
            if name is not None and name not in names and (name in _ROWS or name.startswith("recall/")):
                names.append(name)
    order = {name: i for i, name in enumerate(names)}
    names.sort(key=lambda n: (_ROWS.index(n), 0) if n in _ROWS else (len(_ROWS), order[n]))
    width = max([18, *(len(n) + 2 for n in names)])
    lines = (
        []
        if positive is None
        else [f"(positive class: {positive}; precision, recall, F1, FPR and the threshold are about it)"]
    )
    lines.append(("metric".ljust(width) + "".join(c.ljust(10) for c in columns)).rstrip())
    for name in names:
        cells = [_fmt(v[f"{p}/{name}"]) if f"{p}/{name}" in v else "-" for p, v in columns.items()]
        lines.append(name.ljust(width) + "".join(c.ljust(10) for c in cells).rstrip())
    return "\n".join(lines)


_REST = (
    (re.compile(r":(?:func|class|meth|attr|mod|obj|data|exc|ref):`~?([^`<]*?)(?: <[^>]*>)?`"), None),
    (re.compile(r"``([^`]*)``"), r"\1"),
)


def plain(text: str) -> str:
    """Docstring reST markup as plain text (``x`` -> x, :func:`~a.b` -> b).

    Example:
        >>> plain('see :func:`~focalmix.losses.focal_loss` and ``"label"``')
        'see focal_loss and "label"'
    """
    text = _REST[0][0].sub(lambda m: m.group(1).rsplit(".", 1)[-1], text or "")
    return _REST[1][0].sub(r"\1", text)
