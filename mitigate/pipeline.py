"""The stages every command shares: data, base model (trained or cached), calibration,
quantized variants. Plain functions on config objects; the CLI is a thin layer over them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.config import CALIBRATION_SAMPLING, CALIBRATION_SOURCES, Config, config_digest
from mitigate.data.base import LabelledData
from mitigate.data.evalset import resolve_families, split_seed
from mitigate.errors import MitigateError, unknown_choice

__all__ = [
    "Data",
    "measurement_groups",
    "pool_groups",
    "base_model",
    "cache_dir",
    "calibration_candidate_count",
    "calibration_candidates",
    "calibration_inputs",
    "check_schemes",
    "load_data",
    "model_inputs",
    "model_meta",
    "test_accuracy",
    "quantize_variants",
    "train_model",
]


@dataclass(frozen=True)
class Data:
    """The seeded splits plus any natural-shift datasets, ready for every stage.

    Every split is a :class:`~mitigate.data.base.LabelledData`: images, or texts bound to the
    vocabulary built from the training split.
    """

    splits: object  # mitigate.data.splits.Splits
    naturals: dict[str, LabelledData]
    families: list[str]  # synthetic shift families used for measurement
    held_out: tuple[str, ...] = ()  # families kept out of the pool and calibration

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(max_len,)`` for text."""
        return self.splits.train.input_shape  # type: ignore[attr-defined]

    @property
    def modality(self) -> str:
        """``"image"`` or ``"text"``."""
        return self.splits.train.modality  # type: ignore[attr-defined]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.splits.train.classes  # type: ignore[attr-defined]

    @property
    def seen_families(self) -> list[str]:
        """Families allowed into the pool and calibration: all but the held-out ones."""
        return [f for f in self.families if f not in self.held_out]


def load_data(config: Config) -> Data:
    """Load the configured dataset and natural shifts, and split it with the config's seed."""
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


def _bind_vocabulary(splits: object, d: object) -> tuple[object, object]:
    """Text splits tokenized with the vocabulary of the training split's texts."""
    from dataclasses import replace

    from mitigate.data.splits import SPLIT_NAMES
    from mitigate.data.text.vocab import build_vocabulary

    vocabulary = build_vocabulary(
        splits.train.texts,  # type: ignore[attr-defined]
        min_freq=d.min_freq,  # type: ignore[attr-defined]
        max_size=d.vocab_size,  # type: ignore[attr-defined]
    )
    bound = {
        name: getattr(splits, name).with_vocabulary(vocabulary, d.max_len)  # type: ignore[attr-defined]
        for name in SPLIT_NAMES
    }
    return replace(splits, **bound), vocabulary  # type: ignore[type-var]


def _load_natural(
    spec: str, data_dir: str, test: LabelledData, vocabulary: object, max_len: int
) -> LabelledData:
    from mitigate.data.loaders import DATASETS, load_dataset
    from mitigate.data.npz import load_npz

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
    if vocabulary is not None:
        if natural.classes != test.classes and set(natural.classes) == set(test.classes):
            from dataclasses import replace

            order = torch.tensor([test.classes.index(c) for c in natural.classes])
            natural = replace(natural, labels=order[natural.labels], classes=test.classes)
        if natural.classes != test.classes:
            raise MitigateError(
                f"natural shift {spec!r} has classes {', '.join(natural.classes)}; the model "
                f"predicts {', '.join(test.classes)}"
            )
        natural = natural.with_vocabulary(vocabulary, max_len)  # type: ignore[attr-defined]
    if natural.input_shape != test.input_shape or natural.num_classes != test.num_classes:
        raise MitigateError(
            f"natural shift {spec!r} has inputs {natural.input_shape} and {natural.num_classes} "
            f"classes; the model takes {test.input_shape} and {test.num_classes} classes"
        )
    return natural


def measurement_groups(config: Config, data: Data) -> list:
    """Test groups: clean, every configured family x severity (held-out ones marked), naturals."""
    from mitigate.data.evalset import build_groups

    return build_groups(
        data.families,
        config.shifts.severities,
        held_out=data.held_out,
        naturals=list(data.naturals),
    )


