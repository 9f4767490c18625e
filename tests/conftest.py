"""Shared test helpers: the torchvision oracle and quiet Lightning trainers."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")


def reference_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss as published (torchvision/ops/focal_loss.py, BSD-3-Clause).

    Used where torchvision cannot be installed beside torch: PyPI's torchvision fails to import beside the
    CPU build of torch ("operator torchvision::nms does not exist") and then breaks torchmetrics' import too.
    Where a matching torchvision is importable (a GPU machine), the tests use the real one instead.
    """
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def _torchvision_focal():
    try:
        from torchvision.ops import sigmoid_focal_loss
    except (ImportError, RuntimeError):
        return reference_sigmoid_focal_loss
    return sigmoid_focal_loss


@pytest.fixture(autouse=True)
def _no_inherited_seed():
    """Lightning's ``seed_everything`` leaves ``PL_GLOBAL_SEED`` in ``os.environ``, and a ``focalmix``
    subprocess started later in the same xdist worker would take that seed for its own default (0):
    every test starts and ends without it."""
    os.environ.pop("PL_GLOBAL_SEED", None)
    yield
    os.environ.pop("PL_GLOBAL_SEED", None)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests' models are tiny: intra-op threads gain nothing, and on a busy 2-core machine their
    spin-waits made small fits up to 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tv_focal():
    """torchvision's sigmoid_focal_loss: the real one when importable, else its published formula."""
    return _torchvision_focal()


def quiet_trainer(tmp_path, **kwargs):
    from lightning.pytorch import Trainer

    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    defaults.update(kwargs)
    return Trainer(**defaults)
