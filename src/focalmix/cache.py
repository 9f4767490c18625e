"""Feature cache for frozen backbones: each input item passes the backbone once, not once per epoch.

Layout on disk (one folder per namespace, so entries of different backbones or input settings never mix)::

    <root>/<namespace>/shard-<uuid>.npy    float32 (n, F), no pickle
    <root>/<namespace>/shard-<uuid>.json   {"format": 1, "dtype": "float32", "n": n, "dim": F, "keys": [...]}

A shard is written once and never changed: the ``.npy`` goes to a temporary name, is fsynced and renamed,
then the ``.json`` (the commit marker) the same way. Readers only use shards whose JSON and matching ``.npy``
both exist, so a killed writer leaves nothing that is read as complete, and two processes filling one
cache at once need no locks. Leftovers (temporary files, a ``.npy`` without its JSON) are removed once an
hour old; a damaged shard is ignored with one warning and removed. Files are read with ``json`` and
``np.load(..., allow_pickle=False)`` only: a cache folder may come from elsewhere and must never run code.

``import focalmix.cache`` loads numpy only; torch comes with the caller's tensors or ``all_gather``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FeatureCache", "compute_features", "default_cache_dir", "file_key", "namespace"]

FORMAT_VERSION = 1
_STALE_S = 3600.0  # an uncommitted file this old belongs to a dead writer
_PROGRESS_EVERY_S = 2.0
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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
        TypeError: if ``view`` is not an int.
        ValueError: if ``start`` or ``view`` is negative (or ``start`` not finite).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     file_key(f.name, start=1.5, view=2).endswith("|1.5|2")
        True
    """
    if isinstance(view, bool) or not isinstance(view, int):
        raise TypeError(f"`view` must be an int (0 = the original input), got {type(view).__name__}.")
    if view < 0:
        raise ValueError(f"`view` must be >= 0 (0 = the original input), got {view}.")
    if not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
        raise ValueError(f"`start` must be a finite number of seconds >= 0, got {start!r}.")
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
        TypeError: if ``settings`` is not a dict of JSON values.
        ValueError: if ``backbone_identity`` is empty or ``settings`` holds NaN or infinity.

    Example:
        >>> ns = namespace("cnn@sha256:ab12", {"size": 224, "seed": 0})
        >>> ns == namespace("cnn@sha256:ab12", {"seed": 0, "size": 224}), len(ns)
        (True, 16)
    """
    if not isinstance(backbone_identity, str) or not backbone_identity:
        raise ValueError(f"`backbone_identity` must be a non-empty string, got {backbone_identity!r}.")
    if not isinstance(settings, dict):
        raise TypeError(f"`settings` must be a dict, got {type(settings).__name__}.")
    try:
        text = json.dumps(
            {"backbone": backbone_identity, "settings": settings},
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )
    except TypeError as err:
        raise TypeError(
            f"`settings` must hold JSON values only ({err}); convert e.g. a Path with str()."
        ) from None
    except ValueError as err:
        raise ValueError(f"`settings` must not hold NaN or infinity ({err}).") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class FeatureCache:
    """Feature vectors of input items on disk, in write-once shards under ``root/namespace``.

    There is no in-memory stand-in: to run without a cache, pass ``cache=None`` to
    :func:`compute_features` (``root=None`` is refused here, with that advice).

    Args:
        root: the cache folder, e.g. :func:`default_cache_dir`; created on the first :meth:`store`.
        namespace: the subfolder, from :func:`namespace`.

    Raises:
        TypeError: if ``root`` is None or not a path.
        ValueError: if ``root`` is a file or ``namespace`` is not a plain folder name.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     cache = FeatureCache(tmp, namespace("toy-v1", {"dim": 2}))
        ...     cache.store(["a", "b"], np.eye(2))
        ...     feats, hit = cache.lookup(["b", "c"])
        >>> hit.tolist(), feats[0].tolist()
        ([True, False], [0.0, 1.0])
    """

    def __init__(self, root: str | os.PathLike, namespace: str) -> None:
        if root is None:
            raise TypeError("`root` is None; to run without a cache pass `cache=None` to compute_features.")
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"`root` must be a folder path, got {type(root).__name__}.")
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"`namespace` must be a plain folder name (see namespace()), got {namespace!r}.")
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"`root` {str(self.root)!r} is a file; pass a folder for the cache.")
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
        mask, groups, dim = self._locate(keys)
        if dim is None:
            return None, mask
        out = np.zeros((len(mask), dim), dtype=np.float32)  # (N, F)
        self._copy(groups, out, np.arange(len(mask)), mask)
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
            raise TypeError("`keys` must be strings (see file_key()).")
        if not keys and len(features) == 0:
            return
        arr = _as_matrix(features, "features", len(keys))
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


def _as_matrix(x: Any, what: str, rows: int) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, maybe bfloat16 or on a GPU
        x = x.detach().float().cpu().numpy()
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise ValueError(f"`{what}` must be 2-D with {rows} rows (one per key), got shape {arr.shape}.")
    return arr


def compute_features(
    keys: Sequence[str],
    encode: Callable[[list[int]], Any],
    cache: FeatureCache | None,
    batch_size: int = 64,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    all_gather: Callable[[Any], Any] | None = None,
    progress: Callable[[str], None] | None = None,
    label: str = "features",
    shard_rows: int = 2048,
) -> tuple[np.ndarray, dict]:
    """Features of every key: read from ``cache`` where present, the rest computed once and stored.

    ``encode(positions)`` receives a list of at most ``batch_size`` indices into ``keys`` and returns their
    features, (len(positions), F), as a numpy array or tensor (run under ``torch.no_grad`` when torch is
    loaded). Computed rows are stored in shards of about ``shard_rows`` rows, so an interruption loses
    little. ``progress`` gets a line at most every 2 s while computing and one final line, e.g.
    ``focalmix: features train: 1,500 items, 1,200 from cache, 300 computed (312 items/s)`` for
    ``label="features train"``.

    Under DDP every rank passes the same ``keys``; the missing items are split as
    ``missing[rank::world_size]``, so each passes the backbone once in total, and every rank returns
    identical features:

    * with a cache (its folder shared by all ranks), each rank stores its share, calls ``barrier()``, then
      reads the others' shares from the folder (items still absent, e.g. a folder not shared across
      nodes, are computed locally with a warning);
    * with ``cache=None``, ``all_gather(tensor)`` must return the CPU-or-device tensors of all ranks
      stacked, (world_size, *tensor.shape), as Lightning's ``trainer.strategy.all_gather`` does; a list of
      per-rank tensors (as ``torch.distributed.all_gather`` fills) is accepted too. Shares are padded to
      one shape. With NCCL, move the tensor: ``lambda t: strategy.all_gather(t.to(strategy.root_device))``.

    Args:
        keys: one :func:`file_key` per item.
        encode: computes features for a list of positions in ``keys``.
        cache: where features are read and stored; None computes everything.
        batch_size: positions per ``encode`` call, >= 1; default 64.
        rank: this process's rank, in [0, world_size); default 0.
        world_size: number of processes, >= 1; default 1.
        barrier: waits for all ranks; needed when world_size > 1 with a cache.
        all_gather: see above; needed when world_size > 1 without a cache.
        progress: receives progress lines (e.g. ``print``); None is silent.
        label: names the split in progress lines; default ``"features"``.
        shard_rows: rows per stored shard, >= 1; default 2048.

    Returns:
        float32 features (N, F), rows in ``keys`` order ((N, 0) when nothing was found or computed), and
        stats ``{"total", "from_cache", "computed", "from_ranks", "seconds", "items_per_s"}``: items read
        from the cache before computing, encoded by this rank, received from other ranks; wall time of the
        call; and the rate of this rank's encoding (0 when nothing was computed).

    Raises:
        TypeError: if ``encode`` is not callable, ``cache`` not a FeatureCache or a key not a string.
        ValueError: on a bad count or rank, a missing ``barrier``/``all_gather``, or ``encode`` returning
            the wrong shape.

    Example:
        >>> feats, stats = compute_features(["a", "b", "c"], lambda pos: np.eye(3)[pos], cache=None)
        >>> feats.shape, stats["computed"]
        ((3, 3), 3)
    """
    _check_args(keys, encode, cache, batch_size, rank, world_size, barrier, all_gather, shard_rows)
    keys = list(keys)
    meter = _Meter(progress, label, len(keys), world_size > 1)
    out, mask = cache.lookup(keys) if cache is not None else (None, np.zeros(len(keys), dtype=bool))
    missing = np.flatnonzero(~mask)
    meter.from_cache = len(keys) - len(missing)
    writer = _Writer(cache, keys, shard_rows)
    out = _encode(keys, missing[rank::world_size], encode, batch_size, out, writer, meter)
    if world_size > 1:
        others = np.delete(missing, np.s_[rank::world_size])
        if cache is not None:
            barrier()
            out = _read_shared(keys, others, encode, batch_size, out, cache, writer, meter)
        else:
            out = _gather(keys, missing, out, rank, world_size, all_gather)
            meter.from_ranks = len(others)
    if out is None:
        out = np.zeros((len(keys), 0), dtype=np.float32)
    return out, meter.finish()


def _check_args(keys, encode, cache, batch_size, rank, world_size, barrier, all_gather, shard_rows) -> None:
    if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
        raise TypeError("`keys` must be a list of strings (see file_key()).")
    if not callable(encode):
        raise TypeError(f"`encode` must be callable (positions -> features), got {type(encode).__name__}.")
    if cache is not None and not isinstance(cache, FeatureCache):
        raise TypeError(f"`cache` must be a FeatureCache or None, got {type(cache).__name__}.")
    for name, value in (("batch_size", batch_size), ("world_size", world_size), ("shard_rows", shard_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"`rank` must be an int in [0, world_size={world_size}), got {rank!r}.")
    if world_size > 1 and cache is not None and barrier is None:
        raise ValueError(
            "`barrier` is needed when world_size > 1 with a cache (ranks read each other's shares after it); "
            "pass e.g. torch.distributed.barrier."
        )
    if world_size > 1 and cache is None and all_gather is None:
        raise ValueError(
            "`all_gather` is needed when world_size > 1 without a cache; pass e.g. "
            "trainer.strategy.all_gather, or give a cache folder that all ranks share."
        )


def _encode(keys, positions, encode, batch_size, out, writer, meter) -> np.ndarray | None:
    """Encode ``positions`` in batches into ``out`` (allocated on the first batch) and store them."""
    meter.todo += len(positions)
    try:
        for lo in range(0, len(positions), batch_size):
            tic = time.monotonic()
            batch = positions[lo : lo + batch_size].tolist()
            feats = _as_matrix(_call(encode, batch), "encode(positions)", len(batch))  # (B, F)
            if out is None:
                out = np.zeros((len(keys), feats.shape[1]), dtype=np.float32)  # (N, F)
            if feats.shape[1] != out.shape[1]:
                raise ValueError(
                    f"`encode` returned {feats.shape[1]} features per item, but earlier batches or the cache "
                    f"hold {out.shape[1]}: did the backbone or its settings change without a new namespace()?"
                )
            out[batch] = feats
            writer.add(batch, out)
            meter.step(len(batch), time.monotonic() - tic)
    finally:
        writer.flush(out)  # rows already computed are kept even when encode fails or is interrupted
    return out


def _call(encode: Callable, batch: list[int]) -> Any:
    torch = sys.modules.get("torch")  # a torch encode has loaded torch; a numpy one need not pay for it
    if torch is None:
        return encode(batch)
    with torch.no_grad():
        return encode(batch)


def _read_shared(keys, others, encode, batch_size, out, cache, writer, meter) -> np.ndarray | None:
    """After the barrier: the other ranks' shares from the shared cache folder."""
    mask, groups, dim = cache._locate([keys[i] for i in others])
    if out is None and dim is not None:
        out = np.zeros((len(keys), dim), dtype=np.float32)
    if out is not None:
        cache._copy(groups, out, others, mask)
    meter.from_ranks = int(mask.sum())
    late = others[~mask]
    if late.size:
        warnings.warn(
            f"focalmix: {late.size:,} items computed by other ranks are not in the cache folder "
            f"{cache.folder}; computing them here. Is that folder shared by all ranks (one machine or a "
            "shared filesystem), and did no other process clear it meanwhile?",
            RuntimeWarning,
            stacklevel=3,
        )
        out = _encode(keys, late, encode, batch_size, out, writer, meter)
    return out


