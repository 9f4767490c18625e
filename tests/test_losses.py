"""Focal loss against references no one here wrote: torchvision's sigmoid_focal_loss and torch's losses."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from focalmix import losses
from focalmix.losses import FocalLoss, focal_loss, focal_mixup_loss
from focalmix.mixup import mixup_loss

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


# ---- validate_args: checked once, or not at all --------------------------------------------------------


def _no_checks(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("an argument check ran with validate_args=False")

    monkeypatch.setattr(losses, "_check_call", boom)
    monkeypatch.setattr(losses, "_check_mixup", boom)
    monkeypatch.setattr(losses, "_check", boom)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_validate_args_false_checks_nothing_and_computes_the_same(monkeypatch, task):
    logits, target = _batch(task, torch.float32)
    kw = dict(task=task, alpha=0.25, gamma=2.0, label_smoothing=0.1)
    checked = focal_loss(logits, target, **kw), focal_mixup_loss(logits, target, 0.3, torch.arange(16), **kw)
    _no_checks(monkeypatch)
    unchecked = (
        focal_loss(logits, target, **kw, validate_args=False),
        focal_mixup_loss(logits, target, 0.3, torch.arange(16), **kw, validate_args=False),
    )
    assert torch.equal(checked[0], unchecked[0]) and torch.equal(checked[1], unchecked[1])
    crit = FocalLoss(task, alpha=0.25, label_smoothing=0.1, validate_args=False)  # checks its options here
    assert torch.equal(crit(logits, target), checked[0])


def test_validate_args_false_lets_bad_targets_through():
    out = focal_loss(torch.randn(4), torch.tensor([0.0, 2.0, 1.0, 0.0]), task="binary", validate_args=False)
    assert out.shape == ()  # garbage in, no ValueError: the caller checked once, up front


# ---- focal_mixup_loss against today's unfused path and torch's own losses ------------------------------


def _batch(task, dtype, n=16, c=4, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    if task == "binary":
        return (torch.randn(n, generator=g) * scale).to(dtype), torch.randint(0, 2, (n,), generator=g)
    logits = (torch.randn(n, c, generator=g) * scale).to(dtype)
    if task == "multiclass":
        return logits, torch.randint(0, c, (n,), generator=g)
    return logits, torch.randint(0, 2, (n, c), generator=g).to(dtype)


def _alpha(kind, task, c=4):
    if kind == "per-class":
        return [0.2, 0.9, 0.5, 0.7][:c] if task == "multilabel" else [0.5, 2.0, 1.0, 0.25][:c]
    return {"none": None, "scalar": 0.25}[kind]


def _unfused(logits, target, lam, perm, reduction, **kw):
    """Today's path: focal_loss per sample on the batch stacked twice (mixup_loss), or two calls."""
    if reduction == "mean":
        per_sample = functools.partial(focal_loss, **kw, reduction="none")
        return mixup_loss(per_sample, logits, target, lam, perm, per_sample=True)
    if reduction == "sum":
        return mixup_loss(functools.partial(focal_loss, **kw, reduction="sum"), logits, target, lam, perm)
    own, partner = (focal_loss(logits, t, **kw, reduction="none") for t in (target, target[perm]))
    return lam * own + (1 - lam) * partner


def _with_grad(fn, logits, grad_output_seed=1):
    x = _leaf(logits)
    out = fn(x)
    weights = torch.rand(
        out.shape, generator=torch.Generator().manual_seed(grad_output_seed), dtype=out.dtype
    )
    (out * weights).sum().backward()  # a grad_output other than ones, for reduction="none"
    return out.detach(), x.grad


# 0 and 1: one target only; 0.5; a drawn one, a 0-d float64 tensor as mixup returns it
LAMS = [0.0, 1.0, 0.5, torch.tensor(0.8137, dtype=torch.float64)]


TASK_ALPHAS = [(task, kind) for task in ("binary", "multiclass", "multilabel") for kind in ("none", "scalar")]
TASK_ALPHAS += [("multiclass", "per-class"), ("multilabel", "per-class")]  # binary alpha is one float


