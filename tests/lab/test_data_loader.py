"""DeviceLoader and its batched crop/flip: exactness against a per-sample reference, seeding."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mixlab.lab.data import AugmentConfig, DeviceLoader, crop_flip, draw_crop_flip, load_dataset

FAST = settings(max_examples=30, deadline=None)


def reference_crop_flip(x, offsets, flips, config):
    """Pad for real with F.pad, slice each sample's window, mirror it: the obvious way."""
    p, size = config.crop_padding, x.shape[2:]
    mode = "reflect" if config.padding_mode == "reflect" else "constant"
    padded = F.pad(x.double(), [p] * (2 * len(size)), mode=mode)
    out = []
    for b in range(len(x)):
        window = padded[b][
            (
                slice(None),
                *(slice(o, o + n) for o, n in zip(offsets[b].tolist(), size, strict=True)),
            )
        ]
        out.append(window.flip(-1) if flips is not None and flips[b] else window)
    return torch.stack(out).to(x.dtype)


def candidates(source, config):
    """Every crop/flip of one (C, *S) sample the config allows, as one (K, C, *S) tensor."""
    d = source.ndim - 1
    flips = (False, True) if config.flip else (False,)
    combos = list(
        itertools.product(itertools.product(range(2 * config.crop_padding + 1), repeat=d), flips)
    )
    offsets = torch.tensor([off for off, _ in combos])
    flip = torch.tensor([f for _, f in combos])
    return reference_crop_flip(source.expand(len(combos), *source.shape), offsets, flip, config)


def is_candidate(image, source, config):
    return bool((candidates(source, config) == image).flatten(1).all(1).any())


def uint8_data(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)


# ---- crop_flip


@FAST
@given(
    size=st.lists(st.integers(3, 7), min_size=1, max_size=3),
    channels=st.integers(1, 3),
    batch=st.integers(1, 6),
    padding=st.integers(0, 2),
    flip=st.booleans(),
    mode=st.sampled_from(["reflect", "zeros"]),
    seed=st.integers(0, 2**16),
)
def test_crop_flip_equals_padding_then_slicing_each_sample(
    size, channels, batch, padding, flip, mode, seed
):
    config = AugmentConfig(crop_padding=padding, flip=flip, padding_mode=mode)
    x = uint8_data(batch, (channels, *size), seed)
    g = torch.Generator().manual_seed(seed)
    offsets, flips = draw_crop_flip(batch, len(size), config, g)
    assert offsets.shape == (batch, len(size)) and int(offsets.max()) <= 2 * padding
    assert torch.equal(
        crop_flip(x, offsets, flips, config), reference_crop_flip(x, offsets, flips, config)
    )


def test_crop_flip_rejects_reflect_padding_as_large_as_the_image():
    x = uint8_data(2, (1, 4, 4))
    config = AugmentConfig(crop_padding=4)
    with pytest.raises(ValueError, match="reflect padding"):
        crop_flip(x, torch.zeros(2, 2, dtype=torch.long), None, config)


# ---- DeviceLoader: order, seeding, batch sizes


def ids_loader(n, batch_size, **kwargs):
    """Labels are the sample indices, so every batch says which samples it holds."""
    return DeviceLoader(uint8_data(n, (1, 4, 4)), torch.arange(n), batch_size, **kwargs)


@FAST
@given(n=st.integers(1, 50), batch_size=st.integers(1, 60), shuffle=st.booleans())
def test_every_sample_once_per_epoch_without_drop_last(n, batch_size, shuffle):
    loader = ids_loader(n, batch_size, shuffle=shuffle, drop_last=False)
    batches = [yb for _, yb in loader]
    assert len(batches) == len(loader) == -(-n // batch_size)
    assert all(len(b) == batch_size for b in batches[:-1]) and 1 <= len(batches[-1]) <= batch_size
    seen = torch.cat(batches)
    assert torch.equal(seen.sort().values, torch.arange(n))
    assert torch.equal(seen, torch.arange(n)) or shuffle


@FAST
@given(n=st.integers(1, 50), batch_size=st.integers(1, 50))
def test_drop_last_gives_only_full_batches_without_repeats(n, batch_size):
    if batch_size > n:
        with pytest.raises(ValueError, match="no batches"):
            ids_loader(n, batch_size)
        return
    loader = ids_loader(n, batch_size, drop_last=True)
    batches = [yb for _, yb in loader]
    assert len(batches) == len(loader) == n // batch_size
    assert all(len(b) == batch_size for b in batches)
    seen = torch.cat(batches)
    assert len(torch.unique(seen)) == len(seen)


def epoch_batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(xb.clone(), yb.clone()) for xb, yb in loader]


def same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


def test_same_seed_and_epoch_give_identical_batches():
    config = AugmentConfig(crop_padding=2, flip=True)
    a = ids_loader(40, 8, augment=config, seed=7)
    b = ids_loader(40, 8, augment=config, seed=7)
    assert same(epoch_batches(a, 3), epoch_batches(b, 3))
    assert not same(epoch_batches(a, 3), epoch_batches(a, 4))  # another epoch, another order
    assert not same(
        epoch_batches(a, 3), epoch_batches(ids_loader(40, 8, augment=config, seed=8), 3)
    )


