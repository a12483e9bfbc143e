"""The data of a run: the configured dataset split with the run's seed, its natural shifts,
the measurement and pool groups, and the clean test accuracy of a model."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from mitigate.config import Config, DataConfig
from mitigate.data.base import LabelledData
from mitigate.data.dataset import Data
from mitigate.data.evalset import Group, build_groups, split_seed
from mitigate.errors import MitigateError

if TYPE_CHECKING:
    from mitigate.data.splits import Splits
    from mitigate.data.text.vocab import Vocabulary

__all__ = ["load_data", "measurement_groups", "pool_groups", "test_accuracy"]


def load_data(config: Config) -> Data:
    """Load the configured dataset and natural shifts, and split it with the config's seed."""
    from mitigate.data.evalset import resolve_families
    from mitigate.data.loaders import load_dataset
    from mitigate.data.splits import SplitSizes, make_splits

    d = config.data
    data, official_test = load_dataset(d.dataset, d.data_dir or None)
    sizes = SplitSizes(
        train=d.train, val=d.val, calibration=d.calibration, pool=d.pool, test=d.test
    )
    splits = make_splits(data, sizes, config.seed, test_data=official_test)
    vocabulary = None
    if data.modality == "text":
        splits, vocabulary = _bind_vocabulary(splits, d)
    if d.natural_size < 0:
        raise MitigateError(f"data.natural_size must be >= 0 (0 = all), got {d.natural_size}")
    naturals = {}
    for spec in d.natural:
        natural = _load_natural(spec, d.data_dir, splits.test, vocabulary, d.max_len)
        if 0 < d.natural_size < len(natural):
            generator = torch.Generator().manual_seed(split_seed(config.seed, f"natural:{spec}"))
            keep = torch.randperm(len(natural), generator=generator)[: d.natural_size]
            natural = natural.subset(keep.sort().values)
        naturals[spec] = natural
    families = resolve_families(config.shifts.families, splits.train)
    held_out = (
        tuple(resolve_families(config.shifts.held_out, splits.train))
        if config.shifts.held_out
        else ()
    )
    return Data(splits, naturals, families, held_out)


def _bind_vocabulary(splits: Splits, d: DataConfig) -> tuple[Splits, Vocabulary]:
    """Text splits tokenized with the vocabulary of the training split's texts."""
    from mitigate.data.splits import SPLIT_NAMES
    from mitigate.data.text.dataset import LabelledText
    from mitigate.data.text.vocab import build_vocabulary

    texts = {name: getattr(splits, name) for name in SPLIT_NAMES}
    assert all(isinstance(t, LabelledText) for t in texts.values())  # noqa: S101 - text data
    vocabulary = build_vocabulary(
        texts["train"].texts,  # type: ignore[attr-defined]
        min_freq=d.min_freq,
        max_size=d.vocab_size,
    )
    bound = {
        name: text.with_vocabulary(vocabulary, d.max_len)  # type: ignore[attr-defined]
        for name, text in texts.items()
    }
    return replace(splits, **bound), vocabulary


def _load_natural(
    spec: str, data_dir: str, test: LabelledData, vocabulary: Vocabulary | None, max_len: int
) -> LabelledData:
    from mitigate.data.loaders import DATASETS, load_dataset
    from mitigate.data.npz import load_npz
    from mitigate.data.text.dataset import LabelledText

    kind, _, path = spec.partition(":")
    if kind == "npz" and path:
        natural = load_npz(path)
    else:
        name, where = (kind, path) if path and kind in DATASETS else (spec, data_dir or None)
        train, official_test = load_dataset(name, where)
        natural = official_test if official_test is not None else train
    if natural.modality != test.modality:
        raise MitigateError(
            f"natural shift {spec!r} holds {natural.modality} data; the model reads "
            f"{test.modality} data"
        )
    if vocabulary is not None and isinstance(natural, LabelledText):
        if natural.classes != test.classes and set(natural.classes) == set(test.classes):
            order = torch.tensor([test.classes.index(c) for c in natural.classes])
            natural = replace(natural, labels=order[natural.labels], classes=test.classes)
        if natural.classes != test.classes:
            raise MitigateError(
                f"natural shift {spec!r} has classes {', '.join(natural.classes)}; the model "
                f"predicts {', '.join(test.classes)}"
            )
        natural = natural.with_vocabulary(vocabulary, max_len)
    if natural.input_shape != test.input_shape or natural.num_classes != test.num_classes:
        raise MitigateError(
            f"natural shift {spec!r} has inputs {natural.input_shape} and {natural.num_classes} "
            f"classes; the model takes {test.input_shape} and {test.num_classes} classes"
        )
    return natural


def measurement_groups(config: Config, data: Data) -> list[Group]:
    """Test groups: clean, every configured family x severity (held-out ones marked), naturals."""
    return build_groups(
        data.families,
        config.shifts.severities,
        held_out=data.held_out,
        naturals=list(data.naturals),
    )


def pool_groups(config: Config, data: Data) -> list[Group]:
    """Pool groups: clean plus every family not held out, at every configured severity.

    Held-out families never enter the pool, so a report can show whether a mitigation
    generalizes to shifts it never saw.
    """
    return build_groups(data.seen_families, config.shifts.severities, split="pool")


def test_accuracy(model: nn.Module, data: Data, batch_size: int = 512) -> float:
    """Accuracy of ``model`` on the clean test split."""
    from mitigate.scanning import eval_mode

    test = data.splits.test
    correct = 0
    with eval_mode(model), torch.no_grad():
        for i in range(0, len(test), batch_size):
            rows = slice(i, i + batch_size)
            correct += int((model(test.batch(rows)).argmax(1) == test.labels[rows]).sum())
    return correct / len(test)