def _gather(keys, missing, out, rank, world_size, all_gather) -> np.ndarray | None:
    """Without a cache: exchange the computed shares with ``all_gather``, padded to one shape."""
    if not len(missing):
        return out
    import torch

    mine = missing[rank::world_size]
    width = torch.tensor([0 if out is None else out.shape[1]])
    dim = int(_stacked(all_gather(width), world_size).max())  # a rank with no share learns F here
    if out is None:
        out = np.zeros((len(keys), dim), dtype=np.float32)
    block = torch.zeros(-(-len(missing) // world_size), dim)  # (ceil(M / world_size), F)
    block[: len(mine)] = torch.from_numpy(out[mine])
    every = _stacked(all_gather(block), world_size)  # (world_size, ceil(M / world_size), F)
    for r in range(world_size):
        if r != rank:
            theirs = missing[r::world_size]
            out[theirs] = every[r, : len(theirs)]
    return out


def _stacked(result: Any, world_size: int) -> np.ndarray:
    if isinstance(result, (list, tuple)):
        result = [p.detach().cpu() if hasattr(p, "detach") else p for p in result]
    elif hasattr(result, "detach"):
        result = result.detach().cpu()
    arr = np.asarray(result if not isinstance(result, list) else np.stack(result))
    if arr.ndim < 1 or arr.shape[0] != world_size:
        raise ValueError(
            f"`all_gather` must return all ranks' tensors stacked, ({world_size}, ...); got {arr.shape}."
        )
    return arr


class _Writer:
    """Stores computed rows in shards of about ``rows`` rows; a full disk turns storing off (one warning)."""

    def __init__(self, cache: FeatureCache | None, keys: list[str], rows: int) -> None:
        self.cache, self.keys, self.rows, self.pending = cache, keys, rows, []

    def add(self, positions: list[int], out: np.ndarray) -> None:
        if self.cache is not None:
            self.pending.extend(positions)
            if len(self.pending) >= self.rows:
                self.flush(out)

    def flush(self, out: np.ndarray | None) -> None:
        pending, self.pending = self.pending, []
        if self.cache is None or not pending or out is None:
            return
        try:
            self.cache.store([self.keys[i] for i in pending], out[pending])
        except OSError as err:
            warnings.warn(
                f"focalmix: cannot write to the feature cache {self.cache.folder} ({err}); "
                "continuing without storing features.",
                RuntimeWarning,
                stacklevel=4,
            )
            self.cache = None


class _Meter:
    """Counts, timing and the progress lines of one compute_features call."""

    def __init__(self, progress: Callable[[str], None] | None, label: str, total: int, ddp: bool) -> None:
        self.progress, self.label, self.total, self.ddp = progress, label, total, ddp
        self.start = self.last = time.monotonic()
        self.from_cache = self.from_ranks = self.computed = self.todo = 0
        self.compute_s = 0.0

    def step(self, n: int, seconds: float) -> None:
        self.computed += n
        self.compute_s += seconds
        now = time.monotonic()
        if self.progress is not None and now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            self.progress(
                f"focalmix: {self.label}: {self.computed:,} of {self.todo:,} computed{self._rate()}"
            )

    def _rate(self) -> str:
        return (
            f" ({self.computed / self.compute_s:,.0f} items/s)"
            if self.computed and self.compute_s > 0
            else ""
        )

    def finish(self) -> dict:
        line = f"focalmix: {self.label}: {self.total:,} items, {self.from_cache:,} from cache, "
        line += f"{self.computed:,} computed" + (
            f", {self.from_ranks:,} from other ranks" if self.ddp else ""
        )
        if self.progress is not None:
            self.progress(line + self._rate())
        rate = self.computed / self.compute_s if self.computed and self.compute_s > 0 else 0.0
        counts = dict(
            total=self.total, from_cache=self.from_cache, computed=self.computed, from_ranks=self.from_ranks
        )
        return {**counts, "seconds": time.monotonic() - self.start, "items_per_s": rate}
