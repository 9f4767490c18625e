"""Wake-word detection on long recordings: events from window scores, false accepts per hour, thresholds.

A wake-word model scores windows slid over audio (``clip_seconds`` long, every ``hop_seconds``). A
detector fires when a window's probability reaches the threshold, unless it fired less than
``refractory_seconds`` before: the rule of a streaming detector (the README's snippet, openWakeWord's
``debounce_time``). A short run of firing windows is one event (its start, its peak probability); a run
that lasts longer fires again every ``refractory_seconds``, as the deployed detector would, so a
threshold under which everything fires is never one event per file. On background audio with no wake
word every event is a false accept: ``FA/h = events / hours of background``. The
false-reject rate (FRR) is measured on the positive clips: the share scoring below the threshold.

Pure numpy: these are the counts the report, the threshold choice and the exported sidecar share.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6


def threshold_grid() -> np.ndarray:
    """Thresholds searched for FA/h: 0.005 steps, then finer towards 1 (where low FA/h lives).

    Example:
        >>> g = threshold_grid(); float(g[0]), float(g[-1]), bool((np.diff(g) > 0).all())
        (0.0, 0.9999, True)
    """
    fine = 1.0 - np.logspace(-4, np.log10(0.05), 40)
    return np.unique(np.concatenate([np.linspace(0.0, 0.995, 200), fine]).round(6))


def _events_at(times: np.ndarray, firing: np.ndarray, refractory: float) -> np.ndarray:
    """Indices (into ``times``) of the windows that fire; ``times`` sorted, files kept apart."""
    idx = np.flatnonzero(firing)
    t = times[idx]
    kept, i = [], 0
    while i < idx.size:  # fire, then jump to the first firing window after the dead time
        kept.append(idx[i])
        i = int(np.searchsorted(t, t[i] + refractory - _EPS, side="left"))
    return np.asarray(kept, dtype=np.int64)


def _count_events(t: np.ndarray, refractory: float) -> int:
    """How many of the firing windows at sorted times ``t`` fire (the rule of :func:`_events_at`).

    By pointer doubling: ``levels[k][i]`` is where ``2^k`` events after window ``i`` land (``t.size``: past
    the end), so a threshold under which a long background fires every second costs log2(M) array steps
    instead of one Python step per event."""
    m = t.size
    if m == 0:
        return 0
    levels = [np.append(np.searchsorted(t, t + refractory - _EPS, side="left"), m)]  # (M + 1,)
    while 2 ** len(levels) <= m:
        levels.append(levels[-1][levels[-1]])
    count, pos = 1, 0
    for k in reversed(range(len(levels))):
        if levels[k][pos] < m:
            pos, count = int(levels[k][pos]), count + 2**k
    return count


def _timeline(starts: np.ndarray, file_ids: np.ndarray | None, refractory: float) -> np.ndarray:
    """One sorted time axis for all files: each file shifted far beyond the previous one's end."""
    starts = np.asarray(starts, dtype=np.float64)
    if file_ids is None:
        return starts
    span = float(starts.max(initial=0.0)) + 10 * refractory + 1.0
    return starts + np.asarray(file_ids, dtype=np.float64) * span


