"""Synthetic text shifts: typos, dropped and shuffled words, casing/punctuation, unknown words.

Every family acts on the raw string's whitespace-separated words, has severities 1..5, and is
deterministic from ``(seed, family, severity, dataset index)``: each word of each text gets its
own uniform draws from the stateless hash in :mod:`mitigate.data.shifts._rng`, keyed by the
text's dataset index and the word's position, never by the batch. The draws do not depend on
severity (common random numbers), so the words changed at severity ``s`` are also changed, the
same way, at ``s + 1``: a higher severity is a stronger version of the same shift.

=================  ==========================================================================
family             what changes (severity 1 -> 5)
=================  ==========================================================================
char-typo          each word, with probability 5% -> 45%: swap two adjacent letters, drop one
                   or insert a random one
word-dropout       each word dropped with probability 5% -> 35%
word-shuffle       words shuffled locally: word ``i`` moves to the rank of ``i + k * u``,
                   ``u ~ U(0, 1)``, ``k`` 1.5 -> 6 (a word moves at most ``k`` places)
case-punct         each word, with probability 10% -> 60%: upper/title case, a punctuation
                   mark added, or its punctuation removed (the tokenizer lowercases, so a model
                   sees only the punctuation changes)
oov-substitution   each word, with probability 5% -> 35%, replaced by a made-up consonant
                   string that no vocabulary holds (it becomes ``<unk>``)
=================  ==========================================================================

Example:
    >>> import torch
    >>> texts = ["the film was good", "a truly bad film"]
    >>> index = torch.tensor([0, 1])
    >>> apply_text_shift(texts, "char-typo", 5, seed=0, index=index)
    ['the film was good', 'a truyl bad iflm']
    >>> apply_text_shift(texts, "oov-substitution", 5, seed=0, index=index)
    ['gpqgmgq film zkxxhwd txvf', 'a truly bad film']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from mitigate.data.shifts._rng import ImageRandom
from mitigate.errors import MitigateError, unknown_choice

__all__ = [
    "TEXT_SHIFTS",
    "TextShift",
    "apply_text_shift",
    "text_shift_names",
]

SEVERITIES = (1, 2, 3, 4, 5)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_CONSONANTS = "bcdfghjklmnpqrstvwxz"
_MARKS = "!?.,;:"


class _Draws:
    """Uniform draws ``[B][L]`` by label for one batch; row ``i`` keyed by text ``index[i]``."""

    def __init__(self, seed: int, name: str, index: Tensor, length: int) -> None:
        self._rnd = ImageRandom(seed, name, index)
        self._length = length

    def __call__(self, label: str) -> list[list[float]]:
        return self._rnd.uniform(label, (self._length,)).tolist()


# One family: (words of each text, severity parameter, draws) -> new words of each text.
_Fn = Callable[[list[list[str]], float, _Draws], list[list[str]]]


@dataclass(frozen=True)
class TextShift:
    """One text shift family.

    Attributes:
        name: registry name, e.g. ``"char-typo"``.
        description: one line for help texts.
        levels: the family's parameter at severities 1..5 (a probability or a window).
    """

    name: str
    description: str
    levels: tuple[float, ...]


def _typo(word: str, kind: float, pos: float, char: float) -> str:
    letter = _LETTERS[int(char * len(_LETTERS))]
    n = len(word)
    if kind < 1 / 3 and n >= 2:  # swap two adjacent letters
        i = int(pos * (n - 1))
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind < 2 / 3 and n >= 2:  # drop one letter
        i = int(pos * n)
        return word[:i] + word[i + 1 :]
    i = int(pos * (n + 1))  # insert a random letter
    return word[:i] + letter + word[i:]


def _char_typo(words: list[list[str]], p: float, draws: _Draws) -> list[list[str]]:
    apply, kind, pos, char = draws("apply"), draws("kind"), draws("pos"), draws("char")
    return [
        [
            _typo(w, kind[b][j], pos[b][j], char[b][j]) if apply[b][j] < p else w
            for j, w in enumerate(row)
        ]
        for b, row in enumerate(words)
    ]


def _word_dropout(words: list[list[str]], p: float, draws: _Draws) -> list[list[str]]:
    keep = draws("keep")
    return [[w for j, w in enumerate(row) if keep[b][j] >= p] for b, row in enumerate(words)]


def _word_shuffle(words: list[list[str]], k: float, draws: _Draws) -> list[list[str]]:
    u = draws("shuffle")
    out = []
    for b, row in enumerate(words):
        order = sorted(range(len(row)), key=lambda j, b=b: (j + k * u[b][j], j))
        out.append([row[j] for j in order])
    return out


def _case_punct(words: list[list[str]], p: float, draws: _Draws) -> list[list[str]]:
    apply, kind, mark = draws("apply"), draws("kind"), draws("mark")
    out = []
    for b, row in enumerate(words):
        new = []
        for j, w in enumerate(row):
            if apply[b][j] >= p:
                new.append(w)
                continue
            stripped = w.strip(_MARKS)
            if kind[b][j] < 0.4:  # casing: invisible after the lowercasing tokenizer
                w = w.upper() if kind[b][j] < 0.2 else w.title()
            elif kind[b][j] < 0.7 or stripped == w or not stripped:
                w = w + _MARKS[int(mark[b][j] * len(_MARKS))]
            else:
                w = stripped
            new.append(w)
        out.append(new)
    return out


def _made_up(length: float, letters: list[float]) -> str:
    n = 4 + int(length * 5)  # 4..8 consonants: no English word, so never in a vocabulary
    return "".join(_CONSONANTS[int(u * len(_CONSONANTS))] for u in letters[:n])


def _oov(words: list[list[str]], p: float, draws: _Draws) -> list[list[str]]:
    apply, length = draws("apply"), draws("length")
    letters = [draws(f"letter{i}") for i in range(8)]
    return [
        [
            _made_up(length[b][j], [c[b][j] for c in letters]) if apply[b][j] < p else w
            for j, w in enumerate(row)
        ]
        for b, row in enumerate(words)
    ]


_ENTRIES: tuple[tuple[TextShift, _Fn], ...] = (
    (
        TextShift(
            "char-typo",
            "swap, drop or insert a letter in each word with probability 5%..45%",
            (0.05, 0.1, 0.2, 0.3, 0.45),
        ),
        _char_typo,
    ),
    (
        TextShift(
            "word-dropout", "drop each word with probability 5%..35%", (0.05, 0.1, 0.15, 0.25, 0.35)
        ),
        _word_dropout,
    ),
    (
        TextShift(
            "word-shuffle",
            "shuffle words locally, each moving up to 1.5..6 places",
            (1.5, 2.0, 3.0, 4.0, 6.0),
        ),
        _word_shuffle,
    ),
    (
        TextShift(
            "case-punct",
            "change a word's casing or punctuation with probability 10%..60%",
            (0.1, 0.2, 0.3, 0.45, 0.6),
        ),
        _case_punct,
    ),
    (
        TextShift(
            "oov-substitution",
            "replace each word by a made-up unknown word with probability 5%..35%",
            (0.05, 0.1, 0.15, 0.25, 0.35),
        ),
        _oov,
    ),
)
TEXT_SHIFTS = MappingProxyType({s.name: s for s, _ in _ENTRIES})
_APPLY = MappingProxyType({s.name: fn for s, fn in _ENTRIES})


def text_shift_names() -> list[str]:
    """The text shift families, in the documented order.

    Example:
        >>> text_shift_names()[:2]
        ['char-typo', 'word-dropout']
    """
    return list(TEXT_SHIFTS)


def apply_text_shift(
    texts: Sequence[str], name: str, severity: int, *, seed: int, index: Tensor
) -> list[str]:
    """Shift a batch of raw texts with one family at one severity.

    Output ``i`` depends only on ``(texts[i], seed, name, severity, index[i])``. Words are
    the whitespace-separated parts of each text and are joined back with single spaces.

    Args:
        texts: ``B`` strings.
        name: a family from :func:`text_shift_names`.
        severity: 1 (mild) to 5 (strong).
        seed: the experiment seed.
        index: ``int [B]``, the dataset index of each text.

    Raises:
        MitigateError: unknown name, severity outside 1..5, or a badly shaped ``index``.
    """
    if name not in TEXT_SHIFTS:
        raise unknown_choice("text shift", name, TEXT_SHIFTS)
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise unknown_choice("severity", severity, SEVERITIES)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MitigateError(f"seed must be an int, got {type(seed).__name__}")
    if (
        not isinstance(index, Tensor)
        or index.dtype == torch.bool
        or index.is_floating_point()
        or tuple(index.shape) != (len(texts),)
    ):
        raise MitigateError(
            f"index must be an integer tensor of shape [{len(texts)}] (the dataset index of "
            "each text)"
        )
    words = [str(t).split() for t in texts]
    if not words:
        return []
    draws = _Draws(seed, name, index.to(torch.int64), max(1, *(len(w) for w in words)))
    shifted = _APPLY[name](words, TEXT_SHIFTS[name].levels[severity - 1], draws)
    return [" ".join(row) for row in shifted]
