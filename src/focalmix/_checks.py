"""One way to check arguments: a declarative table of constraints and one function that applies it.

The idea is scikit-learn's ``_parameter_constraints``: each class or function states, per argument, the
types and ranges it accepts, and :func:`check` raises the same exceptions everywhere:
:class:`ArgumentTypeError` (a ``TypeError``) when no accepted type matches, :class:`ArgumentValueError`
(a ``ValueError``) when the type is right but the value is not. Both carry the argument's name
(``argument``) and, when given, the owner (the class being built) as data, so the command line maps an
error to its ``--group.name`` flag without reading the message or the traceback.

Messages keep one form, the argument's name in backticks: ``\\`dropout\\` must be in [0, 1), got 1.5.``

    >>> CONSTRAINTS = {
    ...     "dropout": [Interval(float, 0, 1, closed="left")],
    ...     "task": [Options("binary", "multiclass")],
    ... }
    >>> check({"dropout": 0.5, "task": "binary"}, CONSTRAINTS)
    >>> check({"dropout": 1.5, "task": "binary"}, CONSTRAINTS)
    Traceback (most recent call last):
    ...
    focalmix._checks.ArgumentValueError: `dropout` must be in [0, 1), got 1.5.
    >>> check({"dropout": "a lot", "task": "binary"}, CONSTRAINTS)
    Traceback (most recent call last):
    ...
    focalmix._checks.ArgumentTypeError: `dropout` must be a float, got 'a lot' (str).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ArgumentTypeError",
    "ArgumentValueError",
    "Interval",
    "Options",
    "Instance",
    "Satisfies",
    "check",
    "check_one",
]


class _ArgumentError:
    """What both exception types carry: the argument's name and the owner that was being built."""

    argument: str
    owner: type | None

    def _set(self, argument: str, owner: type | None) -> None:
        self.argument = argument
        self.owner = owner


class ArgumentTypeError(_ArgumentError, TypeError):
    """An argument of a type none of its constraints accepts."""

    def __init__(self, message: str, argument: str, owner: type | None = None) -> None:
        super().__init__(message)
        self._set(argument, owner)


class ArgumentValueError(_ArgumentError, ValueError):
    """An argument of an accepted type with a value outside its range or choices."""

    def __init__(self, message: str, argument: str, owner: type | None = None) -> None:
        super().__init__(message)
        self._set(argument, owner)


def _is_type(value: Any, kind: type) -> bool:
    """``bool`` is never an int or a float here; an int is a float (``dropout=0`` is fine)."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, numbers.Real)
    if kind is int:
        return isinstance(value, numbers.Integral)
    return isinstance(value, kind)


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (``int`` or ``float``) in a range; ``None`` bounds are open ends.

    ``closed``: which bounds belong to the range, ``"both"``, ``"left"``, ``"right"`` or ``"neither"``.
    NaN is refused, and so are infinities unless a bound is itself infinite (``high=math.inf``).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def type_ok(self, value: Any) -> bool:
        return _is_type(value, self.kind)

    def value_ok(self, value: Any) -> bool:
        v = float(value)
        if math.isnan(v) or (math.isinf(v) and not any(map(_infinite, (self.low, self.high)))):
            return False
        low_in = self.closed in ("both", "left")
        high_in = self.closed in ("both", "right")
        if self.low is not None and (v < self.low or (v == self.low and not low_in)):
            return False
        if self.high is not None and (v > self.high or (v == self.high and not high_in)):
            return False
        return True

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>=' if self.closed in ('both', 'left') else '>'} {_num(self.low)}"
        if self.high is not None:
            return f"{'<=' if self.closed in ('both', 'right') else '<'} {_num(self.high)}"
        return "finite"

    def type_name(self) -> str:
        return "an int" if self.kind is int else "a float"


@dataclass(frozen=True, init=False)
class Options:
    """One of a few strings (or other hashable values)."""

    choices: tuple[Any, ...]

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def type_ok(self, value: Any) -> bool:
        return any(type(value) is type(c) for c in self.choices)

    def value_ok(self, value: Any) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return f"one of {self.choices}"

    def type_name(self) -> str:
        return "one of " + repr(self.choices)


@dataclass(frozen=True)
class Instance:
    """Any instance of ``kind`` (a type or a tuple of types); ``name`` is what the message calls it."""

    kind: type | tuple[type, ...]
    name: str = ""

    def type_ok(self, value: Any) -> bool:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        return any(_is_type(value, k) for k in kinds)

    def value_ok(self, value: Any) -> bool:
        return True

    def describe(self) -> str:
        return self.type_name()

    def type_name(self) -> str:
        if self.name:
            return self.name
        return _kind_names(self.kind)


@dataclass(frozen=True)
class Satisfies:
    """A value of ``kind`` for which ``test`` is true; ``describe`` finishes "`name` must be ..."."""

    kind: type | tuple[type, ...]
    test: Callable[[Any], bool]
    description: str

    def type_ok(self, value: Any) -> bool:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        return any(_is_type(value, k) for k in kinds)

    def value_ok(self, value: Any) -> bool:
        return bool(self.test(value))

    def describe(self) -> str:
        return self.description

    def type_name(self) -> str:
        return _kind_names(self.kind)


Constraint = Interval | Options | Instance | Satisfies | None


def check_one(value: Any, name: str, constraints: list[Constraint], owner: type | None = None) -> Any:
    """Check one value against its constraints (any one may accept it; ``None`` in the list accepts None).

    Returns the value, so ``self.x = check_one(x, "x", [...])`` reads as one line.

        >>> check_one(3, "num_classes", [Interval(int, 2)])
        3
        >>> check_one(None, "seed", [None, Interval(int, 0)])
        >>> check_one(True, "num_classes", [Interval(int, 2)])
        Traceback (most recent call last):
        ...
        focalmix._checks.ArgumentTypeError: `num_classes` must be an int, got True (bool).
    """
    if value is None and None in constraints:
        return value
    real = [c for c in constraints if c is not None]
    typed = [c for c in real if c.type_ok(value)]
    if not typed:
        kinds = " or ".join(dict.fromkeys(c.type_name() for c in real))
        if None in constraints:
            kinds += " or None"
        raise ArgumentTypeError(
            f"`{name}` must be {kinds}, got {value!r} ({type(value).__name__}).", name, owner
        )
    if not any(c.value_ok(value) for c in typed):
        wants = " or ".join(dict.fromkeys(c.describe() for c in typed))
        raise ArgumentValueError(f"`{name}` must be {wants}, got {value!r}.", name, owner)
    return value


def check(
    params: Mapping[str, Any],
    constraints: Mapping[str, list[Constraint]],
    owner: type | None = None,
) -> None:
    """Check every argument of ``params`` that ``constraints`` names (others are left to the caller)."""
    for name, allowed in constraints.items():
        if name in params:
            check_one(params[name], name, allowed, owner)


def _kind_names(kind: type | tuple[type, ...]) -> str:
    """``(int, str)`` -> "an int or a str"."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(("an " if k.__name__[0] in "aeiou" else "a ") + k.__name__ for k in kinds)


def _infinite(bound: float | None) -> bool:
    return bound is not None and math.isinf(bound)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
