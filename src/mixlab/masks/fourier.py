"""FMix masks (Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation").

A mask is a thresholded low-frequency random field: draw a complex Gaussian
spectrum, scale each frequency f by 1 / max(f, 1/max(shape)) ** decay_power,
take the inverse real FFT, and keep the top lam * N positions as 1.

Written from the paper's formula. The published code takes real and imaginary
parts from the wrong axis and mis-shapes its 3D frequency grid for unequal sides;
here every spatial rank uses the same n-dimensional grid built from
`fftfreq`/`rfftfreq`, so non-square and non-cubic shapes are right.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mixlab._checks import check_lam_vector, check_spatial_shape

# Up to this many positions a mask is thresholded exactly at its k-th largest
# value. Beyond, the threshold is the matching quantile of a lattice subsample of
# this many positions: a low-frequency field is smooth, so the kept fraction
# lands within ~0.2% of lam (measured at 224x224) at a fraction of the cost, and
# callers report the mask's own mean as lam, so labels stay exact.
EXACT_LIMIT = 4096


@functools.lru_cache(maxsize=64)
def _spectrum_scale(shape: tuple[int, ...], decay_power: float, device: torch.device) -> Tensor:
    """1 / max(|f|, 1/max(shape)) ** decay_power on the rfftn grid of `shape`."""
    axes = [torch.fft.fftfreq(n, dtype=torch.float64) for n in shape[:-1]]
    axes.append(torch.fft.rfftfreq(shape[-1], dtype=torch.float64))
    f2 = torch.zeros(())
    for d, freq in enumerate(axes):
        view = [1] * len(shape)
        view[d] = -1
        f2 = f2 + freq.view(view) ** 2
    floor = 1.0 / max(shape)
    scale = f2.sqrt().clamp_min(floor) ** -decay_power
    # Normalise: ranks (and so masks) are unchanged, and float32 keeps its range
    # at high decay powers.
    return (scale / scale.max()).to(device=device, dtype=torch.float32)


def low_frequency_noise(
    n: int,
    shape: Sequence[int],
    *,
    decay_power: float = 3.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Real random fields (n, *shape) with power falling as 1/f^(2*decay_power).

    The spectrum's real and imaginary parts are independent standard normals
    (drawn as one (n, *freq_shape, 2) tensor, last axis = real, imaginary), each
    scaled by `1 / max(f, 1/max(shape)) ** decay_power`; the field is
    `irfftn(spectrum, s=shape)`.
    """
    shape = check_spatial_shape(shape)
    device = torch.device(device) if device is not None else torch.device("cpu")
    return low_frequency_noise_unchecked(n, shape, float(decay_power), generator, device)


