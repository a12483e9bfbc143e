from __future__ import annotations

import numpy as np
import pytest
import torch

from mitigate.errors import MitigateError
from mitigate.selectors import StreamingTopK, resolve_budget, select


def np_select(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Reference: sort by (score descending, index ascending) with lexsort."""
    order = np.lexsort((np.arange(scores.shape[0]), -scores))
    if exclude is not None:
        order = order[~np.isin(order, exclude)]
    return order[:k]


def np_round_robin(
    scores: np.ndarray, labels: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> list[int]:
    """Reference: explicit rounds; in each round the classes' next-best in score order."""
    order = np_select(scores, scores.shape[0], exclude)
    queues = {c: [int(i) for i in order if labels[i] == c] for c in np.unique(labels)}
    picked: list[int] = []
    while len(picked) < k and any(queues.values()):
        heads = [q.pop(0) for q in queues.values() if q]
        heads.sort(key=lambda i: (-scores[i], i))
        picked += heads
    return picked[:k]


def tied_scores(n: int, levels: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n,), generator=g).to(torch.float64) / levels


# ---- resolve_budget -------------------------------------------------------------------------


def test_resolve_budget() -> None:
    assert resolve_budget(0, 10) == 0
    assert resolve_budget(7, 10) == 7
    assert resolve_budget(11, 10) == 10
    assert resolve_budget(np.int64(3), 10) == 3
    assert resolve_budget(0.3, 10) == 3
    assert resolve_budget(0.15, 10) == 2  # halves round up, despite 0.15 * 10 < 1.5 in floats
    assert resolve_budget(0.01, 10) == 0
    assert resolve_budget(1.0, 10) == 10
    assert resolve_budget(0.5, 0) == 0


@pytest.mark.parametrize(
    ("budget", "match"),
    [
        (-1, "count must be >= 0"),
        (0.0, r"fraction must be in \(0, 1\]"),
        (1.5, "pass an int for a count"),
        (float("nan"), "fraction"),
        (True, "int count or a float fraction"),
        ("10", "int count or a float fraction"),
    ],
)
def test_resolve_budget_errors(budget: object, match: str) -> None:
    with pytest.raises(MitigateError, match=match):
        resolve_budget(budget, 10)  # type: ignore[arg-type]


# ---- select ---------------------------------------------------------------------------------


def test_select_matches_numpy_with_ties() -> None:
    for seed in range(5):
        scores = tied_scores(500, levels=7, seed=seed)
        for k in (0, 1, 50, 499, 500, 900):
            got = select(scores, k)
            assert got.dtype == torch.int64
            np.testing.assert_array_equal(got.numpy(), np_select(scores.numpy(), k))


def test_select_order_and_ties() -> None:
    scores = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.9])
    assert select(scores, 5).tolist() == [1, 4, 0, 2, 3]
    assert select(scores, 3).tolist() == [1, 4, 0]
    assert select(scores, 0).tolist() == []
    assert select(scores, 100).tolist() == [1, 4, 0, 2, 3]
    assert select(scores, 0.4).tolist() == [1, 4]
    assert select(torch.tensor([3, 1, 3]), 2).tolist() == [0, 2]  # integer scores
    assert select(torch.empty(0), 5).tolist() == []


def test_select_prefix_property() -> None:
    scores = tied_scores(300, levels=5, seed=1)
    full = select(scores, 300)
    for k in (1, 17, 150):
        assert torch.equal(select(scores, k), full[:k])


def test_select_exclude() -> None:
    scores = tied_scores(200, levels=9, seed=2)
    exclude = torch.tensor([0, 5, 5, 17, 199, 60])
    got = select(scores, 30, exclude=exclude)
    np.testing.assert_array_equal(got.numpy(), np_select(scores.numpy(), 30, exclude.numpy()))
    mask = torch.zeros(200, dtype=torch.bool)
    mask[exclude] = True
    assert torch.equal(select(scores, 30, exclude=mask), got)
    # The budget counts the pool; it is capped by what is left after exclusion.
    assert select(scores, 1.0, exclude=exclude).shape[0] == 200 - 5
    assert select(scores, 10, exclude=torch.ones(200, dtype=torch.bool)).tolist() == []
    assert torch.equal(
        select(scores, 30, exclude=torch.tensor([], dtype=torch.int64)), select(scores, 30)
    )


