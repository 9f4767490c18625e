"""The feature cache's shards on disk: write-once, committed by their JSON, read without ever unpickling.

Layout (one folder per namespace, so entries of different backbones or input settings never mix)::

    <root>/<namespace>/shard-<uuid>.npy    float32 (n, F), no pickle
    <root>/<namespace>/shard-<uuid>.json   {"format": 1, "dtype": "float32", "n": n, "dim": F, "keys": [...]}

A shard is written once and never changed: the ``.npy`` goes to a temporary name, is fsynced and renamed,
then the ``.json`` (the commit marker) the same way. Readers only use shards whose JSON and matching ``.npy``
both exist, so a killed writer leaves nothing that is read as complete, and two processes filling one
cache at once need no locks. Leftovers (temporary files, a ``.npy`` without its JSON) are removed once an
hour old; a damaged shard is ignored with one warning and removed. Files are read with ``json`` and
``np.load(..., allow_pickle=False)`` only: a cache folder may come from elsewhere and must never run code.

Keys and namespaces are :mod:`focalmix.cache_keys`'; filling the cache, under DDP too, is
:func:`focalmix.cache.compute_features`. Loads numpy only.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from focalmix._checks import ArgumentTypeError, ArgumentValueError, Instance, Satisfies, check

__all__ = ["FORMAT_VERSION", "FeatureCache", "as_matrix"]

FORMAT_VERSION = 1
_STALE_S = 3600.0  # an uncommitted file this old belongs to a dead writer
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CACHE_ARGS = {
    "root": [Instance((str, os.PathLike), "a folder path")],
    "namespace": [Satisfies(str, _NAMESPACE.fullmatch, "a plain folder name (see namespace())")],
}


class FeatureCache:
    """Feature vectors of input items on disk, in write-once shards under ``root/namespace``.

    There is no in-memory stand-in: to run without a cache, pass ``cache=None`` to
    :func:`~focalmix.cache.compute_features` (``root=None`` is refused here, with that advice).

    Args:
        root: the cache folder, e.g. :func:`~focalmix.cache_keys.default_cache_dir`; created on the first
            :meth:`store`.
        namespace: the subfolder, from :func:`~focalmix.cache_keys.namespace`.

    Raises:
        TypeError: if ``root`` is None or not a path.
        ValueError: if ``root`` is a file or ``namespace`` is not a plain folder name.

    Example:
        >>> import tempfile
        >>> from focalmix.cache_keys import namespace
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     cache = FeatureCache(tmp, namespace("toy-v1", {"dim": 2}))
        ...     cache.store(["a", "b"], np.eye(2))
        ...     feats, hit = cache.lookup(["b", "c"])
        >>> hit.tolist(), feats[0].tolist()
        ([True, False], [0.0, 1.0])
    """

    def __init__(self, root: str | os.PathLike, namespace: str) -> None:
        if root is None:
            raise ArgumentTypeError(
                "`root` is None; to run without a cache pass `cache=None` to compute_features.",
                "root",
                FeatureCache,
            )
        check({"root": root, "namespace": namespace}, _CACHE_ARGS, FeatureCache)
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ArgumentValueError(
                f"`root` {str(self.root)!r} is a file; pass a folder for the cache.", "root", FeatureCache
            )
        self.namespace = namespace
        self.folder = self.root / namespace
        self._shards: dict[str, tuple[list[str], int]] = {}  # committed shard -> (its keys, F)
        self._index: dict[str, tuple[str, int]] = {}  # key -> (shard, row)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, {self.namespace!r})"

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """Features of the keys found, rows in ``keys`` order (rows of misses are zero), and the hit mask.

        Returns ``(None, mask)`` when no key is found (the feature width is then unknown).

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     FeatureCache(tmp, "ns").lookup(["a"])
            (None, array([False]))
        """
        return self.lookup_into(keys, None, np.arange(len(keys)), len(keys))

    def lookup_into(
        self, keys: Sequence[str], out: np.ndarray | None, rows: np.ndarray, total: int
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """Features of the keys found copied into ``out[rows]``, and the hit mask; rows of misses untouched.

        ``out`` is float32 (total, F), or None: then it is allocated (zeros) when a key is found, at the
        width of the shard holding it. A hit in a shard of another width than ``out`` counts as a miss.
        Returns ``(out, mask)``.

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     cache = FeatureCache(tmp, "ns")
            ...     cache.store(["a"], np.ones((1, 2)))
            ...     out, hit = cache.lookup_into(["b", "a"], None, np.array([0, 2]), 3)
            >>> out.tolist(), hit.tolist()
            ([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], [False, True])
        """
        mask, groups, dim = self._locate(keys)
        if out is None and dim is not None:
            out = np.zeros((total, dim), dtype=np.float32)  # (N, F)
        if out is not None:
            self._copy(groups, out, np.asarray(rows), mask)
        return out, mask

    def store(self, keys: Sequence[str], features: Any) -> None:
        """Add one shard holding ``features`` (array or tensor, (n, F)) under ``keys``; n = 0 writes nothing.

        Raises:
            TypeError: if a key is not a string.
            ValueError: if ``features`` is not 2-D with one row per key.

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     cache = FeatureCache(tmp, "ns")
            ...     cache.store(["a"], np.ones((1, 3)))
            ...     cache.size_bytes() > 0
            True
        """
        keys = list(keys)
        if not all(isinstance(k, str) for k in keys):
            raise ArgumentTypeError("`keys` must be strings (see file_key()).", "keys", FeatureCache)
        if not keys and len(features) == 0:
            return
        arr = as_matrix(features, "features", len(keys))
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}"
        data, meta = self.folder / f"{name}.npy", self.folder / f"{name}.json"
        _write_atomic(data, lambda f: np.lib.format.write_array(f, arr, allow_pickle=False))
        _fsync_dir(self.folder)  # the data's name is durable before its commit marker exists
        text = json.dumps(
            dict(format=FORMAT_VERSION, dtype="float32", n=len(keys), dim=arr.shape[1], keys=keys)
        )
        try:
            _write_atomic(meta, lambda f: f.write(text.encode("utf-8")))
        except BaseException:
            data.unlink(missing_ok=True)
            raise
        self._shards[name] = (keys, arr.shape[1])
        self._add(name, keys)

    def clear(self) -> None:
        """Remove this namespace's folder and everything in it (other namespaces are kept)."""
        try:
            entries = [e for e in os.scandir(self.folder) if e.is_file()]
        except FileNotFoundError:
            entries = []
        # commit markers first: a reader never meets a marker whose data is already gone
        for entry in sorted(entries, key=lambda e: not e.name.endswith(".json")):
            Path(entry.path).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass  # a concurrent writer added a shard, or the folder never existed
        self._shards.clear()
        self._index.clear()

    def size_bytes(self) -> int:
        """Bytes used by this namespace on disk."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        return sum(_size(e) for e in entries)

    def _locate(self, keys: Sequence[str]) -> tuple[np.ndarray, dict[str, tuple[list, list]], int | None]:
        self._refresh()
        mask = np.zeros(len(keys), dtype=bool)
        groups: dict[str, tuple[list, list]] = {}  # shard -> (positions in keys, rows in shard)
        for pos, key in enumerate(keys):
            hit = self._index.get(key)
            if hit is not None:
                mask[pos] = True
                group = groups.setdefault(hit[0], ([], []))
                group[0].append(pos)
                group[1].append(hit[1])
        dim = self._shards[next(iter(groups))][1] if groups else None
        return mask, groups, dim

    def _copy(self, groups: dict, out: np.ndarray, dest: np.ndarray, mask: np.ndarray) -> None:
        """out[dest[p]] = features of hit p; a hit whose shard is gone or of another width becomes a miss."""
        for name, (positions, rows) in groups.items():
            positions, rows = np.asarray(positions), np.asarray(rows)
            try:
                if self._shards[name][1] != out.shape[1]:
                    raise ValueError("feature width differs")
                data = np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):  # removed by clear() in another process since _refresh
                mask[positions] = False
                continue
            order = np.argsort(rows)  # read the memmap front to back
            out[dest[positions[order]]] = data[rows[order]]
            del data

    def _refresh(self) -> None:
        """Index the shards committed since the last call; forget those removed."""
        names = self._committed()
        gone = self._shards.keys() - names
        if gone:
            for name in gone:
                del self._shards[name]
            self._index = {}
            for name, (keys, _) in self._shards.items():
                self._add(name, keys)
        for name in sorted(names - self._shards.keys()):
            entry = self._read(name)
            if entry is not None:
                self._shards[name] = entry
                self._add(name, entry[0])

    def _add(self, name: str, keys: list[str]) -> None:
        # of two shards holding a key, the lower name wins, so all processes read the same row
        for row, key in enumerate(keys):
            held = self._index.get(key)
            if held is None or name < held[0]:
                self._index[key] = (name, row)

    def _committed(self) -> set[str]:
        """Names of the shards with a commit marker; removes uncommitted files older than an hour."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return set()
        names = {e.name[:-5] for e in entries if e.name.startswith("shard-") and e.name.endswith(".json")}
        cutoff = time.time() - _STALE_S
        for e in entries:
            temp = e.name.startswith(".shard-") and e.name.endswith(".tmp")
            orphan = e.name.startswith("shard-") and e.name.endswith(".npy") and e.name[:-4] not in names
            try:
                if (temp or orphan) and e.stat().st_mtime < cutoff:
                    os.unlink(e.path)
            except OSError:
                pass
        return names

    def _read(self, name: str) -> tuple[list[str], int] | None:
        """A shard's keys and width after checking its JSON and ``.npy`` agree; None if unusable."""
        meta_path = self.folder / f"{name}.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None  # removed by clear() since the listing
        except (OSError, ValueError) as err:
            return self._damaged(name, f"unreadable JSON: {err}")
        if isinstance(meta, dict) and isinstance(meta.get("format"), int) and meta["format"] > FORMAT_VERSION:
            return None  # written by a newer focalmix sharing this folder: leave it alone
        problem = _meta_problem(meta)
        if problem:
            return self._damaged(name, problem)
        try:
            data = np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            return self._damaged(name, "data file missing") if meta_path.exists() else None
        except (OSError, ValueError, EOFError) as err:
            return self._damaged(name, f"unreadable data: {err}")
        shape, dtype = data.shape, data.dtype
        del data
        if dtype != np.float32 or shape != (meta["n"], meta["dim"]):
            return self._damaged(
                name, f"data is {dtype} {shape}, JSON says float32 ({meta['n']}, {meta['dim']})"
            )
        return meta["keys"], meta["dim"]

    def _damaged(self, name: str, reason: str) -> None:
        warnings.warn(
            f"focalmix: ignoring damaged cache shard {name} in {self.folder} ({reason}); "
            "its items will be recomputed and the shard removed.",
            RuntimeWarning,
            stacklevel=5,
        )
        for suffix in (".json", ".npy"):
            try:
                (self.folder / f"{name}{suffix}").unlink(missing_ok=True)
            except OSError:
                pass


