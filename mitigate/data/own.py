"""A user's own splits, handed to the runs as objects: :class:`Data`.

Each split may be a torch ``Dataset`` yielding ``(image, label)``, a pair of arrays
``(x, y)``, or :class:`~mitigate.data.images.LabelledImages`. Images are ``uint8`` pixels or
floats in ``[0, 1]``, ``[C, H, W]`` (or ``[H, W]`` for grey): shifts corrupt them in that
range, and the model's normalization is either part of the model or declared in the config
(``[data] mean``, ``std``), never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mitigate.data.images import LabelledImages
from mitigate.errors import MitigateError

__all__ = ["OWN_SPLITS", "Data", "own_splits"]

#: The splits a :class:`Data` may hold; only ``test`` is required.
OWN_SPLITS = ("train", "val", "calibration", "pool", "test")


@dataclass(frozen=True, eq=False)
class Data:
    """Your own splits for :func:`mitigate.evaluate`, :func:`mitigate.retrain`, ... .

    Any split but ``test`` may be left out: without ``train`` the model must be given (there
    is nothing to train it on); without ``calibration`` static int8 calibrates on training
    inputs; without ``pool`` selectors have nothing to pick from (the test split is never
    used as a pool).

    Attributes:
        test: the inputs every count is measured on.
        train, val, calibration, pool: the other splits, or ``None``.
        classes: class names, label ``i`` is ``classes[i]``; default ``"0"``, ``"1"``, ...

    Example:
        >>> import torch
        >>> x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 2
        >>> data = Data(test=(x, y), pool=(x, y))
        >>> splits, notes = own_splits(data)
        >>> len(splits["test"]), splits["train"].input_shape, splits["test"].classes
        (20, (1, 8, 8), ('0', '1'))
    """

    test: Any
    train: Any = None
    val: Any = None
    calibration: Any = None
    pool: Any = None
    classes: Sequence[str] | None = None

    def digest(self) -> str:
        """A digest of every split's images and labels: what a cached result is keyed by."""
        import hashlib

        splits, _ = own_splits(self)
        digest = hashlib.blake2b(digest_size=16)
        for name in OWN_SPLITS:
            split = splits[name]
            digest.update(f"{name}:{tuple(split.images.shape)}:{split.images.dtype}".encode())
            digest.update(split.images.contiguous().numpy().tobytes())
            digest.update(split.labels.numpy().tobytes())
        digest.update(repr(splits["test"].classes).encode())
        return digest.hexdigest()


def own_splits(data: Data) -> tuple[dict[str, LabelledImages], list[str]]:
    """Every split of ``data`` as :class:`LabelledImages` with one storage type, one input
    shape and one class list (absent splits are empty), and notes on what was left out.

    Raises:
        MitigateError: no test split, a split that is not a dataset or ``(x, y)``, images
            outside ``[0, 1]`` or NaN, shapes that differ between splits, bad labels.
    """
    if not isinstance(data, Data):
        raise MitigateError(f"data must be mitigate.Data, got {type(data).__name__}")
    given = {f.name: getattr(data, f.name) for f in fields(data) if f.name in OWN_SPLITS}
    if given["test"] is None:
        raise MitigateError("mitigate.Data needs a test split: every count is measured on it")
    arrays = {name: _arrays(value, name) for name, value in given.items() if value is not None}
    shapes = {name: tuple(x.shape[1:]) for name, (x, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        shown = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise MitigateError(f"mitigate.Data splits hold images of different shapes: {shown}")
    classes = _classes(data.classes, arrays)
    as_float = any(x.dtype != torch.uint8 for x, _ in arrays.values())
    shape = shapes["test"]
    splits = {}
    for name in OWN_SPLITS:
        x, y = arrays.get(name, (torch.zeros((0, *shape), dtype=torch.uint8), torch.zeros(0)))
        if as_float and x.dtype == torch.uint8:
            x = x.to(torch.float32) / 255  # one storage for all splits: float [0, 1]
        splits[name] = LabelledImages(
            x, y.to(torch.int64), classes, 1 if as_float else 255, name=name
        )
    notes = [_left_out(name) for name in ("train", "calibration", "pool") if name not in arrays]
    return splits, [n for n in notes if n]


def _arrays(value: Any, name: str) -> tuple[Tensor, Tensor]:
    """``(images [N, C, H, W] uint8 or float32, labels int64 [N])`` of one split."""
    if isinstance(value, LabelledImages):
        images, labels = value.images, value.labels
        if value.max_value != 255 or images.dtype != torch.uint8:
            images = images.to(torch.float32) / value.max_value
    elif isinstance(value, tuple | list) and len(value) == 2:
        images, labels = (torch.as_tensor(np.asarray(v)) for v in value)
    elif hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        images, labels = _stack(value, name)
    else:
        raise MitigateError(
            f"mitigate.Data {name} must be a torch Dataset of (image, label), a pair (x, y) "
            f"or LabelledImages, got {type(value).__name__}"
        )
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise MitigateError(
            f"mitigate.Data {name}: images must be [N, C, H, W] (or [N, H, W]) with labels [N], "
            f"got {list(images.shape)} and {list(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise MitigateError(f"mitigate.Data {name}: labels must be integers, got {labels.dtype}")
    if len(labels) and int(labels.min()) < 0:
        raise MitigateError(f"mitigate.Data {name}: label {int(labels.min())} is negative")
    return _pixels(images, name), labels


def _stack(dataset: Any, name: str) -> tuple[Tensor, Tensor]:
    """Every ``(image, label)`` item of a map-style dataset, stacked."""
    images, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise MitigateError(
                f"mitigate.Data {name}: item {i} is a {type(item).__name__}; a dataset must "
                "yield (image, label) pairs"
            )
        images.append(torch.as_tensor(np.asarray(item[0])))
        labels.append(int(item[1]))
    if not images:
        raise MitigateError(f"mitigate.Data {name} is empty; leave the split out instead")
    try:
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)
    except RuntimeError:
        raise MitigateError(
            f"mitigate.Data {name}: images have different shapes; resize them in the dataset"
        ) from None


def _pixels(images: Tensor, name: str) -> Tensor:
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.is_floating_point():
        raise MitigateError(
            f"mitigate.Data {name}: images must be uint8 or float in [0, 1], got {images.dtype}"
        )
    images = images.to(torch.float32).contiguous()
    if images.numel() and not (
        bool(torch.isfinite(images).all()) and images.min() >= 0 and images.max() <= 1
    ):
        raise MitigateError(
            f"mitigate.Data {name}: float images must lie in [0, 1] without NaN (shifts corrupt "
            "pixels in that range); declare normalization as [data] mean and std instead of "
            "normalizing the data"
        )
    return images


def _classes(names: Sequence[str] | None, arrays: dict[str, tuple[Tensor, Tensor]]) -> tuple:
    top = max((int(y.max()) for _, y in arrays.values() if len(y)), default=-1)
    if names is None:
        return tuple(str(i) for i in range(max(top + 1, 2)))
    classes = tuple(str(n) for n in names)
    if top >= len(classes):
        raise MitigateError(f"mitigate.Data has label {top} but only {len(classes)} classes")
    if len(set(classes)) != len(classes):
        raise MitigateError("mitigate.Data classes must be distinct names")
    return classes


def _left_out(name: str) -> str:
    return {
        "train": "no train split: the model must be given; strategies that train cannot run",
        "calibration": "no calibration split: static int8 calibrates on training inputs",
        "pool": "no pool split: selectors have nothing to pick from (the test split is never "
        "used as a pool)",
    }[name]
