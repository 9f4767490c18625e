"""Media sources inside FocalMixDataModule: folders or manifests of clips/images -> datasets.

The datamodule reads a media source into a :class:`~focalmix.media.MediaIndex` (labels coded and split
like any other source), then turns each split into a dataset here:

* with a frozen backbone (a pretrained adapter, or ``freeze_backbone``): the backbone's features of every
  item, computed once before the first epoch (:func:`focalmix.cache.compute_features`, stored in the
  feature cache unless it is off), served as ``{"features": (B, F)}`` batches: 100 epochs pass every
  clip through the backbone once;
* otherwise: :class:`~focalmix.media.MediaDataset`, decoding one batch at a time into ``{"x": ...}``.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from focalmix import media
from focalmix.datasets import ArrayDataset

CACHE_OFF = ("none", "off", "false")


@dataclass
class MediaSettings:
    """The datamodule's media arguments (checked there, by :mod:`focalmix.data_arguments`)."""

    path_column: str | None = None
    clip_seconds: float | None = None
    bad_files: str = "error"
    long_files: str = "split"
    cache_dir: str = "auto"
    hop_seconds: float = 0.1
    refractory_seconds: float = 1.0
    augment_views: int = 0
    noise_source: str | None = None
    seed: int = 0
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> compute_features stats

    def clip_for(self, spec: Any) -> float:
        """Clip length: the user's, else the backbone's, else 1 s (before a backbone is known)."""
        if self.clip_seconds is not None:
            return float(self.clip_seconds)
        return float(getattr(spec, "clip_seconds", None) or 1.0)

    def wakeword(self, spec: Any) -> dict[str, float]:
        """Window, hop and refractory times: how long recordings are cut and how their events are counted."""
        return {
            "clip_seconds": self.clip_for(spec),
            "hop_seconds": self.hop_seconds,
            "refractory_seconds": self.refractory_seconds,
        }


def is_media(source: Any, path_column: str | None) -> bool:
    """True for a folder of clips/images or a manifest with ``path_column``."""
    if not isinstance(source, str | os.PathLike):
        return False
    if not os.path.exists(source):
        return False
    return media.media_kind(source, path_column) is not None


def load_index(source: str, settings: MediaSettings, need_labels: bool, target: Any, spec: Any = None):
    """Scan a folder or read a manifest; cut long audio files into clips (training and evaluation data);
    for prediction (no labels) slide windows over long recordings every ``hop_seconds``."""
    if settings.path_column is not None and os.path.isfile(source):
        index = media.read_manifest(
            source, settings.path_column, target if need_labels else None, need_labels, settings.bad_files
        )
    else:
        index = media.scan_folder(source, need_labels=need_labels, bad_files=settings.bad_files)
    if index.kind == "audio" and not need_labels:
        return sliding_windows(index, settings.clip_for(spec), settings.hop_seconds)
    if index.kind == "audio" and settings.long_files != "crop":
        index = media.split_long_files(index, settings.clip_for(spec), settings.long_files)
    return index


def sliding_windows(index: Any, clip_seconds: float, hop_seconds: float) -> Any:
    """One item per window of every file: ``clip_seconds`` long, every ``hop_seconds``."""
    paths, starts = [], []
    for path in dict.fromkeys(index.paths):  # each file once, in order
        for start in media.windows(media.audio_duration(path), clip_seconds, hop_seconds):
            paths.append(path)
            starts.append(start)
    return media.MediaIndex(paths, None, index.kind, index.name, np.asarray(starts), list(index.skipped))


