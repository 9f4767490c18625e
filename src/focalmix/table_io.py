"""Reading CSV and Parquet files into DataFrames, with one clear error for each way a file goes wrong.

The tables' counterpart of :mod:`focalmix.media_io`: used by the table sources
(:mod:`focalmix.sources.tables`) and by media manifests (:mod:`focalmix.media`).
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from focalmix.messages import short_list

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
_SNIFF_BYTES = 16 * 1024  # of a CSV's head, to find its delimiter and header


def is_table(source: object) -> bool:
    """True for a path (or name) ending in a table suffix (``.csv``, ``.parquet``, ``.pq``).

    Example:
        >>> is_table("data/train.CSV"), is_table("x.npz")
        (True, False)
    """
    return str(source).lower().endswith(TABLE_SUFFIXES)


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame with str column names; one clear error for a bad file.

    CSV: UTF-8 with or without a byte-order mark; the delimiter (``,`` ``;`` tab ``|``) is sniffed from
    the first 16 KB (comma when unsure). Empty, duplicate or mangled column names, rows with more fields
    than the header, a last line cut short and unparsable or non-UTF-8 files raise ``ValueError``.
    """
    import pandas as pd

    if path.suffix.lower() == ".csv":
        df = _read_csv(path)
    else:
        try:
            df = pd.read_parquet(path)
        except ImportError:
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others on a damaged file
            raise ValueError(
                f"could not read {path.name} as Parquet ({type(e).__name__}: {str(e)[:120]}); the file "
                "may be truncated or not Parquet: re-create it."
            ) from e
    if len(df) == 0:
        raise ValueError(f"{path.name} is empty (no rows); check the file, it needs a header and data rows.")
    df.columns = [str(c) for c in df.columns]
    _check_names(list(df.columns), path.name)
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.strip():
        raise ValueError(f"{path.name} is empty (no rows); check the file, it needs a header and data rows.")
    try:  # a character cut at the sample's end is not an error
        text = head.decode("utf-8-sig", errors="strict" if len(head) < _SNIFF_BYTES else "ignore")
    except UnicodeDecodeError as e:
        raise ValueError(_not_utf8(path, e)) from e
    cut = text.rfind("\n") + 1 if len(head) == _SNIFF_BYTES else 0
    sample = text[:cut] or text  # whole lines only
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:  # one column, or too few lines to tell
        sep = ","
    try:
        header = next(csv.reader(io.StringIO(sample, newline=""), delimiter=sep), [])
    except csv.Error as e:
        raise ValueError(f"could not read the header of {path.name} ({e}); check the first line.") from e
    _check_names(header, path.name)
    try:
        with warnings.catch_warnings():
            # without index_col=False, rows longer than the header silently turn column 1 into the index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig", index_col=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except UnicodeDecodeError as e:
        raise ValueError(_not_utf8(path, e)) from e
    except (pd.errors.ParserError, pd.errors.ParserWarning, csv.Error, ValueError) as e:
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"could not read {path.name} as a {_SEP_NAMES.get(sep, repr(sep))}-separated CSV ({detail}); "
            "the file may be truncated, or rows have more fields than the header: check or re-create it."
        ) from e
    _check_last_line(path, sep, len(header))
    return _decimal_commas(df) if sep != "," else df


_DECIMAL_COMMA = r"\s*[+-]?(?:\d+(?:,\d*)?|,\d+)(?:[eE][+-]?\d+)?\s*"


def _decimal_commas(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns whose every value is a number written with a decimal comma ("1,5"), as numbers.

    Spreadsheets where the comma is the decimal mark export CSV separated by ``;`` (or tabs). Only a
    column whose every non-missing value has that form, one of them with a comma, is converted; values
    with thousands separators ("1.234,5") stay text.

    Example:
        >>> import pandas as pd
        >>> df = _decimal_commas(pd.DataFrame({"a": ["1,5", "-2", None], "b": ["1,5", "x", "2"]}))
        >>> df["a"].tolist()[:2], df["b"].tolist()
        ([1.5, -2.0], ['1,5', 'x', '2'])
    """
    import pandas as pd

    for col in df.columns:
        text = df[col].dropna()
        if len(text) and pd.api.types.is_string_dtype(text) and text.str.contains(",", regex=False).any():
            if text.str.fullmatch(_DECIMAL_COMMA).all():
                df[col] = pd.to_numeric(df[col].str.replace(",", ".", regex=False))
    return df


_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    return (
        f"{path.name} is not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at offset "
        f"{error.start}); save it as UTF-8 (Excel: 'CSV UTF-8'), or as Parquet."
    )


def _check_names(names: list[str], name: str) -> None:
    empty = [i + 1 for i, n in enumerate(names) if n == "" or n.startswith("Unnamed: ")]
    if empty:
        raise ValueError(
            f"columns {short_list(empty)} (1-based) of {name} have no name; name them in the header, or, "
            "for an index saved by pandas, re-save with `to_csv(..., index=False)`."
        )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(
            f"column names {short_list(dup)} appear more than once in {name}; give each column its own name."
        )


def _check_last_line(path: Path, sep: str, width: int) -> None:
    """A last line without a line end and with fewer fields than the header: a file cut short."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - _SNIFF_BYTES))
        tail = f.read()
    if not tail or tail.endswith((b"\n", b"\r")):
        return
    last = tail.splitlines()[-1].decode("utf-8", errors="replace")
    fields = next(csv.reader([last], delimiter=sep), [])
    if len(fields) < width:
        raise ValueError(
            f"{path.name} looks truncated: its last line has {len(fields)} of {width} fields and no line "
            "end (an interrupted copy or a full disk?); re-create the file, or delete that line."
        )
