"""FMix (Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mixlab import sampling
from mixlab._checks import check_alpha
from mixlab.masks.fourier import fourier_masks
from mixlab.methods.base import Mixer


class FMix(Mixer):
    """Mix with binary masks cut from low-frequency noise.

    Args:
        alpha: lam ~ Beta(alpha, alpha).
        decay_power: how fast the noise spectrum decays (paper: 3); higher gives
            smoother masks with fewer, larger blobs.
        max_soft: > 0 softens mask edges over up to this fraction of positions
            each side of the threshold, keeping the mean (needs float input).
        reformulate: draw lam from Beta(alpha + 1, alpha), the paper's
            reformulation of MSDA as a (biased) objective.
        mode, p, keep_dominant, spatial_dims: see `Mixer`.

    Works for 1D (audio, text: `spatial_dims=(1,)` on (B, L, E)), 2D and 3D
    inputs of any sizes; binary masks work for any dtype. `target.lam` is each
    mask's exact mean.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        decay_power: float = 3.0,
        max_soft: float = 0.0,
        reformulate: bool = False,
        mode: str = "batch",
        p: float = 1.0,
        keep_dominant: bool = False,
        spatial_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__(mode=mode, p=p, keep_dominant=keep_dominant, spatial_dims=spatial_dims)
        self.alpha = check_alpha(alpha)
        self.decay_power = check_alpha(decay_power, "decay_power")
        if not 0.0 <= max_soft <= 0.5:
            raise ValueError(f"max_soft: expected a value in [0, 0.5], got {max_soft!r}")
        self.max_soft = float(max_soft)
        self.reformulate = bool(reformulate)
        # Soft masks blend values.
        self.interpolates = self.max_soft > 0

    def draw_lam(
        self, n: int, generator: torch.Generator | None, device: torch.device, spatial_rank: int
    ) -> Tensor:
        b = self.alpha
        a = self.alpha + 1.0 if self.reformulate else self.alpha
        return sampling.beta(a, b, n, generator=generator, device=device)

    def draw_masks(self, lam, x, source, spatial_dims, generator):
        shape = tuple(x.shape[d] for d in spatial_dims)
        mask = fourier_masks(lam, shape, self.decay_power, self.max_soft, generator, x.device)
        # Report what the mask really keeps, not what was asked for.
        dims = tuple(range(1, mask.ndim))
        exact = mask.sum(dims, dtype=torch.float32) / mask[0].numel()
        return mask, exact, None
