"""Audio from raw WAVs: ``focalmix fit`` on a folder of clips against a hand pipeline, and the cache.

Run: ``python benchmarks/media.py`` (builds the wake-word set of ``examples/wakeword`` into a temporary
folder, or into ``--data DIR`` when it has no ``train/``; about 5 minutes on an idle 2-core machine, many
times that on a busy one); ``--repeats 3`` interleaves three rounds of (a)-(d) and shows medians;
``--tries`` adds the settings a user would try when the quality bar is not met (on the warm cache, about
a minute each); ``--quick``: a smoke run on a tiny set.

Each run is a fresh process, timed by the wall clock from its start to its exit (start-up included) and by
its CPU time (user + system, children's ``getrusage``: steadier on a shared machine):

* (a) hand pipeline: WAVs read with soundfile, ``SpeechEmbedding`` over all training clips in one batched
  loop, ``FocalMixDataModule.from_arrays`` + ``FocalMixClassifier`` (the same head as the fit: dropout and
  one linear layer on the embedding, ``backbone=nn.Identity()``) + ``lightning.Trainer`` with the fit's
  epochs, early stopping (``val/loss``, patience 8, min_epochs 10 of 100) and best checkpoint, no logger or
  progress bar; then the held-out clips embedded and scored (when the fit scores them too);
* (b) ``focalmix fit --data.source DIR/train --data.test_source DIR/test --model.backbone
  focalmix.backbones.SpeechEmbedding --report false`` with an empty feature cache (``XDG_CACHE_HOME``);
* (c) the same fit again: every feature from the cache;
* (d) 30 epochs exactly (``--trainer.min_epochs 30 --trainer.max_epochs 30``): the hand pipeline and the
  fit with an empty cache, i.e. one backbone pass + 30 epochs of the head on arrays.

``--fit-args "--preset wakeword"`` adds flags to every ``focalmix fit`` ((b)-(e)); the hand pipeline keeps
the recipe's defaults, as the issue defines it (embedding by hand, ``from_arrays``, the classifier).

Quality, not timed: test AUROC and the recall at a false-positive rate <= 0.05 (scikit-learn's
``roc_curve``: the highest true-positive rate among thresholds with FPR <= 0.05) on the held-out voices
(``test/``) and on the neural voice (``test_piper/``), from ``focalmix predict --ckpt_path best.ckpt``'s CSV
with the labels of the folder names (the hand pipeline scores in its own process). Time in the backbone:
items computed / items per second of the fit's ``focalmix: features`` lines; "before epoch 1": from process
start to the first training line (start-up, folder scans, features computed or read from the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAKE_DATASET = ROOT / "examples" / "wakeword" / "make_dataset.py"
BACKBONE = "focalmix.backbones.SpeechEmbedding"
FEATURES = re.compile(
    r"features (\w+): ([\d,]+) items, ([\d,]+) from cache, ([\d,]+) computed \(([\d,.]+) items/s"
)
TRIES = {  # what a user tries when the bar is not met: --tries NAME ... (each on the warm cache)
    "epochs 300": ["--trainer.max_epochs", "300"],
    "lr 1e-3": ["--model.learning_rate", "1e-3"],
    "dropout 0.1": ["--model.dropout", "0.1"],
    "mixup off": ["--model.mixup_alpha", "0"],
    "balanced sampling": ["--data.balanced_sampling", "true"],
    "augment_views 2": ["--data.augment_views", "2"],
    "lr 1e-3, dropout 0.1, mixup off": ["--model.learning_rate", "1e-3", "--model.dropout", "0.1",
                                        "--model.mixup_alpha", "0"],
    "lr 1e-3, 300 epochs": ["--model.learning_rate", "1e-3", "--trainer.max_epochs", "300"],
    "lr 3e-3, dropout 0.1, mixup off": ["--model.learning_rate", "3e-3", "--model.dropout", "0.1",
                                        "--model.mixup_alpha", "0"],
    "preset wakeword": ["--preset", "wakeword"],  # lr 3e-4, MLP head [128], no mixup/smoothing, 4 views
    "preset wakeword, no views": ["--preset", "wakeword", "--data.augment_views", "0"],
    "lr 1e-3, recipe off": ["--model.learning_rate", "1e-3", "--model.dropout", "0", "--model.mixup_alpha",
                            "0", "--model.focal_gamma", "0", "--model.label_smoothing", "0"],
}  # fmt: skip


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall and CPU seconds, stdout lines with their time since start, the exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile("w+") as err:  # a file: a chatty stderr cannot block the child
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=cwd)
        lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
        proc.wait()
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "lines": lines, "stderr": stderr, "rc": proc.returncode}


def labelled(folder: Path) -> tuple[list[Path], np.ndarray]:
    """The clips of ``folder/{other,wake}`` sorted as focalmix scans a folder; 1 for ``wake``."""
    paths = sorted(p for c in ("other", "wake") for p in (folder / c).glob("*.wav"))
    return paths, np.array([p.parent.name == "wake" for p in paths], dtype=int)


def quality(y: np.ndarray, prob: np.ndarray, max_fpr: float = 0.05) -> dict[str, float]:
    """AUROC and the best recall (TPR) at a false-positive rate <= ``max_fpr``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, prob)
    return {"auroc": float(roc_auc_score(y, prob)), "recall": float(tpr[fpr <= max_fpr].max())}


