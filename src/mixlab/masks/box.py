"""Box masks for CutMix-style methods, in 1 to 3 spatial dims.

A box is given by integer bounds `lo <= hi` per spatial dim; positions inside
come from the partner. Bounds are kept as tensors so that drawing boxes, building
masks and computing the kept area all stay on the device without a host sync.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from mixlab._checks import check_lam_vector, check_spatial_shape


@functools.lru_cache(maxsize=64)
def _sizes(shape: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(shape, device=device, dtype=torch.float32)


@functools.lru_cache(maxsize=64)
def _positions(shape: tuple[int, ...], device: torch.device) -> tuple[Tensor, ...]:
    """Per axis, the positions 0..n-1 shaped (1, n) for comparing against bounds (n_boxes, 1)."""
    return tuple(torch.arange(n, device=device).view(1, n) for n in shape)


def _uniform(n: int, d: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    rng_device = generator.device if generator is not None else device
    return torch.rand((n, d), generator=generator, device=rng_device).to(device)


def box_bounds(
    sides: Tensor,
    shape: Sequence[int],
    *,
    clip: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Place boxes of the given side lengths at random.

    Args:
        sides: (n, d) side lengths in positions (float), one row per box.
        shape: the d spatial sizes.
        clip: True (CutMix paper): the centre is uniform over the whole sample and
            the box is clipped at the border, so boxes near the edge shrink.
            False: the box (side rounded) is placed wholly inside the sample.

    Returns:
        `(lo, hi)`, each (n, d) int64 with 0 <= lo <= hi <= size.
    """
    size = _sizes(tuple(shape), sides.device)
    u = _uniform(sides.shape[0], sides.shape[1], generator, sides.device)
    if clip:
        return box_bounds_at((u * size).floor(), sides, shape)
    side = sides.round().clamp(min=0).minimum(size)
    lo = (u * (size - side + 1)).floor().minimum(size - side)
    return lo.long(), (lo + side).long()


def box_bounds_at(centre: Tensor, sides: Tensor, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Boxes (n, d) of the given sides around `centre` (n, d), clipped at the border."""
    size = _sizes(tuple(shape), sides.device)
    half = sides / 2
    lo = (centre - half).round_().clamp_(min=0).minimum(size)
    hi = (centre + half).round_().clamp_(min=0).minimum(size)
    return lo.long(), hi.long()


def box_bounds_from_lam(
    lam: Tensor,
    shape: Sequence[int],
    *,
    clip: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Boxes covering a (1 - lam) fraction of the sample: each side is
    size * (1 - lam) ** (1 / d), as CutMix does in 2D."""
    size = _sizes(tuple(shape), lam.device)
    ratio = (1.0 - lam.float()).clamp_(0, 1).pow_(1.0 / len(shape))
    return box_bounds(ratio.unsqueeze(1) * size, shape, clip=clip, generator=generator)


def inside(lo: Tensor, hi: Tensor, shape: Sequence[int]) -> Tensor:
    """Boolean (n, *shape): True inside each box, from bounds (n, d)."""
    return outside_weight(lo, hi, shape, torch.float32) == 0


def outside_weight(lo: Tensor, hi: Tensor, shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """Float (n, *shape): 1 outside each box, 0 inside, from bounds (n, d).

    Built as 1 - prod_axis(inside along the axis) from per-axis indicators, so
    only the last step touches n * prod(shape) values; a boolean mask would need
    a broadcast `&`, a `~` and a conversion, each as costly as the mixing.
    """
    n, d = lo.shape[0], len(shape)
    factors = []
    for axis, pos in enumerate(_positions(tuple(shape), lo.device)):
        on_axis = (pos >= lo[:, axis : axis + 1]) & (pos < hi[:, axis : axis + 1])
        view = [n] + [1] * d
        view[axis + 1] = pos.shape[1]
        factors.append(on_axis.to(dtype).view(view))
    box = factors[0]
    for factor in factors[1:-1]:
        box = box * factor
    if d == 1:
        return 1.0 - box
    return torch.addcmul(torch.ones((), dtype=dtype, device=lo.device), box, factors[-1], value=-1)


def kept_fraction(lo: Tensor, hi: Tensor, shape: Sequence[int]) -> Tensor:
    """Exact fraction (n,) of each sample outside its box, in float32."""
    total = 1
    for n_axis in shape:
        total *= n_axis
    area = (hi - lo).prod(dim=1)
    # (total - area) / total: both exact integers, so one correctly rounded division.
    return (total - area).float().div_(total)


def box(
    lam: Tensor,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """CutMix masks, one per entry of `lam`: 1 outside a random box, 0 inside.

    Args:
        lam: (B,) target fractions to keep; the box covers about 1 - lam.
        shape: spatial shape, 1 to 3 dims of any sizes.
        generator: source of randomness.
        device: where the mask lives (default: lam's device).
        dtype: the mask's dtype (torch.bool works too).

    Returns:
        (B, *shape) mask. Boxes are clipped at the border, so the kept fraction
        can exceed lam; `kept_fraction` of the bounds (what CutMix reports) is
        exactly the mask's mean.
    """
    shape = check_spatial_shape(shape)
    lam = check_lam_vector(lam)
    device = torch.device(device) if device is not None else lam.device
    with torch.no_grad():
        lo, hi = box_bounds_from_lam(lam.to(device), shape, generator=generator)
        return outside_weight(lo, hi, shape, torch.float32).to(dtype)