def low_frequency_noise_unchecked(
    n: int,
    shape: tuple[int, ...],
    decay_power: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    rng_device = generator.device if generator is not None else device
    scale = _spectrum_scale(shape, decay_power, rng_device)
    spectrum = torch.randn((n, *scale.shape, 2), generator=generator, device=rng_device)
    spectrum.mul_(scale.unsqueeze(-1))
    dims = tuple(range(1, len(shape) + 1))
    field = torch.fft.irfftn(torch.view_as_complex(spectrum), s=shape, dim=dims)
    return field.to(device)


def _kth_largest(values: Tensor, k: Tensor) -> Tensor:
    """Per row of `values` (n, m), its k[i]-th largest value (+inf where k[i] == 0).

    `kthvalue` takes one rank for all rows, so each row is padded with k[i]
    copies of -inf and m - k[i] copies of +inf: the wanted value is then the
    (m + 1)-th smallest of every padded row. Linear-time selection, no sort, no
    host sync.
    """
    n, m = values.shape
    below = _positions(m, values.device) < k.unsqueeze(1)
    pad = torch.where(below, -math.inf, math.inf).to(values.dtype)
    return torch.cat([values, pad], dim=1).kthvalue(m + 1, dim=1).values


@functools.lru_cache(maxsize=64)
def _positions(m: int, device: torch.device) -> Tensor:
    return torch.arange(m, device=device)


def top_fraction(values: Tensor, lam: Tensor) -> Tensor:
    """Boolean masks (n, m): True at the round(lam * m) largest values of each row."""
    n, m = values.shape
    if m <= EXACT_LIMIT:
        k = (lam * m).round().long()
        threshold = _kth_largest(values, k)
    else:
        sample = values[:, :: math.ceil(m / EXACT_LIMIT)]
        k = (lam * sample.shape[1]).round().long()
        threshold = _kth_largest(sample, k)
    return values >= threshold.unsqueeze(1)


def soft_top_fraction(values: Tensor, lam: Tensor, max_soft: float) -> Tensor:
    """Soft masks (n, m) as in the FMix paper: 1 above rank num - s, 0 from rank num + s,
    a linear ramp in between, where num = round(lam * m) and
    s = floor(m * min(max_soft, lam, 1 - lam)). The ramp is symmetric, so the mean
    stays num / m. Needs every position's rank, so this path sorts.
    """
    n, m = values.shape
    order = values.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(m, device=values.device).expand(n, m))
    num = (lam * m).round()
    soft = (
        m * torch.minimum(torch.minimum(1.0 - lam, lam), torch.full_like(lam, max_soft))
    ).floor()
    low, high = (num - soft).unsqueeze(1), (num + soft).unsqueeze(1)
    width = (high - low - 1).clamp_min(1.0)
    ramp = ((high - 1 - rank) / width).clamp(0.0, 1.0)
    hard = (rank < num.unsqueeze(1)).to(ramp.dtype)
    return torch.where(high - low > 1, ramp, hard)


def fourier(
    lam: Tensor,
    shape: Sequence[int],
    *,
    decay_power: float = 3.0,
    max_soft: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """FMix masks, one per entry of `lam`.

    Args:
        lam: (B,) fractions in [0, 1] of each mask to set to 1.
        shape: spatial shape, 1 to 3 dims of any sizes, e.g. (32, 32) or (300,).
        decay_power: frequency decay; higher gives smoother, blobbier masks.
        max_soft: with > 0, soften mask edges with a ramp over up to this
            fraction of positions on each side of the threshold, keeping the mean.
        generator: source of randomness (its device is where noise is drawn).
        device: where the mask lives (default: lam's device).
        dtype: torch.bool for binary masks (max_soft must be 0), else a float type.

    Returns:
        (B, *shape) mask. Its mean per sample is round(lam * N) / N exactly for
        N <= EXACT_LIMIT positions and within ~0.2% of lam beyond; measure it
        (`mask.float().mean`) where exactness matters, as the FMix method does.
    """
    shape = check_spatial_shape(shape)
    lam = check_lam_vector(lam)
    if not 0.0 <= max_soft <= 0.5:
        raise ValueError(f"max_soft: expected a value in [0, 0.5], got {max_soft!r}")
    if dtype == torch.bool and max_soft > 0:
        raise ValueError("dtype: soft masks (max_soft > 0) cannot be torch.bool")
    device = torch.device(device) if device is not None else lam.device
    return fourier_masks(lam, shape, decay_power, max_soft, generator, device).to(dtype)


def fourier_masks(
    lam: Tensor,
    shape: tuple[int, ...],
    decay_power: float,
    max_soft: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """`fourier` without argument checks, for callers that validated already:
    bool masks, or float ones when max_soft > 0."""
    with torch.no_grad():
        noise = low_frequency_noise_unchecked(lam.shape[0], shape, decay_power, generator, device)
        noise = noise.flatten(1)
        lam = lam.to(device=device, dtype=noise.dtype)
        if max_soft > 0:
            mask = soft_top_fraction(noise, lam, max_soft)
        else:
            mask = top_fraction(noise, lam)
        return mask.view(lam.shape[0], *shape)
