"""Splits are exact in size, disjoint, stratified and reproducible from the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate.data.digits import load_digits
from mitigate.data.images import LabelledImages
from mitigate.data.splits import SPLIT_NAMES, Splits, SplitSizes, make_splits
from mitigate.errors import MitigateError

SIZES = SplitSizes(train=1000, val=100, calibration=100, pool=300, test=297)


@pytest.fixture(scope="module")
def digits() -> LabelledImages:
    return load_digits()


def toy(labels: list[int] | np.ndarray, classes: int | None = None, name="toy") -> LabelledImages:
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = len(labels)
    # Each image stores its own position, so a split's pixels can be traced to its indices.
    images = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 1, 1, 1)
    k = classes if classes is not None else int(labels.max()) + 1
    return LabelledImages(images, labels, tuple(str(i) for i in range(k)), 255, name)


def assert_stratified(split: LabelledImages, source: LabelledImages) -> None:
    counts = np.bincount(source.labels.numpy(), minlength=source.num_classes)
    got = np.bincount(split.labels.numpy(), minlength=source.num_classes)
    exact = len(split) * counts / counts.sum()
    assert np.all(np.abs(got - exact) < 1), (got, exact)


def test_sizes_disjoint_stratified(digits: LabelledImages) -> None:
    splits = make_splits(digits, SIZES, seed=0)
    assert {k: len(v) for k, v in splits.as_dict().items()} == SIZES.as_dict()
    assert list(splits.as_dict()) == list(SPLIT_NAMES)
    every = torch.cat([splits.indices[k] for k in SPLIT_NAMES])
    assert len(every) == SIZES.total == len(digits) and len(every.unique()) == len(every)
    for name, split in splits.as_dict().items():
        index = splits.indices[name]
        assert index.dtype == torch.int64
        assert torch.equal(split.images, digits.images[index])
        assert torch.equal(split.labels, digits.labels[index])
        assert split.classes == digits.classes and split.max_value == 16
        assert_stratified(split, digits)


def test_deterministic_and_seed_dependent(digits: LabelledImages) -> None:
    sizes = SplitSizes(train=500, val=50, calibration=64, pool=200, test=300)
    a, b = make_splits(digits, sizes, seed=7), make_splits(digits, sizes, seed=7)
    c = make_splits(digits, sizes, seed=8)
    for name in SPLIT_NAMES:
        assert torch.equal(a.indices[name], b.indices[name])
        assert not torch.equal(a.indices[name], c.indices[name])
        assert torch.equal(a.as_dict()[name].images, b.as_dict()[name].images)


def test_test_drawn_from_test_data() -> None:
    data = toy(np.repeat(np.arange(3), [50, 30, 20]), name="train")
    official = toy(np.repeat(np.arange(3), [10, 10, 40]), name="test")
    splits = make_splits(data, SplitSizes(40, 10, 10, 20, test=30), seed=1, test_data=official)
    assert splits.test.name == "test" and splits.train.name == "train"
    assert torch.equal(splits.test.labels, official.labels[splits.indices["test"]])
    assert_stratified(splits.test, official)  # proportions of the test set, not of data
    assert np.bincount(splits.test.labels.numpy()).tolist() == [5, 5, 20]
    own = torch.cat([splits.indices[k] for k in ("train", "val", "calibration", "pool")])
    assert len(own.unique()) == 80 and int(own.max()) < 100
    for name in ("train", "val", "calibration", "pool"):
        assert_stratified(splits.as_dict()[name], data)


def test_zero_val_and_pool(digits: LabelledImages) -> None:
    splits = make_splits(digits, SplitSizes(100, 0, 10, 0, 20), seed=0)
    assert len(splits.val) == 0 and len(splits.pool) == 0
    assert splits.val.images.shape == (0, 1, 8, 8) and splits.indices["pool"].dtype == torch.int64


def test_uses_every_image_when_sizes_add_up(digits: LabelledImages) -> None:
    sizes = SplitSizes(train=1797 - 3, val=0, calibration=1, pool=1, test=1)
    splits = make_splits(digits, sizes, seed=3)
    assert len(torch.cat(list(splits.indices.values())).unique()) == 1797


def test_rare_class_and_missing_class() -> None:
    # Class 2 has one image, class 3 none: counts still exact and within 1 of proportional.
    data = toy([0] * 60 + [1] * 39 + [2], classes=4)
    splits = make_splits(data, SplitSizes(50, 10, 10, 10, 20), seed=0)
    assert sum(int((s.labels == 2).sum()) for s in splits.as_dict().values()) == 1
    for split in splits.as_dict().values():
        assert_stratified(split, data)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 12), min_size=1, max_size=8).filter(lambda c: sum(c) >= 3),
    cuts=st.lists(st.floats(0, 1), min_size=5, max_size=5),
    seed=st.integers(0, 2**31),
)
def test_any_sizes_stratified(counts: list[int], cuts: list[float], seed: int) -> None:
    data = toy(np.repeat(np.arange(len(counts)), counts), classes=len(counts))
    n = len(data)
    # Random sizes respecting the minimums (train, calibration, test >= 1) and the total.
    spare = n - 3
    weights = np.asarray(cuts) / max(sum(cuts), 1e-9)
    extra = np.floor(weights * spare * cuts[0]).astype(int)
    sizes = SplitSizes(1 + extra[0], extra[1], 1 + extra[2], extra[3], 1 + extra[4])
    splits = make_splits(data, sizes, seed=seed)
    every = torch.cat(list(splits.indices.values()))
    assert len(every.unique()) == len(every) == sizes.total <= n
    for name, split in splits.as_dict().items():
        assert len(split) == sizes.as_dict()[name]
        assert_stratified(split, data)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train": 0}, r"split size train must be >= 1, got 0"),
        ({"calibration": 0}, r"split size calibration must be >= 1"),
        ({"test": 0}, r"split size test must be >= 1"),
        ({"val": -1}, r"split size val must be >= 0"),
        ({"pool": 2.5}, r"split size pool must be an integer, got float"),
        ({"train": True}, r"split size train must be an integer, got bool"),
    ],
)
def test_bad_sizes(kwargs: dict, match: str) -> None:
    values = {"train": 10, "val": 1, "calibration": 1, "pool": 1, "test": 1} | kwargs
    with pytest.raises(MitigateError, match=match):
        SplitSizes(**values)


def test_too_many_asked(digits: LabelledImages) -> None:
    with pytest.raises(
        MitigateError,
        match=r"splits ask for 1800 images \(train 1500 \+ val 0 \+ calibration 100 \+ pool 100"
        r" \+ test 100\) but 'digits' has only 1797 available",
    ):
        make_splits(digits, SplitSizes(1500, 0, 100, 100, 100), seed=0)
    official = toy([0, 1] * 5, classes=10)
    official = LabelledImages(
        torch.zeros(10, 1, 8, 8, dtype=torch.uint8), official.labels, digits.classes, 16, "t"
    )
    with pytest.raises(MitigateError, match=r"test 11\) but 't' has only 10 available"):
        make_splits(digits, SplitSizes(1500, 0, 100, 100, 11), seed=0, test_data=official)
    # With test_data the test size no longer counts against data.
    splits = make_splits(digits, SplitSizes(1597, 0, 100, 100, 10), seed=0, test_data=official)
    assert len(splits.test) == 10


def test_mismatched_inputs(digits: LabelledImages) -> None:
    with pytest.raises(MitigateError, match=r"test_data 'toy' \(2 classes, images \(1, 1, 1\)\)"):
        make_splits(digits, SIZES, seed=0, test_data=toy([0, 1] * 200))
    with pytest.raises(MitigateError, match=r"seed must be a non-negative integer, got -1"):
        make_splits(digits, SIZES, seed=-1)
    with pytest.raises(MitigateError, match=r"labels outside 0..1 \(0..2\)"):
        make_splits(toy([0, 1, 2] * 10, classes=2), SplitSizes(5, 0, 5, 0, 5), seed=0)
    assert isinstance(make_splits(digits, SIZES, seed=np.int64(3)), Splits)
