"""The feature cache's names: where it lives, one key per input item, one namespace per backbone and settings.

A key names one input item (a file, a clip's offset into it, an augmented view); a namespace names
everything else that changes the features (the backbone and its weights, sample rate, image size,
augmentation). The shards themselves are :mod:`focalmix.cache_store`'s. Loads nothing beyond the standard
library.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from focalmix._checks import ArgumentTypeError, ArgumentValueError, Instance, Interval, Satisfies, check

__all__ = ["default_cache_dir", "file_key", "namespace"]

_KEY_ARGS = {
    "view": [Interval(int, 0)],
    "start": [Satisfies(float, lambda v: math.isfinite(v) and v >= 0, "a finite number of seconds >= 0")],
}
_NAMESPACE_ARGS = {
    "backbone_identity": [Satisfies(str, bool, "a non-empty string")],
    "settings": [Instance(dict)],
}


def default_cache_dir() -> Path:
    """The cache folder used when none is given: ``$XDG_CACHE_HOME/focalmix`` or ``~/.cache/focalmix``.

    Example:
        >>> default_cache_dir().name
        'focalmix'
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says a relative $XDG_CACHE_HOME is invalid and must be ignored
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "focalmix"


def file_key(path: str | os.PathLike, start: float = 0.0, view: int = 0) -> str:
    """The identity of one input item: ``realpath|size|mtime_ns|start|view``.

    A touched or rewritten file gets a new key, so a stale entry is never used. Fields are split from the
    right, so a ``|`` inside the path keeps the key unambiguous.

    Args:
        path: an existing file.
        start: offset in seconds of a clip cut from a longer file, >= 0; default 0.
        view: augmented-view number, >= 0; 0 (default) is the original input.

    Returns:
        The key, a string.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        TypeError: if ``view`` is not an int or ``start`` not a number.
        ValueError: if ``start`` or ``view`` is negative (or ``start`` not finite).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     file_key(f.name, start=1.5, view=2).endswith("|1.5|2")
        True
    """
    check({"view": view, "start": start}, _KEY_ARGS)
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"`path` {str(path)!r} does not exist; file_key needs an existing file."
        ) from None
    return f"{real}|{st.st_size}|{st.st_mtime_ns}|{float(start)!r}|{view}"


def namespace(backbone_identity: str, settings: dict) -> str:
    """A short sha256 hex of the backbone identity and the input settings, as canonical JSON.

    Args:
        backbone_identity: names the backbone and its weights (include a hash of the weights).
        settings: everything else that changes the features: sample rate, clip length, image size,
            augmentation seed and parameters. JSON values only; key order does not matter.

    Returns:
        16 hex digits, used as the cache's subfolder.

    Raises:
        TypeError: if ``backbone_identity`` is not a string or ``settings`` not a dict of JSON values.
        ValueError: if ``backbone_identity`` is empty or ``settings`` holds NaN or infinity.

    Example:
        >>> ns = namespace("cnn@sha256:ab12", {"size": 224, "seed": 0})
        >>> ns == namespace("cnn@sha256:ab12", {"seed": 0, "size": 224}), len(ns)
        (True, 16)
    """
    check({"backbone_identity": backbone_identity, "settings": settings}, _NAMESPACE_ARGS)
    try:
        text = json.dumps(
            {"backbone": backbone_identity, "settings": settings},
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )
    except TypeError as err:
        raise ArgumentTypeError(
            f"`settings` must hold JSON values only ({err}); convert e.g. a Path with str().", "settings"
        ) from None
    except ValueError as err:
        raise ArgumentValueError(f"`settings` must not hold NaN or infinity ({err}).", "settings") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
