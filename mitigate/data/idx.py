"""MNIST and Fashion-MNIST from their IDX files, raw or gzipped.

IDX layout (LeCun's format): two zero bytes, a dtype code, the number of dimensions ``d``, then
``d`` big-endian ``int32`` sizes, then the values big-endian in row-major order.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from mitigate.data._files import corrupt, find_files, read_bytes
from mitigate.data.images import LabelledImages
from mitigate.errors import MitigateError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "IDX_FILES",
    "MNIST_CLASSES",
    "load_fashion_mnist",
    "load_mnist",
    "parse_idx",
    "read_idx",
]

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: The four files, in the order (train images, train labels, test images, test labels).
IDX_FILES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# IDX dtype code -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def parse_idx(data: bytes, *, source: str = "IDX data") -> np.ndarray:
    """Decode the bytes of one IDX file into a native-endian array.

    Args:
        data: the whole (already gunzipped) file.
        source: how to name the data in an error (a path, say).

    Returns:
        An array with the dims stored in the header, e.g. ``uint8 [60000, 28, 28]``.

    Raises:
        MitigateError: bad magic, unknown dtype code, or a body shorter or longer than the
            header says.

    Example:
        >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])).tolist()
        [7, 8, 9]
    """
    if len(data) < 4:
        raise MitigateError(f"corrupt IDX file {source}: only {len(data)} bytes, no header")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise MitigateError(
            f"corrupt IDX file {source}: bad magic number 0x{data[:4].hex()} "
            "(expected 0x0000 then a dtype code 08/09/0b/0c/0d/0e and the number of dims)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MitigateError(f"corrupt IDX file {source}: truncated header ({len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: an absurd header cannot wrap
    if len(data) - header != expected:
        shape = "x".join(str(d) for d in dims)
        state = "truncated" if len(data) - header < expected else "too long"
        raise MitigateError(
            f"corrupt IDX file {source}: {state}: header says {shape} {dtype.name} "
            f"({expected} bytes) but {len(data) - header} bytes follow"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(dims)
    # frombuffer views the read-only bytes; copy into a writable native-endian array.
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file, raw or gzipped (see :func:`parse_idx`)."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise MitigateError(f"IDX file {path} not found")
    return parse_idx(read_bytes(path, "IDX"), source=str(path))


def _read_part(
    images_path: Path,
    labels_path: Path,
    label: str,
    classes: tuple[str, ...],
    name: str,
) -> LabelledImages:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise corrupt(
            label,
            images_path,
            f"expected uint8 images [N, H, W], got {images.dtype} {images.shape}",
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise corrupt(
            label, labels_path, f"expected uint8 labels [N], got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise MitigateError(
            f"{label} files disagree: {images_path} holds {len(images)} images "
            f"but {labels_path} holds {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= len(classes):
        raise corrupt(
            label, labels_path, f"label {int(labels.max())} outside 0..{len(classes) - 1}"
        )
    return LabelledImages(
        images=torch.from_numpy(images[:, None]),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        max_value=255,
        name=name,
    )


def _load_idx_dataset(
    data_dir: str | os.PathLike[str],
    *,
    label: str,
    key: str,
    layout: str,
    classes: tuple[str, ...],
) -> tuple[LabelledImages, LabelledImages]:
    files = find_files(
        data_dir,
        IDX_FILES,
        label=label,
        hint=f"download {label} into it",
        subdirs=("raw", f"{layout}/raw"),
        gz=True,
    )
    train_x, train_y, test_x, test_y = (files[n] for n in IDX_FILES)
    train = _read_part(train_x, train_y, label, classes, f"{key}/train")
    test = _read_part(test_x, test_y, label, classes, f"{key}/test")
    if train.input_shape != test.input_shape:
        raise MitigateError(
            f"{label} files disagree: train images are {train.input_shape} "
            f"but test images are {test.input_shape} ({files.directory})"
        )
    return train, test


def load_mnist(data_dir: str | os.PathLike[str]) -> tuple[LabelledImages, LabelledImages]:
    """MNIST train (60000) and test (10000) from the four IDX files in ``data_dir``.

    The files may be raw or ``.gz`` and may sit in ``data_dir``, ``data_dir/raw`` or
    ``data_dir/MNIST/raw`` (torchvision's layout).

    Returns:
        ``(train, test)``, images ``uint8 [N, 1, 28, 28]``, ``max_value=255``, classes
        ``"0"``..``"9"``, named ``"mnist/train"`` and ``"mnist/test"``.

    Raises:
        MitigateError: a missing directory or file (named with its absolute directory), or a
            corrupt one (bad magic, truncated, image/label counts that differ).
    """
    return _load_idx_dataset(
        data_dir, label="MNIST", key="mnist", layout="MNIST", classes=MNIST_CLASSES
    )


def load_fashion_mnist(
    data_dir: str | os.PathLike[str],
) -> tuple[LabelledImages, LabelledImages]:
    """Fashion-MNIST train and test: same IDX files as MNIST, clothing classes.

    The files may sit in ``data_dir``, ``data_dir/raw`` or ``data_dir/FashionMNIST/raw``.

    Returns:
        ``(train, test)`` like :func:`load_mnist`, classes :data:`FASHION_MNIST_CLASSES`,
        named ``"fashion-mnist/train"`` and ``"fashion-mnist/test"``.
    """
    return _load_idx_dataset(
        data_dir,
        label="Fashion-MNIST",
        key="fashion-mnist",
        layout="FashionMNIST",
        classes=FASHION_MNIST_CLASSES,
    )
