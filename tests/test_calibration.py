"""Platt and temperature scaling against scikit-learn / scipy fits and known generating scalings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from focalmix.calibration import apply_calibration, fit_platt, fit_temperature, is_identity


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _binary(n: int, a0: float, b0: float, seed: int = 0, cols: int | None = None):
    shape = (n,) if cols is None else (n, cols)
    z = 2.0 * torch.randn(shape, generator=_gen(seed), dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(a0 * z + b0), generator=_gen(seed + 1))
    return z, y


def _multiclass(n: int, c: int, t0: float, seed: int = 0):
    z = 3.0 * torch.randn(n, c, generator=_gen(seed), dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z / t0, dim=1), 1, generator=_gen(seed + 1)).squeeze(1)
    return z, y


def _sk_logreg(z: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> tuple[float, float]:
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)
    lr.fit(z.reshape(-1, 1), y, sample_weight=weight)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def _nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(z / temperature, axis=1)[np.arange(len(y)), y].mean())


# ---- recovery of a known scaling ----------------------------------------------------------------------


@pytest.mark.parametrize("a0, b0", [(0.4, 0.0), (2.5, -1.0), (1.0, 1.5)])
def test_platt_recovers_generating_scaling(a0, b0):
    z, y = _binary(20_000, a0, b0)
    scale, bias = fit_platt(z, y)
    # standard errors at N=20k are ~0.01-0.03; 0.1 is several of them and far below the effects
    assert abs(float(scale) - a0) < 0.1 * max(1.0, a0)
    assert abs(float(bias) - b0) < 0.1


def test_platt_multilabel_recovers_each_column():
    a0, b0 = torch.tensor([0.5, 2.0, 1.0]), torch.tensor([0.0, -1.0, 1.0])
    z = 2.0 * torch.randn(20_000, 3, generator=_gen(3), dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(a0 * z + b0), generator=_gen(4))
    scale, bias = fit_platt(z, y)
    assert scale.shape == bias.shape == (3,)
    torch.testing.assert_close(scale, a0.double(), atol=0.1, rtol=0.05)
    torch.testing.assert_close(bias, b0.double(), atol=0.1, rtol=0.0)


@pytest.mark.parametrize("t0", [0.5, 1.0, 3.0])
def test_temperature_recovers_generating_temperature(t0):
    z, y = _multiclass(20_000, 4, t0)
    scale, bias = fit_temperature(z, y)
    assert scale.shape == bias.shape == ()
    assert abs(1.0 / float(scale) - t0) < 0.05 * t0
    assert float(bias) == 0.0


# ---- against scikit-learn and scipy -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_platt_without_prior_correction_is_logistic_regression(seed):
    z, y = _binary(500, 1.7, -0.6, seed=seed)
    scale, bias = fit_platt(z, y, prior_correction=False)
    a_ref, b_ref = _sk_logreg(z.numpy(), y.numpy())
    assert float(scale) == pytest.approx(a_ref, rel=1e-5, abs=1e-6)
    assert float(bias) == pytest.approx(b_ref, rel=1e-5, abs=1e-6)


def test_platt_prior_correction_is_weighted_logistic_regression():
    """Platt's soft targets t' equal every row counted once as positive (weight t') and once as negative."""
    z, y = _binary(300, 1.2, 0.8, seed=5, cols=2)
    scale, bias = fit_platt(z, y)
    for c in range(2):
        zc, yc = z[:, c].numpy(), y[:, c].numpy()
        n_pos, n_neg = yc.sum(), len(yc) - yc.sum()
        soft = np.where(yc == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        a_ref, b_ref = _sk_logreg(
            np.concatenate([zc, zc]), np.r_[np.ones_like(zc), np.zeros_like(zc)], np.r_[soft, 1 - soft]
        )
        assert float(scale[c]) == pytest.approx(a_ref, rel=1e-5, abs=1e-6)
        assert float(bias[c]) == pytest.approx(b_ref, rel=1e-5, abs=1e-6)


def test_platt_stays_finite_on_separable_logits():
    """Perfectly separated classes: plain logistic regression has no finite optimum (the slope grows
    without bound), Platt's smoothed targets have one; it is the weighted logistic regression's."""
    z = torch.linspace(-3, 3, 40, dtype=torch.float64)
    y = (z > 0).double()
    scale, bias = fit_platt(z, y)
    assert torch.isfinite(scale) and torch.isfinite(bias)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    soft = np.where(y.numpy() == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    zn = z.numpy()
    a_ref, b_ref = _sk_logreg(
        np.r_[zn, zn], np.r_[np.ones_like(zn), np.zeros_like(zn)], np.r_[soft, 1 - soft]
    )
    assert float(scale) == pytest.approx(a_ref, rel=1e-5, abs=1e-6)
    assert float(bias) == pytest.approx(b_ref, rel=1e-5, abs=1e-6)
    # symmetric logits, balanced classes: the fit is symmetric too
    assert float(bias) == pytest.approx(0.0, abs=1e-6)


def test_temperature_minimises_nll_like_scipy():
    z, y = _multiclass(400, 5, 1.8, seed=7)
    zn, yn = z.numpy(), y.numpy()
    temperature = 1.0 / float(fit_temperature(z, y)[0])
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 400))
    best = _nll(zn, yn, temperature)
    assert best <= min(_nll(zn, yn, t) for t in grid) + 1e-12
    ref = minimize_scalar(
        lambda lt: _nll(zn, yn, np.exp(lt)), bounds=(-4, 4), method="bounded", options={"xatol": 1e-10}
    )
    assert temperature == pytest.approx(np.exp(ref.x), rel=1e-4)


# ---- what calibration must not change -----------------------------------------------------------------


def test_platt_leaves_auroc_unchanged():
    z, y = _binary(1000, 0.3, 0.5, seed=11)
    scale, bias = fit_platt(z, y)
    before = roc_auc_score(y.numpy(), torch.sigmoid(z).numpy())
    after = roc_auc_score(y.numpy(), torch.sigmoid(apply_calibration(z, scale, bias)).numpy())
    assert after == before


def test_temperature_leaves_argmax_unchanged():
    z, y = _multiclass(1000, 6, 0.4, seed=12)
    scale, bias = fit_temperature(z.float(), y)
    assert float(scale) != 1.0
    calibrated = apply_calibration(z.float(), scale, bias)
    assert torch.equal(calibrated.argmax(1), z.float().argmax(1))


# ---- degenerate input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "z, y",
    [
        (torch.zeros(0), torch.zeros(0)),
        (torch.randn(50), torch.ones(50)),
        (torch.randn(50), torch.zeros(50)),
        (torch.tensor([0.1, float("nan"), 2.0, -1.0]), torch.tensor([0.0, 1.0, 1.0, 0.0])),
        (torch.tensor([0.1, float("inf"), 2.0, -1.0]), torch.tensor([0.0, 1.0, 1.0, 0.0])),
    ],
)
def test_platt_degenerate_input_gives_identity(z, y):
    scale, bias = fit_platt(z, y)
    assert is_identity(scale, bias) and scale.shape == bias.shape == ()


