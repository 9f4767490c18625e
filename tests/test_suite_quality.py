"""Checks on the test suite itself: every test asserts something, and every entry point has its test.

* Every ``test_*`` function in tests/*.py asserts: an ``assert``, ``pytest.raises``/``warns``/``fail``,
  ``torch.testing.assert_close``, ``np.testing.assert_*``, a call to a helper named ``assert_*``,
  ``check_*`` or ``_assert*`` (one defined in tests/ must itself assert, checked the same way), or a call
  to a function of its own module that asserts.
* tests/entrypoints.yaml maps every user-facing entry point to an end-to-end test that exists; the
  commands and options are read from the CLI (the Lightning subcommands, what ``focalmix.cli._dispatch``
  dispatches, the command list the help prints, the options ``FocalMixCLI`` adds), not copied here.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parent
ENTRYPOINTS = TESTS / "entrypoints.yaml"
HELPER_PREFIXES = ("assert_", "check_", "_assert")
ASSERTING_CALLS = {"raises", "warns", "fail", "assert_close", "deprecated_call"}
# tests allowed to have no assertion, with the reason
NO_ASSERT_ALLOWED: dict[str, str] = {}


def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(TESTS.glob("*.py"))}


def _call_name(call: ast.Call) -> tuple[str, str]:
    """(name called, dotted path before it): ``np.testing.assert_allclose`` -> (its name, 'np.testing')."""
    func, parts = call.func, []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    parts.reverse()
    return (parts[-1], ".".join(parts[:-1])) if parts else ("", "")


def _has_direct_assertion(fn: ast.AST) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Raise) and "AssertionError" in ast.unparse(node):
            return True
        if isinstance(node, ast.Call):
            name, owner = _call_name(node)
            if name in ASSERTING_CALLS or (owner.endswith("testing") and name.startswith("assert")):
                return True
    return False


def _helpers(modules: dict[Path, ast.Module]) -> dict[str, bool]:
    """Helpers defined in tests/ that a test may call instead of asserting itself: whether each asserts
    (directly or through another). Keys: ``name`` for helpers named like assertions (callable from any
    test module), ``path::name`` for every other function (counted only in its own module)."""
    defs: dict[str, ast.FunctionDef] = {}
    for path, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_"):
                defs[f"{path.name}::{node.name}"] = node
                if node.name.startswith(HELPER_PREFIXES):
                    defs[node.name] = node
    asserting = {key for key, fn in defs.items() if _has_direct_assertion(fn)}
    changed = True
    while changed:  # helpers that call an asserting helper
        changed = False
        for key, fn in defs.items():
            module = key.split("::")[0] if "::" in key else None
            if key not in asserting and _calls_asserting(fn, module, asserting):
                asserting.add(key)
                changed = True
    return {key: key in asserting for key in defs}


def _calls_asserting(fn: ast.AST, module: str | None, asserting: set[str]) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            name = _call_name(node)[0]
            if name in asserting or (module and f"{module}::{name}" in asserting):
                return True
    return False


def _has_assertion(fn: ast.FunctionDef, helpers: dict[str, bool], module: str) -> bool:
    if _has_direct_assertion(fn):
        return True
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            name = _call_name(node)[0]
            if helpers.get(f"{module}::{name}"):
                return True  # a function of this module that asserts
            # a helper named like an assertion: checked where tests/ defines it, else taken at its word
            if name.startswith(HELPER_PREFIXES) and helpers.get(name, True):
                return True
    return False


def _test_functions(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
            yield node


def test_every_test_asserts_something():
    modules = _modules()
    helpers = _helpers(modules)
    silent = [
        f"{path.name}::{fn.name} (line {fn.lineno})"
        for path, tree in modules.items()
        for fn in _test_functions(tree)
        if not _has_assertion(fn, helpers, path.name) and f"{path.name}::{fn.name}" not in NO_ASSERT_ALLOWED
    ]
    assert silent == [], "tests that check nothing (add an assert, or an entry with a reason):\n" + "\n".join(
        silent
    )
    named_but_silent = sorted(key for key, asserts in helpers.items() if "::" not in key and not asserts)
    assert named_but_silent == [], f"helpers named like assertions that assert nothing: {named_but_silent}"


def test_the_quality_check_catches_a_silent_test():
    tree = ast.parse(
        "def check_x(a):\n    return a\n"
        "def check_y(a):\n    assert a\n"
        "def _fails(a):\n    with pytest.raises(ValueError):\n        a()\n"
        "def _quiet(a):\n    return a\n"
        "def test_silent():\n    f(1)\n"
        "def test_module_helper():\n    _fails(f)\n"
        "def test_module_helper_that_does_not_assert():\n    _quiet(f)\n"
        "def test_named_helper_that_does_not_assert():\n    check_x(1)\n"
        "def test_helper():\n    check_y(1)\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        f()\n"
        "def test_numpy():\n    np.testing.assert_allclose(1, 1)\n"
    )
    helpers = _helpers({Path("x.py"): tree})
    verdicts = {fn.name: _has_assertion(fn, helpers, "x.py") for fn in _test_functions(tree)}
    assert verdicts == {
        "test_silent": False,
        "test_module_helper": True,
        "test_module_helper_that_does_not_assert": False,
        "test_named_helper_that_does_not_assert": False,
        "test_helper": True,
        "test_raises": True,
        "test_numpy": True,
    }


# ---- entry points -----------------------------------------------------------------------------------


def _entrypoints() -> dict[str, dict[str, str]]:
    return yaml.safe_load(ENTRYPOINTS.read_text())


def _cli_commands() -> set[str]:
    """The `focalmix` commands, read from the CLI: Lightning's subcommands, the commands ``_dispatch``
    routes elsewhere (export, tune, report), and the list the short help prints."""
    from focalmix import _cli_text, cli

    commands = set(cli.FocalMixCLI.subcommands())
    dispatch = next(
        node
        for node in ast.walk(ast.parse(inspect.getsource(cli)))
        if isinstance(node, ast.FunctionDef) and node.name == "_dispatch"
    )
    for node in ast.walk(dispatch):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "command":
            commands |= {c.value for c in node.comparators if isinstance(c, ast.Constant) and c.value}
    commands |= set(getattr(_cli_text, "COMMANDS", ()))
    return commands


def _cli_options() -> set[str]:
    """The options FocalMixCLI adds to the commands itself (``parser.add_argument("--name", ...)``)."""
    from focalmix.cli import FocalMixCLI

    tree = ast.parse(inspect.getsource(FocalMixCLI.add_arguments_to_parser).strip())
    return {
        node.args[0].value.removeprefix("--")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and _call_name(node)[0] == "add_argument"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


# options that change no behaviour worth a run of their own
NOT_VARIANTS = {
    "verbose": "only what is printed; the entry-point tests run without it, as users do",
    "report": "on by default: the fit tests check report/report.html",
}


def test_every_cli_command_and_option_has_an_end_to_end_test():
    entries = _entrypoints()
    commands = _cli_commands()
    assert {"fit", "validate", "test", "predict", "report", "tune", "export"} <= commands  # the reading works
    assert set(entries["commands"]) == commands
    options = _cli_options()
    assert {"lr_find", "scale_batch_size"} <= options  # the reading works
    variants = set(entries["fit_variants"]) | set(entries["command_options"])
    assert sorted(options - set(NOT_VARIANTS) - variants) == []
    assert {"ddp", "torchrun", "test_split", "resume"} <= set(entries["fit_variants"])
    assert set(entries["python"]) == {"FocalMixClassifier.load_from_checkpoint", "FocalMixDataModule"}


def test_every_mapped_test_exists():
    defined = {
        f"tests/{path.name}::{fn.name}" for path, tree in _modules().items() for fn in _test_functions(tree)
    }
    mapped = [test for group in _entrypoints().values() for test in group.values()]
    assert sorted(set(mapped) - defined) == []
