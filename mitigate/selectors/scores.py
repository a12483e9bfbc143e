"""Disagreement scores: one number per input, higher = more likely to disagree.

Every score takes logits of shape ``[N, C]`` (never probabilities) and returns a ``[N]``
float64 tensor on the same device. The maths runs in float64 through ``log_softmax`` so that
large logits neither overflow nor collapse into ties, and every score is invariant to adding a
constant to an input's logits.

Scores from the full-precision (FP) model alone rank an unlabelled pool before anything is
quantized: ``margin`` (``1 - (p1 - p2)``), ``least-confidence`` (``1 - p1``), ``entropy``
(nats) and ``gini`` (DeepGini, ``1 - sum p^2``). Differential scores need the quantized
model's logits too: ``top1-diff``, ``kl`` and ``quantized-margin``. ``random`` is the
baseline and ``oracle`` (the true disagreements) the upper bound.

Example:
    >>> import torch
    >>> logits = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    >>> compute_score("margin", logits).round(decimals=3)
    tensor([0.0530, 1.0000], dtype=torch.float64)
    >>> score_names(fp_only=True)
    ['margin', 'least-confidence', 'entropy', 'gini', 'random']
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mitigate._checks import describe, is_integer_tensor
from mitigate.errors import MitigateError, unknown_choice

__all__ = [
    "SCORES",
    "ScoreSpec",
    "compute_score",
    "compute_scores",
    "entropy_score",
    "gini_score",
    "kl_score",
    "least_confidence_score",
    "margin_score",
    "oracle_score",
    "random_score",
    "score_logits",
    "score_names",
    "top1_diff_score",
]

ScoreFn = Callable[[Tensor, "Tensor | None", Tensor, int], Tensor]


@dataclass(frozen=True)
class ScoreSpec:
    """One entry of the score registry.

    Attributes:
        name: kebab-case registry name, also the CLI choice.
        needs_quantized: whether the score needs the quantized model's logits.
        description: one line for ``--help`` and reports.
        fn: ``fn(fp_logits, quantized_logits, index, seed) -> [N]``; trusts its inputs, so call
            it through :func:`compute_score`, which validates them.
    """

    name: str
    needs_quantized: bool
    description: str
    fn: ScoreFn


# ---- maths on validated float64 logits ------------------------------------------------------


def _probs(logits: Tensor) -> Tensor:
    return torch.softmax(logits, dim=1)


def _margin(logits: Tensor) -> Tensor:
    top2 = _probs(logits).topk(2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


def _least_confidence(logits: Tensor) -> Tensor:
    return 1.0 - _probs(logits).amax(dim=1)


def _entropy(logits: Tensor) -> Tensor:
    log_p = torch.log_softmax(logits, dim=1)
    return (-(log_p.exp() * log_p).sum(dim=1)).clamp_min(0.0)


def _gini(logits: Tensor) -> Tensor:
    return 1.0 - _probs(logits).square().sum(dim=1)


def _top1_diff(fp_logits: Tensor, quantized_logits: Tensor) -> Tensor:
    # DiffChaser's fitness: how much probability the quantized model takes away from the FP
    # model's top-1 class (signed, in [-1, 1]; negative = the copy is even more sure of it).
    top1 = fp_logits.argmax(dim=1, keepdim=True)
    p_fp = _probs(fp_logits).gather(1, top1).squeeze(1)
    p_q = _probs(quantized_logits).gather(1, top1).squeeze(1)
    return p_fp - p_q


def _kl(fp_logits: Tensor, quantized_logits: Tensor) -> Tensor:
    log_p = torch.log_softmax(fp_logits, dim=1)
    log_q = torch.log_softmax(quantized_logits, dim=1)
    # Rounding can leave a tiny negative value where the two distributions are equal.
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).clamp_min(0.0)


def _oracle(fp_logits: Tensor, quantized_logits: Tensor) -> Tensor:
    # 1 for a disagreement plus half the FP margin score (in [0, 0.5]): disagreements score in
    # [1, 1.5], agreements in [0, 0.5], so AUROC is exactly 1 and a budget larger than the
    # disagreements is filled with the most uncertain agreements.
    disagree = fp_logits.argmax(dim=1) != quantized_logits.argmax(dim=1)
    return disagree.to(torch.float64) + 0.5 * _margin(fp_logits)


_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, constant: int) -> Tensor:
    # (x * constant) mod 2**32 for x < 2**32 without leaving int64: split the constant into
    # 16-bit halves so no intermediate product exceeds 2**49.
    hi, lo = constant >> 16, constant & 0xFFFF
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: Tensor) -> Tensor:
    # "lowbias32" integer finalizer (Chris Wellons): a bijection on 32-bit values with good
    # avalanche; only exact integer ops, so every device gives the same bits.
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _seed_words(seed: int) -> tuple[int, int]:
    # Two 32-bit words from any Python int seed, stable across processes (no hash()).
    data = (seed % 2**64).to_bytes(8, "little")
    return zlib.crc32(b"mitigate.random/a" + data), zlib.crc32(b"mitigate.random/b" + data)


def _random(index: Tensor, seed: int) -> Tensor:
    word_a, word_b = _seed_words(seed)
    index = index.to(torch.int64)
    low, high = index & _MASK32, (index >> 32) & _MASK32
    key = _hash32(_hash32(high ^ word_a) ^ low)
    bits_hi = _hash32(key ^ word_b)  # 32 bits
    bits_lo = _hash32(bits_hi ^ word_a) >> 11  # 21 bits
    # 53 random bits -> a float64 uniform on [0, 1).
    return (bits_hi * 2**21 + bits_lo).to(torch.float64) / 2.0**53


# ---- registry -------------------------------------------------------------------------------


def _needs(q: Tensor | None) -> Tensor:
    # compute_score has already checked that q is present for scores that need it.
    return q  # type: ignore[return-value]


SCORES: dict[str, ScoreSpec] = {
    spec.name: spec
    for spec in (
        ScoreSpec(
            "margin",
            False,
            "1 - (p1 - p2) of the FP model: close top-2 probabilities",
            lambda fp, q, index, seed: _margin(fp),
        ),
        ScoreSpec(
            "least-confidence",
            False,
            "1 - p1 of the FP model",
            lambda fp, q, index, seed: _least_confidence(fp),
        ),
        ScoreSpec(
            "entropy",
            False,
            "entropy of the FP model's probabilities, in nats",
            lambda fp, q, index, seed: _entropy(fp),
        ),
        ScoreSpec(
            "gini",
            False,
            "DeepGini impurity 1 - sum p^2 of the FP model",
            lambda fp, q, index, seed: _gini(fp),
        ),
        ScoreSpec(
            "top1-diff",
            True,
            "FP minus quantized probability of the FP model's top-1 class",
            lambda fp, q, index, seed: _top1_diff(fp, _needs(q)),
        ),
        ScoreSpec(
            "kl",
            True,
            "KL divergence KL(FP || quantized) of the two models' probabilities",
            lambda fp, q, index, seed: _kl(fp, _needs(q)),
        ),
        ScoreSpec(
            "quantized-margin",
            True,
            "1 - (p1 - p2) of the quantized model",
            lambda fp, q, index, seed: _margin(_needs(q)),
        ),
        ScoreSpec(
            "random",
            False,
            "seeded uniform baseline, a hash of (seed, index)",
            lambda fp, q, index, seed: _random(index, seed),
        ),
        ScoreSpec(
            "oracle",
            True,
            "upper bound: 1 for a true disagreement plus half the FP margin score",
            lambda fp, q, index, seed: _oracle(fp, _needs(q)),
        ),
    )
}


def score_names(*, fp_only: bool = False) -> list[str]:
    """Registry names in a fixed order; with ``fp_only`` only those that need no quantized model.

    Example:
        >>> score_names()[:3]
        ['margin', 'least-confidence', 'entropy']
    """
    return [name for name, spec in SCORES.items() if not (fp_only and spec.needs_quantized)]


# ---- validation at the public edge ----------------------------------------------------------


def _check_logits(logits: object, what: str) -> Tensor:
    if not isinstance(logits, Tensor):
        raise MitigateError(f"{what} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise MitigateError(
            f"{what} must have shape [N, C] with C >= 2 classes, got {list(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise MitigateError(f"{what} must be floating-point logits, got dtype {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        raise MitigateError(f"{what} contain NaN or infinite values")
    return logits.to(torch.float64)


def _check_pair(fp_logits: object, quantized_logits: object) -> tuple[Tensor, Tensor]:
    fp = _check_logits(fp_logits, "fp_logits")
    q = _check_logits(quantized_logits, "quantized_logits")
    if q.shape != fp.shape:
        raise MitigateError(
            f"quantized_logits shape {list(q.shape)} does not match fp_logits {list(fp.shape)}"
        )
    if q.device != fp.device:
        raise MitigateError(f"quantized_logits on {q.device} but fp_logits on {fp.device}")
    return fp, q


def _check_index(index: object, n: int | None, device: torch.device | None) -> Tensor:
    if index is None and n is not None:
        return torch.arange(n, device=device)
    if not is_integer_tensor(index) or index.ndim != 1 or (n is not None and index.shape[0] != n):  # type: ignore[union-attr]
        want = f"[{n}]" if n is not None else "[N]"
        raise MitigateError(
            f"index must be an integer tensor of shape {want}, got {describe(index)}"
        )
    if device is not None and index.device != device:
        raise MitigateError(f"index on {index.device} but logits on {device}")
    return index


def _check_seed(seed: object) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise MitigateError(f"seed must be an int, got {seed!r}")
    return seed


# ---- public functions -----------------------------------------------------------------------


def margin_score(logits: Tensor) -> Tensor:
    """``1 - (p1 - p2)``: 1 when the top two probabilities tie, near 0 when one class wins.

    Args:
        logits: ``[N, C]`` logits of one model.

    Returns:
        ``[N]`` float64 in ``[0, 1]``.

    Example:
        >>> margin_score(torch.tensor([[2.0, 2.0], [9.0, -9.0]])).round(decimals=4)
        tensor([1., 0.], dtype=torch.float64)
    """
    return _margin(_check_logits(logits, "logits"))


def least_confidence_score(logits: Tensor) -> Tensor:
    """``1 - p1``, in ``[0, 1 - 1/C]``. ``logits: [N, C]`` -> ``[N]`` float64."""
    return _least_confidence(_check_logits(logits, "logits"))


def entropy_score(logits: Tensor) -> Tensor:
    """Shannon entropy in nats, in ``[0, log C]``. ``logits: [N, C]`` -> ``[N]`` float64."""
    return _entropy(_check_logits(logits, "logits"))


def gini_score(logits: Tensor) -> Tensor:
    """DeepGini impurity ``1 - sum p^2``, in ``[0, 1 - 1/C]``. ``[N, C]`` -> ``[N]`` float64."""
    return _gini(_check_logits(logits, "logits"))


def top1_diff_score(fp_logits: Tensor, quantized_logits: Tensor) -> Tensor:
    """``p_fp[c] - p_q[c]`` for the FP model's top-1 class ``c``, in ``[-1, 1]``.

    The DiffChaser fitness: positive when the quantized copy moves probability away from the
    FP answer. Both inputs are ``[N, C]`` logits; returns ``[N]`` float64.
    """
    return _top1_diff(*_check_pair(fp_logits, quantized_logits))


def kl_score(fp_logits: Tensor, quantized_logits: Tensor) -> Tensor:
    """``KL(p_fp || p_q)`` in nats, ``>= 0``. Both ``[N, C]`` logits; returns ``[N]`` float64."""
    return _kl(*_check_pair(fp_logits, quantized_logits))


def oracle_score(fp_logits: Tensor, quantized_logits: Tensor) -> Tensor:
    """1 where the two argmaxes differ, plus ``0.5 * margin_score(fp_logits)`` as tie-break.

    Disagreements score in ``[1, 1.5]`` and agreements in ``[0, 0.5]``, so the oracle's AUROC
    is exactly 1 and a budget beyond the disagreements takes the most uncertain agreements.

    Example:
        >>> fp = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
        >>> oracle_score(fp, torch.tensor([[3.0, 0.0], [3.0, 0.0]])) >= 1
        tensor([False,  True])
    """
    return _oracle(*_check_pair(fp_logits, quantized_logits))


def random_score(index: Tensor, *, seed: int = 0) -> Tensor:
    """Uniform ``[0, 1)`` scores that depend only on ``(seed, index)``.

    A stateless integer hash, not a generator: the same input gets the same score however the
    pool is batched or ordered.

    Args:
        index: ``[N]`` integer position of each input in the pool.
        seed: any Python int.

    Returns:
        ``[N]`` float64.

    Example:
        >>> a = random_score(torch.arange(10), seed=3)
        >>> torch.equal(a[4:], random_score(torch.arange(4, 10), seed=3))
        True
    """
    return _random(_check_index(index, None, None), _check_seed(seed))


def compute_score(
    name: str,
    fp_logits: Tensor,
    quantized_logits: Tensor | None = None,
    *,
    index: Tensor | None = None,
    seed: int = 0,
) -> Tensor:
    """Compute the registry score ``name`` for a batch of inputs.

    Args:
        name: one of :func:`score_names`.
        fp_logits: ``[N, C]`` logits of the full-precision model.
        quantized_logits: ``[N, C]`` logits of the quantized model; required by the scores
            whose spec has ``needs_quantized``, checked for shape when given.
        index: ``[N]`` pool positions, used by ``random``; defaults to ``arange(N)``. Pass the
            real positions when scoring a pool in batches.
        seed: seed of ``random``.

    Returns:
        ``[N]`` float64 scores, higher = more likely to disagree.

    Raises:
        MitigateError: unknown name, bad shapes or dtypes, non-finite logits, or missing
            quantized logits.

    Example:
        >>> fp = torch.tensor([[3.0, 0.0], [0.2, 0.0]])
        >>> compute_score("oracle", fp, torch.tensor([[0.0, 3.0], [0.3, 0.0]])).round(decimals=2)
        tensor([1.0500, 0.4500], dtype=torch.float64)
    """
    return compute_scores([name], fp_logits, quantized_logits, index=index, seed=seed)[name]


def compute_scores(
    names: list[str] | tuple[str, ...],
    fp_logits: Tensor,
    quantized_logits: Tensor | None = None,
    *,
    index: Tensor | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """:func:`compute_score` for several names at once: ``{name: [N] float64}`` in order.

    Validates the inputs once, so it is the cheaper call when a report needs every score.

    Example:
        >>> out = compute_scores(["margin", "gini"], torch.zeros(3, 4))
        >>> [round(float(v[0]), 2) for v in out.values()]
        [1.0, 0.75]
    """
    specs = []
    for name in names:
        spec = SCORES.get(name) if isinstance(name, str) else None
        if spec is None:
            raise unknown_choice("score", name, SCORES)
        specs.append(spec)
    return score_logits(specs, fp_logits, quantized_logits, index=index, seed=seed)


def score_logits(
    specs: Sequence[ScoreSpec],
    fp_logits: Tensor,
    quantized_logits: Tensor | None = None,
    *,
    index: Tensor | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """:func:`compute_scores` for scores already looked up in :data:`SCORES`: the logits,
    index and seed are still checked (a model with NaN weights must not rank its pool), the
    names are not looked up again — the call for a loop that scores batch after batch."""
    if quantized_logits is None:
        missing = [spec.name for spec in specs if spec.needs_quantized]
        if missing:
            raise MitigateError(
                f"score {missing[0]!r} needs quantized_logits; scores from the FP model alone: "
                + ", ".join(score_names(fp_only=True))
            )
        fp, q = _check_logits(fp_logits, "fp_logits"), None
    else:
        fp, q = _check_pair(fp_logits, quantized_logits)
    idx = _check_index(index, fp.shape[0], fp.device)
    seed = _check_seed(seed)
    return {spec.name: spec.fn(fp, q, idx, seed) for spec in specs}
