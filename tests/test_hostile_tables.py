"""Hostile CSVs (Hypothesis): each either trains one step or raises one of focalmix's own clear errors.

Generated: random column names (unicode, spaces, duplicates, empty), numeric/integer/boolean/text/mixed
columns, empty cells, NaN and infinities, huge and tiny magnitudes, a UTF-8 BOM, ``,``/``;``/tab
delimiters, a missing final newline, NaN or single-class targets. A case passes when the datamodule
plus one ``training_step`` of :class:`~focalmix.FocalMixClassifier` gives a finite loss and finite
gradients, or when it raises ``ValueError``/``TypeError``/``FileNotFoundError`` from a ``raise`` in the
focalmix package itself (never a ``KeyError``/``IndexError`` or an error escaping from pandas/torch).
Run with ``pytest -s`` to see how many cases trained and which errors the others hit.
"""

import csv
import io
import re
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import focalmix
from focalmix import FocalMixClassifier, FocalMixDataModule

PACKAGE = Path(focalmix.__file__).parent
EXAMPLES = 200

_NAME_PIECES = ["a", "b", "x 1", " lead", "trail ", "größe", "名前", "é", "Δt", "col", "1", "NA", "a.1", ""]
_WORDS = ["red", "blue", "", "NA", "true", "True", "0", "1.5", "naïve", "x y", "日本"]
_NUMBERS = ["1e308", "-1e308", "1e39", "1e-320", "5e-324", "inf", "-inf", "nan", "NaN", "0", "-0.0"]


@st.composite
def tables(draw):
    n_cols = draw(st.integers(1, 5))
    names = []
    for i in range(n_cols):
        roll = draw(st.integers(0, 19))
        if names and roll == 19:  # (Hypothesis draws small numbers more often: rare cases at the top)
            names.append(draw(st.sampled_from(names)))  # a duplicate
        elif roll == 18:
            names.append(draw(st.sampled_from(["", " "])))  # empty, or only a space
        else:  # unicode, spaces, digits: made distinct by the position, as real headers mostly are
            names.append(draw(st.sampled_from(_NAME_PIECES)) + draw(st.text(max_size=4)) + str(i))
    target = draw(st.sampled_from(["label", "y", "Ziel", "名前"]))
    names.insert(draw(st.integers(0, len(names))), target)
    n_rows = draw(st.integers(6, 30))
    kinds = [draw(st.sampled_from(["float", "int", "bool", "text", "mixed", "sparse"])) for _ in names]
    label_sets = [["no", "yes"], ["0", "1"], ["a", "b", "c"], ["no", "yes"], ["only"], ["no", "yes", ""]]
    labels = draw(st.sampled_from(label_sets))  # the last two: a single class, NaN labels
    rows = []
    for r in range(n_rows):
        row = []
        for name, kind in zip(names, kinds, strict=True):
            if name == target:  # cycled: drawn labels would mostly repeat the first (Hypothesis' bias)
                row.append(labels[(r * 7 + draw(st.integers(0, 1))) % len(labels)])
            else:
                row.append(draw(_cell(kind)))
        rows.append(row)
    return {
        "names": names,
        "rows": rows,
        "target": target,
        "sep": draw(st.sampled_from([",", ";", "\t"])),
        "bom": draw(st.booleans()),
        "final_newline": draw(st.booleans()),
    }


def _cell(kind):
    floats = st.floats(allow_nan=True, allow_infinity=False, width=64).map(repr)
    if kind == "float":
        return st.one_of(st.floats(-1e3, 1e3).map(repr), st.just(""), floats)
    if kind == "int":
        return st.one_of(st.integers(-(10**20), 10**20).map(str), st.integers(0, 5).map(str))
    if kind == "bool":
        return st.sampled_from(["True", "False", ""])
    if kind == "text":
        return st.one_of(st.sampled_from(_WORDS), st.text(max_size=5))
    if kind == "sparse":
        return st.sampled_from(["", "", "", "3"])
    return st.one_of(st.sampled_from(_NUMBERS + _WORDS), st.text(max_size=4), floats)


def _write(table, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=table["sep"], lineterminator="\n")
    writer.writerow(table["names"])
    writer.writerows(table["rows"])
    text = buffer.getvalue()
    if not table["final_newline"]:
        text = text[:-1]
    path.write_bytes(text.encode("utf-8-sig" if table["bom"] else "utf-8"))


def _one_step(path: Path, target: str) -> None:
    dm = FocalMixDataModule(str(path), target=target, batch_size=8, val_fraction=0.25)
    dm.setup("fit")
    model = FocalMixClassifier(
        num_features=dm.num_features, num_classes=dm.num_classes, task=dm.task, class_names=dm.class_names,
        feature_names=dm.feature_names, preprocessing=dm.preprocessing,
    )  # fmt: skip
    model.on_train_epoch_start()
    batch = next(iter(dm.train_dataloader()))
    loss = model.training_step(batch, 0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss), f"loss {loss} on {path.read_bytes()[:300]!r}"
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _kind(error: BaseException) -> str:
    """The error's message without the names and numbers in it, to count kinds of errors."""
    text = re.sub(r"\[.*?\]|'.*?'|\(.*?\)|\d+(\.\d+)?", "_", str(error).split(";")[0])
    return f"{type(error).__name__}: {' '.join(text.split()[:9])}"


def _raised_by_focalmix(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE.resolve())


def test_hostile_tables_train_or_raise_a_clear_error(tmp_path):
    torch.manual_seed(0)
    outcomes: Counter = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(table=tables())
    def run(table):
        path = tmp_path / "table.csv"
        _write(table, path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                _one_step(path, table["target"])
            except (ValueError, TypeError, FileNotFoundError) as error:
                assert str(error), f"{type(error).__name__} without a message"
                assert _raised_by_focalmix(error), f"{error!r} escaped from a library on {table}"
                outcomes[_kind(error)] += 1
                return
        outcomes["trained"] += 1

    run()
    total = sum(outcomes.values())
    print(f"\nhostile tables: {total} cases, {outcomes['trained']} trained one step; errors:")
    for kind, count in outcomes.most_common():
        if kind != "trained":
            print(f"  {count:4d}  {kind}")
    assert total >= EXAMPLES
    assert outcomes["trained"] >= total // 10  # the generator also makes tables that should train


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_a_plain_table_in_each_dialect_trains(tmp_path, sep):
    table = {
        "names": ["größe", " x ", "label"],
        "rows": [[str(i * 0.5), ["u", "v", ""][i % 3], ["no", "yes"][i % 2]] for i in range(20)],
        "target": "label",
        "sep": sep,
        "bom": True,
        "final_newline": False,
    }
    _write(table, tmp_path / "t.csv")
    _one_step(tmp_path / "t.csv", "label")
