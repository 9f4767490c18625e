"""Training-loader throughput: FocalMixDataModule against a plain DataLoader(TensorDataset) baseline.

Run: ``python benchmarks/data_throughput.py`` (under a minute on 2 CPU cores).

Both loaders shuffle the same 200,000 x 64 float32 rows. The datamodule fetches a whole batch with one
fancy index (``__getitems__``); the baseline indexes row by row and collates. Reported: samples/second,
the median over a few full epochs, and the ratio to the baseline at the same batch size. The memmap
row reads the same data from an ``x.npy``/``y.npy`` directory (page cache warm after the first epoch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

try:
    from focalmix.data import FocalMixDataModule
except ImportError:  # a source checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from focalmix.data import FocalMixDataModule


def _samples_per_second(loader: DataLoader, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for batch in loader:
            x = batch["x"] if isinstance(batch, dict) else batch[0]
            n += len(x)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed per loader; the median is kept")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.features, generator=gen)
    y = torch.randint(0, 2, (args.rows,), generator=gen)
    threads = torch.get_num_threads()
    print(f"{args.rows:,} x {args.features} float32, torch {torch.__version__}, {threads} threads")
    print(f"{'batch':>5}  {'loader':<28} {'samples/s':>12}  {'vs baseline':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x.numpy())
        np.save(Path(tmp) / "y.npy", y.numpy())
        for batch_size in args.batch_sizes:
            common = dict(batch_size=batch_size, val_fraction=0.0, standardize=False)
            loaders = {
                "DataLoader(TensorDataset)": DataLoader(TensorDataset(x, y), batch_size, shuffle=True),
                "FocalMixDataModule (memory)": FocalMixDataModule.from_arrays(
                    x, y, **common
                ).train_dataloader(),
                "FocalMixDataModule (memmap)": FocalMixDataModule(tmp, **common).train_dataloader(),
            }
            base = None
            for name, loader in loaders.items():
                rate = _samples_per_second(loader, args.repeats)
                base = base or rate
                print(f"{batch_size:>5}  {name:<28} {rate:>12,.0f}  {rate / base:>10.1f}x")


if __name__ == "__main__":
    main()
