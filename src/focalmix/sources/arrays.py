"""Array sources: a folder of memory-mapped ``x.npy``/``y.npy``, an ``.npz`` file, arrays in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from focalmix.sources.base import RawData, ReadOptions, Source, checked, short_list


class NpyFolder(Source):
    """A directory holding ``x.npy`` (memory-mapped: larger-than-memory data streams from disk) and
    ``y.npy`` (optional for predict data)."""

    def __init__(self, path: Path, arg: str, need_labels: bool) -> None:
        wanted = ["x.npy", "y.npy"] if need_labels else ["x.npy"]
        missing = [f for f in wanted if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"`{arg}`: directory {path} has no {missing}; it must hold {wanted}.")
        self.path = path

    def load(
        self, options: ReadOptions, stream: int, need_labels: bool, expected: list[str] | None
    ) -> RawData:
        x = np.load(self.path / "x.npy", mmap_mode="r")
        y = np.load(self.path / "y.npy") if (self.path / "y.npy").is_file() else None
        return checked(RawData(x, y, None, str(self.path), x_path=str(self.path / "x.npy")), need_labels)


class NpzFile(Source):
    """An ``.npz`` file with arrays ``x`` and (optional for predict data) ``y``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(
        self, options: ReadOptions, stream: int, need_labels: bool, expected: list[str] | None
    ) -> RawData:
        with np.load(self.path) as npz:
            if "x" not in npz.files:
                raise ValueError(
                    f"{self.path.name} has no array 'x'; arrays are {short_list(npz.files)}. "
                    "Save np.savez(f, x=, y=)."
                )
            y = npz["y"] if "y" in npz.files else None
            return checked(RawData(npz["x"], y, None, self.path.name), need_labels)


class InMemory(Source):
    """Arrays given to :meth:`FocalMixDataModule.from_arrays` (a DataFrame goes to
    :class:`~focalmix.sources.tables.Frame`); float32 arrays and tensors are not copied."""

    NAME = "the arrays given to from_arrays"

    def __init__(self, x: np.ndarray | torch.Tensor, y: np.ndarray) -> None:
        if isinstance(x, torch.Tensor):
            if x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"`x` must hold real numbers, got dtype {x.dtype}.")
            x = x.detach().cpu().float().contiguous()
        self.raw = checked(RawData(x, y, None, self.NAME), need_labels=True)

    def load(
        self, options: ReadOptions, stream: int, need_labels: bool, expected: list[str] | None
    ) -> RawData:
        return self.raw
