"""Dataset readers: standard formats written by the tests, the shared real data when present."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mixlab.lab.data import (
    DATASET_NAMES,
    AugmentConfig,
    DatasetError,
    DatasetNotFoundError,
    LabDataset,
    download,
    load_dataset,
    read_cifar_pickle,
    read_idx,
    readers,
)

# the package exports the function `download`, which hides the module of the same name
download_module = importlib.import_module("mixlab.lab.data.download")
SHARED = Path("/work/shared/data")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # A user's MIXLAB_DATA must not leak into what the tests find.
    monkeypatch.delenv("MIXLAB_DATA", raising=False)


@pytest.fixture
def no_debian_fashion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(readers, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")


# ---- writers of tiny files in the standard formats


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_idx_dataset(directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = True):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar_file(path: Path, record: dict, protocol: int) -> None:
    # bytes keys, as the official Python 2 pickles load under encoding="bytes"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump({k.encode(): v for k, v in record.items()}, f, protocol=protocol)


def write_cifar10(directory: Path, per_batch: int = 3, protocol: int = 2):
    rng = np.random.default_rng(1)
    folder = directory / "cifar-10-batches-py"
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        write_cifar_file(folder / name, {"data": data, "labels": labels}, protocol)
        batches[name] = (data, labels)
    names = [f"class{i}".encode() for i in range(10)]
    write_cifar_file(folder / "batches.meta", {"label_names": names}, protocol)
    return batches


def write_cifar100(directory: Path, protocol: int = 4):
    rng = np.random.default_rng(2)
    folder = directory / "cifar-100-python"
    splits = {}
    for name, n in (("train", 7), ("test", 4)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        record = {"data": data, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]}
        write_cifar_file(folder / name, record, protocol)
        splits[name] = (data, fine)
    names = [f"fine{i}".encode() for i in range(100)]
    write_cifar_file(folder / "meta", {"fine_label_names": names}, protocol)
    return splits


def check_dataset(ds: LabDataset, shape: tuple[int, ...], num_classes: int) -> None:
    assert ds.train_x.dtype == torch.uint8 and ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    assert tuple(ds.train_x.shape[1:]) == shape == tuple(ds.test_x.shape[1:])
    assert (ds.in_channels, *ds.input_size) == shape
    assert ds.num_classes == num_classes == len(ds.classes)
    assert len(ds.mean) == len(ds.std) == shape[0]
    assert all(0 <= m <= 1 for m in ds.mean) and all(s > 0 for s in ds.std)
    assert int(ds.train_y.min()) >= 0 and int(ds.train_y.max()) < num_classes


# ---- IDX


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", "."])
def test_mnist_reads_idx_files_gz_or_raw_in_each_layout(tmp_path, gz, layout):
    arrays = write_idx_dataset(tmp_path / layout, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    check_dataset(ds, (1, 28, 28), 10)
    images, labels = arrays["train"]
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(images))
    assert torch.equal(ds.train_y, torch.from_numpy(labels.astype(np.int64)))
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(arrays["t10k"][0]))
    assert ds.default_augment == AugmentConfig(crop_padding=2, flip=False, padding_mode="zeros")


def test_fashion_mnist_reads_its_own_folder_and_class_names(tmp_path, no_debian_fashion):
    write_idx_dataset(tmp_path / "fashion-mnist", gz=False)
    ds = load_dataset("fashion_mnist", tmp_path)
    check_dataset(ds, (1, 28, 28), 10)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


def test_data_dir_comes_from_the_environment_when_not_given(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "mnist")
    monkeypatch.setenv("MIXLAB_DATA", str(tmp_path))
    assert len(load_dataset("mnist").train_x) == 12


def test_read_idx_sniffs_gzip_by_content_not_name(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = write_idx(tmp_path / "x", images, gz=False)
    renamed = raw.rename(tmp_path / "x.gz")  # an already-decompressed file under a .gz name
    assert np.array_equal(read_idx(renamed), images)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"\x08\x03" + b[2:],  # wrong magic number
        lambda b: b[:-7],  # truncated data
        lambda b: b[:6],  # truncated header
        lambda b: gzip.compress(b)[:-20],  # truncated gzip stream
        lambda b: b"\x1f\x8b" + b"garbage" * 5,  # not really gzip
    ],
    ids=["magic", "truncated", "header", "gzip-truncated", "gzip-garbage"],
)
def test_damaged_idx_file_raises_dataset_error_naming_file_and_download(tmp_path, damage):
    write_idx_dataset(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", tmp_path)
    assert not isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert str(path) in message
    assert f"mixlab data download mnist --data-dir {tmp_path}" in message


def test_idx_labels_out_of_range_or_mismatched_are_damage(tmp_path):
    write_idx_dataset(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(4, 3, np.uint8), gz=False)
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


def test_missing_idx_file_names_file_every_place_and_the_download(tmp_path):
    write_idx_dataset(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", tmp_path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message
    for place in (tmp_path / "mnist", tmp_path / "MNIST" / "raw", tmp_path):
        assert str(place) in message
    assert f"mixlab data download mnist --data-dir {tmp_path}" in message


def test_missing_fashion_mnist_mentions_the_debian_package(tmp_path, no_debian_fashion):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "fashion-mnist") in message
    assert str(readers.DEBIAN_FASHION_MNIST_DIR) in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_no_data_dir_at_all_says_how_to_give_one():
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "data_batch_1" in message and "MIXLAB_DATA" in message
    assert "mixlab data download cifar10 --data-dir DIR" in message


# ---- CIFAR


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_reads_the_python_batches(tmp_path, protocol):
    batches = write_cifar10(tmp_path, protocol=protocol)
    ds = load_dataset("cifar10", tmp_path)
    check_dataset(ds, (3, 32, 32), 10)
    assert len(ds.train_x) == 15 and len(ds.test_x) == 3
    data, labels = batches["data_batch_2"]
    # rows are channel-major: the first 1024 values are the red plane
    assert torch.equal(ds.train_x[3:6], torch.from_numpy(data.reshape(3, 3, 32, 32)))
    assert ds.train_y[3:6].tolist() == labels
    assert ds.test_y.tolist() == batches["test_batch"][1]
    assert ds.classes == tuple(f"class{i}" for i in range(10))
    assert ds.default_augment == AugmentConfig(crop_padding=4, flip=True, padding_mode="reflect")


def test_cifar10_also_found_when_data_dir_is_the_batches_folder(tmp_path):
    write_cifar10(tmp_path)
    assert len(load_dataset("cifar10", tmp_path / "cifar-10-batches-py").train_x) == 15


def test_cifar100_reads_fine_labels(tmp_path):
    splits = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    check_dataset(ds, (3, 32, 32), 100)
    assert ds.train_y.tolist() == splits["train"][1]
    assert torch.equal(ds.test_x, torch.from_numpy(splits["test"][0].reshape(-1, 3, 32, 32)))
    assert ds.classes[5] == "fine5"


@pytest.mark.parametrize(
    "record",
    [
        {"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]},  # wrong row length
        {"data": np.zeros((3, 3072), np.float32), "labels": [0, 1, 2]},  # wrong dtype
        {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1]},  # too few labels
        {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 10]},  # label out of range
        {"labels": [0, 1, 2]},  # no data
    ],
    ids=["row-length", "dtype", "label-count", "label-range", "no-data"],
)
def test_wrong_shaped_cifar_pickle_raises_dataset_error(tmp_path, record):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    write_cifar_file(path, record, protocol=2)
    with pytest.raises(DatasetError, match="data_batch_3") as info:
        load_dataset("cifar10", tmp_path)
    assert "mixlab data download cifar10" in str(info.value)


def test_unpicklable_cifar_file_raises_dataset_error(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", tmp_path)


class _Boom:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_pickle_naming_other_globals_is_refused(tmp_path):
    path = tmp_path / "evil"
    with path.open("wb") as f:
        pickle.dump({b"data": _Boom()}, f)
    with pytest.raises(DatasetError, match="refusing to load global"):
        read_cifar_pickle(path)


def test_missing_cifar100_meta_names_it_and_both_places(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", tmp_path)
    message = str(info.value)
    assert "meta" in message and str(tmp_path / "cifar-100-python") in message
    assert "mixlab data download cifar100" in message


# ---- embedded and generated datasets


def test_digits_loads_without_data_dir_as_uint8_with_fixed_stratified_split():
    ds = load_dataset("digits")
    check_dataset(ds, (1, 8, 8), 10)
    assert (len(ds.train_x), len(ds.test_x)) == (1437, 360)
    assert int(ds.train_x.max()) == 255
    assert torch.bincount(ds.test_y).min() >= 35  # stratified: every class ~36 times
    again = load_dataset("digits")
    assert torch.equal(ds.test_x, again.test_x) and torch.equal(ds.train_y, again.train_y)


def test_mnist1d_generates_float_signals_and_leaves_global_rng_alone():
    readers._mnist1d_arrays.cache_clear()  # make sure the generator really runs here
    np.random.seed(123)
    random.seed(123)
    ds = load_dataset("mnist1d")
    assert (np.random.randint(1 << 30), random.random()) == (
        np.random.RandomState(123).randint(1 << 30),
        random.Random(123).random(),
    )
    assert ds.train_x.shape == (4000, 1, 40) and ds.test_x.shape == (1000, 1, 40)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert abs(ds.mean[0]) < 0.05 and abs(ds.std[0] - 1) < 0.05
    assert ds.input_size == (40,) and not ds.default_augment.enabled


def test_unknown_dataset_name_is_a_value_error():
    with pytest.raises(ValueError, match="cifar10"):
        load_dataset("imagenet")
    assert len(DATASET_NAMES) == 6


def test_dataset_repr_shows_shapes_not_tensors():
    text = repr(load_dataset("digits"))
    assert "(1437, 1, 8, 8)" in text and "tensor(" not in text


# ---- download: only its error paths and its checksum check, never the network


def test_download_rejects_unknown_and_embedded_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        download("imagenet", tmp_path)
    with pytest.raises(ValueError, match="needs no download"):
        download("digits", tmp_path)


def test_download_needs_a_directory():
    with pytest.raises(ValueError, match="data directory"):
        download("mnist", None)


def test_fetch_keeps_a_file_only_if_its_md5_matches(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "file.gz").write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    url = mirror.as_uri() + "/"
    fetched = download_module._fetch(
        download_module._Resource("file.gz", good, (url,)), tmp_path / "a", 5
    )
    assert fetched.read_bytes() == b"payload"
    with pytest.raises(DatasetError, match="MD5"):
        download_module._fetch(
            download_module._Resource("file.gz", "0" * 32, (url,)), tmp_path / "b", 5
        )
    assert not any((tmp_path / "b").iterdir())  # no partial or unverified file left behind


# ---- the shared real data, when this machine has it


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no shared MNIST copy")
def test_real_mnist_has_the_known_sizes_and_statistics():
    ds = load_dataset("mnist", SHARED)
    check_dataset(ds, (1, 28, 28), 10)
    assert (len(ds.train_x), len(ds.test_x)) == (60000, 10000)
    assert ds.mean[0] == pytest.approx(0.1307, abs=1e-3)
    assert ds.std[0] == pytest.approx(0.3081, abs=1e-3)
    assert torch.bincount(ds.train_y).tolist()[1] == 6742  # the famous count of ones


@pytest.mark.skipif(not (SHARED / "cifar100-subset").is_dir(), reason="no shared CIFAR-100")
def test_real_cifar100_subset_loads_all_classes():
    ds = load_dataset("cifar100", SHARED / "cifar100-subset")
    check_dataset(ds, (3, 32, 32), 100)
    assert (len(ds.train_x), len(ds.test_x)) == (1105, 916)
    assert len(torch.unique(ds.train_y)) == 100
    assert ds.classes[0] == "apple"


@pytest.mark.skipif(
    not readers.DEBIAN_FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_the_debian_package_without_data_dir():
    ds = load_dataset("fashion_mnist")
    assert (len(ds.train_x), len(ds.test_x)) == (60000, 10000)
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-3)


def test_channel_statistics_leave_float_data_untouched():
    from mixlab.lab.data import channel_mean_std

    x = torch.randn(10, 2, 5) * 3 + 1
    before = x.clone()
    mean, std = channel_mean_std(x)
    assert torch.equal(x, before)
    assert abs(mean[0] - x[:, 0].mean().item()) < 1e-5
    assert abs(std[0] - x[:, 0].std(unbiased=False).item()) < 1e-4
