"""MixUp (Zhang et al., "mixup: Beyond Empirical Risk Minimization")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mixlab import sampling
from mixlab._checks import check_alpha
from mixlab.methods.base import Mixer


class BetaLam:
    """lam ~ Beta(alpha, alpha): the draw MixUp, CutMix and SaliencyMix share."""

    alpha: float

    def draw_lam(
        self, n: int, generator: torch.Generator | None, device: torch.device, spatial_rank: int
    ) -> Tensor:
        return sampling.beta(self.alpha, self.alpha, n, generator=generator, device=device)


class MixUp(BetaLam, Mixer):
    """x = lam * x_i + (1 - lam) * x_j with lam ~ Beta(alpha, alpha).

    Args:
        alpha: Beta concentration (> 0); 1 gives uniform lam, small values push
            lam towards 0 and 1.
        mode, p, keep_dominant, spatial_dims: see `Mixer`. With `mode="elem"`,
            `keep_dominant=True` this is the fastai recipe.

    Takes any floating-point batch (B, ...), including features (B, F).
    """

    interpolates = True
    min_spatial_dims = 0

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
        self.host_batch = True
        self.alpha = check_alpha(alpha)

    def draw_masks(self, lam, x, source, spatial_dims, generator):
        return None, lam, None
