"""FocalMixClassifier: the schedule against torch's own OneCycleLR, fits, checkpoints and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from focalmix import FocalMixClassifier
from focalmix._checks import ArgumentTypeError, ArgumentValueError
from focalmix.losses import focal_loss
from focalmix.trust import UntrustedClassError, trusting
from tests.conftest import quiet_trainer


def _loaders(n=96, features=6, task="binary", num_classes=2, batch_size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    if task == "binary":
        y = (x[:, 0] + 0.3 * torch.randn(n, generator=g) > 0).float()
    elif task == "multiclass":
        y = torch.bucketize(x[:, 0].contiguous(), torch.linspace(-1, 1, num_classes - 1))
    else:
        y = (x[:, :num_classes] > 0).float()
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch_size, shuffle=True), DataLoader(ds, batch_size=32)


class _RecordLR(Callback):
    def __init__(self):
        self.lrs, self.betas = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.betas.append(optimizer.param_groups[0]["betas"][0])


@pytest.mark.parametrize("accumulate, limit, epochs", [(1, 1.0, 2), (2, 5, 3), (3, 0.5, 2)])
def test_lr_at_every_step_matches_torch_onecycle(tmp_path, accumulate, limit, epochs):
    train, _ = _loaders(n=160, batch_size=16)
    model = FocalMixClassifier(num_features=6, learning_rate=3e-3, warmup_pct=0.3, anneal_strategy="linear")
    rec = _RecordLR()
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=epochs,
        accumulate_grad_batches=accumulate,
        limit_train_batches=limit,
        limit_val_batches=0,
        callbacks=[rec],
    )
    trainer.fit(model, train)
    batches = 10 if limit == 1.0 else int(limit) if isinstance(limit, int) else int(10 * limit)
    total = epochs * math.ceil(batches / accumulate)
    # the oracle: torch's OneCycleLR on a throwaway optimizer with the same horizon
    ref_opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=3e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=3e-3, total_steps=total, pct_start=0.3, anneal_strategy="linear"
    )
    ref_lrs, ref_betas = [], []
    for _ in range(total):
        ref_lrs.append(ref_opt.param_groups[0]["lr"])
        ref_betas.append(ref_opt.param_groups[0]["betas"][0])
        ref_opt.step()
        ref.step()
    assert len(rec.lrs) == total  # every optimizer step, never past the schedule's end
    assert_close(rec.lrs, ref_lrs)
    assert_close(rec.betas, ref_betas)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == total


def test_fused_adamw_trains_like_torchs_reference_adamw_with_onecycle(tmp_path):
    """The fused kernel, with OneCycleLR cycling lr and beta1, against torch's default AdamW + OneCycleLR."""
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = (x[:, 0] > 0).float()
    model = FocalMixClassifier(num_features=6, learning_rate=3e-3, dropout=0.0, mixup_alpha=0.0)
    reference = FocalMixClassifier(num_features=6, learning_rate=3e-3, dropout=0.0, mixup_alpha=0.0)
    reference.load_state_dict(model.state_dict())
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    trainer = quiet_trainer(tmp_path, max_epochs=3, limit_val_batches=0)
    trainer.fit(model, loader)
    assert trainer.optimizers[0].defaults["fused"] is True  # the fast path is the one tested
    # the oracle: torch's for-loop AdamW and its OneCycleLR, stepped by hand over the same batches
    params = list(reference.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=3e-3,
        weight_decay=0.01,
        foreach=False,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=12, pct_start=0.1)
    for _ in range(3):
        for xb, yb in loader:
            opt.zero_grad()
            reference._criterion(reference(xb), yb).backward()
            opt.step()
            sched.step()
    for (name, got), expected in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=name)


def test_no_weight_decay_on_biases_and_norms(tmp_path):
    train, _ = _loaders()
    model = FocalMixClassifier(num_features=6)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, train)
    decay, no_decay = trainer.optimizers[0].param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("task, num_classes", [("binary", 2), ("multiclass", 4), ("multilabel", 3)])