# ------------------------------------------------------------------------------------------------------
# (a) the hand pipeline, in its own process (python benchmarks/media.py --hand ...)


def hand_pipeline(data: Path, max_epochs: int, min_epochs: int, root: Path) -> dict:
    import lightning.pytorch as pl
    import soundfile as sf
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from focalmix import FocalMixClassifier, FocalMixDataModule
    from focalmix.backbones import SpeechEmbedding

    backbone = SpeechEmbedding()

    def embed(paths: list[Path]) -> np.ndarray:  # one batched loop; the clips are 1 s at 16 kHz
        out = []
        for lo in range(0, len(paths), 256):
            batch = np.stack(
                [sf.read(p, dtype="float32", frames=16000, fill_value=0.0)[0] for p in paths[lo : lo + 256]]
            )
            out.append(backbone(torch.from_numpy(batch)).numpy())
        return np.concatenate(out)

    tic = time.perf_counter()
    paths, y = labelled(data / "train")
    x = embed(paths)
    embed_s = time.perf_counter() - tic
    dm = FocalMixDataModule.from_arrays(x, np.where(y == 1, "wake", "other"))
    links = {k: getattr(dm, k) for k in ("num_features", "num_classes", "task", "input_shape", "class_names")}
    model = FocalMixClassifier(backbone=torch.nn.Identity(), backbone_features=x.shape[1], **links)
    best = ModelCheckpoint(dirpath=root, monitor="val/loss", mode="min", filename="best")
    trainer = pl.Trainer(
        max_epochs=max_epochs, min_epochs=min_epochs, accelerator="cpu", logger=False, default_root_dir=root,
        callbacks=[EarlyStopping(monitor="val/loss", mode="min", patience=8), best],
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"model_ready_cpu": usage.ru_utime + usage.ru_stime}), flush=True)  # timed on arrival
    result = {
        "embed_s": embed_s,
        "epochs": trainer.current_epoch,
        "fit_s": time.perf_counter() - tic - embed_s,
    }
    model.load_state_dict(torch.load(best.best_model_path, weights_only=False)["state_dict"])
    model.eval()
    tic = time.perf_counter()
    for split in ("test", "test_piper"):
        if (data / split).is_dir():
            paths, y = labelled(data / split)
            with torch.no_grad():
                prob = model.predict_proba(torch.from_numpy(embed(paths))).numpy()
            result[split] = quality(y, prob)
    result["score_s"] = time.perf_counter() - tic
    return result


def run_hand(data: Path, work: Path, epochs: int, min_epochs: int, score_in_time: bool) -> dict:
    """(a) in a fresh process; timed to its exit, or (``score_in_time`` False) to its model being ready."""
    root = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, __file__, "--hand", str(data), "--hand-root", str(root),
           "--hand-epochs", str(epochs), "--hand-min-epochs", str(min_epochs)]  # fmt: skip
    run = timed(cmd)
    if run["rc"]:
        raise RuntimeError(f"the hand pipeline failed:\n{run['stderr'][-3000:]}")
    result = {**json.loads(run["lines"][-1][1]), "wall": run["wall"], "cpu": run["cpu"]}
    if not score_in_time:
        ready_at, line = next(
            (t, json.loads(x)) for t, x in run["lines"] if x.startswith('{"model_ready_cpu"')
        )
        result.update(wall=ready_at, cpu=line["model_ready_cpu"])
    return {**result, "backbone_s": result["embed_s"] + (result["score_s"] if score_in_time else 0.0)}


