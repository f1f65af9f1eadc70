"""Mixing methods: one file per family, all built on `Mixer`."""

from mixlab.methods.automix import AutoMix, AutoMixLoss, MixBlock, ema_momentum
from mixlab.methods.base import Mixer, MixParams
from mixlab.methods.cutmix import CutMix
from mixlab.methods.fmix import FMix
from mixlab.methods.manifoldmix import ManifoldMix
from mixlab.methods.mixup import MixUp
from mixlab.methods.resizemix import ResizeMix
from mixlab.methods.saliencymix import SaliencyMix

__all__ = [
    "AutoMix",
    "AutoMixLoss",
    "CutMix",
    "FMix",
    "ManifoldMix",
    "MixBlock",
    "MixParams",
    "MixUp",
    "Mixer",
    "ResizeMix",
    "SaliencyMix",
    "ema_momentum",
]
