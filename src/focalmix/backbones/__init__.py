"""Backbones: networks that map a batch of samples to a batch of feature vectors (B, F).

Plain nets (:class:`MLP`, :class:`SmallCNN`, :class:`TabularMLP`) live in :mod:`focalmix.backbones.plain`.
Pretrained adapters (imported on first use, so their optional packages are only needed when used):

* :class:`SpeechEmbedding` (:mod:`~focalmix.backbones.speech`): openWakeWord's speech embedding, ONNX;
* :class:`EfficientNetLite0` (:mod:`~focalmix.backbones.vision`): ImageNet EfficientNet-Lite0 on torch;
* :class:`OnnxBackbone` (:mod:`~focalmix.backbones.onnx`): any ONNX feature extractor, frozen;
* :class:`TimmBackbone`, :class:`HFBackbone` (:mod:`~focalmix.backbones.hub`): timm and Hugging Face.

A pretrained adapter declares the input it wants as ``input_spec`` (a :class:`~focalmix.backbones.spec.
InputSpec`), its output width as ``out_features`` and whether it is ``frozen``; the datamodule prepares
media to match, and a frozen backbone's features are computed once and cached.
"""

from __future__ import annotations

import importlib
from typing import Any

from focalmix.backbones.plain import (
    MLP,
    SmallCNN,
    TabularMLP,
    TemporalHead,
    build_backbone,
    build_head,
    feature_size,
    head_for,
    normal_bins,
)

_LAZY = {
    "InputSpec": "focalmix.backbones.spec",
    "SpeechEmbedding": "focalmix.backbones.speech",
    "EfficientNetLite0": "focalmix.backbones.vision",
    "OnnxBackbone": "focalmix.backbones.onnx",
    "TimmBackbone": "focalmix.backbones.hub",
    "HFBackbone": "focalmix.backbones.hub",
}

__all__ = [
    "MLP", "SmallCNN", "TabularMLP", "TemporalHead", "build_backbone", "build_head", "feature_size",
    "head_for", "normal_bins", *_LAZY,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'focalmix.backbones' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
