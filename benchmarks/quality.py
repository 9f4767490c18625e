"""Model quality: focalmix's balanced preset against scikit-learn and against itself with the recipe off.

Run: ``python benchmarks/quality.py`` (about 8 minutes on 2 CPU cores; ``--quick``: a smoke run).

Datasets: ``breast_cancer`` (binary), ``digits`` (10 classes) and ``digits`` with ``positive_class=9``
(binary, about 10% positives). Every model sees the same stratified split of FocalMixDataModule
(``test_fraction=0.2, val_fraction=0.2``, ``seed``), with the labels coded the same way (the rows are
read back through the datamodule's loaders). Per seed the split, the network's initialisation and
mixup's draws change.

* focalmix balanced: ``FocalMixClassifier`` with its defaults (lr 1e-4, dropout 0.5, focal gamma 2 /
  alpha 0.5, label smoothing 0.1, mixup 0.5), batch 32, ``Trainer(max_epochs=100, min_epochs=10)`` with
  EarlyStopping(val/loss, patience 8) and ModelCheckpoint(best val/loss), as ``focalmix fit`` runs it;
  test predictions from the best checkpoint.
* focalmix recipe off: the same with ``focal_gamma=0, focal_alpha=None, label_smoothing=0, mixup_alpha=0``.
* scikit-learn: ``StandardScaler + LogisticRegression(max_iter=5000)`` and
  ``HistGradientBoostingClassifier``, fit on the train split, and again on train + val (focalmix uses
  val too, for early stopping and the checkpoint).

Metrics on the test split: AUROC and average precision (binary), accuracy and macro F1 (multiclass),
and the expected calibration error (torchmetrics, 15 bins) for all. Mean over the seeds, ± the std.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch
from _common import header, quiet_lightning
from torchmetrics.functional import classification as tmf

DATASETS = {
    "breast_cancer": dict(source="breast_cancer"),
    "digits": dict(source="digits"),
    "digits, 9 vs rest": dict(source="digits", positive_class=9),
}
NO_RECIPE = dict(focal_gamma=0.0, focal_alpha=None, label_smoothing=0.0, mixup_alpha=0.0)
MODELS = {
    "focalmix balanced": "the preset's defaults",
    "focalmix recipe off": "gamma 0, alpha None, smoothing 0, mixup 0",
    "LogReg (train)": "StandardScaler + LogisticRegression(max_iter=5000), train split",
    "LogReg (train+val)": "the same, train + val splits",
    "HistGB (train)": "HistGradientBoostingClassifier(), train split",
    "HistGB (train+val)": "the same, train + val splits",
}


def _datamodule(dataset: str, seed: int):
    from focalmix import FocalMixDataModule

    split = dict(val_fraction=0.2, test_fraction=0.2, seed=seed)
    return FocalMixDataModule(**DATASETS[dataset], **split, batch_size=32)


def _arrays(dm, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``split`` as the datamodule feeds them (raw features, coded labels), flattened."""
    dm.setup("fit" if split in ("train", "val") else "test")
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    xs, ys = zip(*((b["x"].flatten(1), b["y"]) for b in loader), strict=True)
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def fit_focalmix(dataset: str, seed: int, recipe: bool, max_epochs: int) -> dict[str, Any]:
    """Train through Lightning as ``focalmix fit`` does; predict the test split with the best checkpoint."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from focalmix import FocalMixClassifier

    quiet_lightning()
    dm = _datamodule(dataset, seed)
    seed_everything(seed, verbose=False)
    model = FocalMixClassifier(
        task=dm.task,
        num_classes=dm.num_classes,
        num_features=dm.num_features,
        input_shape=dm.input_shape,
        class_names=dm.class_names,
        **({} if recipe else NO_RECIPE),
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        checkpoint = ModelCheckpoint(dirpath=root, monitor="val/loss", mode="min", filename="best")
        trainer = Trainer(
            accelerator="cpu",
            max_epochs=max_epochs,
            min_epochs=math.ceil(0.1 * max_epochs),  # as the CLI sets it: no stop during warm-up
            callbacks=[EarlyStopping(monitor="val/loss", mode="min", patience=8), checkpoint],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
        )
        trainer.fit(model, dm)
        best_epoch = torch.load(checkpoint.best_model_path, weights_only=False)["epoch"]
        probs = torch.cat(trainer.predict(model, dataloaders=dm.test_dataloader(), ckpt_path="best"))
    _, y_test = _arrays(dm, "test")
    return dict(
        probs=probs.numpy(),
        y=y_test,
        epochs=trainer.current_epoch,
        best_epoch=best_epoch + 1,
        seconds=time.perf_counter() - start,
    )


def fit_sklearn(dataset: str, seed: int, kind: str, with_val: bool, quick: bool) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    dm = _datamodule(dataset, seed)
    x, y = _arrays(dm, "train")
    if with_val:
        xv, yv = _arrays(dm, "val")
        x, y = np.concatenate([x, xv]), np.concatenate([y, yv])
    if kind == "LogReg":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    else:
        model = HistGradientBoostingClassifier(random_state=seed, max_iter=20 if quick else 100)
    start = time.perf_counter()
    model.fit(x, y)
    x_test, y_test = _arrays(dm, "test")
    probs = model.predict_proba(x_test)
    probs = probs[:, 1] if dm.task == "binary" else probs
    return dict(probs=probs, y=y_test, seconds=time.perf_counter() - start)


def scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test metrics with torchmetrics: the same code for every model."""
    p, t = torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(y).long()
    if p.ndim == 1:
        return {
            "AUROC": tmf.binary_auroc(p, t).item(),
            "AP": tmf.binary_average_precision(p, t).item(),
            "ECE": tmf.binary_calibration_error(p, t, n_bins=15).item(),
        }
    c = p.shape[1]
    return {
        "acc": tmf.multiclass_accuracy(p, t, c, average="micro").item(),
        "macro F1": tmf.multiclass_f1_score(p, t, c, average="macro").item(),
        "ECE": tmf.multiclass_calibration_error(p, t, c, n_bins=15).item(),
    }


