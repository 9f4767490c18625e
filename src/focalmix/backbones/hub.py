"""timm and Hugging Face models as frozen backbones; their packages are imported only when constructed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from focalmix._checks import Instance, Satisfies, check
from focalmix.backbones._frozen import (
    SECONDS,
    SECONDS_TYPE,
    FrozenBackbone,
    check_args,
    check_batch,
    require,
    sha256_state,
)
from focalmix.backbones.spec import InputSpec

_TIMM_ARGS = {
    "name": [Satisfies(str, bool, "a timm model name such as 'resnet18'")],
    "pretrained": [Instance(bool, "True or False")],
}
_HF_TYPES = {
    "name_or_path": [Instance((str, Path), "a model folder or hub name")],
    "clip_seconds": [None, *SECONDS_TYPE],
}
_HF_ARGS = {
    "name_or_path": [Satisfies((str, Path), lambda v: bool(str(v)), "a model folder or hub name")],
    "clip_seconds": [None, *SECONDS],
}


class _ImageNormalize(nn.Module):
    """``(x - mean) / std`` for (B, 3, H, W) in [0, 1], with non-persistent buffers (not in checkpoints)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


class TimmBackbone(FrozenBackbone):
    """A timm image model without its classifier: ``(B, 3, H, W) -> (B, model.num_features)``, frozen.

    Built with ``timm.create_model(name, pretrained=pretrained and checkpoint_path is None, num_classes=0,
    checkpoint_path=checkpoint_path)``; the input size, mean and std come from
    ``timm.data.resolve_data_config``, and ``forward`` normalizes [0, 1] RGB with them.

    Args:
        name: a timm model name, e.g. ``"resnet18"``.
        pretrained: load timm's pretrained weights (from the Hugging Face hub or its local cache).
        checkpoint_path: a local weights file instead (a state dict of the model without classifier).

    Raises:
        ImportError: timm is not installed.
    """

    def __init__(self, name: str, pretrained: bool = True, checkpoint_path: str | None = None) -> None:
        check({"name": name, "pretrained": pretrained}, _TIMM_ARGS, TimmBackbone)
        if checkpoint_path is not None and not Path(checkpoint_path).is_file():
            raise FileNotFoundError(f"`checkpoint_path`: no weights file at {checkpoint_path}.")
        require(type(self).__name__, None, {"timm": "timm"})
        import timm
        import timm.data

        super().__init__()
        self.name, self.pretrained, self.checkpoint_path = name, pretrained, checkpoint_path
        kwargs = {"checkpoint_path": checkpoint_path} if checkpoint_path else {}
        load = pretrained and checkpoint_path is None
        self.net = timm.create_model(name, pretrained=load, num_classes=0, **kwargs)
        data = timm.data.resolve_data_config({}, model=self.net)
        size = tuple(data["input_size"][1:])
        mean, std = tuple(map(float, data["mean"])), tuple(map(float, data["std"]))
        self.input_spec = InputSpec("image", size=size, mean=mean, std=std)
        self.normalize = _ImageNormalize(mean, std)
        self.out_features = int(self.net.num_features)
        self._freeze()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "pretrained": self.pretrained, "checkpoint_path": self.checkpoint_path}

    def _identity_settings(self) -> dict[str, Any]:
        return {"name": self.name, "size": list(self.input_spec.size)}  # the weights' digest covers the rest

    def _digest(self) -> str:
        return sha256_state(self.net)

    def forward(self, images: Tensor) -> Tensor:
        """float (B, 3, H, W) RGB in [0, 1] -> float32 (B, out_features)."""
        check_batch(images, type(self).__name__, (3, *self.input_spec.size), "RGB images in [0, 1]")
        with torch.no_grad():
            return self.net(self.normalize(images)).flatten(1).float()


