"""A 2-process CPU DDP run that records what the DDP tests check; launched by tests/test_ddp.py.

Run as a script (``python tests/_ddp_run.py CASE OUT``): Lightning's DDP launcher starts rank 1 by running
this same command again, which is what users get with ``strategy="ddp"``. Each rank writes
``OUT/<CASE>-rank<R>.json``.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

from focalmix import FocalMixClassifier, FocalMixDataModule
from focalmix.callbacks import PredictionWriter

ROWS, BATCH, ACCUMULATE, EPOCHS = 233, 16, 2, 6  # 233 rows: an odd validation split (47) over 2 ranks


class Recorder(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.first_perm: list[int] = []
        self.mixup_seed = -1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.mixup_seed != -1:
            return
        gen = pl_module._mixup_generator  # made in the module's on_train_start, after the callbacks' one
        self.mixup_seed = gen.initial_seed()
        copy = torch.Generator().manual_seed(0)
        copy.set_state(gen.get_state())
        self.first_perm = torch.randperm(BATCH, generator=copy).tolist()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])


def data() -> FocalMixDataModule:
    return FocalMixDataModule(
        "synthetic", synthetic_rows=ROWS, synthetic_features=8, batch_size=BATCH, seed=3
    )


def trainer(out: Path, epochs: int, callbacks: list[Callback]) -> pl.Trainer:
    # quiet, as the suite's Lightning tests are: these runs check numbers (schedule, metrics, seeds); the
    # `focalmix fit` console, logger and report under DDP are tested in tests/test_entrypoints.py
    return pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(timeout=timedelta(seconds=180)),
        max_epochs=epochs,
        accumulate_grad_batches=ACCUMULATE,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        callbacks=callbacks,
    )


def main(case: str, out: Path) -> None:
    pl.seed_everything(7, verbose=False)
    rec = Recorder()
    ckpt = ModelCheckpoint(dirpath=out / "ckpt", monitor="val/loss", filename="best")
    last = ModelCheckpoint(dirpath=out / "ckpt", filename="last", enable_version_counter=False)  # as the CLI
    # min_delta so large that no epoch improves on the first: every rank must stop together after epoch 2
    stop = EarlyStopping(monitor="val/loss", patience=1, min_delta=1e9)
    model = FocalMixClassifier(
        num_features=8, learning_rate=3e-3, lr_scaling="linear", reference_batch_size=32
    )
    result: dict = {}
    if case == "fit":
        t = trainer(out, EPOCHS, [rec, ckpt, last, stop, PredictionWriter(out / "predictions.csv")])
        t.fit(model, datamodule=data())
        result["stopped_epoch"] = t.current_epoch
        result["total_steps"] = t.lr_scheduler_configs[0].scheduler.total_steps
        result["max_lr"] = t.optimizers[0].param_groups[0]["max_lr"]
        result["calibration"] = [model.calibration_scale.tolist(), model.calibration_bias.tolist()]
        result["threshold"] = float(model.threshold)
        result["val"] = {
            k: float(v) for k, v in t.validate(model, datamodule=data(), verbose=False)[0].items()
        }
        t.predict(model, datamodule=data(), return_predictions=False)
    elif case == "seed":  # a second fresh start: the mixup draws must repeat
        t = trainer(out, 1, [rec])
        t.fit(model, datamodule=data())
    elif case in ("resume", "resume_longer"):
        t = trainer(out, EPOCHS if case == "resume" else EPOCHS * 2, [rec, stop, last])
        t.fit(model, datamodule=data(), ckpt_path=out / "ckpt" / "last.ckpt")
        result["global_step"] = t.global_step
        result["last_epoch"] = t.lr_scheduler_configs[0].scheduler.last_epoch
    result.update(
        rank=t.global_rank,
        world_size=t.world_size,
        lrs=rec.lrs,
        mixup_seed=rec.mixup_seed,
        first_perm=rec.first_perm,
    )
    (out / f"{case}-rank{t.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
