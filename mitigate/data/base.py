"""What every labelled data set offers the pipeline, whatever its modality.

:class:`~mitigate.data.images.LabelledImages` and :class:`~mitigate.data.text.LabelledText`
both satisfy :class:`LabelledData`; the stages that make batches (measurement groups,
calibration, the pool scan, training loaders) call :meth:`LabelledData.batch` and never ask
which one they hold.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["LabelledData", "as_index"]


@runtime_checkable
class LabelledData(Protocol):
    """Labelled inputs that make model-ready batches, shifted on request.

    Attributes:
        labels: ``int64 [N]`` class indices.
        classes: class names, index ``i`` names label ``i``.
        name: where the data came from, for reports.
        modality: ``"image"`` or ``"text"``.
    """

    labels: Tensor
    classes: tuple[str, ...]
    name: str
    modality: str

    def __len__(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input: ``(C, H, W)`` for images, ``(max_len,)`` for text."""
        ...

    @property
    def num_classes(self) -> int: ...

    def subset(self, index: Tensor) -> LabelledData: ...

    def shift_names(self) -> list[str]:
        """The synthetic shift families that apply to this data."""
        ...

    def batch(
        self, index: Tensor | slice, shift: str | None = None, severity: int = 0, seed: int = 0
    ) -> Tensor:
        """Model inputs for ``index`` (float images ``[B, C, H, W]`` in ``[0, 1]`` or token ids
        ``int64 [B, max_len]``), shifted deterministically from ``(seed, shift, severity,
        index)`` when ``shift`` is given."""
        ...


def as_index(index: Tensor | slice, length: int) -> Tensor:
    """``int64 [B]`` positions for a tensor or a slice over ``length`` inputs."""
    import torch

    if isinstance(index, slice):
        return torch.arange(length)[index]
    return index