def load_background(
    sources: list[str], settings: MediaSettings, backbone: Any, spec: Any, trainer: Any
) -> dict[str, Any]:
    """Long audio without the wake word, as windows scored for false accepts per hour.

    Returns ``{"features" (W, F), "starts" (W,), "file_ids" (W,), "hours", "files"}``.
    """
    clip = settings.clip_for(spec)
    parts = [load_index(src, settings, False, None, spec) for src in sources]
    index = media.MediaIndex(
        [p for part in parts for p in part.paths], None, "audio", ", ".join(sources),
        np.concatenate([part.starts for part in parts]),
    )  # fmt: skip
    files = list(dict.fromkeys(index.paths))
    file_ids = np.array([files.index(p) for p in index.paths]) if files else np.zeros(0, dtype=int)
    hours = sum(max(media.audio_duration(f), clip) for f in files) / 3600.0
    ds = features_dataset(index, None, "background", backbone, spec, settings, trainer)
    return {"features": ds.x, "starts": index.starts, "file_ids": file_ids, "hours": hours, "files": files}


def summary_lines(index: Any, settings: MediaSettings) -> list[str]:
    """What the data summary adds for media: skipped files and where the features came from."""
    lines = []
    if index is not None and index.skipped:
        path, reason = index.skipped[0]
        lines.append(
            f"focalmix: skipped {len(index.skipped)} file(s) that cannot be decoded (--data.bad_files"
            f" skip), e.g. {path}: {reason}"
        )
    for split, s in settings.stats.items():
        lines.append(
            f"focalmix: features {split}: {s['total']:,} inputs, {s['from_cache']:,} from the cache,"
            f" {s['computed']:,} through the backbone"
        )
    return lines


def cache_for(settings: MediaSettings, backbone: Any, spec: Any):
    """The feature cache of this backbone and these input settings, or None when it is off."""
    from focalmix import cache

    if str(settings.cache_dir).lower() in CACHE_OFF:
        return None
    root = cache.default_cache_dir() if settings.cache_dir == "auto" else settings.cache_dir
    identity = backbone.identity() if hasattr(backbone, "identity") else _weights_identity(backbone)
    inputs = {"spec": spec.to_dict() if spec is not None else None, "clip": settings.clip_for(spec)}
    return cache.FeatureCache(root, cache.namespace(identity, inputs))