def pool_groups(config: Config, data: Data) -> list:
    """Pool groups: clean plus every family not held out, at every configured severity.

    Held-out families never enter the pool, so a report can show whether a mitigation
    generalizes to shifts it never saw.
    """
    from mitigate.data.evalset import build_groups

    return build_groups(data.seen_families, config.shifts.severities, split="pool")


def cache_dir() -> Path:
    """Where trained base models are cached: ``$MITIGATE_CACHE_DIR`` or ``~/.cache/mitigate``."""
    return Path(os.environ.get("MITIGATE_CACHE_DIR") or Path.home() / ".cache" / "mitigate")


def train_model(config: Config, data: Data, *, progress: bool = False, full: bool = False):
    """Train a fresh base model with the configured architecture and ``train.method``.

    ``qat`` trains a fake-quantized model for ``train.qat_scheme`` from scratch and returns
    the float model taken out of it; ``distill`` trains a fresh model to match the outputs of
    the ``standard`` base model of the same settings (trained or cached) on the training
    inputs, without their labels.

    Returns:
        The float model in eval mode (``nn.Module``), or with ``full=True`` the whole
        :class:`mitigate.trainers.Trained` record (``.prepared`` and ``.quantized()`` for QAT).
    """
    from dataclasses import replace

    from mitigate.config import TrainConfig
    from mitigate.models import build_model
    from mitigate.trainers import check_train_config, get_method, images_loader, train_classifier

    t = config.train
    check_train_config(t)
    _check_method_fits(config, data)
    teacher = None
    if get_method(t.method).needs_teacher:
        standard = TrainConfig(
            epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay
        )
        teacher, _ = base_model(replace(config, train=standard), data, progress=progress)
    torch.manual_seed(config.seed)
    model = build_model(config.model.arch, **model_inputs(config, data))
    splits = data.splits
    train = images_loader(splits.train, batch_size=t.batch_size, shuffle=True, seed=config.seed)  # type: ignore[attr-defined]
    val = (
        images_loader(splits.val, batch_size=512, shuffle=False, seed=config.seed)  # type: ignore[attr-defined]
        if len(splits.val)  # type: ignore[attr-defined]
        else None
    )
    trained = train_classifier(
        model, train, val, settings=t, seed=config.seed, teacher=teacher, progress=progress
    )
    return trained if full else trained.model


def model_inputs(config: Config, data: Data) -> dict:
    """:func:`mitigate.models.build_model` keywords for the configured architecture on
    ``data``: ``in_channels``, ``image_size`` and ``num_classes`` for images; ``vocab_size``,
    ``seq_len`` and ``num_classes`` for text.

    Raises:
        MitigateError: an image model on text data or the other way round.
    """
    from mitigate.models.registry import model_modality, model_names

    arch = config.model.arch
    if model_modality(arch) != data.modality:
        raise MitigateError(
            f"model {arch!r} reads {model_modality(arch)} inputs but dataset "
            f"{config.data.dataset!r} holds {data.modality}; {data.modality} models: "
            + ", ".join(model_names(data.modality))
        )
    classes = len(data.classes)
    if data.modality == "text":
        vocabulary = data.splits.train.vocabulary  # type: ignore[attr-defined]
        return {
            "vocab_size": len(vocabulary),
            "seq_len": data.input_shape[0],
            "num_classes": classes,
        }
    c, h, w = data.input_shape
    return {"in_channels": c, "image_size": (h, w), "num_classes": classes}


def _check_method_fits(config: Config, data: Data) -> None:
    """Mixup and adversarial training perturb float inputs; token ids have no such thing."""
    method = config.train.method
    if data.modality == "text" and method in ("mixup", "adversarial"):
        raise MitigateError(
            f"training method {method!r} perturbs image pixels and cannot train on text; "
            "for text use standard, qat or distill"
        )


def check_schemes(config: Config, data: Data, schemes: tuple[str, ...] | list[str]) -> None:
    """Fail fast, before any training, on a scheme that cannot quantize the configured
    architecture (static int8 on an LSTM or GRU): an untrained model has the same layers."""
    from mitigate.models import build_model
    from mitigate.quantization import check_supported, parse_scheme

    with torch.random.fork_rng():  # leave the global RNG as training expects it
        blank = build_model(config.model.arch, **model_inputs(config, data))
    for name in schemes:
        check_supported(blank, parse_scheme(name))


