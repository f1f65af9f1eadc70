"""Input validation shared by the core.

Every check raises where the bad value enters, naming the argument, what was
expected and what came. Checks of tensor *values* never force a host sync on an
accelerator: on CPU they are free and raise a ValueError; elsewhere they become a
device-side assert (`torch._assert_async`), which fails the next synchronising call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MODES = ("batch", "elem", "pair")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return mode


def check_alpha(alpha: float, name: str = "alpha") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"{name}: expected a number > 0, got {alpha!r}")
    return float(alpha)


def check_probability(p: float, name: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {p!r}")
    return float(p)


def check_value(ok: Tensor, message: str) -> None:
    """Assert that the boolean tensor `ok` is all true without a host sync off-CPU."""
    if ok.device.type == "cpu":
        if not bool(ok.all()):
            raise ValueError(message)
    else:
        torch._assert_async(ok.all(), message)


def check_spatial_shape(shape: Sequence[int], name: str = "shape") -> tuple[int, ...]:
    shape = tuple(shape)
    if not 1 <= len(shape) <= 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"{name}: expected 1 to 3 positive sizes, got {shape!r}")
    return shape


def check_lam_vector(lam: Tensor, name: str = "lam") -> Tensor:
    if not isinstance(lam, Tensor) or lam.ndim != 1 or not lam.is_floating_point():
        got = f"{lam.dtype} tensor of shape {tuple(lam.shape)}" if isinstance(lam, Tensor) else lam
        raise ValueError(f"{name}: expected a (B,) floating-point tensor, got {got!r}")
    check_value((lam >= 0) & (lam <= 1), f"{name}: expected values in [0, 1]")
    return lam


def check_labels(y: Tensor, batch: int, device: torch.device, name: str = "y") -> Tensor:
    """Class indices (B,) int64 or soft / multi-hot targets (B, K) float."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(y).__name__}")
    if y.device != device:
        raise ValueError(
            f"{name}: expected a tensor on {device} (the batch's device), got {y.device}"
        )
    if y.shape[:1] != (batch,):
        raise ValueError(
            f"{name}: expected length {batch} (the batch size), got shape {tuple(y.shape)}"
        )
    if y.is_floating_point():
        if y.ndim != 2:
            raise ValueError(f"{name}: soft targets must be (B, K), got shape {tuple(y.shape)}")
        check_value(
            (y >= 0).all() & ~torch.isnan(y).any(),
            f"{name}: soft targets must be non-negative and not NaN",
        )
    elif y.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        if y.ndim != 1:
            raise ValueError(f"{name}: class indices must be (B,), got shape {tuple(y.shape)}")
        # Index values are checked where they are used (`soft`, the losses), not on
        # every mixing call: mixing only moves them around.
    else:
        raise TypeError(f"{name}: expected int class indices or float soft targets, got {y.dtype}")
    return y
