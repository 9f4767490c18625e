"""Bad input through the real `focalmix` command: one short message naming the culprit, exit code 2.

Each case is a subprocess (the way users meet these errors); they run a few at a time so the file stays
well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

# (arguments, what the message must name). {dir} is the case's working folder with the files below.
CASES = [
    (["fit", "--model.learning_rat", "0.1"], ["--model.learning_rat", "--model.learning_rate"]),
    (["fit", "--model.learning_rat=0.1"], ["--model.learning_rat"]),  # no prefix matching either
    (["fitt"], ["fitt", "fit"]),
    (["fit", "--model.learning_rate", "abc"], ["--model.learning_rate", "abc"]),
    (["fit", "--model.anneal_strategy", "sin"], ["--model.anneal_strategy", "sin"]),
    (["fit", "--model.focal_alpha", "1.5"], ["--model.focal_alpha", "1.5"]),
    (["fit", "--model.dropout", "1.5"], ["--model.dropout"]),
    (["fit", "--data.batch_size", "0"], ["--data.batch_size"]),
    (["fit", "--data.eval_batch_size", "0"], ["--data.eval_batch_size"]),
    (["fit", "--model.head_type", "temporal"], ["--model.head_type", "frame_size"]),
    (["fit", "--data.val_fraction", "1.5"], ["val_fraction"]),
    (["fit", "--preset", "fastt"], ["fastt", "fast"]),
    (["fit", "--config", "missing.yaml"], ["missing.yaml"]),
    (["fit", "--trainer.max_epochs", "0"], ["--trainer.max_epochs"]),
    (["fit", "--trainer.max_steps", "0"], ["--trainer.max_steps"]),
    (["fit", "--trainer.accelerator", "tpux"], ["accelerator", "tpux"]),
    (["fit", "--data.source", "missing.csv"], ["missing.csv"]),
    (["fit", "--data.source", "table.csv", "--data.target", "outcome"], ["outcome"]),
    (["fit", "--data.source", "empty.csv"], ["empty.csv"]),
    (["test"], ["--ckpt_path"]),
    (["test", "--ckpt_path", "nowhere.ckpt"], ["nowhere.ckpt"]),
    (["validate", "--ckpt_path", "truncated.ckpt"], ["truncated.ckpt"]),
    (["predict", "--ckpt_path", "other_model.ckpt"], ["other_model.ckpt", "not a focalmix checkpoint"]),
    (["report", "--ckpt_path", "truncated.ckpt"], ["truncated.ckpt"]),
    (["fit", "--model.lr", "0.1"], ["--model.lr", "did you mean --model.learning_rate?"]),  # initials
    (["fit", "--data.source", "price.csv", "--data.target", "price"], ["'price' looks continuous"]),
]


def _files(folder: Path) -> None:
    rows = ["a,b,label"] + [f"{i},{i % 3},{i % 2}" for i in range(40)]
    (folder / "table.csv").write_text("\n".join(rows) + "\n")
    (folder / "empty.csv").write_text("a,b,label\n")
    (folder / "price.csv").write_text(
        "\n".join(["rooms,price"] + [f"{i % 5},{1000 + 7 * i}" for i in range(80)]) + "\n"
    )
    torch.save(
        {"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {"lr": 0.1}}, folder / "other_model.ckpt"
    )
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, folder / "whole.ckpt")
    data = (folder / "whole.ckpt").read_bytes()
    (folder / "truncated.ckpt").write_bytes(data[: len(data) // 2])


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FOCALMIX_DEBUG": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "focalmix", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


# Runs every case through focalmix.cli.main() in one fresh interpreter (importing torch and Lightning once
# instead of 22 times), capturing each case's stderr and exit code as the shell would see them.
_IN_ONE_PROCESS = """
import contextlib, io, json, sys
from focalmix.cli import main
out = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # what the shell would show as a traceback
            code, _ = 1, err.write("Traceback (uncaught) " + repr(exc))
    out.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(out))
"""


def _problems(args: list[str], names: list[str], code: int, err: str) -> list[str]:
    err = err.strip()
    problems = [
        f"exit code {code}" if code != 2 else "",
        f"{len(err.splitlines())} lines" if len(err.splitlines()) > 5 else "",
        "a traceback" if "Traceback" in err else "",
        "no `focalmix: error:`" if not err.startswith("focalmix: error: ") else "",
        *(f"{name!r} not named" for name in names if name not in err),
    ]
    problems = [p for p in problems if p]
    return [f"focalmix {' '.join(args)}: {', '.join(problems)}\n{err[-1500:]}"] if problems else []


def test_each_bad_input_is_one_short_message(tmp_path):
    _files(tmp_path)
    env = {**os.environ, "FOCALMIX_DEBUG": "0", "OMP_NUM_THREADS": "1"}
    cases = json.dumps([args for args, _ in CASES])
    proc = subprocess.run(
        [sys.executable, "-c", _IN_ONE_PROCESS, cases],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    failures = []
    for (args, names), result in zip(CASES, results, strict=True):
        failures += _problems(args, names, result["code"], result["stderr"])
    assert not failures, "\n\n".join(failures)
    assert not (tmp_path / "lightning_logs").exists()  # nothing half-started


@pytest.mark.parametrize("group", [0, 1])
def test_the_real_command_exits_2_with_one_line(tmp_path, group):
    """A few of the cases as separate `python -m focalmix` processes, two at a time."""
    _files(tmp_path)
    picked = [CASES[i] for i in ((0, 5, 11), (14, 17, 19))[group]]
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = list(pool.map(lambda case: _run(case[0], tmp_path), picked))
    failures = []
    for (args, names), proc in zip(picked, procs, strict=True):
        failures += _problems(args, names, proc.returncode, proc.stderr)
    assert not failures, "\n\n".join(failures)


def test_debug_shows_the_traceback(tmp_path):
    proc = _run(["fit", "--model.dropout", "1.5", "--debug"], tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "--model.dropout" in proc.stderr
