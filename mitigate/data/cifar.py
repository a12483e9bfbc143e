"""CIFAR-10 from the python pickle batches, loaded with an unpickler that cannot run code.

The official ``cifar-10-batches-py`` files are Python 2 pickles (protocol 2) of plain dicts:
``b"data"`` a ``uint8 [10000, 3072]`` numpy array (1024 red, 1024 green, 1024 blue values per
image, row-major), ``b"labels"`` a list of ints, plus ``b"batch_label"`` and ``b"filenames"``;
``batches.meta`` holds ``b"label_names"``. A pickle may name any importable callable, so a
file from a stranger could run code when loaded; :class:`SafeUnpickler` resolves only the few
names that numpy arrays need and refuses everything else.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mitigate.data._files import corrupt, find_files
from mitigate.data.images import LabelledImages
from mitigate.errors import MitigateError

__all__ = ["CIFAR10_CLASSES", "CIFAR10_FILES", "SafeUnpickler", "load_cifar10", "safe_load"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
#: The files needed: five train batches, the test batch and the class names.
CIFAR10_FILES: tuple[str, ...] = (*_TRAIN_BATCHES, "test_batch", "batches.meta")
_LABEL = "CIFAR-10"


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 writes bytes at protocol 2 as `_codecs.encode(text, "latin1")`; allow only that
    # use of it, so a file re-pickled by Python 3 loads too.
    if encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin-1")


class _NdarrayName:
    """Stands for ``numpy.ndarray`` in a pickle: only :func:`_reconstruct` may use it.

    A pickle could otherwise call ``ndarray(shape)`` itself and allocate any amount of memory.
    """


_NDARRAY = _NdarrayName()
_NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]


def _reconstruct(subtype: object, shape: object, dtype_code: object) -> np.ndarray:
    # What numpy pickles is always `_reconstruct(ndarray, (0,), b"b")` followed by
    # `__setstate__`, which then sizes the array from the bytes actually in the file.
    if subtype is not _NDARRAY or shape != (0,):
        raise pickle.UnpicklingError("numpy _reconstruct with unexpected arguments")
    return _NUMPY_RECONSTRUCT(np.ndarray, (0,), dtype_code)


# Resolved here, not by importing the pickled module names: on numpy 2 importing `numpy.core`
# warns, and on numpy 1 `numpy._core` may not exist.
_ALLOWED: dict[tuple[str, str], object] = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, strings, numbers and numpy arrays.

    ``find_class`` is the only way a pickle reaches a callable; it answers only numpy's array
    reconstruction (``numpy.core.multiarray._reconstruct`` or its numpy 2 name
    ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``) and Python 3's
    protocol-2 bytes encoding (``_codecs.encode`` with ``latin1`` only). Any other name raises
    :class:`~mitigate.errors.MitigateError` before anything is called.

    Args:
        file: a binary file object.
        source: how to name the file in the error.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str = "pickle") -> None:
        # encoding="bytes": Python 2 `str` values (the dict keys, the array data) stay bytes.
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise MitigateError(
                f"refusing to load {self._source}: the pickle asks for {module}.{name}, which a "
                "dataset file never needs (only numpy arrays, lists, dicts, str and numbers "
                "are allowed)"
            ) from None


def safe_load(path: str | os.PathLike[str], *, label: str = "pickle") -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`.

    Raises:
        MitigateError: the pickle names a callable outside the allowed set (nothing from it
            runs), or the file is not a readable pickle.
    """
    path = Path(path).expanduser().absolute()
    try:
        with path.open("rb") as f:
            return SafeUnpickler(f, source=str(path)).load()
    except MitigateError:
        raise
    except OSError as err:
        raise MitigateError(f"cannot read {label} file {path}: {err.strerror or err}") from err
    except Exception as err:  # a corrupt pickle can fail in many ways
        raise corrupt(label, path, f"not a readable pickle ({type(err).__name__}: {err})") from err


def _text_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise corrupt(_LABEL, path, f"expected a dict, got {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _text_keys(safe_load(path, label=_LABEL), path)
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise corrupt(_LABEL, path, f"no {' or '.join(missing)} entry (keys: {sorted(batch)})")
    data, labels = batch["data"], batch["labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise corrupt(_LABEL, path, f"data should be uint8 [N, 3072], got {got}")
    if data.shape[1] != 3 * 32 * 32:
        raise corrupt(_LABEL, path, f"data rows should hold 3072 values, got {data.shape[1]}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise corrupt(_LABEL, path, f"labels are not integers ({err})") from err
    if labels.shape != (len(data),):
        raise corrupt(
            _LABEL, path, f"{len(data)} images but labels have shape {tuple(labels.shape)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise corrupt(_LABEL, path, f"label {bad} outside 0..{len(CIFAR10_CLASSES) - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_classes(path: Path) -> tuple[str, ...]:
    meta = _text_keys(safe_load(path, label=_LABEL), path)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES):
        raise corrupt(_LABEL, path, "label_names should be a list of 10 class names")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _labelled(parts: list[tuple[np.ndarray, np.ndarray]], classes: tuple[str, ...], name: str):
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return LabelledImages(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels),
        classes=classes,
        max_value=255,
        name=name,
    )


def load_cifar10(data_dir: str | os.PathLike[str]) -> tuple[LabelledImages, LabelledImages]:
    """CIFAR-10 train (50000) and test (10000) from the python pickle batches.

    ``data_dir`` is either ``cifar-10-batches-py`` itself or the directory that holds it (where
    ``cifar-10-python.tar.gz`` was extracted). Needs ``data_batch_1`` .. ``data_batch_5``,
    ``test_batch`` and ``batches.meta``; loading never runs code from the files (see
    :class:`SafeUnpickler`).

    Returns:
        ``(train, test)``, images ``uint8 [N, 3, 32, 32]``, ``max_value=255``, classes from
        ``batches.meta`` (``"airplane"`` .. ``"truck"``), named ``"cifar10/train"`` and
        ``"cifar10/test"``.

    Raises:
        MitigateError: a missing directory or file (named with its absolute directory), a
            corrupt batch, or a pickle that asks for anything but numpy arrays.
    """
    files = find_files(
        data_dir,
        CIFAR10_FILES,
        label=_LABEL,
        hint="download cifar-10-python.tar.gz and extract it into it",
        subdirs=("cifar-10-batches-py",),
    )
    classes = _read_classes(files["batches.meta"])
    train = _labelled([_read_batch(files[b]) for b in _TRAIN_BATCHES], classes, "cifar10/train")
    test = _labelled([_read_batch(files["test_batch"])], classes, "cifar10/test")
    return train, test
