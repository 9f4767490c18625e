"""Mixup: the identities of the paper's definition, Beta sampling against scipy's Beta distribution, and
draws that stay on the device (no host reads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch.testing import assert_close

from focalmix.losses import focal_loss, focal_mixup_loss
from focalmix.mixup import mix, mixup, mixup_loss, sample_beta, sample_mixup


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0, 2.0])
def test_beta_samples_follow_scipy_beta(alpha):
    g = torch.Generator().manual_seed(1234)
    draws = torch.stack([sample_beta(alpha, g) for _ in range(3000)])
    assert draws.dtype == torch.float64 and draws.shape == (3000,)
    assert stats.kstest(draws.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 0.001


def test_alpha_zero_is_identity_and_draws_nothing():
    x = torch.randn(5, 3)
    state = torch.get_rng_state()
    mixed, lam, perm = mixup(x, 0.0)
    assert mixed is x and lam == 1.0 and perm is None
    assert torch.equal(torch.get_rng_state(), state)


def test_lam_one_gives_the_batch_back():
    x = torch.randn(6, 4)
    assert torch.equal(mix(x, 1.0, torch.randperm(6)), x)


@pytest.mark.parametrize("shape", [(7, 10), (7, 1, 16, 16), (1, 3), (1, 1, 8, 8)])
def test_mix_is_the_convex_combination_for_any_shape(shape):
    x = torch.randn(shape)
    before = x.clone()
    mixed, lam, perm = mixup(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)  # never in place
    assert sorted(perm.tolist()) == list(range(shape[0]))
    assert_close(mixed, lam * x + (1 - lam) * x[perm])


def test_same_seed_same_draws_and_different_seeds_differ():
    x = torch.randn(32, 4)
    a = mixup(x, 0.5, torch.Generator().manual_seed(7))
    b = mixup(x, 0.5, torch.Generator().manual_seed(7))
    c = mixup(x, 0.5, torch.Generator().manual_seed(8))
    assert a[1] == b[1] and torch.equal(a[2], b[2]) and torch.equal(a[0], b[0])
    assert a[1] != c[1] or not torch.equal(a[2], c[2])


def test_global_rng_is_used_without_generator():
    torch.manual_seed(3)
    first = sample_mixup(16, 0.5)
    torch.manual_seed(3)
    assert sample_mixup(16, 0.5)[0] == first[0]


def test_mixing_losses_equals_cross_entropy_on_mixed_targets():
    # For cross-entropy, lam * CE(y) + (1 - lam) * CE(y[perm]) == CE with mixed one-hot targets.
    logits, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 4, (10,))
    lam, perm = 0.3, torch.randperm(10)
    mixed_targets = lam * F.one_hot(y, 4).double() + (1 - lam) * F.one_hot(y[perm], 4).double()
    assert_close(mixup_loss(F.cross_entropy, logits, y, lam, perm), F.cross_entropy(logits, mixed_targets))


def test_mixed_focal_loss_is_the_lam_weighted_losses():
    logits, y = torch.randn(10), torch.randint(0, 2, (10,))
    lam, perm = 0.8, torch.randperm(10)

    def crit(a, b):
        return focal_loss(a, b, task="binary", label_smoothing=0.1)

    assert_close(
        mixup_loss(crit, logits, y, lam, perm), lam * crit(logits, y) + (1 - lam) * crit(logits, y[perm])
    )
    assert torch.equal(mixup_loss(crit, logits, y, 1.0, perm), crit(logits, y))


def test_bad_arguments():
    with pytest.raises(ValueError, match="`alpha` must be >= 0"):
        mixup(torch.randn(3, 2), -0.1)
    with pytest.raises(ValueError, match="`alpha` must be > 0"):
        sample_beta(0.0)
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        sample_mixup(0, 0.5)
    with pytest.raises(TypeError, match="floating point inputs"):
        mixup(torch.ones(3, 2, dtype=torch.long), 0.5)


@pytest.mark.parametrize(
    "task, logits, target",
    [
        ("binary", torch.randn(12), torch.randint(0, 2, (12,))),
        ("multiclass", torch.randn(12, 4), torch.randint(0, 4, (12,))),
        ("multilabel", torch.randn(12, 3), torch.randint(0, 2, (12, 3)).float()),
    ],
)
def test_per_sample_mixup_loss_equals_two_calls(task, logits, target):
    perm, lam = torch.randperm(12), 0.37

    def crit(a, b, reduction="mean"):
        return focal_loss(a, b, task=task, label_smoothing=0.1, reduction=reduction)

    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    two = mixup_loss(crit, x1, target, lam, perm)
    one = mixup_loss(lambda a, b: crit(a, b, "none"), x2, target, lam, perm, per_sample=True)
    two.backward(), one.backward()
    assert_close(one, two)
    assert_close(x2.grad, x1.grad)


def test_draws_are_tensors_on_the_generators_device():
    lam, perm = sample_mixup(8, 0.5, torch.Generator().manual_seed(0))
    assert isinstance(lam, torch.Tensor) and lam.shape == () and lam.dtype == torch.float64
    assert lam.device == perm.device == torch.device("cpu") and perm.dtype == torch.int64
    assert 0 < float(lam) < 1


def test_tiny_alpha_draws_stay_in_the_unit_interval():
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_beta(0.01, g) for _ in range(200)])
    assert ((draws >= 0) & (draws <= 1)).all()
    assert (draws < 0.01).any() and (draws > 0.99).any()  # nearly a fair coin on {0, 1}


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_a_mixup_step_never_reads_a_tensor_on_the_host(monkeypatch, task):
    # On a GPU a host read (.item(), float(), bool(), .tolist()) waits for every queued kernel: mixup and the
    # fused loss with validate_args=False must not do one.
    x = torch.randn(16, 5)
    y = torch.randint(0, 2 if task == "binary" else 3, (16,))
    head = torch.nn.Linear(5, 1 if task == "binary" else 3)
    g = torch.Generator().manual_seed(0)

    def host_read(*args, **kwargs):
        raise AssertionError("a tensor was read on the host")

    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    mixed, lam, perm = mixup(x, 0.5, g)
    logits = head(mixed).squeeze(-1) if task == "binary" else head(mixed)
    kw = dict(task=task, alpha=0.25, gamma=2.0, label_smoothing=0.1)
    focal_mixup_loss(logits, y, lam, perm, **kw, validate_args=False).backward()
    monkeypatch.undo()
    assert head.weight.grad.isfinite().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_mix_with_a_tensor_lam_equals_the_float_lam(dtype):
    x = torch.randn(16, 8).to(dtype)
    lam, perm = sample_mixup(16, 0.5, torch.Generator().manual_seed(3))
    mixed = mix(x, lam, perm)
    assert mixed.dtype == dtype
    assert torch.equal(mixed, mix(x, float(lam), perm))  # lerp with the same weight, once rounded
    expected = float(lam) * x.double() + (1 - float(lam)) * x[perm].double()
    assert_close(mixed, expected.to(dtype))


def test_mixup_loss_with_a_tensor_lam_keeps_the_loss_dtype():
    logits, y = torch.randn(10, 3), torch.randint(0, 3, (10,))
    lam, perm = torch.tensor(0.3, dtype=torch.float64), torch.randperm(10)
    loss = mixup_loss(F.cross_entropy, logits, y, lam, perm)
    assert loss.dtype == torch.float32  # a 0-d float64 lam does not promote the 0-d losses
    assert_close(loss, mixup_loss(F.cross_entropy, logits, y, 0.3, perm))
