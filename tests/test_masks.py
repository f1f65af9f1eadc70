"""Pure mask functions: FMix against the paper's formula, boxes inside samples."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mixlab import masks
from mixlab.masks.box import box_bounds, box_bounds_from_lam, inside, kept_fraction
from mixlab.masks.fourier import EXACT_LIMIT, low_frequency_noise

shapes = st.one_of(
    st.tuples(st.integers(2, 300)),
    st.tuples(st.integers(2, 40), st.integers(2, 40)),
    st.tuples(st.integers(2, 12), st.integers(2, 12), st.integers(2, 12)),
)


def direct_fmix_noise(spectrum: np.ndarray, shape: tuple[int, ...], decay: float) -> np.ndarray:
    """The FMix paper's formula, written independently with numpy: a complex
    spectrum on the rfftn grid, each frequency scaled by 1/max(f, 1/max(shape))^d."""
    grids = np.meshgrid(
        *[np.fft.fftfreq(n) for n in shape[:-1]], np.fft.rfftfreq(shape[-1]), indexing="ij"
    )
    freq = np.sqrt(sum(g**2 for g in grids))
    scale = 1.0 / np.maximum(freq, 1.0 / max(shape)) ** decay
    complex_spec = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale
    axes = tuple(range(1, len(shape) + 1))
    return np.fft.irfftn(complex_spec, s=shape, axes=axes)


@pytest.mark.parametrize(
    "shape", [(50,), (33,), (12, 20), (20, 12), (7, 9), (6, 10, 8), (5, 7, 3), (16, 16)]
)
@pytest.mark.parametrize("decay", [1.0, 3.0, 5.0])
def test_fourier_noise_follows_the_papers_formula(shape, decay):
    g = torch.Generator().manual_seed(7)
    noise = low_frequency_noise(3, shape, decay_power=decay, generator=g).double().numpy()
    g.manual_seed(7)
    freq_shape = (*shape[:-1], shape[-1] // 2 + 1)
    spectrum = torch.randn((3, *freq_shape, 2), generator=g).double().numpy()
    expected = direct_fmix_noise(spectrum, shape, decay)
    # mixlab rescales the spectrum by a constant: compare up to that factor.
    ratio = np.abs(expected).max() / np.abs(noise).max()
    np.testing.assert_allclose(
        noise * ratio, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max()
    )


@pytest.mark.parametrize("shape", [(40,), (12, 20), (6, 10, 8)])
def test_fourier_mask_keeps_exactly_the_top_lam_fraction(shape):
    g = torch.Generator().manual_seed(3)
    lam = torch.tensor([0.0, 0.1, 0.37, 0.5, 0.83, 1.0])
    mask = masks.fourier(lam, shape, generator=g)
    g.manual_seed(3)
    noise = low_frequency_noise(len(lam), shape, generator=g).flatten(1)
    n = math.prod(shape)
    for i, lam_i in enumerate(lam.tolist()):
        k = round(lam_i * n)
        expected = torch.zeros(n, dtype=torch.bool)
        expected[noise[i].argsort(descending=True)[:k]] = True
        assert torch.equal(mask[i].flatten().bool(), expected)


@given(shape=shapes, lam=st.lists(st.floats(0, 1), min_size=1, max_size=5), seed=st.integers(0, 99))
def test_fourier_mask_mean_is_lam(shape, lam, seed):
    lam = torch.tensor(lam)
    mask = masks.fourier(lam, shape, generator=torch.Generator().manual_seed(seed))
    assert mask.shape == (len(lam), *shape)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    n = math.prod(shape)
    expected = (lam * n).round() / n
    assert torch.allclose(mask.flatten(1).mean(1), expected, atol=1e-6)


def test_large_fourier_masks_stay_within_a_fifth_of_a_percent_of_lam():
    shape = (224, 224)
    assert math.prod(shape) > EXACT_LIMIT
    lam = torch.linspace(0.02, 0.98, 16)
    mask = masks.fourier(lam, shape, generator=torch.Generator().manual_seed(0))
    assert (mask.flatten(1).mean(1) - lam).abs().max() < 0.005


@given(shape=shapes, max_soft=st.floats(0.01, 0.5), seed=st.integers(0, 99))
def test_soft_fourier_masks_keep_the_mean_and_soften_edges(shape, max_soft, seed):
    lam = torch.tensor([0.3, 0.5, 0.9])
    mask = masks.fourier(
        lam, shape, max_soft=max_soft, generator=torch.Generator().manual_seed(seed)
    )
    n = math.prod(shape)
    assert torch.allclose(mask.flatten(1).mean(1), (lam * n).round() / n, atol=1e-5)
    assert mask.min() >= 0 and mask.max() <= 1


def transitions(mask: torch.Tensor) -> float:
    """Mean number of 0/1 changes between neighbours, over all axes."""
    total = 0.0
    for dim in range(1, mask.ndim):
        total += (mask.diff(dim=dim) != 0).float().sum().item()
    return total / mask.shape[0]


@pytest.mark.parametrize("shape", [(256,), (48, 40), (16, 20, 12)])
def test_higher_decay_power_gives_smoother_masks(shape):
    lam = torch.full((64,), 0.5)
    counts = [
        transitions(
            masks.fourier(lam, shape, decay_power=d, generator=torch.Generator().manual_seed(0))
        )
        for d in (1.0, 3.0, 5.0)
    ]
    assert counts[0] > counts[1] > counts[2]


@given(shape=shapes, seed=st.integers(0, 999), clip=st.booleans())
def test_boxes_stay_inside_the_sample_and_area_is_exact(shape, seed, clip):
    g = torch.Generator().manual_seed(seed)
    lam = torch.rand(8, generator=g)
    lo, hi = box_bounds_from_lam(lam, shape, clip=clip, generator=g)
    size = torch.tensor(shape)
    assert (lo >= 0).all() and (hi <= size).all() and (lo <= hi).all()
    mask = ~inside(lo, hi, shape)
    assert torch.allclose(mask.float().flatten(1).mean(1), kept_fraction(lo, hi, shape))
    if not clip:  # unclipped boxes have the drawn side, rounded
        side = ((1 - lam).unsqueeze(1) ** (1 / len(shape)) * size).round().minimum(size)
        assert torch.equal(hi - lo, side.long())


def test_box_mask_function_is_one_outside_the_box():
    lam = torch.tensor([0.75, 1.0, 0.0])
    m = masks.box(lam, (16, 16), generator=torch.Generator().manual_seed(0))
    assert m.shape == (3, 16, 16)
    assert m[1].eq(1).all()  # lam = 1: no box


def test_clipped_box_at_the_corner_is_cut_by_the_border():
    sides = torch.tensor([[8.0, 8.0]])
    g = torch.Generator().manual_seed(0)
    lo, hi = box_bounds(sides, (16, 16), clip=True, generator=g)
    assert (hi - lo).le(8).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: masks.fourier(torch.tensor([0.5]), (4, 4, 4, 4)), "shape"),
        (lambda: masks.fourier(torch.tensor([1.5]), (8, 8)), "lam"),
        (lambda: masks.fourier(torch.tensor([[0.5]]), (8, 8)), "lam"),
        (lambda: masks.fourier(torch.tensor([0.5]), (8, 8), max_soft=0.7), "max_soft"),
        (lambda: masks.box(torch.tensor([0.5]), ()), "shape"),
    ],
)
def test_bad_mask_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
