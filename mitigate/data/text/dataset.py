"""The in-memory container for labelled texts: raw strings, tokenized one batch at a time.

Texts stay raw strings so text shifts (typos, dropped words ...) act on what a user would
type; :meth:`LabelledText.batch` shifts a batch, then tokenizes and pads it with the
vocabulary built from the training split. Loaders return texts without a vocabulary;
:func:`mitigate.runs.data.load_data` builds it from the training split and binds it to every
split with :meth:`LabelledText.with_vocabulary`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor

from mitigate.data.text.vocab import Vocabulary
from mitigate.errors import MitigateError

__all__ = ["LabelledText"]


@dataclass(frozen=True)
class LabelledText:
    """Labelled texts and the vocabulary that turns them into token ids.

    Attributes:
        texts: ``N`` raw strings.
        labels: ``int64 [N]``, class indices in ``[0, len(classes))``.
        classes: class names, index ``i`` names label ``i``.
        name: where the data came from, for reports (``"tweets"``, ``"imdb/test"``).
        vocabulary: token ids; ``None`` until :meth:`with_vocabulary` binds one.
        max_len: tokens per input after padding / truncation (``0`` until bound).

    Example:
        >>> from mitigate.data.text.vocab import build_vocabulary
        >>> data = LabelledText(("a good film", "a bad one"), torch.tensor([1, 0]), ("neg", "pos"))
        >>> data = data.with_vocabulary(build_vocabulary(data.texts), max_len=4)
        >>> data.input_shape, data.batch(torch.tensor([0])).tolist()
        ((4,), [[0, 2, 5, 4]])
    """

    texts: tuple[str, ...]
    labels: Tensor
    classes: tuple[str, ...]
    name: str = ""
    vocabulary: Vocabulary | None = None
    max_len: int = 0
    modality: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        if len(self.texts) != int(self.labels.shape[0]):
            raise MitigateError(
                f"text data {self.name!r} has {len(self.texts)} texts but "
                f"{int(self.labels.shape[0])} labels"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def input_shape(self) -> tuple[int]:
        """``(max_len,)``: token ids per input."""
        return (self.max_len,)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: Tensor) -> LabelledText:
        """The texts at ``index`` (``int64 [K]``), same classes and vocabulary."""
        rows = index.tolist()
        return replace(self, texts=tuple(self.texts[i] for i in rows), labels=self.labels[index])

    def with_vocabulary(self, vocabulary: Vocabulary, max_len: int) -> LabelledText:
        """The same texts, tokenized with ``vocabulary`` into ``max_len`` ids."""
        if max_len < 1:
            raise MitigateError(f"data.max_len must be >= 1, got {max_len}")
        return replace(self, vocabulary=vocabulary, max_len=int(max_len))

    def shift_names(self) -> list[str]:
        """The text shift families (:func:`mitigate.data.text.shifts.text_shift_names`)."""
        from mitigate.data.text.shifts import text_shift_names

        return text_shift_names()

    def batch(
        self, index: Tensor | slice, shift: str | None = None, severity: int = 0, seed: int = 0
    ) -> Tensor:
        """``int64 [B, max_len]`` token ids of the texts at ``index``, shifted first if asked.

        Args:
            index: ``int64 [B]`` positions (also what the shift hashes), or a slice.
            shift: a text shift family, or ``None`` for the clean texts.
            severity: 1-5 when ``shift`` is given.
            seed: the shift's seed.
        """
        if self.vocabulary is None:
            raise MitigateError(
                f"text data {self.name!r} has no vocabulary yet; bind one with with_vocabulary"
            )
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        texts = [self.texts[i] for i in index.tolist()]
        if shift is not None:
            from mitigate.data.text.shifts import apply_text_shift

            texts = apply_text_shift(texts, shift, severity, seed=seed, index=index)
        return self.vocabulary.encode_batch(texts, self.max_len)