def test_fit_validate_test_predict(tmp_path, task, num_classes):
    train, val = _loaders(task=task, num_classes=num_classes)
    model = FocalMixClassifier(task=task, num_classes=num_classes, num_features=6, learning_rate=1e-2)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, train, val)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "val/loss", "val/auroc", "val/ap", "val/acc", "val/f1"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    (result,) = trainer.test(model, val, verbose=False)
    assert {"test/loss", "test/auroc", "test/acc", "test/f1"} <= set(result)
    probs = torch.cat(trainer.predict(model, val))
    assert probs.shape == ((96,) if task == "binary" else (96, num_classes))
    assert ((probs >= 0) & (probs <= 1)).all()
    if task == "multiclass":
        assert_close(probs.sum(-1), torch.ones(96))


def test_fast_dev_run_with_dict_batches(tmp_path):
    x, y = torch.randn(40, 5), torch.randint(0, 2, (40,)).float()
    loader = DataLoader([{"x": x[i], "y": y[i]} for i in range(40)], batch_size=8)  # default collate: dicts
    model = FocalMixClassifier(num_features=5, learning_rate=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = quiet_trainer(tmp_path, fast_dev_run=2)
    trainer.fit(model, loader, loader)
    assert trainer.global_step == 2  # one optimizer step per dict batch
    for key in ("train/loss", "val/loss", "val/auroc"):  # the batches' "x" and "y" were read
        assert torch.isfinite(trainer.callback_metrics[key]), key
    after = model.state_dict()
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    probs = torch.cat(trainer.predict(model, DataLoader([{"x": x[i]} for i in range(40)], batch_size=8)))
    assert probs.shape == (16,) and ((probs >= 0) & (probs <= 1)).all()  # fast_dev_run: 2 batches of 8


def test_validation_loss_is_the_recipe_without_mixup(tmp_path):
    train, val = _loaders()
    model = FocalMixClassifier(num_features=6, mixup_alpha=0.5, label_smoothing=0.1)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, train, val)
    (res,) = trainer.validate(model, val, verbose=False)
    x, y = val.dataset.tensors
    model.eval()
    with torch.no_grad():
        expected = focal_loss(model(x), y, task="binary", alpha=0.5, gamma=2.0, label_smoothing=0.1)
    assert res["val/loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_checkpoint_round_trip_predicts_the_same(tmp_path):
    train, val = _loaders()
    model = FocalMixClassifier(num_features=6, learning_rate=1e-2, hidden_sizes=(32, 16))
    model.set_normalization(torch.arange(6.0), torch.full((6,), 2.0))
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, train, val)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # primitive hyperparameters only
    assert ckpt["hyper_parameters"]["hidden_sizes"] == (32, 16)
    loaded = FocalMixClassifier.load_from_checkpoint(path)
    x = val.dataset.tensors[0]
    model.eval(), loaded.eval()
    assert_close(loaded.predict_proba(x), model.predict_proba(x))
    assert_close(loaded.input_mean, torch.arange(6.0))
    assert loaded.threshold.item() == model.threshold.item()


class TinyNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(6, width), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def test_custom_backbone_round_trips(tmp_path):
    # an nn.Module object is not saved: pass it again on load
    model = FocalMixClassifier(backbone=TinyNet(), input_shape=(6,))
    path = tmp_path / "a.ckpt"
    quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(model, _loaders()[0])
    quiet_trainer(tmp_path).strategy.connect(model)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": "2.6.0",
        },
        path,
    )
    loaded = FocalMixClassifier.load_from_checkpoint(path, backbone=TinyNet())
    x = torch.randn(4, 6)
    assert_close(loaded.eval()(x), model.eval()(x))
    # a class_path dict is saved and rebuilds the backbone alone
    spec = {"class_path": "tests.test_module.TinyNet", "init_args": {"width": 4}}
    with pytest.raises(UntrustedClassError, match="tests.test_module.TinyNet"):  # not trusted yet
        FocalMixClassifier(backbone=spec, input_shape=(6,))
    with trusting(["tests.test_module"]):
        model = FocalMixClassifier(backbone=spec, input_shape=(6,))
    assert model.hparams.backbone == spec and isinstance(model.backbone, TinyNet)


