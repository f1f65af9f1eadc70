"""The shared machinery of every mixing method.

A call first *draws* its parameters (partner permutation, lam, mask) and then
*applies* them, so the same draw can mix the images and a dense target, be
inspected in tests, or be replayed. Methods only say how lam is drawn and how a
mask follows from it; pairing modes, the mixing probability, keep_dominant,
validation and the apply step live here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mixlab import sampling
from mixlab._checks import check_labels, check_mode, check_probability
from mixlab.target import MixedTarget


@dataclass(frozen=True)
class MixParams:
    """One draw of a mixing method for a batch of B samples.

    Attributes:
        perm: (B,) int64: sample i is mixed with sample perm[i].
        lam: (B,) float32: exact fraction of sample i taken from x[i].
        mask: None for whole-sample interpolation (MixUp); else (1 or B, *S), bool
            or float, over the spatial dims: 1 where sample i keeps x[i]. Binary
            unless the method interpolates (soft FMix masks).
        spatial_dims: the dims of x the mask spans.
        boxes: for box methods, `(lo, hi)` each (1 or B, d) int64.
        box_slices: batch mode drawn on the host: the one box as a slice per
            spatial dim (mask is then None: the box is pasted by slicing).
        weight: batch-mode MixUp drawn on the host: lam as a Python float.
    """

    perm: Tensor
    lam: Tensor
    mask: Tensor | None
    spatial_dims: tuple[int, ...]
    boxes: tuple[Tensor, Tensor] | None = None
    box_slices: tuple[slice, ...] | None = None
    weight: float | None = None


@dataclass(frozen=True)
class Slots:
    """How draws map to samples: n independent draws, `index` (B,) picks each
    sample's draw (None: one draw per sample, in order), `source` (n,) the partner
    image each draw is made for, and whether a last "no mixing" slot is needed
    (the odd sample out in pair mode)."""

    n: int
    index: Tensor | None
    source: Tensor
    padded: bool


def resolve_spatial_dims(ndim: int, spatial_dims: Sequence[int] | None) -> tuple[int, ...]:
    """The dims of an ndim-dimensional batch a mask spans (default: after channel)."""
    if spatial_dims is None:
        dims = tuple(range(2, ndim))
    else:
        dims = tuple(sorted({d + ndim if d < 0 else d for d in spatial_dims}))
        if not all(1 <= d < ndim for d in dims):
            raise ValueError(
                f"spatial_dims: expected dims in [1, {ndim - 1}] for a {ndim}-dim batch, "
                f"got {tuple(spatial_dims)}"
            )
    if not 1 <= len(dims) <= 3:
        raise ValueError(
            f"x: expected (B, C, *S) with 1 to 3 spatial dims, got {ndim} dims "
            f"(spatial dims {dims})"
        )
    return dims


class Mixer:
    """Base class of the mixing methods.

    Args:
        mode: "batch" (one lam and mask for the batch), "elem" (per sample) or
            "pair" (per pair i <-> j, symmetric: both get the same lam and mask).
        p: probability of mixing, per batch in batch mode and per sample
            otherwise; unmixed samples get lam = 1.
        keep_dominant: the fastai rule lam = max(lam, 1 - lam).
        spatial_dims: dims of x the mask spans; default every dim after the
            channel dim; (1,) for token embeddings (B, L, E).

    Set `enabled = False` to pass batches through unmixed (e.g. last epochs).
    """

    #: True for methods that blend values and so need floating-point input.
    interpolates: bool = False
    #: Smallest number of spatial dims the method needs (MixUp: 0).
    min_spatial_dims: int = 1
    #: Batch mode may draw on the host when the randomness comes from a CPU
    #: generator (reading CPU draws costs no device sync): a scalar lam, or one box
    #: pasted with slices, instead of per-position masks. Same draws, same result;
    #: set False on an instance to force the device path.
    host_batch: bool = False

    def __init__(
        self,
        *,
        mode: str = "batch",
        p: float = 1.0,
        keep_dominant: bool = False,
        spatial_dims: Sequence[int] | None = None,
    ) -> None:
        self.mode = check_mode(mode)
        self.p = check_probability(p)
        if not isinstance(keep_dominant, bool):
            raise TypeError(f"keep_dominant: expected a bool, got {keep_dominant!r}")
        self.keep_dominant = keep_dominant
        if spatial_dims is not None:
            spatial_dims = tuple(spatial_dims)
            if not spatial_dims or not all(isinstance(d, int) for d in spatial_dims):
                raise ValueError(f"spatial_dims: expected a tuple of ints, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        self.enabled = True

    # --- what a method defines -------------------------------------------------

    def draw_lam(
        self, n: int, generator: torch.Generator | None, device: torch.device, spatial_rank: int
    ) -> Tensor:
        """n raw mixing ratios (before keep_dominant and p)."""
        raise NotImplementedError

    def host_box(
        self, lam: Tensor, x: Tensor, spatial_dims: tuple[int, ...], generator
    ) -> tuple[tuple[slice, ...] | None, float]:
        """For `host_batch` methods: the box (slices, or None for no box) for the
        CPU ratio `lam` (1,), and the exact lam it realises."""
        return None, float(lam)

    def draw_masks(
        self,
        lam: Tensor,
        x: Tensor,
        source: Tensor,
        spatial_dims: tuple[int, ...],
        generator: torch.Generator | None,
    ) -> tuple[Tensor | None, Tensor, tuple[Tensor, Tensor] | None]:
        """Masks (n, *S) for the n ratios `lam`, the exact lam they realise, and
        box bounds if the method uses boxes. `source` (n,) indexes the partner
        image each mask is for (SaliencyMix looks at it)."""
        raise NotImplementedError

    # --- the call --------------------------------------------------------------

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        dense: Tensor | None = None,
    ) -> tuple[Tensor, MixedTarget] | tuple[Tensor, MixedTarget, Tensor]:
        """Mix a batch.

        Args:
            x: (B, C, *S) with 1 to 3 spatial dims (MixUp also takes (B, F)).
            y: (B,) int class indices or (B, K) float soft / multi-hot targets.
            generator: randomness; the same generator state gives the same result.
            dense: optional per-position target (B, *S) or (B, K, *S), e.g. a
                segmentation map, mixed with the same mask.

        Returns:
            `(x_mixed, target)`, or `(x_mixed, target, dense_mixed)` with `dense`.
        """
        spatial_dims = self._check_input(x, y, dense, generator)
        if not self.enabled or x.shape[0] < 2:
            out = (x, MixedTarget.unmixed(y))
            return (*out, dense) if dense is not None else out
        params = self.sample(x, generator=generator, spatial_dims=spatial_dims)
        target = MixedTarget(y, y.index_select(0, params.perm), params.lam)
        x_mixed = self.apply(x, params)
        if dense is None:
            return x_mixed, target
        return x_mixed, target, self.apply_dense(dense, params)

    def _check_input(
        self, x: Tensor, y: Tensor, dense: Tensor | None, generator: torch.Generator | None
    ) -> tuple[int, ...]:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a tensor, got {type(x).__name__}")
        if x.ndim < 2 or x.shape[0] < 1:
            raise ValueError(f"x: expected a batch (B, C, *S), got shape {tuple(x.shape)}")
        if self.interpolates and not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"x: {name} interpolates values, so it needs a floating-point tensor, got {x.dtype}"
            )
        if x.ndim == 2 and self.min_spatial_dims == 0 and self.spatial_dims is None:
            spatial_dims: tuple[int, ...] = ()
        else:
            spatial_dims = resolve_spatial_dims(x.ndim, self.spatial_dims)
        check_labels(y, x.shape[0], x.device)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}"
            )
        if dense is not None:
            self._check_dense(x, dense, spatial_dims)
        return spatial_dims

    def _check_dense(self, x: Tensor, dense: Tensor, spatial_dims: tuple[int, ...]) -> None:
        if not isinstance(dense, Tensor):
            raise TypeError(f"dense: expected a tensor, got {type(dense).__name__}")
        if dense.device != x.device:
            raise ValueError(f"dense: expected a tensor on {x.device}, got {dense.device}")
        sizes = tuple(x.shape[d] for d in spatial_dims)
        n = len(sizes)
        if (
            dense.shape[:1] != x.shape[:1]
            or dense.shape[dense.ndim - n :] != sizes
            or not (n + 1 <= dense.ndim <= n + 2)
        ):
            raise ValueError(
                f"dense: expected shape (B, *S) or (B, K, *S) = ({x.shape[0]}, ..., "
                f"{', '.join(map(str, sizes))}), got {tuple(dense.shape)}"
            )

    # --- drawing ----------------------------------------------------------------

    def _slots(self, batch: int, generator: torch.Generator | None, device: torch.device):
        if self.mode == "pair":
            perm, index, first = sampling.pair_permutation(
                batch, generator=generator, device=device
            )
            slots = Slots(batch // 2, index, perm.index_select(0, first), batch % 2 == 1)
            return perm, slots
        perm = sampling.cyclic_permutation(batch, generator=generator, device=device)
        if self.mode == "batch":
            return perm, Slots(1, None, perm[:1], False)
        return perm, Slots(batch, None, perm, False)

    def sample(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        spatial_dims: tuple[int, ...] | None = None,
    ) -> MixParams:
        """Draw `(perm, lam, mask)` for the batch `x` without mixing it."""
        if spatial_dims is None:
            spatial_dims = self._check_input(
                x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device), None, generator
            )
        batch, device = x.shape[0], x.device
        rng_device = generator.device if generator is not None else device
        with torch.no_grad():
            perm, slots = self._slots(batch, generator, device)
            if self.host_batch and self.mode == "batch" and rng_device.type == "cpu":
                lam = self._draw_ratios(1, generator, torch.device("cpu"), spatial_dims)
                box, value = self.host_box(lam, x, spatial_dims, generator)
                lam = torch.full((batch,), value, device=device)
                weight = None if box is not None else value
                return MixParams(perm, lam, None, spatial_dims, box_slices=box, weight=weight)
            lam = self._draw_ratios(slots.n, generator, device, spatial_dims)
            mask, lam, boxes = self.draw_masks(lam, x, slots.source, spatial_dims, generator)
            if slots.padded:  # the odd one out in pair mode: keep it whole
                lam = torch.cat([lam, lam.new_ones(1)])
                if mask is not None:
                    mask = torch.cat([mask, torch.ones_like(mask[:1])])
                if boxes is not None:
                    boxes = tuple(torch.cat([b, torch.zeros_like(b[:1])]) for b in boxes)
            if slots.index is not None:
                lam = lam.index_select(0, slots.index)
                if mask is not None:
                    mask = mask.index_select(0, slots.index)
                if boxes is not None:
                    boxes = tuple(b.index_select(0, slots.index) for b in boxes)
            elif slots.n == 1:
                lam = lam.expand(batch).contiguous()
        return MixParams(perm, lam.float(), mask, spatial_dims, boxes)

    def _draw_ratios(self, n, generator, device, spatial_dims) -> Tensor:
        """n mixing ratios after keep_dominant and p."""
        lam = self.draw_lam(n, generator, device, len(spatial_dims))
        if self.keep_dominant:
            lam = torch.maximum(lam, 1.0 - lam)
        if self.p < 1.0:
            mixes = sampling.uniform(n, generator=generator, device=device) < self.p
            lam = torch.where(mixes, lam, torch.ones_like(lam))
        return lam

    # --- applying ---------------------------------------------------------------

    @staticmethod
    def _mask_view(mask: Tensor, ndim: int, spatial_dims: tuple[int, ...]) -> Tensor:
        """View a (n, *S) mask so it broadcasts against an ndim-dim batch."""
        shape = [mask.shape[0]] + [1] * (ndim - 1)
        for i, d in enumerate(spatial_dims):
            shape[d] = mask.shape[1 + i]
        return mask.view(shape)

    def apply(self, x: Tensor, params: MixParams) -> Tensor:
        """Mix x with the drawn parameters: where the mask is 1, keep x[i]."""
        if params.box_slices is not None or params.weight is not None:
            return self._apply_on_host_params(x, params, params.spatial_dims)
        if params.mask is None:
            weight = params.lam.view(-1, *[1] * (x.ndim - 1))
        else:
            weight = self._mask_view(params.mask, x.ndim, params.spatial_dims)
        return blend(x, x.index_select(0, params.perm), weight)

    @staticmethod
    def _apply_on_host_params(x: Tensor, params: MixParams, spatial_dims) -> Tensor:
        """Batch mode drawn on the host: paste one box by slicing, or blend by a scalar."""
        if params.box_slices is None:
            return blend(x, x.index_select(0, params.perm), params.weight)
        region = [slice(None)] * x.ndim
        for d, box in zip(spatial_dims, params.box_slices, strict=True):
            region[d] = box
        region = tuple(region)
        out = x.clone()
        out[region] = x[region].index_select(0, params.perm)
        return out

    def apply_dense(self, dense: Tensor, params: MixParams) -> Tensor:
        """Mix a dense target (B, *S) or (B, K, *S) with the same draw."""
        if params.box_slices is not None:
            extra = dense.ndim - 1 - len(params.spatial_dims)
            return self._apply_on_host_params(dense, params, tuple(range(1 + extra, dense.ndim)))
        if self.interpolates and not dense.is_floating_point():
            raise TypeError(
                f"dense: {type(self).__name__} blends values, so an integer dense "
                f"target ({dense.dtype}) cannot be mixed; pass float (B, K, *S) "
                f"probabilities instead"
            )
        if params.weight is not None:
            return blend(dense, dense.index_select(0, params.perm), params.weight)
        if params.mask is None:
            weight = params.lam.view(-1, *[1] * (dense.ndim - 1))
        else:
            extra = dense.ndim - 1 - len(params.spatial_dims)
            dims = tuple(range(1 + extra, dense.ndim))
            weight = self._mask_view(params.mask, dense.ndim, dims)
        return blend(dense, dense.index_select(0, params.perm), weight)

    def __repr__(self) -> str:
        keys = [k for k in vars(self) if not k.startswith("_") and k != "enabled"]
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys)
        return f"{type(self).__name__}({args})"


def blend(x: Tensor, partner: Tensor, weight: Tensor | float) -> Tensor:
    """weight * x + (1 - weight) * partner, reusing `partner`'s buffer when no
    gradient is needed.

    Floating point goes through `lerp`: with 0/1 weights it returns x or partner
    bit for bit (for finite values), and it is ~10x faster on CPU than
    `torch.where` with a broadcast mask. Integer data (uint8 images) can only be
    selected, so binary masks use `where` there.
    """
    if isinstance(weight, float):
        if x.requires_grad and torch.is_grad_enabled():
            return torch.lerp(partner, x, weight)
        return partner.lerp_(x, weight)
    if not (x.is_floating_point() or x.is_complex()):
        return torch.where(weight.bool(), x, partner)
    weight = weight.to(x.dtype)
    if x.requires_grad and torch.is_grad_enabled():
        return torch.lerp(partner, x, weight)
    # One fresh buffer per call: at ImageNet sizes allocation costs more than math.
    return partner.lerp_(x, weight)
