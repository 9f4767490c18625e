"""Scaling: one training epoch on 10^4 .. 10^7 rows, time per row and peak memory of the process.

Run: ``python benchmarks/scale.py`` (about 6 minutes on 2 CPU cores; ``--quick``: a smoke run).

Each size runs in a fresh subprocess (so each peak is its own): ``FocalMixDataModule(source="synthetic")``
with ``synthetic_rows`` = 10^4, 10^5, 10^6 (generated in memory), and 10^7 rows read from a directory
holding ``x.npy``/``y.npy``, written first in chunks with ``np.lib.format.open_memmap`` (the datamodule
memory-maps ``x.npy``; the file is in the page cache after writing, so reads are warm). The default MLP
(256, 256) trains one epoch (``max_epochs=1``) at batch 256 with validation limited to a few batches.
On 2 cores a full 10^7-row epoch would take far over the budget: that size trains ``--limit-batches``
batches (``limit_train_batches``), and time per row is measured on the part trained (marked in the table).

Columns: ``setup s``: building the datamodule (reading or generating, splitting, the standardization scan);
``µs/row``: training CPU time per row in steady state (a callback stamps every step; the first 20 steps
are warm-up; the process's CPU clock, steadier than the wall clock on a shared machine; ``wall µs/row``
by the wall clock); ``peak RSS``: ``ru_maxrss``, and ``+data``: the peak minus the RSS after imports. For the
memory-mapped file, resident pages of the mapping count in RSS although the kernel may drop them at any
time; ``anon peak`` (sampled every 20 ms from /proc/self/status) is the memory the process really owns.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FEATURES = 20
BATCH = 256
WARMUP_STEPS = 20


def write_memmap(directory: Path, rows: int, features: int, chunk: int = 1_000_000) -> None:
    """Write a Gaussian two-class ``x.npy``/``y.npy`` pair in chunks, never holding it all in memory."""
    rng = np.random.default_rng(0)
    means = rng.standard_normal((2, features)).astype(np.float32)
    x = np.lib.format.open_memmap(directory / "x.npy", mode="w+", dtype=np.float32, shape=(rows, features))
    y = np.empty(rows, dtype=np.int8)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        labels = rng.random(n) < 0.5
        x[start : start + n] = rng.standard_normal((n, features), dtype=np.float32) + means[labels * 1]
        y[start : start + n] = labels
    x.flush()
    del x
    np.save(directory / "y.npy", y)


class _MemorySampler(threading.Thread):
    """Peak anonymous and file-backed RSS, sampled from /proc/self/status (Linux)."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, {"RssAnon": 0, "RssFile": 0}, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                for line in Path("/proc/self/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(value.split()[0]))
            except OSError:
                return
            time.sleep(self.interval)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return {k: v / 1024 for k, v in self.peak.items()}