@pytest.mark.parametrize("task, alpha_kind", TASK_ALPHAS)
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("lam", LAMS, ids=["lam0", "lam1", "lam0.5", "lam-drawn"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_mixup_loss_equals_the_unfused_path(task, alpha_kind, gamma, eps, lam, reduction, dtype):
    logits, target = _batch(task, dtype)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(2))
    kw = dict(task=task, alpha=_alpha(alpha_kind, task), gamma=gamma, label_smoothing=eps)
    fused = _with_grad(lambda x: focal_mixup_loss(x, target, lam, perm, **kw, reduction=reduction), logits)
    unfused = _with_grad(lambda x: _unfused(x, target, lam, perm, reduction, **kw), logits)
    assert fused[0].dtype == dtype and fused[1].dtype == dtype
    assert_close(fused[0], unfused[0], **(dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else {}))
    assert_close(fused[1], unfused[1])


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_fused_soft_targets_equal_the_unfused_path(task, gamma, eps):
    logits, _ = _batch(task, torch.float64)
    g = torch.Generator().manual_seed(4)
    target = torch.rand(logits.shape, generator=g, dtype=torch.float64)
    if task == "multiclass":
        target = target.softmax(-1)  # probabilities (N, C)
    perm, lam = torch.randperm(16, generator=g), torch.tensor(0.7, dtype=torch.float64)
    kw = dict(task=task, alpha=0.25, gamma=gamma, label_smoothing=eps)
    fused = _with_grad(lambda x: focal_mixup_loss(x, target, lam, perm, **kw), logits)
    assert_close(fused, _with_grad(lambda x: _unfused(x, target, lam, perm, "mean", **kw), logits))


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fused_mixup_loss_without_perm_is_focal_loss(task, reduction):
    logits, target = _batch(task, torch.float64)
    kw = dict(task=task, alpha=0.25, gamma=2.0, label_smoothing=0.1, reduction=reduction)
    fused = _with_grad(lambda x: focal_mixup_loss(x, target, **kw), logits)
    assert_close(fused, _with_grad(lambda x: focal_loss(x, target, **kw), logits))
    # perm None ignores lam; lam 1 with a permutation is no mixing either
    assert_close(fused, _with_grad(lambda x: focal_mixup_loss(x, target, 0.3, None, **kw), logits))
    assert_close(
        fused, _with_grad(lambda x: focal_mixup_loss(x, target, 1.0, torch.randperm(16), **kw), logits)
    )


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fused_multiclass_gamma0_is_cross_entropy_on_mixed_targets(eps, soft, reduction):
    logits, target = _batch("multiclass", torch.float64)
    if soft:
        target = torch.rand(16, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64).softmax(
            -1
        )
    perm, lam = torch.randperm(16), 0.3
    onehot = target if soft else F.one_hot(target, 4).double()
    mixed = lam * onehot + (1 - lam) * onehot[perm]  # cross-entropy is linear in the target
    fused = _with_grad(
        lambda x: focal_mixup_loss(
            x,
            target,
            lam,
            perm,
            task="multiclass",
            alpha=None,
            gamma=0.0,
            label_smoothing=eps,
            reduction=reduction,
        ),
        logits,
    )
    ref = _with_grad(lambda x: F.cross_entropy(x, mixed, label_smoothing=eps, reduction=reduction), logits)
    assert_close(fused, ref)


@pytest.mark.parametrize("task", ["binary", "multilabel"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_fused_sigmoid_gamma0_is_bce_on_mixed_smoothed_targets(task, eps):
    logits, target = _batch(task, torch.float64)
    perm, lam = torch.randperm(16), 0.65
    smoothed = target.double() * (1 - eps) + eps / 2
    mixed = lam * smoothed + (1 - lam) * smoothed[perm]  # BCE is linear in the target
    fused = _with_grad(
        lambda x: focal_mixup_loss(
            x, target, lam, perm, task=task, alpha=None, gamma=0.0, label_smoothing=eps
        ),
        logits,
    )
    assert_close(fused, _with_grad(lambda x: F.binary_cross_entropy_with_logits(x, mixed), logits))


@pytest.mark.parametrize("task", ["binary", "multilabel"])
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_fused_sigmoid_is_torchvision_per_target(tv_focal, task, alpha, gamma):
    logits, target = _batch(task, torch.float64)
    perm, lam, eps = torch.randperm(16), 0.4, 0.1
    smoothed = target.double() * (1 - eps) + eps / 2
    fused = _with_grad(
        lambda x: focal_mixup_loss(
            x, target, lam, perm, task=task, alpha=alpha, gamma=gamma, label_smoothing=eps
        ),
        logits,
    )

    def ref(x):
        def tv(t):
            return tv_focal(x, t, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean")

        return lam * tv(smoothed) + (1 - lam) * tv(smoothed[perm])

    assert_close(fused, _with_grad(ref, logits))


@pytest.mark.parametrize(
    "task, alpha",
    [
        ("binary", 0.25),
        ("binary", None),
        ("multiclass", [0.5, 2.0, 1.0]),
        ("multiclass", 0.5),
        ("multilabel", [0.2, 0.8, 0.5]),
    ],
)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fused_gradcheck(task, alpha, gamma, reduction):
    logits, target = _batch(task, torch.float64, n=6, c=3, scale=2.0)
    lam, perm = torch.tensor(0.3, dtype=torch.float64), torch.tensor([2, 0, 1, 5, 3, 4])
    kw = dict(task=task, alpha=alpha, gamma=gamma, label_smoothing=0.1, reduction=reduction)
    assert torch.autograd.gradcheck(lambda x: focal_mixup_loss(x, target, lam, perm, **kw), (_leaf(logits),))


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7, 2.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("lam", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_finite_at_extreme_logits(task, gamma, eps, lam, dtype):
    if task == "binary":
        logits, target = torch.tensor([100.0, -100.0, 100.0, -100.0]), torch.tensor([1, 0, 0, 1])
    elif task == "multiclass":
        logits = torch.tensor(
            [[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0], [100.0, -100.0, -100.0], [0.0] * 3]
        )
        target = torch.tensor([0, 1, 2, 1])
    else:
        logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0], [100.0, 100.0], [-100.0, -100.0]])
        target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    logits = logits.to(dtype)
    perm, kw = torch.tensor([1, 2, 3, 0]), dict(task=task, gamma=gamma, label_smoothing=eps)
    fused = _with_grad(lambda x: focal_mixup_loss(x, target, lam, perm, **kw), logits)
    assert torch.isfinite(fused[0]).all() and torch.isfinite(fused[1]).all()
    assert_close(fused, _with_grad(lambda x: _unfused(x, target, lam, perm, "mean", **kw), logits))


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_fused_low_precision_logits_are_computed_in_float32(task, low):
    logits, target = _batch(task, torch.float32)
    rounded, perm, lam = logits.to(low), torch.randperm(16), torch.tensor(0.3, dtype=torch.float64)
    kw = dict(task=task, label_smoothing=0.1)
    x_low, x32 = _leaf(rounded), _leaf(rounded.float())
    out_low = focal_mixup_loss(x_low, target.to(low) if task == "multilabel" else target, lam, perm, **kw)
    out32 = focal_mixup_loss(x32, target, lam, perm, **kw)
    out_low.backward(), out32.backward()
    assert out_low.dtype == torch.float32 and torch.equal(out_low, out32)
    assert x_low.grad.dtype == low and torch.equal(x_low.grad, x32.grad.to(low))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the matmul-free math stays in float32 here too
        out = focal_mixup_loss(rounded, target, lam, perm, **kw)
    assert out.dtype == torch.float32 and torch.equal(out, out32.detach())


def test_fused_lam_as_float_or_tensor_and_without_grad():
    logits, target = _batch("multiclass", torch.float32)
    perm, kw = torch.randperm(16), dict(task="multiclass", label_smoothing=0.1)
    as_tensor = focal_mixup_loss(logits, target, torch.tensor(0.25, dtype=torch.float64), perm, **kw)
    assert_close(as_tensor, focal_mixup_loss(logits, target, 0.25, perm, **kw))
    with torch.inference_mode():  # validation: no gradient asked, none computed
        assert_close(focal_mixup_loss(logits, target, 0.25, perm, **kw), as_tensor)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_fused_inputs_not_modified(task):
    logits, target = _batch(task, torch.float32)
    lam, perm = torch.tensor(0.4, dtype=torch.float64), torch.randperm(16)
    before = [t.clone() for t in (logits, target, lam, perm)]
    x = _leaf(logits)
    focal_mixup_loss(
        x, target, lam, perm, task=task, gamma=0.0, alpha=None, reduction="none"
    ).sum().backward()
    for t, b in zip((x.detach(), target, lam, perm), before, strict=True):
        assert torch.equal(t, b)


def test_fused_soft_multiclass_targets_not_modified():
    logits = torch.randn(8, 3)
    target = torch.rand(8, 3).softmax(-1)
    before = target.clone()
    focal_mixup_loss(logits, target, 0.5, torch.randperm(8), task="multiclass", gamma=0.0, alpha=None)
    assert torch.equal(target, before)


@pytest.mark.parametrize("kwargs, exc, match", BAD)
def test_fused_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        focal_mixup_loss(torch.randn(4), torch.ones(4), 0.5, torch.arange(4), **kwargs)


@pytest.mark.parametrize(
    "lam, perm, exc, match",
    [
        (1.5, torch.arange(4), ValueError, r"`lam` must be in \[0, 1\], got 1.5"),
        (torch.tensor(-0.1), torch.arange(4), ValueError, r"`lam` must be in \[0, 1\]"),
        (torch.tensor([0.5]), torch.arange(4), TypeError, "`lam` must be a float or a 0-d float tensor"),
        ("0.5", torch.arange(4), TypeError, "`lam` must be a float or a 0-d float tensor"),
        (0.5, torch.arange(3), ValueError, r"`perm` must be an int tensor of shape \(4,\)"),
        (0.5, torch.tensor([0, 1, 2, 4]), ValueError, r"`perm` values must be in \[0, 4\)"),
    ],
)
def test_fused_bad_mixup_arguments(lam, perm, exc, match):
    with pytest.raises(exc, match=match):
        focal_mixup_loss(torch.randn(4), torch.ones(4), lam, perm, task="binary")


def test_fused_refuses_targets_or_lam_that_need_a_gradient():
    soft = torch.rand(4, requires_grad=True)
    with pytest.raises(ValueError, match="does not differentiate `target` or `lam`"):
        focal_mixup_loss(torch.randn(4), soft, 0.5, torch.arange(4), task="binary")
    with pytest.raises(ValueError, match="does not differentiate `target` or `lam`"):
        focal_mixup_loss(
            torch.randn(4), torch.ones(4), torch.tensor(0.5, requires_grad=True), None, task="binary"
        )