def _size(entry: os.DirEntry) -> int:
    try:
        return entry.stat().st_size if entry.is_file() else 0
    except FileNotFoundError:  # removed meanwhile
        return 0


def _meta_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or meta.get("dtype") != "float32":
        return f"JSON is not a format-{FORMAT_VERSION} float32 shard"
    keys, n, dim = meta.get("keys"), meta.get("n"), meta.get("dim")
    if not isinstance(n, int) or not isinstance(dim, int) or n < 1 or dim < 1:
        return f"bad n={n!r} or dim={dim!r}"
    if not isinstance(keys, list) or len(keys) != n or not all(isinstance(k, str) for k in keys):
        return f"`keys` is not a list of {n} strings"
    return None


def _write_atomic(path: Path, write: Callable[[Any], Any]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open a folder; its renames are durable enough for a cache
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def as_matrix(x: Any, what: str, rows: int) -> np.ndarray:
    """``x`` (a numpy array or a tensor, maybe bfloat16 or on a GPU) as C-contiguous float32 (rows, F).

    Raises:
        ValueError: ``x`` is not 2-D with ``rows`` rows; the message names it as ``what``.
    """
    if hasattr(x, "detach"):  # a torch tensor, maybe bfloat16 or on a GPU
        x = x.detach().float().cpu().numpy()
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise ArgumentValueError(
            f"`{what}` must be 2-D with {rows} rows (one per key), got shape {arr.shape}.", what.split("(")[0]
        )
    return arr
