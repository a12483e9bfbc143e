from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate.errors import MitigateError
from mitigate.selectors import (
    SCORES,
    compute_score,
    compute_scores,
    detection_metrics,
    entropy_score,
    gini_score,
    kl_score,
    least_confidence_score,
    margin_score,
    oracle_score,
    random_score,
    score_names,
    top1_diff_score,
)

ALL = [
    "margin",
    "least-confidence",
    "entropy",
    "gini",
    "top1-diff",
    "kl",
    "quantized-margin",
    "random",
    "oracle",
]
UNCERTAINTY = ["margin", "least-confidence", "entropy", "gini"]


# ---- independent NumPy references -----------------------------------------------------------


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_margin(z: np.ndarray) -> np.ndarray:
    p = np.sort(np.exp(np_log_softmax(z)), axis=1)
    return 1.0 - (p[:, -1] - p[:, -2])


def np_reference(name: str, fp: np.ndarray, q: np.ndarray) -> np.ndarray:
    log_p, log_q = np_log_softmax(fp), np_log_softmax(q)
    p, pq = np.exp(log_p), np.exp(log_q)
    top = fp.argmax(axis=1)
    rows = np.arange(fp.shape[0])
    if name == "margin":
        return np_margin(fp)
    if name == "least-confidence":
        return 1.0 - p.max(axis=1)
    if name == "entropy":
        return -(p * log_p).sum(axis=1)
    if name == "gini":
        return 1.0 - (p**2).sum(axis=1)
    if name == "top1-diff":
        return p[rows, top] - pq[rows, top]
    if name == "kl":
        return (p * (log_p - log_q)).sum(axis=1)
    if name == "quantized-margin":
        return np_margin(q)
    if name == "oracle":
        return (fp.argmax(axis=1) != q.argmax(axis=1)) + 0.5 * np_margin(fp)
    raise KeyError(name)


def np_lowbias32(x: np.ndarray) -> np.ndarray:
    # Native uint32 wrap-around: an independent check of the torch int64 emulation.
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def np_random(index: np.ndarray, seed: int) -> np.ndarray:
    import zlib

    data = (seed % 2**64).to_bytes(8, "little")
    a = np.uint32(zlib.crc32(b"mitigate.random/a" + data))
    b = np.uint32(zlib.crc32(b"mitigate.random/b" + data))
    index = index.astype(np.uint64)
    low = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    high = (index >> np.uint64(32)).astype(np.uint32)
    key = np_lowbias32(np_lowbias32(high ^ a) ^ low)
    hi = np_lowbias32(key ^ b).astype(np.uint64)
    lo = (np_lowbias32(hi.astype(np.uint32) ^ a) >> np.uint32(11)).astype(np.uint64)
    return (hi * np.uint64(2**21) + lo).astype(np.float64) / 2.0**53


def random_pair(n: int = 300, c: int = 7, scale: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    fp = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    q = fp + 0.5 * torch.randn(n, c, generator=g, dtype=torch.float64)
    return fp, q


# ---- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ALL if n != "random"])
@pytest.mark.parametrize("scale", [0.1, 3.0, 40.0])
def test_scores_match_numpy_reference(name: str, scale: float) -> None:
    fp, q = random_pair(scale=scale, seed=int(scale * 10))
    got = compute_score(name, fp, q)
    want = np_reference(name, fp.numpy(), q.numpy())
    assert got.dtype == torch.float64 and got.shape == (fp.shape[0],)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)


def test_random_matches_numpy_hash_and_ignores_batching() -> None:
    index = torch.cat([torch.arange(2000), torch.tensor([2**32 - 1, 2**32, 2**40 + 7])])
    for seed in (0, 1, 2**70 + 3):
        got = random_score(index, seed=seed)
        np.testing.assert_array_equal(got.numpy(), np_random(index.numpy(), seed))
    full = compute_score("random", torch.zeros(2000, 3), seed=5)
    part = compute_score("random", torch.zeros(500, 3), index=torch.arange(700, 1200), seed=5)
    assert torch.equal(full[700:1200], part)
    assert not torch.equal(full, compute_score("random", torch.zeros(2000, 3), seed=6))


def test_random_is_uniform_in_unit_interval() -> None:
    values = random_score(torch.arange(20_000), seed=11)
    assert float(values.min()) >= 0.0 and float(values.max()) < 1.0
    counts = torch.histc(values, bins=10, min=0.0, max=1.0)
    assert float(((counts - 2000) ** 2 / 2000).sum()) < 30  # chi-square, 9 dof
    assert torch.unique(values).shape[0] == 20_000


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_uniform_scores_at_least_one_hot(name: str) -> None:
    uniform = torch.zeros(1, 10)
    one_hot = torch.tensor([[60.0] + [0.0] * 9])
    assert compute_score(name, uniform) >= compute_score(name, one_hot)
    assert float(compute_score(name, one_hot)) == pytest.approx(0.0, abs=1e-20)
    # Same for the quantized model's own margin.
    assert compute_score("quantized-margin", one_hot, uniform) >= compute_score(
        "quantized-margin", one_hot, one_hot
    )


