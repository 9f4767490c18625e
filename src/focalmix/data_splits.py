"""The datamodule's data: its sources read once, labels coded, rows split, one dataset per split.

:class:`DataSplits` holds no Lightning state: :class:`~focalmix.data.FocalMixDataModule` builds it from
its checked arguments and asks it for datasets (``"train"``, ``"val"``, ``"test"``, ``"predict"``). The
main source is read, coded and split once (:func:`focalmix.sources.prepared.prepare`), deterministically,
the same on every rank; a table's preprocessing spec is fitted on its training rows, other arrays get
standardization statistics. Val/test/predict sources must match training's features and classes. Media
splits become datasets in :mod:`focalmix.data_media` (decoded per batch, or a frozen backbone's features).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from focalmix import data_media
from focalmix import preprocessing as _prep
from focalmix.datasets import ArrayDataset
from focalmix.sources import RawData, ReadOptions, Source
from focalmix.sources.base import warn
from focalmix.sources.labels import clean_labels, code_labels
from focalmix.sources.prepared import Labelling, Prepared, prepare
from focalmix.sources.statistics import feature_std, scan
from focalmix.sources.tables import numeric_matrix

if TYPE_CHECKING:
    import pandas as pd

STREAMS = {"train": 0, "val": 1, "test": 2, "predict": 3}  # a synthetic source draws one sample per stream


@dataclass
class TableSettings:
    """How a table is encoded: the preprocessing arguments (checked) and a spec given or fitted."""

    standardize: bool = True
    categorical_columns: list[str] | None = None
    max_categories: int = 100
    missing: str = "impute"
    spec: dict | None = None


class DataSplits:
    """Sources -> coded, split data -> datasets, each made once and kept.

    Args:
        sources: ``{"source": ..., "val_source": ..., ...}``, the :class:`~focalmix.sources.Source` of each
            source argument given (``"source"`` always).
        options: how sources are read (target, columns, synthetic settings, media settings).
        labelling: label and split arguments; fractions are 0 where a val/test source is given.
        table: the table encoding's settings; ``table.spec`` is the fitted spec once the data is read.
        hparams: the datamodule's hyperparameters, which get the fitted spec (so checkpoints carry it).
    """

    def __init__(
        self,
        sources: dict[str, Source],
        options: ReadOptions,
        labelling: Labelling,
        table: TableSettings,
        hparams: MutableMapping[str, Any],
    ) -> None:
        self.sources, self.options, self.labelling, self.table = sources, options, labelling, table
        self.hparams = hparams
        self.prepared: Prepared | None = None
        self.media_index: dict[int, Any] = {}  # stream -> MediaIndex of a media source
        self.backbone: torch.nn.Module | None = None  # what media are prepared for
        self.datasets: dict[str, Any] = {}
        self.ids: dict[str, pd.DataFrame | None] = {}
        self._background: dict[str, Any] | None = None

    @classmethod
    def build(
        cls, params: Mapping[str, Any], sources: dict[str, Source], spec: dict | None, hparams: MutableMapping
    ) -> DataSplits:
        """From the datamodule's checked arguments (``params``), its sources and a given spec (or None)."""
        p = params
        media = data_media.MediaSettings(
            p["path_column"], p["clip_seconds"], p["bad_files"], p["long_files"], str(p["cache_dir"]),
            p["hop_seconds"], p["refractory_seconds"], p["augment_views"], p["noise_source"], p["seed"],
        )  # fmt: skip
        synthetic = {
            "rows": p["synthetic_rows"], "features": p["synthetic_features"],
            "classes": p["synthetic_classes"], "positive_fraction": float(p["synthetic_positive_fraction"]),
        }  # fmt: skip
        target = p["target"] if isinstance(p["target"], str) else list(p["target"])
        columns = [
            None if p[c] is None else list(p[c]) for c in ("feature_columns", "id_columns", "drop_columns")
        ]
        options = ReadOptions(
            target, columns[0], columns[1] or [], columns[2] or [], synthetic, p["seed"], media
        )
        val = 0.0 if p["val_source"] is not None else float(p["val_fraction"])
        test = 0.0 if p["test_source"] is not None else float(p["test_fraction"])
        labelling = Labelling(p["positive_class"], p["task"], val, test, p["seed"], p["balanced_sampling"])
        categorical = None if p["categorical_columns"] is None else list(p["categorical_columns"])
        table = TableSettings(p["standardize"], categorical, p["max_categories"], p["missing"], spec)
        return cls(sources, options, labelling, table, hparams)

    @property
    def input_spec(self) -> Any:
        return getattr(self.backbone, "input_spec", None)

    def attach(self, backbone: torch.nn.Module | None) -> bool:
        """Use ``backbone`` for media; True when that changes the media datasets (made again)."""
        if backbone is self.backbone:
            return False
        self.backbone = backbone
        if self.media_index:
            self.datasets.clear()  # media datasets depend on the backbone
            self._background = None
        return bool(self.media_index)

    def load(self, split: str, need_labels: bool, expected: list[str] | None) -> RawData:
        """Read the source of ``split`` (``"train"``: the main source); numpy arrays become tensors."""
        source = self.sources["source" if split == "train" else f"{split}_source"]
        if self.table.spec is not None and expected is None:
            expected = [c["name"] for c in self.table.spec["columns"]]
        options = replace(self.options, input_spec=self.input_spec)
        raw = source.load(options, STREAMS[split], need_labels, expected)
        if raw.media_index is not None:
            self.media_index[STREAMS[split]] = raw.media_index
        elif isinstance(raw.x, np.ndarray) and not isinstance(raw.x, np.memmap):
            raw.x = torch.from_numpy(np.ascontiguousarray(raw.x, dtype=np.float32))  # no copy if float32
        return raw

    def prepare(self, batch_size: int | None = None) -> Prepared:
        """Read the main source, code labels, split and measure statistics: once, the same on every rank.

        ``batch_size``: warn, when the data is first read, if it exceeds the training split.
        """
        if self.prepared is None:
            raw = self.load("train", True, None)
            prep = prepare(raw, self.labelling)
            prep.normalization = self._stats(raw, prep.splits)
            n_train = len(prep.splits["train"])
            if batch_size is not None and batch_size > n_train:
                warn(
                    f"`batch_size`={batch_size} is larger than the training split ({n_train} rows); "
                    "every epoch is a single smaller batch. Lower batch_size or add data."
                )
            self.prepared = prep
        return self.prepared

    def _stats(self, raw: RawData, splits: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor] | None:
        table = self.table
        if raw.media_index is not None:
            return None  # media: the backbone normalizes its own input
        if raw.frame is not None:  # a table: the model standardizes through the spec, fitted on train rows
            if table.spec is None:
                # missing='error' is enforced by _encode over every row, with the file's name
                table.spec = _prep.fit_spec(
                    raw.frame.iloc[splits["train"]], raw.feature_names, table.categorical_columns,
                    "impute", table.max_categories, table.standardize, f"the training rows of {raw.name}",
                )  # fmt: skip
                self.hparams["preprocessing"] = copy.deepcopy(table.spec)  # checkpoints carry it
            self._encode(raw)
            return None
        return scan(raw.x, splits["train"] if table.standardize else None, raw.feature_names, raw.name)

    def _encode(self, raw: RawData) -> None:
        raw.x = torch.from_numpy(
            _prep.encode_frame(raw.frame, self.table.spec, name=raw.name, missing=self.table.missing)
        )
        raw.frame = None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample of the main source; None for media."""
        prep = self.prepare()
        return None if 0 in self.media_index else tuple(int(s) for s in prep.raw.x.shape[1:])

    def dataset(self, split: str, trainer: Any = None, batch_size: int | None = None) -> Any:
        """The dataset of ``split``, made once (``trainer``: for a frozen backbone's features; ``batch_size``:
        see :meth:`prepare`)."""
        self.prepare(batch_size)
        if split not in self.datasets:
            self.datasets[split] = self._make(split, trainer)
        return self.datasets[split]

    def _make(self, split: str, trainer: Any) -> Any:
        prep, given = self.prepare(), f"{split}_source" in self.sources
        if 0 in self.media_index and not given:  # a split of the main media source
            return self._main_media(split, trainer)
        if split == "train" or (split == "val" and not given):
            return ArrayDataset(prep.raw.x, prep.y, prep.splits[split], x_path=prep.raw.x_path)
        if given:
            return self._secondary(split, trainer)
        if split == "test" and self.labelling.test_fraction == 0:  # no test split: the validation data
            return self.dataset("val", trainer)
        if split == "test":
            return ArrayDataset(prep.raw.x, prep.y, prep.splits["test"], x_path=prep.raw.x_path)
        test = self.dataset("test", trainer)  # no predict_source: the test data
        return ArrayDataset(test.x, test.y, test.indices, True, test.x_path)

    def _secondary(self, split: str, trainer: Any) -> Any:
        """A val/test/predict source: same sample shape and features as training, known classes only."""
        prep = self.prepare()
        raw = self.load(split, split != "predict", prep.raw.feature_names)
        if raw.media_index is not None:
            return self._media(split, raw.media_index, self._code(raw), trainer)
        self.ids[split] = raw.ids
        if raw.frame is not None and self.table.spec is not None:
            self._encode(raw)  # finite, numeric where training was: checked while encoding
        elif raw.frame is not None:  # a table, but training data that was not one: numbers only
            raw.x = torch.from_numpy(numeric_matrix(raw.frame, raw.name))
        if tuple(raw.x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"samples of {raw.name} ({split}) have shape {tuple(raw.x.shape[1:])}, training "
                f"samples {self.input_shape}; they must match."
            )
        if self.table.spec is None:
            scan(raw.x, None, raw.feature_names, raw.name)
        return ArrayDataset(raw.x, self._code(raw), None, split == "predict", raw.x_path)

    def _code(self, raw: RawData) -> torch.Tensor | None:
        if raw.y is None:
            return None
        p = self.prepare()
        y = clean_labels(raw.y, raw.name)
        return code_labels(y, p.task, p.class_names, p.raw_classes, p.code_of, raw.name)

    def _main_media(self, split: str, trainer: Any) -> Any:
        prep = self.prepare()
        if split == "predict":  # no predict_source: the test data (media: the same split)
            split_rows, with_index = "test" if len(prep.splits["test"]) else "val", True
        else:
            split_rows, with_index = split, False
        if split_rows == "test" and "test_source" not in self.sources and self.labelling.test_fraction == 0:
            split_rows = "val"
        rows = prep.splits[split_rows]
        return self._media(split, self.media_index[0].take(rows), prep.y[rows], trainer, with_index)

    def _media(self, split: str, index: Any, y: Any, trainer: Any, with_index: bool = False) -> Any:
        self.ids[split] = data_media.media_ids(index)  # batches' "index": positions in this split
        return data_media.media_dataset(
            index, y, split, self.backbone, self.options.media, trainer, with_index
        )

    def predict_ids(self, trainer: Any = None) -> pd.DataFrame | None:
        """The id columns (media: paths) of the rows to predict, indexed by each row's ``"index"``."""
        ds = self.dataset("predict", trainer)
        if self.media_index:
            return self.ids["predict"]
        test = "test" if "test_source" in self.sources or self.labelling.test_fraction else "val"
        has_predict = "predict_source" in self.sources
        ids = self.ids.get("predict" if has_predict else test, self.prepare().raw.ids)
        rows = ds.indices if ds.indices is not None or ids is None else np.arange(len(ids))
        return None if ids is None else ids.iloc[rows].set_axis(rows)

    def feature_normalization(self, trainer: Any = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) of a frozen backbone's features on the training split (media); else None."""
        ds = self.dataset("train", trainer) if self.media_index and self.backbone is not None else None
        if not isinstance(ds, ArrayDataset) or ds.x_key != "features":
            return None
        mean = ds.x.double().mean(0)
        return mean.float(), feature_std(ds.x.double().std(0), mean).float()

    def background(self, sources: list[str] | None, trainer: Any = None) -> dict[str, Any] | None:
        """The background windows' features for FA/h, computed once per backbone; None without them."""
        if not sources or self.backbone is None or self.input_spec is None:
            return None
        if self._background is None:
            self._background = data_media.load_background(
                sources, self.options.media, self.backbone, self.input_spec, trainer
            )
        return self._background

    def summary(self, trainer: Any = None) -> str:
        """A few lines: source, task, classes, rows per split and training class counts."""
        prep = self.prepare()
        sizes: dict[str, int | str] = {s: len(self.dataset(s, trainer)) for s in ("train", "val", "test")}
        if "test_source" not in self.sources and self.labelling.test_fraction == 0:
            sizes["test"] = "the val rows"
        counts = dict(zip(prep.class_names, prep.class_counts, strict=True))
        return (
            f"FocalMixDataModule(source={prep.raw.name}, task={prep.task}, input_shape={self.input_shape})\n"
            f"  rows: {sizes}\n  training class counts: {counts}"
        )

    def summary_lines(self) -> list[str]:
        """Extra lines for the data summary: skipped media files and features from the cache."""
        return data_media.summary_lines(self.media_index.get(0), self.options.media)
