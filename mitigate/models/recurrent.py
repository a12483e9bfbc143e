"""LSTM and GRU sentiment classifiers: embedding -> one recurrent layer -> linear.

The study's IMDb models, sized for a CPU: token ids ``[N, L]`` (left-padded with id 0, see
:mod:`mitigate.data.text.vocab`) are embedded, read by one unidirectional recurrent layer,
and the state after the last token is classified. Because padding goes in front, the last
step always follows real text; the padding embedding is kept at zero.

``int8-dynamic`` quantizes the recurrent and linear layers (the embedding stays float),
``fp16`` / ``bf16`` cast everything, ``int4-weight`` rounds the recurrent and linear weights.
Static int8 is refused: torch.ao has no static quantized GRU, and its static LSTM path
(a custom module swap) fails at run time on CPU in torch 2.13.

Example:
    >>> import torch
    >>> model = LSTMClassifier(vocab_size=100, seq_len=12, num_classes=3)
    >>> model(torch.randint(0, 100, (2, 12))).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mitigate.models.base import ZooModel

__all__ = ["GRUClassifier", "LSTMClassifier", "RecurrentClassifier"]


class RecurrentClassifier(ZooModel):
    """Embedding -> recurrent layer -> dropout -> linear on the last state.

    Args:
        vocab_size: number of token ids (the vocabulary size, ``<pad>`` and ``<unk>``
            included).
        seq_len: tokens per input ``L`` (recorded as ``input_shape == (L,)``; the model itself
            accepts any length).
        num_classes: number of logits.
        embed_dim: embedding width.
        hidden_size: recurrent state width.
        dropout: dropout on the last state while training.

    Shapes:
        ``x: int64 [N, L]`` token ids -> ``logits: [N, num_classes]``.
    """

    modality: ClassVar[str] = "text"
    cell: ClassVar[type[nn.RNNBase]] = nn.LSTM

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        num_classes: int,
        embed_dim: int = 64,
        hidden_size: int = 64,
        dropout: float = 0.2,
    ) -> None:
        nn.Module.__init__(self)
        self.input_shape = (seq_len,)  # type: ignore[assignment]
        self.num_classes = num_classes
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = self.cell(embed_dim, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(x))
        return self.classifier(self.dropout(out[:, -1]))

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, {super().extra_repr()}"


class LSTMClassifier(RecurrentClassifier):
    """The LSTM sentiment classifier (see :class:`RecurrentClassifier`)."""

    arch = "lstm"
    cell = nn.LSTM


class GRUClassifier(RecurrentClassifier):
    """The GRU sentiment classifier (see :class:`RecurrentClassifier`)."""

    arch = "gru"
    cell = nn.GRU
