"""Decoding one media file: audio clips to mono float32 waveforms, images to float32 RGB arrays.

Pure numpy on top of soundfile (libsndfile), soxr and Pillow, each imported where it is first used, so
``import focalmix`` does not need them. Every failure to decode a file becomes one
:class:`MediaDecodeError` naming the file and the reason; :func:`probe` finds those reasons cheaply
(headers, not samples) when a folder or manifest is scanned. The folder, manifest and dataset layer on
top of this is :mod:`focalmix.media` (long files and windows: :mod:`focalmix.media_windows`; the
per-batch dataset: :mod:`focalmix.media_dataset`).
"""

from __future__ import annotations

import math
import numbers
import os
import re
import struct
from typing import Any

import numpy as np

from focalmix._checks import Instance, Satisfies, check, check_one

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

_AUDIO_ERRORS = (RuntimeError, ValueError, OSError, EOFError, MemoryError)  # soundfile's and soxr's
# Pillow's plugins raise all of these on damaged files (struct.error from short headers, IndexError and
# KeyError from bad palettes or tables, SyntaxError from some parsers, DecompressionBombError for huge ones)
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)
_IMAGE_ERRORS += (ZeroDivisionError, MemoryError)
# libsndfile's header dump says "data : <declared> (should be <present>)" for a WAV cut short; streaming
# writers put 0 or 0xFFFFFFFF there when they could not seek back, which is not truncation
_WAV_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_AUDIO_HINT = 'reading audio needs soundfile and soxr: pip install "focalmix[audio]"'
_IMAGE_HINT = 'reading images needs Pillow: pip install "focalmix[vision]"'

MEDIA_KIND = Satisfies(str, lambda v: v in ("audio", "image"), "'audio' or 'image'")
IMAGE_SIZE = Satisfies(
    (tuple, list),
    lambda v: (
        len(v) == 2 and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in v)
    ),
    "(height, width), two ints >= 1",
)
# The types are checked first, in the words of the values' messages: a whole float sample rate (16000.0)
# is a value of the right kind but not an int, so a ValueError, as before.
_AUDIO_TYPES = {
    "sample_rate": [Instance(float, "a positive int (Hz)")],
    "num_samples": [None, Instance(int, "an int >= 0")],
}
_AUDIO_ARGS = {
    "sample_rate": [
        Satisfies(float, lambda v: isinstance(v, numbers.Integral) and v > 0, "a positive int (Hz)")
    ],
    "num_samples": [None, Satisfies(int, lambda v: v >= 0, "an int >= 0 or None (whole file)")],
    "start": [Satisfies(float, lambda v: 0 <= v < math.inf, "a finite number of seconds >= 0")],
}


class MediaDecodeError(ValueError):
    """A media file that cannot be decoded; the message is one line naming the file and the reason.

    Args:
        path: the file.
        reason: why it cannot be decoded; None when ``path`` already is the whole message (an error
            re-raised from a DataLoader worker process is rebuilt from its message alone).

    Example:
        >>> print(MediaDecodeError("a.wav", "empty file (0 bytes)"))
        cannot decode a.wav: empty file (0 bytes); fix or remove the file, or pass --data.bad_files skip
    """

    def __init__(self, path: str | os.PathLike, reason: str | None = None) -> None:
        if reason is None:
            super().__init__(str(path))
            self.path = self.reason = None
            return
        self.path, self.reason = str(path), " ".join(str(reason).split())
        super().__init__(
            f"cannot decode {self.path}: {self.reason}; fix or remove the file, or pass --data.bad_files skip"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0],) if self.reason is None else (self.path, self.reason))


def media_suffix_kind(path: str | os.PathLike) -> str | None:
    """``"audio"``, ``"image"`` or None, from the file name's suffix (any case).

    Example:
        >>> media_suffix_kind("a/B.WAV"), media_suffix_kind("x.jpeg"), media_suffix_kind("notes.txt")
        ('audio', 'image', None)
    """
    suffix = os.path.splitext(str(path))[1].lower()
    return "audio" if suffix in AUDIO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None


