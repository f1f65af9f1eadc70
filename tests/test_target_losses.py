"""MixedTarget and the losses: soft targets, loss mixing == soft-target CE."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import mixlab
from mixlab import MixedTarget


def random_target(batch, classes, seed, soft=False):
    g = torch.Generator().manual_seed(seed)
    if soft:
        y = torch.rand(batch, classes, generator=g)
        y = y / y.sum(1, keepdim=True)
    else:
        y = torch.randint(0, classes, (batch,), generator=g)
    perm = torch.randperm(batch, generator=g)
    return MixedTarget(y, y[perm], torch.rand(batch, generator=g))


@given(
    batch=st.integers(1, 16),
    classes=st.integers(2, 12),
    seed=st.integers(0, 999),
    smoothing=st.floats(0, 1),
)
def test_soft_targets_rows_sum_to_one(batch, classes, seed, smoothing):
    t = random_target(batch, classes, seed)
    soft = t.soft(classes, smoothing=smoothing)
    assert soft.shape == (batch, classes)
    assert torch.allclose(soft.sum(1), torch.ones(batch), atol=1e-5)
    assert (soft >= 0).all()


@given(
    batch=st.integers(1, 16),
    classes=st.integers(2, 12),
    seed=st.integers(0, 999),
    smoothing=st.sampled_from([0.0, 0.1, 0.5]),
    soft=st.booleans(),
)
def test_loss_mixing_equals_soft_target_cross_entropy(batch, classes, seed, smoothing, soft):
    t = random_target(batch, classes, seed, soft=soft)
    logits = torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed + 1)) * 3
    mixed = mixlab.mixed_cross_entropy(logits, t, label_smoothing=smoothing, reduction="none")
    reference = F.cross_entropy(
        logits, t.soft(classes), label_smoothing=smoothing, reduction="none"
    )
    assert torch.allclose(mixed, reference, atol=1e-5)


def test_mixed_cross_entropy_takes_plain_labels_like_torch():
    logits = torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    for s in (0.0, 0.2):
        assert torch.allclose(
            mixlab.mixed_cross_entropy(logits, y, label_smoothing=s),
            F.cross_entropy(logits, y, label_smoothing=s),
        )
    probs = torch.softmax(torch.randn(8, 5), 1)
    assert torch.allclose(mixlab.mixed_cross_entropy(logits, probs), F.cross_entropy(logits, probs))


def test_mixed_cross_entropy_on_dense_predictions():
    logits = torch.randn(2, 4, 5, 6)
    y = torch.randint(0, 4, (2, 5, 6))
    assert torch.allclose(mixlab.mixed_cross_entropy(logits, y), F.cross_entropy(logits, y))


def test_unmixed_target_loss_is_plain_cross_entropy():
    logits = torch.randn(6, 3)
    y = torch.randint(0, 3, (6,))
    assert torch.allclose(
        mixlab.mixed_cross_entropy(logits, MixedTarget.unmixed(y)), F.cross_entropy(logits, y)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mix_loss_equals_mixed_cross_entropy_for_ce(reduction):
    t = random_target(10, 4, 0)
    logits = torch.randn(10, 4)
    wrapped = mixlab.mix_loss(torch.nn.CrossEntropyLoss(reduction="none"), reduction=reduction)
    assert torch.allclose(
        wrapped(logits, t), mixlab.mixed_cross_entropy(logits, t, reduction=reduction)
    )


def test_mix_loss_refuses_a_reduced_loss():
    t = random_target(10, 4, 0)
    with pytest.raises(ValueError, match="per-sample"):
        mixlab.mix_loss(torch.nn.CrossEntropyLoss())(torch.randn(10, 4), t)


def test_gradient_of_mixed_loss_matches_soft_target_loss():
    t = random_target(6, 5, 3)
    a = torch.randn(6, 5, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    mixlab.mixed_cross_entropy(a, t).backward()
    F.cross_entropy(b, t.soft(5)).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: random_target(4, 3, 0).soft(2), "class indices must be in"),
        (lambda: random_target(4, 3, 0).soft(), "num_classes"),
        (lambda: random_target(4, 3, 0, soft=True).soft(5), "num_classes"),
        (lambda: random_target(4, 3, 0).soft(3, smoothing=2.0), "smoothing"),
        (lambda: mixlab.mixed_cross_entropy(torch.randn(4, 3), random_target(5, 3, 0)), "target"),
        (
            lambda: mixlab.mixed_cross_entropy(torch.randn(4, 3), torch.arange(4), reduction="avg"),
            "reduction",
        ),
        (lambda: mixlab.mixed_cross_entropy(torch.randn(4, 3), torch.arange(3) % 3), "target"),
        (lambda: mixlab.mixed_cross_entropy(torch.randn(4, 3), random_target(4, 5, 0)), "target"),
    ],
)
def test_bad_targets_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_target_moves_between_devices():
    t = random_target(4, 3, 0)
    moved = t.to("cpu")
    assert torch.equal(moved.lam, t.lam) and len(moved) == 4
