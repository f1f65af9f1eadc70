"""`load_dataset`: the lab's datasets, read from their standard on-disk formats.

Nothing is downloaded here. File-based datasets are looked up under `data_dir` (or the
`MIXLAB_DATA` environment variable); "digits" ships inside scikit-learn and "mnist1d" is generated
by the `mnist1d` package, so those two need no directory at all.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mixlab.lab.data.dataset import (
    AugmentConfig,
    DatasetError,
    DatasetNotFoundError,
    LabDataset,
    channel_mean_std,
)
from mixlab.lab.data.formats import read_cifar_pickle, read_idx

DATASET_NAMES = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "mnist1d")
DATA_ENV_VAR = "MIXLAB_DATA"
# Where the Debian/Ubuntu package `dataset-fashion-mnist` installs the official .gz IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# CIFAR: pad 4 + crop 32 + mirror, the standard recipe; reflect padding as in airbench.
CIFAR_AUGMENT = AugmentConfig(crop_padding=4, flip=True, padding_mode="reflect")
# MNIST-like: digits sit in a 20x20 box centred in 28x28 with a black border, so a +-2 pixel
# shift with zero padding moves the digit without cutting it. No mirror: a mirrored 2, 3, 7 or
# "S"-shaped shoe is not the same class, or at least not the same picture.
MNIST_AUGMENT = AugmentConfig(crop_padding=2, flip=False, padding_mode="zeros")
# digits (8x8, strokes touch the border: one pixel is 12% of the image) and mnist1d (already
# randomly translated by its generator): no default augmentation.
NO_AUGMENT = AugmentConfig()

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The data directory: `data_dir` if given, else `$MIXLAB_DATA`, else None."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV_VAR) or None
    return None if chosen is None else Path(chosen).expanduser()


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> LabDataset:
    """Load a dataset into memory, both splits, from its standard files.

    Args:
        name: one of `DATASET_NAMES`.
        data_dir: the directory holding the files (see below); default `$MIXLAB_DATA`.
            Not needed for "digits" and "mnist1d", nor for "fashion_mnist" when the Debian
            package is installed.

    Layouts looked for under `data_dir` (the first place that has a file wins):
        cifar10:  cifar-10-batches-py/ or data_dir itself, holding
                  data_batch_1..5, test_batch, batches.meta
        cifar100: cifar-100-python/ or data_dir itself, holding train, test, meta (fine labels)
        mnist:    mnist/, MNIST/raw/ or data_dir itself, holding
                  {train,t10k}-{images-idx3,labels-idx1}-ubyte, each optionally .gz
        fashion_mnist: the same names under fashion-mnist/, FashionMNIST/raw/, data_dir itself,
                  then /usr/share/datasets/fashion-mnist/

    Returns:
        A `LabDataset`: images as uint8 (N, C, H, W) (MNIST-likes 1x28x28, CIFAR 3x32x32,
        digits 1x8x8), mnist1d as float32 (N, 1, 40); labels int64 (N,).

    Raises:
        ValueError: unknown name.
        DatasetNotFoundError: a file is missing (the message names it, the places searched, and
            the download command).
        DatasetError: a file is damaged.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    return _LOADERS[name](resolve_data_dir(data_dir))


@dataclass(frozen=True)
class _Locator:
    """Finds one dataset's files in an ordered list of directories; words the errors."""

    dataset: str
    dirs: tuple[Path, ...]
    data_dir: Path | None

    def hint(self) -> str:
        target = str(self.data_dir) if self.data_dir is not None else "DIR"
        text = (
            f"Get the official files with `mixlab data download {self.dataset} --data-dir {target}`"
        )
        if self.data_dir is None:
            text += f", then pass data_dir=DIR or set {DATA_ENV_VAR}=DIR"
        if self.dataset == "fashion_mnist":
            text += (
                ", or install the Debian/Ubuntu package dataset-fashion-mnist "
                f"(apt-get install dataset-fashion-mnist), which puts them in "
                f"{DEBIAN_FASHION_MNIST_DIR}/"
            )
        return text + "."

    def find(self, *names: str) -> Path:
        """The first existing file among `names` (alternatives), searched dir by dir."""
        for directory in self.dirs:
            for file_name in names:
                if (directory / file_name).is_file():
                    return directory / file_name
        where = ", ".join(str(d) for d in self.dirs) or "nowhere"
        wanted = " or ".join(names)
        no_dir = (
            f" (no data directory given: pass data_dir= or set {DATA_ENV_VAR})"
            if self.data_dir is None
            else ""
        )
        raise DatasetNotFoundError(
            f"{self.dataset}: cannot find {wanted}; looked in: {where}{no_dir}. {self.hint()}"
        )

    def damaged(self, err: DatasetError) -> DatasetError:
        return DatasetError(f"{self.dataset}: {err} {self.hint()}")