def _soundfile() -> Any:
    try:
        import soundfile
    except ImportError as e:
        raise ImportError(_AUDIO_HINT) from e
    return soundfile


def _soxr() -> Any:
    try:
        import soxr
    except ImportError as e:
        raise ImportError(_AUDIO_HINT) from e
    return soxr


def _pil() -> tuple[Any, Any]:
    try:
        from PIL import Image, ImageOps
    except ImportError as e:
        raise ImportError(_IMAGE_HINT) from e
    return Image, ImageOps


def _reason(error: BaseException, what: str, path: str | os.PathLike) -> str:
    detail = getattr(error, "error_string", None) or str(error) or type(error).__name__
    return f"{what} ({detail.replace(str(path), 'the file')})"


def _require_file(path: str | os.PathLike) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"media file {path} does not exist (moved or deleted?); rescan the data.")


def _audio_problem(f: Any) -> str | None:
    """Why an open ``soundfile.SoundFile`` cannot give samples, from its header alone; None if it can."""
    if f.samplerate <= 0 or f.channels <= 0:
        return f"invalid header ({f.samplerate} Hz, {f.channels} channels)"
    if f.frames <= 0:
        return "no audio samples (0 frames)"
    found = _WAV_DATA.search(f.extra_info or "")
    if found and int(found[1]) not in _WAV_UNKNOWN_SIZES and int(found[2]) < int(found[1]):
        return f"truncated: the header declares {found[1]} bytes of samples, the file holds {found[2]}"
    return None


def probe(path: str | os.PathLike, kind: str) -> str | None:
    """Why a media file cannot be decoded, or None when it looks decodable; cheap enough for a scan.

    Audio: the header (``soundfile``), a WAV shorter than its header says, and the first and last frame
    (a cut FLAC fails to seek to its end). Images: ``Image.verify`` (checks every PNG chunk's CRC, so a
    cut PNG fails) and, for other formats, a decode (JPEG at 1/8 scale) since their ``verify`` reads
    only the header and a JPEG cut short passes it.

    Args:
        path: the file.
        kind: ``"audio"`` or ``"image"``.

    Returns:
        A short reason (e.g. ``"empty file (0 bytes)"``), or None.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "notes.wav")
        >>> with open(path, "w") as f:
        ...     _ = f.write("not audio")
        >>> probe(path, "audio")
        'not a readable audio file (Format not recognised.)'
    """
    check_one(kind, "kind", [MEDIA_KIND])
    try:
        size = os.stat(path).st_size
    except OSError as e:
        return f"cannot read the file ({e.strerror})"
    if size == 0:
        return "empty file (0 bytes)"
    return _probe_audio(path) if kind == "audio" else _probe_image(path)


def _probe_audio(path: str | os.PathLike) -> str | None:
    sf = _soundfile()
    try:
        with sf.SoundFile(str(path)) as f:
            problem = _audio_problem(f)
            if problem is None:
                f.read(1, dtype="float32")
                f.seek(f.frames - 1)
                f.read(1, dtype="float32")
    except _AUDIO_ERRORS as e:
        return _reason(e, "not a readable audio file", path)
    return problem


def _probe_image(path: str | os.PathLike) -> str | None:
    Image, _ = _pil()
    try:
        with Image.open(path) as im:
            is_png = im.format == "PNG"
            im.verify()
        if not is_png:
            with Image.open(path) as im:
                im.draft(None, (1, 1))  # JPEG: decode at 1/8 scale, which still reads the whole stream
                im.load()
    except (*_IMAGE_ERRORS, Image.DecompressionBombError) as e:
        return _reason(e, "not a readable image", path)
    return None