def test_freeze_backbone_trains_only_the_head(tmp_path):
    model = FocalMixClassifier(num_features=6, freeze_backbone=True, learning_rate=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(model, _loaders()[0])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    assert not model.train().backbone.training


def test_bf16_mixed_on_cpu_has_no_nan(tmp_path):
    train, val = _loaders()
    trainer = quiet_trainer(tmp_path, max_epochs=2, precision="bf16-mixed")
    trainer.fit(FocalMixClassifier(num_features=6, learning_rate=1e-2), train, val)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_mixup_generator_is_seeded_per_rank_and_reproducible(tmp_path, monkeypatch):
    """One process playing each rank (the module reads its rank from ``global_rank``); the real 2-process
    check is tests/test_ddp.py::test_mixup_differs_across_ranks_and_repeats_for_a_seed."""

    def first_draw(rank: int) -> int:
        monkeypatch.setattr(FocalMixClassifier, "global_rank", property(lambda self: rank))
        torch.manual_seed(11)
        model = FocalMixClassifier(num_features=6)
        quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(
            model, _loaders()[0]
        )
        return torch.randint(0, 10**9, (1,), generator=model._mixup_generator).item()

    rank0, rank1 = first_draw(0), first_draw(1)
    assert rank0 != rank1  # ranks mix with different draws
    assert (first_draw(0), first_draw(1)) == (rank0, rank1)  # and the same ones again for the same seed


def test_unbounded_horizon_is_a_clear_error(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=-1, max_steps=-1, limit_val_batches=0)
    with pytest.raises(ValueError, match="set `max_epochs` .* or `max_steps`"):
        trainer.fit(FocalMixClassifier(num_features=6), _loaders()[0])


def test_lr_scaling_uses_the_effective_batch(tmp_path):
    rec = _RecordLR()
    model = FocalMixClassifier(
        num_features=6, learning_rate=1e-3, lr_scaling="linear", reference_batch_size=8
    )
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, limit_val_batches=0, accumulate_grad_batches=2, callbacks=[rec]
    )
    trainer.fit(model, _loaders(batch_size=16)[0])
    peak = trainer.optimizers[0].param_groups[0]["max_lr"]
    assert peak == pytest.approx(1e-3 * 16 * 2 / 8)
    assert model._effective == {"effective_batch_size": 32.0, "effective_peak_lr": pytest.approx(peak)}


