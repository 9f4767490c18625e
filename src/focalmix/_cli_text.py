"""The words of the ``focalmix`` command: presets, argument expansion, short errors and the short help.

Plain text work on argv, parser errors and parser actions; :mod:`focalmix.cli_base` wires it into
LightningCLI. The lowest floor of the CLI: it imports no other CLI module.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Imported before focalmix.console, so `--help_all` lists Lightning's callbacks before ours, as it always did
from lightning.pytorch.cli import LightningArgumentParser

from focalmix.console import plain

# Datamodule attributes the model is built from (linked by the CLI, read after the datamodule is created;
# hidden from the short help, and taken from the data, never the checkpoint, when one is loaded).
LINKS = (
    "num_features",
    "num_classes",
    "task",
    "input_shape",
    "class_names",
    "feature_names",
    "preprocessing",
)
PRESETS = ("fast", "balanced", "max_accuracy", "wakeword")
COMMANDS = ("fit", "validate", "test", "predict", "report", "tune", "export")
_DESCRIPTIONS = {
    "fit": "Train a model on --data.source with the focalmix recipe; ends with the best checkpoint's metrics"
    " and report/.",
    "validate": "Score a checkpoint (--ckpt_path) on the validation rows.",
    "test": "Score a checkpoint (--ckpt_path) on the test rows (without a test split: on the validation rows,"
    " and it says so).",
    "predict": "Write a checkpoint's calibrated probabilities and decisions for --data.predict_source to"
    " --prediction_writer.path.",
}
# One line per command for `focalmix --help` (each fits the 110-column help beside its name).
SUMMARIES = {
    "fit": "train on --data.source with the recipe; prints the best checkpoint's metrics, writes report/",
    "validate": "score a checkpoint (--ckpt_path) on the validation rows",
    "test": "score a checkpoint (--ckpt_path) on the test rows",
    "predict": "write a checkpoint's probabilities and decisions for --data.predict_source to a CSV",
    "report": "write report/ (report.html, PNG figures) for a checkpoint (--ckpt_path)",
    "tune": "search hyperparameters with Optuna; writes best.yaml for `focalmix fit --config`",
    "export": "write a checkpoint as ONNX or TorchScript (raw features in, probabilities out)",
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
    """The YAML file of a preset shipped with the package (see :data:`PRESETS`).

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


def suggest_flag(flag: str, valid: list[str]) -> str | None:
    """``"did you mean ...?"`` for an unknown ``--group.name`` flag, or None.

    Looks at the last dotted part within the same group first: its initials (``lr`` ->
    ``learning_rate``), then names it begins (``focal`` -> ``focal_alpha``, ``focal_gamma``), then spelling;
    then the same name in another group (``--data.dropout`` -> ``--model.dropout``); then the whole flag.

    Example:
        >>> valid = ["--model.learning_rate", "--model.lr_scaling", "--model.dropout", "--data.batch_size"]
        >>> suggest_flag("--model.lr", valid), suggest_flag("--data.dropout", valid)
        ('did you mean --model.learning_rate?', 'did you mean --model.dropout?')
    """
    valid = [v for v in valid if not v.endswith("+")]  # jsonargparse's list-append twins
    group, _, last = flag.rpartition(".")
    if group and last:
        same = [v for v in valid if v.rpartition(".")[0] == group]
        lasts = {v.rpartition(".")[2]: v for v in same}
        initials = [v for k, v in lasts.items() if "_" in k and "".join(w[:1] for w in k.split("_")) == last]
        begun = [v for k, v in lasts.items() if k.startswith(last) and len(last) >= 2]
        spelled = [lasts[k] for k in difflib.get_close_matches(last, list(lasts), n=2, cutoff=0.6)]
        elsewhere = [v for v in valid if v.rpartition(".")[2] == last and v != flag]
        for found in (initials, begun, spelled, elsewhere):
            if found:
                return f"did you mean {' or '.join(found[:3])}?"
    return _did_you_mean(flag, valid)


def parse_error_message(
    exc: BaseException,
    valid_flags: Callable[[str | None], list[str]] | None = None,
    argv: list[str] | None = None,
):
    """``(message, hint)`` for a jsonargparse parse error: short, naming the flag, with a suggestion.

    ``valid_flags(subcommand)``: the flags of a subcommand (None: of the main parser), for the suggestion
    after an unknown flag.

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
        command = sub if sub in ("fit", "validate", "test", "predict") else None
        valid = valid_flags(command) if valid_flags else []
        hint = suggest_flag(flag, valid)
        return f"unknown argument {flag}", (
            hint or ""
        ) + f" (`focalmix {sub or ''} --help` lists them)".replace("  ", " ")
    m = re.match(r"argument subcommand: invalid choice: '([^']*)'", text)
    if m:
        return f"unknown command {m.group(1)!r}; commands: {', '.join(COMMANDS)}", _did_you_mean(
            m.group(1), COMMANDS
        )
    if text.startswith('expected "subcommand" to be one of'):
        return f"no command given; commands: {', '.join(COMMANDS)}", "`focalmix --help` says what each does"
    m = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.DOTALL)
    if m and "Union subtypes" in m.group(2):
        return _union_message(m.group(1), m.group(2))
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


def _union_message(key: str, body: str) -> tuple[str, str | None]:
    """jsonargparse's "Does not validate against any of the Union subtypes" block, as one line and a hint."""
    value = re.search(r"Given value: (.*)", body)
    types = re.search(r"Subtypes: \[(.*)\]", body)
    got = repr(value.group(1).strip()) if value else "this value"
    kinds = [t.strip() for t in re.split(r",\s*(?![^\[]*\])", types.group(1))] if types else []
    kinds = [k for k in kinds if k != "NoneType"]
    if any(k.startswith(("list[", "tuple[")) for k in kinds):
        name = key.rpartition(".")[2]
        return f"--{key}: expected a list, got {got}", (
            f"write a list: --{key} '[a, b]', or one name bare: --{key} a; in a YAML config: {name}: [a, b]"
        )
    return f"--{key}: {got} is not {' or '.join(kinds) or 'a valid value'}", None


