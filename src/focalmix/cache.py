"""Feature cache for frozen backbones: each input item passes the backbone once, not once per epoch.

:func:`compute_features` reads what the cache holds, computes the rest in batches and stores it, under
DDP with each missing item computed by one rank only. The cache is three rooms, all reachable from here:

* :mod:`focalmix.cache_keys`: :func:`default_cache_dir`, :func:`file_key` (one input item) and
  :func:`namespace` (one backbone and its input settings);
* :mod:`focalmix.cache_store`: :class:`FeatureCache`, the write-once shards on disk;
* this module: :func:`compute_features`, filling and reading the cache, alone or across DDP ranks.

``import focalmix.cache`` loads numpy only; torch comes with the caller's tensors or ``all_gather``.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from focalmix._checks import ArgumentTypeError, ArgumentValueError, Instance, Interval, check, check_one
from focalmix.cache_keys import default_cache_dir, file_key, namespace
from focalmix.cache_store import FORMAT_VERSION, FeatureCache, as_matrix

__all__ = ["FORMAT_VERSION", "FeatureCache", "compute_features", "default_cache_dir", "file_key", "namespace"]

PROGRESS_EVERY_S = 2.0  # seconds between progress lines while computing
_COMPUTE_ARGS = {
    "encode": [Instance(Callable, "a callable (positions -> features)")],
    "cache": [None, Instance(FeatureCache)],
    "batch_size": [Interval(int, 1)],
    "world_size": [Interval(int, 1)],
    "shard_rows": [Interval(int, 1)],
}


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

    * with a cache (its folder shared by all ranks), every rank looks the keys up and calls ``barrier()``
      (so no rank's new shards change another's list of missing items), stores its share, calls
      ``barrier()`` again, then reads the others' shares from the folder (items still absent, e.g. a
      folder not shared across nodes, are computed locally with a warning);
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
    if world_size > 1 and cache is not None:
        barrier()  # every rank has looked up before any rank stores: all split the same missing items
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
        raise ArgumentTypeError("`keys` must be a list of strings (see file_key()).", "keys")
    given = dict(
        encode=encode, cache=cache, batch_size=batch_size, world_size=world_size, shard_rows=shard_rows
    )
    check(given, _COMPUTE_ARGS)
    check_one(rank, "rank", [Interval(int, 0, world_size, closed="left")])
    if world_size > 1 and cache is not None and barrier is None:
        raise ArgumentValueError(
            "`barrier` is needed when world_size > 1 with a cache (ranks read each other's shares after it); "
            "pass e.g. torch.distributed.barrier.",
            "barrier",
        )
    if world_size > 1 and cache is None and all_gather is None:
        raise ArgumentValueError(
            "`all_gather` is needed when world_size > 1 without a cache; pass e.g. "
            "trainer.strategy.all_gather, or give a cache folder that all ranks share.",
            "all_gather",
        )


def _encode(keys, positions, encode, batch_size, out, writer, meter) -> np.ndarray | None:
    """Encode ``positions`` in batches into ``out`` (allocated on the first batch) and store them."""
    meter.todo += len(positions)
    try:
        for lo in range(0, len(positions), batch_size):
            tic = time.monotonic()
            batch = positions[lo : lo + batch_size].tolist()
            feats = as_matrix(_call(encode, batch), "encode(positions)", len(batch))  # (B, F)
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
    out, mask = cache.lookup_into([keys[i] for i in others], out, others, len(keys))
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
        if self.progress is not None and now - self.last >= PROGRESS_EVERY_S:
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
