"""Mixing methods: one file per family, all built on `Mixer`."""

from mixlab.methods.base import Mixer, MixParams
from mixlab.methods.cutmix import CutMix
from mixlab.methods.fmix import FMix
from mixlab.methods.mixup import MixUp
from mixlab.methods.resizemix import ResizeMix
from mixlab.methods.saliencymix import SaliencyMix

__all__ = ["CutMix", "FMix", "MixParams", "MixUp", "Mixer", "ResizeMix", "SaliencyMix"]
