"""CutMix (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers
with Localizable Features")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mixlab._checks import check_alpha
from mixlab.masks.box import box_bounds, box_bounds_from_lam, kept_fraction, outside_weight
from mixlab.methods.base import Mixer
from mixlab.methods.mixup import BetaLam


def _check_minmax(minmax: Sequence[float] | None) -> tuple[float, float] | None:
    if minmax is None:
        return None
    lo_hi = tuple(minmax)
    if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] <= lo_hi[1] <= 1.0:
        raise ValueError(f"minmax: expected (min, max) with 0 <= min <= max <= 1, got {minmax!r}")
    return float(lo_hi[0]), float(lo_hi[1])


class BoxMixer(Mixer):
    """Shared by box methods: the mask is 1 outside a box, lam its exact kept area."""

    correct_lam: bool = True

    def box_bounds(self, lam, x, source, spatial_dims, generator) -> tuple[Tensor, Tensor]:
        """Bounds (lo, hi), each (n, d), of the boxes for the n ratios `lam`."""
        shape = tuple(x.shape[d] for d in spatial_dims)
        return box_bounds_from_lam(lam, shape, clip=self.correct_lam, generator=generator)

    def host_box(self, lam, x, spatial_dims, generator):
        # The device path's draws and arithmetic for one box, in Python floats:
        # a dozen ops on tiny tensors would cost more than pasting the box.
        shape = tuple(x.shape[d] for d in spatial_dims)
        d = len(shape)
        lam = float(lam)
        if self.minmax is None:
            ratio = min(max(1.0 - lam, 0.0), 1.0) ** (1.0 / d)
            sides = [ratio * n for n in shape]
        else:
            low, high = self.minmax
            u = torch.rand((1, d), generator=generator).tolist()[0]
            sides = [(low + (high - low) * v) * n for v, n in zip(u, shape, strict=True)]
            if lam >= 1.0:  # p or keep_dominant said "don't mix"
                sides = [0.0] * d
        u = torch.rand((1, d), generator=generator).tolist()[0]
        bounds = []
        for side, v, n in zip(sides, u, shape, strict=True):
            if self.correct_lam:
                centre = math.floor(v * n)
                lo = min(max(round(centre - side / 2), 0), n)
                hi = min(max(round(centre + side / 2), 0), n)
            else:
                side = min(max(round(side), 0), n)
                lo = min(math.floor(v * (n - side + 1)), n - side)
                hi = lo + side
            bounds.append(slice(lo, hi))
        total = math.prod(shape)
        return tuple(bounds), (total - math.prod(b.stop - b.start for b in bounds)) / total

    def draw_masks(self, lam, x, source, spatial_dims, generator):
        shape = tuple(x.shape[d] for d in spatial_dims)
        lo, hi = self.box_bounds(lam, x, source, spatial_dims, generator)
        # A float 0/1 mask: what `blend` wants for float batches, cheaper to build.
        dtype = x.dtype if x.is_floating_point() else torch.float32
        mask = outside_weight(lo, hi, shape, dtype)
        return mask, kept_fraction(lo, hi, shape), (lo, hi)


class CutMix(BetaLam, BoxMixer):
    """Paste a box of x_j into x_i; lam is the area of x_i actually kept.

    Args:
        alpha: Beta(alpha, alpha) concentration for the box's target area 1 - lam.
        correct_lam: True (the paper): the box centre is uniform over the sample
            and the box is clipped at the border. False: the box is placed wholly
            inside the sample, so it is never clipped. Either way `target.lam` is
            the exact kept area (never the drawn value).
        minmax: (min, max) to draw each box side as a uniform fraction of the
            sample's side instead (timm's option); alpha is then unused.
        mode, p, keep_dominant, spatial_dims: see `Mixer`.

    Works for 1 to 3 spatial dims and any dtype (uint8 included).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        correct_lam: bool = True,
        minmax: Sequence[float] | None = None,
        mode: str = "batch",
        p: float = 1.0,
        keep_dominant: bool = False,
        spatial_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__(mode=mode, p=p, keep_dominant=keep_dominant, spatial_dims=spatial_dims)
        self.host_batch = True
        self.alpha = check_alpha(alpha)
        self.correct_lam = bool(correct_lam)
        self.minmax = _check_minmax(minmax)

    def box_bounds(self, lam, x, source, spatial_dims, generator):
        if self.minmax is None:
            return super().box_bounds(lam, x, source, spatial_dims, generator)
        shape = tuple(x.shape[d] for d in spatial_dims)
        lo, hi = self.minmax
        size = torch.tensor(shape, dtype=torch.float32, device=lam.device)
        rng_device = generator.device if generator is not None else lam.device
        u = torch.rand((lam.shape[0], len(shape)), generator=generator, device=rng_device)
        sides = (lo + (hi - lo) * u.to(lam.device)) * size
        # lam = 1 (p or keep_dominant said "don't mix") still means no box.
        sides = torch.where(lam.unsqueeze(1) >= 1.0, torch.zeros_like(sides), sides)
        return box_bounds(sides, shape, clip=self.correct_lam, generator=generator)
