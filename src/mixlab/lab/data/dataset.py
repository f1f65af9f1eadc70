"""The in-memory dataset object, its augmentation settings, and the data errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

PaddingMode = Literal["reflect", "zeros"]


class DatasetError(ValueError):
    """A dataset file is damaged: wrong magic number, truncated, unpicklable, wrong shape."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file is missing from every place it was looked for.

    Subclasses both `DatasetError` and `FileNotFoundError`, so either `except` catches it.
    """


@dataclass(frozen=True)
class AugmentConfig:
    """Random crop with padding and random mirror, applied per sample by `DeviceLoader`.

    Args:
        crop_padding: pad each spatial side by this many pixels, then crop back to the original
            size at a random offset; 0 disables the crop. Same for every spatial axis.
        flip: mirror the last spatial axis (the width of an image) with probability 1/2.
        padding_mode: "reflect" mirrors the border pixels (airbench's choice: no artificial black
            frame for the network to latch onto); "zeros" pads with 0, which for MNIST-like data
            on a black background is an exact translation.
    """

    crop_padding: int = 0
    flip: bool = False
    padding_mode: PaddingMode = "reflect"

    def __post_init__(self) -> None:
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0, got {self.crop_padding!r}")
        if self.padding_mode not in ("reflect", "zeros"):
            raise ValueError(
                f"padding_mode must be 'reflect' or 'zeros', got {self.padding_mode!r}"
            )

    @property
    def enabled(self) -> bool:
        """Whether this config changes anything at all."""
        return self.crop_padding > 0 or self.flip


@dataclass(frozen=True, repr=False)
class LabDataset:
    """A classification dataset held in memory as CPU tensors, train and test split.

    Attributes:
        name: one of `DATASET_NAMES`, e.g. "cifar10".
        train_x: (N, C, *S) CPU tensor; uint8 0..255 for images, float32 for "mnist1d"
            (already standardised by its generator). S is (H, W) or (L,).
        train_y: (N,) int64 labels in 0..num_classes-1.
        test_x, test_y: the same for the test split.
        num_classes: K.
        classes: K class names, index = label.
        mean, std: per-channel statistics of the train split on the 0..1 scale (x/255 for
            uint8 data, x itself for float data); the loader computes (x/255 - mean)/std.
        default_augment: the augmentation the lab uses for training on this dataset.
        source: where the data came from (a directory, or the package that generated it).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_augment: AugmentConfig
    source: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.ndim < 3 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"{self.name}: expected {split}_x (N, C, *S) and {split}_y (N,), "
                    f"got {tuple(x.shape)} and {tuple(y.shape)}"
                )
            if y.dtype != torch.int64:
                raise ValueError(f"{self.name}: {split}_y must be int64, got {y.dtype}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(
                f"{self.name}: train and test samples differ in shape: "
                f"{tuple(self.train_x.shape[1:])} vs {tuple(self.test_x.shape[1:])}"
            )
        if len(self.classes) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.classes)} class names for {self.num_classes} classes"
            )

    @property
    def in_channels(self) -> int:
        """C, the number of input channels."""
        return self.train_x.shape[1]

    @property
    def input_size(self) -> tuple[int, ...]:
        """S, the spatial shape of one sample: (H, W) or (L,)."""
        return tuple(self.train_x.shape[2:])

    def __repr__(self) -> str:
        # The dataclass repr would print the tensors; shapes are what one wants to see.
        return (
            f"LabDataset(name={self.name!r}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, dtype={self.train_x.dtype}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )


def channel_mean_std(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and standard deviation of `x` on the 0..1 scale.

    Args:
        x: (N, C, *S) uint8 (divided by 255) or float tensor.
        chunk: samples per step: float32 sums per chunk, float64 across chunks, so 50k CIFAR
            images need ~50 MB of scratch rather than a 600 MB float copy.

    Returns:
        (mean, std): two tuples of C floats.
    """
    channels = x.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].reshape(-1, channels, math.prod(x.shape[2:])).float()
        total += part.sum((0, 2)).double().cpu()
        # Not square_(): for float input `.float()` is a view of the dataset itself.
        total_sq += part.square().sum((0, 2)).double().cpu()
    count = x.numel() // channels
    unit = 1 / 255 if x.dtype == torch.uint8 else 1.0
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple((mean * unit).tolist()), tuple((std * unit).tolist())