def _weights_identity(backbone: torch.nn.Module) -> str:
    """A frozen torch backbone without ``identity()``: its class and a hash of its weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{type(backbone).__qualname__}@sha256:{digest.hexdigest()[:16]}"


def _noise_bank(settings: MediaSettings, spec: Any) -> tuple[np.ndarray | None, str]:
    """Background audio to cut augmentation noise from (at most 10 minutes), and its identity."""
    if settings.noise_source is None or spec is None or spec.kind != "audio":
        return None, "white"
    from focalmix import cache as fm_cache

    index = media.scan_folder(settings.noise_source, need_labels=False)
    files = list(dict.fromkeys(index.paths))
    parts = [media.load_audio(f, spec.sample_rate, min(600 * spec.sample_rate, 10**9)) for f in files]
    bank = np.concatenate(parts)[: 600 * spec.sample_rate] if parts else None
    ident = ",".join(fm_cache.file_key(f) for f in files)
    return bank, f"noise:{zlib.crc32(ident.encode()):08x}"  # stable across processes, unlike hash()


def _item_keys(index: Any, views: int, suffix: str) -> list[str]:
    """Cache keys of every item (view 0), then of each augmented view, view by view."""
    from focalmix import cache as fm_cache

    pairs = list(zip(index.paths, index.starts, strict=True))
    keys = [fm_cache.file_key(p, s) for p, s in pairs]
    for v in range(1, views + 1):
        keys += [fm_cache.file_key(p, s, view=v) + suffix for p, s in pairs]
    return keys


def features_dataset(
    index: Any,
    y: torch.Tensor | None,
    split: str,
    backbone: torch.nn.Module,
    spec: Any,
    settings: MediaSettings,
    trainer: Any = None,
    with_index: bool = False,
    views: int = 0,
) -> ArrayDataset:
    """The backbone's features of every item of a split, computed once (cached), as an ArrayDataset.

    With ``views`` > 0 (training only), each item's augmented views follow: ``views + 1`` rows per item,
    labels repeated; the views' keys name the seed and noise, so the same settings reuse them.
    """
    from focalmix import augment
    from focalmix import cache as fm_cache

    loader = media.make_loader(spec, settings.clip_for(spec))
    device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
    noise, noise_id = _noise_bank(settings, spec) if views else (None, "")
    keys = _item_keys(index, views, f"|aug:seed={settings.seed}:{noise_id}")
    view_of = augment.view_loader(loader, index.kind, settings.seed, noise)
    n = len(index)

    def decode(j: int) -> np.ndarray:
        i = j % n
        path, start = index.paths[i], float(index.starts[i])
        return loader(path, start) if j < n else view_of(path, start, keys[j])

    def encode(positions: list[int]) -> np.ndarray:
        batch = np.stack([decode(j) for j in positions])
        with torch.no_grad():
            out = backbone(torch.from_numpy(batch).to(device))
        return out.reshape(len(positions), -1).float().cpu().numpy()

    world = trainer.world_size if trainer is not None else 1
    dist = {}
    if world > 1:
        dist = {
            "rank": trainer.global_rank,
            "world_size": world,
            "barrier": trainer.strategy.barrier,
            "all_gather": trainer.strategy.all_gather,
        }
    chief = trainer is None or trainer.is_global_zero
    was_training = backbone.training
    backbone.eval().to(device)
    try:
        features, stats = fm_cache.compute_features(
            keys, encode, cache_for(settings, backbone, spec), batch_size=64,
            progress=print if chief else None, label=f"features {split}", **dist,
        )  # fmt: skip
    finally:
        backbone.train(was_training)
    settings.stats[split] = stats
    if views and y is not None:
        y = y.repeat(views + 1, *([1] * (y.ndim - 1)))
    return ArrayDataset(
        torch.from_numpy(np.ascontiguousarray(features)), y, None, with_index, x_key="features"
    )


def raw_dataset(index: Any, y: torch.Tensor | None, spec: Any, settings: MediaSettings, with_index: bool):
    """Decoded media, one batch at a time (a backbone that trains, or no backbone known yet)."""
    if spec is None:
        raise ValueError(
            f"{index.name} holds {index.kind} files: the model needs a pretrained backbone that says what"
            " input it takes, e.g. --model.backbone focalmix.backbones."
            + ("SpeechEmbedding" if index.kind == "audio" else "EfficientNetLite0")
        )
    return media.MediaDataset(index, y, media.make_loader(spec, settings.clip_for(spec)), with_index)


def media_dataset(
    index: Any,
    y: torch.Tensor | None,
    split: str,
    backbone: torch.nn.Module | None,
    settings: MediaSettings,
    trainer: Any,
    with_index: bool = False,
) -> Any:
    """One split of media as a dataset: a frozen backbone's features (computed once, cached), else clips or
    images decoded per batch. Augmented views are for training rows only."""
    with_index = with_index or split == "predict"
    spec = getattr(backbone, "input_spec", None)
    frozen = backbone is not None and (getattr(backbone, "frozen", False) or _frozen_by_model(trainer))
    if frozen and spec is not None:
        views = settings.augment_views if split == "train" else 0  # never val/test rows
        return features_dataset(index, y, split, backbone, spec, settings, trainer, with_index, views)
    return raw_dataset(index, y, spec, settings, with_index)


def _frozen_by_model(trainer: Any) -> bool:
    model = getattr(trainer, "lightning_module", None) if trainer is not None else None
    return bool(getattr(getattr(model, "hparams", {}), "get", lambda *_: False)("freeze_backbone"))


def media_ids(index: Any) -> Any:
    """The predictions CSV's leading columns for media: the path, and the start of clips of long files."""
    import pandas as pd

    frame = pd.DataFrame({"path": index.paths})
    if np.any(index.starts):
        frame["start_seconds"] = index.starts
    return frame
