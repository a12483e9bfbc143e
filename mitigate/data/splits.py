"""Seeded, stratified, disjoint train / val / calibration / pool / test splits.

Each split gets, per class, either the floor or the ceiling of its exact proportional share
(``size * class_count / total``), while every split still gets exactly its size and no class
gives more images than it has. Choosing which shares round up is a small bipartite flow
problem (splits x classes) that always has a solution; :func:`_allocate` solves it greedily by
largest remainder and repairs the rest with augmenting paths.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from mitigate.data.base import LabelledData
from mitigate.data.images import LabelledImages
from mitigate.errors import MitigateError

__all__ = ["SPLIT_NAMES", "SplitSizes", "Splits", "make_splits"]

#: The five splits, in the order they are drawn.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "calibration", "pool", "test")
# The smallest size each split may have: val and pool may be empty.
_MINIMUM = {"train": 1, "val": 0, "calibration": 1, "pool": 0, "test": 1}


@dataclass(frozen=True)
class SplitSizes:
    """How many images each split gets.

    Attributes:
        train: images to train the FP model (>= 1).
        val: images for early stopping and model selection (>= 0).
        calibration: images to calibrate static quantization (>= 1).
        pool: unlabelled images a selector may pick from (>= 0).
        test: images that measure everything; never selected (>= 1).

    Example:
        >>> SplitSizes(train=1000, val=100, calibration=100, pool=300, test=297).total
        1797
    """

    train: int
    val: int
    calibration: int
    pool: int
    test: int

    def __post_init__(self) -> None:
        for name, low in _MINIMUM.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise MitigateError(
                    f"split size {name} must be an integer, got {type(value).__name__}"
                )
            if value < low:
                raise MitigateError(f"split size {name} must be >= {low}, got {value}")

    @property
    def total(self) -> int:
        """All five sizes added up."""
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        """``{"train": ..., "val": ..., "calibration": ..., "pool": ..., "test": ...}``."""
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Splits:
    """The five splits and where each image came from.

    Attributes:
        train, val, calibration, pool, test: the images of each split, in a seeded random
            order; each keeps its source's ``name``, classes and ``max_value``.
        indices: split name -> ``int64 [n]`` positions in its source: ``test`` into the
            ``test_data`` given to :func:`make_splits` (or ``data`` when none was), the
            others into ``data``. Lets a report trace every input back to its file.
    """

    train: LabelledData
    val: LabelledData
    calibration: LabelledData
    pool: LabelledData
    test: LabelledData
    indices: dict[str, Tensor]

    def as_dict(self) -> dict[str, LabelledData]:
        """Split name -> images, in :data:`SPLIT_NAMES` order."""
        return {name: getattr(self, name) for name in SPLIT_NAMES}


def _allocate(counts: np.ndarray, sizes: list[int], generator: torch.Generator) -> np.ndarray:
    """Per-split, per-class counts ``int64 [R, C]`` with rows summing to ``sizes`` (which must
    add up to ``counts.sum()``) and columns to ``counts``; each entry is the floor or ceiling
    of ``sizes[r] * counts[c] / counts.sum()``.
    """
    total = int(counts.sum())
    exact = np.outer(np.asarray(sizes, dtype=np.int64), counts.astype(np.int64))
    base, remainder = exact // total, exact % total
    row_need = np.asarray(sizes, dtype=np.int64) - base.sum(1)
    col_need = counts.astype(np.int64) - base.sum(0)
    up = np.zeros(base.shape, dtype=bool)

    # Greedy largest remainder; ties broken by the seeded generator, not by class order.
    rows, cols = np.nonzero(remainder)
    order = torch.randperm(len(rows), generator=generator).numpy()
    order = order[np.argsort(-remainder[rows[order], cols[order]], kind="stable")]
    for r, c in zip(rows[order], cols[order], strict=True):
        if row_need[r] > 0 and col_need[c] > 0:
            up[r, c] = True
            row_need[r] -= 1
            col_need[c] -= 1

    # Repair: alternating paths  row -(round up)-> class -(undo a round-up)-> row ... -> a
    # class that still needs one. One exists while a row needs one (flows are integral).
    while (start := np.flatnonzero(row_need > 0)).size:
        parent_of_col: dict[int, int] = {}
        parent_of_row: dict[int, int] = {int(start[0]): -1}
        frontier, end = [int(start[0])], -1
        while frontier and end < 0:
            next_rows: list[int] = []
            for r in frontier:
                for c in np.flatnonzero((remainder[r] > 0) & ~up[r]).tolist():
                    if c in parent_of_col:
                        continue
                    parent_of_col[c] = r
                    if col_need[c] > 0:
                        end = c
                        break
                    for r2 in np.flatnonzero(up[:, c]).tolist():
                        if r2 not in parent_of_row:
                            parent_of_row[r2] = c
                            next_rows.append(r2)
                if end >= 0:
                    break
            frontier = next_rows
        if end < 0:  # pragma: no cover - impossible by total unimodularity
            raise RuntimeError("stratified allocation failed; please report this bug")
        c = end
        col_need[c] -= 1
        while True:
            r = parent_of_col[c]
            up[r, c] = True
            back = parent_of_row[r]
            if back < 0:
                row_need[r] -= 1
                break
            up[r, back] = False
            c = back
    return base + up


def _stratified(
    labels: Tensor, num_classes: int, sizes: list[int], generator: torch.Generator
) -> list[Tensor]:
    """Disjoint index sets of the given sizes, each stratified by ``labels``."""
    counts = np.bincount(labels.numpy(), minlength=num_classes)
    rows = [*sizes, len(labels) - sum(sizes)]  # the last row: images no split uses
    table = _allocate(counts, rows, generator)
    parts: list[list[Tensor]] = [[] for _ in sizes]
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        for r, piece in enumerate(torch.split(members, table[:, c].tolist())[: len(sizes)]):
            parts[r].append(piece)
    out = []
    for pieces in parts:
        index = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64)
        out.append(index[torch.randperm(len(index), generator=generator)])
    return out


def _check_source(data: LabelledImages, what: str) -> None:
    from mitigate.data.text.dataset import LabelledText

    if not isinstance(data, (LabelledImages, LabelledText)):
        raise MitigateError(
            f"{what} must be LabelledImages or LabelledText, got {type(data).__name__}"
        )
    labels = data.labels
    if len(data) and (int(labels.min()) < 0 or int(labels.max()) >= data.num_classes):
        raise MitigateError(
            f"{what} {data.name!r} has labels outside 0..{data.num_classes - 1} "
            f"({int(labels.min())}..{int(labels.max())})"
        )


def _too_many(asked: dict[str, int], source: LabelledImages) -> MitigateError:
    parts = " + ".join(f"{k} {v}" for k, v in asked.items())
    return MitigateError(
        f"splits ask for {sum(asked.values())} images ({parts}) but "
        f"{source.name or 'the dataset'!r} has only {len(source)} available"
    )


def make_splits(
    data: LabelledImages,
    sizes: SplitSizes,
    seed: int,
    test_data: LabelledImages | None = None,
) -> Splits:
    """Cut seeded, stratified, disjoint splits.

    Args:
        data: the source of train, val, calibration and pool (and of test when ``test_data``
            is ``None``).
        sizes: how many images each split gets.
        seed: the same seed gives the same splits; a different one, different splits.
        test_data: an official test set to draw ``test`` from (stratified too); it must have
            ``data``'s classes and image shape.

    Returns:
        :class:`Splits` whose per-class counts are each within 1 of the exact proportional
        share of the source's class counts, plus each split's indices into its source.

    Raises:
        MitigateError: a source with fewer images than asked (saying how many are
            available), mismatched ``test_data``, labels outside the classes, or a bad seed.

    Example:
        >>> from mitigate.data.digits import load_digits
        >>> s = make_splits(load_digits(), SplitSizes(1000, 100, 100, 300, 297), seed=0)
        >>> len(s.train), len(s.test), int(s.indices["pool"].max()) < 1797
        (1000, 297, True)
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MitigateError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(sizes, SplitSizes):
        raise MitigateError(f"sizes must be SplitSizes, got {type(sizes).__name__}")
    _check_source(data, "data")
    asked = sizes.as_dict()
    own = {k: v for k, v in asked.items() if test_data is None or k != "test"}
    if sum(own.values()) > len(data):
        raise _too_many(own, data)
    if test_data is not None:
        _check_source(test_data, "test_data")
        if test_data.classes != data.classes or test_data.input_shape != data.input_shape:
            raise MitigateError(
                f"test_data {test_data.name!r} ({test_data.num_classes} classes, images "
                f"{test_data.input_shape}) does not match data {data.name!r} "
                f"({data.num_classes} classes, images {data.input_shape})"
            )
        if sizes.test > len(test_data):
            raise _too_many({"test": sizes.test}, test_data)

    generator = torch.Generator().manual_seed(int(seed))
    drawn = _stratified(data.labels, data.num_classes, list(own.values()), generator)
    indices = dict(zip(own, drawn, strict=True))
    if test_data is not None:
        indices["test"] = _stratified(
            test_data.labels, test_data.num_classes, [sizes.test], generator
        )[0]
    source = {name: data for name in SPLIT_NAMES}
    if test_data is not None:
        source["test"] = test_data
    indices = {name: indices[name] for name in SPLIT_NAMES}
    return Splits(
        **{name: source[name].subset(indices[name]) for name in SPLIT_NAMES},
        indices=indices,
    )