class HFBackbone(FrozenBackbone):
    """A Hugging Face ``transformers`` model as a frozen audio or image backbone: ``(B, ...) -> (B, F)``.

    ``AutoModel`` and its preprocessor (``AutoImageProcessor`` for models that take ``pixel_values``,
    ``AutoFeatureExtractor`` for ``input_values``/``input_features``) from a local folder (offline,
    ``local_files_only``) or a hub name. Features: the model's ``pooler_output`` where it has one, else
    its ``last_hidden_state`` averaged over the sequence (or spatial) axes.

    * image models take float (B, 3, H, W) RGB in [0, 1] at the processor's size (crop size where it
      crops); ``forward`` normalizes with the processor's ``image_mean``/``image_std``.
    * audio models take float (B, samples) in [-1, 1] at the feature extractor's ``sampling_rate``;
      ``forward`` runs the feature extractor on the batch, then the model.

    Args:
        name_or_path: a folder saved with ``save_pretrained`` (model and preprocessor), or a hub name.
        clip_seconds: audio clip length in seconds, > 0 (audio models only). None: the feature
            extractor's fixed length where it has one (AST: ``max_length`` frames of 10 ms), else 1.0.

    Raises:
        ImportError: transformers is not installed.
        ValueError: the model takes neither ``pixel_values`` nor audio input.
    """

    def __init__(self, name_or_path: str, clip_seconds: float | None = None) -> None:
        check_args(
            {"name_or_path": name_or_path, "clip_seconds": clip_seconds}, _HF_TYPES, _HF_ARGS, HFBackbone
        )
        require(type(self).__name__, None, {"transformers": "transformers"})
        import transformers

        super().__init__()
        self.name_or_path, self.clip_seconds = str(name_or_path), clip_seconds
        offline = {"local_files_only": True} if Path(name_or_path).is_dir() else {}
        self.net = transformers.AutoModel.from_pretrained(self.name_or_path, **offline)
        self.input_name = self.net.main_input_name
        if self.input_name == "pixel_values":
            self.processor = transformers.AutoImageProcessor.from_pretrained(self.name_or_path, **offline)
            self.input_spec = _image_spec(self.processor)
            self.normalize = _ImageNormalize(self.input_spec.mean, self.input_spec.std)
        elif self.input_name in ("input_values", "input_features"):
            self.processor = transformers.AutoFeatureExtractor.from_pretrained(self.name_or_path, **offline)
            seconds = clip_seconds or _fixed_seconds(self.processor) or 1.0
            self.input_spec = InputSpec(
                "audio", sample_rate=self.processor.sampling_rate, clip_seconds=seconds
            )
        else:
            raise ValueError(
                f"{self.name_or_path} takes {self.input_name!r}: HFBackbone takes image or audio models."
            )
        self._freeze()
        self.out_features = self._dry_run()

    def _dry_run(self) -> int:
        spec = self.input_spec
        shape = (1, spec.num_samples) if spec.kind == "audio" else (1, 3, *spec.size)
        return int(self._features(torch.zeros(shape)).shape[1])

    def config(self) -> dict[str, Any]:
        return {"name_or_path": self.name_or_path, "clip_seconds": self.clip_seconds}

    def _identity_settings(self) -> dict[str, Any]:
        spec = {k: v for k, v in self.input_spec.to_dict().items() if v not in (None, [])}
        return {"model_type": self.net.config.model_type, **spec}

    def _digest(self) -> str:
        processor = json.dumps(self.processor.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256((sha256_state(self.net) + processor).encode()).hexdigest()

    def forward(self, x: Tensor) -> Tensor:
        """Features of a batch of images (B, 3, H, W) or waveforms (B, samples): float32 (B, out_features)."""
        spec = self.input_spec
        shape = (spec.num_samples,) if spec.kind == "audio" else (3, *spec.size)
        check_batch(x, type(self).__name__, shape, "waveforms" if spec.kind == "audio" else "RGB images")
        return self._features(x)

    def _features(self, x: Tensor) -> Tensor:
        device = x.device
        with torch.no_grad():
            if self.input_spec.kind == "image":
                inputs = {"pixel_values": self.normalize(x)}
            else:
                waves = list(x.detach().to("cpu", torch.float32).numpy())
                extracted = self.processor(
                    waves, sampling_rate=self.input_spec.sample_rate, return_tensors="pt"
                )
                inputs = {k: v.to(device) for k, v in extracted.items() if isinstance(v, Tensor)}
            return _pool(self.net(**inputs)).to(device)


def _pool(output: Any) -> Tensor:
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        hidden = output.last_hidden_state
        pooled = (
            hidden.mean(dim=1) if hidden.dim() == 3 else hidden.flatten(2).mean(dim=2)
        )  # (B, T, D) | (B, C, H, W)
    return pooled.flatten(1).float()


def _image_spec(processor: Any) -> InputSpec:
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = dict(size or processor.size)
    if "height" in size and "width" in size:
        hw = (int(size["height"]), int(size["width"]))
    else:
        edge = int(size.get("shortest_edge") or size.get("longest_edge"))
        hw = (edge, edge)
    mean, std = tuple(map(float, processor.image_mean)), tuple(map(float, processor.image_std))
    return InputSpec("image", size=hw, mean=mean, std=std)


def _fixed_seconds(processor: Any) -> float | None:
    """Seconds a feature extractor pads or cuts every clip to (AST: ``max_length`` frames, 10 ms hop)."""
    frames = getattr(processor, "max_length", None)
    if type(processor).__name__ == "ASTFeatureExtractor" and frames:
        return round(frames * 0.01 + 0.015, 3)  # 25 ms window, 10 ms hop: frames -> samples
    return None
