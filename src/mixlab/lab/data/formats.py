"""Parsers for the datasets' own file formats: IDX (MNIST, Fashion-MNIST) and CIFAR pickles.

Both raise `DatasetError` naming the file when its content is not what the format promises.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mixlab.lab.data.dataset import DatasetError

# IDX type codes (http://yann.lecun.com/exdb/mnist/, bottom of the page); data are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzipped or not (told apart by content, not by the name).

    Args:
        path: e.g. `.../train-images-idx3-ubyte.gz`.

    Returns:
        An array of the shape and type the header declares, native byte order, writable:
        (N, H, W) uint8 for image files, (N,) uint8 for label files.

    Raises:
        DatasetError: bad gzip stream, bad magic number, or a size that disagrees with the header.
    """
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        # Sniffing the magic rather than trusting ".gz" also handles mirrors (and browsers) that
        # hand out already-decompressed files under the .gz name.
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DatasetError(f"{path}: damaged gzip stream ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: IDX header truncated ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(
            f"{path}: IDX header says shape {shape}, i.e. {expected} bytes, "
            f"but the file holds {len(raw)} (truncated or damaged)"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only.

    A pickle can run arbitrary code through the globals it names; dataset files come from the
    internet, so only what a CIFAR batch needs is allowed.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            # numpy >= 2 renamed numpy.core; going straight to the new name avoids its warning.
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR python-format file (a batch, or the meta file).

    The official files are Python 2 pickles whose keys come back as bytes; keys are decoded to
    str here, values are left as they are (`data` an (N, 3072) uint8 array, labels lists of int,
    names lists of bytes).

    Raises:
        DatasetError: the file does not unpickle to a dict.
    """
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # a damaged pickle can fail in many ways; all mean "damaged"
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({err})") from err
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