def test_select_class_balanced_counts_and_order() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2])
    # Round 1: 0 (class 0), 4 (class 1), 7 (class 2); round 2: 1, 5, 8; round 3: 2, 6; 3.
    assert select(scores, 9, labels=labels, class_balanced=True).tolist() == [
        0,
        4,
        7,
        1,
        5,
        8,
        2,
        6,
        3,
    ]
    got = select(scores, 6, labels=labels, class_balanced=True)
    assert torch.bincount(labels[got]).tolist() == [2, 2, 2]
    # Class 2 runs out after two: its unused share goes round-robin to the others.
    got = select(scores, 8, labels=labels, class_balanced=True)
    assert torch.bincount(labels[got]).tolist() == [3, 3, 2]
    # Excluded inputs do not count for their class.
    got = select(scores, 3, labels=labels, class_balanced=True, exclude=torch.tensor([0, 4]))
    assert got.tolist() == [1, 5, 7]
    # Labels alone do not balance.
    assert select(scores, 3, labels=labels).tolist() == [0, 1, 2]


def test_select_class_balanced_matches_reference() -> None:
    g = torch.Generator().manual_seed(3)
    for seed in range(4):
        scores = tied_scores(400, levels=11, seed=seed)
        labels = torch.randint(0, 6, (400,), generator=g)
        labels[labels == 5] = torch.randint(0, 2, ((labels == 5).sum(),), generator=g) + 20
        for k in (1, 7, 60, 333, 400):
            got = select(scores, k, labels=labels, class_balanced=True)
            assert got.tolist() == np_round_robin(scores.numpy(), labels.numpy(), k)
            # Balanced while every class still has candidates (the smallest holds >= 25).
            counts = torch.unique(labels[got], return_counts=True)[1]
            assert int(counts.max() - counts.min()) <= 1 or k > 100
            exclude = torch.randperm(400, generator=g)[:150]
            got = select(scores, k, labels=labels, class_balanced=True, exclude=exclude)
            want = np_round_robin(scores.numpy(), labels.numpy(), k, exclude.numpy())
            assert got.tolist() == want


def test_select_errors() -> None:
    scores = torch.rand(5)
    with pytest.raises(MitigateError, match=r"1-D tensor of shape \[N\], got \[5, 1\]"):
        select(scores[:, None], 2)
    with pytest.raises(MitigateError, match="contain NaN"):
        select(torch.tensor([0.1, float("nan")]), 1)
    with pytest.raises(MitigateError, match="class_balanced=True needs labels"):
        select(scores, 2, class_balanced=True)
    with pytest.raises(MitigateError, match=r"labels must be an integer tensor of shape \[5\]"):
        select(scores, 2, labels=torch.zeros(4, dtype=torch.long), class_balanced=True)
    with pytest.raises(MitigateError, match=r"exclude indices must be in \[0, 5\)"):
        select(scores, 2, exclude=torch.tensor([5]))
    with pytest.raises(MitigateError, match=r"exclude mask must have shape \[5\]"):
        select(scores, 2, exclude=torch.zeros(4, dtype=torch.bool))
    with pytest.raises(MitigateError, match="integer indices"):
        select(scores, 2, exclude=torch.tensor([1.0]))


# ---- streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 10, 128, 1000, 5000])
def test_streaming_equals_in_memory(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    scores = tied_scores(3000, levels=50, seed=k)
    perm = torch.randperm(3000, generator=g)  # shuffled order, uneven batches
    sizes = torch.randint(1, 400, (100,), generator=g).tolist()
    top, start = StreamingTopK(k), 0
    for size in sizes:
        index = perm[start : start + size]
        top.update(scores[index], index)
        start += size
        if start >= 3000:
            break
    assert top.n_seen == 3000
    expected = select(scores, k)
    assert torch.equal(top.result(), expected)
    assert torch.equal(top.values, scores[expected])


def test_streaming_resume_and_empty() -> None:
    scores = tied_scores(1000, levels=20, seed=9)
    first = StreamingTopK(25)
    first.update(scores[:400], torch.arange(400))
    first.update(torch.empty(0), torch.empty(0, dtype=torch.long))
    resumed = StreamingTopK(25)
    resumed.load_state_dict(first.state_dict())
    resumed.update(scores[400:], torch.arange(400, 1000))
    assert resumed.n_seen == 1000
    assert torch.equal(resumed.result(), select(scores, 25))
    assert StreamingTopK(3).result().tolist() == []
    with pytest.raises(MitigateError, match="state has k=25 but this StreamingTopK has 3"):
        StreamingTopK(3).load_state_dict(first.state_dict())


def test_streaming_errors() -> None:
    with pytest.raises(MitigateError, match="k must be an int >= 0"):
        StreamingTopK(-1)
    top = StreamingTopK(2)
    with pytest.raises(MitigateError, match=r"index must be an integer tensor of shape \[3\]"):
        top.update(torch.rand(3), torch.arange(2))
    with pytest.raises(MitigateError, match="index must be an integer tensor"):
        top.update(torch.rand(3), torch.rand(3))
    with pytest.raises(MitigateError, match="contain NaN"):
        top.update(torch.tensor([float("nan")]), torch.tensor([0]))