def base_model(
    config: Config,
    data: Data,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict]:
    """The model to measure: from ``checkpoint`` if given, else cached or trained and cached.

    Returns the model in eval mode and a dict saying where it came from.
    """
    from mitigate.models import load_checkpoint, save_checkpoint

    if checkpoint is not None:
        model, meta = load_checkpoint(checkpoint, expected_arch=config.model.arch)
        _check_shape(meta, data, str(checkpoint))
        return model.eval(), {"source": "checkpoint", "path": str(checkpoint)}
    key = config_digest(config.data, config.model, config.train, config.seed)
    path = cache_dir() / f"base-{config.data.dataset}-{config.model.arch}-{key}.pt"
    if path.is_file():
        model, _ = load_checkpoint(path, expected_arch=config.model.arch)
        return model.eval(), {"source": "cache", "path": str(path)}
    model = train_model(config, data, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, model_meta(config, data))
    return model, {"source": "trained", "path": str(path)}


def model_meta(config: Config, data: Data) -> dict:
    """What a checkpoint records about the model it holds; for text also the vocabulary (a
    list of token strings, id = position), ``max_len`` and the tokenizer rule, so the
    checkpoint alone says how to turn a text into its inputs."""
    meta = {
        "arch": config.model.arch,
        "input_shape": list(data.input_shape),
        "num_classes": len(data.classes),
        "classes": list(data.classes),
        "dataset": config.data.dataset,
        "seed": config.seed,
        "train_method": config.train.method,
    }
    if data.modality == "text":
        from mitigate.data.text.vocab import TOKENIZER

        vocabulary = data.splits.train.vocabulary  # type: ignore[attr-defined]
        meta |= {
            "vocab_size": len(vocabulary),
            "vocabulary": list(vocabulary.tokens),
            "max_len": data.input_shape[0],
            "tokenizer": TOKENIZER,
        }
    return meta


def _check_shape(meta: dict, data: Data, where: str) -> None:
    shape = tuple(meta.get("input_shape", data.input_shape))
    classes = int(meta.get("num_classes", len(data.classes)))
    if shape != data.input_shape or classes != len(data.classes):
        raise MitigateError(
            f"checkpoint {where} takes inputs {shape} with {classes} classes; "
            f"the data has {data.input_shape} with {len(data.classes)} classes"
        )
    if data.modality == "text":
        tokens = list(data.splits.train.vocabulary.tokens)  # type: ignore[attr-defined]
        if meta.get("vocabulary") != tokens:
            raise MitigateError(
                f"checkpoint {where} was trained with another vocabulary than the one built "
                "from this config's training split; use the [data] settings (dataset, sizes, "
                "vocab_size, min_freq) and seed it was trained with"
            )


def calibration_candidates(data: Data) -> LabelledData:
    """What static-int8 calibration may draw from: the calibration split, then the training
    split's images (their labels are never used).

    PTQ calibrates on unlabelled inputs from the training distribution; putting the
    calibration split first means a size it can serve picks exactly what it would alone, and
    larger sizes (e.g. 256 or 1024 on the 100-image digits split) continue into training
    images. Text models have no static int8, so they keep the calibration split alone.
    """
    from mitigate.data.images import LabelledImages

    calibration, train = data.splits.calibration, data.splits.train  # type: ignore[attr-defined]
    if data.modality != "image":
        return calibration
    return LabelledImages(
        torch.cat([calibration.images, train.images]),
        torch.cat([calibration.labels, train.labels]),
        calibration.classes,
        calibration.max_value,
        calibration.name,
    )


def calibration_candidate_count(data: Data) -> int:
    """``len(calibration_candidates(data))`` without building them."""
    splits: Any = data.splits
    return len(splits.calibration) + (len(splits.train) if data.modality == "image" else 0)


def _calibration_order(
    config: Config, candidates: LabelledData, own: int, size: int, generator: torch.Generator
) -> Tensor:
    """Positions in ``candidates`` in draw order: the first ``own`` (the calibration split,
    seeded as it always was), then the training images' from a generator of their own;
    class-balanced sampling alternates classes within the part a ``size`` needs."""
    order = torch.randperm(own, generator=generator)
    balanced = config.quantization.calibration_sampling == "class-balanced"
    if size <= own:
        return _round_robin_by_class(order, candidates.labels[:own]) if balanced else order
    extra = torch.Generator().manual_seed(split_seed(config.seed, "calibration-train"))
    order = torch.cat([order, own + torch.randperm(len(candidates) - own, generator=extra)])
    return _round_robin_by_class(order, candidates.labels) if balanced else order