BAD_ARGS = [
    (dict(task="ordinal"), ValueError, "`task` must be one of"),
    (dict(dropout=1.0), ValueError, r"`dropout` must be in \[0, 1\), got 1.0"),
    (dict(dropout=-0.1), ValueError, "`dropout` must be in"),
    (dict(learning_rate=0.0), ValueError, "`learning_rate` must be > 0, got 0.0"),
    (dict(learning_rate=-1e-4), ValueError, "`learning_rate` must be > 0"),
    (dict(weight_decay=-0.1), ValueError, "`weight_decay` must be >= 0"),
    (dict(focal_alpha=1.5), ValueError, r"`focal_alpha` must be in \[0, 1\], got 1.5"),
    (dict(focal_alpha=-0.5), ValueError, r"`focal_alpha` must be in \[0, 1\]"),
    (dict(focal_gamma=-1.0), ValueError, "`focal_gamma` must be >= 0, got -1.0"),
    (dict(label_smoothing=1.0), ValueError, r"`label_smoothing` must be in \[0, 1\)"),
    (dict(label_smoothing=-0.1), ValueError, "`label_smoothing` must be in"),
    (dict(mixup_alpha=-0.5), ValueError, "`mixup_alpha` must be >= 0, got -0.5"),
    (dict(warmup_pct=0.0), ValueError, r"`warmup_pct` must be in \(0, 1\)"),
    (dict(warmup_pct=1.0), ValueError, r"`warmup_pct` must be in \(0, 1\)"),
    (dict(div_factor=0.0), ValueError, "`div_factor` must be > 0"),
    (dict(anneal_strategy="step"), ValueError, "`anneal_strategy` must be one of"),
    (dict(base_momentum=0.96), ValueError, "`base_momentum` .* must be <= `max_momentum`"),
    (dict(lr_scaling="cubic"), ValueError, "`lr_scaling` must be one of"),
    (dict(reference_batch_size=0), ValueError, "`reference_batch_size` must be >= 1"),
    (dict(threshold_metric="auc"), ValueError, "`threshold_metric` must be one of"),
    (dict(max_fpr=0.0), ValueError, r"`max_fpr` must be in \(0, 1\)"),
    (dict(num_classes=3), ValueError, "`num_classes` must be 2 for task='binary'"),
    (dict(task="multiclass", num_classes=1), ValueError, "`num_classes` must be >= 2 for task='multiclass'"),
    (dict(num_classes=2.5), TypeError, "`num_classes` must be an int"),
    (dict(num_features=0), ValueError, "`num_features` must be >= 1"),
    (dict(class_names=["a", "b", "c"]), ValueError, "`class_names` must have 2 entries"),
    (dict(task="multiclass", num_classes=3, focal_alpha=[1.0, 2.0]), ValueError, "one per class"),
    (dict(focal_alpha="balanced"), TypeError, "`focal_alpha` must be None, a float"),
    (dict(calibration="isotonic"), ValueError, "`calibration` must be one of"),
    (dict(task="multiclass", num_classes=3, calibration="platt"), ValueError, "use 'temperature'"),
    (dict(task="multilabel", num_classes=3, calibration="temperature"), ValueError, "use 'platt'"),
    (dict(preprocessing=[1, 2]), TypeError, "`preprocessing` must be a dict"),
    (dict(backbone="resnet"), TypeError, "`backbone` must be an nn.Module"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD_ARGS)
def test_invalid_arguments_name_themselves(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        FocalMixClassifier(**{"num_features": 6, **kwargs})


@pytest.mark.parametrize(
    "kwargs, exc, argument",
    [
        (dict(dropout=1.0), ArgumentValueError, "dropout"),
        (dict(reference_batch_size=8.0), ArgumentTypeError, "reference_batch_size"),  # a non-int: TypeError
        (dict(num_features=6.0), ArgumentTypeError, "num_features"),
        (dict(num_classes=3), ArgumentValueError, "num_classes"),  # the rules across arguments too
        (dict(base_momentum=0.96), ArgumentValueError, "base_momentum"),
        (dict(focal_alpha=1.5), ArgumentValueError, "focal_alpha"),
        (dict(focal_alpha="balanced"), ArgumentTypeError, "focal_alpha"),
        (dict(task="multiclass", num_classes=3, calibration="platt"), ArgumentValueError, "calibration"),
        (dict(feature_names=["a"]), ArgumentValueError, "feature_names"),
    ],
)
def test_argument_errors_carry_the_argument_and_the_owner(kwargs, exc, argument):
    with pytest.raises(exc) as info:
        FocalMixClassifier(**{"num_features": 6, **kwargs})
    assert info.value.argument == argument and info.value.owner is FocalMixClassifier


def test_loss_targets_are_checked_on_each_epochs_first_batch_only(tmp_path, monkeypatch):
    """The loss options were checked in __init__: training steps do not check them again."""
    import focalmix.module

    calls = []
    real = focalmix.module.focal_mixup_loss

    def recording(*args, validate_args=True, **kwargs):
        calls.append((kwargs["reduction"], validate_args))
        return real(*args, validate_args=validate_args, **kwargs)

    monkeypatch.setattr(focalmix.module, "focal_mixup_loss", recording)
    quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0).fit(
        FocalMixClassifier(num_features=6), _loaders()[0]
    )
    assert calls == [("mean", True), ("mean", False), ("mean", False)] * 2


def test_default_mlp_needs_num_features():
    with pytest.raises(ValueError, match="needs `num_features`"):
        FocalMixClassifier()


def test_bad_batches_are_named():
    model = FocalMixClassifier(num_features=6)
    with pytest.raises(KeyError, match="needs keys 'x' and 'y'"):
        model.training_step({"inputs": torch.randn(2, 6)}, 0)
    with pytest.raises(TypeError, match="a batch must be a dict"):
        model.training_step(torch.randn(2, 6), 0)


@pytest.mark.parametrize("source, kwargs", [("breast_cancer", {}), ("synthetic", {"synthetic_classes": 3})])
def test_auto_alpha_is_resolved_from_the_training_split(tmp_path, source, kwargs):
    from focalmix import FocalMixDataModule

    data = FocalMixDataModule(source, **kwargs)
    model = FocalMixClassifier(
        num_features=data.num_features, task=data.task, num_classes=data.num_classes, focal_alpha="auto"
    )
    quiet_trainer(tmp_path, fast_dev_run=1).fit(model, datamodule=data)
    counts = torch.tensor(data.class_counts, dtype=torch.float32)
    if data.task == "binary":
        expected = (counts[0] / counts.sum()).clamp(0.25, 0.75)
    else:
        expected = counts.sum() / (len(counts) * counts)
    assert_close(model.alpha_weights, expected)


def test_a_warmup_of_exactly_one_step_does_not_divide_by_zero(tmp_path):
    # 0.1 x 10 steps: torch's OneCycleLR would compute 0 / 0 at the first step
    model = FocalMixClassifier(num_features=6, warmup_pct=0.1)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=5, limit_val_batches=0)
    trainer.fit(model, _loaders()[0])
    assert trainer.global_step == 10


