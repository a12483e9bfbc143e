"""Our own tokenizer and vocabulary: lowercase, regex word tokens, ``<pad>`` and ``<unk>``.

No torchtext: a regex and a frequency count are all a sentiment LSTM needs, and owning them
keeps every id stable across torch versions. The vocabulary is built from the training split
only (most frequent first, ties broken alphabetically, so the same texts always give the same
ids) and stored in the model checkpoint as a plain list of strings.

Sequences are padded and truncated to ``max_len`` *on the left*: the first ``max_len`` tokens
are kept and the padding goes in front, so a recurrent model that reads its last state sees
the real text last (Keras' ``pad_sequences`` default padding side).

Example:
    >>> vocab = build_vocabulary(["A good film.", "a bad film!"], min_freq=1)
    >>> vocab.tokens[:6]
    ('<pad>', '<unk>', 'a', 'film', '!', '.')
    >>> vocab.encode("A great film", max_len=4)
    [0, 2, 1, 3]
    >>> vocab.decode(vocab.encode("a bad film!", max_len=6))
    'a bad film !'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mitigate.errors import MitigateError

__all__ = [
    "PAD",
    "PAD_ID",
    "TOKENIZER",
    "UNK",
    "UNK_ID",
    "Vocabulary",
    "build_vocabulary",
    "tokenize",
]

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
#: Name of the tokenizer rule, stored in checkpoints so a future change is detected.
TOKENIZER = "lower-regex-v1"
# Words (with inner apostrophes: don't, it's) and each punctuation mark as its own token;
# anything else (spaces, emoji, mojibake) separates tokens and is dropped.
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[!?.,;:#@$%&*()\"-]")
_URL = re.compile(r"(?:https?://|www\.)\S+")  # one word, not a dozen pieces of a link


def tokenize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens of ``text``; a link becomes the word ``url``.

    Example:
        >>> tokenize("Don't GO there!! :( http://t.co/x1")
        ["don't", 'go', 'there', '!', '!', ':', '(', 'url']
    """
    return _TOKEN.findall(_URL.sub(" url ", text.lower()))


@dataclass(frozen=True)
class Vocabulary:
    """Token strings by id: ``tokens[0] == "<pad>"``, ``tokens[1] == "<unk>"``.

    Attributes:
        tokens: every known token, index = id.
    """

    tokens: tuple[str, ...]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[:2]) != (PAD, UNK) or len(set(self.tokens)) != len(self.tokens):
            raise MitigateError(
                f"a vocabulary must start with {PAD!r}, {UNK!r} and hold each token once"
            )
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """Token ids, ``<unk>`` for unknown tokens."""
        return [self._ids.get(t, UNK_ID) for t in tokens]

    def encode(self, text: str, max_len: int) -> list[int]:
        """The first ``max_len`` token ids of ``text``, left-padded with ``<pad>``."""
        ids = self.ids(tokenize(text))[:max_len]
        return [PAD_ID] * (max_len - len(ids)) + ids

    def encode_batch(self, texts: Sequence[str], max_len: int) -> Tensor:
        """``int64 [B, max_len]`` token ids of ``texts`` (see :meth:`encode`)."""
        rows = [self.encode(t, max_len) for t in texts]
        return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), max_len)

    def decode(self, ids: Iterable[int]) -> str:
        """Tokens of ``ids`` joined by spaces, padding left out."""
        return " ".join(self.tokens[i] for i in ids if i != PAD_ID)


def build_vocabulary(texts: Iterable[str], *, min_freq: int = 1, max_size: int = 0) -> Vocabulary:
    """The vocabulary of ``texts``: tokens seen at least ``min_freq`` times, most frequent first
    (ties alphabetical), at most ``max_size`` entries including ``<pad>`` and ``<unk>``
    (``0`` = no limit).

    Raises:
        MitigateError: ``min_freq < 1``, or ``max_size`` between 1 and 2 (no room for a word).
    """
    if min_freq < 1:
        raise MitigateError(f"data.min_freq must be >= 1, got {min_freq}")
    if max_size < 0 or 0 < max_size < 3:
        raise MitigateError(f"data.vocab_size must be 0 (no limit) or >= 3, got {max_size}")
    counts = Counter(token for text in texts for token in tokenize(text))
    ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    if max_size:
        ranked = ranked[: max_size - 2]
    return Vocabulary((PAD, UNK, *ranked))
