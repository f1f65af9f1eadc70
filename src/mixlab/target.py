"""MixedTarget: what a mixing method hands to the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mixlab._checks import check_value


@dataclass(frozen=True)
class MixedTarget:
    """Targets of a mixed batch: sample i is `lam[i]` of class `y_a[i]` and
    `1 - lam[i]` of class `y_b[i]`.

    Attributes:
        y_a: (B,) int64 class indices or (B, K) float soft / multi-hot targets of
            the samples themselves.
        y_b: the same for each sample's partner (`y_a[perm]`).
        lam: (B,) float tensor on the batch's device: exactly the fraction of
            sample i taken from x[i] (the mask's mean, the kept area of a box).
    """

    y_a: Tensor
    y_b: Tensor
    lam: Tensor

    def __len__(self) -> int:
        return self.lam.shape[0]

    @property
    def device(self) -> torch.device:
        return self.lam.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MixedTarget:
        """A copy on `device`."""
        return MixedTarget(
            self.y_a.to(device, non_blocking=non_blocking),
            self.y_b.to(device, non_blocking=non_blocking),
            self.lam.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> MixedTarget:
        """Lets a DataLoader with pin_memory=True carry MixedTargets."""
        return MixedTarget(self.y_a.pin_memory(), self.y_b.pin_memory(), self.lam.pin_memory())

    def soft(self, num_classes: int | None = None, smoothing: float = 0.0) -> Tensor:
        """Dense mixed targets (B, K): lam * onehot(y_a) + (1 - lam) * onehot(y_b).

        Args:
            num_classes: K; required for class-index labels, checked against the
                width of soft targets.
            smoothing: label smoothing s: the result is (1 - s) * mixed + s / K.

        Rows sum to 1 for class-index labels (and for soft targets that do).
        """
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"smoothing: expected a value in [0, 1], got {smoothing!r}")
        if self.y_a.is_floating_point():
            k = self.y_a.shape[1]
            if num_classes is not None and num_classes != k:
                raise ValueError(
                    f"num_classes: targets have {k} columns, got num_classes={num_classes}"
                )
            a, b = self.y_a, self.y_b
        else:
            if num_classes is None or num_classes < 1:
                raise ValueError(
                    f"num_classes: required (>= 1) for class-index labels, got {num_classes!r}"
                )
            k = num_classes
            for name, y in (("y_a", self.y_a), ("y_b", self.y_b)):
                check_value(
                    (y >= 0) & (y < k),
                    f"{name}: class indices must be in [0, {k}) for num_classes={k}",
                )
            a = F.one_hot(self.y_a.long(), k).float()
            b = F.one_hot(self.y_b.long(), k).float()
        lam = self.lam.unsqueeze(1).to(a.dtype)
        mixed = torch.lerp(b, a, lam)
        if smoothing:
            mixed = mixed * (1.0 - smoothing) + smoothing / k
        return mixed

    @classmethod
    def unmixed(cls, y: Tensor) -> MixedTarget:
        """Targets of a batch that was not mixed: lam = 1."""
        return cls(y, y, torch.ones(y.shape[0], device=y.device))