def _overconfident_fit(tmp_path, task, num_classes, **kwargs):
    """A model fitted with a large learning rate on noisy labels: over-confident, so calibration moves."""
    train, val = _loaders(n=192, task=task, num_classes=num_classes, seed=3)
    torch.manual_seed(0)  # the weights and the shuffling: one fit, whatever ran before
    model = FocalMixClassifier(
        task=task, num_classes=num_classes, num_features=6, learning_rate=3e-2, dropout=0.0, **kwargs
    )
    trainer = quiet_trainer(tmp_path, max_epochs=4)
    trainer.fit(model, train, val)
    return model.eval(), trainer, val


@pytest.mark.parametrize("task, num_classes", [("binary", 2), ("multiclass", 4), ("multilabel", 3)])
def test_calibration_is_fitted_and_keeps_the_ranking(tmp_path, task, num_classes):
    from sklearn.metrics import roc_auc_score

    model, trainer, val = _overconfident_fit(tmp_path, task, num_classes)
    assert not torch.equal(model.calibration_scale, torch.ones_like(model.calibration_scale))
    for key in ("val/ece", "val/ece_uncalibrated", "val/brier"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    x, y = val.dataset.tensors
    with torch.no_grad():
        calibrated, raw = model.predict_proba(x), model.predict_proba(x, calibrated=False)
    assert not torch.allclose(calibrated, raw)
    if task == "multiclass":  # one temperature: the argmax never moves
        assert torch.equal(calibrated.argmax(-1), raw.argmax(-1))
    else:  # Platt with a > 0 is monotone per output: AUROC identical
        y2, c2, r2 = (t.reshape(len(x), -1).numpy() for t in (y, calibrated, raw))
        for j in range(y2.shape[1]):  # up to one pair: two float32 probabilities may round together
            pairs = float(y2[:, j].sum() * (1 - y2[:, j]).sum())
            assert roc_auc_score(y2[:, j], c2[:, j]) == pytest.approx(
                roc_auc_score(y2[:, j], r2[:, j]), abs=1 / pairs
            )


def test_calibration_and_threshold_round_trip_through_the_checkpoint(tmp_path):
    model, trainer, val = _overconfident_fit(tmp_path, "binary", 2)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = FocalMixClassifier.load_from_checkpoint(path).eval()
    assert torch.equal(loaded.calibration_scale, model.calibration_scale)
    assert torch.equal(loaded.calibration_bias, model.calibration_bias)
    x = val.dataset.tensors[0]
    with torch.no_grad():
        assert_close(loaded.predict_proba(x), model.predict_proba(x))


def test_the_threshold_is_chosen_on_calibrated_probabilities(tmp_path):
    from sklearn.metrics import f1_score

    model, trainer, val = _overconfident_fit(tmp_path, "binary", 2)
    x, y = val.dataset.tensors
    with torch.no_grad():
        probs = model.predict_proba(x)
    # the oracle: scikit-learn's F1 of the calibrated probabilities at every grid threshold
    grid = torch.linspace(0, 1, 201)
    f1 = [f1_score(y.numpy(), (probs >= t).numpy(), zero_division=0) for t in grid]
    assert f1_score(y.numpy(), (probs >= model.threshold).numpy()) == pytest.approx(max(f1))
    assert trainer.callback_metrics["val/f1"].item() == pytest.approx(max(f1), abs=1e-6)


def test_calibration_none_keeps_the_identity(tmp_path):
    model, _, _ = _overconfident_fit(tmp_path, "binary", 2, calibration="none")
    assert model.calibration_scale.item() == 1.0 and model.calibration_bias.item() == 0.0


def test_brier_score_matches_scikit_learn():
    from sklearn.metrics import brier_score_loss

    from focalmix.metrics import brier_score

    g = torch.Generator().manual_seed(0)
    p, y = torch.rand(50, generator=g), torch.randint(0, 2, (50,), generator=g)
    assert brier_score(p, y, "binary").item() == pytest.approx(brier_score_loss(y.numpy(), p.numpy()))
    pm = torch.softmax(torch.randn(50, 4, generator=g), -1)
    ym = torch.randint(0, 4, (50,), generator=g)
    onehot = torch.nn.functional.one_hot(ym, 4).numpy()
    expected = ((pm.numpy() - onehot) ** 2).sum(1).mean()  # Brier's (1950) multi-category score
    assert brier_score(pm, ym, "multiclass").item() == pytest.approx(expected, rel=1e-6)


def test_mixup_mixes_encoded_features_not_category_codes():
    import pandas as pd

    from focalmix.preprocessing import InputEncoder, encode_frame, fit_spec

    frame = pd.DataFrame({"color": ["red", "green", "blue", "red"] * 4, "size": [1.0, None, 3.0, 4.0] * 4})
    spec = fit_spec(frame, ["color", "size"])
    x = torch.from_numpy(encode_frame(frame, spec))
    model = FocalMixClassifier(num_features=2, preprocessing=spec, mixup_alpha=1.0)
    model._mixup_generator = torch.Generator().manual_seed(0)
    model.on_train_epoch_start()
    seen = []
    model._logits = lambda features: seen.append(features) or features.sum(-1)
    model.training_step({"x": x, "y": torch.zeros(16)}, 0)
    (mixed,) = seen
    encoded = InputEncoder(spec)(x)
    # the oracle: the same lambda and permutation applied to the encoded rows
    gen = torch.Generator().manual_seed(0)
    from focalmix.mixup import mixup

    expected, lam, _ = mixup(encoded, 1.0, gen)
    assert 0 < lam < 1
    assert_close(mixed, expected)


def test_head_hidden_sizes_build_an_mlp_head_and_the_default_keeps_the_linear_head():
    """``head_hidden_sizes``: Linear -> ReLU -> Dropout per width before the output layer; () is the
    recipe's Dropout -> Linear head with the state-dict keys of earlier checkpoints."""
    plain = FocalMixClassifier(num_features=6, hidden_sizes=(8,))
    assert [k for k in plain.state_dict() if k.startswith("head.")] == ["head.1.weight", "head.1.bias"]
    deep = FocalMixClassifier(num_features=6, hidden_sizes=(8,), head_hidden_sizes=[16, 4], dropout=0.0)
    linears = [m for m in deep.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 4), (4, 1)]
    x = torch.randn(5, 6)
    deep.eval()
    expected = linears[2](torch.relu(linears[1](torch.relu(linears[0](deep.backbone(x)))))).squeeze(-1)
    torch.testing.assert_close(deep(x), expected)
    for bad, kind in (([0], ValueError), ("16", TypeError), ([1.5], ValueError)):
        with pytest.raises(kind, match="head_hidden_sizes"):
            FocalMixClassifier(num_features=6, head_hidden_sizes=bad)


