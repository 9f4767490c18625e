"""Focal loss against references no one here wrote: torchvision's sigmoid_focal_loss and torch's losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from focalmix.losses import FocalLoss, focal_loss

ALPHAS = [None, 0.25, 0.5, 0.75]
GAMMAS = [0.0, 0.5, 1.0, 2.0, 4.0]
REDUCTIONS = ["none", "mean", "sum"]
DTYPES = [torch.float32, torch.float64]


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def _loss_and_grad(fn, logits):
    x = _leaf(logits)
    out = fn(x)
    (out.sum()).backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_matches_torchvision(tv_focal, alpha, gamma, reduction, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, generator=g) * 3).to(dtype)
    target = torch.randint(0, 2, (64,), generator=g)
    ours = _loss_and_grad(
        lambda x: focal_loss(x, target, task="binary", alpha=alpha, gamma=gamma, reduction=reduction), logits
    )
    ref = _loss_and_grad(
        lambda x: tv_focal(
            x, target.to(dtype), alpha=-1 if alpha is None else alpha, gamma=gamma, reduction=reduction
        ),
        logits,
    )
    assert ours[0].dtype == dtype
    assert_close(ours, ref)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_binary_label_smoothing_is_torchvision_on_smoothed_targets(tv_focal, alpha, gamma, eps):
    logits = torch.randn(32, dtype=torch.float64) * 2
    target = torch.randint(0, 2, (32,))
    smoothed = target.double() * (1 - eps) + eps / 2  # Keras' binary label smoothing
    ours = _loss_and_grad(
        lambda x: focal_loss(x, target, task="binary", alpha=alpha, gamma=gamma, label_smoothing=eps), logits
    )
    ref = _loss_and_grad(
        lambda x: tv_focal(x, smoothed, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean"),
        logits,
    )
    assert_close(ours, ref)


@pytest.mark.parametrize("shape", [(16,), (16, 1)])
def test_binary_gamma0_is_bce(shape):
    logits = torch.randn(shape, dtype=torch.float64)
    target = torch.rand(shape, dtype=torch.float64)  # soft targets
    ours = _loss_and_grad(lambda x: focal_loss(x, target, task="binary", alpha=None, gamma=0.0), logits)
    ref = _loss_and_grad(lambda x: F.binary_cross_entropy_with_logits(x, target), logits)
    assert_close(ours, ref)


def test_binary_accepts_n1_logits_with_n_targets(tv_focal):
    logits = torch.randn(8, 1)
    target = torch.randint(0, 2, (8,))
    out = focal_loss(logits, target, task="binary", reduction="none")
    assert out.shape == (8, 1)
    assert_close(out.squeeze(1), tv_focal(logits.squeeze(1), target.float(), alpha=0.5))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("soft", [False, True])
def test_multiclass_gamma0_is_cross_entropy(eps, reduction, dtype, soft):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(20, 5, generator=g).to(dtype)
    target = torch.randint(0, 5, (20,), generator=g)
    if soft:
        target = torch.rand(20, 5, generator=g).to(dtype).softmax(-1)
    ours = _loss_and_grad(
        lambda x: focal_loss(
            x, target, task="multiclass", alpha=None, gamma=0.0, label_smoothing=eps, reduction=reduction
        ),
        logits,
    )
    ref = _loss_and_grad(
        lambda x: F.cross_entropy(x, target, label_smoothing=eps, reduction=reduction), logits
    )
    assert_close(ours, ref)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_two_class_softmax_focal_is_sigmoid_focal(tv_focal, alpha, gamma):
    # softmax over logits (0, z) is sigmoid(z): with hard targets and per-class weights (1 - a, a) the
    # softmax focal loss must equal torchvision's sigmoid focal loss on z.
    z = torch.randn(40, dtype=torch.float64) * 3
    target = torch.randint(0, 2, (40,))
    weights = None if alpha is None else [1 - alpha, alpha]
    ours = _loss_and_grad(
        lambda x: focal_loss(
            torch.stack([torch.zeros_like(x), x], 1), target, task="multiclass", alpha=weights, gamma=gamma
        ),
        z,
    )
    ref = _loss_and_grad(
        lambda x: tv_focal(
            x, target.double(), alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean"
        ),
        z,
    )
    assert_close(ours, ref)


def test_multiclass_float_alpha_scales_the_loss():
    logits, target = torch.randn(10, 4), torch.randint(0, 4, (10,))
    full = focal_loss(logits, target, task="multiclass", alpha=None)
    assert_close(focal_loss(logits, target, task="multiclass", alpha=0.25), 0.25 * full)
    assert_close(focal_loss(logits, target, task="multiclass", alpha=[0.25] * 4), 0.25 * full)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_is_elementwise_torchvision(tv_focal, alpha, gamma, reduction):
    logits = torch.randn(12, 3, dtype=torch.float64) * 2
    target = torch.randint(0, 2, (12, 3)).double()
    ours = _loss_and_grad(
        lambda x: focal_loss(x, target, task="multilabel", alpha=alpha, gamma=gamma, reduction=reduction),
        logits,
    )
    ref = _loss_and_grad(
        lambda x: tv_focal(x, target, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction=reduction),
        logits,
    )
    assert_close(ours, ref)


def test_multilabel_per_label_alpha(tv_focal):
    logits, target = torch.randn(6, 2, dtype=torch.float64), torch.randint(0, 2, (6, 2)).double()
    out = focal_loss(logits, target, task="multilabel", alpha=[0.25, 0.75], reduction="none")
    for j, a in enumerate([0.25, 0.75]):
        assert_close(out[:, j], tv_focal(logits[:, j], target[:, j], alpha=a, gamma=2.0))


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7, 2.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_finite_at_extreme_logits(task, gamma, eps):
    if task == "binary":
        logits, target = torch.tensor([100.0, -100.0, 100.0, -100.0]), torch.tensor([1, 0, 0, 1])
    elif task == "multiclass":
        logits = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0], [100.0, -100.0, -100.0]])
        target = torch.tensor([0, 1, 2])
    else:
        logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0]])
        target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    x = _leaf(logits)
    loss = focal_loss(x, target, task=task, gamma=gamma, label_smoothing=eps)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_bf16_autocast_computes_in_float32(task):
    shape = (32,) if task == "binary" else (32, 4)
    logits = torch.randn(shape) * 4
    target = torch.randint(0, 2 if task == "binary" else 4, (32,))
    rounded = logits.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = focal_loss(rounded, target, task=task, label_smoothing=0.1)
    assert out.dtype == torch.float32
    assert_close(out, focal_loss(rounded.float(), target, task=task, label_smoothing=0.1))


def test_focal_loss_module_matches_function():
    crit = FocalLoss("binary", alpha=0.25, gamma=1.0, label_smoothing=0.1, reduction="sum")
    logits, target = torch.randn(9), torch.randint(0, 2, (9,))
    assert_close(
        crit(logits, target),
        focal_loss(
            logits, target, task="binary", alpha=0.25, gamma=1.0, label_smoothing=0.1, reduction="sum"
        ),
    )
    assert "gamma=1.0" in repr(crit)


def test_inputs_not_modified():
    logits, target = torch.randn(8, 3), torch.randint(0, 3, (8,))
    before = (logits.clone(), target.clone())
    focal_loss(logits, target, task="multiclass", label_smoothing=0.2)
    assert torch.equal(logits, before[0]) and torch.equal(target, before[1])


BAD = [
    (dict(task="ternary"), ValueError, "`task` must be one of"),
    (dict(task="binary", gamma=-1.0), ValueError, "`gamma` must be >= 0, got -1.0"),
    (dict(task="binary", gamma=float("nan")), ValueError, "`gamma` must be >= 0"),
    (dict(task="binary", label_smoothing=1.0), ValueError, r"`label_smoothing` must be in \[0, 1\), got 1.0"),
    (dict(task="binary", label_smoothing=-0.1), ValueError, "`label_smoothing` must be in"),
    (dict(task="binary", alpha=1.5), ValueError, r"`alpha` must be in \[0, 1\], got 1.5"),
    (dict(task="binary", alpha=-0.1), ValueError, r"`alpha` must be in \[0, 1\]"),
    (dict(task="binary", reduction="avg"), ValueError, "`reduction` must be one of"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        focal_loss(torch.randn(4), torch.ones(4), **kwargs)
    with pytest.raises(exc, match=match):
        FocalLoss(**kwargs)


@pytest.mark.parametrize(
    "logits, target, task, match",
    [
        (torch.randn(4, 2), torch.ones(4), "binary", r"binary `logits` must have shape \(N,\) or \(N, 1\)"),
        (torch.randn(4), torch.ones(5), "binary", "binary `target` must have the shape"),
        (torch.randn(4), torch.tensor([0.0, 1.0, 2.0, 0.0]), "binary", r"values must be in \[0, 1\]"),
        (torch.randn(4, 3), torch.tensor([0, 1, 3, 0]), "multiclass", r"in \[0, 3\), got \[3\]"),
        (torch.randn(4, 3), torch.tensor([0, -100, 1, 2]), "multiclass", r"got \[-100\]"),
        (
            torch.randn(4),
            torch.tensor([0, 1, 1, 0]),
            "multiclass",
            r"multiclass `logits` must have shape \(N, C\)",
        ),
        (torch.randn(4, 3), torch.ones(4, 2), "multiclass", "multiclass `target` must be int class indices"),
        (torch.randn(4, 3), torch.ones(4, 2), "multilabel", "multilabel `target` must have the shape"),
        (torch.randn(4, 3), torch.full((4, 3), 2.0), "multiclass", r"probabilities must be in \[0, 1\]"),
    ],
)
def test_bad_shapes_and_labels(logits, target, task, match):
    with pytest.raises(ValueError, match=match):
        focal_loss(logits, target, task=task)


def test_bad_types_and_alpha_lengths():
    with pytest.raises(TypeError, match="`logits` must be a floating point tensor"):
        focal_loss(torch.ones(4, dtype=torch.long), torch.ones(4), task="binary")
    with pytest.raises(TypeError, match="must be tensors"):
        focal_loss([0.1, 0.2], torch.ones(2), task="binary")
    with pytest.raises(ValueError, match=r"one weight per class \(3\)"):
        focal_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), task="multiclass", alpha=[1.0, 1.0])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        focal_loss(
            torch.randn(4, 3), torch.zeros(4, dtype=torch.long), task="multiclass", alpha=[1.0, -1.0, 1.0]
        )
    with pytest.raises(ValueError, match="one float per label"):
        focal_loss(torch.randn(4, 3), torch.ones(4, 3), task="multilabel", alpha=[0.5, 0.5])
    with pytest.raises(TypeError, match="`alpha` must be None, a float"):
        FocalLoss("binary", alpha="auto")