def _init_worker() -> None:
    torch.set_num_threads(1)  # one fit per core: these small models do not scale past one thread


def run_all(seeds: list[int], max_epochs: int, jobs: int, quick: bool) -> dict:
    """Every (dataset, model, seed) fit, ``jobs`` at a time in fresh processes."""
    tasks = {}
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        for dataset in DATASETS:
            for seed in seeds:
                for name in MODELS:
                    if name.startswith("focalmix"):
                        args = (fit_focalmix, dataset, seed, name.endswith("balanced"), max_epochs)
                    else:
                        kind, with_val = name.split()[0], "val" in name
                        args = (fit_sklearn, dataset, seed, kind, with_val, quick)
                    tasks[(dataset, name, seed)] = pool.submit(*args)
        return {key: future.result() for key, future in tasks.items()}


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def report(results: dict, seeds: list[int], max_epochs: int) -> None:
    for dataset in DATASETS:
        rows = {
            name: [
                scores(results[(dataset, name, s)]["probs"], results[(dataset, name, s)]["y"]) for s in seeds
            ]
            for name in MODELS
        }
        metrics = list(next(iter(rows.values()))[0])
        print(f"\n{dataset} (test split, mean ± std over seeds {seeds})\n")
        print(f"| {'model':<20} | " + " | ".join(f"{m:<17}" for m in metrics) + " | fit s |")
        print(f"|{'-' * 22}|" + "|".join("-" * 19 for _ in metrics) + "|------:|")
        for name, per_seed in rows.items():
            cells = [_mean_std([r[m] for r in per_seed]) for m in metrics]
            secs = statistics.mean(results[(dataset, name, s)]["seconds"] for s in seeds)
            print(f"| {name:<20} | " + " | ".join(f"{c:<17}" for c in cells) + f" | {secs:>5.1f} |")
        main_metric = metrics[0]
        mean = {n: statistics.mean(r[main_metric] for r in rows[n]) for n in rows}
        best_sk = max((n for n in rows if not n.startswith("focalmix")), key=mean.get)
        gap = mean["focalmix balanced"] - mean[best_sk]
        verdict = "within 1%: met" if gap >= -0.01 else "more than 1% behind: NOT met"
        print(
            f"\nfocalmix balanced vs the best scikit-learn model ({best_sk}) on {main_metric}: "
            f"{gap:+.4f} ({verdict})."
        )
        for name in ("focalmix balanced", "focalmix recipe off"):
            runs = [results[(dataset, name, s)] for s in seeds]
            ran = [r["epochs"] for r in runs]
            stopped = sum(e < max_epochs for e in ran)
            print(
                f"{name}: epochs run {ran} of max {max_epochs} ({stopped}/{len(runs)} stopped early), "
                f"best checkpoint at epoch {[r['best_epoch'] for r in runs]}."
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 datasets, 1 seed, 2 epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="fits in parallel")
    args = parser.parse_args()
    if args.quick:  # one binary and the multiclass set, one seed, no train+val refits
        args.seeds, args.max_epochs = [0], 2
        for name in ("digits, 9 vs rest",):
            DATASETS.pop(name)
        for name in ("LogReg (train+val)", "HistGB (train+val)"):
            MODELS.pop(name)
    torch.set_num_threads(1)  # as in the worker processes, so the header says what the fits used
    print(header("focalmix model quality: balanced preset vs scikit-learn (CPU)"))
    print(
        f"{len(args.seeds)} seeds, {args.jobs} fits in parallel with 1 torch thread each; focalmix: "
        f"max_epochs {args.max_epochs}, min_epochs {math.ceil(0.1 * args.max_epochs)}, early stopping "
        "patience 8 on val/loss, batch 32, best checkpoint by val/loss. Split: test 0.2, val 0.2, stratified."
    )
    for name, what in MODELS.items():
        print(f"  {name:<20} {what}")
    start = time.perf_counter()
    results = run_all(args.seeds, args.max_epochs, args.jobs, args.quick)
    report(results, args.seeds, args.max_epochs)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