# ------------------------------------------------------------------------------------------------------
# (b)-(d) focalmix fit and predict, as a user runs them


def run_fit(
    data: Path, work: Path, cache: Path, extra: list[str], test_source: bool, score: bool = True
) -> dict:
    root = Path(tempfile.mkdtemp(dir=work))
    test = ["--data.test_source", str(data / "test")] if test_source else []
    args = ["--data.source", str(data / "train"), *test, "--model.backbone", BACKBONE, "--report", "false"]
    cmd = [sys.executable, "-m", "focalmix", "fit", *args, "--trainer.default_root_dir", str(root), *extra]
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    run = timed(cmd, env)
    if run["rc"]:
        text = "\n".join(line for _, line in run["lines"][-20:])
        raise RuntimeError(
            f"focalmix fit failed ({run['rc']}): {shlex.join(cmd)}\n{text}\n{run['stderr'][-3000:]}"
        )
    features = [m.groups() for _, line in run["lines"] if (m := FEATURES.search(line))]
    backbone_s = sum(int(c.replace(",", "")) / float(r.replace(",", "")) for *_, c, r in features if c != "0")
    first_epoch = next((t for t, line in run["lines"] if re.match(r"\s*epoch 1/", line)), float("nan"))
    epochs = max(
        (int(m.group(1)) for _, line in run["lines"] if (m := re.match(r"\s*epoch (\d+)/", line))), default=0
    )
    best = next(root.rglob("best.ckpt"))
    shown = ["focalmix", "fit", *(a.replace(str(data), "DIR") for a in [*args, *extra])]
    computed = sum(int(f[3].replace(",", "")) for f in features)
    result = {"wall": run["wall"], "cpu": run["cpu"], "backbone_s": backbone_s, "before_epoch_1": first_epoch,
              "epochs": epochs, "computed": computed, "command": shown}  # fmt: skip
    for split in ("test", "test_piper") if score else ():
        if (data / split).is_dir():
            result[split] = predict_quality(best, data / split, work, env)
    return result


def predict_quality(checkpoint: Path, folder: Path, work: Path, env: dict[str, str]) -> dict[str, float]:
    """``focalmix predict`` on a labelled folder; AUROC and recall from its CSV and the folder names."""
    import pandas as pd

    out = Path(tempfile.mkdtemp(dir=work)) / "predictions.csv"
    cmd = [sys.executable, "-m", "focalmix", "predict", "--ckpt_path", str(checkpoint),
           "--data.predict_source", str(folder), "--prediction_writer.path", str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"focalmix predict failed: {shlex.join(cmd)}\n{done.stderr[-3000:]}")
    frame = pd.read_csv(out)
    frame = frame.groupby(frame["path"].map(lambda p: str(Path(p).resolve())))["prob_wake"].max()
    paths, y = labelled(folder)
    return quality(y, frame.loc[[str(p.resolve()) for p in paths]].to_numpy())  # max over a clip's windows


# ------------------------------------------------------------------------------------------------------
# the table


def merged(runs: list[dict]) -> dict:
    """Repeats of one run: the median of each time, the wall clock's spread, the rest from the first."""
    out = dict(runs[0])
    for key in ("wall", "cpu", "backbone_s", "before_epoch_1"):
        if key in out:
            out[key] = statistics.median(r[key] for r in runs)
    walls = [r["wall"] for r in runs]
    out["spread"] = (max(walls) - min(walls)) / 2 / statistics.median(walls)
    out["repeats"] = len(runs)
    return out


