"""Mixing methods: exact lam, modes, dtypes, dense targets, gradients, errors."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import mixlab
from tests.helpers import ALL_METHODS, MASK_METHODS, MODES, fraction_from_self, indexed_batch

spatial_shapes = st.one_of(
    st.tuples(st.integers(3, 40)),
    st.tuples(st.integers(3, 20), st.integers(3, 20)),
    st.tuples(st.integers(3, 9), st.integers(3, 9), st.integers(3, 9)),
)


@pytest.mark.parametrize("name", list(MASK_METHODS))
@pytest.mark.parametrize("mode", MODES)
@given(batch=st.integers(2, 9), spatial=spatial_shapes, seed=st.integers(0, 10_000))
def test_mask_mean_equals_target_lam(name, mode, batch, spatial, seed):
    x = indexed_batch(batch, 2, spatial)
    y = torch.arange(batch)
    g = torch.Generator().manual_seed(seed)
    x_mixed, target = MASK_METHODS[name](mode=mode)(x, y, generator=g)
    assert target.lam.shape == (batch,) and target.lam.dtype == torch.float32
    assert torch.allclose(fraction_from_self(x, x_mixed), target.lam, atol=1e-6)
    # What is not from x[i] is from the partner named by y_b.
    partner = (target.y_b + 1).float().view(batch, *[1] * (x.ndim - 1))
    assert (
        torch.isclose(x_mixed, x, atol=1e-4)
        | torch.isclose(x_mixed, partner.expand_as(x), atol=1e-4)
    ).all()


@pytest.mark.parametrize("mode", MODES)
@given(batch=st.integers(2, 9), seed=st.integers(0, 10_000), features=st.integers(1, 6))
def test_mixup_is_lam_weighted_average(mode, batch, seed, features):
    x = torch.randn(batch, features, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(batch)
    x_mixed, target = mixlab.MixUp(mode=mode)(x, y, generator=torch.Generator().manual_seed(seed))
    lam = target.lam.unsqueeze(1)
    expected = lam * x + (1 - lam) * x[target.y_b]
    assert torch.allclose(x_mixed, expected, atol=1e-6)


def test_pair_mode_is_symmetric():
    x = indexed_batch(9, 1, (12, 12))
    for cls in ALL_METHODS.values():
        p = cls(mode="pair").sample(x, generator=torch.Generator().manual_seed(0))
        assert torch.equal(p.perm[p.perm], torch.arange(9))
        assert torch.equal(p.lam[p.perm], p.lam)
        if p.mask is not None:
            assert torch.equal(p.mask[p.perm], p.mask)
        lone = p.perm == torch.arange(9)  # the odd one out stays whole
        assert lone.sum() == 1 and p.lam[lone].eq(1).all()


@pytest.mark.parametrize("name", list(ALL_METHODS))
@pytest.mark.parametrize("mode", MODES)
def test_same_generator_state_same_batch(name, mode):
    x = torch.randn(6, 3, 10, 14)
    y = torch.randint(0, 5, (6,))
    seg = torch.randint(0, 3, (6, 10, 14))
    mixer = ALL_METHODS[name](mode=mode)
    first = mixer(x, y, generator=torch.Generator().manual_seed(5))
    second = mixer(x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1].lam, second[1].lam) and torch.equal(first[1].y_b, second[1].y_b)
    if name != "MixUp":
        d1 = mixer(x, y, generator=torch.Generator().manual_seed(5), dense=seg)[2]
        d2 = mixer(x, y, generator=torch.Generator().manual_seed(5), dense=seg)[2]
        assert torch.equal(d1, d2)


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_elem_mode_draws_a_lam_per_sample(name):
    x = torch.randn(32, 1, 64, 64)
    _, target = ALL_METHODS[name](mode="elem")(x, torch.zeros(32, dtype=torch.long))
    assert target.lam.unique().numel() > 16


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_mixup_lam_follows_beta(alpha):
    mixer = mixlab.MixUp(alpha, mode="elem")
    x = torch.randn(4000, 1)
    _, target = mixer(
        x, torch.zeros(4000, dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    assert stats.kstest(target.lam.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_fmix_lam_follows_beta_and_reformulate_shifts_it():
    x = torch.randn(2000, 1, 24, 24)
    y = torch.zeros(2000, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    _, target = mixlab.FMix(1.0, mode="elem")(x, y, generator=g)
    assert stats.kstest(target.lam.numpy(), stats.beta(1, 1).cdf).pvalue > 1e-3
    _, target = mixlab.FMix(1.0, mode="elem", reformulate=True)(x, y, generator=g)
    assert stats.kstest(target.lam.numpy(), stats.beta(2, 1).cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_keep_dominant_keeps_lam_at_least_half(name):
    x = torch.randn(64, 1, 16, 16)
    _, target = ALL_METHODS[name](mode="elem", keep_dominant=True)(
        x, torch.zeros(64, dtype=torch.long)
    )
    # Boxes are clipped and rounded, so allow one row of pixels below one half.
    assert (target.lam >= 0.5 - 1 / 16).all()


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_probability_zero_leaves_the_batch_unmixed(name):
    x = torch.randn(8, 2, 12, 12)
    x_mixed, target = ALL_METHODS[name](mode="elem", p=0.0)(x, torch.arange(8))
    assert torch.equal(x_mixed, x) and target.lam.eq(1).all()


def test_probability_half_mixes_about_half_the_samples():
    x = torch.randn(2000, 1, 8, 8)
    _, target = mixlab.CutMix(mode="elem", p=0.5)(
        x, torch.zeros(2000, dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    unmixed = target.lam.eq(1).float().mean().item()
    assert 0.45 < unmixed < 0.55


@pytest.mark.parametrize("name", list(ALL_METHODS))
@pytest.mark.parametrize("mode", MODES)
def test_batch_of_one_comes_back_unmixed(name, mode):
    x = torch.randn(1, 3, 8, 8)
    x_mixed, target = ALL_METHODS[name](mode=mode)(x, torch.tensor([2]))
    assert torch.equal(x_mixed, x) and torch.equal(target.lam, torch.ones(1))


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_disabled_mixer_passes_through(name):
    mixer = ALL_METHODS[name]()
    mixer.enabled = False
    x = torch.randn(4, 3, 8, 8)
    x_mixed, target = mixer(x, torch.arange(4))
    assert x_mixed is x and target.lam.eq(1).all()


@pytest.mark.parametrize("name", ["CutMix", "FMix", "SaliencyMix"])
@pytest.mark.parametrize("mode", MODES)
def test_masking_methods_mix_uint8(name, mode):
    x = indexed_batch(7, 3, (16, 16), dtype=torch.uint8)
    x_mixed, target = MASK_METHODS[name](mode=mode)(x, torch.arange(7))
    assert x_mixed.dtype == torch.uint8
    assert torch.allclose(fraction_from_self(x, x_mixed), target.lam)


@pytest.mark.parametrize("cls", [mixlab.MixUp, mixlab.ResizeMix])
def test_interpolating_methods_refuse_integer_input(cls):
    with pytest.raises(TypeError, match="floating-point"):
        cls()(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4))


def test_soft_fmix_refuses_integer_input():
    with pytest.raises(TypeError, match="floating-point"):
        mixlab.FMix(max_soft=0.1)(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4))


@pytest.mark.parametrize("name", list(MASK_METHODS))
@pytest.mark.parametrize("mode", MODES)
def test_dense_targets_follow_the_same_mask(name, mode):
    x = indexed_batch(7, 3, (12, 10))
    seg = torch.arange(1, 8).view(7, 1, 1).expand(7, 12, 10).contiguous()
    x_mixed, target, seg_mixed = MASK_METHODS[name](mode=mode)(x, torch.arange(7), dense=seg)
    assert seg_mixed.dtype == seg.dtype
    # (ResizeMix's bilinear paste of a constant image is exact up to rounding.)
    assert torch.allclose(seg_mixed.float(), x_mixed[:, 0], atol=1e-4)


def test_dense_soft_targets_with_a_class_axis():
    x = indexed_batch(5, 3, (8, 8))
    probs = indexed_batch(5, 4, (8, 8))
    x_mixed, _, probs_mixed = mixlab.FMix(mode="elem")(x, torch.arange(5), dense=probs)
    assert torch.equal(probs_mixed, x_mixed[:, :1].expand_as(probs_mixed))


def test_mixup_refuses_integer_dense_targets():
    with pytest.raises(TypeError, match="dense"):
        mixlab.MixUp()(
            torch.randn(4, 3, 8, 8), torch.arange(4), dense=torch.zeros(4, 8, 8, dtype=torch.long)
        )


def test_mixup_mixes_float_dense_targets():
    x = torch.randn(4, 3, 8, 8)
    dense = torch.rand(4, 5, 8, 8)
    _, target, d = mixlab.MixUp(mode="elem")(
        x, torch.arange(4), dense=dense, generator=torch.Generator().manual_seed(0)
    )
    lam = target.lam.view(4, 1, 1, 1)
    assert torch.allclose(d, lam * dense + (1 - lam) * dense[target.y_b])


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_gradients_flow_to_the_input(name):
    x = torch.randn(6, 3, 8, 8, requires_grad=True)
    x_mixed, _ = ALL_METHODS[name](mode="elem")(x, torch.arange(6))
    x_mixed.sum().backward()
    # Every position of the batch goes somewhere, so each sample gets gradient.
    assert x.grad is not None and x.grad.abs().flatten(1).sum(1).gt(0).all()


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_token_embeddings_are_masked_along_the_sequence_only(name):
    x = torch.randn(5, 30, 8)
    x_mixed, target = ALL_METHODS[name](mode="elem", spatial_dims=(1,))(x, torch.arange(5))
    if name in ("MixUp", "ResizeMix"):  # they blend values, not whole tokens
        return
    from_self = (x_mixed == x).all(dim=2) | (x_mixed == x[target.y_b]).all(dim=2)
    assert from_self.all()  # whole tokens are taken, never parts of one
    assert torch.allclose((x_mixed == x).all(dim=2).float().mean(1), target.lam)


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_soft_and_multi_hot_targets_are_carried(name):
    x = torch.randn(4, 3, 8, 8)
    y = torch.rand(4, 6)
    _, target = ALL_METHODS[name]()(x, y)
    assert torch.equal(target.y_a, y) and torch.equal(
        target.y_b,
        y[
            target.y_b.argmax(1).new_tensor(
                [int((y == row).all(1).nonzero()[0]) for row in target.y_b]
            )
        ],
    )


def test_cutmix_without_correct_lam_places_boxes_wholly_inside():
    x = indexed_batch(64, 1, (20, 20))
    mixer = mixlab.CutMix(correct_lam=False, mode="elem")
    p = mixer.sample(x, generator=torch.Generator().manual_seed(0))
    lo, hi = p.boxes
    assert (lo >= 0).all() and (hi <= 20).all()
    side = ((1 - p.lam) * 400).sqrt()
    assert torch.allclose((hi - lo).float()[:, 0], side, atol=0.51)


def test_cutmix_minmax_draws_sides_in_range():
    x = torch.randn(256, 1, 50, 50)
    p = mixlab.CutMix(minmax=(0.2, 0.4), correct_lam=False, mode="elem").sample(x)
    sides = (p.boxes[1] - p.boxes[0]).float() / 50
    assert sides.min() >= 0.2 - 0.02 and sides.max() <= 0.4 + 0.02


def test_saliencymix_centres_the_box_on_the_salient_spot():
    from mixlab.methods.saliencymix import saliency_peak

    x = torch.zeros(2, 1, 32, 32)
    x[0, 0, 20:24, 6:10] = 1.0  # a lone bright square in sample 0
    # Sample 1's partner is sample 0; its box must sit on the square.
    p = mixlab.SaliencyMix(mode="elem").sample(x, generator=torch.Generator().manual_seed(0))
    i = int((p.perm == 0).nonzero()[0])
    lo, hi = p.boxes[0][i], p.boxes[1][i]
    assert (lo <= torch.tensor([20, 6])).all() and (hi >= torch.tensor([24, 10])).all(), (lo, hi)
    peak = saliency_peak(x[:1])[0]
    assert abs(peak[0] - 22) <= 2 and abs(peak[1] - 8) <= 2, peak


@pytest.mark.parametrize("dims", [(16,), (12, 14), (6, 7, 5)])
def test_resizemix_pastes_a_shrunken_partner(dims):
    x = torch.randn(4, 2, *dims)
    p = mixlab.ResizeMix(scale=(0.5, 0.5), mode="elem").sample(
        x, generator=torch.Generator().manual_seed(0)
    )
    x_mixed = mixlab.ResizeMix().apply(x, p)
    n = math.prod(dims)
    assert torch.allclose(1 - p.lam, ((p.boxes[1] - p.boxes[0]).prod(1).float() / n))
    mask = p.mask.view(4, 1, *dims).bool()
    assert torch.equal(torch.where(mask, x_mixed, x), x)  # outside the box: untouched


def test_resizemix_with_full_scale_is_the_partner():
    x = torch.randn(3, 2, 8, 8)
    x_mixed, target = mixlab.ResizeMix(scale=(1.0, 1.0))(x, torch.arange(3))
    assert target.lam.eq(0).all()
    assert torch.allclose(x_mixed, x[target.y_b], atol=1e-5)


BAD_CALLS = [
    (lambda: mixlab.MixUp(alpha=0), ValueError, "alpha"),
    (lambda: mixlab.FMix(alpha=-1), ValueError, "alpha"),
    (lambda: mixlab.CutMix(p=1.5), ValueError, "p:"),
    (lambda: mixlab.CutMix(mode="sample"), ValueError, "mode"),
    (lambda: mixlab.FMix(decay_power=0), ValueError, "decay_power"),
    (lambda: mixlab.CutMix(minmax=(0.5, 0.2)), ValueError, "minmax"),
    (lambda: mixlab.ResizeMix(scale=(0.9, 0.2)), ValueError, "scale"),
    (lambda: mixlab.FMix()(torch.randn(2, 3, 4, 4, 4, 4), torch.arange(2)), ValueError, "spatial"),
    (lambda: mixlab.CutMix()(torch.randn(2, 3), torch.arange(2)), ValueError, "spatial"),
    (
        lambda: mixlab.CutMix()(torch.randn(4, 3, 8, 8), torch.arange(3)),
        ValueError,
        "y: expected length 4",
    ),
    (lambda: mixlab.CutMix()(torch.randn(4, 3, 8, 8), torch.arange(4).float()), ValueError, "y"),
    (
        lambda: mixlab.CutMix()(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, -1, 2]))[1].soft(3),
        ValueError,
        "class indices must be in",
    ),
    (
        lambda: mixlab.MixUp()(torch.randn(2, 3), torch.tensor([[0.5, float("nan")], [1.0, 0.0]])),
        ValueError,
        "NaN",
    ),
    (
        lambda: mixlab.MixUp()(torch.randn(2, 3), torch.tensor([[0.5, -0.5], [1.0, 0.0]])),
        ValueError,
        "non-negative",
    ),
    (
        lambda: mixlab.MixUp()(torch.randn(2, 3), torch.arange(2, device="meta")),
        ValueError,
        "device",
    ),
    (
        lambda: mixlab.FMix(spatial_dims=(3,))(torch.randn(2, 5, 8), torch.arange(2)),
        ValueError,
        "spatial_dims",
    ),
    (
        lambda: mixlab.FMix()(torch.randn(2, 3, 8, 8), torch.arange(2), dense=torch.zeros(2, 7, 8)),
        ValueError,
        "dense",
    ),
    (lambda: mixlab.FMix()([1, 2], torch.arange(2)), TypeError, "x"),
    (lambda: mixlab.MixUp(keep_dominant="yes"), TypeError, "keep_dominant"),
]


@pytest.mark.parametrize("call, error, match", BAD_CALLS)
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("cls", [mixlab.MixUp, mixlab.CutMix])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize(
    "kwargs", [{}, {"keep_dominant": True}, {"p": 0.5}, {"correct_lam": False}]
)
def test_host_and_device_batch_paths_agree(cls, dtype, kwargs):
    """Batch mode with a CPU generator pastes by slicing; the device path (taken
    with accelerator generators) must give the same batch from the same draws."""
    if cls is mixlab.MixUp and (dtype == torch.uint8 or "correct_lam" in kwargs):
        return
    x = (torch.rand(7, 3, 9, 11) * 200).to(dtype)
    y = torch.arange(7)
    seg = torch.randint(0, 4, (7, 9, 11))
    for seed in range(20):
        host = cls(**kwargs)
        device = cls(**kwargs)
        device.host_batch = False
        dense = seg if cls is mixlab.CutMix else seg.float()
        a = host(x, y, generator=torch.Generator().manual_seed(seed), dense=dense)
        b = device(x, y, generator=torch.Generator().manual_seed(seed), dense=dense)
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
        assert torch.equal(a[1].lam, b[1].lam) and torch.equal(a[1].y_b, b[1].y_b)
