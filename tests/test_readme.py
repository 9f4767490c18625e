"""The README is a contract: its Quickstart test command is what CI runs, and its flags exist."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from focalmix.cli import FocalMixCLI

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [
        line
        for line in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in line.splitlines()
        if line and not line.startswith("#")
    ]


def test_quickstart_has_two_commands_and_ci_runs_the_test_one():
    install_fit, install_test = _quickstart_commands()
    assert install_fit.endswith("focalmix fit") and install_test.endswith("pytest")
    assert install_test in (ROOT / ".ci" / "run").read_text()


def test_every_flag_in_the_hyperparameter_table_parses():
    table = README.split("## Hyperparameters", 1)[1].split("\n## ", 1)[0]
    flags = re.findall(r"^\| `--([\w.]+)` \| ([^|]+) \|", table, re.M)
    assert len(flags) >= 11
    config = FocalMixCLI(run=False, args=[]).config
    for key, default in flags:
        value = config
        for part in key.split("."):
            value = value[part]
        if value is None:
            assert default.strip() == "null", key
            continue
        assert str(value) == default.strip() or float(value) == float(default), key


def test_every_flag_in_the_readmes_commands_exists():
    """A README flag the parser does not know would fail for the first user who copies the command."""
    from focalmix.export import _parser as export_parser

    fit = set(FocalMixCLI(run=False, args=[]).parser._option_string_actions)
    fit |= {"--ckpt_path", "--preset", "--help_all", "--print_config", "--config", "--debug"}  # subcommand
    export = set(export_parser()._option_string_actions)
    unknown = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.search(r"\bfocalmix (fit|test|predict|validate|report|tune|export)\b", line)
            if command is None or line.startswith("focalmix: error"):
                continue
            known = export if command[1] == "export" else fit
            for flag in re.findall(r"(--[a-z_][\w.]*)", line[command.end() :]):
                if flag not in known and not (command[1] == "tune" and flag.startswith("--tune.")):
                    unknown.append((line.strip(), flag))
    assert [flag for _, flag in unknown] == ["--model.learnig_rate"], unknown  # only the error example's typo


# ---- the Quickstart's main command prints what the README shows -------------------------------------

_NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _sample_patterns() -> list[str | None]:
    """The README's sample output as line patterns: numbers and the run's home folder vary, the words do
    not; ``...`` (None here) stands for the epoch lines the sample leaves out."""
    section = README.split("## What a fit prints", 1)[1]
    sample = re.search(r"```\n(.*?)```", section, re.S)[1]
    patterns: list[str | None] = []
    for line in sample.splitlines():
        if line.strip() == "...":
            patterns.append(None)
            continue
        words = re.split(_NUMBER, line.replace("/home/me/focalmix", "\0"))
        text = _NUMBER.join(re.escape(part) for part in words)
        patterns.append(text.replace("\0", ".+"))
    return patterns


def _match_sample(printed: list[str], patterns: list[str | None]) -> list[str]:
    """The sample's lines in order, each matching one printed line; ``...`` matches epoch lines only."""
    problems, i = [], 0
    for k, pattern in enumerate(patterns):
        if pattern is None:  # greedy: up to the last line before the next pattern's run ends

            def next_at(j: int, after: str = patterns[k + 1]) -> bool:
                return j < len(printed) and re.fullmatch(after, printed[j]) is not None

            while i < len(printed) and not (next_at(i) and not next_at(i + 1)):
                if not printed[i].startswith("epoch "):
                    problems.append(f"not in the README's sample: {printed[i]!r}")
                i += 1
            continue
        if i >= len(printed) or not re.fullmatch(pattern, printed[i]):
            problems.append(
                f"README line {pattern!r} != printed {printed[i] if i < len(printed) else None!r}"
            )
        i += 1
    problems += [f"printed after the sample's last line: {line!r}" for line in printed[i:]]
    return problems


@pytest.mark.slow
def test_quickstart_main_command_prints_the_readmes_sample(tmp_path):
    """`focalmix fit` as the Quickstart runs it (no flag; the default data), its output (stdout and stderr,
    as a terminal shows them) line by line against the sample under "What a fit prints"."""
    main_command = _quickstart_commands()[0].rsplit("&& ", 1)[1]
    assert main_command == "focalmix fit"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    done = subprocess.run(
        main_command.split(), cwd=tmp_path, env=env, capture_output=False, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    printed = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0, done.stdout[-3000:]
    assert _match_sample(printed, _sample_patterns()) == []
    assert (tmp_path / "lightning_logs" / "version_0" / "report" / "report.html").is_file()


def test_the_sample_matcher_catches_a_changed_line():
    """The matcher itself: a reworded, missing or extra line is reported (so the test above can fail)."""
    patterns = _sample_patterns()
    good = [
        "focalmix: data breast_cancer: binary, 30 features, 2 classes; rows: train 1, val 2, no test split",
    ]
    assert _match_sample(good, patterns[:1]) == []
    assert _match_sample(["focalmix: data breast_cancer: binary"], patterns[:1]) != []
    assert _match_sample(good + ["extra"], patterns[:1]) != []
    assert _match_sample(["epoch 3/100  val/loss 0.1  train/loss 0.2", good[0]], [None, patterns[0]]) == []
    assert _match_sample(["focalmix: surprise", good[0]], [None, patterns[0]]) != []
