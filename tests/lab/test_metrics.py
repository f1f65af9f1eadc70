"""Accuracy, NLL and ECE against a direct numpy computation; sums add over batches and shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mixlab.lab.distributed import shard_range
from mixlab.lab.metrics import (
    NUM_BINS,
    classification_metrics,
    evaluate_batches,
    finalize_metrics,
    metric_sums,
)


def numpy_metrics(logits: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS) -> dict:
    """The textbook definitions, sample by sample in float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(labels)
    pred = p.argmax(axis=1)
    conf = p.max(axis=1)
    correct = pred == labels
    nll = -np.log(p[np.arange(n), labels]).mean()
    ece = 0.0
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    for b in range(num_bins):
        lo, hi = edges[b], edges[b + 1]
        in_bin = (conf > lo) & (conf <= hi) if b > 0 else (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return {"acc": correct.mean(), "nll": nll, "ece": ece}


@st.composite
def logits_and_labels(draw):
    n = draw(st.integers(1, 64))
    k = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * scale
    if draw(st.booleans()):  # ties and equal logits are legal inputs too
        logits = np.round(logits)
    return logits, rng.integers(0, k, size=n)


def _away_from_bin_edges(logits: np.ndarray) -> bool:
    z = logits - logits.max(axis=1, keepdims=True)
    conf = (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).max(axis=1) * NUM_BINS
    return bool(np.all(np.abs(conf - np.round(conf)) > 1e-9))


@settings(max_examples=100, deadline=None)
@given(logits_and_labels())
def test_metrics_match_numpy_definitions(data):
    logits, labels = data
    assume(_away_from_bin_edges(logits))
    got = classification_metrics(torch.from_numpy(logits), torch.from_numpy(labels))
    want = numpy_metrics(logits, labels)
    assert got["acc"] == pytest.approx(want["acc"], abs=1e-12)
    assert got["nll"] == pytest.approx(want["nll"], rel=1e-9, abs=1e-9)
    assert got["ece"] == pytest.approx(want["ece"], abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(logits_and_labels(), st.integers(1, 4))
def test_sums_over_shards_equal_metrics_of_the_whole(data, world_size):
    logits, labels = data
    x, y = torch.from_numpy(logits), torch.from_numpy(labels)
    total = sum(
        metric_sums(x[a:b], y[a:b])
        for a, b in (shard_range(len(y), r, world_size) for r in range(world_size))
    )
    whole = classification_metrics(x, y)
    for key, value in finalize_metrics(total).items():
        assert value == pytest.approx(whole[key], abs=1e-12)


def test_shards_cover_every_index_exactly_once():
    for n in range(0, 23):
        for world in range(1, 6):
            covered = [i for r in range(world) for i in range(*shard_range(n, r, world))]
            assert covered == list(range(n))


def test_perfect_confident_predictions_have_zero_ece_and_full_accuracy():
    labels = torch.arange(10) % 4
    logits = torch.nn.functional.one_hot(labels, 4).double() * 100
    m = classification_metrics(logits, labels)
    assert m["acc"] == 1.0
    assert m["ece"] == pytest.approx(0.0, abs=1e-12)
    assert m["nll"] == pytest.approx(0.0, abs=1e-12)


def test_uniform_predictions_ece_is_gap_between_accuracy_and_confidence():
    labels = torch.tensor([0, 1, 2, 3, 0, 0, 0, 0])
    logits = torch.zeros(8, 4)  # confidence 1/4, argmax 0: accuracy 5/8
    m = classification_metrics(logits, labels)
    assert m["acc"] == pytest.approx(5 / 8)
    assert m["ece"] == pytest.approx(5 / 8 - 1 / 4)
    assert m["nll"] == pytest.approx(np.log(4))


def test_bad_shapes_are_rejected_with_the_shapes_in_the_message():
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        metric_sums(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        metric_sums(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="no samples"):
        finalize_metrics(metric_sums(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


def test_evaluate_batches_equals_metrics_of_concatenated_logits_and_restores_train_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))
    model.train()
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 50, 16)]
    got = evaluate_batches(model, batches, device=torch.device("cpu"))
    assert model.training
    model.eval()
    with torch.no_grad():
        want = classification_metrics(model(x), y)
    for key in ("acc", "nll", "ece"):
        assert got[key] == pytest.approx(want[key], abs=1e-6)