def row(name: str, runs: list[dict], base: list[dict] | None) -> str:
    if "failed" in runs[0]:
        return f"| {name} | failed: {runs[0]['failed']} |"
    r, b = merged(runs), merged(base) if base else None
    share = f"{r['backbone_s']:.1f} ({r['backbone_s'] / r['wall']:.0%})"
    vs = f"{r['wall'] / b['wall']:.2f} / {r['cpu'] / b['cpu']:.2f}" if b else "-"
    before = f"{r['before_epoch_1']:.1f}" if "before_epoch_1" in r else "-"
    wall = f"{r['wall']:.1f}" + (f" ±{r['spread']:.0%}" if r["repeats"] > 1 else "")
    cells = [name, str(r["epochs"]), wall, f"{r['cpu']:.1f}", vs, share, before]
    for split in ("test", "test_piper"):
        q = r.get(split)
        cells += [f"{q['auroc']:.4f}", f"{q['recall']:.3f}"] if q else ["-", "-"]
    return "| " + " | ".join(cells) + " |"


HEAD = ("| run | epochs | wall s | CPU s | vs hand (wall / CPU) | backbone s (share of wall) |"
        " before epoch 1 s | test AUROC | test recall @FPR<=0.05 | piper AUROC | piper recall @FPR<=0.05 |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")  # fmt: skip


def build_set(data: Path, quick: bool) -> dict:
    args = ["--clips-per-voice", "3", "--train-voices", "20", "--test-voices", "8", "--piper-clips", "12",
            "--background-seconds", "0"] if quick else []  # fmt: skip
    run = timed([sys.executable, str(MAKE_DATASET), str(data), *args])
    if run["rc"]:
        raise RuntimeError(f"make_dataset.py failed:\n{run['stderr'][-3000:]}")
    print("\n".join(line for _, line in run["lines"]))
    return run


def bars(results: dict[str, list[dict]], fixed: int) -> list[str]:
    """The issue's done-when, each with the value measured (medians of the repeats)."""

    def get(name: str) -> dict | None:
        return merged(results[name]) if name in results else None

    a, b, c = (
        get("(a) hand pipeline"),
        get("(b) focalmix fit, empty cache"),
        get("(c) focalmix fit again, warm cache"),
    )
    hand, fit = (
        get(f"(d) hand pipeline, {fixed} epochs"),
        get(f"(d) focalmix fit, {fixed} epochs, empty cache"),
    )
    checks = []
    if b and b.get("test"):
        q = b["test"]
        checks.append(
            f"(b) test AUROC >= 0.985: {q['auroc']:.4f}; recall >= 0.93 at FPR <= 0.05: {q['recall']:.3f}"
        )
    if a and b:
        checks.append(f"(b) wall <= 1.5x (a): {b['wall'] / a['wall']:.2f}x (CPU {b['cpu'] / a['cpu']:.2f}x)")
    if c:
        share = c["backbone_s"] / c["wall"]
        checks.append(f"(c) < 5% of the wall in the backbone: {share:.1%} ({c['computed']} items computed)")
    if hand and fit:
        ratio = f"{fit['wall'] / hand['wall']:.2f}x (CPU {fit['cpu'] / hand['cpu']:.2f}x)"
        checks.append(f"(d) the {fixed}-epoch fit <= 1.2x the hand pipeline: {ratio}")
    return ["bars:", *("* " + line for line in checks)]


