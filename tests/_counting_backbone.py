"""A frozen audio backbone that records every call, and a callback that saves each rank's features.

For `focalmix fit` under real DDP (tests/test_media_ddp.py): :class:`CountingBackbone` appends one JSON
line per forward call to the file named by ``$FOCALMIX_TEST_CALLS`` (its rank and a hash of each row it
got), so a test can tell which inputs passed the backbone, how often and on which rank.
:class:`SaveFeatures` writes, on every rank, the features the datamodule serves for training and
validation to ``$FOCALMIX_TEST_FEATURES/rank{R}.npz``.

Run in subprocesses, these need ``FOCALMIX_TRUSTED_MODULES=tests`` (the checkpoint names the backbone)
and the repository root on the path (tests._run.focalmix_env adds it).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from focalmix.backbones._frozen import FrozenBackbone, sha256_state
from focalmix.backbones.spec import InputSpec

CALLS_ENV = "FOCALMIX_TEST_CALLS"
FEATURES_ENV = "FOCALMIX_TEST_FEATURES"
SAMPLE_RATE = 16000


def row_hash(row: np.ndarray) -> str:
    """A short hash of one input row's float32 bytes: the same clip decoded anywhere gives the same."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype=np.float32).tobytes()).hexdigest()[:20]


def rank() -> int:
    """This process's global rank: torch.distributed's when a group is up, else ``$RANK`` (0 alone)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", 0))


class CountingBackbone(FrozenBackbone):
    """A cheap frozen audio backbone: RMS of ``frames`` equal frames, through a fixed seeded projection.

    ``(B, samples) -> (B, out_features)``; each row's features depend on that row only.

    Args:
        frames: frames per clip, >= 1; default 20.
        out_features: feature width, >= 1; default 8.
        seed: seeds the projection; default 0.
    """

    def __init__(self, frames: int = 20, out_features: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.frames, self.out_features, self.seed = frames, out_features, seed
        self.input_spec = InputSpec("audio", sample_rate=SAMPLE_RATE, clip_seconds=1.0)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(frames, out_features, generator=generator))
        self._freeze()

    def config(self) -> dict[str, Any]:
        return {"frames": self.frames, "out_features": self.out_features, "seed": self.seed}

    def _digest(self) -> str:
        return sha256_state(self)

    def forward(self, waveform: Tensor) -> Tensor:
        self._record(waveform)
        x = waveform.to(torch.float64)
        usable = x.shape[1] - x.shape[1] % self.frames
        framed = x[:, :usable].reshape(len(x), self.frames, -1)  # (B, frames, samples per frame)
        rms = framed.pow(2).mean(-1).sqrt()  # (B, frames)
        return (rms @ self.projection.to(torch.float64)).to(torch.float32)  # (B, out_features)

    def _record(self, waveform: Tensor) -> None:
        path = os.environ.get(CALLS_ENV)
        if not path:
            return
        rows = [row_hash(r) for r in waveform.detach().cpu().numpy()]
        with open(path, "a") as f:  # one short append per call: ranks' lines do not interleave
            f.write(json.dumps({"rank": rank(), "rows": rows}) + "\n")


class SaveFeatures(pl.Callback):
    """At the start of fitting, each rank saves the features its datamodule serves (train and val)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = os.environ[FEATURES_ENV]
        dm = trainer.datamodule
        splits = {split: dm._dataset(split).x.numpy() for split in ("train", "val")}
        np.savez(os.path.join(folder, f"rank{trainer.global_rank}.npz"), **splits)
