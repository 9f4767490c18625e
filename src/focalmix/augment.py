"""Augmented views of clips and images, computed once into the feature cache (pure numpy).

A frozen backbone's features are cached, so augmentation cannot happen per epoch on the fly: instead
each training item gets ``K`` extra views, each drawn from a generator seeded by the run's seed and the
item's cache key (so the same seed gives the same views, whatever the order or the DDP shard), passed
through the backbone once and cached like the item itself.

Audio (as openWakeWord and WakeBuilder augment synthesized speech): a time shift (up to 20% of the clip,
zero-filled), a speed change (0.9-1.1x, by linear interpolation), a gain (-6 to +6 dB) and additive noise
at a signal-to-noise ratio of 5-20 dB, from a bank of background audio or white. Images: a horizontal
flip, a crop of 80-100% of each side resized back, and brightness/contrast jitter of +-20%.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np


def view_generator(seed: int, key: str) -> np.random.Generator:
    """The generator of one view: a function of the run's seed and the item's cache key only.

    Example:
        >>> key = "clip.wav|1|2|0.0|1"
        >>> a, b = view_generator(0, key).random(), view_generator(0, key).random()
        >>> a == b, a == view_generator(1, key).random()
        (True, False)
    """
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


def augment_audio(wave: np.ndarray, rng: np.random.Generator, noise: np.ndarray | None = None) -> np.ndarray:
    """One augmented view of a clip (float32, same length): shift, speed, gain, noise at 5-20 dB SNR.

    Args:
        wave: float32 (n,) mono clip in [-1, 1].
        rng: the view's generator (:func:`view_generator`).
        noise: a bank of background audio (float32, any length >= 1) to cut noise from; None: white noise.

    Example:
        >>> x = np.sin(np.linspace(0, 100, 16000)).astype(np.float32)
        >>> y = augment_audio(x, view_generator(0, "k"))
        >>> y.shape, y.dtype, bool(np.abs(y).max() <= 1.0)
        ((16000,), dtype('float32'), True)
    """
    n = wave.shape[0]
    speed = rng.uniform(0.9, 1.1)
    src = np.arange(n, dtype=np.float64) * speed  # read the clip faster or slower
    out = np.interp(src, np.arange(n), wave, right=0.0)
    shift = int(rng.integers(-n // 5, n // 5 + 1))
    out = np.roll(out, shift)
    if shift > 0:
        out[:shift] = 0.0
    elif shift < 0:
        out[shift:] = 0.0
    out *= 10 ** (rng.uniform(-6, 6) / 20)
    out += _noise(n, rng, noise) * _noise_scale(out, rng.uniform(5, 20))
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _noise(n: int, rng: np.random.Generator, bank: np.ndarray | None) -> np.ndarray:
    if bank is None or bank.size == 0:
        noise = rng.standard_normal(n)
    else:
        start = int(rng.integers(0, max(1, bank.size - n)))
        noise = np.resize(bank[start : start + n], n).astype(np.float64)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-8)  # unit power


def _noise_scale(signal: np.ndarray, snr_db: float) -> float:
    power = float(np.mean(signal**2))
    return float(np.sqrt(max(power, 1e-8) / 10 ** (snr_db / 10)))


def augment_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One augmented view of an image (float32 (3, H, W) in [0, 1]): flip, crop + resize, jitter.

    Example:
        >>> img = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
        >>> out = augment_image(img, view_generator(0, "k"))
        >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
        ((3, 8, 8), True)
    """
    _, h, w = image.shape
    out = image[:, :, ::-1] if rng.random() < 0.5 else image
    ch, cw = max(1, int(round(h * rng.uniform(0.8, 1.0)))), max(1, int(round(w * rng.uniform(0.8, 1.0))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = out[:, top : top + ch, left : left + cw]
    rows = np.clip(np.round(np.linspace(0, ch - 1, h)).astype(int), 0, ch - 1)
    cols = np.clip(np.round(np.linspace(0, cw - 1, w)).astype(int), 0, cw - 1)
    out = crop[:, rows][:, :, cols]  # nearest-neighbour resize back to (H, W)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def view_loader(
    loader: Callable[[str, float], np.ndarray], kind: str, seed: int, noise: np.ndarray | None = None
) -> Callable[[str, float, str], np.ndarray]:
    """Decode an item and augment it with the generator of its cache ``key``."""

    def load(path: str, start: float, key: str) -> np.ndarray:
        item, rng = loader(path, start), view_generator(seed, key)
        return augment_audio(item, rng, noise) if kind == "audio" else augment_image(item, rng)

    return load