def audio_duration(path: str | os.PathLike) -> float:
    """Length of an audio file in seconds, from its header.

    Raises:
        FileNotFoundError: no such file.
        MediaDecodeError: the header cannot be read.

    Example:
        >>> import tempfile, soundfile
        >>> path = os.path.join(tempfile.mkdtemp(), "half.wav")
        >>> soundfile.write(path, np.zeros(4000, dtype=np.float32), 8000)
        >>> audio_duration(path)
        0.5
    """
    _require_file(path)
    sf = _soundfile()
    try:
        info = sf.info(str(path))
    except _AUDIO_ERRORS as e:
        raise MediaDecodeError(path, _reason(e, "not a readable audio file", path)) from e
    if info.samplerate <= 0:
        raise MediaDecodeError(path, f"invalid sample rate {info.samplerate} Hz in the header")
    return info.frames / info.samplerate


def load_audio(
    path: str | os.PathLike, sample_rate: int, num_samples: int | None = None, start: float = 0.0
) -> np.ndarray:
    """One audio clip as a mono float32 waveform in [-1, 1] at ``sample_rate``.

    Any format libsndfile reads (WAV 8/16/24/32-bit integer or float, FLAC, OGG) is decoded as float32,
    mixed to mono (mean over channels) and resampled with soxr (``"HQ"``) when its rate differs. Only
    the frames needed are read: a clip from the middle of a long file seeks there, with some context
    either side so the clip equals that part of the whole file resampled. The result is cut or
    zero-padded at the end to ``num_samples``; float files beyond full scale are clipped to [-1, 1].

    Args:
        path: the file.
        sample_rate: output samples per second, > 0.
        num_samples: output length; default None: from ``start`` to the end of the file.
        start: offset into the file in seconds, >= 0 (rounded to the nearest output sample).

    Returns:
        float32 (num_samples,).

    Raises:
        FileNotFoundError: no such file.
        MediaDecodeError: the file cannot be decoded (empty, truncated, not audio, NaN samples).

    Example:
        >>> import tempfile, soundfile
        >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
        >>> soundfile.write(path, np.full((8000, 2), 0.25, dtype=np.float32), 8000)
        >>> x = load_audio(path, sample_rate=16000, num_samples=20000)
        >>> x.shape, x.dtype, round(float(x[8000]), 4), float(x[-1])
        ((20000,), dtype('float32'), 0.25, 0.0)
    """
    _check_audio_args(sample_rate, num_samples, start)
    _require_file(path)
    sf = _soundfile()
    try:
        with sf.SoundFile(str(path)) as f:
            problem = _audio_problem(f)
            if problem is not None:
                raise MediaDecodeError(path, problem)
            x = _read_span(f, sample_rate, num_samples, float(start))
    except MediaDecodeError:
        raise
    except _AUDIO_ERRORS as e:
        raise MediaDecodeError(path, _reason(e, "cannot decode the audio", path)) from e
    if not np.isfinite(x).all():
        raise MediaDecodeError(path, "the audio holds NaN or infinite samples")
    return np.clip(x, -1.0, 1.0, out=x)


def _check_audio_args(sample_rate: Any, num_samples: Any, start: Any) -> None:
    given = {"sample_rate": sample_rate, "num_samples": num_samples, "start": start}
    check(given, _AUDIO_TYPES)
    check(given, _AUDIO_ARGS)


