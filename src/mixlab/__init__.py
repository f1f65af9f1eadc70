"""mixlab: mixed-sample data augmentation for PyTorch.

>>> mixer = mixlab.FMix(alpha=1.0)
>>> x_mixed, target = mixer(x, y)
>>> loss = mixlab.mixed_cross_entropy(model(x_mixed), target)
"""

from mixlab import masks
from mixlab.collate import collate
from mixlab.losses import mix_loss, mixed_cross_entropy
from mixlab.methods import (
    AutoMix,
    CutMix,
    FMix,
    ManifoldMix,
    Mixer,
    MixParams,
    MixUp,
    ResizeMix,
    SaliencyMix,
)
from mixlab.policies import Alternate, RandomChoice
from mixlab.target import MixedTarget

__version__ = "0.1.0"

__all__ = [
    "Alternate",
    "AutoMix",
    "CutMix",
    "FMix",
    "ManifoldMix",
    "MixParams",
    "MixUp",
    "MixedTarget",
    "Mixer",
    "RandomChoice",
    "ResizeMix",
    "SaliencyMix",
    "collate",
    "masks",
    "mix_loss",
    "mixed_cross_entropy",
]
