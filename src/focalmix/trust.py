"""Which classes a checkpoint may name: opening a checkpoint must never import or run anything else.

``torch.load(weights_only=True)`` protects the tensors, but a checkpoint's hyperparameters also name a
backbone by its class path (``{"class_path": "pkg.mod.Class", "init_args": {...}}``), and importing that
module or calling that object runs code. So before anything is imported, the class path is checked
against a list of trusted module prefixes:

* always trusted: ``torch.nn``, ``focalmix``, ``timm``, ``transformers``;
* trusted by the user: the environment variable ``FOCALMIX_TRUSTED_MODULES=mypkg,other.sub``, or the
  ``trusted_modules`` argument of :meth:`focalmix.FocalMixClassifier.load_from_checkpoint`.

A trusted path is imported and must resolve to an ``nn.Module`` subclass before it is called.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from torch import nn

ALWAYS_TRUSTED = ("torch.nn", "focalmix", "timm", "transformers")
ENV_VAR = "FOCALMIX_TRUSTED_MODULES"
_extra: ContextVar[tuple[str, ...]] = ContextVar("focalmix_trusted_modules", default=())


class UntrustedClassError(ValueError):
    """A checkpoint or config names a class outside the trusted modules (nothing was imported).

    ``summary`` says what was refused, ``hint`` how to trust it; ``str()`` is both.
    """

    def __init__(self, summary: str, hint: str = "") -> None:
        super().__init__(f"{summary}. {hint}" if hint else summary)
        self.summary, self.hint = summary, hint


def trusted_prefixes() -> tuple[str, ...]:
    """The module prefixes trusted now: the built-in ones, ``$FOCALMIX_TRUSTED_MODULES`` and the context's."""
    env = tuple(p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip())
    return ALWAYS_TRUSTED + env + _extra.get()


@contextlib.contextmanager
def trusting(modules: Iterable[str] | str | None) -> Iterator[None]:
    """Trust these module prefixes too, inside the ``with`` block.

    Example:
        >>> with trusting(["mypkg"]):
        ...     is_trusted("mypkg.nets.Encoder")
        True
        >>> is_trusted("mypkg.nets.Encoder")
        False
    """
    if isinstance(modules, str):
        modules = [modules]
    token = _extra.set(_extra.get() + tuple(modules or ()))
    try:
        yield
    finally:
        _extra.reset(token)


def is_trusted(class_path: str) -> bool:
    """True if ``class_path`` lies in a trusted module: ``"focalmix.x.Y"`` yes, ``"focalmixer.Y"`` no.

    Example:
        >>> is_trusted("torch.nn.Linear"), is_trusted("subprocess.run"), is_trusted("torch.load")
        (True, False, False)
    """
    if not isinstance(class_path, str) or not class_path:
        return False
    return any(class_path == p or class_path.startswith(p + ".") for p in trusted_prefixes())


def check_class_path(class_path: Any, where: str = "the checkpoint") -> None:
    """Raise :class:`UntrustedClassError` (importing nothing) unless ``class_path`` is trusted."""
    if is_trusted(class_path):
        return
    module = (class_path.rpartition(".")[0] if isinstance(class_path, str) else "") or "module"
    raise UntrustedClassError(
        f"{where} names {class_path!r}, outside the trusted modules ({', '.join(trusted_prefixes())});"
        " nothing was imported",
        f"If you trust it, set {ENV_VAR}={module} (in Python: load_from_checkpoint(...,"
        f" trusted_modules=[{module!r}]))",
    )


def check_hyperparameters(hparams: Any, where: str = "the checkpoint") -> None:
    """Check every ``class_path`` (and ``_class_path``) in a nested dict/list of hyperparameters."""
    if isinstance(hparams, dict):
        for key, value in hparams.items():
            if key in ("class_path", "_class_path"):
                check_class_path(value, where)
            else:
                check_hyperparameters(value, where)
    elif isinstance(hparams, list | tuple):
        for value in hparams:
            check_hyperparameters(value, where)


def resolve_module_class(class_path: str, where: str = "the checkpoint") -> type[nn.Module]:
    """Import a trusted class path and return it, if it is an ``nn.Module`` subclass.

    Raises:
        UntrustedClassError: the path is not trusted (nothing imported), or names no ``nn.Module`` class.
    """
    check_class_path(class_path, where)
    module_name, _, name = class_path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise UntrustedClassError(f"{where} names {class_path!r}, which cannot be imported: {err}") from err
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise UntrustedClassError(
            f"{where} names {class_path!r}, which is not an nn.Module class; it was not called."
        )
    return obj
