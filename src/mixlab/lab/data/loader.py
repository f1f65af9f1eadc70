"""`DeviceLoader`: a whole split kept on the training device, batched and augmented there.

The airbench recipe: the data sit on the device as uint8 (CIFAR-10 train is 150 MB), every batch
is an index into them, and the augmentations are a handful of batched tensor ops, so an epoch
costs a few dozen kernel launches per batch and no Python work per sample, no worker processes,
no host-to-device copies.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from mixlab.lab.data.dataset import AugmentConfig, LabDataset


def draw_crop_flip(
    n: int,
    ndim: int,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw the random parameters of `crop_flip` for `n` samples.

    Args:
        n: number of samples.
        ndim: number of spatial axes (2 for images, 1 for signals).
        config: padding and flip settings.
        generator: source of randomness; must live on `device`.

    Returns:
        offsets: (n, ndim) int64, each in 0..2*crop_padding (the crop window's start inside the
            padded sample; crop_padding means "no shift").
        flips: (n,) bool, or None when `config.flip` is off.
    """
    p = config.crop_padding
    if p > 0:
        offsets = torch.randint(0, 2 * p + 1, (n, ndim), generator=generator, device=device)
    else:
        offsets = torch.zeros(n, ndim, dtype=torch.int64, device=device)
    flips = None
    if config.flip:
        flips = torch.rand(n, generator=generator, device=device) < 0.5
    return offsets, flips


def crop_flip(
    x: torch.Tensor,
    offsets: torch.Tensor,
    flips: torch.Tensor | None,
    config: AugmentConfig,
) -> torch.Tensor:
    """Pad, crop back to size at per-sample offsets, and mirror the last axis where `flips`.

    Equivalent to padding each sample by `config.crop_padding` on every side of every spatial
    axis, taking the window that starts at `offsets[b]`, and reversing its last axis if
    `flips[b]`. Done as one `gather` over the whole batch, reading each output element at a
    computed source index (reflected at the border for "reflect", from a zero-padded copy for
    "zeros").

    Args:
        x: (B, C, *S) tensor of any dtype, 1 <= len(S) <= 3.
        offsets: (B, len(S)) int64 in 0..2*crop_padding, from `draw_crop_flip`.
        flips: (B,) bool or None.
        config: padding size and mode.

    Returns:
        (B, C, *S), same dtype and device as `x`.
    """
    batch, channels, *size = x.shape
    p = config.crop_padding
    if offsets.shape != (batch, len(size)):
        raise ValueError(
            f"offsets must have shape {(batch, len(size))}, got {tuple(offsets.shape)}"
        )
    if config.padding_mode == "reflect" and p >= min(size):
        raise ValueError(f"reflect padding {p} needs every spatial size > {p}, got {tuple(size)}")
    if p == 0 and flips is None:
        return x
    if config.padding_mode == "zeros":
        # A real zero pad is one cheap copy and saves masking the out-of-range reads afterwards.
        source, shift = F.pad(x, [p] * (2 * len(size))), 0
    else:
        # Reflection is done on the indices instead: no padded copy, and no dependence on
        # which dtypes each backend's reflection_pad kernel supports.
        source, shift = x, p
    # The flat source index of every output element, built axis by axis as a sum of broadcast
    # (B, 1.., n_k, 1..) terms: a few tensors of B * n_k elements, never a Python loop over B.
    index, stride = None, 1
    for axis in reversed(range(len(size))):
        n, n_source = size[axis], source.shape[2 + axis]
        pos = torch.arange(n, device=x.device)
        if axis == len(size) - 1 and flips is not None:
            pos = torch.where(flips[:, None], pos.flip(0), pos)
        src = offsets[:, axis : axis + 1] - shift + pos  # (B, n)
        if shift:
            src = src.abs()
            src = torch.where(src >= n, 2 * (n - 1) - src, src)
        shape = [batch] + [1] * len(size)
        shape[1 + axis] = n
        term = (src * stride).view(shape)
        index = term if index is None else index + term
        stride *= n_source
    flat_index = index.reshape(batch, 1, -1).expand(batch, channels, -1)
    return torch.gather(source.reshape(batch, channels, -1), 2, flat_index).view(x.shape)