def _read_span(f: Any, rate: int, num_samples: int | None, start: float) -> np.ndarray:
    """Output samples [round(start * rate), + num_samples) of the whole file resampled to ``rate``."""
    in_rate, first = f.samplerate, round(start * rate)
    if in_rate == rate:
        n = max(f.frames - first, 0) if num_samples is None else num_samples
        return _fit(_read_mono(f, first, n), n)
    n = max(round(f.frames * rate / in_rate) - first, 0) if num_samples is None else num_samples
    # Start the read on an input frame that falls exactly on an output sample (a multiple of `step`),
    # `pad` input frames early: the resampler's filter then sees the same context as for the whole file.
    step = in_rate // math.gcd(in_rate, rate)
    pad = 256 * math.ceil(in_rate / rate)  # 256 samples at the lower rate: beyond the HQ filter's reach
    begin = max(0, (first * in_rate // rate - pad) // step * step)
    offset = first - begin * rate // in_rate  # output samples between `begin` and `first`
    x = _read_mono(f, begin, math.ceil((offset + n) * in_rate / rate) + pad)
    if len(x):
        x = _soxr().resample(x, in_rate, rate, quality="HQ")
    return _fit(x[offset:], n)


def _read_mono(f: Any, first: int, frames: int) -> np.ndarray:
    if first >= f.frames or frames <= 0:
        return np.zeros(0, dtype=np.float32)
    f.seek(first)
    data = f.read(frames=min(frames, f.frames - first), dtype="float32", always_2d=True)  # (frames, C)
    return data.mean(axis=1, dtype=np.float32)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return np.ascontiguousarray(x[:n], dtype=np.float32)
    return np.concatenate([x, np.zeros(n - len(x), dtype=np.float32)]).astype(np.float32, copy=False)


def load_image(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """One image as float32 RGB (3, H, W) in [0, 1], upright and resized to ``size``.

    The EXIF orientation is applied (an unreadable EXIF block is ignored). Every mode becomes RGB:
    16-bit grayscale is scaled to 8 bits (not clipped to white), CMYK converted, and images with
    transparency (RGBA, LA, palette with a transparent color) are composited on black. Resizing is
    bilinear with antialiasing (Pillow's filter widens when shrinking, as ``torchvision``'s
    ``Resize(antialias=True)`` does on PIL images, which pretrained image models were trained with);
    ``reducing_gap=None`` keeps it exact rather than pre-shrinking by whole factors.

    Args:
        path: the file (PNG, JPEG, BMP, WebP, or anything Pillow opens).
        size: (height, width), each >= 1.

    Returns:
        float32 (3, height, width).

    Raises:
        FileNotFoundError: no such file.
        MediaDecodeError: the file cannot be decoded (empty, truncated, not an image).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "red.png")
        >>> Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
        >>> x = load_image(path, (8, 16))
        >>> x.shape, x.dtype, x[:, 4, 4].tolist()
        ((3, 8, 16), dtype('float32'), [1.0, 0.0, 0.0])
    """
    height, width = image_size(size)
    _require_file(path)
    Image, ImageOps = _pil()
    try:
        with Image.open(path) as im:
            im.load()
            rgb = _to_rgb(_upright(im, ImageOps), Image)
            rgb = rgb.resize((width, height), Image.BILINEAR, reducing_gap=None)
            out = np.asarray(rgb, dtype=np.float32)  # (H, W, 3)
    except (*_IMAGE_ERRORS, Image.DecompressionBombError) as e:
        raise MediaDecodeError(path, _reason(e, "cannot decode the image", path)) from e
    return np.ascontiguousarray(out.transpose(2, 0, 1)) / np.float32(255)  # (3, H, W)


def image_size(size: Any) -> tuple[int, int]:
    """``size`` checked as (height, width), two ints >= 1, and returned as a tuple of two ints.

    Example:
        >>> image_size([224, np.int64(160)])
        (224, 160)
    """
    check_one(size, "size", [IMAGE_SIZE])
    return int(size[0]), int(size[1])


def _upright(im: Any, ImageOps: Any) -> Any:
    try:
        return ImageOps.exif_transpose(im)
    except _IMAGE_ERRORS:  # a damaged EXIF block says nothing reliable about orientation
        return im


def _to_rgb(im: Any, Image: Any) -> Any:
    if im.mode.startswith("I") or im.mode == "F":
        # Pillow's convert clips 16-bit values to 255 (white); scale them instead
        scale = 255 / 65535 if im.mode.startswith("I") else 255
        gray = np.clip(np.round(np.asarray(im, dtype=np.float64) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)  # (H, W, 4)
        rgb = rgba[..., :3] * (rgba[..., 3:] / 255)  # composited on black
        return Image.fromarray(np.round(rgb).astype(np.uint8))
    return im.convert("RGB")
