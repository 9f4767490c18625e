"""FocalMixClassifier: focal loss, label smoothing and mixup, trained with AdamW and OneCycleLR."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from focalmix import calibration as fm_calibration
from focalmix import optim
from focalmix._checks import ArgumentTypeError, ArgumentValueError, Instance, Interval, Options, check
from focalmix.backbones import build_backbone, feature_size
from focalmix.evaluation import Decision, Evaluator, probabilities
from focalmix.faults import capture_rng_state, restore_rng_state
from focalmix.losses import TASKS, check_alpha, focal_mixup_loss
from focalmix.mixup import mixup
from focalmix.preprocessing import InputEncoder, check_same_spec

_RESIZABLE_BUFFERS = ("input_mean", "input_std", "feature_mean", "feature_std", "alpha_weights")


class _Delegated:
    """An attribute of the classifier that its :class:`~focalmix.evaluation.Evaluator` keeps."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.evaluator, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.evaluator, self.name, value)


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

    # kept by the evaluator (gathered validation/test rows, the wake-word table), under their old names
    val_loss, val_logits, val_targets = _Delegated(), _Delegated(), _Delegated()
    test_loss, test_logits, test_targets = _Delegated(), _Delegated(), _Delegated()
    wakeword_table = _Delegated()  # FRR and FA/h per threshold (background_source); saved in the checkpoint

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
        unsaved = _unsaved_module(backbone)
        self.save_hyperparameters(ignore=["backbone"] if unsaved else None)
        if unsaved and callable(getattr(backbone, "config", None)):
            # a pretrained adapter rebuilds from its class path and config: checkpoints stay self-contained
            self.hparams["backbone"] = _class_path(backbone)
        self.encoder = None if preprocessing is None else InputEncoder(preprocessing)
        if self.encoder is not None:
            num_features, input_shape = self.encoder.out_features, (self.encoder.out_features,)
        self.backbone = build_backbone(backbone, num_features, hidden_sizes)
        dry_run = input_shape or ((num_features,) if num_features else None)
        width = backbone_features or feature_size(self.backbone, dry_run, table=preprocessing is not None)
        outputs = 1 if task == "binary" else num_classes
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, outputs))
        if self._backbone_frozen():
            self.backbone.requires_grad_(False)
        _register_buffers(self, task, num_classes, focal_alpha)
        settings = ("calibration", "threshold_metric", "max_fpr", "max_fa_per_hour", "class_names")
        self.evaluator = Evaluator(task, num_classes, **{k: self.hparams[k] for k in settings})
        self._mixup_generator: torch.Generator | None = None
        self._resumed_rng: dict[str, Any] | None = None

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
        return probabilities(logits, self.hparams.task)

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
        options = {"task": hp.task, "gamma": hp.focal_gamma, "label_smoothing": hp.label_smoothing}
        options.update(alpha=alpha, reduction=reduction, validate_args=validate_args)
        return focal_mixup_loss(logits, target, lam, perm, **options)

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
        self.evaluator.update(stage, logits, y, self._criterion(logits, y, reduction="none"))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _log_epoch_metrics(self, stage: str) -> None:
        result = self.evaluator.epoch_end(
            stage, self._decision(), fitting=self._fitting(), background=lambda: _background_logits(self)
        )
        if result is None:
            return
        loss, values = result
        # Computed from states synced over all ranks: identical everywhere, so no sync_dist (and none of
        # Lightning's advice to add one, 12 lines per DDP epoch).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*on epoch level in distributed setting.*")
            self.log(f"{stage}/loss", loss.float(), prog_bar=True)
            self.log_dict({f"{stage}/{k}": v.float() for k, v in values.items()})

    def _decision(self) -> Decision:
        """The buffers the evaluator fits in place: the threshold and the calibration."""
        return Decision(self.threshold, self.calibration_scale, self.calibration_bias)

    def _calibration_method(self) -> str:
        return self.evaluator.calibration_method

    def _fitting(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.state.fn == "fit" and not trainer.sanity_checking

    # ---- optimization --------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            check_same_spec(self.hparams.get("preprocessing"), getattr(datamodule, "preprocessing", None))
        _quiet_lightning_advice(self.trainer.world_size if self._trainer is not None else 1, fit_frozen=(
            stage == "fit" and self._backbone_frozen()))  # fmt: skip
        if stage == "fit" and datamodule is not None:
            _take_training_statistics(self, datamodule)

    def on_train_start(self) -> None:
        scheduler = self.lr_schedulers()
        # (the Tuner shortens runs on purpose: they are not resumes)
        if self.trainer.ckpt_path is not None and scheduler is not None:
            optim.check_resumed_schedule(scheduler, self.trainer.estimated_stepping_batches)
        for logger in self.loggers:  # the effective batch and peak lr, next to the metrics
            logger.log_metrics(getattr(self, "_effective", {}), step=self.global_step)
        self.on_train_epoch_start()  # Lightning skips that hook when a run resumes mid-epoch
        # (restored here, after the sanity check, whose loader draws from torch's global stream)
        self._mixup_generator = _mixup_stream(
            self._resumed_rng, self.trainer.world_size, self.global_rank, self.global_step
        )
        self._resumed_rng = None
        if not self.trainer.num_val_batches or not sum(self.trainer.num_val_batches):
            if self._calibration_method() != "none":
                self.evaluator.say_once(
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
        total, batch = self.trainer.estimated_stepping_batches, _effective_batch(self.trainer)
        optimizer, scheduler, lr = optim.recipe(self.parameters(), self.hparams, total, batch)
        rank_zero_info(
            f"focalmix: effective batch size {batch or 'unknown'}, peak learning rate {lr:.3g} "
            f"(lr_scaling={self.hparams.lr_scaling}), {int(total)} optimizer steps"
        )
        self._effective = {"effective_batch_size": float(batch or 0), "effective_peak_lr": lr}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


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


def _class_path(backbone: nn.Module) -> dict[str, Any]:
    """A pretrained adapter as the hyperparameters hold it: its class path and its ``config()``."""
    cls = type(backbone)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": backbone.config()}


def _register_buffers(model: nn.Module, task: str, num_classes: int, focal_alpha: Any) -> None:
    """The classifier's buffers (saved in the checkpoint, in this order)."""
    model.register_buffer("input_mean", torch.empty(0))
    model.register_buffer("input_std", torch.empty(0))
    # a frozen backbone's features standardized on the training split (set at fit; empty: as they are)
    model.register_buffer("feature_mean", torch.empty(0))
    model.register_buffer("feature_std", torch.empty(0))
    # per-class weights live on the model's device, so the loss copies nothing per step
    weights = focal_alpha if isinstance(focal_alpha, list | tuple) else []
    model.register_buffer("alpha_weights", torch.tensor(weights, dtype=torch.float32))
    model.register_buffer("threshold", torch.tensor(0.5))
    # calibrated logits = logits * scale + bias: identity until the first validation epoch of fit
    shape = (num_classes,) if task == "multilabel" else ()
    model.register_buffer("calibration_scale", torch.ones(shape))
    model.register_buffer("calibration_bias", torch.zeros(shape))


def _background_logits(model: FocalMixClassifier) -> tuple[Tensor, dict] | None:
    """Logits of the datamodule's background windows (for FA/h) and their settings, or None."""
    dm = getattr(model._trainer, "datamodule", None) if model._trainer is not None else None
    background = getattr(dm, "background", None)
    if background is None:
        return None
    with torch.no_grad():
        logits = model._head_logits(background["features"].to(model.device))
    return logits, {**background, **dm.wakeword_settings}


def _quiet_lightning_advice(world_size: int, fit_frozen: bool) -> None:
    if world_size > 1:
        # Lightning advises sync_dist for epoch-level values under DDP; ours are computed from states
        # gathered over every rank (identical everywhere), so the advice is noise (12 lines an epoch)
        warnings.filterwarnings("ignore", r".*self\.log\('(val|test)/.*on epoch level in distributed")
    if fit_frozen:
        # Lightning warns about modules left in eval mode: a frozen backbone is, on purpose.
        warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")


def _take_training_statistics(model: FocalMixClassifier, datamodule: Any) -> None:
    """At fit: the datamodule's input (and frozen features') standardization, and ``focal_alpha="auto"``."""
    norm = getattr(datamodule, "normalization", None)
    if norm is not None:
        model.set_normalization(*norm)
    feature_norm = getattr(datamodule, "feature_normalization", None)
    if feature_norm is not None and model._backbone_frozen():
        model.feature_mean, model.feature_std = (t.to(model.device) for t in feature_norm)
    if model.hparams.focal_alpha == "auto":
        counts = torch.as_tensor(datamodule.class_counts)
        if model.hparams.task == "multilabel":  # positives per label -> (negatives, positives)
            counts = torch.stack([len(datamodule.train_dataset) - counts, counts], dim=-1)
        model.alpha_weights = auto_alpha(model.hparams.task, counts).to(model.device)


def _mixup_stream(saved: dict[str, Any] | None, world_size: int, rank: int, step: int) -> torch.Generator:
    """The generator mixup draws from: the checkpoint's streams when a run resumes, else a fresh seed."""
    generator = torch.Generator()
    if saved is not None and saved.get("world_size") == world_size == 1:
        # Exact resumption: the random streams continue where the checkpoint's run left them.
        restore_rng_state(saved["global"])
        generator.set_state(saved["mixup"])
    else:
        generator.manual_seed(hash((torch.initial_seed(), rank, step)) % 2**63)  # distinct per rank
    return generator


def _effective_batch(trainer: Any) -> int | None:
    """Samples per optimizer step over all processes, or None when the loader has no batch size."""
    batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if batch_size is None:
        batch_size = getattr(trainer.train_dataloader, "batch_size", None)
    if batch_size is None:
        return None
    return batch_size * trainer.world_size * trainer.accumulate_grad_batches


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


_POSITIVE = Interval(float, 0, None, closed="neither")
# One line per argument: types and ranges (see focalmix._checks); the rules across arguments are below.
_CONSTRAINTS = {
    "backbone": [None, Instance((nn.Module, dict), "an nn.Module, a class_path dict")],
    "task": [Options(*TASKS)],
    "num_classes": [Interval(int, 1)],
    "num_features": [None, Interval(int, 1)],
    "backbone_features": [None, Interval(int, 1)],
    "reference_batch_size": [Interval(int, 1)],
    "dropout": [Interval(float, 0, 1, closed="left")],
    "label_smoothing": [Interval(float, 0, 1, closed="left")],
    "base_momentum": [Interval(float, 0, 1, closed="left")],
    "max_momentum": [Interval(float, 0, 1, closed="left")],
    "learning_rate": [_POSITIVE],
    "div_factor": [_POSITIVE],
    "final_div_factor": [_POSITIVE],
    "weight_decay": [Interval(float, 0)],
    "focal_gamma": [Interval(float, 0)],
    "mixup_alpha": [Interval(float, 0)],
    "warmup_pct": [Interval(float, 0, 1, closed="neither")],
    "max_fpr": [Interval(float, 0, 1, closed="neither")],
    "max_fa_per_hour": [_POSITIVE],
    "anneal_strategy": [Options("cos", "linear")],
    "lr_scaling": [Options(*optim.SCALINGS)],
    "threshold_metric": [Options("f1", "fpr", "fa_per_hour", "none")],
    "calibration": [Options(*fm_calibration.METHODS)],
    "preprocessing": [None, Instance(dict, "a dict (a datamodule's fitted spec)")],
}


def _validate(args: dict[str, Any]) -> None:
    """Check every constructor argument, so a bad config fails when it is parsed."""
    a, owner = args, FocalMixClassifier
    check(a, _CONSTRAINTS, owner=owner)

    def bad(argument: str, message: str) -> ArgumentValueError:
        return ArgumentValueError(message, argument=argument, owner=owner)

    task, num_classes = a["task"], a["num_classes"]
    if task == "binary" and num_classes != 2:
        raise bad("num_classes", f"`num_classes` must be 2 for task='binary', got {num_classes}.")
    if task == "multiclass" and num_classes < 2:
        raise bad("num_classes", f"`num_classes` must be >= 2 for task='multiclass', got {num_classes}.")
    if a["base_momentum"] > a["max_momentum"]:
        message = f"`base_momentum` ({a['base_momentum']}) must be <= `max_momentum` ({a['max_momentum']})."
        raise bad("base_momentum", message)
    if a["calibration"] == "platt" and task == "multiclass":
        raise bad(
            "calibration",
            "`calibration`='platt' scales each output on its own and would break the softmax of a"
            " multiclass task; use 'temperature' (or 'auto').",
        )
    if a["calibration"] == "temperature" and task == "multilabel":
        message = "`calibration`='temperature' needs a binary or multiclass task; use 'platt' or 'auto'."
        raise bad("calibration", message)
    if a["focal_alpha"] != "auto":
        try:
            check_alpha(a["focal_alpha"], task, num_classes, name="focal_alpha")
        except TypeError as exc:
            raise ArgumentTypeError(str(exc), argument="focal_alpha", owner=owner) from None
        except ValueError as exc:
            raise bad("focal_alpha", str(exc)) from None
    for name, want in (("class_names", num_classes), ("feature_names", a["num_features"])):
        if a[name] is not None and want is not None and len(a[name]) != want:
            raise bad(name, f"`{name}` must have {want} entries, got {len(a[name])}: {a[name]}.")
