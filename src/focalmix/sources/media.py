"""Media sources: a folder of clips or images, or a CSV/Parquet manifest with a ``path_column``.

Reading goes through :mod:`focalmix.data_media` (scan or manifest, long files cut into clips, sliding
windows for prediction); the datamodule keeps the :class:`~focalmix.media.MediaIndex` and turns its splits
into datasets there. ``x`` is an empty (N, 0) tensor: the samples are decoded later.
"""

from __future__ import annotations

import os

import torch

from focalmix.sources.base import RawData, ReadOptions, Source


class MediaSource(Source):
    """Clips or images behind one argument (checked by :func:`focalmix.data_media.is_media`)."""

    media = True

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path

    def load(
        self, options: ReadOptions, stream: int, need_labels: bool, expected: list[str] | None
    ) -> RawData:
        from focalmix import data_media

        index = data_media.load_index(
            self.path, options.media, need_labels, options.target, options.input_spec
        )
        return RawData(torch.empty(len(index), 0), index.labels, None, index.name, media_index=index)
