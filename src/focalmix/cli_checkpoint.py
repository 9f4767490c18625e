"""The CLI's checkpoints: read one (or say in one line what is wrong), its settings, its run folder."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from focalmix._cli_text import LINKS, UsageError
from focalmix.table_io import is_table
from focalmix.trust import UntrustedClassError, check_hyperparameters

__all__ = ["checkpoint_positive", "checkpoint_settings", "epochs_done", "load_checkpoint", "resume_logger"]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a focalmix checkpoint, or raise :class:`UsageError` naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"--ckpt_path: no checkpoint at {path}",
            "give the best.ckpt or last.ckpt under a fit run's checkpoints/ folder",
        )
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # zip, pickle and EOF errors of a cut-short or foreign file: all the user's
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"--ckpt_path: {path} is not a readable checkpoint (truncated or corrupted? {reason})"
        ) from exc
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "focal_gamma" not in hparams or "state_dict" not in ckpt:
        raise UsageError(
            f"--ckpt_path: {path} is not a focalmix checkpoint (no FocalMixClassifier hyperparameters in it)"
        )
    try:  # before jsonargparse or Lightning import anything the checkpoint names
        check_hyperparameters([hparams, ckpt.get("datamodule_hyper_parameters")], f"--ckpt_path {path}")
    except UntrustedClassError as err:
        raise UsageError(err.summary, err.hint) from None
    return ckpt


def checkpoint_settings(
    ckpt: dict[str, Any], ckpt_path: str, defaults: dict[str, Any], current: dict[str, Any]
) -> dict[str, Any]:
    """The ``model`` and ``data`` settings a command takes from a checkpoint, to update its config with.

    Model: the checkpoint's hyperparameters, except the ones the CLI links from the data (the same values,
    since the data's settings are applied too). Data: the training run's settings, except where this
    command line sets its own (``current`` differs from the parser's ``defaults``), and always the
    checkpoint's table encoding.
    """
    model_hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k not in LINKS}
    model_hparams.pop("_instantiator", None)
    model_hparams.pop("_class_path", None)
    data_hparams = ckpt.get("datamodule_hyper_parameters") or {}
    data = {k: v for k, v in data_hparams.items() if k in current and current[k] == defaults.get(k)}
    # The weights were trained on the checkpoint's table encoding (categories in its order, its
    # medians): the data is encoded with that one, never refitted on the rows at hand.
    spec = ckpt["hyper_parameters"].get("preprocessing")
    source = data.get("source", current.get("source"))
    manifest = data.get("path_column", current.get("path_column"))  # a table of media paths: no encoding
    if spec is None and is_table(source) and not manifest:
        raise UsageError(
            f"--ckpt_path: {ckpt_path} holds no table encoding (it was trained before focalmix encoded"
            " tables inside the model, or on arrays); its inputs cannot be rebuilt from a table",
            "train it again with this version of focalmix",
        )
    data["preprocessing"] = spec
    positive = checkpoint_positive(ckpt, data_hparams)
    if positive is not None and current.get("positive_class") == defaults.get("positive_class"):
        data["positive_class"] = positive
    return {"model": model_hparams, "data": data}


def checkpoint_positive(ckpt: dict[str, Any], data_hparams: dict[str, Any]) -> str | None:
    """The positive class a binary checkpoint was trained with, when its data settings did not name one.

    Checkpoints from before text labels took the minority class as positive coded the label sorting last
    as 1: the weights predict that class, so the data is coded as they were trained.
    """
    hparams = ckpt["hyper_parameters"]
    names = hparams.get("class_names")
    if hparams.get("task") != "binary" or data_hparams.get("positive_class") is not None:
        return None
    if not isinstance(names, list) or len(names) != 2 or str(names[0]) == f"not_{names[1]}":
        return None
    return str(names[1])


def epochs_done(ckpt: dict[str, Any]) -> int:
    """The epochs a (last) checkpoint's run had finished."""
    try:
        # saved in on_train_epoch_end: the epoch is "processed" but not yet counted "completed"
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(ckpt.get("epoch", 0))


def resume_logger(ckpt_path: str) -> list[Any] | None:
    """A resumed fit logs into its run folder: the default logger pinned to the checkpoint's version.

    Only for checkpoints under ``<save_dir>/<name>/<version>/checkpoints/`` of a folder a logger wrote
    (``hparams.yaml`` there); else None (Lightning's default logger: a new version folder).
    """
    run = Path(ckpt_path).resolve().parent.parent
    if Path(ckpt_path).resolve().parent.name != "checkpoints" or not (run / "hparams.yaml").is_file():
        return None
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    kind = TensorBoardLogger if any(run.glob("events.out.tfevents.*")) else CSVLogger
    rows = _logged_rows(run / "metrics.csv", ckpt_path) if kind is CSVLogger else []
    with warnings.catch_warnings():  # "the folder exists and is not empty": on purpose
        warnings.simplefilter("ignore")
        logger = kind(save_dir=str(run.parent.parent), name=run.parent.name, version=run.name)
        if kind is CSVLogger:
            # Lightning's CSV writer deletes metrics.csv when it opens the folder: hand it back the rows
            # logged up to the checkpoint, so the curves (and the report) cover the whole run
            writer = logger.experiment
            writer.metrics = rows
    return [logger]


def _logged_rows(csv_path: Path, ckpt_path: str) -> list[dict[str, Any]]:
    """Rows of a run's metrics.csv logged up to the checkpoint's step (later ones are logged again)."""
    import csv

    if not csv_path.is_file():
        return []
    step = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("global_step", 0)
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    return [r for r in rows if r.get("step", "") == "" or float(r["step"]) < step]
