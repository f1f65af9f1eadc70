"""DataLoader integration: mix each batch as it is collated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import default_collate


def collate(
    mixer: Callable, collate_fn: Callable[[list], Any] | None = None
) -> Callable[[list], Any]:
    """A DataLoader `collate_fn` that collates `(x, y)` samples, then mixes the batch.

    Args:
        mixer: any mixer or policy.
        collate_fn: how to build `(x, y)` from the sample list (default:
            `torch.utils.data.default_collate`).

    The batch comes out as `(x_mixed, MixedTarget)`; `pin_memory=True` works.
    Mixing runs in the worker processes on CPU, drawing from torch's default
    generator, which the DataLoader seeds differently in each worker. To mix on
    the GPU instead (faster for large batches), call the mixer in the training
    loop after moving the batch.
    """
    base = collate_fn if collate_fn is not None else default_collate

    def mixing_collate(samples: list) -> Any:
        batch = base(samples)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            size = len(batch) if hasattr(batch, "__len__") else "?"
            raise ValueError(
                "collate_fn: expected batches of (x, y), "
                f"got {type(batch).__name__} of length {size}"
            )
        return mixer(batch[0], batch[1])

    return mixing_collate
