"""focalmix: focal loss, label smoothing and mixup for imbalanced classification, on PyTorch Lightning.

The public names are imported on first use, so ``import focalmix`` (and the ``focalmix`` command's
start-up) does not pay for pandas, scikit-learn or Lightning until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Finding": "focalmix.diagnostics",
    "FocalLoss": "focalmix.losses",
    "FocalMixDataModule": "focalmix.data",
    "FocalMixClassifier": "focalmix.module",
    "TrainingDiagnostics": "focalmix.diagnostics",
    "diagnose": "focalmix.diagnostics",
    "focal_loss": "focalmix.losses",
    "mix": "focalmix.mixup",
    "mixup": "focalmix.mixup",
    "mixup_loss": "focalmix.mixup",
    "sample_mixup": "focalmix.mixup",
}

__all__ = [
    "Finding",
    "FocalLoss",
    "FocalMixDataModule",
    "FocalMixClassifier",
    "TrainingDiagnostics",
    "diagnose",
    "focal_loss",
    "mix",
    "mixup",
    "mixup_loss",
    "sample_mixup",
    "__version__",
]

if TYPE_CHECKING:
    from focalmix.data import FocalMixDataModule
    from focalmix.diagnostics import Finding, TrainingDiagnostics, diagnose
    from focalmix.losses import FocalLoss, focal_loss
    from focalmix.mixup import mix, mixup, mixup_loss, sample_mixup
    from focalmix.module import FocalMixClassifier


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'focalmix' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
