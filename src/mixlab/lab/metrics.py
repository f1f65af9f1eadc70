"""Test-set metrics: top-1 accuracy, negative log-likelihood and expected calibration error.

Every metric here is a ratio of sums, so the sums are what gets computed per batch and per rank:
`metric_sums` turns one batch of logits into a small float64 vector, vectors add (across batches,
and across ranks with one `all_reduce`), and `finalize_metrics` divides at the end. Under DDP each
rank evaluates a disjoint contiguous slice of the test set (`shard_range`), so every test sample is
counted exactly once: no padding, no DistributedSampler.

ECE uses `NUM_BINS` equal-width confidence bins; bin ``b`` holds confidences in
``(b / NUM_BINS, (b + 1) / NUM_BINS]`` (a confidence of exactly 0 goes to bin 0), and
``ECE = sum_b |correct_b - confidence_sum_b| / N``, which equals the usual
``sum_b (n_b / N) |acc_b - conf_b|``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixlab.lab.distributed import DistInfo, all_reduce_sum, shard_range

NUM_BINS = 15

# Sums vector layout: [count, correct, nll_sum, bin_count * B, bin_correct * B, bin_conf * B].
_HEAD = 3


def metric_sums(logits: Tensor, labels: Tensor, num_bins: int = NUM_BINS) -> Tensor:
    """Additive sufficient statistics for accuracy, NLL and ECE of one batch.

    Args:
        logits: (N, K) class scores, any float dtype (computed in float64).
        labels: (N,) int64 class indices.
        num_bins: number of equal-width confidence bins for ECE.

    Returns:
        float64 vector of length ``3 + 3 * num_bins`` on ``logits.device``; add vectors from several
        batches (or ranks) and pass the total to `finalize_metrics`.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits: expected shape (N, K), got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels: expected shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if logits.shape[0] == 0:  # an empty shard adds nothing
        return logits.new_zeros(_HEAD + 3 * num_bins, dtype=torch.float64)
    logp = torch.log_softmax(logits.detach().double(), dim=1)
    conf, pred = logp.max(dim=1)
    conf = conf.exp()
    correct = (pred == labels).double()
    nll = F.nll_loss(logp, labels, reduction="sum")
    bins = (conf * num_bins).ceil().long().sub_(1).clamp_(0, num_bins - 1)
    # Per-bin sums as a one-hot matmul: deterministic on every device, unlike index_add_.
    one_hot = F.one_hot(bins, num_bins).double()  # (N, bins)
    per_bin = one_hot.T @ torch.stack([torch.ones_like(conf), correct, conf], dim=1)  # (bins, 3)
    head = torch.stack([conf.new_tensor(float(labels.numel())), correct.sum(), nll])
    return torch.cat([head, per_bin.T.reshape(-1)])


def finalize_metrics(sums: Tensor, num_bins: int = NUM_BINS) -> dict[str, float]:
    """Turn summed `metric_sums` vectors into ``{"acc", "nll", "ece"}`` (Python floats).

    Args:
        sums: float64 vector of length ``3 + 3 * num_bins``, the sum of `metric_sums` outputs.
    """
    s = sums.detach().double().cpu()
    n = s[0].item()
    if n <= 0:
        raise ValueError("finalize_metrics: no samples were evaluated")
    bin_correct = s[_HEAD + num_bins : _HEAD + 2 * num_bins]
    bin_conf = s[_HEAD + 2 * num_bins :]
    return {
        "acc": s[1].item() / n,
        "nll": s[2].item() / n,
        "ece": (bin_correct - bin_conf).abs().sum().item() / n,
    }


def classification_metrics(
    logits: Tensor, labels: Tensor, num_bins: int = NUM_BINS
) -> dict[str, float]:
    """Accuracy, mean NLL and ECE of ``logits`` (N, K) against int64 ``labels`` (N,)."""
    return finalize_metrics(metric_sums(logits, labels, num_bins), num_bins)


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device,
    dist: DistInfo | None = None,
    autocast_dtype: torch.dtype | None = None,
    num_bins: int = NUM_BINS,
) -> dict[str, float]:
    """Evaluate ``model`` over ``batches`` of (x, y); under DDP sum over all ranks' batches.

    The caller gives each rank its own disjoint share of the test set (see `shard_range`); this
    function only adds up and, when ``dist`` is a multi-process group, all-reduces the sums once.
    The model is put in eval mode and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros(_HEAD + 3 * num_bins, dtype=torch.float64, device=device)
    try:
        for xb, yb in batches:
            if autocast_dtype is None:
                logits = model(xb)
            else:
                with torch.autocast(device_type=device.type, dtype=autocast_dtype):
                    logits = model(xb)
            total += metric_sums(logits.float(), yb, num_bins)
    finally:
        model.train(was_training)
    if dist is not None and dist.enabled:
        total = all_reduce_sum(total)
    return finalize_metrics(total, num_bins)


__all__ = [
    "NUM_BINS",
    "classification_metrics",
    "evaluate_batches",
    "finalize_metrics",
    "metric_sums",
    "shard_range",
]
