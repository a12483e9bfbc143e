"""The embedded default dataset: scikit-learn's 1797 handwritten 8x8 digits (no download)."""

from __future__ import annotations

import numpy as np
import torch

from mitigate.data.images import LabelledImages

__all__ = ["DIGITS_CLASSES", "load_digits"]

DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


def load_digits() -> LabelledImages:
    """scikit-learn's ``load_digits``: 1797 real handwritten digits, 8x8, pixel values 0..16.

    Ships inside scikit-learn, so it needs no files and no network; the default dataset for
    demos and tests. It has no official test part: split it with
    :func:`mitigate.data.splits.make_splits`.

    Returns:
        Images ``uint8 [1797, 1, 8, 8]`` with ``max_value=16`` (so ``float_batch`` gives
        ``[0, 1]``), labels ``int64 [1797]``, classes ``"0"`` .. ``"9"``, named ``"digits"``.

    Example:
        >>> data = load_digits()
        >>> data.images.shape, data.max_value, data.classes[:3]
        (torch.Size([1797, 1, 8, 8]), 16, ('0', '1', '2'))
    """
    from sklearn.datasets import load_digits as _sklearn_load_digits

    bunch = _sklearn_load_digits()
    images = np.asarray(bunch.images).reshape(-1, 1, 8, 8)  # float64 holding integers 0..16
    return LabelledImages(
        images=torch.from_numpy(np.rint(images).astype(np.uint8)),
        labels=torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)),
        classes=DIGITS_CLASSES,
        max_value=16,
        name="digits",
    )
