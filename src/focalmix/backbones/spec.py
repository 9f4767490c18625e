"""What input a pretrained backbone wants: the contract between backbones, media sources and the cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from focalmix._checks import ArgumentValueError, Satisfies, check_one

KIND = Satisfies(str, lambda v: v in ("audio", "image"), "'audio' or 'image'")


@dataclass(frozen=True)
class InputSpec:
    """The input a backbone takes, so the datamodule can prepare raw media to match.

    Audio backbones take a float32 waveform (B, samples) in [-1, 1], mono, at ``sample_rate``;
    ``clip_seconds`` is the clip length they were built for (the datamodule's default).
    Image backbones take float32 (B, channels, H, W) in [0, 1], RGB, resized to ``size``; the backbone
    applies its own ``mean``/``std`` normalization inside ``forward`` (so exports start from [0, 1] pixels).

    Args:
        kind: ``"audio"`` or ``"image"``.
        sample_rate: audio samples per second (audio only).
        clip_seconds: audio clip length in seconds (audio only).
        size: (height, width) of images (image only).
        channels: image channels, 3 (RGB) (image only).
        mean: per-channel mean the backbone subtracts (documentation for exports).
        std: per-channel std the backbone divides by.

    Example:
        >>> InputSpec("audio", sample_rate=16000, clip_seconds=1.0).num_samples
        16000
    """

    kind: Literal["audio", "image"]
    sample_rate: int | None = None
    clip_seconds: float | None = None
    size: tuple[int, int] | None = None
    channels: int = 3
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        check_one(self.kind, "kind", [KIND], InputSpec)
        if self.kind == "audio" and (not self.sample_rate or not self.clip_seconds):
            argument = "clip_seconds" if self.sample_rate else "sample_rate"
            raise ArgumentValueError(
                "an audio InputSpec needs `sample_rate` and `clip_seconds`.", argument, InputSpec
            )
        if self.kind == "image" and not self.size:
            raise ArgumentValueError("an image InputSpec needs `size` (height, width).", "size", InputSpec)

    @property
    def num_samples(self) -> int:
        """Samples in one clip (audio)."""
        return round(self.sample_rate * self.clip_seconds)  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (JSON, checkpoints, sidecars)."""
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d