def _list_flags() -> dict[str, bool]:
    """Flags whose value is a list (``--data.id_columns``, ``--model.hidden_sizes``); True: of str."""
    import inspect

    from focalmix.data import FocalMixDataModule
    from focalmix.module import FocalMixClassifier

    flags = {}
    for group, cls in (("data", FocalMixDataModule), ("model", FocalMixClassifier)):
        for name, param in inspect.signature(cls.__init__).parameters.items():
            kinds = [k.strip() for k in str(param.annotation).split("|")]
            lists = [k for k in kinds if k.startswith(("list[", "tuple["))]
            if lists and all(k in lists or k == "None" for k in kinds):
                flags[f"--{group}.{name}"] = "str" in lists[0]
    return flags


def _as_list(value: str, of_str: bool) -> str:
    """A bare value of a list flag as a one-item list: ``customer_id`` -> ``["customer_id"]``."""
    if value.startswith(("[", "(", "{")) or value.lower() in ("null", "none", "~", ""):
        return value
    return json.dumps([value]) if of_str else f"[{value}]"


def expand_args(argv: list[str]) -> list[str]:
    """``--preset NAME`` -> ``--config <packaged file>``; a bare ``--verbose``/``--report`` -> ``true``; a
    list flag given one bare name -> a one-item list (``--data.id_columns id`` -> ``["id"]``).

    Example:
        >>> expand_args(["fit", "--verbose", "--model.dropout", "0.2", "--data.id_columns=id"])
        ['fit', '--verbose', 'true', '--model.dropout', '0.2', '--data.id_columns=["id"]']
    """
    lists = _list_flags() if any(a.startswith(("--data.", "--model.")) for a in argv) else {}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag = arg.split("=", 1)[0]
        if arg == "--debug":
            pass
        elif flag in lists and "=" in arg:
            out.append(f"{flag}={_as_list(arg.split('=', 1)[1], lists[flag])}")
        elif flag in lists and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out += [arg, _as_list(argv[i + 1], lists[flag])]
            i += 1
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
_INDENT = 38  # where a flag's help text starts


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
        *textwrap.wrap(_DESCRIPTIONS.get(sub) or plain(parser.description or "").strip(), _WIDTH),
        "Flags can also go in a YAML --config (--print_config writes them all); every Trainer flag:"
        " --help_all.",
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
    # "..., default 0.2." repeats the default shown beside the flag
    text = re.sub(r"[,;] default [^\s,;:]+\.(?=\s|$)", ".", text)
    head = f"  {flag}".ljust(_INDENT) if len(flag) < _INDENT - 3 else f"  {flag}  "
    room = max(_WIDTH - len(head), 30)
    # whole sentences only: the first (wrapped when long), and the next ones while the line has room
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
    text = sentences[0]
    for more in sentences[1:]:
        if len(text) + 1 + len(more) > room:
            break
        text += " " + more
    lines = textwrap.wrap(text, width=room) or [""]
    rest = textwrap.wrap(" ".join(lines[1:]), width=_WIDTH - _INDENT) if len(lines) > 1 else []
    return "\n".join([(head + lines[0]).rstrip(), *(" " * _INDENT + ln for ln in rest)])


def top_help() -> str:
    """``focalmix --help``: every command with one line, then where the flags are.

    Example:
        >>> all(f"  {c} " in top_help() for c in COMMANDS)
        True
    """
    out = [
        "usage: focalmix COMMAND [--preset NAME] [--config FILE] [--model.NAME VALUE] [--data.NAME VALUE]",
        "",
        "focalmix: focal loss, label smoothing and mixup for imbalanced classifiers.",
        "",
        "commands (`focalmix COMMAND --help` lists a command's flags):",
    ]
    out += [f"  {name:<10} {SUMMARIES[name]}" for name in COMMANDS]
    out += [
        "",
        f"presets: focalmix fit --preset {'|'.join(PRESETS)} (`focalmix fit --help`: what each sets).",
        "--verbose shows all of Lightning's output; --debug the traceback of an error.",
    ]
    return "\n".join(out)
