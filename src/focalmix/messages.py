"""Lists for one-line error messages: the first few items, then how many more."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LISTED = 8  # items of a long list that an error message shows


def short_list(items: Sequence[Any] | dict, limit: int = LISTED) -> str:
    """A list (or ``{name: count}`` mapping) for a one-line message: the first ``limit`` items, then a count.

    Example:
        >>> short_list(["a", "b", "c"], limit=2), short_list({"x": 3, "y": 1})
        ("['a', 'b', ... 1 more]", "{'x': 3, 'y': 1}")
    """
    pairs = list(items.items()) if isinstance(items, dict) else list(items)
    shown = pairs[:limit]
    more = f", ... {len(pairs) - limit} more" if len(pairs) > limit else ""
    if isinstance(items, dict):
        return f"{{{', '.join(f'{_brief(k)}: {_brief(v)}' for k, v in shown)}{more}}}"
    return f"[{', '.join(_brief(v) for v in shown)}{more}]"


def _brief(value: Any, width: int = 40) -> str:
    """``repr(value)``, a long one cut in the middle (a column name can be a sentence)."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 13]}...{text[-10:]}"
