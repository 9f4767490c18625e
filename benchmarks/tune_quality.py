"""What `focalmix tune` buys: a tuned model against the balanced preset and scikit-learn, same splits.

Run: ``python benchmarks/tune_quality.py`` (3 bundled sets, 20 trials of at most 30 epochs each, one seed:
about 15 minutes on one free core); a smoke run: ``python benchmarks/tune_quality.py --trials 3 --epochs 3``.

Sets (shipped with scikit-learn): ``breast_cancer``, ``digits`` (10 classes), ``digits9`` (digit 9 vs
rest, 10% positive). Every model sees the split of ``FocalMixDataModule(val_fraction=0.2,
test_fraction=0.2, seed=s)``, as in ``benchmarks/quality.py`` (whose model code this script reuses).

* tuned: ``focalmix tune`` (the packaged search space, ``--tune.n_trials`` trials of at most ``--epochs``
  epochs, median pruning, objective val/auroc for binary and val/acc for multiclass, ``--tune.seed s``);
  the test split scored once with the best trial's best checkpoint. Its time is the whole study's.
* balanced: ``FocalMixClassifier`` defaults (the balanced preset as ``focalmix fit`` runs it: up to 100
  epochs, early stopping on val/loss, best checkpoint by val/loss).
* LogReg / HistGB: scikit-learn defaults, fit on train + val.

Test metrics with torchmetrics: AUROC and AP (binary) or accuracy (multiclass), ECE (15 bins) and Brier;
focalmix probabilities are the calibrated ones (``predict_proba``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import header, quiet_lightning
from quality import BUNDLED, SKLEARN, _datamodule, _loader_arrays, fit_focalmix, fit_sklearn, scores

TRIAL_FLAGS = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
               "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu"]  # fmt: skip


def tune_args(name: str, seed: int, trials: int, epochs: int, out: Path) -> list[str]:
    """The ``focalmix tune`` command line for one set: its data flags, the split, the budget."""
    data = [x for k, v in BUNDLED[name].items() for x in (f"--data.{k}", str(v))]
    split = ["--data.val_fraction", "0.2", "--data.test_fraction", "0.2", "--data.seed", str(seed)]
    budget = ["--trainer.max_epochs", str(epochs), "--tune.n_trials", str(trials), "--tune.seed", str(seed)]
    return [*data, *split, *budget, *TRIAL_FLAGS, "--tune.output", str(out)]


def fit_tuned(name: str, seed: int, trials: int, epochs: int) -> dict:
    """Run the study; test probabilities of the best trial's best checkpoint."""
    import optuna

    from focalmix import FocalMixClassifier
    from focalmix.tune import main as tune_main

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as root:
        out = Path(root) / name
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the per-trial lines; the table is below
            tune_main(tune_args(name, seed, trials, epochs, out))
        seconds = time.perf_counter() - start
        study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")
        best = study.best_trial
        ckpt = out / f"trial_{best.number:03d}" / "checkpoints" / "best.ckpt"
        model = FocalMixClassifier.load_from_checkpoint(ckpt).eval()
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    dm = _datamodule(BUNDLED[name], seed)
    x_test, y_test = _loader_arrays(dm, "test")
    with torch.no_grad():
        probs = model.predict_proba(torch.as_tensor(x_test).reshape(len(x_test), *dm.input_shape)).numpy()
    note = f"best trial {best.number} of {len(study.trials)} ({pruned} pruned), val {best.value:.4f}"
    return dict(probs=probs, y=y_test, seconds=seconds, note=note, params=best.params)


def run_set(name: str, seed: int, trials: int, epochs: int) -> list[dict]:
    """One row per model on one set."""
    rows = []
    tuned = fit_tuned(name, seed, trials, epochs)
    rows.append(dict(model=f"tuned ({trials} trials)", seconds=tuned["seconds"], note=tuned["note"],
                     **scores(tuned["probs"], tuned["y"])))  # fmt: skip
    preset = fit_focalmix({"dm": BUNDLED[name]}, seed, "mlp", max_epochs=100)
    probs = preset.get("probs_cal", preset["probs"])
    rows.append(dict(model="balanced preset", seconds=preset["seconds"],
                     note=f"{preset['epochs']} epochs", **scores(probs, preset["y"])))  # fmt: skip
    for kind in SKLEARN:
        fit = fit_sklearn({"dm": BUNDLED[name]}, seed, kind)
        rows.append(dict(model=kind, seconds=fit["seconds"], note="", **scores(fit["probs"], fit["y"])))
    print(f"  tuned params ({name}): " + ", ".join(f"{k}={_fmt(v)}" for k, v in tuned["params"].items()))
    return rows


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_table(name: str, rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k not in ("model", "seconds", "note")]
    print(f"\n{name}\n| model | " + " | ".join(keys) + " | wall s | note |")
    print("|---" * (len(keys) + 3) + "|")
    for r in rows:
        values = " | ".join(f"{r[k]:.4f}" for k in keys)
        print(f"| {r['model']} | {values} | {r['seconds']:.1f} | {r['note']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(BUNDLED), choices=list(BUNDLED))
    parser.add_argument("--trials", type=int, default=20, help="trials per study (default 20)")
    parser.add_argument("--epochs", type=int, default=30, help="max_epochs of a trial (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="split, sampler and model seed (default 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet_lightning()
    warnings.filterwarnings("ignore", ".*configured with multiple `ModelCheckpoint`.*")  # the CLI's test
    print(header("focalmix tune vs the balanced preset vs scikit-learn (test split)"))
    for name in args.sets:
        print_table(name, run_set(name, args.seed, args.trials, args.epochs))


if __name__ == "__main__":
    main()
