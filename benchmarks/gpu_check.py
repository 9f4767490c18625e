"""One-GPU check: fit on synthetic data in fp32, bf16-mixed and fp16-mixed; steps/s and final metrics.

    python benchmarks/gpu_check.py            # about a minute on one GPU
    python benchmarks/gpu_check.py --quick    # a smoke run

Steps per second are timed inside fit, from the second epoch on (warm-up and start-up excluded).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch

from focalmix import FocalMixClassifier, FocalMixDataModule
from focalmix.backbones import SmallCNN

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


CUDA = torch.cuda.is_available()


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


class StepTimer(pl.Callback):
    """Optimizer steps per second over the epochs after the first."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync()
        self.start, self.step0 = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        _sync()
        if trainer.current_epoch > 0:
            self.rates.append((trainer.global_step - self.step0) / (time.perf_counter() - self.start))


def run(kind: str, precision: str, rows: int, epochs: int, batch: int) -> dict:
    pl.seed_everything(0, verbose=False)
    if kind == "mlp":
        data = FocalMixDataModule("synthetic", synthetic_rows=rows, synthetic_features=64, batch_size=batch)
        model = FocalMixClassifier(num_features=64, learning_rate=1e-3)
    else:
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 2, (rows // 4,), generator=g)
        x = torch.randn(rows // 4, 1, 32, 32, generator=g) + y.view(-1, 1, 1, 1) * 0.3
        data = FocalMixDataModule.from_arrays(x.numpy(), y.numpy(), batch_size=batch)
        model = FocalMixClassifier(backbone=SmallCNN(1), input_shape=(1, 32, 32), learning_rate=1e-3)
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="gpu" if CUDA else "cpu",
        devices=1,
        precision=precision,
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=data)
    m = trainer.callback_metrics
    return {
        "steps/s": statistics.median(timer.rates),
        "val/loss": float(m["val/loss"]),
        "val/auroc": float(m["val/auroc"]),
        "val/ap": float(m["val/ap"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows, epochs = (20_000, 2) if args.quick else (200_000, 4)
    device = torch.cuda.get_device_name() if CUDA else "CPU (no GPU found: fp16-mixed skipped)"
    print(f"device: {device}, torch {torch.__version__}, {rows} rows, {epochs} epochs")
    print(
        f"{'model':<6}{'batch':>6}  {'precision':<11}{'steps/s':>9}{'vs fp32':>9}{'val/loss':>10}"
        f"{'val/auroc':>11}{'val/ap':>8}"
    )
    for kind, batch in (("mlp", 256), ("cnn", 256)):
        base = None
        for precision in ("32-true", "bf16-mixed", "16-mixed")[: 3 if CUDA else 2]:
            r = run(kind, precision, rows, epochs, batch)
            base = base or r["steps/s"]
            print(
                f"{kind:<6}{batch:>6}  {precision:<11}{r['steps/s']:>9.1f}{r['steps/s'] / base:>8.2f}x"
                f"{r['val/loss']:>10.4f}{r['val/auroc']:>11.4f}{r['val/ap']:>8.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