def test_platt_multilabel_fits_the_columns_it_can():
    z, y = _binary(500, 2.0, 0.0, seed=2, cols=3)
    y[:, 1] = 1.0  # one class only in the middle label
    scale, bias = fit_platt(z, y)
    assert float(scale[1]) == 1.0 and float(bias[1]) == 0.0
    assert float(scale[0]) != 1.0 and float(scale[2]) != 1.0 and not is_identity(scale, bias)


@pytest.mark.parametrize(
    "z, y",
    [
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),
        (torch.randn(30, 3), torch.full((30,), 2)),
        (torch.randn(30, 1), torch.zeros(30, dtype=torch.long)),
        (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), torch.tensor([0, 1])),
    ],
)
def test_temperature_degenerate_input_gives_identity(z, y):
    assert is_identity(*fit_temperature(z, y))


# ---- inputs, dtypes, devices, autograd ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inputs_untouched_and_dtype_kept(dtype):
    zb, yb = _binary(200, 1.5, 0.2, seed=3)
    zm, ym = _multiclass(200, 3, 2.0, seed=3)
    zb, zm = zb.to(dtype).requires_grad_(), zm.to(dtype)
    copies = [t.detach().clone() for t in (zb, yb, zm, ym)]
    for scale, bias in (fit_platt(zb, yb), fit_temperature(zm, ym)):
        assert scale.dtype == bias.dtype == dtype
        assert not scale.requires_grad and not bias.requires_grad
    for t, c in zip((zb, yb, zm, ym), copies, strict=True):
        assert torch.equal(t.detach(), c)


def test_fits_work_inside_inference_mode():
    """Lightning computes validation epoch ends under inference mode: the fits must still run."""
    zb, yb = _binary(200, 1.5, 0.2, seed=4)
    zm, ym = _multiclass(200, 3, 2.0, seed=4)
    with torch.inference_mode():
        inside = fit_platt(zb.clone(), yb.clone()), fit_temperature(zm.clone(), ym.clone())
    outside = fit_platt(zb, yb), fit_temperature(zm, ym)
    for (s1, b1), (s2, b2) in zip(inside, outside, strict=True):
        torch.testing.assert_close((s1, b1), (s2, b2))


def test_integer_and_bool_targets_equal_float_targets():
    z, y = _binary(200, 1.0, 0.0, seed=6)
    ref = fit_platt(z, y)
    torch.testing.assert_close(fit_platt(z, y.long()), ref)
    torch.testing.assert_close(fit_platt(z, y.bool()), ref)


# ---- bad input ----------------------------------------------------------------------------------------


def test_bad_input_is_rejected():
    z = torch.randn(10)
    with pytest.raises(TypeError, match="must be tensors"):
        fit_platt(z.numpy(), torch.zeros(10))
    with pytest.raises(ValueError, match="same shape"):
        fit_platt(z, torch.zeros(9))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fit_platt(z, torch.full((10,), 2.0))
    with pytest.raises(ValueError, match="max_iter"):
        fit_platt(z, torch.zeros(10), max_iter=0)
    with pytest.raises(TypeError, match="max_iter"):
        fit_platt(z, torch.zeros(10), max_iter=2.5)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        fit_temperature(z, torch.zeros(10, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        fit_temperature(torch.randn(10, 3), torch.zeros(10))
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        fit_temperature(torch.randn(10, 3), torch.full((10,), 3))


def test_binary_temperature_minimises_the_sigmoid_nll_scipy_oracle():
    import math

    import torch.nn.functional as F

    from focalmix.calibration import fit_calibration

    g = torch.Generator().manual_seed(5)
    z = torch.randn(4000, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(4000, generator=g, dtype=torch.float64) < torch.sigmoid(z / 2.5)).double()
    scale, bias = fit_calibration(z, y, "binary", "temperature")
    assert bias.item() == 0.0

    def nll(log_t: float) -> float:
        return F.binary_cross_entropy_with_logits(z / math.exp(log_t), y).item()

    best = minimize_scalar(nll, bounds=(-3, 3), method="bounded", options={"xatol": 1e-8})
    assert 1 / scale.item() == pytest.approx(math.exp(best.x), rel=1e-4)
