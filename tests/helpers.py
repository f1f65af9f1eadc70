"""Shared test helpers."""

import torch

import mixlab

MASK_METHODS = {
    "CutMix": mixlab.CutMix,
    "FMix": mixlab.FMix,
    "ResizeMix": mixlab.ResizeMix,
    "SaliencyMix": mixlab.SaliencyMix,
}
ALL_METHODS = {"MixUp": mixlab.MixUp, **MASK_METHODS}
MODES = ("batch", "elem", "pair")


def indexed_batch(batch: int, channels: int, spatial: tuple[int, ...], dtype=torch.float32):
    """x[i] == i + 1 everywhere: a mixed value says which sample it came from."""
    index = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, *[1] * (1 + len(spatial)))
    return index.expand(batch, channels, *spatial).to(dtype).contiguous()


def fraction_from_self(x: torch.Tensor, x_mixed: torch.Tensor) -> torch.Tensor:
    """Per sample, the fraction of positions equal to the sample's own value.

    Values of distinct samples differ by at least 1; resized pastes (ResizeMix)
    are equal up to rounding, hence the tolerance.
    """
    return torch.isclose(x_mixed.float(), x.float(), atol=1e-4).float().flatten(1).mean(1)