def _epoch_seed(seed: int, epoch: int) -> int:
    # A hash, not seed + epoch: runs with seeds 0 and 1 must not replay each other's epochs.
    digest = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class DeviceLoader:
    """Batches from a split kept whole on the device: shuffled, augmented, normalised, seeded.

    Each pass draws one permutation and the augmentation parameters of the whole epoch from a
    `torch.Generator` seeded by (seed, epoch), so the same seed and epoch always give the same
    batches. The epoch advances by one at the start of every pass; `set_epoch` overrides it.

    Args:
        x: (N, C, *S) samples, S = (H, W) or (L,); uint8 (scaled by 1/255) or float (used as is).
        y: (N,) integer labels.
        batch_size: B.
        device: where the data live and batches are made; default `x.device`.
        shuffle: draw a new order each epoch (else the stored order).
        drop_last: drop the final partial batch (else yield it, smaller).
        augment: crop/flip settings, or None for none.
        mean, std: per-channel statistics on the 0..1 scale (C floats each), or None for 0 and 1.
        seed: base seed of the per-epoch generator.
        channels_last: hand out 4-D batches in channels_last layout (faster convolutions on CUDA).

    Iteration yields `(xb, yb)`: xb float32 (B, C, *S) equal to (x/255 - mean)/std after
    augmentation, yb int64 (B,), both on `device`.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
        augment: AugmentConfig | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        _check_inputs(x, y, batch_size, drop_last, augment, channels_last)
        self.device = torch.device(device) if device is not None else x.device
        self.x = x.to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = seed
        self.channels_last = channels_last
        self.epoch = 0
        self._scale, self._shift = _affine(x, mean, std, self.device)

    @classmethod
    def for_training(
        cls,
        dataset: LabDataset,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        augment: AugmentConfig | None | str = "default",
        seed: int = 0,
        channels_last: bool = False,
    ) -> DeviceLoader:
        """Train-split loader: shuffled, full batches only, `dataset.default_augment` unless
        `augment` says otherwise (None for no augmentation)."""
        chosen = dataset.default_augment if augment == "default" else augment
        return cls(
            dataset.train_x, dataset.train_y, batch_size, device=device, shuffle=True,
            drop_last=True, augment=chosen, mean=dataset.mean, std=dataset.std, seed=seed,
            channels_last=channels_last,
        )  # fmt: skip

    @classmethod
    def for_evaluation(
        cls,
        dataset: LabDataset,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        split: str = "test",
        channels_last: bool = False,
    ) -> DeviceLoader:
        """Evaluation loader over `split` ("test" or "train"): stored order, no augmentation,
        every sample once (the last batch may be smaller)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return cls(
            getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y"), batch_size,
            device=device, shuffle=False, drop_last=False, augment=None, mean=dataset.mean,
            std=dataset.std, channels_last=channels_last,
        )  # fmt: skip

    @property
    def num_samples(self) -> int:
        """N, the size of the split."""
        return len(self.x)

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch `epoch`: its order and augmentations depend on (seed, epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, dev = self.num_samples, self.device
        generator = torch.Generator(device=dev)
        generator.manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=generator, device=dev) if self.shuffle else None
        if self.augment is not None:
            # The whole epoch's parameters in two calls rather than two per batch.
            offsets, flips = draw_crop_flip(n, self.x.ndim - 2, self.augment, generator, dev)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = min(start + self.batch_size, n)
            if order is None:
                xb, yb = self.x[start:stop], self.y[start:stop]
            else:
                index = order[start:stop]
                xb, yb = self.x[index], self.y[index]
            if self.augment is not None:
                flip_part = None if flips is None else flips[start:stop]
                xb = crop_flip(xb, offsets[start:stop], flip_part, self.augment)
            yield self._normalise(xb), yb

    def _normalise(self, xb: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            # Reorder while still uint8 (4x fewer bytes); the float ops below keep the layout.
            xb = xb.contiguous(memory_format=torch.channels_last)
        # copy=True: for float data with no shuffle xb may be a view of self.x, which the
        # in-place ops must not touch.
        return xb.to(torch.float32, copy=True).mul_(self._scale).add_(self._shift)


def _check_inputs(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    drop_last: bool,
    augment: AugmentConfig | None,
    channels_last: bool,
) -> None:
    if x.ndim < 3 or x.ndim > 5:
        raise ValueError(f"x must be (N, C, *S) with 1 <= len(S) <= 3, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise ValueError(f"x must be uint8 or floating point, got {x.dtype}")
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape ({len(x)},) to match x, got {tuple(y.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if drop_last and batch_size > len(x):
        raise ValueError(
            f"drop_last=True with batch_size {batch_size} > {len(x)} samples gives no batches"
        )
    if augment is not None and augment.padding_mode == "reflect":
        if augment.crop_padding >= min(x.shape[2:]):
            raise ValueError(
                f"reflect padding {augment.crop_padding} needs every spatial size larger, "
                f"got {tuple(x.shape[2:])}"
            )
    if channels_last and x.ndim != 4:
        raise ValueError(f"channels_last needs (N, C, H, W) data, got shape {tuple(x.shape)}")


def _affine(
    x: torch.Tensor,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (C, 1, ...), such that x * scale + shift = (x/255 - mean)/std."""
    channels = x.shape[1]
    mean = [0.0] * channels if mean is None else list(mean)
    std = [1.0] * channels if std is None else list(std)
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(
            f"mean and std need {channels} values (std > 0), got mean={mean}, std={std}"
        )
    unit = 1 / 255 if x.dtype == torch.uint8 else 1.0
    shape = (channels,) + (1,) * (x.ndim - 2)
    std_t = torch.tensor(std, dtype=torch.float64)
    scale = (unit / std_t).view(shape)
    shift = (-torch.tensor(mean, dtype=torch.float64) / std_t).view(shape)
    return scale.to(device, torch.float32), shift.to(device, torch.float32)
