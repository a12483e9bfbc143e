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
from mitigate.errors import MitigateError, first_line, unknown_choice, warn

if TYPE_CHECKING:
    from mitigate.data.splits import Splits
    from mitigate.data.text.vocab import Vocabulary

__all__ = ["load_data", "measurement_groups", "pool_groups", "test_accuracy"]


def load_data(config: Config) -> Data:
    """Load the configured dataset and natural shifts, and split it with the config's seed
    (a dataset function's or a given :class:`mitigate.Data`'s splits are used as they are)."""
    from mitigate.data.evalset import resolve_families

    d = config.data
    own = _own_splits(d.dataset)
    splits = own or _split_whole(config)
    vocabulary = None
    if splits.train.modality == "text":
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
    if d.mean:
        splits, naturals = _normalized(splits, naturals, d)
    families = resolve_families(config.shifts.families, splits.train)
    held_out = (
        tuple(resolve_families(config.shifts.held_out, splits.train, skip=True))
        if config.shifts.held_out
        else ()
    )
    return Data(splits, naturals, families, held_out, fixed_splits=own is not None)


def _split_whole(config: Config) -> Splits:
    """A whole dataset (a name, ``kind:PATH`` or an image folder) cut into the five splits."""
    from mitigate.data.imagefolder import load_imagefolder
    from mitigate.data.loaders import DATASETS, load_dataset
    from mitigate.data.splits import SplitSizes, make_splits

    d = config.data
    kind, colon, path = d.dataset.partition(":")
    if colon and not path.strip() and (kind in DATASETS or kind == "imagefolder"):
        raise MitigateError(f"dataset {d.dataset!r} needs a path after the colon ({kind}:PATH)")
    if kind == "imagefolder":
        if not (path or d.data_dir):
            raise MitigateError("dataset 'imagefolder' needs a folder: imagefolder:PATH")
        size = tuple(d.image_size) * (2 if len(d.image_size) == 1 else 1)
        data, official_test = load_imagefolder(
            path or d.data_dir, image_size=size or None, channels=d.channels
        )
    elif path and kind in DATASETS:
        data, official_test = load_dataset(kind, path)
    elif d.dataset in DATASETS:
        data, official_test = load_dataset(d.dataset, d.data_dir or None)
    else:
        raise unknown_choice(
            "dataset", d.dataset, [*DATASETS, "imagefolder:PATH", "npz:PATH", "pkg.module:function"]
        )
    sizes = SplitSizes(
        train=d.train, val=d.val, calibration=d.calibration, pool=d.pool, test=d.test
    )
    return make_splits(data, sizes, config.seed, test_data=official_test)


def _own_splits(spec: str) -> Splits | None:
    """The splits of a given :class:`mitigate.Data` (``object:...``) or of the one a dataset
    function (``pkg.module:function``) returns; ``None`` for any other dataset spec."""
    from mitigate.data.loaders import DATASETS
    from mitigate.data.own import OWN_SPLITS, own_splits
    from mitigate.data.own import Data as OwnData
    from mitigate.data.splits import Splits
    from mitigate.importing import is_callable_spec, resolve_callable
    from mitigate.runs.objects import given, is_given

    kind = spec.partition(":")[0]
    if is_given(spec):
        own = given(spec, "dataset")
    elif kind not in (*DATASETS, "imagefolder") and is_callable_spec(spec):
        function = resolve_callable(spec, "dataset function")
        try:
            own = function()
        except Exception as err:  # the user's function failed
            raise MitigateError(
                f"dataset function {spec} raised {type(err).__name__}: {first_line(err)}"
            ) from None
        if isinstance(own, dict) and set(own) <= {*OWN_SPLITS, "classes"}:
            own = OwnData(**{"test": None, **own})  # no test: own_splits names the problem
        if not isinstance(own, OwnData):
            raise MitigateError(
                f"dataset function {spec} returned a {type(own).__name__}; it must return "
                "mitigate.Data or a dict with keys train, val, calibration, pool, test"
            )
    else:
        return None
    parts, notes = own_splits(own)
    for note in notes:
        warn(note)
    return Splits(**parts, indices={name: torch.arange(len(p)) for name, p in parts.items()})


def _normalized(
    splits: Splits, naturals: dict[str, LabelledData], d: DataConfig
) -> tuple[Splits, dict[str, LabelledData]]:
    """Every split and natural shift with ``[data] mean`` and ``std`` applied to its batches."""
    from mitigate.data.images import LabelledImages
    from mitigate.data.splits import SPLIT_NAMES

    channels = splits.test.input_shape[0]
    if not isinstance(splits.test, LabelledImages):
        raise MitigateError("data.mean and data.std normalize images; this dataset holds text")
    if len(d.mean) not in (1, channels):
        raise MitigateError(
            f"data.mean and data.std need one value or one per channel ({channels}), got "
            f"{len(d.mean)}"
        )

    def norm(images: LabelledData) -> LabelledData:
        return replace(images, mean=tuple(d.mean), std=tuple(d.std))

    parts = {name: norm(getattr(splits, name)) for name in SPLIT_NAMES}
    return replace(splits, **parts), {k: norm(v) for k, v in naturals.items()}


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
