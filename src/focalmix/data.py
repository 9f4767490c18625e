"""FocalMixDataModule: built-in, file and in-memory sources, stratified splits, batch-at-a-time loading.

Batches are dicts (``B`` rows, ``S`` = ``input_shape``):

* train/val/test: ``{"x": float32 (B, *S), "y": y}`` with ``y`` float32 (B,) of 0./1. (binary),
  int64 (B,) class indices (multiclass) or float32 (B, C) of 0./1. (multilabel);
* predict: ``{"x": float32 (B, *S), "index": int64 (B,)}`` plus ``"y"`` when the rows have labels;
  ``index`` is the row's position in its source, so a writer can restore input order under DDP.

Features are raw: the datamodule only measures standardization statistics (:attr:`normalization`),
the model applies them, so a checkpoint alone predicts correctly on raw rows. Tables get a fitted
:attr:`preprocessing` spec instead (one float per column: values with NaN, or category codes).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from focalmix import _sources, data_media
from focalmix import preprocessing as _prep
from focalmix._sources import RawData
from focalmix.datasets import (
    ArrayDataset,
    EpochShuffleSampler,
    EpochWeightedSampler,
    InMemoryBatches,
    passthrough_collate,
)

if TYPE_CHECKING:
    import pandas as pd

TASKS = ("binary", "multiclass", "multilabel")
_ARRAYS = "<arrays>"  # the source name of FocalMixDataModule.from_arrays


@dataclass
class _Prepared:
    raw: RawData
    y: torch.Tensor  # coded targets of every row of raw.x
    splits: dict[str, np.ndarray]
    task: str
    class_names: list[str]
    raw_classes: np.ndarray | None  # sorted raw training labels (None: multilabel)
    code_of: np.ndarray | None  # raw class index -> coded class (one-vs-rest changes it)
    class_counts: list[int]
    normalization: tuple[torch.Tensor, torch.Tensor] | None


class FocalMixDataModule(pl.LightningDataModule):
    """Data for :class:`focalmix.FocalMixClassifier`: one source, stratified splits, batch-at-a-time loading.

    The source is a built-in set shipped with scikit-learn (``"breast_cancer"``: binary, positive class
    ``"malignant"``; ``"digits"``: 10 classes of (1, 8, 8) images; ``"synthetic"``: Gaussian classes, see
    the ``synthetic_*`` args), a file (``.csv``/``.parquet``/``.pq`` with a ``target`` column and every
    other column, or ``feature_columns``, as features; ``.npz`` with arrays ``x`` and ``y``), a directory
    holding ``x.npy`` and ``y.npy`` (memory-mapped: larger-than-memory data streams from disk), or
    arrays via :meth:`from_arrays`. Samples may be feature rows (F,) or images/spectrograms (C, H, W).

    Without ``val_source``/``test_source`` the source is split by ``val_fraction``/``test_fraction``,
    stratified by class (multilabel: by the first label) and seeded by ``seed``: the same rows on
    every run and every DDP rank. With ``test_fraction=0`` and no ``test_source``, testing uses the
    validation data; with no ``predict_source``, prediction uses the test data. ``val_fraction=0``
    without ``val_source`` trains on every row and skips validation.

    Labels may be ints or strings; ``class_names`` are the training classes sorted (ints numerically,
    strings alphabetically), ``task`` is ``"multilabel"`` for a list ``target``, else ``"binary"`` for
    two classes and ``"multiclass"`` for more. Binary: ``num_classes == 2`` and the positive class
    (label 1.0) is ``class_names[1]``: for two text labels the minority class (``"bad"`` of 28% bad
    loans; on a tie the label sorting last), for numbers the larger (1 of 0/1). ``positive_class=k``
    picks ``k`` instead: with two classes the other keeps its name, with more ``k`` is the positive class
    of a one-vs-rest task with ``class_names == ["not_k", "k"]``.

    Tables may hold text/boolean/categorical columns and gaps: a :attr:`preprocessing` spec fitted on the
    training split codes categories (unseen: "unknown") and keeps NaN for the model to impute. Val/test/
    predict tables are matched by column name: absent features raise, extra columns are ignored with one
    warning, and a predict table's ``id_columns`` go to the predictions CSV (:attr:`predict_ids`).

    Metadata (``num_features``, ``num_classes``, ``task``, ``class_names``, ``feature_names``,
    ``normalization``, ...) is readable right after ``__init__``: the first access reads the source
    once, deterministically, and ``setup`` reuses it. Argument values are checked in ``__init__``.

    DDP: train batches use Lightning's ``DistributedSampler`` (or its wrapper around the balanced
    sampler, which draws the same sequence on every rank); val/test loaders ``UnrepeatedDistributedSampler``
    (every sample counted once; log val metrics per epoch); predict loaders are sharded without padding.
    A split smaller than the world size falls back to padding; ``use_distributed_sampler=False``: unsharded.

    Args:
        source: built-in name (``"breast_cancer"`` default, ``"digits"``, ``"synthetic"``) or a path.
        val_source: validation data (same kinds as ``source``); default None: split from ``source``.
        test_source: test data; default None: split from ``source`` if ``test_fraction > 0``, else val.
        predict_source: data to predict, labels optional; default None: the test data.
        target: label column of tables, default ``"label"``; a list of 0/1 columns means multilabel.
        feature_columns: table columns used as features, in order; default None: all but the target.
        task: force ``"binary"``, ``"multiclass"`` or ``"multilabel"``; default None: inferred.
        positive_class: the positive class of a binary task, or a label (e.g. a digit) to make a
            one-vs-rest binary task; default None: the minority of two text labels, else the larger label.
        val_fraction: share of ``source`` held out for validation, in [0, 1), default 0.2.
        test_fraction: share of ``source`` held out for testing, in [0, 1), default 0.0.
        seed: seed (>= 0) of the split, the synthetic data and the balanced sampler; default 42.
        standardize: measure per-feature (per-channel for images) mean/std on the training split;
            default True. The model applies them.
        balanced_sampling: draw training rows with replacement by inverse class frequency; default False.
        batch_size: rows per batch, >= 1, default 32.
        num_workers: DataLoader worker processes, >= 0, default 0.
        pin_memory: pin batches in page-locked memory for faster GPU copies; default False.
        persistent_workers: keep workers between epochs (needs ``num_workers > 0``); default False.
        synthetic_rows: rows of ``"synthetic"``, >= 4, default 1000 (10^6 generate in about a second).
        synthetic_features: features of ``"synthetic"``, >= 1, default 20.
        synthetic_classes: classes of ``"synthetic"``, >= 2, default 2.
        synthetic_positive_fraction: share of rows in the last ``"synthetic"`` class (the positive
            class when binary; the other classes share the rest), in (0, 1), default 0.5.
        categorical_columns: numeric table columns to code as categories (text/boolean ones always are).
        max_categories: most levels a categorical column may have (more raises), >= 1, default 100.
        missing: ``"impute"`` (default: NaN -> training median + indicator) or ``"error"`` (refuse NaN).
        id_columns: table key columns: not features, copied in front of the predictions. Default None.
        drop_columns: table columns to ignore. Default None.
        preprocessing: a fitted spec (from a checkpoint) to encode with instead of fitting one.
        path_column: the column of a CSV/Parquet manifest that holds media file paths (relative to the
            manifest's folder); with it ``source`` is a manifest of clips or images. Default None.
        clip_seconds: audio clip length; default None: the backbone's (1 s before one is known).
        bad_files: a media file that cannot be decoded: ``"error"`` (default: one line naming it) or
            ``"skip"`` (left out; the data summary says how many).
        long_files: audio longer than a clip: ``"split"`` (default: cut into consecutive clips),
            ``"crop"`` (its first clip) or ``"error"``.
        cache_dir: where a frozen backbone's features are kept between runs: ``"auto"`` (default:
            ``$XDG_CACHE_HOME/focalmix`` or ``~/.cache/focalmix``), a folder, or ``"none"`` (computed once
            per run, in memory).
        background_source: long audio with no wake word (a folder, a file, or a list of them): its
            windows are scored for false accepts per hour (FA/h) at every validation epoch; needs a frozen
            backbone. Default None.
        hop_seconds: the step of sliding windows over long recordings (prediction, background), > 0.
            Default 0.1.
        refractory_seconds: after a detection, none for this long (FA/h counting, detections). Default 1.
        augment_views: extra augmented views of every training clip/image (:mod:`focalmix.augment`),
            computed once with the frozen backbone and cached; seeded by ``seed``; never for
            validation or test rows. >= 0, default 0.
        noise_source: background audio to mix into augmented clips (5-20 dB SNR); default None: white.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a value out of range, an unknown file suffix, or (on first data access) bad data:
            a damaged file, missing columns, infinite values, NaN labels, one class only, too many
            categories, an impossible stratified split, unseen classes in val/test.
        FileNotFoundError: a source path that does not exist.

    Example:
        >>> dm = FocalMixDataModule("breast_cancer", batch_size=64)
        >>> dm.task, dm.num_classes, dm.class_names, dm.input_shape
        ('binary', 2, ['benign', 'malignant'], (30,))
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch["x"].shape, batch["y"].dtype
        (torch.Size([64, 30]), torch.float32)
    """

    def __init__(
        self,
        source: str = "breast_cancer",
        val_source: str | None = None,
        test_source: str | None = None,
        predict_source: str | None = None,
        target: str | list[str] = "label",
        feature_columns: list[str] | None = None,
        task: Literal["binary", "multiclass", "multilabel"] | None = None,
        positive_class: int | str | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 42,
        standardize: bool = True,
        balanced_sampling: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        synthetic_rows: int = 1000,
        synthetic_features: int = 20,
        synthetic_classes: int = 2,
        synthetic_positive_fraction: float = 0.5,
        categorical_columns: list[str] | None = None,
        max_categories: int = 100,
        missing: Literal["impute", "error"] = "impute",
        id_columns: list[str] | None = None,
        drop_columns: list[str] | None = None,
        preprocessing: dict | None = None,
        path_column: str | None = None,
        clip_seconds: float | None = None,
        bad_files: Literal["error", "skip"] = "error",
        long_files: Literal["split", "crop", "error"] = "split",
        cache_dir: str = "auto",
        background_source: str | list[str] | None = None,
        hop_seconds: float = 0.1,
        refractory_seconds: float = 1.0,
        augment_views: int = 0,
        noise_source: str | None = None,
    ) -> None:
        super().__init__()
        # Saved in checkpoints, so that `focalmix test/predict --ckpt_path` reuses the training data settings.
        self.save_hyperparameters(logger=False)  # the logger gets them through config.yaml
        self._media = data_media.check_settings(
            path_column, clip_seconds, bad_files, long_files, cache_dir, hop_seconds, refractory_seconds
        )
        self._media.augment_views = _sources.check_int(augment_views, "augment_views", 0)
        self._media.seed = seed if isinstance(seed, int) else 0
        if noise_source is not None and not os.path.isdir(str(noise_source)):
            raise FileNotFoundError(f"`noise_source` {noise_source!r} is not a folder of audio.")
        self._media.noise_source = noise_source
        self.background_source = (
            [background_source] if isinstance(background_source, str) else background_source
        )
        for src in self.background_source or []:
            if not os.path.exists(src) or data_media.media.media_kind(src) != "audio":
                raise FileNotFoundError(f"`background_source` {src!r} is not a folder or file of audio.")
        self._background: dict[str, Any] | None = None
        if source != _ARRAYS or not hasattr(self, "_arrays"):
            self._check_source(source, "source", need_labels=True)
            self._arrays: RawData | None = None
        for arg, src in (("val_source", val_source), ("test_source", test_source)):
            if src is not None:
                self._check_source(src, arg, need_labels=True)
        if predict_source is not None:
            self._check_source(predict_source, "predict_source", need_labels=False)
        self.target = _sources.check_target(target, task, positive_class, balanced_sampling, TASKS)
        self.feature_columns = _sources.check_str_list(feature_columns, "feature_columns", optional=True)
        self.val_fraction, self.test_fraction = _sources.check_split(val_fraction, test_fraction)
        self.seed = _sources.check_int(seed, "seed", 0)
        self.standardize = _sources.check_bool(standardize, "standardize")
        self.balanced_sampling = _sources.check_bool(balanced_sampling, "balanced_sampling")
        self.batch_size = _sources.check_int(batch_size, "batch_size", 1)
        self.num_workers = _sources.check_int(num_workers, "num_workers", 0)
        self.pin_memory = _sources.check_bool(pin_memory, "pin_memory")
        self.persistent_workers = _sources.check_bool(persistent_workers, "persistent_workers")
        if persistent_workers and num_workers == 0:
            raise ValueError("`persistent_workers=True` needs `num_workers` > 0; set num_workers or drop it.")
        self._synthetic = _sources.check_synthetic(
            synthetic_rows, synthetic_features, synthetic_classes, synthetic_positive_fraction
        )
        self.source, self.val_source, self.test_source = source, val_source, test_source
        self.predict_source, self.positive_class, self._task_arg = predict_source, positive_class, task
        table = self._arrays.frame is not None if self._arrays else _sources.is_table(source)
        table = table and not data_media.is_media(source, path_column)
        lists = _prep.check_table_args(
            table, self.target, self.feature_columns, categorical_columns, id_columns, drop_columns,
            preprocessing,
        )  # fmt: skip
        self.categorical_columns, self.id_columns, self.drop_columns, self._spec = lists
        _prep.check_options(missing, max_categories, self.standardize)
        self.max_categories, self.missing = max_categories, missing
        self._prepared: _Prepared | None = None
        self._media_index: dict[int, Any] = {}  # stream -> MediaIndex of a media source
        self._backbone: torch.nn.Module | None = None  # what media are prepared for (attach_backbone)
        self._train_loader: InMemoryBatches | None = None
        self._train_resume: dict[str, int] | None = None
        self._datasets: dict[str, ArrayDataset] = {}
        self._ids: dict[str, pd.DataFrame | None] = {}

    @classmethod
    def from_arrays(
        cls, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | Sequence, **kwargs: Any
    ) -> FocalMixDataModule:
        """A datamodule over in-memory data (no copy for float32 arrays/tensors).

        Args:
            x: features (N, *S), a numpy array, torch tensor or pandas DataFrame (a table: its columns
                become ``feature_names``, text/boolean columns categories, NaN imputed).
            y: labels (N,) (ints or strings) or (N, C) of 0/1 (multilabel).
            **kwargs: any other ``FocalMixDataModule`` argument except ``source``.

        Raises:
            TypeError: ``x`` or ``y`` is not an array, tensor or DataFrame.
            ValueError: ``x`` and ``y`` lengths differ, or as ``__init__``.

        Example:
            >>> dm = FocalMixDataModule.from_arrays(np.random.rand(40, 3), ["no", "yes"] * 20, batch_size=8)
            >>> dm.class_names, dm.num_features
            (['no', 'yes'], 3)
        """
        if "source" in kwargs:
            raise TypeError("`from_arrays` takes the data as x and y; do not pass `source`.")
        frame = x.rename(columns=str) if hasattr(x, "columns") else None
        if not isinstance(x, (np.ndarray, torch.Tensor)) and frame is None:
            raise TypeError(f"`x` must be a numpy array, torch tensor or DataFrame, got {type(x).__name__}.")
        y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if isinstance(x, torch.Tensor):
            if x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"`x` must hold real numbers, got dtype {x.dtype}.")
            x = x.detach().cpu().float().contiguous()
        raw = RawData(
            None if frame is not None else x, y, None, "the arrays given to from_arrays", frame=frame
        )
        self = cls.__new__(cls)
        self._arrays = _sources._checked(raw, need_labels=True)  # fmt: skip
        cls.__init__(self, source=_ARRAYS, **kwargs)
        return self

    # ----------------------------------------------------------------------------------------------
    # Reading, coding and splitting (lazy, cached, deterministic)

    def _check_source(self, source: Any, arg: str, need_labels: bool) -> None:
        if not data_media.is_media(source, self._media.path_column):
            _sources.check_source(source, arg, need_labels=need_labels)

    def _load(self, source: Any, stream: int, need_labels: bool, expected: list[str] | None) -> RawData:
        if data_media.is_media(source, self._media.path_column):
            index = data_media.load_index(source, self._media, need_labels, self.target, self._spec_of())
            self._media_index[stream] = index
            return RawData(torch.empty(len(index), 0), index.labels, None, index.name)
        keys = (self.id_columns or [], self.drop_columns or [])
        if self._spec is not None and expected is None:
            expected = [c["name"] for c in self._spec["columns"]]
        if source == _ARRAYS and self._arrays is not None:
            raw = self._arrays
            if raw.frame is not None:
                raw = _sources.table_source(
                    raw.frame, raw.y, raw.name, self.feature_columns, True, expected, keys
                )
        else:
            raw = _sources.load_source(
                source, target=self.target, feature_columns=self.feature_columns, need_labels=need_labels,
                synthetic=self._synthetic, seed=self.seed, stream=stream, expected_features=expected,
                id_columns=keys[0], drop_columns=keys[1],
            )  # fmt: skip
        if isinstance(raw.x, np.ndarray) and not isinstance(raw.x, np.memmap):
            raw.x = torch.from_numpy(np.ascontiguousarray(raw.x, dtype=np.float32))  # no copy if float32
        return raw

    def _prepare(self) -> _Prepared:
        """Read the main source, code labels, split and measure statistics: once, the same on every rank."""
        if self._prepared is not None:
            return self._prepared
        raw = self._load(self.source, 0, True, None)
        y = _sources.clean_labels(raw.y, raw.name)
        if y.ndim == 2:
            prep = self._prepare_multilabel(raw, y)
        else:
            prep = self._prepare_single(raw, y)
        n_train = len(prep.splits["train"])
        if self.batch_size > n_train:
            rank_zero_warn(
                f"`batch_size`={self.batch_size} is larger than the training split ({n_train} rows); "
                "every epoch is a single smaller batch. Lower batch_size or add data."
            )
        self._prepared = prep
        return prep

    def _split(self, strata: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray]:
        val = 0.0 if self.val_source is not None else self.val_fraction
        test = 0.0 if self.test_source is not None else self.test_fraction
        return _sources.split_indices(strata, val, test, self.seed, class_names)

    def _stats(self, raw: RawData, splits: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor] | None:
        if 0 in self._media_index:
            return None  # media: the backbone normalizes its own input
        if raw.frame is not None:  # a table: the model standardizes through the spec, fitted on train rows
            if self._spec is None:
                # missing='error' is enforced by _encode over every row, with the file's name
                self._spec = _prep.fit_spec(
                    raw.frame.iloc[splits["train"]], raw.feature_names, self.categorical_columns,
                    "impute", self.max_categories, self.standardize, f"the training rows of {raw.name}",
                )  # fmt: skip
                self.hparams["preprocessing"] = copy.deepcopy(self._spec)  # checkpoints carry it
            self._encode(raw)
            return None
        return _sources.scan(
            raw.x, splits["train"] if self.standardize else None, raw.feature_names, raw.name
        )

    def _encode(self, raw: RawData) -> None:
        raw.x = torch.from_numpy(
            _prep.encode_frame(raw.frame, self._spec, name=raw.name, missing=self.missing)
        )
        raw.frame = None  # fmt: skip

    def _prepare_single(self, raw: RawData, y: np.ndarray) -> _Prepared:
        raw_classes, code_of, names = _sources.class_coding(y, self.positive_class, raw.name)
        codes = code_of[np.searchsorted(raw_classes, y)]
        counts = np.bincount(codes, minlength=len(names))
        task = _sources.single_label_task(counts, names, self._task_arg, raw.name)
        splits = self._split(codes, names)
        train_counts = _sources.train_class_counts(codes[splits["train"]], counts, names)
        y_t = torch.from_numpy(codes.astype(np.float32) if task == "binary" else codes)
        stats = self._stats(raw, splits)
        return _Prepared(raw, y_t, splits, task, names, raw_classes, code_of, train_counts.tolist(), stats)

    def _prepare_multilabel(self, raw: RawData, y: np.ndarray) -> _Prepared:
        if self._task_arg not in (None, "multilabel"):
            raise ValueError(
                f"task={self._task_arg!r} needs one label per row, but {raw.name} has {y.shape[1]} "
                "target columns; use task='multilabel' or a single `target` column."
            )
        if self.balanced_sampling:
            raise ValueError("`balanced_sampling` needs a binary or multiclass task, got multilabel targets.")
        y = _sources.check_multilabel(y, raw.name)
        names = raw.label_names or [str(i) for i in range(y.shape[1])]
        # Stratify on the first label: full multilabel stratification is a research problem of its own.
        strata = y[:, 0].astype(np.int64)
        splits = self._split(strata, [f"{names[0]}=0", f"{names[0]}=1"])
        counts = y[splits["train"]].sum(axis=0).astype(np.int64).tolist()
        stats = self._stats(raw, splits)
        return _Prepared(
            raw, torch.from_numpy(y), splits, "multilabel", list(names), None, None, counts, stats
        )

    def _secondary(self, split: str, source: Any) -> ArrayDataset:
        """A val/test/predict source: same sample shape and features as training, known classes only."""
        prep = self._prepare()
        stream = {"val": 1, "test": 2, "predict": 3}[split]
        raw = self._load(source, stream, split != "predict", prep.raw.feature_names)
        if stream in self._media_index:
            y = None if raw.y is None else self._code(_sources.clean_labels(raw.y, raw.name), raw.name)
            return self._media_dataset(split, self._media_index[stream], y)
        self._ids[split] = raw.ids
        if raw.frame is not None and self._spec is not None:
            self._encode(raw)  # finite, numeric where training was: checked while encoding
        elif raw.frame is not None:  # a table, but training data that was not one: numbers only
            raw.x = torch.from_numpy(_sources.numeric_matrix(raw.frame, raw.name))
        if tuple(raw.x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"samples of {raw.name} ({split}) have shape {tuple(raw.x.shape[1:])}, training "
                f"samples {self.input_shape}; they must match."
            )
        if self._spec is None:
            _sources.scan(raw.x, None, raw.feature_names, raw.name)
        y = None
        if raw.y is not None:
            y = self._code(_sources.clean_labels(raw.y, raw.name), raw.name)
        return ArrayDataset(raw.x, y, None, split == "predict", raw.x_path)

    def _code(self, y: np.ndarray, name: str) -> torch.Tensor:
        prep = self._prepare()
        if prep.task == "multilabel":
            if y.ndim != 2 or y.shape[1] != self.num_classes:
                raise ValueError(
                    f"{name} must have {self.num_classes} target columns like training, "
                    f"got labels of shape {y.shape}."
                )
            return torch.from_numpy(_sources.check_multilabel(y, name))
        if y.ndim != 1:
            raise ValueError(f"{name} must have one label per row like training, got shape {y.shape}.")
        codes = prep.code_of[_sources.encode_labels(y, prep.raw_classes, name)]
        return torch.from_numpy(codes.astype(np.float32) if prep.task == "binary" else codes)

    def _dataset(self, split: str) -> ArrayDataset:
        if split in self._datasets:
            return self._datasets[split]
        prep = self._prepare()
        x_path = prep.raw.x_path
        sources = {"val": self.val_source, "test": self.test_source, "predict": self.predict_source}
        if 0 in self._media_index and sources.get(split) is None:  # a split of the main media source
            ds = self._main_media_dataset(split)
        elif split == "train" or (split == "val" and self.val_source is None):
            ds = ArrayDataset(prep.raw.x, prep.y, prep.splits[split], x_path=x_path)
        elif split == "val":
            ds = self._secondary("val", self.val_source)
        elif split == "test" and self.test_source is not None:
            ds = self._secondary("test", self.test_source)
        elif split == "test" and self.test_fraction == 0:
            ds = self._dataset("val")
        elif split == "test":
            ds = ArrayDataset(prep.raw.x, prep.y, prep.splits["test"], x_path=x_path)
        elif self.predict_source is not None:
            ds = self._secondary("predict", self.predict_source)
        else:
            test = self._dataset("test")
            ds = ArrayDataset(test.x, test.y, test.indices, True, test.x_path)
        self._datasets[split] = ds
        return ds

    # ----------------------------------------------------------------------------------------------
    # Media: decoded per batch, or a frozen backbone's features computed once (focalmix.data_media)

    def attach_backbone(self, backbone: torch.nn.Module | None) -> None:
        """Prepare media for this backbone: its ``input_spec`` (rate, clip, image size); a frozen one's
        features are computed once per split (and cached). Called by ``setup`` with the model's backbone."""
        if backbone is not self._backbone:
            self._backbone = backbone
            if self._media_index:
                self._datasets.clear()  # media datasets depend on the backbone
                self._background = None

    def _spec_of(self) -> Any:
        return getattr(self._backbone, "input_spec", None)

    def _main_media_dataset(self, split: str) -> Any:
        prep = self._prepare()
        if split == "predict":  # no predict_source: the test data (media: the same split)
            split_rows, with_index = "test" if len(prep.splits["test"]) else "val", True
        else:
            split_rows, with_index = split, False
        if split_rows == "test" and self.test_source is None and self.test_fraction == 0:
            split_rows = "val"
        rows = prep.splits[split_rows]
        return self._media_dataset(split, self._media_index[0].take(rows), prep.y[rows], with_index)

    def _media_dataset(self, split: str, index: Any, y: Any, with_index: bool = False) -> Any:
        with_index = with_index or split == "predict"
        self._ids[split] = _media_ids(index)  # batches' "index": positions in this split
        spec, backbone = self._spec_of(), self._backbone
        frozen = backbone is not None and (getattr(backbone, "frozen", False) or self._frozen_by_model())
        if frozen and spec is not None:
            views = self._media.augment_views if split == "train" else 0  # never val/test rows
            return data_media.features_dataset(
                index, y, split, backbone, spec, self._media, self.trainer, with_index, views
            )
        return data_media.raw_dataset(index, y, spec, self._media, with_index)

    def _frozen_by_model(self) -> bool:
        model = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        return bool(getattr(getattr(model, "hparams", {}), "get", lambda *_: False)("freeze_backbone"))

    @property
    def feature_normalization(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) of a frozen backbone's features on the training split (media); else None."""
        ds = self._dataset("train") if self._media_index and self._backbone is not None else None
        if not isinstance(ds, ArrayDataset) or ds.x_key != "features":
            return None
        return ds.x.mean(0), ds.x.std(0).clamp_min(1e-6)

    @property
    def background(self) -> dict[str, Any] | None:
        """The background windows' features for FA/h (``background_source``), computed once; else None."""
        if not self.background_source or self._backbone is None or self._spec_of() is None:
            return None
        if self._background is None:
            self._background = data_media.load_background(
                self.background_source, self._media, self._backbone, self._spec_of(), self.trainer
            )
        return self._background

    @property
    def wakeword_settings(self) -> dict[str, float]:
        """Window, hop and refractory times: how FA/h is counted and detections are merged."""
        m = self._media
        return {
            "clip_seconds": m.clip_for(self._spec_of()),
            "hop_seconds": m.hop_seconds,
            "refractory_seconds": m.refractory_seconds,
        }

    def summary_lines(self) -> list[str]:
        """Extra lines for the data summary: skipped media files and features from the cache."""
        return data_media.summary_lines(self._media_index.get(0), self._media)

    # ----------------------------------------------------------------------------------------------
    # Metadata: readable right after __init__ (LightningCLI links it into the model at instantiation)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample, e.g. ``(30,)`` for feature rows or ``(1, 8, 8)`` for digits; None for media
        (the backbone's ``input_spec`` says what it takes)."""
        if self._prepare() and 0 in self._media_index:
            return None
        return tuple(int(s) for s in self._prepare().raw.x.shape[1:])

    @property
    def num_features(self) -> int | None:
        """Values per sample, ``prod(input_shape)``; None for media."""
        shape = self.input_shape
        return None if shape is None else math.prod(shape)

    @property
    def input_width(self) -> int | None:
        """The width a custom backbone receives on a table: the encoded columns (one-hot categories,
        missing-value indicators), what the model's encoder outputs; ``num_features`` for other data."""
        spec = self.preprocessing
        if spec is None:
            return self.num_features
        from focalmix.preprocessing import InputEncoder

        return InputEncoder(spec).out_features

    @property
    def task(self) -> str:
        """``"binary"``, ``"multiclass"`` or ``"multilabel"``, inferred from the training labels."""
        return self._prepare().task

    @property
    def num_classes(self) -> int:
        """Number of classes (2 when binary) or of labels (multilabel)."""
        return len(self._prepare().class_names)

    @property
    def class_names(self) -> list[str]:
        """Training classes by code: sorted, except binary, where ``class_names[1]`` is the positive class.

        Multilabel: the target columns."""
        return list(self._prepare().class_names)

    @property
    def feature_names(self) -> list[str] | None:
        """Feature columns of a table (in the order fed to the model), sklearn's names, or None."""
        names = self._prepare().raw.feature_names
        return None if names is None else list(names)

    @property
    def normalization(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) float32 of the training split, broadcastable to one sample; None if not standardizing.

        Per feature, shape (F,), for rows; per channel, shape (C, 1, ..., 1), for images. ``std`` is
        clamped to >= 1e-6 so constant features do not divide by zero. None for tables: their
        :attr:`preprocessing` standardizes.
        """
        stats = self._prepare().normalization
        return None if stats is None else (stats[0].clone(), stats[1].clone())

    @property
    def preprocessing(self) -> dict | None:
        """A table's fitted spec (:func:`focalmix.preprocessing.fit_spec`, training split); else None."""
        self._prepare()
        return copy.deepcopy(self._spec)

    @property
    def predict_ids(self) -> pd.DataFrame | None:
        """The ``id_columns`` of the rows to predict, indexed by each row's ``"index"``; None without ids.

        Media: the file path (and, for clips cut from long files, the start time in seconds)."""
        if self._media_index:
            self._dataset("predict")
            return self._ids["predict"]
        ds, test = self._dataset("predict"), "test" if self.test_source or self.test_fraction else "val"
        ids = self._ids.get("predict" if self.predict_source else test, self._prepare().raw.ids)
        rows = ds.indices if ds.indices is not None or ids is None else np.arange(len(ids))
        return None if ids is None else ids.iloc[rows].set_axis(rows)

    @property
    def class_counts(self) -> list[int]:
        """Training rows per class (multilabel: positive rows per label)."""
        return list(self._prepare().class_counts)

    @property
    def positive_fraction(self) -> float | list[float] | None:
        """Share of positives in the training split: a float (binary), per label (multilabel), or None."""
        prep, counts = self._prepare(), self.class_counts
        n = len(prep.splits["train"])
        if prep.task == "binary":
            return counts[1] / n
        return [c / n for c in counts] if prep.task == "multilabel" else None

    @property
    def split_indices(self) -> dict[str, np.ndarray]:
        """Rows of ``source`` in the ``"train"``, ``"val"`` and ``"test"`` splits (sorted; may be empty)."""
        return {k: v.copy() for k, v in self._prepare().splits.items()}

    def summary(self) -> str:
        """A few lines: source, task, classes, rows per split and training class counts."""
        prep = self._prepare()
        sizes: dict[str, int | str] = {s: len(self._dataset(s)) for s in ("train", "val", "test")}
        if self.test_source is None and self.test_fraction == 0:
            sizes["test"] = "the val rows"
        counts = dict(zip(prep.class_names, prep.class_counts, strict=True))
        return (
            f"FocalMixDataModule(source={prep.raw.name}, task={prep.task}, input_shape={self.input_shape})\n"
            f"  rows: {sizes}\n  training class counts: {counts}"
        )

    # ----------------------------------------------------------------------------------------------
    # Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        """Read the data for ``stage`` (the main source is read once and reused)."""
        self._prepare()
        if self._media_index:
            if self.trainer is None and self._backbone is None:
                return  # media wait for the model's backbone (and, under DDP, for every rank)
            if self.trainer is not None:
                self.attach_backbone(getattr(self.trainer.lightning_module, "backbone", None))
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            self._dataset(split)

    def train_dataloader(self) -> DataLoader | InMemoryBatches:
        """Shuffled (or class-balanced) training batches, in an order set by ``seed`` and the epoch.

        In one process with in-memory data and no workers: :class:`~focalmix.datasets.InMemoryBatches`,
        one index operation per batch, on the accelerator when the split fits there. Otherwise a
        ``DataLoader``, to which Lightning adds its DDP sampler (seeded by the global seed and epoch).
        """
        ds = self._dataset("train")
        if not isinstance(ds, ArrayDataset):  # media decoded per batch
            return self._loader(ds, shuffle=True)
        if self.balanced_sampling:
            counts = torch.tensor(self.class_counts, dtype=torch.float64)
            weights = (1.0 / counts)[ds.y[torch.from_numpy(ds.indices)].long()]
            sampler = EpochWeightedSampler(weights, len(ds), self.seed)
        else:
            sampler = EpochShuffleSampler(len(ds), self.seed)
        trainer = self.trainer
        single = trainer is None or trainer.world_size == 1
        if single and self.num_workers == 0 and isinstance(ds.x, torch.Tensor):
            loader = InMemoryBatches(ds, sampler, self.batch_size, self._batch_device(ds), self._consumed)
            if self._train_resume:
                loader.load_state_dict(self._train_resume)
            self._train_loader = loader
            return loader
        if not single and not self.balanced_sampling:
            sampler = None  # Lightning's DistributedSampler shuffles by (seed, epoch) and shards
        return self._loader(ds, shuffle=sampler is None, sampler=sampler)

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: where the training loader stands within its epoch (mid-epoch resumes).

        Kept here as well as through Lightning's loader protocol: Lightning builds the training loader
        (for ``estimated_stepping_batches``) before it restores loop states, and then never hands the
        loader its saved state; the datamodule's state is restored before that.
        """
        loader = getattr(self, "_train_loader", None)
        return {"train_loader": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_resume = state_dict.get("train_loader")

    def _consumed(self) -> int:
        """Training batches finished in the current epoch (what a mid-epoch checkpoint resumes after)."""
        trainer = self.trainer
        return 0 if trainer is None else trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def _batch_device(self, ds: ArrayDataset) -> torch.device | None:
        """The accelerator, when the training split takes at most a quarter of its free memory."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        if device is None or device.type != "cuda":
            return None  # on CPU the data is already where the batches are made
        free, _ = torch.cuda.mem_get_info(device)
        size = ds.x[:1].nbytes * len(ds) + (0 if ds.y is None else ds.y[:1].nbytes * len(ds))
        return device if size <= free // 4 else None

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in order; an empty list (no validation) when ``val_fraction=0``."""
        ds = self._dataset("val")
        return self._loader(ds, sampler=self._eval_sampler(ds)) if len(ds) else []

    def test_dataloader(self) -> DataLoader:
        """Test batches in order (the validation data when ``test_fraction=0`` and no ``test_source``)."""
        ds = self._dataset("test")
        if len(ds) == 0:
            raise ValueError(
                "there is no test data: set `test_source`, `test_fraction` > 0 or `val_fraction` > 0."
            )
        return self._loader(ds, sampler=self._eval_sampler(ds))

    def predict_dataloader(self) -> DataLoader:
        """Batches with ``"index"``: rows of ``predict_source`` (default: the test data) in order."""
        ds = self._dataset("predict")
        if len(ds) == 0:
            raise ValueError("there is no data to predict: set `predict_source` (or have test/val data).")
        return self._loader(ds)  # Lightning shards predict data without padding itself

    def unsharded_dataloader(self, split: Literal["val", "test"]) -> DataLoader:
        """Every row of a split in order, also under DDP (the report scores all rows on rank 0)."""
        return self._loader(self._dataset(split))

    def _loader(self, ds: ArrayDataset, shuffle: bool = False, sampler: Any = None) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=passthrough_collate,
        )

    def _eval_sampler(self, ds: ArrayDataset) -> UnrepeatedDistributedSampler | None:
        """Under DDP, shard without padding; Lightning keeps a ``DistributedSampler`` it is given."""
        trainer = self.trainer
        kwargs = getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None
        connector = getattr(trainer, "_accelerator_connector", None)
        if not kwargs or not getattr(connector, "use_distributed_sampler", True):
            return None
        replicas = kwargs.get("num_replicas", 1)
        if replicas <= 1 or len(ds) < replicas:
            return None
        return UnrepeatedDistributedSampler(
            ds, num_replicas=replicas, rank=kwargs.get("rank", 0), shuffle=False
        )


def _media_ids(index: Any) -> pd.DataFrame:
    """The predictions CSV's leading columns for media: the path, and the start of clips of long files."""
    import pandas as pd

    frame = pd.DataFrame({"path": index.paths})
    if np.any(index.starts):
        frame["start_seconds"] = index.starts
    return frame