def _idx_locator(name: str, data_dir: Path | None) -> _Locator:
    subdirs = {
        "mnist": ("mnist", "MNIST/raw"),
        "fashion_mnist": ("fashion-mnist", "FashionMNIST/raw"),
    }
    dirs = []
    if data_dir is not None:
        dirs = [data_dir / sub for sub in subdirs[name]] + [data_dir]
    if name == "fashion_mnist":
        dirs.append(DEBIAN_FASHION_MNIST_DIR)
    return _Locator(name, tuple(dirs), data_dir)


def _read_idx_split(loc: _Locator, prefix: str) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """One split of an IDX dataset: ((N, 1, H, W) uint8, (N,) int64, images path)."""
    image_path = loc.find(f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz")
    label_path = loc.find(f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz")
    try:
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{image_path}: expected (N, H, W) uint8, got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images) or labels.max(initial=0) > 9:
            raise DatasetError(
                f"{label_path}: expected {len(images)} labels in 0..9, got shape {labels.shape}"
            )
    except DatasetError as err:
        raise loc.damaged(err) from err
    return torch.from_numpy(images[:, None]), torch.from_numpy(labels.astype(np.int64)), image_path


def _load_idx(name: str, data_dir: Path | None, classes: tuple[str, ...]) -> LabDataset:
    loc = _idx_locator(name, data_dir)
    train_x, train_y, path = _read_idx_split(loc, "train")
    test_x, test_y, _ = _read_idx_split(loc, "t10k")
    return _finish(name, train_x, train_y, test_x, test_y, classes, MNIST_AUGMENT, path.parent)


def _read_cifar_batch(
    loc: _Locator, file_name: str, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file: ((N, 3, 32, 32) uint8, (N,) int64)."""
    path = loc.find(file_name)
    try:
        batch = read_cifar_pickle(path)
        data, labels = batch.get("data"), batch.get(label_key)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
            raise DatasetError(f"{path}: 'data' is not an (N, 3072) uint8 array")
        if data.shape[1] != 3 * 32 * 32:
            raise DatasetError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072)")
        try:
            labels = np.asarray(labels, dtype=np.int64)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{path}: '{label_key}' is not a list of ints") from err
        if (
            labels.shape != (len(data),)
            or labels.min(initial=0) < 0
            or labels.max(initial=0) >= num_classes
        ):
            raise DatasetError(
                f"{path}: expected {len(data)} '{label_key}' in 0..{num_classes - 1}, "
                f"got shape {labels.shape}"
            )
    except DatasetError as err:
        raise loc.damaged(err) from err
    # Rows are channel-major (1024 red, 1024 green, 1024 blue), so this reshape is NCHW.
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_names(loc: _Locator, file_name: str, key: str, num_classes: int) -> tuple[str, ...]:
    path = loc.find(file_name)
    try:
        names = read_cifar_pickle(path).get(key)
        if not isinstance(names, list) or len(names) != num_classes:
            raise DatasetError(f"{path}: expected {num_classes} names under '{key}'")
    except DatasetError as err:
        raise loc.damaged(err) from err
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _load_cifar10(data_dir: Path | None) -> LabDataset:
    dirs = (data_dir / "cifar-10-batches-py", data_dir) if data_dir is not None else ()
    loc = _Locator("cifar10", dirs, data_dir)
    train = [_read_cifar_batch(loc, f"data_batch_{i}", "labels", 10) for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(loc, "test_batch", "labels", 10)
    classes = _read_cifar_names(loc, "batches.meta", "label_names", 10)
    train_x, train_y = (np.concatenate(parts) for parts in zip(*train, strict=True))
    source = loc.find("data_batch_1").parent
    return _finish(
        "cifar10", *_tensors(train_x, train_y, test_x, test_y), classes, CIFAR_AUGMENT, source
    )


def _load_cifar100(data_dir: Path | None) -> LabDataset:
    dirs = (data_dir / "cifar-100-python", data_dir) if data_dir is not None else ()
    loc = _Locator("cifar100", dirs, data_dir)
    train_x, train_y = _read_cifar_batch(loc, "train", "fine_labels", 100)
    test_x, test_y = _read_cifar_batch(loc, "test", "fine_labels", 100)
    classes = _read_cifar_names(loc, "meta", "fine_label_names", 100)
    source = loc.find("train").parent
    return _finish(
        "cifar100", *_tensors(train_x, train_y, test_x, test_y), classes, CIFAR_AUGMENT, source
    )


def _load_digits(data_dir: Path | None) -> LabDataset:
    """scikit-learn's 1,797 8x8 digits; a fixed stratified 1437/360 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are counts 0..16 (4x4 blocks of a 32x32 bitmap); spread them over 0..255.
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    index = np.arange(len(images))
    train, test = train_test_split(index, test_size=360, stratify=bunch.target, random_state=0)
    train, test = np.sort(train), np.sort(test)  # keep the original order inside each split
    x, y = images, bunch.target.astype(np.int64)
    source = "scikit-learn load_digits (stratified 1437/360 split, random_state=0)"
    return _finish(
        "digits", *_tensors(x[train], y[train], x[test], y[test]), MNIST_CLASSES, NO_AUGMENT, source
    )


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate MNIST-1D (~5 s, hence cached): package defaults, 4000 train + 1000 test."""
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds numpy's and Python's global generators (seed 42 by default); put them
    # back afterwards so that loading data does not silently reseed the caller's experiment.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def _load_mnist1d(data_dir: Path | None) -> LabDataset:
    """MNIST-1D signals as float32 (N, 1, 40): real-valued and already standardised.

    Not quantised to uint8: the signals span about -5.5..4.5 with noise of scale 0.02, and a
    float copy of 5,000 x 40 values costs nothing, so keeping them exact is the clean choice.
    The loader then skips the /255 and normalises with mean ~0, std ~1.
    """
    x, y, x_test, y_test = _mnist1d_arrays()
    tensors = (
        torch.tensor(x[:, None], dtype=torch.float32),
        torch.tensor(y, dtype=torch.int64),
        torch.tensor(x_test[:, None], dtype=torch.float32),
        torch.tensor(y_test, dtype=torch.int64),
    )
    source = "mnist1d make_dataset (package default args, seed 42)"
    return _finish("mnist1d", *tensors, MNIST_CLASSES, NO_AUGMENT, source)


def _tensors(*arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _finish(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    classes: tuple[str, ...],
    augment: AugmentConfig,
    source: Path | str,
) -> LabDataset:
    """Assemble the dataset; mean and std come from the train split as it is on disk."""
    mean, std = channel_mean_std(train_x)
    return LabDataset(
        name=name,
        train_x=train_x.contiguous(),
        train_y=train_y.long(),
        test_x=test_x.contiguous(),
        test_y=test_y.long(),
        num_classes=len(classes),
        classes=classes,
        mean=mean,
        std=std,
        default_augment=augment,
        source=str(source),
    )


_LOADERS: dict[str, Callable[[Path | None], LabDataset]] = {
    "digits": _load_digits,
    "mnist": lambda d: _load_idx("mnist", d, MNIST_CLASSES),
    "fashion_mnist": lambda d: _load_idx("fashion_mnist", d, FASHION_MNIST_CLASSES),
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "mnist1d": _load_mnist1d,
}
