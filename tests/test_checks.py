"""The declarative argument checks: the exception types, the names they carry, and the messages."""

import math

import pytest

from focalmix._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    Instance,
    Interval,
    Options,
    Satisfies,
    check,
    check_one,
)

CONSTRAINTS = {
    "dropout": [Interval(float, 0, 1, closed="left")],
    "num_classes": [Interval(int, 2)],
    "task": [Options("binary", "multiclass")],
    "seed": [None, Interval(int, 0)],
    "names": [None, Instance(list, "a list of names")],
    "even": [Satisfies(int, lambda v: v % 2 == 0, "an even number")],
}
GOOD = {"dropout": 0.0, "num_classes": 2, "task": "binary", "seed": None, "names": ["a"], "even": 4}


def test_good_values_pass_and_return():
    check(GOOD, CONSTRAINTS)
    assert check_one(0.5, "dropout", CONSTRAINTS["dropout"]) == 0.5
    assert check_one(0, "dropout", CONSTRAINTS["dropout"]) == 0  # an int is a float here


@pytest.mark.parametrize(
    "name, value, kind, message",
    [
        ("dropout", 1.0, ArgumentValueError, "`dropout` must be in [0, 1), got 1.0."),
        ("dropout", -0.1, ArgumentValueError, "`dropout` must be in [0, 1), got -0.1."),
        ("dropout", math.nan, ArgumentValueError, "`dropout` must be in [0, 1), got nan."),
        ("dropout", "x", ArgumentTypeError, "`dropout` must be a float, got 'x' (str)."),
        ("dropout", True, ArgumentTypeError, "`dropout` must be a float, got True (bool)."),
        ("num_classes", 1, ArgumentValueError, "`num_classes` must be >= 2, got 1."),
        ("num_classes", 2.0, ArgumentTypeError, "`num_classes` must be an int, got 2.0 (float)."),
        ("task", "bin", ArgumentValueError, "`task` must be one of ('binary', 'multiclass'), got 'bin'."),
        ("seed", -1, ArgumentValueError, "`seed` must be >= 0, got -1."),
        ("seed", "1", ArgumentTypeError, "`seed` must be an int or None, got '1' (str)."),
        ("names", "a", ArgumentTypeError, "`names` must be a list of names or None, got 'a' (str)."),
        ("even", 3, ArgumentValueError, "`even` must be an even number, got 3."),
    ],
)
def test_bad_values_raise_one_type_with_the_name_as_data(name, value, kind, message):
    class Owner:
        pass

    with pytest.raises(kind) as info:
        check({**GOOD, name: value}, CONSTRAINTS, owner=Owner)
    assert str(info.value) == message
    assert info.value.argument == name and info.value.owner is Owner
    # the standard types, so callers that catch TypeError / ValueError keep working
    assert isinstance(info.value, TypeError if kind is ArgumentTypeError else ValueError)


def test_unnamed_arguments_are_left_alone():
    check({"other": object()}, CONSTRAINTS)
    with pytest.raises(ArgumentValueError):
        check({"other": object(), "dropout": 2.0}, CONSTRAINTS)


@pytest.mark.parametrize(
    "interval, inside, outside",
    [
        (Interval(float, 0, 1, closed="neither"), [0.5], [0.0, 1.0]),
        (Interval(float, 0, 1, closed="right"), [1.0], [0.0]),
        (Interval(float, 0, None, closed="neither"), [1e-9, 1e9], [0.0, math.inf]),
        (Interval(float, None, 0), [-5.0, 0.0], [0.1]),
    ],
)
def test_interval_bounds(interval, inside, outside):
    for v in inside:
        assert interval.value_ok(v), v
    for v in outside:
        assert not interval.value_ok(v), v


def test_type_names_read_as_english():
    with pytest.raises(ArgumentTypeError, match=r"`n` must be an int or a str, got 1.5 \(float\)"):
        check_one(1.5, "n", [Satisfies((int, str), bool, "anything")])
    with pytest.raises(ArgumentTypeError, match=r"`n` must be an int, got 'x'"):
        check_one("x", "n", [Instance(int)])
