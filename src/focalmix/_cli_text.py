"""The words of the ``focalmix`` command: presets, argument expansion, short errors and the short help.

Plain text work on argv, parser errors and parser actions; :mod:`focalmix.cli` wires it into LightningCLI.
"""

from __future__ import annotations

import difflib
import importlib.resources
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from focalmix.console import plain

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningArgumentParser

    from focalmix.cli import FocalMixCLI

PRESETS = ("fast", "balanced", "max_accuracy")
COMMANDS = ("fit", "validate", "test", "predict", "report", "tune", "export")
_DESCRIPTIONS = {
    "fit": "Train a model on --data.source with the focalmix recipe; ends with a table of the best"
    " checkpoint's metrics, and report/ in the run folder.",
    "validate": "Score a checkpoint (--ckpt_path) on the validation rows.",
    "test": "Score a checkpoint (--ckpt_path) on the test rows (without a test split: on the validation rows,"
    " and it says so).",
    "predict": "Write a checkpoint's calibrated probabilities and decisions for --data.predict_source to"
    " --prediction_writer.path.",
}
_BOOL_FLAGS = ("--verbose", "--report")  # may be given bare: `--verbose` means `--verbose true`


class UsageError(ValueError):
    """A mistake in what the user gave: printed by :func:`focalmix.cli.main` as one line (+ a hint), exit 2.

    Example:
        >>> str(UsageError("--preset: unknown preset 'fastt'", "did you mean 'fast'?"))
        "--preset: unknown preset 'fastt'\\ndid you mean 'fast'?"
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message}\n{hint}")
        self.message, self.hint = message, hint


def preset_path(name: str) -> Path:
    """The YAML file of a preset shipped with the package (``fast``, ``balanced``, ``max_accuracy``).

    Example:
        >>> preset_path("fast").name
        'fast.yaml'
    """
    if name not in PRESETS:
        raise UsageError(
            f"--preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}",
            _did_you_mean(name, PRESETS),
        )
    return Path(str(importlib.resources.files("focalmix") / "configs" / f"{name}.yaml"))


def _did_you_mean(word: str, choices: Any) -> str | None:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {match[0]}?" if match else None


def parse_error_message(exc: BaseException, cli: FocalMixCLI | None = None, argv: list[str] | None = None):
    """``(message, hint)`` for a jsonargparse parse error: short, naming the flag, with a suggestion.

    Example:
        >>> from jsonargparse import ArgumentError
        >>> error = ArgumentError(None, 'Parser key "model.dropout":\\n  Expected a float. Got value: x')
        >>> parse_error_message(error)
        ("--model.dropout: expected a float, got value 'x'", None)
    """
    text = str(exc).strip()
    sub = next((a for a in (argv or []) if not a.startswith("-")), None)
    if text.startswith("unrecognized arguments:"):
        flag = next((t for t in text.split(":", 1)[1].split() if t.startswith("-")), text.split()[-1])
        flag = flag.split("=", 1)[0]
        valid = (
            cli._valid_flags(sub if sub in ("fit", "validate", "test", "predict") else None) if cli else []
        )
        hint = _did_you_mean(flag, valid)
        return f"unknown argument {flag}", (
            hint or ""
        ) + f" (`focalmix {sub or ''} --help` lists them)".replace("  ", " ")
    m = re.match(r"argument subcommand: invalid choice: '([^']*)'", text)
    if m:
        return f"unknown command {m.group(1)!r}; commands: {', '.join(COMMANDS)}", _did_you_mean(
            m.group(1), COMMANDS
        )
    m = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.DOTALL)
    if m:
        key, body = m.group(1), m.group(2)
        body = re.sub(r"<class '(\w+)'>", r"\1", body)
        body = re.sub(r"Expected a (.*?)\. Got value: (.*)", r"expected a \1, got value '\2'", body)
        lines = [ln.strip(" -") for ln in body.splitlines() if ln.strip()]
        return f"--{key}: {'; '.join(lines)[:300]}", None
    m = re.match(r"argument (\S+)(?: --> (\S+))?: (.*)", text, re.DOTALL)
    if m:
        return f"--{m.group(2) or m.group(1)}: {' '.join(m.group(3).split())[:300]}", None
    lines = text.splitlines() or [type(exc).__name__]
    return " ".join(ln.strip() for ln in lines)[:300], None


def expand_args(argv: list[str]) -> list[str]:
    """``--preset NAME`` -> ``--config <packaged file>``; a bare ``--verbose``/``--report`` -> ``true``.

    Example:
        >>> expand_args(["fit", "--verbose", "--model.dropout", "0.2"])
        ['fit', '--verbose', 'true', '--model.dropout', '0.2']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--debug":
            pass
        elif arg == "--preset" or arg.startswith("--preset="):
            name = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 0 if "=" in arg else 1
            out += ["--config", str(preset_path(name))]
        elif arg in _BOOL_FLAGS and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out += [arg, "true"]
        else:
            out.append(arg)
        i += 1
    return out