def detect(
    probs: np.ndarray,
    starts: np.ndarray,
    threshold: float,
    *,
    refractory_seconds: float = 1.0,
    file_ids: np.ndarray | None = None,
) -> list[dict]:
    """Events on windows: ``[{"file", "start", "peak"}]`` in time order.

    Args:
        probs: (N,) the windows' probabilities.
        starts: (N,) each window's start in seconds within its file (sorted within a file).
        threshold: a window fires when its probability is >= this.
        refractory_seconds: after an event, nothing fires for this long. Default 1 s.
        file_ids: (N,) which file each window belongs to (files never merge); default: one file.

    Example:
        >>> p = np.array([0.1, 0.9, 0.95, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8])
        >>> [(e["start"], e["peak"]) for e in detect(p, np.arange(13) / 10, 0.5)]
        [(0.1, 0.95), (1.2, 0.8)]
    """
    probs, starts = np.asarray(probs, dtype=np.float64), np.asarray(starts, dtype=np.float64)
    ids = np.zeros(len(probs), dtype=np.int64) if file_ids is None else np.asarray(file_ids)
    times = _timeline(starts, ids, refractory_seconds)
    order = np.argsort(times, kind="stable")
    t_sorted, p_sorted = times[order], probs[order]
    heads = _events_at(t_sorted, p_sorted >= threshold, refractory_seconds)
    # an event's peak: its firing windows up to the end of its dead time (or the next event)
    ends = np.searchsorted(t_sorted, t_sorted[heads] + refractory_seconds - _EPS, side="left")
    ends = np.minimum(ends, np.append(heads[1:], len(t_sorted)))
    events = []
    for h, end in zip(heads, ends, strict=True):
        window = p_sorted[h:end]
        peak = float(window[window >= threshold].max())
        events.append({"file": int(ids[order[h]]), "start": float(starts[order[h]]), "peak": peak})
    return events


def false_accepts(
    probs: np.ndarray,
    starts: np.ndarray,
    thresholds: np.ndarray,
    *,
    refractory_seconds: float = 1.0,
    file_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Number of events on background windows at each threshold, int64 (T,).

    Example:
        >>> p = np.array([0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.6])
        >>> false_accepts(p, np.arange(12) / 10, np.array([0.5, 0.7, 0.95])).tolist()
        [2, 1, 0]
    """
    times = _timeline(np.asarray(starts), file_ids, refractory_seconds)
    order = np.argsort(times, kind="stable")
    t_sorted, p_sorted = times[order], np.asarray(probs, dtype=np.float64)[order]
    return np.array(
        [_count_events(t_sorted[p_sorted >= t], refractory_seconds) for t in thresholds],
        dtype=np.int64,
    )


def frr(positive_probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """False-reject rate at each threshold: the share of positive clips scoring below it, (T,)."""
    p = np.asarray(positive_probs, dtype=np.float64)
    if p.size == 0:
        return np.full(len(thresholds), np.nan)
    return (p[None, :] < np.asarray(thresholds)[:, None]).mean(axis=1)


def fa_frr_table(
    positive_probs: np.ndarray,
    background_probs: np.ndarray,
    background_starts: np.ndarray,
    background_hours: float,
    thresholds: np.ndarray,
    *,
    refractory_seconds: float = 1.0,
    file_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``{"threshold", "frr", "false_accepts", "fa_per_hour"}`` over ``thresholds``."""
    if not background_hours > 0:
        raise ValueError(f"`background_hours` must be > 0, got {background_hours}.")
    counts = false_accepts(
        background_probs,
        background_starts,
        thresholds,
        refractory_seconds=refractory_seconds,
        file_ids=file_ids,
    )
    return {
        "threshold": np.asarray(thresholds, dtype=np.float64),
        "frr": frr(positive_probs, thresholds),
        "false_accepts": counts,
        "fa_per_hour": counts / background_hours,
    }


def choose_threshold(table: dict[str, np.ndarray], max_fa_per_hour: float) -> int:
    """Index of the lowest-FRR threshold whose FA/h is within the target (ties: the lower threshold).

    With no threshold meeting the target, the one with the fewest false accepts (then the lowest FRR).

    Example:
        >>> t = {"frr": np.array([0.0, 0.02, 0.1]), "fa_per_hour": np.array([30.0, 0.4, 0.0])}
        >>> choose_threshold(t, 0.5)
        1
    """
    fa, rejects = table["fa_per_hour"], np.nan_to_num(table["frr"], nan=1.0)
    ok = np.flatnonzero(fa <= max_fa_per_hour + 1e-12)
    if ok.size:
        return int(ok[np.argmin(rejects[ok])])
    fewest = np.flatnonzero(fa == fa.min())
    return int(fewest[np.argmin(rejects[fewest])])
