"""The README is a contract: its Quickstart test command is what CI runs, and its flags exist."""

from __future__ import annotations

import re
from pathlib import Path

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
