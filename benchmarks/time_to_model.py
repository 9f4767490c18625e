"""Time to a model: ``focalmix fit`` end to end as a subprocess against scikit-learn on the same data.

Run: ``python benchmarks/time_to_model.py`` (the table and synthetic at 10^4, 10^5 and 10^6 rows with the
balanced preset's 100 epochs: hours at 10^6 on 2 cores; cut it with ``--sizes`` and ``--max_epochs``);
a smoke run: ``python benchmarks/time_to_model.py --sizes 10000 --max_epochs 2 --seeds 0``.

focalmix: ``focalmix fit --data.source ... --data.test_fraction 0.2 --data.seed s
--trainer.enable_progress_bar false`` (the balanced preset: every other setting at its default) in a
fresh process. Two times: from process start to the moment ``best.ckpt`` was last written (the model you
keep), and to process exit (which also scores the test split). Its test AUROC: the best checkpoint's
calibrated probabilities on the same test split, read through the same datamodule afterwards (not timed).

scikit-learn: ``HistGradientBoostingClassifier`` and ``LogisticRegression`` (standardized; tables: median
imputation with indicators, one-hot categories; as in ``quality.py``) fit on the train + val rows of the
same split, timed in this process (fit only: the data are already in memory, imports not counted).
AUROC: scikit-learn's ``roc_auc_score`` for every model.

Sets: one real table of :mod:`real_tables` (``--table``, default ``fair``) and ``synthetic`` (20 features,
Gaussian classes, the datamodule's built-in generator) at ``--sizes`` rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import header
from quality import _datamodule, _loader_arrays, _sklearn_model, _table_rows, prepare_sets
from sklearn.metrics import roc_auc_score

SIZES = (10_000, 100_000, 1_000_000)


def _cli_args(dm_kwargs: dict[str, Any]) -> list[str]:
    args = []
    for key, value in dm_kwargs.items():
        text = json.dumps(value) if isinstance(value, list) else str(value)
        args += [f"--data.{key}", text]
    return args


def run_focalmix(dm_kwargs: dict[str, Any], seed: int, max_epochs: int | None, root: Path) -> dict[str, Any]:
    """``focalmix fit`` in a subprocess; seconds to the best checkpoint and to exit; the test AUROC."""
    cmd = [sys.executable, "-m", "focalmix", "fit", *_cli_args(dm_kwargs)]
    cmd += ["--data.test_fraction", "0.2", "--data.seed", str(seed)]
    cmd += ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)]
    cmd += ["--seed_everything", str(seed)]
    if max_epochs is not None:
        cmd += ["--trainer.max_epochs", str(max_epochs)]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread, as the scikit-learn fits here
    start_wall = time.time()
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    total = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"focalmix fit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    best = max(root.rglob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    return dict(
        to_best=best.stat().st_mtime - start_wall,
        total=total,
        auroc=_focalmix_auroc(best, dm_kwargs, seed),
        epochs=torch.load(best, weights_only=False, map_location="cpu")["epoch"] + 1,
    )


def _focalmix_auroc(checkpoint: Path, dm_kwargs: dict[str, Any], seed: int) -> float:
    from focalmix import FocalMixClassifier

    model = FocalMixClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    dm = _datamodule(dm_kwargs, seed, batch_size=65_536)
    x, y = _loader_arrays(dm, "test")
    with torch.no_grad():
        probs = model.predict_proba(torch.as_tensor(x).reshape(len(x), *dm.input_shape))
    return float(roc_auc_score(y, probs.numpy()))


def run_sklearn(spec: dict[str, Any], seed: int, kind: str) -> dict[str, Any]:
    """``kind`` fit on train + val of the same split; fit seconds and test AUROC."""
    dm = _datamodule(spec["dm"], seed, batch_size=65_536)
    if "raw" in spec:
        rows = dm.split_indices
        x, y = _table_rows(spec, np.concatenate([rows["train"], rows["val"]]))
        x_test, y_test = _table_rows(spec, rows["test"])
    else:
        (x, y), (xv, yv) = _loader_arrays(dm, "train"), _loader_arrays(dm, "val")
        x, y = np.concatenate([x, xv]), np.concatenate([y, yv])
        x_test, y_test = _loader_arrays(dm, "test")
    model = _sklearn_model(kind, seed, x if not isinstance(x, np.ndarray) else None)
    start = time.perf_counter()
    model.fit(x, y)
    seconds = time.perf_counter() - start
    return dict(total=seconds, auroc=float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])))


def _mean(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g} ± {std:.2g}"


def main() -> None:
    from real_tables import TABLES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="fair", choices=[*TABLES, "none"])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="synthetic rows")
    parser.add_argument("--max_epochs", type=int, default=None, help="override the preset's 100 epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    if any(n < 100 for n in args.sizes) or (args.max_epochs is not None and args.max_epochs < 1):
        parser.error(f"--sizes must be >= 100 and --max_epochs >= 1, got {args.sizes}, {args.max_epochs}")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", ".*is larger than the training split.*")  # reading, not training
    print(header("focalmix time to model: `focalmix fit` end to end vs scikit-learn (CPU)"))
    epochs = args.max_epochs or "100 (the preset's)"
    print(f"seeds {args.seeds}; focalmix max_epochs {epochs}; split test 0.2, val 0.2 of the rest.\n")
    print("| data | rows | model | seconds | test AUROC | notes |\n|---|---:|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as folder:
        sets = prepare_sets([] if args.table == "none" else [args.table], Path(folder))
        for n in args.sizes:
            synthetic = dict(source="synthetic", synthetic_rows=n, synthetic_positive_fraction=0.1)
            sets[f"synthetic {n:,}"] = dict(dm=synthetic, mode="built-in", rows=n)
        for name, spec in sets.items():
            rows = spec.get("rows") or sum(map(len, _datamodule(spec["dm"], 0).split_indices.values()))
            fm = []
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as root:
                    fm.append(run_focalmix(spec["dm"], seed, args.max_epochs, Path(root)))
            note = f"best epoch {[r['epochs'] for r in fm]}; {spec['mode'][:40]}"
            print(
                f"| {name} | {rows:,.0f} | focalmix fit, to best.ckpt | {_mean([r['to_best'] for r in fm])} "
                f"| {_mean([r['auroc'] for r in fm])} | {note} |"
            )
            print(f"| {name} | {rows:,.0f} | focalmix fit, to exit | {_mean([r['total'] for r in fm])} | | |")
            for kind in ("HistGB", "LogReg"):
                sk = [run_sklearn(spec, seed, kind) for seed in args.seeds]
                print(
                    f"| {name} | {rows:,.0f} | {kind} (fit) | {_mean([r['total'] for r in sk])} "
                    f"| {_mean([r['auroc'] for r in sk])} | |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
