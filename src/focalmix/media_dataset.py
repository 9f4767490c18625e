"""Media items decoded when a batch asks for them: the per-item decode function and the dataset.

:func:`make_loader` turns a backbone's :class:`~focalmix.backbones.spec.InputSpec` into the function that
decodes one item (:mod:`focalmix.media_io`); :class:`MediaDataset` calls it for the items of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from focalmix._checks import ArgumentValueError, Instance, check_one
from focalmix.media_io import image_size, load_audio, load_image
from focalmix.media_windows import seconds

if TYPE_CHECKING:
    from focalmix.backbones.spec import InputSpec
    from focalmix.media import MediaIndex

__all__ = ["MediaDataset", "make_loader"]

_LOADER = Instance(Callable, "a function (path, start) -> array")


def _audio_item(sample_rate: int, num_samples: int, path: str, start: float) -> np.ndarray:
    return load_audio(path, sample_rate, num_samples, start)


def _image_item(size: tuple[int, int], path: str, start: float) -> np.ndarray:
    return load_image(path, size)


def make_loader(spec: InputSpec, clip_seconds: float | None = None) -> Callable[[str, float], np.ndarray]:
    """The per-item decode function ``(path, start) -> array`` for a backbone's input.

    Audio: :func:`~focalmix.media_io.load_audio` at ``spec.sample_rate``, ``round(sample_rate * clip)``
    samples from ``start``. Images: :func:`~focalmix.media_io.load_image` at ``spec.size`` (``start``
    ignored). The function is a ``functools.partial`` of a module-level function, so DataLoader worker
    processes can pickle it.

    Args:
        spec: what the backbone takes.
        clip_seconds: audio clip length, > 0; default ``spec.clip_seconds``.

    Example:
        >>> from focalmix.backbones.spec import InputSpec
        >>> make_loader(InputSpec("audio", sample_rate=16000, clip_seconds=1.0), clip_seconds=0.5).args
        (16000, 8000)
    """
    if spec.kind == "image":
        return partial(_image_item, image_size(tuple(spec.size or ())))
    clip = spec.clip_seconds if clip_seconds is None else clip_seconds
    rate = int(spec.sample_rate or 0)
    return partial(_audio_item, rate, round(rate * seconds(clip, "clip_seconds")))


class MediaDataset(Dataset):
    """Media items decoded when a batch asks for them; batches come whole, as :class:`ArrayDataset`'s.

    ``__getitems__`` returns the collated batch ``{"x": float32 (B, *S), "y": (B, ...), "index": int64
    (B,)}`` (``y`` when given, ``index`` with ``with_index``: positions in ``index``), so a DataLoader uses
    it with :func:`focalmix.datasets.passthrough_collate`. Only the requested items are decoded.

    Args:
        index: the items (paths and start offsets).
        y: coded targets aligned with ``index``, or None.
        loader: ``(path, start) -> float32 array`` of one fixed shape, e.g. from :func:`make_loader`.
        with_index: add ``"index"`` to each batch, for prediction.

    Example:
        >>> import os, tempfile, soundfile
        >>> from focalmix.media import MediaIndex
        >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
        >>> soundfile.write(path, np.zeros(800, dtype=np.float32), 8000)
        >>> ds = MediaDataset(MediaIndex([path] * 3, None, "audio", "x"), torch.tensor([0, 1, 0]),
        ...                   partial(_audio_item, 8000, 400), with_index=True)
        >>> batch = ds.__getitems__([2, 0])
        >>> batch["x"].shape, batch["y"].tolist(), batch["index"].tolist(), len(ds)
        (torch.Size([2, 400]), [0, 0], [2, 0], 3)
    """

    def __init__(
        self,
        index: MediaIndex,
        y: torch.Tensor | None,
        loader: Callable[[str, float], np.ndarray],
        with_index: bool = False,
    ) -> None:
        check_one(loader, "loader", [_LOADER], MediaDataset)
        if y is not None and len(y) != len(index):
            raise ArgumentValueError(
                f"`y` has {len(y)} rows but the index of {index.name} has {len(index)} items.",
                "y",
                MediaDataset,
            )
        self.index, self.y, self.loader, self.with_index = index, y, loader, with_index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        items = [
            np.asarray(self.loader(self.index.paths[r], float(self.index.starts[r])), dtype=np.float32)
            for r in rows.tolist()
        ]
        batch = {"x": torch.from_numpy(np.stack(items))}  # (B, *S)
        if self.y is not None:
            batch["y"] = torch.index_select(self.y, 0, rows)
        if self.with_index:
            batch["index"] = rows
        return batch
