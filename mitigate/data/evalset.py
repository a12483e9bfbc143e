"""Measurement groups (clean, each shift x severity, natural shifts) and their lazy batches.

Shifted inputs are made one batch at a time from the stored clean ones (images or raw texts,
through :meth:`mitigate.data.base.LabelledData.batch`), deterministically from (seed, split,
shift, severity, input index), so a 10k-image test set with 20 families x 5 severities never
holds more than one batch of shifted inputs in memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mitigate.data.base import LabelledData
from mitigate.data.shifts import SEVERITIES, shift_names, shifts_for
from mitigate.errors import MitigateError, unknown_choice, warn

__all__ = ["Batch", "Group", "build_groups", "iter_batches", "resolve_families", "split_seed"]


@dataclass(frozen=True)
class Group:
    """One measured group of inputs.

    Attributes:
        name: ``"clean"``, ``"<shift>/<severity>"`` or ``"natural:<source>"``.
        shift: the shift family, ``None`` for clean and natural groups.
        severity: 1-5 for synthetic shifts, 0 otherwise.
        source: ``"test"`` (or the split it comes from) or the natural dataset's name.
        held_out: the family is kept out of the pool: measured, never selected from.
    """

    name: str
    shift: str | None = None
    severity: int = 0
    source: str = "test"
    held_out: bool = False

    @property
    def kind(self) -> str:
        if self.shift is not None:
            return "shifted"
        return "clean" if self.name == "clean" else "natural"


@dataclass(frozen=True)
class Batch:
    """One batch of one group.

    Attributes:
        x: ``float [B, C, H, W]`` in ``[0, 1]`` (images) or ``int64 [B, max_len]`` token ids.
        y: ``int64 [B]`` true labels.
        group: index into the group list.
        index: ``int64 [B]``, position of each input in its source split (what shifts hash).
        position: ``int64 [B]``, position in the whole iteration (unique across groups), for
            anything that must tell the same image under two shifts apart (the random score).
            Defaults to ``index``.
    """

    x: Tensor
    y: Tensor
    group: int
    index: Tensor
    position: Tensor = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.position is None:
            object.__setattr__(self, "position", self.index)


def split_seed(seed: int, split: str) -> int:
    """A seed for shifting one split's images, so pool and test never share noise patterns."""
    return (seed * 1_000_003 + zlib.crc32(split.encode())) % (2**31)


def resolve_families(
    families: Sequence[str], source: int | LabelledData, *, skip: bool = False
) -> list[str]:
    """Expand ``["all"]`` and check names against the families that fit ``source``: a channel
    count (image shifts) or a data set (its :meth:`~LabelledData.shift_names`).

    ``["all"]`` on images leaves out the families that cannot apply to their size or channel
    count, saying so once (a colour-only family on grey images goes without saying). A named
    family that cannot apply is an error naming why, or with ``skip`` is left out silently;
    an unknown name is always an error.
    """
    if isinstance(source, int):
        valid, kind = shift_names(source), f"shift for {source}-channel images"
        skipped: dict[str, str] = {}
    elif source.modality == "image":
        valid, skipped = shifts_for(source.input_shape)
        kind = "shift for these images"
    else:
        valid, kind, skipped = source.shift_names(), "shift for text", {}
    if list(families) == ["all"]:
        unusual = {n: why for n, why in skipped.items() if why != "needs 3 channels"}
        if unusual:
            c, h, w = source.input_shape  # type: ignore[union-attr]
            warn(
                f"{len(unusual)} shift families cannot apply to {c}x{h}x{w} images and are "
                "skipped: " + "; ".join(f"{n} ({why})" for n, why in unusual.items())
            )
        return valid
    for name in families:
        if name in skipped and not skip:
            raise MitigateError(f"shift {name!r} cannot apply to these images: {skipped[name]}")
        if name not in valid and name not in skipped:
            raise unknown_choice(kind, name, valid)
    return [name for name in dict.fromkeys(families) if name in valid]


def build_groups(
    families: Sequence[str],
    severities: Sequence[int],
    *,
    held_out: Sequence[str] = (),
    naturals: Sequence[str] = (),
    include_clean: bool = True,
    split: str = "test",
) -> list[Group]:
    """Clean first, then each family at each severity, then each natural shift; ``split`` names
    the split the clean and shifted groups are drawn from."""
    for severity in severities:
        if severity not in SEVERITIES:
            raise MitigateError(
                f"severity {severity} is out of range; valid severities: "
                + ", ".join(map(str, SEVERITIES))
            )
    groups = [Group("clean")] if include_clean else []
    for family in families:
        for severity in severities:
            groups.append(
                Group(f"{family}/{severity}", family, severity, held_out=family in held_out)
            )
    groups += [Group(f"natural:{name}", source=name, held_out=True) for name in naturals]
    return groups


def iter_batches(
    data: LabelledData,
    groups: Sequence[Group],
    *,
    batch_size: int,
    seed: int,
    split: str = "test",
    naturals: Mapping[str, LabelledData] | None = None,
) -> Iterator[Batch]:
    """Yield every group's inputs batch by batch, shifting each batch as it is made."""
    shift_seed = split_seed(seed, split)
    offset = 0
    for group_index, group in enumerate(groups):
        source = data if group.kind != "natural" else (naturals or {})[group.source]
        for start in range(0, len(source), batch_size):
            index = torch.arange(start, min(start + batch_size, len(source)))
            x = source.batch(index, group.shift, group.severity, seed=shift_seed)
            yield Batch(x, source.labels[index], group_index, index, offset + index)
        offset += len(source)
