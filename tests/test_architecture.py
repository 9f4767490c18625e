"""The house's shape, read from the source: no import circle, no import from a lower floor to a higher one,
no module borrowing another's underscore names; and the private Lightning code the CLI still relies on,
pinned to the versions it was read from.

The imports are read with ``ast`` from every file under src/focalmix, those inside functions too (a lazy
import is still an edge), except the ones under ``if TYPE_CHECKING:`` (they never run).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lightning
import pytest
from lightning.pytorch.cli import LightningCLI
from packaging.version import Version

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "focalmix"

# The floors of ARCHITECTURE.md, lowest first. A module may import from its own floor or a lower one.
FLOORS = ("core", "data", "networks", "shell", "cli", "top")

# Where each module sits. A module is placed by its exact name in MODULES, else by the longest rule in
# PREFIXES that it equals or sits under (``focalmix.backbones`` covers ``focalmix.backbones.hub``; a prefix
# is a whole dotted name, so ``focalmix.data`` does not cover ``focalmix.data_media``). A new module goes
# into MODULES on its room's floor; a new subpackage gets a PREFIXES rule.
MODULES = {
    # functional core: pure torch / numpy, no Lightning import
    "focalmix._checks": "core",
    "focalmix.augment": "core",
    "focalmix.calibration": "core",
    "focalmix.fused_loss": "core",
    "focalmix.losses": "core",
    "focalmix.metrics": "core",
    "focalmix.mixup": "core",
    "focalmix.trust": "core",
    "focalmix.wakeword": "core",
    # data: sources, decoding, the feature cache, splits, batches, the datamodule
    "focalmix.data_arguments": "data",
    "focalmix.data_splits": "data",
    "focalmix.encoder": "data",
    "focalmix.messages": "data",
    "focalmix.table_io": "data",
    "focalmix.table_spec": "data",
    "focalmix.cache": "data",
    "focalmix.cache_keys": "data",
    "focalmix.cache_store": "data",
    "focalmix.data_media": "data",
    "focalmix.datasets": "data",
    "focalmix.media_io": "data",
    "focalmix.media_dataset": "data",
    "focalmix.media_windows": "data",
    "focalmix.preprocessing": "data",
    # the Lightning shell
    "focalmix.arguments": "shell",
    "focalmix.callbacks": "shell",
    "focalmix.console": "shell",
    "focalmix.diagnostics": "shell",
    "focalmix.evaluation": "shell",
    "focalmix.export": "shell",
    "focalmix.export_media": "shell",
    "focalmix.faults": "shell",
    "focalmix.module": "shell",
    "focalmix.optim": "shell",
    "focalmix.report": "shell",
    "focalmix.training": "shell",
    # the command line: its words, errors, checkpoints, the LightningCLI subclass, tune
    "focalmix._cli_text": "cli",
    "focalmix.cli_base": "cli",
    "focalmix.cli_checkpoint": "cli",
    "focalmix.cli_errors": "cli",
    "focalmix.cli_run": "cli",
    "focalmix.tune": "cli",
    "focalmix.tune_space": "cli",
    "focalmix.tune_study": "cli",
    "focalmix.tune_trial": "cli",
    # the top: the entry point (dispatch to the commands) and the package's lazy public API
    "focalmix": "top",
    "focalmix.__main__": "top",
    "focalmix.cli": "top",
}
PREFIXES = {
    "focalmix.backbones": "networks",
    "focalmix.data": "data",  # data.py, or a data/ package
    "focalmix.media": "data",  # media.py, or a media/ package
    "focalmix.sources": "data",  # one module per kind of source
}

# Imports of another module's underscore names that are known and not yet removed (module -> {(from, name)}),
# each to be made public in its module (or moved) by the room that owns it.
PRIVATE_IMPORTS_ALLOWED: dict[str, set[tuple[str, str]]] = {}
# Known import circles (frozensets of module names) and imports up a floor ((importer, imported)): none.
CYCLES_ALLOWED: set[frozenset[str]] = set()
UPWARD_ALLOWED: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, from its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """``(module imported, name imported from it or None)`` for each focalmix import of one module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, str | None]] = []
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "focalmix"]
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        if base.split(".")[0] != "focalmix":
            continue
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            out.append((submodule, None) if submodule in modules else (base, alias.name))
    return [(m, n) for m, n in out if m in modules and m != name]


