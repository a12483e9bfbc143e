"""What every stage of a run reads its inputs from: the seeded splits, the natural-shift data
sets and which synthetic shift families are measured and which are held out."""

from __future__ import annotations

from dataclasses import dataclass

from mitigate.data.base import LabelledData
from mitigate.data.splits import Splits

__all__ = ["Data"]


@dataclass(frozen=True)
class Data:
    """The seeded splits plus any natural-shift datasets, ready for every stage.

    Every split is a :class:`~mitigate.data.base.LabelledData`: images, or texts bound to the
    vocabulary built from the training split.

    Attributes:
        splits: train, val, calibration, pool and test.
        naturals: natural-shift data sets measured beside the test split, by name.
        families: synthetic shift families measured on the test split.
        held_out: families kept out of the pool and calibration (measured only).
        fixed_splits: the splits were given as they are (a dataset function, a
            :class:`mitigate.Data`), not cut to the config's sizes.
    """

    splits: Splits
    naturals: dict[str, LabelledData]
    families: list[str]
    held_out: tuple[str, ...] = ()
    fixed_splits: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(max_len,)`` for text."""
        return self.splits.train.input_shape

    @property
    def modality(self) -> str:
        """``"image"`` or ``"text"``."""
        return self.splits.train.modality

    @property
    def classes(self) -> tuple[str, ...]:
        return self.splits.train.classes

    def digest(self, splits: tuple[str, ...] = ("train", "val"), chunk: int = 4096) -> str:
        """A digest of the model inputs and labels of ``splits`` (by default what training
        reads) and the class names: a cached model is keyed by it, so one trained on other
        data (an edited file at the same path) is never reused."""
        import hashlib

        import torch

        digest = hashlib.blake2b(repr(self.classes).encode(), digest_size=16)
        for name in splits:
            part = getattr(self.splits, name)
            digest.update(f"{name}:{len(part)}".encode())
            for start in range(0, len(part), chunk):
                x = part.batch(torch.arange(start, min(start + chunk, len(part))))
                digest.update(x.contiguous().numpy().tobytes())
            digest.update(part.labels.numpy().tobytes())
        return digest.hexdigest()

    @property
    def seen_families(self) -> list[str]:
        """Families allowed into the pool and calibration: all but the held-out ones."""
        return [f for f in self.families if f not in self.held_out]