class _Frames(torch.nn.Module):
    """A backbone whose features are 10 frames of 4 values (frame-major), as SpeechEmbedding's are."""

    frame_size, out_features = 4, 40

    def forward(self, x):
        return x


def test_a_temporal_head_scores_a_pattern_the_same_wherever_it_sits_in_the_window():
    model = FocalMixClassifier(backbone=_Frames(), backbone_features=40, head_type="temporal", dropout=0.0)
    model.eval()
    head = model.head
    assert (head.frames, head.frame_size, head.conv.out_channels, head.conv.kernel_size) == (10, 4, 64, (3,))
    # the oracle: the same convolution written as a loop over the windows of 3 frames, then the maximum
    x = torch.randn(5, 10, 4)
    w, b = head.conv.weight, head.conv.bias  # (64, 4, 3), (64,)
    per_window = [torch.relu(torch.einsum("bkc,ock->bo", x[:, t : t + 3], w) + b) for t in range(8)]
    expected = head.out(torch.stack(per_window).amax(dim=0)).squeeze(-1)
    torch.testing.assert_close(model(x.reshape(5, 40)), expected)
    # a 3-frame pattern in silence (zero frames) scores the same wherever it sits, two frames off the edges
    pattern = torch.randn(3, 4)
    shifted = torch.zeros(4, 10, 4)
    for i, t in enumerate(range(2, 6)):
        shifted[i, t : t + 3] = pattern
    scores = model(shifted.reshape(4, 40))
    torch.testing.assert_close(scores, scores[:1].expand(4))
    with pytest.raises(ValueError, match="head_type"):  # the default MLP has no frames
        FocalMixClassifier(num_features=6, head_type="temporal")
    with pytest.raises(ValueError, match="head_type"):
        FocalMixClassifier(
            backbone=_Frames(), backbone_features=40, head_type="temporal", head_hidden_sizes=[8, 8]
        )
    with pytest.raises(ValueError, match="head_type"):
        FocalMixClassifier(num_features=6, head_type="conv")


@pytest.mark.parametrize("sanity_checking", [True, False])
def test_one_class_metric_warnings_are_dropped_only_during_the_sanity_check(sanity_checking):
    import types
    import warnings

    from torchmetrics.classification import BinaryAUROC

    from focalmix.training import quiet_sanity_check

    trainer = types.SimpleNamespace(sanity_checking=sanity_checking)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_sanity_check(trainer):  # torchmetrics itself: two batches of negatives only
            BinaryAUROC()(torch.tensor([0.2, 0.7]), torch.tensor([0, 0]))
    one_class = [w for w in caught if "No positive samples" in str(w.message)]
    assert bool(one_class) != sanity_checking, [str(w.message) for w in caught]