def calibration_inputs(config: Config, data: Data, *, model: nn.Module | None = None) -> Tensor:
    """The static-int8 calibration batch: ``calibration_size`` inputs drawn from
    :func:`calibration_candidates`, sampled and (for ``shifted``/``mixed``) shifted as
    configured. ``float [N, C, H, W]``.

    A ``[calibration] preset`` (see :mod:`mitigate.calibration.presets`) replaces these options;
    ``model`` is the FP model a preset that ranks inputs scores them with (default: the
    cached base model)."""
    if config.calibration.preset:
        from mitigate.calibration.presets import preset_inputs

        return preset_inputs(config, data, model)
    q = config.quantization
    if q.calibration_source not in CALIBRATION_SOURCES:
        raise unknown_choice("calibration source", q.calibration_source, CALIBRATION_SOURCES)
    if q.calibration_sampling not in CALIBRATION_SAMPLING:
        raise unknown_choice("calibration sampling", q.calibration_sampling, CALIBRATION_SAMPLING)
    pool = calibration_candidates(data)
    if not 1 <= q.calibration_size <= len(pool):
        raise MitigateError(
            f"calibration_size {q.calibration_size} must be between 1 and {len(pool)}, what the "
            f"calibration and training splits hold (data.calibration + data.train)"
        )
    generator = torch.Generator().manual_seed(split_seed(config.seed, "calibration"))
    own = len(data.splits.calibration)  # type: ignore[attr-defined]
    order = _calibration_order(config, pool, own, q.calibration_size, generator)
    index = order[: q.calibration_size].sort().values
    x = pool.batch(index)
    if q.calibration_source == "clean":
        return x
    families = data.seen_families
    if not families:
        raise MitigateError("shifted calibration needs at least one shift family not held out")
    shifted = torch.zeros(len(index), dtype=torch.bool)
    shifted[:] = True
    if q.calibration_source == "mixed":
        shifted = torch.arange(len(index)) % 2 == 1
    choice = torch.randint(len(families), (len(index),), generator=generator)
    severity = torch.randint(1, 6, (len(index),), generator=generator)
    seed = split_seed(config.seed, "calibration")
    for f, family in enumerate(families):
        for s in range(1, 6):
            rows = (shifted & (choice == f) & (severity == s)).nonzero().flatten()
            if len(rows):
                x[rows] = pool.batch(index[rows], family, s, seed=seed)
    return x


def _round_robin_by_class(order: Tensor, labels: Tensor) -> Tensor:
    """Reorder ``order`` so classes alternate: the first k*C entries hold k of each class."""
    lab = labels[order]
    rank = torch.zeros_like(order)
    for c in lab.unique():
        members = (lab == c).nonzero().flatten()
        rank[members] = torch.arange(len(members))
    key = rank * (int(lab.max()) + 1) + lab
    return order[torch.argsort(key, stable=True)]


def quantize_variants(
    model: nn.Module, schemes: tuple[str, ...] | list[str], calibration: Tensor
) -> dict[str, nn.Module]:
    """Label -> quantized copy for every scheme name (the model itself is not touched)."""
    from mitigate.quantization import parse_scheme, quantize, scheme_label

    parsed = [parse_scheme(s) for s in schemes]  # validate every name before any work
    variants: dict[str, nn.Module] = {}
    for scheme in parsed:
        label = scheme_label(scheme)
        if label in variants:
            raise MitigateError(f"scheme {label!r} is listed twice")
        variants[label] = quantize(model, scheme, calibration)
    return variants


@torch.no_grad()
def test_accuracy(model: nn.Module, data: Data, batch_size: int = 512) -> float:
    """Accuracy of ``model`` on the clean test split."""
    test: LabelledData = data.splits.test  # type: ignore[attr-defined]
    model.eval()
    correct = sum(
        int(
            (
                model(test.batch(slice(i, i + batch_size))).argmax(1)
                == test.labels[i : i + batch_size]
            ).sum()
        )
        for i in range(0, len(test), batch_size)
    )
    return correct / len(test)
