"""Every user-facing entry point end to end, with the defaults a user gets.

Each command is `focalmix ...` in a subprocess with only the data, the epochs and output paths set: no
``--trainer.logger false``, no ``--trainer.enable_progress_bar false``, no ``--verbose``, so the console,
the logger and the report run as they do for users (a suite that turned them off stayed green while a
2-process fit hung in the console's end-of-fit summary). The tests assert on what the user sees (one
summary, even under DDP) and gets (checkpoints, report, predictions and their content). Runs are shared
between tests with :func:`tests._run.shared_run` (once per session, across xdist workers); every
subprocess is killed with its whole process tree after a time limit, so a hang fails in minutes.

tests/entrypoints.yaml maps each entry point to its test here; tests/test_suite_quality.py checks it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests._run import check_ok, output_of, run_focalmix, run_torchrun_nodes, shared_folder, shared_run

pytestmark = pytest.mark.slow

# A deadlocked multi-process run is killed after this long (gloo's own timeout is 30 minutes). A 2-process
# fit of this data took 30-70 s here on 2 cores shared with other test workers (most of it importing
# torch and Lightning in each process): about four times that, so a slow, loaded machine does not fail it.
HANG = 300
LIMIT = 300  # one process: no deadlock to expect, only a slow machine
EPOCHS = ["--trainer.max_epochs", "2"]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
METRICS = {"loss", "auroc", "ap", "ece", "ece_uncalibrated", "brier", "threshold", "precision", "recall"}
NEW_ROWS = 101  # rows of new.csv, the file to predict


# ---- data and shared runs ---------------------------------------------------------------------------


def _write_table(folder: Path) -> None:
    """breast_cancer as a user's CSV: an id column, string labels; new.csv: rows to predict, shuffled,
    without the label, columns in another order."""
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer(as_frame=True)
    frame = raw.data.rename(columns=lambda c: c.replace(" ", "_"))
    frame.insert(0, "patient", [f"p{i:03d}" for i in range(len(frame))])
    frame["diagnosis"] = np.where(raw.target == 1, "benign", "malignant")
    frame.to_csv(folder / "train.csv", index=False)
    new = frame.drop(columns="diagnosis").sample(n=NEW_ROWS, random_state=0)
    new[new.columns[::-1]].to_csv(folder / "new.csv", index=False)


@pytest.fixture(scope="session")
def table(tmp_path_factory) -> Path:
    return shared_folder(tmp_path_factory, "table", _write_table)[0]


def _data(table: Path) -> list[str]:
    # absolute paths: the checkpoint records them, and later commands run in other folders
    return [
        "--data.source", str(table / "train.csv"), "--data.target", "diagnosis",
        "--data.id_columns", "[patient]",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def fit_run(tmp_path_factory, table):
    """`focalmix fit` with a test split: the checkpoint the scoring, predict, report and export tests use."""
    args = ["fit", *_data(table), *EPOCHS, "--data.test_fraction", "0.2"]
    return shared_run(tmp_path_factory, "fit", lambda cwd: run_focalmix(args, cwd, LIMIT))


@pytest.fixture(scope="session")
def ddp_fit_run(tmp_path_factory, table):
    args = ["fit", *_data(table), *EPOCHS, "--data.test_fraction", "0.2", *DDP]
    return shared_run(tmp_path_factory, "fit_ddp", lambda cwd: run_focalmix(args, cwd, HANG))


@pytest.fixture(scope="session")
def predict_run(tmp_path_factory, fit_run, table):
    folder, fit = fit_run
    check_ok(fit, "the shared fit")
    args = ["predict", "--ckpt_path", str(_best(folder)), "--data.predict_source", str(table / "new.csv"),
            "--prediction_writer.path", "out/predictions.csv"]  # fmt: skip
    return shared_run(tmp_path_factory, "predict", lambda cwd: run_focalmix(args, cwd, LIMIT))


def _tuner_run(tmp_path_factory, table, flag):
    args = ["fit", *_data(table), *EPOCHS, f"--{flag}", "true"]
    return shared_run(tmp_path_factory, flag, lambda cwd: run_focalmix(args, cwd, LIMIT))


@pytest.fixture(scope="session")
def lr_find_run(tmp_path_factory, table):
    return _tuner_run(tmp_path_factory, table, "lr_find")


@pytest.fixture(scope="session")
def scale_batch_size_run(tmp_path_factory, table):
    return _tuner_run(tmp_path_factory, table, "scale_batch_size")


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory, table):
    """A fit stopped by SIGTERM in its 2nd epoch (as a scheduler preempts it), then resumed."""
    fit = ["fit", *_data(table), *EPOCHS]
    stop = ["--trainer.callbacks+=tests._faults_helpers.SignalMidEpoch", "--trainer.callbacks.epoch", "1",
            "--trainer.callbacks.batch", "2"]  # fmt: skip

    def make(cwd: Path) -> list[subprocess.CompletedProcess]:
        stopped = run_focalmix([*fit, *stop], cwd, LIMIT)
        last = _run_folder(cwd) / "checkpoints" / "last.ckpt"
        state = torch.load(last, weights_only=True) if last.is_file() else {}
        (cwd / "stopped.json").write_text(json.dumps({k: state.get(k) for k in ("epoch", "global_step")}))
        resumed = run_focalmix([*fit, "--ckpt_path", str(last)], cwd, LIMIT)
        return [stopped, resumed]

    return shared_run(tmp_path_factory, "resume", make)


# ---- reading what a user sees -----------------------------------------------------------------------


def _run_folder(cwd: Path, version: int = 0) -> Path:
    return cwd / "lightning_logs" / f"version_{version}"


def _lines(out: str, prefix: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


def _table(out: str, after: str) -> dict[str, dict[str, float]]:
    """The metrics table printed after the line starting with ``after``: {column: {metric: value}}."""
    lines = out[out.index(after) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["metric"])
    columns = lines[start].split()[1:]
    table: dict[str, dict[str, float]] = {c: {} for c in columns}
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) != len(columns) + 1 or line.startswith("focalmix"):
            break
        for column, cell in zip(columns, cells[1:], strict=True):
            table[column][cells[0]] = float(cell)
    return table


def _check_summary(out: str, cwd: Path, columns: list[str]) -> dict[str, dict[str, float]]:
    """One end-of-fit summary (never one per process), with finite metrics for ``columns``."""
    assert len(_lines(out, "focalmix: best checkpoint:")) == 1, out
    assert len(_lines(out, "metric ")) == 1, out  # one table
    assert len(_lines(out, "focalmix: report ")) == 1, out
    table = _table(out, "focalmix: best checkpoint:")
    assert list(table) == columns
    for column in columns:
        assert METRICS <= set(table[column]), table[column]
        assert all(math.isfinite(v) for v in table[column].values())
        assert all(0 <= table[column][m] <= 1 for m in METRICS - {"loss"})
    run = _run_folder(cwd)
    assert _lines(out, "focalmix: run folder ") == [f"focalmix: run folder {run}"] * 2  # at the start and end
    assert [p.name for p in run.parent.iterdir()] == ["version_0"]  # one run folder, not one per process
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "config.yaml", "report/report.html"):
        assert (run / name).is_file(), name
    assert "Traceback" not in out
    return table


def _best(cwd: Path) -> Path:
    return _run_folder(cwd) / "checkpoints" / "best.ckpt"


def _best_score(ckpt: Path) -> float:
    """val/loss of the best epoch, as ModelCheckpoint recorded it when it saved the file."""
    state = torch.load(ckpt, weights_only=True)
    key = "ModelCheckpoint{'monitor': 'val/loss'"
    (score,) = [v["best_model_score"] for k, v in state["callbacks"].items() if k.startswith(key)]
    return float(score)


def _data_rows(out: str) -> dict[str, int]:
    line = _lines(out, "focalmix: data ")[0]
    return {split: int(n) for split, n in re.findall(r"(train|val|test) (\d+)", line)}


# ---- fit --------------------------------------------------------------------------------------------


def test_fit_prints_one_summary_and_writes_the_run(fit_run):
    cwd, proc = fit_run
    out = check_ok(proc, "focalmix fit")
    table = _check_summary(out, cwd, ["val", "test"])
    assert [line.split()[1] for line in _lines(out, "epoch ")] == ["1/2", "2/2"]
    best = _best(cwd)
    state = torch.load(best, weights_only=True)
    (line,) = _lines(out, "focalmix: best checkpoint:")
    assert line.startswith(f"focalmix: best checkpoint: epoch {state['epoch'] + 1} (2 epochs run), {best}")
    # the table scores the best checkpoint: its validation loss is the one the checkpoint was chosen by
    assert table["val"]["loss"] == pytest.approx(_best_score(best), rel=1e-3)
    assert state["hyper_parameters"]["class_names"] == ["benign", "malignant"]
    assert not _lines(out, "focalmix: warning")


def test_fit_with_a_test_split_scores_it_once_with_the_best_weights(fit_run):
    cwd, proc = fit_run
    out = check_ok(proc, "focalmix fit")
    rows = _data_rows(out)
    assert sum(rows.values()) == 569 and rows["test"] == math.ceil(0.2 * 569)  # all of breast_cancer
    assert "no test split" not in out
    table = _table(out, "focalmix: best checkpoint:")
    # report.html: the test rows, with the table's test figures
    html = (_run_folder(cwd) / "report" / "report.html").read_text()
    assert "focalmix report: test rows" in html and f"<p>{rows['test']} rows, task binary.</p>" in html
    auroc = float(re.search(r"<td>auroc</td>\s*<td>([0-9.]+)</td>", html).group(1))
    assert auroc == pytest.approx(table["test"]["auroc"], abs=1e-4)


@pytest.mark.ddp
def test_fit_ddp_two_processes_prints_one_summary(ddp_fit_run, fit_run):
    cwd, proc = ddp_fit_run
    out = check_ok(proc, "focalmix fit (DDP, 2 processes)")
    _check_summary(out, cwd, ["val", "test"])
    assert [line.split()[1] for line in _lines(out, "epoch ")] == ["1/2", "2/2"]
    for prefix in ("focalmix: data ", "focalmix: class balance", "focalmix: model parameters"):
        assert len(_lines(out, prefix)) == 1, prefix
    # two processes: each takes half the training rows, so the effective batch doubles and the steps halve
    train = _data_rows(out)["train"]
    (line,) = _lines(out, "focalmix: effective batch size")
    assert line.startswith(f"focalmix: effective batch size 64, peak learning rate 0.0001 (lr_scaling=none),"
                           f" {2 * math.ceil(math.ceil(train / 2) / 32)} optimizer steps")  # fmt: skip
    single = _lines(output_of(fit_run[1]), "focalmix: effective batch size")
    assert single and f"{2 * math.ceil(train / 32)} optimizer steps" in single[0]
    assert torch.load(_best(cwd).with_name("last.ckpt"), weights_only=True)["global_step"] == int(
        line.split()[-3]
    )


@pytest.mark.ddp
def test_fit_ddp_console_has_no_warnings_a_user_cannot_act_on(ddp_fit_run):
    out = check_ok(ddp_fit_run[1], "focalmix fit (DDP)")
    assert not [line for line in _lines(out, "focalmix: warning") if "sync_dist=True" in line]


@pytest.mark.ddp
def test_fit_torchrun_two_nodes_on_loopback(tmp_path_factory, table):
    args = ["fit", *_data(table), *EPOCHS, "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
            "--trainer.num_nodes", "2", "--trainer.devices", "1"]  # fmt: skip
    cwd, nodes = shared_run(tmp_path_factory, "torchrun", lambda cwd: run_torchrun_nodes(args, cwd, HANG))
    for node in nodes:
        check_ok(node, "torchrun node")
    out = "".join(output_of(node) for node in nodes)  # both nodes' consoles: one summary between them
    _check_summary(out, cwd, ["val"])
    assert "focalmix: effective batch size 64" in out  # 2 processes of batch 32
    assert [line.split()[1] for line in _lines(out, "epoch ")] == ["1/2", "2/2"]


def test_fit_resumes_a_run_stopped_by_sigterm_and_finishes_its_schedule(resumed_run):
    cwd, (stopped, resumed) = resumed_run
    assert stopped.returncode == 143, output_of(stopped)[-3000:]  # 128 + SIGTERM, as a shell reports it
    last = _run_folder(cwd) / "checkpoints" / "last.ckpt"
    assert _lines(output_of(stopped), "focalmix: stopped by SIGTERM") == [
        f"focalmix: stopped by SIGTERM; saved {last} (resume with --ckpt_path)"
    ]
    assert "focalmix: best checkpoint" not in output_of(stopped) and "Traceback" not in output_of(stopped)
    at_stop = json.loads((cwd / "stopped.json").read_text())
    (line,) = _lines(output_of(stopped), "focalmix: effective batch size")
    total = int(line.split()[-3])
    steps_per_epoch = total // 2
    assert at_stop == {"epoch": 1, "global_step": steps_per_epoch + 3}  # after batch 2 of epoch 2
    out = check_ok(resumed, "the resumed fit")
    _check_summary(out, cwd, ["val"])  # into the same run folder: still only version_0
    end = torch.load(last, weights_only=True)
    assert (end["epoch"], end["global_step"]) == (1, total)  # the rest of the schedule, not a new one
    assert "epoch 1/2" not in out  # the finished epoch is not trained again


def test_a_resumed_fit_prints_the_epoch_it_finishes(resumed_run):
    _, (_, resumed) = resumed_run
    assert [line.split()[1] for line in _lines(check_ok(resumed), "epoch ")] == ["2/2"]


def test_a_resumed_fit_keeps_the_metrics_of_the_epochs_before_the_stop(resumed_run):
    cwd, (_, resumed) = resumed_run
    check_ok(resumed)
    metrics = pd.read_csv(_run_folder(cwd) / "metrics.csv")
    assert sorted(metrics.dropna(subset=["val/loss"])["epoch"].astype(int)) == [0, 1]


def test_fit_with_lr_find_trains_with_the_range_tests_rate(lr_find_run):
    cwd, proc = lr_find_run
    out = check_ok(proc, "focalmix fit --lr_find true")
    _check_summary(out, cwd, ["val"])
    (found,) = _lines(out, "focalmix: learning rate ")
    lr = float(re.search(r"--model.learning_rate ([0-9.e+-]+)\)$", found).group(1))
    state = torch.load(_best(cwd), weights_only=True)
    assert state["hyper_parameters"]["learning_rate"] == pytest.approx(lr, rel=1e-2)  # printed with 3 digits
    # the fit's one-cycle peak is the range test's rate (its last line; the range test prints its own)
    peak = _lines(out, "focalmix: effective batch size")[-1]
    assert f"peak learning rate {lr:.3g} " in peak


def test_fit_with_scale_batch_size_trains_with_the_size_found(scale_batch_size_run):
    cwd, proc = scale_batch_size_run
    out = check_ok(proc, "focalmix fit --scale_batch_size true")
    _check_summary(out, cwd, ["val"])
    (found,) = _lines(out, "focalmix: batch size ")
    size = int(re.search(r"--data.batch_size (\d+)\)$", found).group(1))
    state = torch.load(_best(cwd), weights_only=True)
    assert state["datamodule_hyper_parameters"]["batch_size"] == size  # a resume plans the same steps
    train = _data_rows(out)["train"]
    assert _lines(out, "focalmix: effective batch size")[-1].startswith(
        f"focalmix: effective batch size {size}, peak learning rate 0.0001 (lr_scaling=none),"
        f" {2 * math.ceil(train / size)} optimizer steps"
    )


def test_scale_batch_size_stays_within_the_training_rows(scale_batch_size_run):
    out = check_ok(scale_batch_size_run[1])
    (found,) = _lines(out, "focalmix: batch size ")
    assert int(found.split()[3]) <= _data_rows(out)["train"]


def test_tuner_options_print_the_data_summary_once(lr_find_run, scale_batch_size_run):
    for _, proc in (lr_find_run, scale_batch_size_run):
        assert len(_lines(check_ok(proc), "focalmix: data ")) == 1


def test_lr_find_prints_no_terminal_bar_into_a_log(lr_find_run):
    out = check_ok(lr_find_run[1])
    assert "\r" not in out and "Finding best initial lr" not in out


# ---- scoring, predicting, reporting a checkpoint ------------------------------------------------------


def test_validate_scores_the_best_checkpoint_as_fit_did(fit_run, tmp_path):
    cwd, fit = fit_run
    summary = _table(check_ok(fit), "focalmix: best checkpoint:")
    proc = run_focalmix(["validate", "--ckpt_path", str(_best(cwd))], tmp_path, LIMIT)
    out = check_ok(proc, "focalmix validate")
    assert _lines(out, "focalmix: ") == [f"focalmix: {_best(cwd)} scored on the validation rows:"]
    table = _table(out, "focalmix: ")
    assert list(table) == ["val"] and table["val"] == summary["val"]  # the same rows, the same weights
    assert list(tmp_path.iterdir()) == []  # scoring writes no run folder


def test_test_scores_the_test_split_as_fit_did(fit_run, tmp_path):
    cwd, fit = fit_run
    summary = _table(check_ok(fit), "focalmix: best checkpoint:")
    proc = run_focalmix(["test", "--ckpt_path", str(_best(cwd))], tmp_path, LIMIT)
    out = check_ok(proc, "focalmix test")
    assert _lines(out, "focalmix: ") == [f"focalmix: {_best(cwd)} scored on the test rows:"]
    table = _table(out, "focalmix: ")
    assert list(table) == ["test"] and table["test"] == summary["test"]
    assert list(tmp_path.iterdir()) == []


def _check_predictions(path: Path, table: Path) -> pd.DataFrame:
    pred = pd.read_csv(path)
    new = pd.read_csv(table / "new.csv")
    assert list(pred.columns) == ["patient", "prob_benign", "prob_malignant", "prediction"]
    assert pred["patient"].tolist() == new["patient"].tolist()  # every input row once, in input order
    assert pred["patient"].is_unique and len(pred) == NEW_ROWS
    probs = pred[["prob_benign", "prob_malignant"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert set(pred["prediction"]) <= {"benign", "malignant"}
    return pred


def _predicted(predict_run) -> pd.DataFrame:
    """The CSV the shared `focalmix predict` wrote."""
    cwd, proc = predict_run
    check_ok(proc, "the shared focalmix predict")
    return pd.read_csv(cwd / "out" / "predictions.csv")


def test_predict_writes_every_input_row_once(predict_run, fit_run, table):
    cwd, proc = predict_run
    out = check_ok(proc, "focalmix predict")
    path = cwd / "out" / "predictions.csv"
    assert _lines(out, "focalmix: ") == [f"focalmix: wrote {NEW_ROWS} predictions to out/predictions.csv"]
    pred = _check_predictions(path, table)
    threshold = float(torch.load(_best(fit_run[0]), weights_only=True)["state_dict"]["threshold"])
    expected = np.where(pred["prob_malignant"] >= threshold, "malignant", "benign")
    assert (pred["prediction"] == expected).all()  # decided at the checkpoint's threshold
    assert sorted(p.name for p in path.parent.iterdir()) == ["predictions.csv"]  # no part files left


@pytest.mark.ddp
def test_predict_ddp_two_processes_matches_one_process(predict_run, fit_run, table, tmp_path):
    single = _predicted(predict_run)
    args = ["predict", "--ckpt_path", str(_best(fit_run[0])), "--data.predict_source", str(table / "new.csv"),
            "--prediction_writer.path", "predictions.csv", *DDP]  # fmt: skip
    out = check_ok(run_focalmix(args, tmp_path, HANG), "focalmix predict (DDP)")
    assert _lines(out, "focalmix: ") == [f"focalmix: wrote {NEW_ROWS} predictions to predictions.csv"]
    pred = _check_predictions(tmp_path / "predictions.csv", table)
    assert pred["prediction"].tolist() == single["prediction"].tolist()
    np.testing.assert_allclose(pred["prob_malignant"], single["prob_malignant"], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]


def test_report_from_a_checkpoint(fit_run, tmp_path):
    cwd, fit = fit_run
    summary = _table(check_ok(fit), "focalmix: best checkpoint:")
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"  # a copy: the report goes next to its folder
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(_best(cwd).read_bytes())
    out = check_ok(run_focalmix(["report", "--ckpt_path", str(ckpt)], tmp_path, LIMIT), "focalmix report")
    html_path = tmp_path / "run" / "report" / "report.html"
    assert _lines(out, "focalmix: ") == [f"focalmix: report {html_path}"]
    html = html_path.read_text()
    rows = _data_rows(check_ok(fit))["test"]
    assert "focalmix report: test rows" in html and f"<p>{rows} rows, task binary.</p>" in html
    auroc = float(re.search(r"<td>auroc</td>\s*<td>([0-9.]+)</td>", html).group(1))
    assert auroc == pytest.approx(summary["test"]["auroc"], abs=1e-4)
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" alt="(\w+)">', html)
    assert {"roc_pr", "reliability", "confusion"} <= set(images)
    assert {"roc_pr.png", "reliability.png", "confusion.png"} <= {p.name for p in html_path.parent.iterdir()}


def test_tune_two_trials_writes_the_best_trials_config(table, tmp_path):
    args = ["tune", *_data(table), *EPOCHS, "--tune.n_trials", "2", "--tune.output", "study"]
    out = check_ok(run_focalmix(args, tmp_path, LIMIT), "focalmix tune")
    study = tmp_path / "study"
    trials = pd.read_csv(study / "trials.csv")
    assert trials["number"].tolist() == [0, 1] and set(trials["state"]) <= {"complete", "pruned"}
    best = trials.loc[trials["val/auroc"].idxmax()]  # the default metric of a binary task, maximized
    assert len(_lines(out, f"focalmix tune: best trial {best['number']}, val/auroc")) == 1
    config = yaml.safe_load((study / "best.yaml").read_text())
    assert config["seed_everything"] == best["seed"]
    assert config["model"]["learning_rate"] == pytest.approx(best["model.learning_rate"], rel=1e-12)
    assert config["data"]["batch_size"] == best["data.batch_size"]
    assert config["trainer"]["max_epochs"] == 2 and config["data"]["source"] == str(table / "train.csv")
    ckpt = study / f"trial_{best['number']:03d}" / "checkpoints" / "best.ckpt"
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hparams["learning_rate"] == pytest.approx(best["model.learning_rate"], rel=1e-12)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_focalmix_predict(fmt, fit_run, predict_run, table, tmp_path):
    from focalmix.preprocessing import encode_frame

    predicted = _predicted(predict_run)
    out_file = tmp_path / f"model.{fmt}"
    args = ["export", "--ckpt_path", str(_best(fit_run[0])), "--format", fmt, "--output", str(out_file)]
    out = check_ok(run_focalmix(args, tmp_path, LIMIT), "focalmix export")
    sidecar = out_file.with_name(out_file.name + ".json")
    assert _lines(out, "focalmix: ") == [
        f"focalmix: exported {fmt} model to {out_file} (metadata: {sidecar})"
    ]
    meta = json.loads(sidecar.read_text())
    assert meta["class_names"] == ["benign", "malignant"]
    # raw rows of new.csv (other column order, an id column) -> the sidecar's feature spec -> the file
    x = torch.from_numpy(encode_frame(pd.read_csv(table / "new.csv"), meta["features"]))
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out_file), providers=["CPUExecutionProvider"])
        probs = session.run(None, {"x": x.numpy()})[0]
    else:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 deprecates TorchScript
            probs = torch.jit.load(str(out_file))(x).numpy()
    np.testing.assert_allclose(probs, predicted["prob_malignant"], rtol=1e-4, atol=1e-5)
    decided = np.where(probs >= meta["threshold"], "malignant", "benign")
    clear = np.abs(probs - meta["threshold"]) > 1e-4  # a row at the threshold may round either way
    assert clear.mean() > 0.9 and (decided == predicted["prediction"])[clear].all()


# ---- the Python API on the command's checkpoint -------------------------------------------------------


def test_load_from_checkpoint_predicts_as_focalmix_predict(fit_run, predict_run, table, tmp_path):
    from focalmix import FocalMixClassifier, FocalMixDataModule
    from tests.conftest import quiet_trainer

    predicted = _predicted(predict_run)
    model = FocalMixClassifier.load_from_checkpoint(_best(fit_run[0]), map_location="cpu")
    data = FocalMixDataModule(
        str(table / "train.csv"), target="diagnosis", id_columns=["patient"], test_fraction=0.2,
        predict_source=str(table / "new.csv"), preprocessing=model.hparams.preprocessing,
    )  # fmt: skip
    probs = torch.cat(quiet_trainer(tmp_path).predict(model, datamodule=data)).numpy()
    np.testing.assert_allclose(probs, predicted["prob_malignant"], rtol=1e-5, atol=1e-6)


def test_datamodule_rebuilds_the_commands_splits_and_scores(fit_run, tmp_path):
    from focalmix import FocalMixClassifier, FocalMixDataModule
    from tests.conftest import quiet_trainer

    cwd, fit = fit_run
    summary = _table(check_ok(fit), "focalmix: best checkpoint:")
    rows = _data_rows(check_ok(fit))
    state = torch.load(_best(cwd), weights_only=True)
    # the settings the command saved in the checkpoint rebuild its datamodule: the same rows in each split
    settings = {k: v for k, v in state["datamodule_hyper_parameters"].items() if not k.startswith("_")}
    data = FocalMixDataModule(**settings)
    assert {k: len(v) for k, v in data.split_indices.items() if len(v)} == rows
    model = FocalMixClassifier.load_from_checkpoint(_best(cwd), map_location="cpu")
    trainer = quiet_trainer(tmp_path)
    (val,) = trainer.validate(model, datamodule=data, verbose=False)
    (test,) = trainer.test(model, datamodule=data, verbose=False)
    for split, scores in (("val", val), ("test", test)):
        for metric, printed in summary[split].items():
            assert scores[f"{split}/{metric}"] == pytest.approx(printed, rel=5e-4, abs=1e-5), (split, metric)