def child(rows: int, source: str, limit_batches: int | None, threads: int) -> None:
    """Train one epoch on one size and print a ``RESULT {...}`` line."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import StepClock, peak_rss_mb, quiet_lightning
    from lightning.pytorch import Trainer, seed_everything

    from focalmix import FocalMixClassifier, FocalMixDataModule

    quiet_lightning()
    sampler = _MemorySampler()
    sampler.start()
    base_rss = peak_rss_mb()
    seed_everything(0, verbose=False)
    start = time.perf_counter()
    # validation: about 2,000 rows, enough to keep the epoch end cheap at every size
    val_fraction = min(0.2, 2048 / rows)
    common = dict(batch_size=BATCH, val_fraction=val_fraction, seed=0)
    if source == "synthetic":
        dm = FocalMixDataModule("synthetic", synthetic_rows=rows, synthetic_features=FEATURES, **common)
    else:
        dm = FocalMixDataModule(source, **common)
    dm.setup("fit")
    setup_s = time.perf_counter() - start
    model = FocalMixClassifier(num_features=dm.num_features, task=dm.task, num_classes=dm.num_classes)
    clock = StepClock()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=limit_batches or 1.0,
        limit_val_batches=8,
        callbacks=[clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    fit_start = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - fit_start
    stamps = clock.stamps[0]
    warmup = min(WARMUP_STEPS, len(stamps) // 4)
    cpu = (stamps[-1][1] - stamps[warmup][1]) / ((len(stamps) - 1 - warmup) * BATCH)
    wall = (stamps[-1][0] - stamps[warmup][0]) / ((len(stamps) - 1 - warmup) * BATCH)
    memory = sampler.stop()
    result = dict(
        rows=rows,
        train_rows=len(dm.split_indices["train"]),
        steps=len(stamps),
        limited=limit_batches is not None and len(stamps) < math.ceil(len(dm.split_indices["train"]) / BATCH),
        setup_s=setup_s,
        fit_s=fit_s,
        us_per_row=cpu * 1e6,
        wall_us_per_row=wall * 1e6,
        peak_rss_mb=peak_rss_mb(),
        base_rss_mb=base_rss,
        anon_peak_mb=memory["RssAnon"],
        file_peak_mb=memory["RssFile"],
        data_mb=rows * FEATURES * 4 / 2**20,
    )
    print("RESULT " + json.dumps(result), flush=True)


def run_child(rows: int, source: str, limit_batches: int | None, threads: int, timeout: float) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--rows",
        str(rows),
        "--source",
        source,
        "--threads",
        str(threads),
    ]
    if limit_batches:
        cmd += ["--limit-batches", str(limit_batches)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"size {rows} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10^4 and a 10^5-row memmap")
    parser.add_argument("--limit-batches", type=int, default=2000, help="batches trained at 10^7 rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--source", default="synthetic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(
            args.rows, args.source, args.limit_batches if args.source != "synthetic" else None, args.threads
        )
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from _common import header

    torch.set_num_threads(args.threads)  # only for the header: the runs are child processes
    print(header("focalmix scaling: one epoch from 10^4 to 10^7 rows (CPU)"))
    sizes = [10**4, 10**5, 10**6]
    memmap_rows = 10**7
    if args.quick:
        sizes, memmap_rows, args.limit_batches = [10**4], 10**5, 100
    print(
        f"{FEATURES} float32 features, batch {BATCH}, MLP (256, 256), max_epochs=1, limit_val_batches=8, "
        f"no logger/checkpoints/progress bar; each size in a fresh subprocess with {args.threads} torch "
        f"thread(s) ({os.cpu_count()} CPUs; one thread: the machine is shared, see overhead.py).\n"
    )
    results = []
    for rows in sizes:
        results.append(dict(run_child(rows, "synthetic", None, args.threads, 600), source="synthetic"))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_memmap(Path(tmp), memmap_rows, FEATURES)
        written = time.perf_counter() - start
        results.append(
            dict(run_child(memmap_rows, tmp, args.limit_batches, args.threads, 600), source="memmap .npy")
        )
    print(
        f"| {'rows':>10} | {'source':<11} | {'data MB':>7} | {'trained rows':>12} | {'setup s':>7} "
        f"| {'fit s':>6} | {'µs/row':>6} | {'wall µs/row':>11} | {'peak RSS MB':>11} | {'+data MB':>8} "
        f"| {'anon peak MB':>12} |"
    )
    print(
        f"|{'-' * 12}:|{'-' * 13}|{'-' * 8}:|{'-' * 13}:|{'-' * 8}:|{'-' * 7}:|{'-' * 7}:|{'-' * 12}:|"
        f"{'-' * 12}:|{'-' * 9}:|{'-' * 13}:|"
    )
    for r in results:
        trained = f"{r['steps'] * BATCH:,}" + ("*" if r["limited"] else "")
        print(
            f"| {r['rows']:>10,} | {r['source']:<11} | {r['data_mb']:>7.0f} | {trained:>12} "
            f"| {r['setup_s']:>7.1f} | {r['fit_s']:>6.1f} | {r['us_per_row']:>6.1f} "
            f"| {r['wall_us_per_row']:>11.1f} | {r['peak_rss_mb']:>11.0f} "
            f"| {r['peak_rss_mb'] - r['base_rss_mb']:>8.0f} | {r['anon_peak_mb']:>12.0f} |"
        )
    base = results[0]["us_per_row"]
    print(
        "\n* limit_train_batches: part of the epoch trained, µs/row measured on it.\n"
        f"µs/row relative to {results[0]['rows']:,} rows: "
        + ", ".join(f"{r['rows']:,}: {r['us_per_row'] / base:.2f}x" for r in results)
        + f"\nwriting the {memmap_rows:,}-row .npy pair took {written:.1f} s (not in the table)."
    )


if __name__ == "__main__":
    main()
