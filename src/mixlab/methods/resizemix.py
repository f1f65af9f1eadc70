"""ResizeMix (Qin et al., "ResizeMix: Mixing Data with Preserved Object Information
and True Labels")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mixlab.masks.box import box_bounds_from_lam, kept_fraction, outside_weight
from mixlab.methods.base import Mixer, MixParams, blend


def _check_scale(scale: Sequence[float]) -> tuple[float, float]:
    lo_hi = tuple(scale)
    if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] <= lo_hi[1] <= 1.0:
        raise ValueError(f"scale: expected (min, max) with 0 <= min <= max <= 1, got {scale!r}")
    return float(lo_hi[0]), float(lo_hi[1])


class ResizeMix(Mixer):
    """Paste a shrunken copy of the whole x_j into a random box of x_i.

    The box side is tau times the sample's side with tau ~ U(scale); lam is the
    exact area of x_i left outside the box (1 - tau^d up to pixel rounding).

    Args:
        scale: (min, max) range of tau (paper: (0.1, 0.8)).
        mode, p, keep_dominant, spatial_dims: see `Mixer`; keep_dominant caps
            the pasted area at one half.

    Resizing interpolates, so x must be floating point. Integer dense targets
    are resized by nearest neighbour.
    """

    interpolates = True

    def __init__(
        self,
        scale: Sequence[float] = (0.1, 0.8),
        *,
        mode: str = "batch",
        p: float = 1.0,
        keep_dominant: bool = False,
        spatial_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__(mode=mode, p=p, keep_dominant=keep_dominant, spatial_dims=spatial_dims)
        self.scale = _check_scale(scale)

    def draw_lam(self, n, generator, device, spatial_rank):
        # The paper draws the side ratio tau ~ U(scale); as an area fraction kept,
        # lam = 1 - tau^d, so keep_dominant and p act on areas like elsewhere.
        lo, hi = self.scale
        rng_device = generator.device if generator is not None else device
        tau = lo + (hi - lo) * torch.rand(n, generator=generator, device=rng_device).to(device)
        return 1.0 - tau**spatial_rank

    def draw_masks(self, lam, x, source, spatial_dims, generator):
        shape = tuple(x.shape[d] for d in spatial_dims)
        # The whole partner is pasted, so its box must lie wholly inside.
        lo, hi = box_bounds_from_lam(lam, shape, clip=False, generator=generator)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return outside_weight(lo, hi, shape, dtype), kept_fraction(lo, hi, shape), (lo, hi)

    def apply(self, x: Tensor, params: MixParams) -> Tensor:
        pasted = self._resample(x, params, params.spatial_dims, mode="bilinear")
        mask = self._mask_view(params.mask, x.ndim, params.spatial_dims)
        return blend(x, pasted, mask)

    def apply_dense(self, dense: Tensor, params: MixParams) -> Tensor:
        extra = dense.ndim - 1 - len(params.spatial_dims)
        dims = tuple(range(1 + extra, dense.ndim))
        work = dense if extra else dense.unsqueeze(1)
        work_dims = tuple(range(2, work.ndim))
        if dense.is_floating_point():
            pasted = self._resample(work, params, work_dims, mode="bilinear")
        else:
            pasted = self._resample(work.float(), params, work_dims, mode="nearest")
            pasted = pasted.round().to(dense.dtype)
        if not extra:
            pasted = pasted.squeeze(1)
        mask = self._mask_view(params.mask, dense.ndim, dims)
        return blend(dense, pasted, mask)

    @staticmethod
    def _resample(x: Tensor, params: MixParams, spatial_dims: tuple[int, ...], mode: str) -> Tensor:
        """The partner x[perm] shrunk into each box, for every position of x.

        One `grid_sample` over the batch handles per-sample box sizes: output
        position u inside box [lo, hi) reads the partner at normalised coordinate
        2 * (u + 0.5 - lo) / (hi - lo) - 1.
        """
        lo, hi = params.boxes
        batch = x.shape[0]
        channel_dims = [d for d in range(1, x.ndim) if d not in spatial_dims]
        # grid_sample wants (B, C, *S) with 2 or 3 spatial dims.
        order = [0, *channel_dims, *spatial_dims]
        src = x.index_select(0, params.perm).permute(order)
        sizes = src.shape[1 + len(channel_dims) :]
        src = src.reshape(batch, -1, *sizes)
        one_d = len(sizes) == 1
        if one_d:
            src = src.unsqueeze(-2)
        coords = []
        for axis, n_axis in enumerate(sizes):
            pos = torch.arange(n_axis, device=x.device, dtype=torch.float32) + 0.5
            width = (hi[:, axis] - lo[:, axis]).clamp(min=1).float().unsqueeze(1)
            coords.append(2 * (pos - lo[:, axis : axis + 1].float()) / width - 1)
        if one_d:
            coords.insert(0, torch.zeros(lo.shape[0], 1, device=x.device))
        # grid's last axis is (x, y[, z]) = reversed spatial order.
        mesh = []
        n_sp = len(coords)
        for axis, c in enumerate(coords):
            view = [c.shape[0]] + [1] * n_sp
            view[axis + 1] = c.shape[1]
            mesh.append(c.view(view))
        grid_shape = [batch] + [c.shape[1] for c in coords]
        grid = torch.stack([m.expand(grid_shape) for m in reversed(mesh)], dim=-1)
        out = F.grid_sample(
            src, grid.to(src.dtype), mode=mode, padding_mode="border", align_corners=False
        )
        if one_d:
            out = out.squeeze(-2)
        out = out.reshape(batch, *[x.shape[d] for d in channel_dims], *sizes)
        inverse = [order.index(d) for d in range(x.ndim)]
        return out.permute(inverse)
