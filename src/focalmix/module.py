"""FocalMixClassifier: focal loss, label smoothing and mixup, trained with AdamW and OneCycleLR."""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from focalmix import calibration as fm_calibration
from focalmix import optim
from focalmix.arguments import backbone_hparams, check_arguments, unsaved_module
from focalmix.backbones import build_backbone, feature_size, head_for
from focalmix.evaluation import Decision, Evaluator, background_logits, probabilities
from focalmix.evaluation import EvaluatorAttribute as _Kept
from focalmix.faults import capture_rng_state
from focalmix.losses import focal_mixup_loss
from focalmix.mixup import mixup
from focalmix.preprocessing import InputEncoder, check_same_spec
from focalmix.training import (
    auto_alpha,  # noqa: F401 (focalmix.module.auto_alpha, as before)
    effective_batch,
    has_features,
    mixup_stream,
    quiet_lightning_advice,
    quiet_sanity_check,
    take_training_statistics,
    unpack,
)

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
        head_hidden_sizes: hidden widths of the head (each Linear, ReLU, Dropout) before its output
            layer; ``()``: dropout and one linear layer. For a frozen pretrained backbone, a small MLP
            head (e.g. ``[128]``) is often better than a linear one. Default: ().
        head_type: ``"mlp"`` (default: the head above) or ``"temporal"``: a
            :class:`~focalmix.backbones.TemporalHead` over a backbone's frames (e.g. SpeechEmbedding's
            speech embeddings of a 2 s clip), scoring a pattern the same wherever it sits in the window;
            ``head_hidden_sizes`` is then its channels (``[]``: 64).
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
    val_loss, val_logits, val_targets = _Kept(), _Kept(), _Kept()
    test_loss, test_logits, test_targets = _Kept(), _Kept(), _Kept()
    wakeword_table = _Kept()  # FRR and FA/h per threshold (background_source); saved in the checkpoint

    def __init__(
        self,
        backbone: nn.Module | None = None,
        task: Literal["binary", "multiclass", "multilabel"] = "binary",
        num_classes: int = 2,
        num_features: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        hidden_sizes: tuple[int, ...] = (256, 256),
        head_hidden_sizes: tuple[int, ...] = (),
        head_type: Literal["mlp", "temporal"] = "mlp",
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
        check_arguments(locals(), owner=FocalMixClassifier)
        unsaved = unsaved_module(backbone)
        self.save_hyperparameters(ignore=["backbone"] if unsaved else None)
        if unsaved and callable(getattr(backbone, "config", None)):
            # a pretrained adapter rebuilds from its class path and config: checkpoints stay self-contained
            self.hparams["backbone"] = backbone_hparams(backbone)
        self.encoder = None if preprocessing is None else InputEncoder(preprocessing)
        if self.encoder is not None:
            num_features, input_shape = self.encoder.out_features, (self.encoder.out_features,)
        self.backbone = build_backbone(backbone, num_features, hidden_sizes)
        dry_run = input_shape or ((num_features,) if num_features else None)
        width = backbone_features or feature_size(self.backbone, dry_run, table=preprocessing is not None)
        self.head = head_for(self.backbone, width, task, num_classes, dropout, head_hidden_sizes, head_type)
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
        imported (see :mod:`focalmix.trust`), so opening a shared checkpoint cannot run code: any other
        raises ``focalmix.trust.UntrustedClassError``, importing nothing.

        Args:
            checkpoint_path: the ``.ckpt`` file (or file-like object).
            *args: passed to Lightning's ``load_from_checkpoint``.
            trusted_modules: extra module prefixes to trust for this call, e.g. ``["mypkg.nets"]``.
            **kwargs: passed on (``map_location``, ``weights_only``, hyperparameter overrides...).
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
        x, y = unpack(batch)
        # Mix encoded features: mixing category codes or NaN would invent categories and spread gaps.
        # Cached features of a frozen backbone are mixed as they are and go to the head alone.
        cached = has_features(batch)
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
        if has_features(batch):
            return self._to_probs(self.calibrate_logits(self._head_logits(batch["features"])))
        x = batch["x"] if isinstance(batch, dict) else batch[0] if isinstance(batch, list | tuple) else batch
        return self.predict_proba(x)

    def _eval_step(self, stage: str, batch: Any) -> None:
        x, y = unpack(batch)
        logits = self._head_logits(x) if has_features(batch) else self(x)
        self.evaluator.update(stage, logits, y, self._criterion(logits, y, reduction="none"))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _log_epoch_metrics(self, stage: str) -> None:
        bg = partial(background_logits, self._datamodule(), self._head_logits, self.device)
        with quiet_sanity_check(self._trainer):
            result = self.evaluator.epoch_end(stage, self._decision(), fitting=self._fitting(), background=bg)
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

    def _datamodule(self) -> Any:
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _fitting(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.state.fn == "fit" and not trainer.sanity_checking

    # ---- optimization --------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = self._datamodule()
        if datamodule is not None:
            check_same_spec(self.hparams.get("preprocessing"), getattr(datamodule, "preprocessing", None))
        world_size = self.trainer.world_size if self._trainer is not None else 1
        quiet_lightning_advice(world_size, fit_frozen=stage == "fit" and self._backbone_frozen())
        if stage == "fit" and datamodule is not None:
            take_training_statistics(self, datamodule, self._backbone_frozen())

    def on_train_start(self) -> None:
        scheduler = self.lr_schedulers()
        # (the Tuner shortens runs on purpose: they are not resumes)
        if self.trainer.ckpt_path is not None and scheduler is not None:
            optim.check_resumed_schedule(scheduler, self.trainer.estimated_stepping_batches)
        for logger in self.loggers:  # the effective batch and peak lr, next to the metrics
            logger.log_metrics(getattr(self, "_effective", {}), step=self.global_step)
        self.on_train_epoch_start()  # Lightning skips that hook when a run resumes mid-epoch
        # (restored here, after the sanity check, whose loader draws from torch's global stream)
        self._mixup_generator = mixup_stream(
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
        total, batch = self.trainer.estimated_stepping_batches, effective_batch(self.trainer)
        optimizer, scheduler, lr = optim.recipe(self.parameters(), self.hparams, total, batch)
        rank_zero_info(
            f"focalmix: effective batch size {batch or 'unknown'}, peak learning rate {lr:.3g} "
            f"(lr_scaling={self.hparams.lr_scaling}), {int(total)} optimizer steps"
        )
        self._effective = {"effective_batch_size": float(batch or 0), "effective_peak_lr": lr}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


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