_RECIPE = {
    "early_stopping": ("monitor", "mode", "patience", "min_delta"),
    "checkpoint": ("dirpath", "monitor", "mode", "save_top_k"),
    "trainer": (
        "max_epochs",
        "min_epochs",
        "max_steps",
        "accelerator",
        "devices",
        "precision",
        "default_root_dir",
        "logger",
        "accumulate_grad_batches",
        "gradient_clip_val",
        "deterministic",
        "enable_progress_bar",
        "fast_dev_run",
        "limit_train_batches",
    ),
    "prediction_writer": ("path",),
}
_RUN = (
    "config",
    "print_config",
    "seed_everything",
    "ckpt_path",
    "report",
    "verbose",
    "scale_batch_size",
    "lr_find",
)
_WIDTH = 110


def compact_help(parser: LightningArgumentParser, sub: str, hidden: tuple[str, ...] = ()) -> str:
    """The short ``--help`` of a subcommand: presets, then model, data, early stopping, checkpoint, run.

    ``hidden``: argument names left out (the model's arguments the CLI links from the datamodule).
    """
    actions = {
        a.dest: a for a in parser._actions if a.option_strings and a.option_strings[0].startswith("--")
    }
    out = [
        f"usage: focalmix {sub} [--preset NAME] [--config FILE] [--model.NAME VALUE] [--data.NAME VALUE] ...",
        "",
        _DESCRIPTIONS.get(sub) or plain(parser.description or "").strip(),
        "Flags can also be set in a YAML --config (`--print_config` writes them all). Every Trainer and"
        " callback flag: --help_all.",
        "",
        "presets (YAML files shipped with focalmix; later --config files and flags override them):",
    ]
    for name in PRESETS:
        first = preset_path(name).read_text().splitlines()[0].lstrip("# ").split(":", 1)[-1]
        first = first.split(". ")[0].strip().rstrip(".")
        out.append(_line(f"--preset {name}", first))
    sections = [("model", None), ("data", None), *((k, v) for k, v in _RECIPE.items())]
    for group, names in sections:
        if group == "prediction_writer" and sub != "predict":
            continue
        keys = [d for d in actions if d.startswith(f"{group}.") and d.count(".") == 1]
        keys = [k for k in keys if names is None or k.split(".", 1)[1] in names]
        keys = [k for k in keys if not k.endswith(".help") and k.split(".", 1)[1] not in hidden]
        if not keys:
            continue
        title = {"trainer": "trainer (a few; all with --help_all)"}.get(group, group.replace("_", " "))
        out += ["", f"{title}:"]
        out += [_line(f"--{k} {_default(actions[k].default)}", actions[k].help) for k in keys]
    out += ["", "run:"]
    out += [_line(f"--{k}", actions[k].help) for k in _RUN if k in actions]
    out.append(_line("--debug", "show the full traceback of an error (also FOCALMIX_DEBUG=1)."))
    return "\n".join(out)


def _default(value: Any) -> str:
    if value is None or isinstance(value, str) and value.startswith("=="):
        return "" if value is not None else "null"
    return str(value).replace(" ", "")


def _line(flag: str, text: str | None) -> str:
    text = " ".join(plain(text or "").split())
    text = re.split(r"(?<=[.;])\s+Default", text)[0]
    text = re.sub(r"\s*Default(s)?( to)?:? .*$", "", text).strip()
    head = f"  {flag}".ljust(40) if len(flag) < 37 else f"  {flag}  "
    room = _WIDTH - len(head)
    return (head + (text if len(text) <= room else text[: room - 3] + "...")).rstrip()
