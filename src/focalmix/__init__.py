"""focalmix: focal loss, label smoothing and mixup for imbalanced classification, on PyTorch Lightning."""

from focalmix.data import FocalMixDataModule
from focalmix.diagnostics import Finding, TrainingDiagnostics, diagnose
from focalmix.losses import FocalLoss, focal_loss
from focalmix.mixup import mix, mixup, mixup_loss, sample_mixup
from focalmix.module import FocalMixClassifier

__version__ = "0.1.0"

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
