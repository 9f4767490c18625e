"""Long recordings: the clips a long audio file is cut into for training, and the windows for prediction.

:func:`split_long_files` turns an index of files into an index of clips (a file and a start offset
each); :func:`windows` gives the sliding windows over a recording that ``focalmix predict`` scores. Only
headers are read here (:func:`focalmix.media_io.audio_duration`); decoding a clip is
:func:`focalmix.media_io.load_audio`'s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from focalmix._checks import Options, Satisfies, check_one
from focalmix.media_io import audio_duration

if TYPE_CHECKING:
    from focalmix.media import MediaIndex

__all__ = ["LONG_FILE_TOLERANCE", "SECONDS", "seconds", "split_long_files", "windows"]

LONG_FILE_TOLERANCE = 0.1  # a file up to 10% longer than the clip is one clip, its end cut off
SECONDS = Satisfies(float, lambda v: 0 < v < math.inf, "a number of seconds > 0")
_DURATION = Satisfies(float, lambda v: 0 <= v < math.inf, "a number of seconds >= 0")
_MODE = Options("split", "crop", "error")
_EPS = 1e-6  # seconds: far below one sample at any audio rate; absorbs float error in clip arithmetic


def seconds(value: Any, name: str) -> float:
    """``value`` checked as a number of seconds > 0 (:data:`SECONDS`), as a float.

    Example:
        >>> seconds(1, "clip_seconds")
        1.0
    """
    return float(check_one(value, name, [SECONDS]))


def _whole_windows(duration: float, clip: float, hop: float) -> int:
    """How many windows ``clip`` long, ``hop`` apart from 0, fit in ``duration`` (>= clip)."""
    return int(math.floor((duration - clip) / hop + _EPS)) + 1


def windows(duration: float, clip_seconds: float, hop_seconds: float) -> np.ndarray:
    """Start times of sliding windows over a recording, for prediction on long files.

    Every window lies inside the recording; when the hop does not land on its end, one last window
    ends exactly at the end. A recording no longer than a window gives one window at 0.

    Args:
        duration: the recording's length in seconds, >= 0.
        clip_seconds: window length, > 0.
        hop_seconds: distance between window starts, > 0.

    Returns:
        float64 (W,) start times in seconds, increasing.

    Example:
        >>> windows(2.5, 1.0, 1.0).tolist(), windows(0.4, 1.0, 0.5).tolist()
        ([0.0, 1.0, 1.5], [0.0])
    """
    clip, hop = seconds(clip_seconds, "clip_seconds"), seconds(hop_seconds, "hop_seconds")
    check_one(duration, "duration", [_DURATION])
    if duration <= clip + _EPS:
        return np.zeros(1)
    starts = np.arange(_whole_windows(duration, clip, hop)) * hop
    if starts[-1] + clip < duration - _EPS:
        starts = np.append(starts, duration - clip)
    return starts.astype(np.float64)


def split_long_files(
    index: MediaIndex, clip_seconds: float, mode: str = "split", hop_seconds: float | None = None
) -> MediaIndex:
    """Cut audio files longer than a clip into clips, keep only their start, or refuse them.

    A file counts as long when it exceeds ``clip_seconds`` by more than ``LONG_FILE_TOLERANCE`` (10%):
    a recording a little longer than the clip (a 1.05 s word for 1 s clips) stays one clip, cut at the
    end when loaded. ``"split"`` makes one item per clip: starts every ``hop_seconds`` while a whole clip
    fits, then at most one more, partial clip (zero-padded when loaded), kept only when it holds at least
    half a clip of audio that no whole clip holds. Images are returned unchanged.

    Args:
        index: the items (an item's own ``start`` is respected: its audio begins there).
        clip_seconds: clip length, > 0.
        mode: ``"split"`` (default), ``"crop"`` (one clip from each item's start: the index unchanged)
            or ``"error"``.
        hop_seconds: distance between clip starts for ``"split"``, > 0; default ``clip_seconds``.

    Raises:
        ValueError: a bad argument, or (``"error"``) the first long file, with its duration.
        MediaDecodeError: a file whose header cannot be read.

    Example:
        >>> import tempfile, soundfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "long.wav"
        >>> soundfile.write(path, np.zeros(8000 * 5 // 2, dtype=np.float32), 8000)  # 2.5 s
        >>> from focalmix.media import MediaIndex
        >>> split_long_files(MediaIndex([str(path)], ["a"], "audio", "x"), 1.0).starts.tolist()
        [0.0, 1.0, 2.0]
    """
    clip_seconds = seconds(clip_seconds, "clip_seconds")
    hop = clip_seconds if hop_seconds is None else seconds(hop_seconds, "hop_seconds")
    check_one(mode, "mode", [_MODE])
    if index.kind != "audio" or mode == "crop":
        return index
    rows, starts = [], []
    for row, (path, start) in enumerate(zip(index.paths, index.starts, strict=True)):
        length = audio_duration(path) - start
        if length <= clip_seconds * (1 + LONG_FILE_TOLERANCE):
            offsets = np.zeros(1)
        elif mode == "error":
            raise ValueError(
                f"{path} is {length:.2f} s long, longer than `clip_seconds` ({clip_seconds} s); pass "
                "--data.long_files split (cut it into clips) or crop (keep its first clip), or raise "
                "clip_seconds."
            )
        else:
            offsets = _clip_starts(length, clip_seconds, hop)
        rows += [row] * len(offsets)
        starts.append(start + offsets)
    out = index.take(rows)
    out.starts = np.concatenate(starts) if starts else np.zeros(0)
    return out


def _clip_starts(length: float, clip: float, hop: float) -> np.ndarray:
    """Starts of the whole clips that fit in ``length`` (> clip), then of one partial clip if worth it."""
    whole = _whole_windows(length, clip, hop)
    tail = whole * hop  # the first start whose clip would run past the end
    new = min(length - tail, length - (tail - hop + clip))  # audio in it that the whole clips miss
    starts = np.arange(whole) * hop
    return np.append(starts, tail) if new >= clip / 2 - _EPS else starts