@settings(max_examples=40, deadline=None, database=None)
@given(
    logits=st.lists(st.lists(st.floats(-30, 30), min_size=3, max_size=3), min_size=1, max_size=6),
    shift=st.floats(-500, 500),
    seed=st.integers(0, 2**31),
)
def test_scores_invariant_to_constant_shift(logits: list, shift: float, seed: int) -> None:
    fp = torch.tensor(logits, dtype=torch.float64)
    q = fp.flip(1) * 0.5
    base = compute_scores(ALL, fp, q, seed=seed)
    per_row = torch.linspace(-shift, shift, fp.shape[0], dtype=torch.float64)[:, None]
    shifted = compute_scores(ALL, fp + shift, q + per_row, seed=seed)
    # Which class is top-1 is not well defined under a near-tie, so the two scores that use
    # argmax are compared only where both models have a clear winner.
    clear = (_top2_gap(fp) > 1e-6) & (_top2_gap(q) > 1e-6)
    for name in ALL:
        rows = clear if name in ("top1-diff", "oracle") else slice(None)
        torch.testing.assert_close(shifted[name][rows], base[name][rows], rtol=0, atol=1e-9)


def _top2_gap(logits: torch.Tensor) -> torch.Tensor:
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


@settings(max_examples=40, deadline=None, database=None)
@given(
    logits=st.lists(st.lists(st.floats(-50, 50), min_size=4, max_size=4), min_size=1, max_size=6)
)
def test_uncertainty_ranges(logits: list) -> None:
    fp = torch.tensor(logits)
    for name, high in [("margin", 1.0), ("least-confidence", 0.75), ("gini", 0.75)]:
        values = compute_score(name, fp)
        assert bool(((values >= -1e-12) & (values <= high + 1e-12)).all())
    assert bool((entropy_score(fp) <= np.log(4) + 1e-12).all())
    assert bool((kl_score(fp, fp.flip(1)) >= 0).all())


def test_oracle_has_auroc_one_and_fills_budget_by_margin() -> None:
    for seed in range(5):
        fp, q = random_pair(n=3000, c=5, scale=1.0, seed=seed)
        truth = fp.argmax(1) != q.argmax(1)
        oracle = compute_score("oracle", fp, q)
        assert detection_metrics(oracle, truth, budget=0.5)["auroc"] == 1.0
        assert bool((oracle[truth] >= 1.0).all()) and bool((oracle[~truth] <= 0.5).all())
        torch.testing.assert_close(oracle[~truth], 0.5 * margin_score(fp)[~truth])


def test_public_functions_equal_registry() -> None:
    fp, q = random_pair(n=50)
    assert torch.equal(margin_score(fp), compute_score("margin", fp))
    assert torch.equal(least_confidence_score(fp), compute_score("least-confidence", fp))
    assert torch.equal(entropy_score(fp), compute_score("entropy", fp))
    assert torch.equal(gini_score(fp), compute_score("gini", fp))
    assert torch.equal(top1_diff_score(fp, q), compute_score("top1-diff", fp, q))
    assert torch.equal(kl_score(fp, q), compute_score("kl", fp, q))
    assert torch.equal(margin_score(q), compute_score("quantized-margin", fp, q))
    assert torch.equal(oracle_score(fp, q), compute_score("oracle", fp, q))


def test_float32_input_and_large_logits() -> None:
    fp, q = random_pair(n=40)
    torch.testing.assert_close(compute_score("kl", fp.float(), q.float()), kl_score(fp, q))
    huge = torch.tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]])
    assert torch.equal(margin_score(huge), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert bool(torch.isfinite(compute_scores(ALL, huge, huge.flip(1))["kl"]).all())


def test_registry_and_names() -> None:
    assert list(SCORES) == ALL == score_names()
    assert score_names(fp_only=True) == ["margin", "least-confidence", "entropy", "gini", "random"]
    for name, spec in SCORES.items():
        assert spec.name == name and spec.description
        assert spec.needs_quantized == (name not in score_names(fp_only=True))


def test_errors() -> None:
    fp, q = random_pair(n=4, c=3)
    with pytest.raises(MitigateError, match=r"unknown score 'mrgin'; valid choices: margin, "):
        compute_score("mrgin", fp)
    with pytest.raises(MitigateError, match="'kl' needs quantized_logits.*margin, least"):
        compute_score("kl", fp)
    with pytest.raises(MitigateError, match=r"does not match fp_logits \[4, 3\]"):
        compute_score("margin", fp, q[:, :2])
    with pytest.raises(MitigateError, match=r"shape \[N, C\] with C >= 2"):
        compute_score("margin", fp[:, 0])
    with pytest.raises(MitigateError, match="C >= 2"):
        margin_score(fp[:, :1])
    with pytest.raises(MitigateError, match="floating-point logits"):
        compute_score("margin", fp.long())
    with pytest.raises(MitigateError, match="NaN or infinite"):
        compute_score("entropy", torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(MitigateError, match=r"index must be an integer tensor of shape \[4\]"):
        compute_score("random", fp, index=torch.arange(3))
    with pytest.raises(MitigateError, match="index must be an integer tensor"):
        random_score(torch.rand(3))
    with pytest.raises(MitigateError, match="seed must be an int"):
        compute_score("random", fp, seed=1.5)  # type: ignore[arg-type]