def test_consecutive_passes_advance_the_epoch_and_set_epoch_replays():
    loader = ids_loader(30, 10)
    first = [yb for _, yb in loader]
    second = [yb for _, yb in loader]
    assert loader.epoch == 2
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    loader.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, [yb for _, yb in loader], strict=True))


# ---- DeviceLoader: augmentation preserves labels and shapes


@pytest.mark.parametrize(
    ("shape", "config"),
    [
        ((3, 6, 6), AugmentConfig(crop_padding=2, flip=True, padding_mode="reflect")),
        ((1, 5, 5), AugmentConfig(crop_padding=1, flip=False, padding_mode="zeros")),
        ((2, 9), AugmentConfig(crop_padding=3, flip=False, padding_mode="reflect")),
    ],
    ids=["image-reflect-flip", "image-zeros", "signal-1d"],
)
def test_each_augmented_sample_is_a_crop_of_the_sample_its_label_names(shape, config):
    n = 24
    x = uint8_data(n, shape, seed=3)
    loader = DeviceLoader(x, torch.arange(n), 5, augment=config, drop_last=False, seed=1)
    changed = 0
    for xb, yb in loader:
        assert xb.dtype == torch.float32 and xb.shape == (len(yb), *shape)
        images = (xb * 255).round().to(torch.uint8)  # mean 0, std 1: undo the /255 only
        for image, label in zip(images, yb.tolist(), strict=True):
            assert is_candidate(image, x[label], config)
            changed += not torch.equal(image, x[label])
    assert changed > n // 2  # and the augmentation did something


def test_default_augment_disabled_config_means_plain_batches():
    x = uint8_data(10, (1, 4, 4))
    loader = DeviceLoader(x, torch.arange(10), 10, augment=AugmentConfig(), shuffle=False)
    xb, _ = next(iter(loader))
    assert torch.equal((xb * 255).round().to(torch.uint8), x)


# ---- DeviceLoader: normalisation and evaluation


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_normalised_train_split_has_zero_mean_and_unit_std(digits):
    ds = digits
    xs = torch.cat([xb for xb, _ in DeviceLoader.for_evaluation(ds, 256, split="train")])
    assert abs(float(xs.mean())) < 1e-4 and abs(float(xs.std()) - 1) < 1e-3
    train = DeviceLoader.for_training(ds, 128, seed=0)
    assert len(train) == 1437 // 128 and train.augment is None  # digits: no default augment


def test_evaluation_loader_keeps_order_and_pixels(digits):
    ds = digits
    loader = DeviceLoader.for_evaluation(ds, 100)
    xs, ys = map(torch.cat, zip(*loader, strict=True))
    mean, std = torch.tensor(ds.mean), torch.tensor(ds.std)
    assert torch.equal(ys, ds.test_y)
    torch.testing.assert_close(xs, (ds.test_x / 255 - mean) / std)


def test_float_data_are_normalised_as_is_and_never_modified():
    x = torch.randn(12, 1, 10)
    kept = x.clone()
    loader = DeviceLoader(
        x, torch.zeros(12, dtype=torch.long), 4, shuffle=False, mean=[1.0], std=[2.0]
    )
    for _ in range(2):
        xs = torch.cat([xb for xb, _ in loader])
    torch.testing.assert_close(xs, (kept - 1) / 2)
    assert torch.equal(loader.x, kept)


def test_channels_last_gives_the_same_values_in_nhwc_layout():
    x, y = uint8_data(8, (3, 6, 6)), torch.arange(8)
    kwargs = dict(augment=AugmentConfig(2, True), mean=[0.5] * 3, std=[0.25] * 3, seed=4)
    plain = DeviceLoader(x, y, 4, **kwargs)
    nhwc = DeviceLoader(x, y, 4, channels_last=True, **kwargs)
    for (a, _), (b, _) in zip(plain, nhwc, strict=True):
        assert b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(x=uint8_data(4, (1, 3, 3)), y=torch.arange(5)), "y must have shape"),
        (dict(x=uint8_data(4, (3,))), "x must be"),
        (dict(augment=AugmentConfig(crop_padding=4)), "reflect padding"),
        (dict(x=uint8_data(4, (1, 9)), channels_last=True), "channels_last"),
        (dict(mean=[0.5, 0.5]), "mean and std"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_loader_arguments_are_rejected_with_a_message(kwargs, match):
    args = dict(x=uint8_data(4, (1, 4, 4)), y=torch.arange(4), batch_size=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DeviceLoader(args.pop("x"), args.pop("y"), args.pop("batch_size"), **args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_live_on_the_device_and_match_the_cpu_order():
    x, y = uint8_data(64, (3, 8, 8)), torch.arange(64)
    loader = DeviceLoader(
        x, y, 16, device="cuda", augment=AugmentConfig(2, True), channels_last=True
    )
    for xb, yb in loader:
        assert xb.is_cuda and yb.is_cuda and xb.is_contiguous(memory_format=torch.channels_last)
        for image, label in zip((xb * 255).round().to(torch.uint8).cpu(), yb.tolist(), strict=True):
            assert is_candidate(image, x[label], loader.augment)
