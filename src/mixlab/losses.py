"""Losses for mixed batches: mix the loss, not the labels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mixlab.target import MixedTarget

REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")


def _per_sample_ce(log_probs: Tensor, y: Tensor) -> Tensor:
    """-log p(y) per sample: y int (B, *S) or float (B, K, *S)."""
    if y.is_floating_point():
        return -(y * log_probs).sum(dim=1)
    try:
        return -log_probs.gather(1, y.long().unsqueeze(1)).squeeze(1)
    except RuntimeError as error:  # an index out of [0, K): say which argument
        raise ValueError(
            f"target: class indices must be in [0, {log_probs.shape[1]}) for logits with "
            f"{log_probs.shape[1]} classes ({error})"
        ) from None


def mixed_cross_entropy(
    logits: Tensor,
    target: MixedTarget | Tensor,
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy of a mixed batch, computed by mixing the loss.

    `lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)` per sample, with no
    one-hot tensor. CE is linear in the target, so this equals soft-target CE
    against `target.soft(K, label_smoothing)` to float precision.

    Args:
        logits: (B, K) or (B, K, *S) for dense prediction.
        target: a MixedTarget, or plain targets (int (B,) / (B, *S) class
            indices, or float (B, K) soft targets), so one loop serves mixed and
            unmixed batches.
        label_smoothing: s in [0, 1]: targets become (1 - s) * y + s / K.
        reduction: "mean", "sum" or "none" (per sample).
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing!r}")
    if logits.ndim < 2:
        raise ValueError(f"logits: expected (B, K) or (B, K, *S), got shape {tuple(logits.shape)}")
    log_probs = torch.log_softmax(logits, dim=1)
    if isinstance(target, MixedTarget):
        if len(target) != logits.shape[0]:
            raise ValueError(
                f"target: expected {logits.shape[0]} samples (the logits' batch), got {len(target)}"
            )
        ce_a = _per_sample_ce(log_probs, target.y_a)
        ce_b = _per_sample_ce(log_probs, target.y_b)
        lam = target.lam.view(-1, *[1] * (ce_a.ndim - 1)).to(ce_a.dtype)
        loss = torch.lerp(ce_b, ce_a, lam)
    elif isinstance(target, Tensor):
        if target.shape[0] != logits.shape[0]:
            raise ValueError(
                f"target: expected {logits.shape[0]} samples (the logits' batch), "
                f"got shape {tuple(target.shape)}"
            )
        loss = _per_sample_ce(log_probs, target)
    else:
        raise TypeError(f"target: expected a MixedTarget or a tensor, got {type(target).__name__}")
    if label_smoothing:
        uniform = -log_probs.mean(dim=1)
        loss = (1.0 - label_smoothing) * loss + label_smoothing * uniform
    return _reduce(loss, reduction)


def mix_loss(
    loss_fn: Callable[[Tensor, Tensor], Tensor], *, reduction: str = "mean"
) -> Callable[[Tensor, MixedTarget | Tensor], Tensor]:
    """Wrap a per-sample loss so it takes MixedTargets (the fastai way).

    Returns `f(pred, target)` that computes
    `lam * loss_fn(pred, y_a) + (1 - lam) * loss_fn(pred, y_b)` per sample and
    reduces. `loss_fn` must return one loss per sample (e.g. built with
    `reduction="none"`). Mixing the loss equals the loss of the mixed target only
    for losses linear in the target (cross-entropy, BCE with logits); for others
    (e.g. MSE, focal) it is a different, though common, objective.
    """
    _check_reduction(reduction)

    def mixed(pred: Tensor, target: MixedTarget | Tensor) -> Tensor:
        if not isinstance(target, MixedTarget):
            return _reduce(loss_fn(pred, target), reduction)
        loss_a, loss_b = loss_fn(pred, target.y_a), loss_fn(pred, target.y_b)
        if loss_a.ndim == 0 or loss_a.shape[0] != len(target):
            raise ValueError(
                f"loss_fn: expected a per-sample loss of length {len(target)}, "
                f"got shape {tuple(loss_a.shape)}; build it with reduction='none'"
            )
        lam = target.lam.view(-1, *[1] * (loss_a.ndim - 1)).to(loss_a.dtype)
        return _reduce(torch.lerp(loss_b, loss_a, lam), reduction)

    return mixed
