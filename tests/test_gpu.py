"""GPU checks, run where CUDA is available (skipped on CPU-only machines such as CI)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from focalmix import FocalMixClassifier, FocalMixDataModule, focal_loss, mixup
from tests.conftest import quiet_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("task, shape", [("binary", (64,)), ("multiclass", (64, 5))])
def test_focal_loss_on_gpu_matches_cpu_and_stays_float32_under_autocast(task, shape):
    logits = torch.randn(shape) * 5
    target = torch.randint(0, 2 if task == "binary" else 5, (64,))
    cpu = focal_loss(logits, target, task=task, label_smoothing=0.1)
    gpu = focal_loss(logits.cuda(), target.cuda(), task=task, label_smoothing=0.1)
    assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cuda", dtype=dtype):
            out = focal_loss(logits.cuda().to(dtype), target.cuda(), task=task)
        assert out.dtype == torch.float32 and torch.isfinite(out)


def test_mixup_of_a_gpu_batch_stays_on_the_gpu():
    x = torch.randn(16, 1, 8, 8, device="cuda")
    mixed, lam, perm = mixup(x, 0.5, torch.Generator().manual_seed(0))
    assert mixed.device == x.device
    assert_close(mixed, lam * x + (1 - lam) * x[perm.cuda()])


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_fit_on_gpu(tmp_path, precision):
    data = FocalMixDataModule("breast_cancer", batch_size=32)
    model = FocalMixClassifier(num_features=data.num_features, learning_rate=1e-3)
    trainer = quiet_trainer(tmp_path, accelerator="gpu", devices=1, max_epochs=3, precision=precision)
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["val/loss"]) and metrics["val/auroc"] > 0.9
