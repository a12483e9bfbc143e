"""The one in-memory container for labelled images that every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor

__all__ = ["LabelledImages"]


@dataclass(frozen=True)
class LabelledImages:
    """Images kept in their stored integer form, converted to float one batch at a time.

    Keeping ``uint8`` pixels (not float) makes MNIST 4x and CIFAR-10 4x smaller in memory; the
    float ``[0, 1]`` view that models and shifts see is made per batch by :meth:`float_batch`.

    Attributes:
        images: ``uint8 [N, C, H, W]``.
        labels: ``int64 [N]``, class indices in ``[0, len(classes))``.
        classes: class names, index ``i`` names label ``i``.
        max_value: the stored pixel value that means 1.0 (16 for scikit-learn digits, 255 else).
        name: where the data came from, for reports (``"digits"``, ``"mnist/train"``).
        mean, std: per-channel normalization the model expects (one value for all channels,
            or one per channel), applied to every batch after any shift; empty: none.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    max_value: int = 255
    name: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    modality: ClassVar[str] = "image"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: Tensor) -> LabelledImages:
        """The images at ``index`` (``int64 [K]``), same classes and scale."""
        return replace(self, images=self.images[index], labels=self.labels[index])

    def float_batch(self, index: Tensor | slice) -> Tensor:
        """``float32 [B, C, H, W]`` in ``[0, 1]`` for the images at ``index``."""
        return self.images[index].to(torch.float32) / self.max_value

    def shift_names(self) -> list[str]:
        """The image shift families that fit this data's channel count and size."""
        from mitigate.data.shifts import shifts_for

        return shifts_for(self.input_shape)[0]

    def batch(
        self, index: Tensor | slice, shift: str | None = None, severity: int = 0, seed: int = 0
    ) -> Tensor:
        """``float32 [B, C, H, W]`` in ``[0, 1]`` for the images at ``index``, corrupted with
        :func:`mitigate.data.shifts.apply_shift` when ``shift`` is given (``index`` is also
        what the shift hashes), then normalized with ``mean`` and ``std`` if set."""
        x = self.float_batch(index)
        if shift is not None:
            from mitigate.data.base import as_index
            from mitigate.data.shifts import apply_shift

            x = apply_shift(x, shift, severity, seed=seed, index=as_index(index, len(self)))
        if self.mean:
            shape = (1, -1, 1, 1) if len(self.mean) > 1 else (1,)
            mean = torch.tensor(self.mean, dtype=x.dtype).view(shape)
            x = (x - mean) / torch.tensor(self.std, dtype=x.dtype).view(shape)
        return x