def _graph() -> dict[str, list[tuple[str, str | None]]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _floor(module: str) -> str:
    if module in MODULES:
        return MODULES[module]
    rules = [p for p in PREFIXES if module == p or module.startswith(p + ".")]
    if not rules:
        raise LookupError(
            f"{module} has no floor: add it to MODULES (or a PREFIXES rule for a new package) in"
            f" tests/test_architecture.py, on the floor of its room in ARCHITECTURE.md ({', '.join(FLOORS)})"
        )
    return PREFIXES[max(rules, key=len)]


def _cycles(graph: dict[str, list[tuple[str, str | None]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    edges = {m: sorted({t for t, _ in targets}) for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_floor():
    missing = []
    for module in _modules():
        try:
            _floor(module)
        except LookupError as err:
            missing.append(str(err))
    assert not missing, "\n".join(missing)


def test_no_import_circle():
    cycles = [c for c in _cycles(_graph()) if frozenset(c) not in CYCLES_ALLOWED]
    assert not cycles, f"import circles (each a set of modules importing each other): {cycles}"


def test_no_import_from_a_lower_floor_to_a_higher_one():
    rank = {floor: i for i, floor in enumerate(FLOORS)}
    upward = [
        f"{module} ({_floor(module)}) imports {target} ({_floor(target)})"
        for module, targets in _graph().items()
        for target in sorted({t for t, _ in targets})
        if rank[_floor(target)] > rank[_floor(module)] and (module, target) not in UPWARD_ALLOWED
    ]
    assert not upward, "\n".join(upward)


def test_no_module_imports_another_modules_underscore_names():
    borrowed = [
        f"{module}: from {target} import {name}"
        for module, targets in _graph().items()
        for target, name in targets
        if name is not None
        and name.startswith("_")
        and not name.startswith("__")
        and (target, name) not in PRIVATE_IMPORTS_ALLOWED.get(module, set())
    ]
    assert not borrowed, "make these public (no underscore) in a module on a lower floor:\n" + "\n".join(
        borrowed
    )


def test_the_walk_sees_lazy_imports_and_skips_type_checking_ones():
    graph = _graph()
    assert ("focalmix.tune", None) not in graph["focalmix.cli"]  # `from focalmix.tune import main`
    assert ("focalmix.tune", "main") in graph["focalmix.cli"]  # inside _dispatch
    assert ("focalmix.media", "MediaIndex") not in graph["focalmix.media_io"]  # under TYPE_CHECKING
    assert _floor("focalmix.backbones.hub") == "networks" and _floor("focalmix.data_media") == "data"


# ---- Lightning's private code ---------------------------------------------------------------------------
# FocalMixCLI (cli_base.py, cli_run.py) uses LightningCLI's public hooks, and these private pieces, read in
# lightning/pytorch/cli.py of the versions below. On a Lightning upgrade, read them again there, then move
# the range: the test fails first, not a user's run.
LIGHTNING_VERSIONS = (Version("2.6"), Version("2.7"))  # [from, to)
PRIVATE_LIGHTNING = {
    # overridden: Lightning's loads the checkpoint before focalmix's trust check and applies every model
    # hyperparameter (the ones linked from the data too); cli_base applies the checkpoint's settings itself
    "_parse_ckpt_path": "(self) -> None",
    # called: a subcommand's parser, for the short help, the valid flags and the data defaults
    "_parser": "(self, subcommand: Optional[str]) -> lightning.pytorch.cli.LightningArgumentParser",
    # relied on: it calls before_<command>, then the CLI's own method named <command> (cli_run's fit,
    # validate, test, predict) instead of the Trainer's, then after_<command>
    "_run_subcommand": "(self, subcommand: str) -> None",
}


def test_lightning_is_a_version_the_cli_was_read_against():
    low, high = LIGHTNING_VERSIONS
    assert low <= Version(lightning.__version__) < high, (
        f"lightning {lightning.__version__}: FocalMixCLI relies on LightningCLI's private"
        f" {sorted(PRIVATE_LIGHTNING)} as in [{low}, {high}); read them in this version, then update"
        " tests/test_architecture.py"
    )


@pytest.mark.parametrize("name", sorted(PRIVATE_LIGHTNING))
def test_the_private_lightning_code_keeps_its_signature(name):
    assert str(inspect.signature(getattr(LightningCLI, name))) == PRIVATE_LIGHTNING[name]


def test_lightning_runs_a_cli_method_named_after_the_command():
    source = inspect.getsource(LightningCLI._run_subcommand)
    assert "getattr(self, subcommand, default)" in source and 'f"before_{subcommand}"' in source


# ---- sizes: rooms small enough to read ----------------------------------------------------------------

MAX_FILE, MAX_CLASS, MAX_FUNCTION = 450, 300, 60  # lines; a class or function without its docstring


def _body_lines(node: ast.AST) -> int:
    body = node.body
    docstring = (
        body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
    )
    start = body[0].end_lineno + 1 if docstring and isinstance(body[0].value.value, str) else node.lineno
    return node.end_lineno - start + 1


def test_no_file_class_or_function_is_too_long_to_read():
    too_long = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE:
            too_long.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines > {MAX_FILE}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
                if _body_lines(node) > limit:
                    too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: > {limit} lines")
    assert too_long == [], "split these along their seams (ARCHITECTURE.md):\n" + "\n".join(too_long)
