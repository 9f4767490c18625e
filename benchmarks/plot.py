"""Plot training throughput against batch size for (a), (b), (c) of ``overhead.py`` -> docs/throughput.png.

Run: ``python benchmarks/plot.py`` (about 5 minutes on 2 CPU cores; ``--quick``: a smoke run that
writes to a temporary file unless ``--out`` is given).

The MLP 64 -> 256 -> 256 -> 1 on CPU, measured as in ``overhead.py`` (steps after a warm-up epoch,
stamped in ``on_train_batch_end``, median of the repeats, variants interleaved): (a) the hand-written
loop of the recipe, (b) ``Trainer.fit`` with the CLI's callbacks and progress bar, (c) (b) with the
recipe off. Left: samples per second (CPU clock, one torch thread); right: the ratios (b)/(a) and
(b)/(c) with their goals.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _common import header, quiet_lightning  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullLocator  # noqa: E402
from overhead import VARIANTS, Setup, measure  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
STYLE = {"a": ("tab:green", "o"), "b": ("tab:blue", "s"), "c": ("tab:orange", "^")}


def plot(batch_sizes: list[int], results: dict, names: dict[int, str], out: Path, subtitle: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for key, (color, marker) in STYLE.items():
        rates = [results[(names[b], key)]["rate"] * b for b in batch_sizes]
        left.plot(batch_sizes, rates, color=color, marker=marker, label=VARIANTS[key][0].replace("  ", " "))
    left.set(xscale="log", yscale="log", xlabel="batch size", ylabel="training samples / CPU second")
    left.set_title("Throughput, MLP 64-256-256-1 on CPU")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    for num, den, color, goal in (("b", "a", "tab:blue", 0.85), ("b", "c", "tab:purple", 0.95)):
        ratio = [results[(names[b], num)]["rate"] / results[(names[b], den)]["rate"] for b in batch_sizes]
        right.plot(batch_sizes, ratio, color=color, marker="o", label=f"({num})/({den})")
        right.axhline(goal, color=color, linestyle="--", linewidth=1, label=f"goal ({num})/({den}) >= {goal}")
    right.set(xscale="log", xlabel="batch size", ylabel="throughput ratio", ylim=(0, 1.1))
    right.set_title("Lightning + CLI callbacks vs hand loop, recipe on vs off")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    for ax in (left, right):
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    left.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if str(v)[0] in "25" else ""))
    fig.suptitle(subtitle, fontsize=8)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 batch sizes, 1 repeat")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is warm-up")
    parser.add_argument("--out", type=Path, default=None, help="default: docs/throughput.png")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see overhead.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_lightning()
    head = header("focalmix throughput vs batch size (CPU) -> PNG")
    print(head)
    if args.quick:
        args.batch_sizes, args.repeats, args.steps, args.epochs = [32, 256], 1, 10, 2
        args.out = args.out or Path(tempfile.mkdtemp()) / "throughput.png"
    out = args.out or DOCS / "throughput.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    names = {b: f"MLP, batch {b}" for b in args.batch_sizes}
    setups = [Setup(names[b], b, args.steps) for b in args.batch_sizes]
    variants = {k: VARIANTS[k] for k in STYLE}
    results = measure(setups, variants, args.epochs, args.repeats)
    print(f"| {'batch':>5} | " + " | ".join(f"{variants[k][0]:<36}" for k in variants) + " |")
    print(f"|{'-' * 6}:|" + "|".join(f"{'-' * 37}:" for _ in variants) + "|")
    for b in args.batch_sizes:
        cells = [f"{results[(names[b], k)]['rate'] * b:>26,.0f} samples/s" for k in variants]
        print(f"| {b:>5} | " + " | ".join(cells) + " |")
    lines = head.splitlines()
    date = lines[1].removeprefix("date:").strip()
    subtitle = f"{lines[3].removeprefix('machine: ')}\n{date}; CPU clock, median of {args.repeats} repeats"
    plot(args.batch_sizes, results, names, out, subtitle)


if __name__ == "__main__":
    main()
