"""Plain ``nn.Module`` backbones: they map a batch of samples to a batch of feature vectors."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """A multilayer perceptron over flattened samples: ``(B, *shape) -> (B, hidden_sizes[-1])``.

    Args:
        num_features: number of input features (the product of the sample shape), >= 1.
        hidden_sizes: width of each hidden layer; each is Linear -> LayerNorm -> GELU. Default: (256, 256).

    Attributes:
        num_features: the size of the output feature vector (timm's convention), read by the classifier head.

    Example:
        >>> import torch
        >>> MLP(30)(torch.randn(4, 30)).shape
        torch.Size([4, 256])
    """

    def __init__(self, num_features: int, hidden_sizes: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"`num_features` must be an int >= 1, got {num_features!r}.")
        if not hidden_sizes or any(not isinstance(h, int) or h < 1 for h in hidden_sizes):
            raise ValueError(f"`hidden_sizes` must be a non-empty list of ints >= 1, got {hidden_sizes!r}.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = num_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.num_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """A small convolutional network for image-like samples: ``(B, C, H, W) -> (B, width * 4)``.

    Three conv blocks (Conv3x3 -> BatchNorm -> ReLU, then 2x2 max-pool after the first two), then
    global average pooling, so any spatial size works.

    Args:
        in_channels: channels of the input, >= 1. Default: 1.
        width: channels of the first block, doubled in each of the next two, >= 1. Default: 16.

    Example:
        >>> import torch
        >>> SmallCNN(in_channels=1)(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 64])
    """

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"`in_channels` and `width` must be >= 1, got {in_channels} and {width}.")
        chans = [in_channels, width, width * 2, width * 4]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
            ]
            layers += [nn.ReLU(inplace=True)] + ([nn.MaxPool2d(2)] if i < 2 else [])
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = chans[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def build_backbone(backbone: Any, num_features: int | None, hidden_sizes: Sequence[int]) -> nn.Module:
    """The backbone: as given, built from a ``{"class_path", "init_args"}`` dict, or an :class:`MLP`."""
    if isinstance(backbone, nn.Module):
        return backbone
    if isinstance(backbone, dict):  # {"class_path": "pkg.mod.Class", "init_args": {...}}
        module_name, _, cls_name = backbone["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls(**backbone.get("init_args", {}))
    if num_features is None:
        raise ValueError(
            "The default MLP backbone needs `num_features` (or `input_shape`); the CLI links it from the"
            " data."
        )
    return MLP(num_features, hidden_sizes)


def feature_size(backbone: nn.Module, input_shape: tuple[int, ...] | None) -> int:
    """Output width of ``backbone``: its ``num_features``/``out_features`` attribute, else a dry run."""
    for attr in ("num_features", "out_features"):
        if isinstance(getattr(backbone, attr, None), int):
            return getattr(backbone, attr)
    if input_shape is None:
        raise ValueError(
            f"Cannot tell the output size of {type(backbone).__name__}: give `backbone_features`, or"
            " `input_shape` for a dry run, or give the backbone a `num_features` attribute."
        )
    was_training = backbone.training
    with torch.no_grad():
        out = backbone.eval()(torch.zeros(2, *input_shape))
    backbone.train(was_training)
    return int(out.reshape(2, -1).shape[1])
