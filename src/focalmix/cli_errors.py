"""Which flag a constructor's error belongs to: bad values as :class:`UsageError` naming ``--group.name``.

An error raised through :mod:`focalmix._checks` says which argument was wrong (``.argument``) and which
class was being built (``.owner``): the owner's config group and the argument give the flag. Errors not
(yet) raised through ``_checks`` fall back to the innermost constructor of a configured object on the
traceback. Either way, names in backticks that are flags of that group are written as the flag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from focalmix._cli_text import UsageError
from focalmix.callbacks import PredictionWriter
from focalmix.diagnostics import TrainingDiagnostics

__all__ = ["group_of", "name_flags", "user_errors"]

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, MisconfigurationException)
_GROUPS = {  # config group of the object whose constructor raised
    LightningDataModule: "data",
    LightningModule: "model",
    Trainer: "trainer",
    EarlyStopping: "early_stopping",
    ModelCheckpoint: "checkpoint",
    PredictionWriter: "prediction_writer",
    TrainingDiagnostics: "diagnostics",
}


@contextmanager
def user_errors(valid_flags: Callable[[], Iterable[str]]) -> Iterator[None]:
    """Turn the bad-value errors our constructors and data readers raise into :class:`UsageError`.

    ``valid_flags()``: the flags of the command being run; only those are written into the message.
    """
    try:
        yield
    except UsageError:
        raise
    except USER_ERRORS as exc:
        raise UsageError(name_flags(exc, group_of(exc), valid_flags)) from exc


def group_of(exc: BaseException) -> str | None:
    """The config group (``model``, ``data``, ...) of the object whose construction raised ``exc``."""
    owner = getattr(exc, "owner", None)  # set by focalmix._checks
    if isinstance(owner, type):
        for cls, name in _GROUPS.items():
            if issubclass(owner, cls):
                return name
    return _group_from_traceback(exc)


def _group_from_traceback(exc: BaseException) -> str | None:
    # The fallback, for errors not raised through focalmix._checks (no `.owner`), or raised while building
    # an object that is not itself configured (a backbone inside the model): the innermost constructor
    # of a configured object on the traceback.
    group, tb = None, exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self") if tb.tb_frame.f_code.co_name == "__init__" else None
        for cls, name in _GROUPS.items():
            if obj is not None and isinstance(obj, cls):
                group = name
        tb = tb.tb_next
    return group


def name_flags(exc: BaseException, group: str | None, valid_flags: Callable[[], Iterable[str]]) -> str:
    """The message of ``exc`` naming the flag the user typed: `dropout` -> `--model.dropout`."""
    message = str(exc)
    if group is None:
        return message
    flags = set(valid_flags())

    def repl(m: re.Match) -> str:
        flag = f"--{group}.{m.group(1)}"
        return f"`{flag}`" if flag in flags else m.group(0)

    named = re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)`", repl, message)
    argument = getattr(exc, "argument", None)  # set by focalmix._checks
    flag = f"--{group}.{argument}"
    if argument and flag in flags and f"`{flag}`" not in named:
        named = f"{flag}: {named}"  # a message that does not name its argument still names the flag
    return named
