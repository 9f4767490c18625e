"""Lightning callbacks of focalmix's own: the CSV prediction writer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from focalmix.faults import atomic_write

if TYPE_CHECKING:
    import pandas as pd


class PredictionWriter(BasePredictionWriter):
    """Write predictions to a CSV: one row per input row, in input order, also under DDP.

    Columns: ``prob_<class>`` for every class, then ``prediction``, the predicted class name (binary: the
    positive class where its probability reaches the model's calibrated ``threshold``; multiclass: the
    most probable class; multilabel: the labels at or above 0.5, joined by ``;``). Class names are the
    ones the model was trained with (``class_names``), or ``0..C-1``. A table's ``id_columns`` (the
    datamodule's ``predict_ids``) come first, so the file joins back to its input; the CSV is written
    to a temporary file and renamed into place, and its path is printed.

    Each rank keeps its rows with their input positions (the ``index`` the datamodule puts in every
    predict batch, else the sampler's indices); rank 0 merges the parts through ``path`` + ``.part<R>.npz``
    files, so ``path`` must be on a filesystem every node can read (like the checkpoints).

    With ``detections`` (binary audio models, windows slid over long recordings): the file holds the
    detections instead, one row per event (``path``, ``start_seconds``, ``peak_probability``): a window
    at or above the threshold fires unless an event fired less than ``refractory_seconds`` before, as a
    streaming detector does (:func:`focalmix.wakeword.detect`).

    Args:
        path: the CSV to write. Default: ``predictions.csv``. Its folder is created.
        detections: write detected events instead of one row per window. Default: False.

    Example:
        >>> writer = PredictionWriter("out/predictions.csv")
        >>> writer.path.name
        'predictions.csv'
    """

    def __init__(self, path: str | Path = "predictions.csv", detections: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.path, self.detections = Path(path), bool(detections)
        if self.path.suffix.lower() != ".csv":
            raise ValueError(f"`path` must end in .csv, got {str(path)!r}.")

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._probs: list[torch.Tensor] = []
        self._index: list[torch.Tensor] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(batch, dict) and "index" in batch:
            index = batch["index"]
        else:  # the sampler's positions, which Lightning tracks when a prediction writer is attached
            index = trainer.predict_loop.current_batch_indices
        self._index.append(torch.as_tensor(index).detach().cpu().long())
        self._probs.append(outputs.detach().float().cpu())

    def write_on_epoch_end(self, trainer, pl_module, predictions: Any, batch_indices: Any) -> None:
        part = self._part(trainer.global_rank)
        part.parent.mkdir(parents=True, exist_ok=True)
        probs = torch.cat(self._probs) if self._probs else torch.empty(0)
        index = torch.cat(self._index) if self._index else torch.empty(0, dtype=torch.long)
        np.savez(part, probs=probs.numpy(), index=index.numpy())
        self._probs, self._index = [], []
        trainer.strategy.barrier("focalmix-predictions")
        if trainer.is_global_zero:
            self._merge(trainer, pl_module)
        trainer.strategy.barrier("focalmix-predictions-written")

    def _part(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.name}.part{rank}.npz")

    def _merge(self, trainer, pl_module) -> None:
        import pandas as pd

        parts = [self._part(r) for r in range(trainer.world_size)]
        loaded = [np.load(p) for p in parts]
        probs = np.concatenate([d["probs"] for d in loaded])
        index = np.concatenate([d["index"] for d in loaded])
        order = np.argsort(index, kind="stable")
        probs, index = probs[order], index[order]
        if len(np.unique(index)) != len(index):
            raise RuntimeError("a row was predicted twice: the predict sampler repeated samples.")
        frame = predictions_frame(probs, pl_module)
        ids = getattr(trainer.datamodule, "predict_ids", None) if trainer.datamodule is not None else None
        if ids is not None:  # indexed by the rows' "index", so a partial predict run still lines up
            frame = pd.concat([ids.loc[index].reset_index(drop=True), frame], axis=1)
        if self.detections:
            frame = detections_frame(frame, probs, pl_module, trainer.datamodule)
        with atomic_write(self.path) as tmp:
            frame.to_csv(tmp, index=False)
        for p in parts:
            p.unlink()
        what = "detections" if self.detections else "predictions"
        rank_zero_info(f"focalmix: wrote {len(frame)} {what} to {self.path}")


def predictions_frame(probs: np.ndarray, pl_module) -> pd.DataFrame:
    """A DataFrame of per-class probabilities and the predicted class, as :class:`PredictionWriter` writes."""
    import pandas as pd

    hp = pl_module.hparams
    names = [str(c) for c in (hp.get("class_names") or range(hp.num_classes))]
    if hp.task == "binary":
        threshold = float(pl_module.threshold)
        table = np.stack([1 - probs, probs], axis=1)
        predicted = np.where(probs >= threshold, names[1], names[0])
    elif hp.task == "multiclass":
        table = probs
        predicted = np.asarray(names, dtype=object)[probs.argmax(1)]
    else:
        table = probs
        predicted = [";".join(n for n, on in zip(names, row, strict=True) if on) for row in probs >= 0.5]
    frame = pd.DataFrame(table, columns=[f"prob_{n}" for n in names])
    frame["prediction"] = predicted
    return frame


def detections_frame(frame: pd.DataFrame, probs: np.ndarray, pl_module, datamodule) -> pd.DataFrame:
    """Events from per-window rows: ``path``, ``start_seconds``, ``peak_probability``."""
    import pandas as pd

    from focalmix import wakeword

    if pl_module.hparams.task != "binary" or "path" not in frame:
        raise ValueError("detections need a binary model predicting audio files (a wake word).")
    settings = datamodule.wakeword_settings
    starts = frame["start_seconds"].to_numpy() if "start_seconds" in frame else np.zeros(len(frame))
    files, file_ids = np.unique(frame["path"].to_numpy(), return_inverse=True)
    events = wakeword.detect(
        probs, starts, float(pl_module.threshold), refractory_seconds=settings["refractory_seconds"],
        file_ids=file_ids,
    )  # fmt: skip
    return pd.DataFrame(
        {
            "path": [files[e["file"]] for e in events],
            "start_seconds": [round(e["start"], 3) for e in events],
            "peak_probability": [e["peak"] for e in events],
        }
    )