def main() -> None:
    args = parse_args()
    if args.hand:
        print(json.dumps(hand_pipeline(args.hand, args.hand_epochs, args.hand_min_epochs, args.hand_root)))
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import header

    out = [header("focalmix media: focalmix fit on raw WAVs vs a hand pipeline, and the feature cache")]
    out.append(f"load average at start (1, 5, 15 min): {os.getloadavg()}\n")
    print("\n".join(out), flush=True)
    results: dict[str, list[dict]] = {}
    fixed = 2 if args.quick else args.epochs
    footer: list[str] = []

    def write() -> None:  # after every run: a long run leaves its table so far
        table = [row(k, v, results.get(_base(k, fixed))) for k, v in results.items()]
        args.out.write_text("\n".join([*out, HEAD, *table, "", *bars(results, fixed), "", *footer]) + "\n")

    def note(name: str, r: dict, base: str | None) -> None:
        results.setdefault(name, []).append(r)
        print(row(name, [r], results.get(base)), flush=True)
        write()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data = args.data or work / "wakeword"
        if not (data / "train").is_dir():
            made = build_set(data, args.quick)
            took = f"{made['wall']:.0f} s wall, {made['cpu']:.0f} s CPU"
            out.append(f"data: built by `python examples/wakeword/make_dataset.py DIR` in {took}:")
            out += ["    " + line for _, line in made["lines"]] + [""]
        fit_args, short = shlex.split(args.fit_args), ["--trainer.max_epochs", "2"] if args.quick else []
        quick = [*fit_args, *short]  # a --preset (a --config) first: the flags after it override it
        scored, hand = not args.no_test_source, (2, 2) if args.quick else (100, 10)
        exact = ["--trainer.min_epochs", str(fixed), "--trainer.max_epochs", str(fixed)]
        a, d = "(a) hand pipeline", f"(d) hand pipeline, {fixed} epochs"

        def fit(cache: str, extra: list[str]):  # a fit on its own cache per repeat; scored on the first
            return lambda k: run_fit(data, work, work / f"{cache}{k}", extra, scored, score=k == 0)

        plan = [  # (name, run(repeat), the run it is compared with); the repeats interleaved
            (a, lambda k: run_hand(data, work, *hand, scored), None),
            ("(b) focalmix fit, empty cache", fit("c", quick), a),
            ("(c) focalmix fit again, warm cache", fit("c", quick), a),
            (d, lambda k: run_hand(data, work, fixed, fixed, scored), None),
            (f"(d) focalmix fit, {fixed} epochs, empty cache", fit("d", [*quick, *exact]), d),
        ]
        print(HEAD)
        for k in range(args.repeats):
            for name, run, base in plan:
                note(name, run(k), base)
        for name in list(TRIES) if args.tries == [] else (args.tries or []):
            try:
                tried = run_fit(data, work, work / "c0", [*fit_args, *TRIES[name], *short], scored)
            except RuntimeError as exc:  # a setting the command rejects or fails on: said in the table
                tried = {"failed": str(exc).strip().splitlines()[-1][:200]}
            note(f"(e) fit, warm cache: {name}", tried, a)
    if "(b) focalmix fit, empty cache" in results:
        shown = shlex.join(results["(b) focalmix fit, empty cache"][0]["command"])
        footer.append(f"fit (b): `XDG_CACHE_HOME=EMPTY {shown}` (+ `--trainer.default_root_dir`)")
    footer.append(f"load average at the end: {os.getloadavg()}")
    write()
    print("\n".join(["", *bars(results, fixed), *footer, f"wrote {args.out}"]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a wake-word set (built there when it has no train/)")
    parser.add_argument(
        "--out", type=Path, default=Path("/tmp/media_benchmark.md"), help="the table (markdown)"
    )
    parser.add_argument("--epochs", type=int, default=30, help="the fixed-epoch comparison (d); 30")
    parser.add_argument(
        "--tries",
        nargs="*",
        default=None,
        choices=list(TRIES),
        help="settings to try on the warm cache (all when none is named)",
    )
    parser.add_argument(
        "--no-test-source",
        action="store_true",
        help="fit without --data.test_source: held-out clips scored by predict, untimed",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of (a)-(d), interleaved (0: none); medians"
    )
    parser.add_argument("--quick", action="store_true", help="a tiny set and 2 epochs: a smoke run")
    parser.add_argument(
        "--fit-args",
        default="",
        help='flags added to the fits (b)-(e), e.g. "--preset wakeword"; the hand'
        " pipeline keeps the recipe's defaults",
    )
    for name, kind, default in (
        ("hand", Path, None),
        ("hand-root", Path, None),
        ("hand-epochs", int, 100),
        ("hand-min-epochs", int, 10),
    ):
        parser.add_argument(f"--{name}", type=kind, default=default, help=argparse.SUPPRESS)  # (a)'s process
    return parser.parse_args()  # fmt: skip


def _base(name: str, fixed: int) -> str | None:
    if name.startswith("(a)") or name == f"(d) hand pipeline, {fixed} epochs":
        return None
    return f"(d) hand pipeline, {fixed} epochs" if name.startswith("(d)") else "(a) hand pipeline"


if __name__ == "__main__":
    main()
