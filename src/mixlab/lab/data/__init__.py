"""Lab datasets in their standard on-disk formats, and the on-device batch loader.

    ds = load_dataset("cifar10", data_dir)   # or $MIXLAB_DATA; "digits" needs no dir
    train = DeviceLoader.for_training(ds, 512, device="cuda", seed=0)
    for xb, yb in train: ...                 # xb float32 (B, C, *S) normalised, yb int64 (B,)

Nothing here downloads implicitly; `download(name, data_dir)` fetches the official files.
"""

from mixlab.lab.data.dataset import (
    AugmentConfig,
    DatasetError,
    DatasetNotFoundError,
    LabDataset,
    channel_mean_std,
)
from mixlab.lab.data.download import download
from mixlab.lab.data.formats import read_cifar_pickle, read_idx
from mixlab.lab.data.loader import DeviceLoader, crop_flip, draw_crop_flip
from mixlab.lab.data.readers import DATA_ENV_VAR, DATASET_NAMES, load_dataset, resolve_data_dir

__all__ = [
    "DATASET_NAMES",
    "DATA_ENV_VAR",
    "AugmentConfig",
    "DatasetError",
    "DatasetNotFoundError",
    "DeviceLoader",
    "LabDataset",
    "channel_mean_std",
    "crop_flip",
    "download",
    "draw_crop_flip",
    "load_dataset",
    "read_cifar_pickle",
    "read_idx",
    "resolve_data_dir",
]
