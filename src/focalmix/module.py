"""FocalMixClassifier: focal loss, label smoothing and mixup, trained with AdamW and OneCycleLR."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torchmetrics
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from focalmix import calibration as fm_calibration
from focalmix import metrics as fm_metrics
from focalmix import optim
from focalmix.backbones import build_backbone, feature_size
from focalmix.faults import capture_rng_state, restore_rng_state
from focalmix.losses import TASKS, check_alpha, focal_mixup_loss
from focalmix.mixup import mixup
from focalmix.preprocessing import check_same_spec

_GRID = 201  # thresholds 0, 0.005, ..., 1 searched when calibrating the binary decision threshold
_RESIZABLE_BUFFERS = ("input_mean", "input_std", "feature_mean", "feature_std", "alpha_weights")


class FocalMixClassifier(pl.LightningModule):
    """A classifier trained with the focalmix recipe: focal loss, label smoothing, mixup, AdamW, OneCycleLR.

    The network is ``standardize -> backbone -> dropout -> linear head``. Standardization statistics are
    buffers, copied from the datamodule's ``normalization`` at the start of ``fit``, so a checkpoint alone
    predicts on raw inputs. Tables with categories and missing values go through an
    :class:`~focalmix.preprocessing.InputEncoder` built from ``preprocessing`` first.

    At every validation epoch of ``fit`` the model fits post-hoc calibration of its probabilities on the
    validation split's logits (Platt scaling per output, or one softmax temperature: Guo et al. 2017,
    arXiv 1706.04599) and, for binary tasks, chooses the decision threshold on the calibrated
    probabilities (``threshold_metric``); both are buffers, saved with the weights of that epoch.
    ``forward`` returns raw logits (what the loss trains); :meth:`predict_proba` calibrated probabilities.

    Batches are dicts ``{"x": (B, ...), "y": (B,) or (B, C)}`` (what :class:`~focalmix.FocalMixDataModule`
    yields) or ``(x, y)`` tuples/lists; ``predict`` also accepts ``x`` alone. Targets: binary 0/1 (int or
    float), multiclass int class indices, multilabel (B, C) 0/1.

    Args:
        backbone: an ``nn.Module`` mapping a batch to (B, F) features; None builds an :class:`MLP` from
            ``num_features``. From the CLI, any importable class with ``class_path``/``init_args``. A
            dict ``{"class_path": ..., "init_args": {...}}`` is accepted from Python too and is saved in
            the checkpoint; a module object is not saved (checkpoints hold only primitive hyperparameters):
            pass it again, ``FocalMixClassifier.load_from_checkpoint(path, backbone=net)``.
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``. Default: ``"binary"``.
        num_classes: classes (binary: 2; multilabel: number of labels). Default: 2.
        num_features: input features for the default MLP (the datamodule's ``num_features``).
        input_shape: the shape of one sample, used to find a custom backbone's output size.
        hidden_sizes: hidden widths of the default MLP. Default: (256, 256).
        backbone_features: output size of a custom backbone; found from its ``num_features`` or
            ``out_features`` attribute or by a dry run on ``input_shape`` if not given.
        freeze_backbone: train only the head; the backbone stays in eval mode. Default: False. A
            pretrained adapter (:mod:`focalmix.backbones`, ``frozen = True``) is frozen without it, and
            with media data its features are computed once and cached (:mod:`focalmix.data_media`).
        dropout: dropout before the head, in [0, 1). Default: 0.5.
        learning_rate: peak learning rate of OneCycleLR, > 0. Default: 1e-4.
        weight_decay: AdamW weight decay, >= 0, not applied to biases and norm weights. Default: 0.01.
        focal_alpha: class weighting (see :func:`~focalmix.losses.focal_loss`), or ``"auto"``: binary
            ``1 - positive_fraction`` of the training split clipped to [0.25, 0.75], multilabel the same per
            label, multiclass ``n / (C * n_c)`` per class. Default: 0.5.
        focal_gamma: focusing parameter, >= 0; 0 is cross-entropy. Default: 2.0.
        label_smoothing: in [0, 1). Default: 0.1.
        mixup_alpha: Beta(alpha, alpha) concentration of mixup, >= 0; 0 turns it off. Default: 0.5.
        warmup_pct: share of the steps spent raising the learning rate, in (0, 1). Default: 0.1.
        div_factor: initial lr = learning_rate / div_factor, > 0. Default: 25.
        final_div_factor: final lr = initial lr / final_div_factor, > 0. Default: 1e4.
        anneal_strategy: ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        cycle_momentum: cycle AdamW's beta1 inversely to the lr, as OneCycleLR does. Default: True.
        base_momentum: lowest beta1, in [0, max_momentum]. Default: 0.85.
        max_momentum: highest beta1, in [base_momentum, 1). Default: 0.95.
        lr_scaling: ``"none"``, ``"linear"`` or ``"sqrt"``: scale ``learning_rate`` by the effective batch
            (batch_size x world size x accumulate_grad_batches) over ``reference_batch_size``. Default: none.
        reference_batch_size: the batch size ``learning_rate`` was tuned for, >= 1. Default: 32.
        threshold_metric: how the binary threshold is chosen on validation: ``"f1"`` (highest F1),
            ``"fpr"`` (highest recall with FPR <= ``max_fpr``) or ``"none"`` (keep 0.5). Default: ``"f1"``.
        max_fpr: the target false-positive rate for ``threshold_metric="fpr"``, in (0, 1). Default: 0.05.
            ``"fa_per_hour"``: the lowest false-reject rate (on the validation positives) whose false
            accepts per hour on the datamodule's ``background_source`` stay within ``max_fa_per_hour``
            (see :mod:`focalmix.wakeword`).
        max_fa_per_hour: the target false accepts per hour of background, > 0. Default: 0.5
            (openWakeWord's target).
        calibration: ``"auto"`` (binary and multilabel: Platt, multiclass: temperature), ``"platt"``
            (binary/multilabel: ``sigmoid(a * z + b)`` per output, ``a > 0``), ``"temperature"`` (binary
            or multiclass: one ``T``, ``softmax(z / T)``) or ``"none"``. Default: ``"auto"``.
        class_names: names of the classes, used for prediction columns (the datamodule's).
        feature_names: names of the input features, checked against prediction data (the datamodule's).
        preprocessing: the datamodule's fitted table transforms (missing values, categories,
            standardization; see :mod:`focalmix.preprocessing`), applied inside the model. Default: None.

    Raises:
        ValueError: for an argument out of range, naming it, the range and the value.
        TypeError: for an argument of the wrong type.

    Example:
        >>> model = FocalMixClassifier(num_features=30)
        >>> model(torch.randn(4, 30)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        task: Literal["binary", "multiclass", "multilabel"] = "binary",
        num_classes: int = 2,
        num_features: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        hidden_sizes: tuple[int, ...] = (256, 256),
        backbone_features: int | None = None,
        freeze_backbone: bool = False,
        dropout: float = 0.5,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        focal_alpha: float | list[float] | Literal["auto"] | None = 0.5,
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.5,
        warmup_pct: float = 0.1,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        lr_scaling: Literal["none", "linear", "sqrt"] = "none",
        reference_batch_size: int = 32,
        threshold_metric: Literal["f1", "fpr", "fa_per_hour", "none"] = "f1",
        max_fpr: float = 0.05,
        max_fa_per_hour: float = 0.5,
        calibration: Literal["auto", "temperature", "platt", "none"] = "auto",
        class_names: list[str] | None = None,
        feature_names: list[str] | None = None,
        preprocessing: dict | None = None,
    ) -> None:
        super().__init__()
        if input_shape is not None:
            input_shape = tuple(int(s) for s in input_shape)
            num_features = num_features or math.prod(input_shape)
        _validate(locals())
        self.save_hyperparameters(ignore=["backbone"] if _unsaved_module(backbone) else None)
        if _unsaved_module(backbone) and callable(getattr(backbone, "config", None)):
            # a pretrained adapter rebuilds from its class path and config: checkpoints stay self-contained
            cls = type(backbone)
            self.hparams["backbone"] = {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                                        "init_args": backbone.config()}  # fmt: skip
        self.encoder = None
        if preprocessing is not None:
            from focalmix.preprocessing import InputEncoder

            self.encoder = InputEncoder(preprocessing)
            num_features, input_shape = self.encoder.out_features, (self.encoder.out_features,)
        self.backbone = build_backbone(backbone, num_features, hidden_sizes)
        dry_run_shape = input_shape or ((num_features,) if num_features else None)
        width = backbone_features or feature_size(
            self.backbone, dry_run_shape, table=self.encoder is not None
        )
        out = 1 if task == "binary" else num_classes
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, out))
        if self._backbone_frozen():
            self.backbone.requires_grad_(False)
        self.register_buffer("input_mean", torch.empty(0))
        self.register_buffer("input_std", torch.empty(0))
        # a frozen backbone's features standardized on the training split (set at fit; empty: as they are)
        self.register_buffer("feature_mean", torch.empty(0))
        self.register_buffer("feature_std", torch.empty(0))
        # per-class weights live on the model's device, so the loss copies nothing per step
        weights = focal_alpha if isinstance(focal_alpha, list | tuple) else []
        self.register_buffer("alpha_weights", torch.tensor(weights, dtype=torch.float32))
        self.register_buffer("threshold", torch.tensor(0.5))
        # calibrated logits = logits * scale + bias: identity until the first validation epoch of fit
        shape = (num_classes,) if task == "multilabel" else ()
        self.register_buffer("calibration_scale", torch.ones(shape))
        self.register_buffer("calibration_bias", torch.zeros(shape))
        # the thresholds searched on validation; built once, moved with the model, not saved
        self.register_buffer("_val_grid", torch.linspace(0, 1, _GRID), persistent=False)
        self._mixup_generator: torch.Generator | None = None
        self.wakeword_table: dict | None = None  # FRR and FA/h per threshold (background_source)
        self._resumed_rng: dict[str, Any] | None = None
        self._said: set[str] = set()
        for stage in ("val", "test"):
            self.add_module(f"{stage}_loss", torchmetrics.MeanMetric())
            # every row's logits and targets, gathered over DDP ranks at compute()
            self.add_module(f"{stage}_logits", torchmetrics.CatMetric(nan_strategy="disable"))
            self.add_module(f"{stage}_targets", torchmetrics.CatMetric(nan_strategy="disable"))

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, *args: Any, trusted_modules: list[str] | None = None, **kwargs: Any
    ) -> FocalMixClassifier:
        """Lightning's ``load_from_checkpoint``, refusing a backbone class path outside trusted modules.

        A checkpoint names its backbone's class; only ``torch.nn``, ``focalmix``, ``timm``,
        ``transformers``, the prefixes in ``$FOCALMIX_TRUSTED_MODULES`` and ``trusted_modules`` are
        imported (see :mod:`focalmix.trust`), so opening a shared checkpoint cannot run code.

        Args:
            checkpoint_path: the ``.ckpt`` file (or file-like object).
            *args: passed to Lightning's ``load_from_checkpoint``.
            trusted_modules: extra module prefixes to trust for this call, e.g. ``["mypkg.nets"]``.
            **kwargs: passed on (``map_location``, ``weights_only``, hyperparameter overrides...).

        Raises:
            focalmix.trust.UntrustedClassError: the checkpoint names a class outside the trusted modules.
        """
        from focalmix.trust import trusting

        with trusting(trusted_modules):
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # ---- network -------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Uncalibrated logits for a batch of raw inputs: (B,) for binary, (B, C) otherwise."""
        return self._logits(self._encode(x))

    def _encode(self, x: Tensor) -> Tensor:
        if self.encoder is not None:
            return self.encoder(x)  # (B, F_raw) -> (B, F): imputed, standardized, one-hot
        if self.input_mean.numel():
            return (x - self.input_mean) / self.input_std
        return x

    def _logits(self, x: Tensor) -> Tensor:
        return self._head_logits(self.backbone(x))

    def _head_logits(self, features: Tensor) -> Tensor:
        """The head on backbone features (B, F): what batches of cached ``"features"`` go through."""
        if self.feature_mean.numel():
            features = (features - self.feature_mean) / self.feature_std
        logits = self.head(features)  # (B, 1) or (B, C)
        return logits.squeeze(-1) if self.hparams.task == "binary" else logits

    def _backbone_frozen(self) -> bool:
        """``freeze_backbone``, or a pretrained adapter that never trains (``frozen = True``)."""
        return bool(self.hparams.freeze_backbone or getattr(self.backbone, "frozen", False))

    def predict_proba(self, x: Tensor, calibrated: bool = True) -> Tensor:
        """Probabilities: (B,) of the positive class for binary, (B, C) otherwise; calibrated by default."""
        logits = self(x)
        return self._to_probs(self.calibrate_logits(logits) if calibrated else logits)

    def calibrate_logits(self, logits: Tensor) -> Tensor:
        """Apply the fitted calibration: ``logits * calibration_scale + calibration_bias``."""
        return fm_calibration.apply_calibration(logits.float(), self.calibration_scale, self.calibration_bias)

    def _to_probs(self, logits: Tensor) -> Tensor:
        logits = logits.float()
        return logits.softmax(-1) if self.hparams.task == "multiclass" else logits.sigmoid()

    def train(self, mode: bool = True) -> FocalMixClassifier:
        super().train(mode)
        if self._backbone_frozen():
            self.backbone.eval()  # frozen BatchNorm statistics too
        return self

    def set_normalization(self, mean: Tensor | None, std: Tensor | None) -> None:
        """Standardize inputs as ``(x - mean) / std`` inside :meth:`forward`; None turns it off."""
        if mean is None or std is None:
            mean = std = torch.empty(0)
        self.input_mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).clone()
        self.input_std = torch.as_tensor(std, dtype=torch.float32, device=self.device).clone()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # These buffers are empty until fit sets them; take the checkpoint's shapes before loading.
        for name in ("feature_mean", "feature_std"):  # checkpoints from before they existed
            state_dict.setdefault(prefix + name, torch.empty(0))
        for name in _RESIZABLE_BUFFERS:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- the recipe ----------------------------------------------------------------------------------

    def _criterion(
        self,
        logits: Tensor,
        target: Tensor,
        reduction: str = "mean",
        lam: float | Tensor = 1.0,
        perm: Tensor | None = None,
        validate_args: bool = True,
    ) -> Tensor:
        """The recipe's loss; with mixup's ``lam`` and ``perm``, against both targets of every sample."""
        hp = self.hparams
        alpha = self.alpha_weights if self.alpha_weights.numel() else hp.focal_alpha
        if isinstance(alpha, str):
            raise RuntimeError("`focal_alpha='auto'` is resolved from the training data at the start of fit.")
        return focal_mixup_loss(
            logits,
            target,
            lam,
            perm,
            task=hp.task,
            alpha=alpha,
            gamma=hp.focal_gamma,
            label_smoothing=hp.label_smoothing,
            reduction=reduction,
            validate_args=validate_args,
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = _unpack(batch)
        # Mix encoded features: mixing category codes or NaN would invent categories and spread gaps.
        # Cached features of a frozen backbone are mixed as they are and go to the head alone.
        cached = _has_features(batch)
        x, lam, perm = mixup(
            x if cached else self._encode(x), self.hparams.mixup_alpha, self._mixup_generator
        )
        logits = self._head_logits(x) if cached else self._logits(x)
        # The options were checked in __init__; the targets are checked on each epoch's first batch.
        loss = self._criterion(logits, y, lam=lam, perm=perm, validate_args=batch_idx == 0)
        # Summed here, logged once per epoch: self.log on every step cost more than the loss itself.
        self._train_loss_sum.add_(loss.detach(), alpha=len(x))
        self._train_count += len(x)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum, self._train_count = torch.zeros((), device=self.device), 0

    def on_train_epoch_end(self) -> None:
        if self._train_count:
            self.log("train/loss", self._train_loss_sum / self._train_count, prog_bar=True, sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        if _has_features(batch):
            return self._to_probs(self.calibrate_logits(self._head_logits(batch["features"])))
        x = batch["x"] if isinstance(batch, dict) else batch[0] if isinstance(batch, list | tuple) else batch
        return self.predict_proba(x)

    def _eval_step(self, stage: str, batch: Any) -> None:
        x, y = _unpack(batch)
        logits = self._head_logits(x) if _has_features(batch) else self(x)
        getattr(self, f"{stage}_loss").update(self._criterion(logits, y, reduction="none"))
        target = y.long() if self.hparams.task != "multiclass" or y.ndim == 1 else y.argmax(-1)
        getattr(self, f"{stage}_logits").update(logits.detach().float())
        getattr(self, f"{stage}_targets").update(target.float())

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _log_epoch_metrics(self, stage: str) -> None:
        loss = getattr(self, f"{stage}_loss").compute()
        logits, target = (getattr(self, f"{stage}_{k}").compute() for k in ("logits", "targets"))
        for name in ("loss", "logits", "targets"):
            getattr(self, f"{stage}_{name}").reset()
        if logits.numel() == 0:
            return
        task, num_classes = self.hparams.task, self.hparams.num_classes
        logits = logits.reshape(-1, num_classes) if task != "binary" else logits.reshape(-1)
        target = target.reshape(logits.shape) if task == "multilabel" else target.reshape(-1)
        if stage == "val" and self._fitting():
            self._fit_calibration(logits, target)
        probs = self._to_probs(self.calibrate_logits(logits))
        names = self.hparams.get("class_names")
        names = names if names is not None and len(names) == num_classes else None
        values = fm_metrics.epoch_metrics(probs, self._to_probs(logits), target, task, num_classes, names)
        if task == "binary":
            values.update(self._threshold_metrics(stage, probs, target))
        # Computed from states synced over all ranks: identical everywhere, so no sync_dist (and none of
        # Lightning's advice to add one, 12 lines per DDP epoch).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*on epoch level in distributed setting.*")
            self.log(f"{stage}/loss", loss.float(), prog_bar=True)
            self.log_dict({f"{stage}/{k}": v.float() for k, v in values.items()})

    def _fit_calibration(self, logits: Tensor, target: Tensor) -> None:
        """Fit Platt scaling or a temperature on this epoch's validation logits (float64 L-BFGS)."""
        if self._calibration_method() == "none":
            return
        scale, bias = fm_calibration.fit_calibration(
            logits, target, self.hparams.task, self._calibration_method()
        )
        self.calibration_scale.copy_(scale.reshape(self.calibration_scale.shape))
        self.calibration_bias.copy_(bias.reshape(self.calibration_bias.shape))
        if fm_calibration.is_identity(self.calibration_scale, self.calibration_bias):
            self._say_once(
                "calibration",
                "focalmix: the validation split cannot calibrate the probabilities (one class only, or too"
                " few rows); they stay uncalibrated for this epoch.",
            )

    def _calibration_method(self) -> str:
        return fm_calibration.resolve_method(self.hparams.task, self.hparams.get("calibration", "auto"))

    def _threshold_metrics(self, stage: str, probs: Tensor, target: Tensor) -> dict[str, Tensor]:
        background = self._background_probs()
        if background is not None:
            return self._wakeword_metrics(stage, probs, target, background)
        if stage == "val" and self._fitting() and self.hparams.threshold_metric == "fa_per_hour":
            raise ValueError(
                "`threshold_metric`='fa_per_hour' needs background audio: set the datamodule's"
                " `background_source` (--data.background_source DIR) and a pretrained audio backbone."
            )
        if stage == "val" and self._fitting() and self.hparams.threshold_metric != "none":
            grid = self._val_grid
            stats = fm_metrics.threshold_counts(probs, target, grid)
            rule, max_fpr = self.hparams.threshold_metric, self.hparams.max_fpr
            idx = fm_metrics.choose_threshold(stats, grid, rule, max_fpr)
            self.threshold.fill_(grid[idx])
        stats = fm_metrics.threshold_counts(probs, target, self.threshold.view(1))
        at = {k: v.reshape(-1)[0] for k, v in fm_metrics.rates(stats).items()}
        return {**at, "threshold": self.threshold.clone()}

    def _background_probs(self) -> tuple[Tensor, dict] | None:
        """Calibrated probabilities of the datamodule's background windows (FA/h), or None."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        background = getattr(dm, "background", None)
        if background is None:
            return None
        with torch.no_grad():
            logits = self._head_logits(background["features"].to(self.device))
        return self._to_probs(self.calibrate_logits(logits)), {**background, **dm.wakeword_settings}

    def _wakeword_metrics(self, stage: str, probs: Tensor, target: Tensor, background: tuple) -> dict:
        """FRR on the positives and FA/h on the background; with ``fa_per_hour``, the threshold too."""
        from focalmix import wakeword

        bg_probs, bg = background
        grid = wakeword.threshold_grid()
        table = wakeword.fa_frr_table(
            probs[target == 1].cpu().numpy(), bg_probs.cpu().numpy(), bg["starts"], bg["hours"], grid,
            bg["hop_seconds"], bg["refractory_seconds"], bg["file_ids"],
        )  # fmt: skip
        rule = self.hparams.threshold_metric
        if stage == "val" and self._fitting() and rule != "none":
            if rule == "fa_per_hour":
                self.threshold.fill_(
                    float(grid[wakeword.choose_threshold(table, self.hparams.max_fa_per_hour)])
                )
            else:
                stats = fm_metrics.threshold_counts(probs, target, self._val_grid)
                idx = fm_metrics.choose_threshold(stats, self._val_grid, rule, self.hparams.max_fpr)
                self.threshold.fill_(self._val_grid[idx])
        if stage == "val":
            self.wakeword_table = {k: v.tolist() for k, v in table.items()} | {
                "background_hours": bg["hours"], "background_files": [str(f) for f in bg["files"]],
                **{k: bg[k] for k in ("hop_seconds", "refractory_seconds")},
            }  # fmt: skip
        stats = fm_metrics.threshold_counts(probs, target, self.threshold.view(1))
        at = {k: v.reshape(-1)[0] for k, v in fm_metrics.rates(stats).items()}
        one = wakeword.fa_frr_table(
            probs[target == 1].cpu().numpy(), bg_probs.cpu().numpy(), bg["starts"], bg["hours"],
            np.array([float(self.threshold)]), bg["hop_seconds"], bg["refractory_seconds"], bg["file_ids"],
        )  # fmt: skip
        extra = {"frr": float(one["frr"][0]), "fa_per_hour": float(one["fa_per_hour"][0])}
        return {**at, "threshold": self.threshold.clone(), **{k: torch.tensor(v) for k, v in extra.items()}}

    def _fitting(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.state.fn == "fit" and not trainer.sanity_checking

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            rank_zero_info(message)

    # ---- optimization --------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            check_same_spec(self.hparams.get("preprocessing"), getattr(datamodule, "preprocessing", None))
        if self._trainer is not None and self.trainer.world_size > 1:
            # Lightning advises sync_dist for epoch-level values under DDP; ours are computed from states
            # gathered over every rank (identical everywhere), so the advice is noise (12 lines an epoch)
            warnings.filterwarnings("ignore", r".*self\.log\('(val|test)/.*on epoch level in distributed")
        if stage == "fit" and self._backbone_frozen():
            # Lightning warns about modules left in eval mode: a frozen backbone is, on purpose.
            warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")
        if stage != "fit" or datamodule is None:
            return
        norm = getattr(datamodule, "normalization", None)
        if norm is not None:
            self.set_normalization(*norm)
        feature_norm = getattr(datamodule, "feature_normalization", None)
        if feature_norm is not None and self._backbone_frozen():
            self.feature_mean, self.feature_std = (t.to(self.device) for t in feature_norm)
        if self.hparams.focal_alpha == "auto":
            counts = torch.as_tensor(datamodule.class_counts)
            if self.hparams.task == "multilabel":  # positives per label -> (negatives, positives)
                counts = torch.stack([len(datamodule.train_dataset) - counts, counts], dim=-1)
            self.alpha_weights = auto_alpha(self.hparams.task, counts).to(self.device)

    def on_train_start(self) -> None:
        scheduler = self.lr_schedulers()
        # (the Tuner shortens runs on purpose: they are not resumes)
        if self.trainer.ckpt_path is not None and scheduler is not None:
            optim.check_resumed_schedule(scheduler, self.trainer.estimated_stepping_batches)
        for logger in self.loggers:  # the effective batch and peak lr, next to the metrics
            logger.log_metrics(getattr(self, "_effective", {}), step=self.global_step)
        self.on_train_epoch_start()  # Lightning skips that hook when a run resumes mid-epoch
        self._mixup_generator = torch.Generator()
        saved = self._resumed_rng
        if saved is not None and saved.get("world_size") == self.trainer.world_size == 1:
            # Exact resumption: the random streams continue where the checkpoint's run left them.
            # Restored here, after the sanity check, whose loader draws from torch's global stream.
            restore_rng_state(saved["global"])
            self._mixup_generator.set_state(saved["mixup"])
        else:
            seed = hash((torch.initial_seed(), self.global_rank, self.global_step)) % 2**63
            self._mixup_generator.manual_seed(seed)  # distinct per rank, reproducible
        self._resumed_rng = None
        if not self.trainer.num_val_batches or not sum(self.trainer.num_val_batches):
            if self._calibration_method() != "none":
                self._say_once(
                    "calibration", "focalmix: no validation split: probabilities are not calibrated."
                )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning's checkpoints carry no random state; a resumed run needs every stream a step draws from.
        if getattr(self, "wakeword_table", None):  # FRR/FA-h per threshold: the export's sidecar
            checkpoint["focalmix_wakeword"] = self.wakeword_table
        if self._mixup_generator is not None:
            checkpoint["focalmix_rng"] = {
                "global": capture_rng_state(),
                "mixup": self._mixup_generator.get_state(),
                "world_size": self.trainer.world_size if self._trainer is not None else 1,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_rng = checkpoint.get("focalmix_rng")
        self.wakeword_table = checkpoint.get("focalmix_wakeword")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = self.trainer.estimated_stepping_batches
        batch = self._effective_batch()
        if batch is None and hp.lr_scaling != "none":
            raise ValueError(
                "`lr_scaling` needs the training batch size; use a DataLoader with `batch_size`."
            )
        lr = optim.scaled_lr(hp.learning_rate, hp.lr_scaling, batch or 1, hp.reference_batch_size)
        optimizer = optim.adamw(self.parameters(), lr=lr, weight_decay=hp.weight_decay)
        scheduler = optim.one_cycle(
            optimizer,
            total,
            max_lr=lr,
            warmup_pct=hp.warmup_pct,
            anneal_strategy=hp.anneal_strategy,
            cycle_momentum=hp.cycle_momentum,
            base_momentum=hp.base_momentum,
            max_momentum=hp.max_momentum,
            div_factor=hp.div_factor,
            final_div_factor=hp.final_div_factor,
        )
        rank_zero_info(
            f"focalmix: effective batch size {batch or 'unknown'}, peak learning rate {lr:.3g} "
            f"(lr_scaling={hp.lr_scaling}), {int(total)} optimizer steps"
        )
        self._effective = {"effective_batch_size": float(batch or 0), "effective_peak_lr": lr}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _effective_batch(self) -> int | None:
        """Samples per optimizer step over all processes, or None when the loader has no batch size."""
        trainer = self.trainer
        batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if batch_size is None:
            batch_size = getattr(trainer.train_dataloader, "batch_size", None)
        if batch_size is None:
            return None
        return batch_size * trainer.world_size * trainer.accumulate_grad_batches


def auto_alpha(task: str, class_counts: Any) -> Tensor:
    """Resolve ``focal_alpha="auto"`` from the training split's class counts.

    Binary (counts of class 0 and class 1) and multilabel (per label: ``(negatives, positives)`` pairs,
    shape (C, 2)): ``alpha = n_neg / n``, the weight of the positives, so that both classes carry the same
    total weight, clipped to [0.25, 0.75] (the range of the spec's alpha guidelines: focal loss already
    shifts weight towards the rare class's hard examples, and an alpha near 1 would drown the negatives).
    Multiclass: ``n / (C * n_c)`` per class, scikit-learn's ``class_weight="balanced"``.

    Example:
        >>> auto_alpha("binary", [90, 10]).item()
        0.75
        >>> [round(w, 3) for w in auto_alpha("multiclass", [50, 25, 25]).tolist()]
        [0.667, 1.333, 1.333]
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float32)
    if task == "multiclass":
        return counts.sum() / (len(counts) * counts.clamp_min(1))
    return (counts[..., 0] / counts.sum(-1)).clamp(0.25, 0.75)


def _unsaved_module(backbone: Any) -> bool:
    """A backbone object the hyperparameters cannot hold, unless LightningCLI gave its class_path dict."""
    if not isinstance(backbone, nn.Module):
        return False
    try:  # LightningCLI's instantiator hands the config (with the backbone's class_path) to hparams
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - a Lightning without it: the object is not saved
        return True
    return not isinstance((_given_hyperparameters.get() or {}).get("backbone"), dict)


def _has_features(batch: Any) -> bool:
    return isinstance(batch, dict) and "features" in batch


def _unpack(batch: Any) -> tuple[Tensor, Tensor]:
    """(inputs, targets): ``"x"``, or ``"features"`` (a frozen backbone's cached output), and ``"y"``."""
    if isinstance(batch, dict):
        x = batch.get("features", batch.get("x"))
        if x is None or "y" not in batch:
            raise KeyError(
                f"a batch dict needs keys 'x' and 'y' (or 'features' and 'y'), got {sorted(batch)}."
            )
        return x, batch["y"]
    if isinstance(batch, list | tuple) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"a batch must be a dict with 'x' and 'y' or an (x, y) tuple, got {type(batch).__name__}."
    )


def _validate(args: dict[str, Any]) -> None:
    """Check every constructor argument, so a bad config fails when it is parsed."""
    a = args
    if a["task"] not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {a['task']!r}.")
    _check_int(a, "num_classes", 1)
    if a["task"] == "binary" and a["num_classes"] != 2:
        raise ValueError(f"`num_classes` must be 2 for task='binary', got {a['num_classes']}.")
    if a["task"] == "multiclass" and a["num_classes"] < 2:
        raise ValueError(f"`num_classes` must be >= 2 for task='multiclass', got {a['num_classes']}.")
    for name in ("num_features", "backbone_features"):
        if a[name] is not None:
            _check_int(a, name, 1)
    _check_int(a, "reference_batch_size", 1)
    ranges = {
        "dropout": (0, 1, "[0, 1)"),
        "label_smoothing": (0, 1, "[0, 1)"),
        "base_momentum": (0, 1, "[0, 1)"),
        "max_momentum": (0, 1, "[0, 1)"),
    }
    for name, (lo, hi, text) in ranges.items():
        if not lo <= a[name] < hi:
            raise ValueError(f"`{name}` must be in {text}, got {a[name]}.")
    for name in ("learning_rate", "div_factor", "final_div_factor"):
        if not a[name] > 0 or not math.isfinite(a[name]):
            raise ValueError(f"`{name}` must be > 0, got {a[name]}.")
    for name in ("weight_decay", "focal_gamma", "mixup_alpha"):
        if not a[name] >= 0 or not math.isfinite(a[name]):
            raise ValueError(f"`{name}` must be >= 0, got {a[name]}.")
    if not 0 < a["warmup_pct"] < 1:
        raise ValueError(f"`warmup_pct` must be in (0, 1), got {a['warmup_pct']}.")
    if not 0 < a["max_fpr"] < 1:
        raise ValueError(f"`max_fpr` must be in (0, 1), got {a['max_fpr']}.")
    if a["base_momentum"] > a["max_momentum"]:
        raise ValueError(
            f"`base_momentum` ({a['base_momentum']}) must be <= `max_momentum` ({a['max_momentum']})."
        )
    _check_choice(a, "anneal_strategy", ("cos", "linear"))
    _check_choice(a, "lr_scaling", ("none", "linear", "sqrt"))
    _check_choice(a, "threshold_metric", ("f1", "fpr", "fa_per_hour", "none"))
    if not (a["max_fa_per_hour"] > 0 and math.isfinite(a["max_fa_per_hour"])):
        raise ValueError(f"`max_fa_per_hour` must be > 0, got {a['max_fa_per_hour']}.")
    _check_choice(a, "calibration", fm_calibration.METHODS)
    if a["calibration"] == "platt" and a["task"] == "multiclass":
        raise ValueError(
            "`calibration`='platt' scales each output on its own and would break the softmax of a"
            " multiclass task; use 'temperature' (or 'auto')."
        )
    if a["calibration"] == "temperature" and a["task"] == "multilabel":
        raise ValueError(
            "`calibration`='temperature' needs a binary or multiclass task; use 'platt' or 'auto'."
        )
    if a["preprocessing"] is not None and not isinstance(a["preprocessing"], dict):
        raise TypeError(
            f"`preprocessing` must be a dict (a datamodule's fitted spec), got {a['preprocessing']!r}."
        )
    if a["focal_alpha"] != "auto":
        check_alpha(a["focal_alpha"], a["task"], a["num_classes"], name="focal_alpha")
    for name, want in (("class_names", a["num_classes"]), ("feature_names", a["num_features"])):
        if a[name] is not None and want is not None and len(a[name]) != want:
            raise ValueError(f"`{name}` must have {want} entries, got {len(a[name])}: {a[name]}.")
    if not (a["backbone"] is None or isinstance(a["backbone"], nn.Module | dict)):
        raise TypeError(
            f"`backbone` must be an nn.Module, a class_path dict or None, got {type(a['backbone'])}."
        )


def _check_int(a: dict[str, Any], name: str, low: int) -> None:
    if isinstance(a[name], bool) or not isinstance(a[name], int):
        raise TypeError(f"`{name}` must be an int, got {a[name]!r}.")
    if a[name] < low:
        raise ValueError(f"`{name}` must be >= {low}, got {a[name]}.")


def _check_choice(a: dict[str, Any], name: str, choices: tuple[str, ...]) -> None:
    if a[name] not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {a[name]!r}.")
