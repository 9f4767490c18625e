"""The console: time-budgeted progress bar, per-epoch lines off a terminal, tables, plain help text."""

from __future__ import annotations

import logging
import warnings

import pytest
from lightning.pytorch import Trainer

from focalmix.console import FocalMixProgressBar, metrics_table, plain, quiet_console
from focalmix.data import FocalMixDataModule
from focalmix.module import FocalMixClassifier


def test_bar_redraws_on_a_time_budget(monkeypatch):
    bar = FocalMixProgressBar(refresh_seconds=0.25)
    now = [100.0]
    monkeypatch.setattr("focalmix.console.time.monotonic", lambda: now[0])
    draws = []
    for step in range(1, 101):  # 100 steps of 10 ms: 1 s of training
        now[0] += 0.01
        draws.append(bar._should_update(step, 100))
    # the first step, then every 25 steps (0.25 s), and always the last one
    assert [i + 1 for i, d in enumerate(draws) if d] == [1, 26, 51, 76, 100]


def test_bad_refresh_is_refused():
    with pytest.raises(ValueError, match="`refresh_seconds` must be > 0, got 0"):
        FocalMixProgressBar(refresh_seconds=0)


def test_one_plain_line_per_epoch_off_a_terminal(tmp_path, capsys):
    data = FocalMixDataModule(source="synthetic", synthetic_rows=64, synthetic_features=4, batch_size=16)
    model = FocalMixClassifier(num_features=4, hidden_sizes=(8,), learning_rate=0.01)
    trainer = Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[FocalMixProgressBar(terminal=False)],
    )
    trainer.fit(model, datamodule=data)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/3", "2/3", "3/3"]
    assert all("val/loss" in ln and "train/loss" in ln for ln in lines)
    assert "\x1b[A" not in out and "\r" not in out


def test_metrics_table_rows_in_order_and_missing_cells():
    table = metrics_table({"val": {"val/auroc": 0.9, "val/loss": 0.1234567}, "test": {"test/auroc": 0.8}})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "val", "test"]
    assert lines[1].split() == ["loss", "0.1235", "-"]
    assert lines[2].split() == ["auroc", "0.9", "0.8"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('``"label"`` column', '"label" column'),
        ("see :func:`~focalmix.losses.focal_loss`", "see focal_loss"),
        (":class:`MLP` default", "MLP default"),
        (":meth:`Trainer.fit <lightning.Trainer.fit>`", "fit"),
    ],
)
def test_plain_drops_rest_markup(text, expected):
    assert plain(text) == expected


def test_quiet_console_keeps_focalmix_lines_and_drops_the_rest(capsys):
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    parent = logging.getLogger("lightning.pytorch")
    parent.addHandler(handler)
    try:
        quiet_console(verbose=False)
        handler.addFilter(next(f for f in parent.filters))  # what quiet_console puts on handlers
        logger.info("GPU available: False, used: False")
        logger.info("focalmix: effective batch size 32")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("No seed found, seed set to 0", UserWarning, stacklevel=1)
            warnings.warn("Something a user can act on\nsecond line", UserWarning, stacklevel=1)
    finally:
        parent.removeHandler(handler)
        quiet_console(verbose=True)
    assert records == ["focalmix: effective batch size 32"]
    err = capsys.readouterr().err
    assert err.strip() == "focalmix: warning: Something a user can act on"
