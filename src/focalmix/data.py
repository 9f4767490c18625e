"""FocalMixDataModule: built-in, file and in-memory sources, stratified splits, batch-at-a-time loading.

Batches are dicts (``B`` rows, ``S`` = ``input_shape``):

* train/val/test: ``{"x": float32 (B, *S), "y": y}`` with ``y`` float32 (B,) of 0./1. (binary),
  int64 (B,) class indices (multiclass) or float32 (B, C) of 0./1. (multilabel);
* predict: ``{"x": float32 (B, *S), "index": int64 (B,)}`` plus ``"y"`` when the rows have labels;
  ``index`` is the row's position in its source, so a writer can restore input order under DDP.

Features are raw: the datamodule only measures standardization statistics (:attr:`normalization`),
the model applies them, so a checkpoint alone predicts correctly on raw rows. Tables get a fitted
:attr:`preprocessing` spec instead (one float per column: values with NaN, or category codes).

Reading, coding and splitting: :mod:`focalmix.data_splits` over :mod:`focalmix.sources` (one per kind).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from focalmix.data_arguments import ARRAYS, attributes, check_arguments, open_sources, table_spec
from focalmix.data_splits import DataSplits
from focalmix.datasets import (
    ArrayDataset,
    InMemoryBatches,
    batch_device,
    eval_sampler,
    make_loader,
    train_sampler,
)
from focalmix.encoder import InputEncoder
from focalmix.losses import TASKS  # noqa: F401  (focalmix.data.TASKS: the one definition, in losses)
from focalmix.sources import in_memory
from focalmix.sources.prepared import Prepared

if TYPE_CHECKING:
    import pandas as pd


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
        batch_size: rows per training batch, >= 1, default 32.
        eval_batch_size: rows per validation, test and prediction batch, >= 1; default None: 256, or
            ``batch_size`` when larger (no gradients are kept there; fewer batches, less fixed cost).
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
        eval_batch_size: int | None = None,
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
        params = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        # Saved in checkpoints, so that `focalmix test/predict --ckpt_path` reuses the training data settings.
        self.save_hyperparameters(logger=False)  # the logger gets them through config.yaml
        check_arguments(params, owner := type(self))  # focalmix.data_arguments: the constraints table
        for name, value in attributes(params).items():  # source, target, batch_size, ... as checked
            setattr(self, name, value)
        sources = open_sources(params, getattr(self, "_arrays", None), owner)
        spec = table_spec(params, sources["source"].table, owner)
        self._data = DataSplits.build(params, sources, spec, self.hparams)  # reading, coding, splits
        self._media, self._media_index = self._data.options.media, self._data.media_index
        self._train_loader: InMemoryBatches | None = None
        self._train_resume: dict[str, int] | None = None

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
        self = cls.__new__(cls)
        self._arrays = in_memory(x, y)
        cls.__init__(self, source=ARRAYS, **kwargs)
        return self

    # --- Reading, coding and splitting: focalmix.data_splits (lazy, cached, deterministic)

    def _prepare(self) -> Prepared:
        """Read the main source, code labels, split and measure statistics: once, the same on every rank."""
        return self._data.prepare(self.batch_size)

    def _dataset(self, split: str) -> Any:
        return self._data.dataset(split, self.trainer, self.batch_size)

    # --- Media: decoded per batch, or a frozen backbone's features computed once (focalmix.data_media)

    def attach_backbone(self, backbone: torch.nn.Module | None) -> None:
        """Prepare media for this backbone: its ``input_spec`` (rate, clip, image size); a frozen one's
        features are computed once per split (and cached). Called by ``setup`` with the model's backbone."""
        self._data.attach(backbone)

    @property
    def feature_normalization(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) of a frozen backbone's features on the training split (media); else None."""
        return self._data.feature_normalization(self.trainer)

    @property
    def background(self) -> dict[str, Any] | None:
        """The background windows' features for FA/h (``background_source``), computed once; else None."""
        return self._data.background(self.background_source, self.trainer)

    @property
    def wakeword_settings(self) -> dict[str, float]:
        """Window, hop and refractory times: how long recordings are cut and how their events are counted."""
        return self._media.wakeword(self._data.input_spec)

    def summary_lines(self) -> list[str]:
        """Extra lines for the data summary: skipped media files and features from the cache."""
        return self._data.summary_lines()

    # --- Metadata: readable right after __init__ (LightningCLI links it into the model at instantiation)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample, e.g. ``(30,)`` for feature rows or ``(1, 8, 8)`` for digits; None for media
        (the backbone's ``input_spec`` says what it takes)."""
        self._prepare()
        return self._data.input_shape

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
        return self.num_features if spec is None else InputEncoder(spec).out_features

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

        Per feature, shape (F,), for rows; per channel, shape (C, 1, ..., 1), for images. A feature
        constant on the training split gets ``std`` 1: centred, not scaled, as scikit-learn's
        ``StandardScaler`` (dividing by a tiny ``std`` would blow up new values). None for tables: their
        :attr:`preprocessing` standardizes.
        """
        stats = self._prepare().normalization
        return None if stats is None else (stats[0].clone(), stats[1].clone())

    @property
    def preprocessing(self) -> dict | None:
        """A table's fitted spec (:func:`focalmix.preprocessing.fit_spec`, training split); else None."""
        self._prepare()
        return copy.deepcopy(self._data.table.spec)

    @property
    def predict_ids(self) -> pd.DataFrame | None:
        """The ``id_columns`` of the rows to predict, indexed by each row's ``"index"``; None without ids.

        Media: the file path (and, for clips cut from long files, the start time in seconds)."""
        self._prepare()
        return self._data.predict_ids(self.trainer)

    @property
    def class_counts(self) -> list[int]:
        """Training rows per class (multilabel: positive rows per label)."""
        return list(self._prepare().class_counts)

    @property
    def positive_fraction(self) -> float | list[float] | None:
        """Share of positives in the training split: a float (binary), per label (multilabel), or None."""
        return self._prepare().positive_fraction

    @property
    def split_indices(self) -> dict[str, np.ndarray]:
        """Rows of ``source`` in the ``"train"``, ``"val"`` and ``"test"`` splits (sorted; may be empty)."""
        return {k: v.copy() for k, v in self._prepare().splits.items()}

    def summary(self) -> str:
        """A few lines: source, task, classes, rows per split and training class counts."""
        self._prepare()
        return self._data.summary(self.trainer)

    # --- Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        """Read the data for ``stage`` (the main source is read once and reused)."""
        self._prepare()
        if self._media_index:
            if self.trainer is None and self._data.backbone is None:
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
            return self._loader(ds, train=True, shuffle=True)
        sampler = train_sampler(ds, self.class_counts, self.balanced_sampling, self.seed)
        single = self.trainer is None or self.trainer.world_size == 1
        if single and self.num_workers == 0 and isinstance(ds.x, torch.Tensor):
            loader = InMemoryBatches(
                ds, sampler, self.batch_size, batch_device(self.trainer, ds), self._consumed
            )
            if self._train_resume:
                loader.load_state_dict(self._train_resume)
            self._train_loader = loader
            return loader
        if not single and not self.balanced_sampling:
            sampler = None  # Lightning's DistributedSampler shuffles by (seed, epoch) and shards
        return self._loader(ds, train=True, shuffle=sampler is None, sampler=sampler)

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

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in order; an empty list (no validation) when ``val_fraction=0``."""
        ds = self._dataset("val")
        return self._loader(ds, sampler=eval_sampler(self.trainer, ds)) if len(ds) else []

    def test_dataloader(self) -> DataLoader:
        """Test batches in order (the validation data when ``test_fraction=0`` and no ``test_source``)."""
        ds = self._dataset("test")
        if len(ds) == 0:
            raise ValueError(
                "there is no test data: set `test_source`, `test_fraction` > 0 or `val_fraction` > 0."
            )
        return self._loader(ds, sampler=eval_sampler(self.trainer, ds))

    def predict_dataloader(self) -> DataLoader:
        """Batches with ``"index"``: rows of ``predict_source`` (default: the test data) in order."""
        ds = self._dataset("predict")
        if len(ds) == 0:
            raise ValueError("there is no data to predict: set `predict_source` (or have test/val data).")
        return self._loader(ds)  # Lightning shards predict data without padding itself

    def unsharded_dataloader(self, split: Literal["val", "test"]) -> DataLoader:
        """Every row of a split in order, also under DDP (the report scores all rows on rank 0)."""
        return self._loader(self._dataset(split))

    def _loader(self, ds: Any, train: bool = False, shuffle: bool = False, sampler: Any = None) -> DataLoader:
        size = self.batch_size if train else self.eval_batch_size or max(self.batch_size, 256)
        args = (size, self.num_workers, self.pin_memory, self.persistent_workers)
        return make_loader(ds, *args, shuffle=shuffle, sampler=sampler)
