"""SaliencyMix (Uddin et al., "SaliencyMix: A Saliency Guided Data Augmentation
Strategy for Better Regularization")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mixlab._checks import check_alpha
from mixlab.masks.box import box_bounds_at
from mixlab.methods.cutmix import BoxMixer
from mixlab.methods.mixup import BetaLam

# Saliency is computed at most this many positions per side, as OpenCV's
# spectral-residual detector does (it works at 64x64): the peak is a coarse
# location, and the FFT at full ImageNet size would cost more than the mixing.
SALIENCY_SIDE = 64

_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_ADAPTIVE = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def _smooth(x: Tensor, kernel: int) -> Tensor:
    """Box filter of width `kernel` over the spatial dims of x (n, 1, *S)."""
    pool = _POOL[x.ndim - 2]
    # Pooling refuses windows wider than the input: shrink them (odd, so the
    # output keeps the input's size).
    sizes = [min(kernel, n - (n + 1) % 2) for n in x.shape[2:]]
    return pool(x, sizes, stride=1, padding=[k // 2 for k in sizes], count_include_pad=False)


def spectral_residual_saliency(x: Tensor) -> Tensor:
    """Saliency maps (n, *S') of images x (n, C, *S), by the spectral residual
    (Hou & Zhang, 2007): the log amplitude spectrum minus its local average,
    back to space with the original phase, squared and smoothed. S' is S shrunk
    to at most SALIENCY_SIDE per side.
    """
    rank = x.ndim - 2
    gray = x.float().mean(dim=1, keepdim=True)
    small = tuple(min(n, SALIENCY_SIDE) for n in gray.shape[2:])
    if small != tuple(gray.shape[2:]):
        gray = _ADAPTIVE[rank](gray, small)
    dims = tuple(range(2, gray.ndim))
    spectrum = torch.fft.fftn(gray, dim=dims)
    amplitude = spectrum.abs()
    # Floor the amplitude relative to its peak: exact spectral zeros (flat or
    # synthetic images) would otherwise dominate the residual with log(0).
    floor = 1e-3 * amplitude.flatten(1).amax(1).view(-1, *[1] * (amplitude.ndim - 1))
    log_amplitude = torch.log(amplitude + floor + 1e-12)
    residual = log_amplitude - _smooth(log_amplitude, 3)
    back = torch.fft.ifftn(torch.polar(residual.exp(), spectrum.angle()), dim=dims)
    saliency = _smooth(_smooth(back.abs() ** 2, 5), 5)  # two box passes ~ Gaussian
    return saliency.squeeze(1)


def saliency_peak(x: Tensor) -> Tensor:
    """Position (n, d) of each image's saliency peak, in x's own coordinates."""
    saliency = spectral_residual_saliency(x)
    small = saliency.shape[1:]
    flat = saliency.flatten(1).argmax(dim=1)
    coords = []
    for n_small in reversed(small):
        coords.append(flat % n_small)
        flat = flat // n_small
    coords = torch.stack(coords[::-1], dim=1).float()
    scale = torch.tensor(x.shape[2:], device=x.device, dtype=torch.float32) / torch.tensor(
        small, device=x.device, dtype=torch.float32
    )
    return ((coords + 0.5) * scale).floor()


class SaliencyMix(BetaLam, BoxMixer):
    """CutMix whose box is centred on the saliency peak of the pasted image x_j,
    so the patch carries the object the label says it does.

    Args:
        alpha: Beta(alpha, alpha) for the box's target area 1 - lam.
        mode, p, keep_dominant, spatial_dims: see `Mixer`. In batch mode, as in
            the paper, one box (from the first partner's saliency) serves the
            batch; in elem and pair modes every box follows its own partner.

    Saliency is the spectral residual computed in torch (no OpenCV), on the
    channel mean. Boxes are clipped at the border; `target.lam` is the exact
    kept area. Any dtype works.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        mode: str = "batch",
        p: float = 1.0,
        keep_dominant: bool = False,
        spatial_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__(mode=mode, p=p, keep_dominant=keep_dominant, spatial_dims=spatial_dims)
        self.alpha = check_alpha(alpha)

    def box_bounds(self, lam, x, source, spatial_dims, generator):
        shape = tuple(x.shape[d] for d in spatial_dims)
        centre = saliency_peak(_channels_first(x.index_select(0, source), spatial_dims))
        size = torch.tensor(shape, device=lam.device, dtype=torch.float32)
        sides = (1.0 - lam.float()).clamp(0, 1).unsqueeze(1) ** (1.0 / len(shape)) * size
        return box_bounds_at(centre, sides, shape)


def _channels_first(x: Tensor, spatial_dims: tuple[int, ...]) -> Tensor:
    """(n, ...) with the given spatial dims -> (n, C, *S), C = all other dims flattened."""
    others = [d for d in range(1, x.ndim) if d not in spatial_dims]
    moved = x.permute(0, *others, *spatial_dims)
    return moved.reshape(x.shape[0], -1, *[x.shape[d] for d in spatial_dims])
