"""The base model f0 of a run: from a checkpoint, the cache, or trained (and cached)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from mitigate.config import Config, TrainConfig, config_digest
from mitigate.data.dataset import Data
from mitigate.errors import MitigateError
from mitigate.models.factory import check_model_fits

__all__ = [
    "ModelInfo",
    "base_model",
    "cache_dir",
    "check_schemes",
    "model_inputs",
    "model_meta",
    "new_model",
    "save_model",
    "slug",
    "train_model",
]

ModelInfo = dict[str, str]  # where the base model came from: source, path


def cache_dir() -> Path:
    """Where trained base models are cached: ``$MITIGATE_CACHE_DIR`` or ``~/.cache/mitigate``."""
    return Path(os.environ.get("MITIGATE_CACHE_DIR") or Path.home() / ".cache" / "mitigate")


def base_model(
    config: Config,
    data: Data,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = False,
) -> tuple[nn.Module, ModelInfo]:
    """The model to measure: from ``checkpoint``, the given object or ``[model] weights`` if
    any, else cached or trained and cached.

    Returns the model in eval mode and a dict saying where it came from.
    """
    from mitigate.models import load_checkpoint
    from mitigate.models.factory import load_weights, read_weights
    from mitigate.runs.objects import given, is_given

    m = config.model
    if checkpoint is not None:
        model, meta = load_checkpoint(checkpoint, expected_arch=m.arch)
        _check_shape(meta, data, str(checkpoint))
        return model.eval(), {"source": "checkpoint", "path": str(checkpoint)}
    if is_given(m.factory):
        model = copy.deepcopy(given(m.factory, "model")).float().eval()
        check_model_fits(model, _example(data), len(data.classes), "given")
        return model, {"source": "given", "arch": type(model).__name__, "path": m.factory}
    if m.weights:
        model = new_model(config, data)
        load_weights(model, read_weights(m.weights), m.weights)
        return model.eval(), {"source": "weights", "arch": m.name, "path": m.weights}
    key = config_digest(
        config.data, config.model, config.train, config.seed, _code_digest(config), data.digest()
    )
    path = cache_dir() / f"base-{slug(config.data.dataset)}-{slug(m.name)}-{key}.pt"
    info = {"arch": m.name, "path": str(path)}
    if path.is_file():
        if m.factory:
            model = load_weights(new_model(config, data), read_weights(path), str(path))
        else:
            model, _ = load_checkpoint(path, expected_arch=m.arch)
        return model.eval(), {"source": "cache", **info}
    model = train_model(config, data, progress=progress).model
    save_model(path, model, config, model_meta(config, data))
    return model, {"source": "trained", **info}


def save_model(path: Path, model: nn.Module, config: Config, meta: dict[str, object]) -> None:
    """Write a trained model atomically: a zoo model as a checkpoint (``--model FILE``), a
    factory's as its state dict with ``meta`` beside it (``--model FACTORY --weights FILE``)."""
    from mitigate.models import save_checkpoint
    from mitigate.models.checkpoint import write_torch_file

    path.parent.mkdir(parents=True, exist_ok=True)
    if not config.model.factory:
        save_checkpoint(path, model, meta)
        return
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_torch_file(path, {"meta": meta, "state_dict": state}, what="weights file")


def new_model(config: Config, data: Data) -> nn.Module:
    """A freshly initialized model of the configured kind for ``data``: the zoo architecture,
    or what ``[model] factory`` builds, checked to take the data's inputs and return one logit
    per class (a mismatch fails here, before any work)."""
    from mitigate.importing import resolve_callable
    from mitigate.models import build_model
    from mitigate.models.factory import build_from_factory

    m = config.model
    if not m.factory:
        return build_model(m.arch, **model_inputs(config, data))
    factory = resolve_callable(m.factory, "model factory")
    model = build_from_factory(factory, m.factory, m.kwargs, _shape_keywords(data))
    check_model_fits(model, _example(data), len(data.classes), m.factory)
    return model


def _shape_keywords(data: Data) -> dict[str, object]:
    """What a factory may take from the data, if its signature names it."""
    shape: dict[str, object] = {"num_classes": len(data.classes), "input_shape": data.input_shape}
    train = data.splits.train
    vocabulary = getattr(train, "vocabulary", None)
    if vocabulary is not None:
        return shape | {"vocab_size": len(vocabulary), "seq_len": data.input_shape[0]}
    c, h, w = data.input_shape
    return shape | {"in_channels": c, "image_size": (h, w)}


def _example(data: Data, n: int = 2) -> torch.Tensor:
    """A few test inputs, as the model will see them."""
    test = data.splits.test
    return test.batch(torch.arange(min(n, len(test))))


def _code_digest(config: Config) -> str:
    """For a factory model, a digest of the factory's source file: part of the cache key, so
    editing the model's code retrains it."""
    if not config.model.factory:
        return ""
    from mitigate.importing import resolve_callable, source_digest

    return source_digest(resolve_callable(config.model.factory, "model factory"))


def slug(text: str) -> str:
    """``text`` made safe for a file name (a dataset may be ``npz:/some/path.npz``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[-40:] or "model"


def train_model(config: Config, data: Data, *, progress: bool = False):  # -> Trained
    """Train a fresh base model with the configured architecture and ``train.method``.

    ``qat`` trains a fake-quantized model for ``train.qat_scheme`` from scratch (the record's
    ``.prepared`` and ``.quantized()`` hold it); ``distill`` trains a fresh model to match the
    outputs of the ``standard`` base model of the same settings (trained or cached) on the
    training inputs, without their labels.

    Returns:
        The :class:`mitigate.trainers.Trained` record; ``.model`` is the float model in eval
        mode.
    """
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
    if len(data.splits.train) == 0:
        raise MitigateError(
            "no training inputs to train the model on; give its weights ([model] weights, "
            "--weights) or a model object"
        )
    torch.manual_seed(config.seed)
    model = new_model(config, data)
    splits = data.splits
    train = images_loader(splits.train, batch_size=t.batch_size, shuffle=True, seed=config.seed)
    val = (
        images_loader(splits.val, batch_size=512, shuffle=False, seed=config.seed)
        if len(splits.val)
        else None
    )
    return train_classifier(
        model, train, val, settings=t, seed=config.seed, teacher=teacher, progress=progress
    )


def _check_method_fits(config: Config, data: Data) -> None:
    """Mixup and adversarial training perturb float inputs; token ids have no such thing."""
    method = config.train.method
    if data.modality == "text" and method in ("mixup", "adversarial"):
        raise MitigateError(
            f"training method {method!r} perturbs image pixels and cannot train on text; "
            "for text use standard, qat or distill"
        )


def model_meta(config: Config, data: Data) -> dict[str, object]:
    """What a checkpoint records about the model it holds; for text also the vocabulary (a
    list of token strings, id = position), ``max_len`` and the tokenizer rule, so the
    checkpoint alone says how to turn a text into its inputs."""
    meta: dict[str, object] = {
        "arch": config.model.arch,
        "factory": config.model.factory,
        "input_shape": list(data.input_shape),
        "num_classes": len(data.classes),
        "classes": list(data.classes),
        "dataset": config.data.dataset,
        "seed": config.seed,
        "train_method": config.train.method,
    }
    tokens = _vocabulary_tokens(data)
    if tokens is not None:
        from mitigate.data.text.vocab import TOKENIZER

        meta |= {
            "vocab_size": len(tokens),
            "vocabulary": tokens,
            "max_len": data.input_shape[0],
            "tokenizer": TOKENIZER,
        }
    return meta


def _vocabulary_tokens(data: Data) -> list[str] | None:
    """The training split's vocabulary as token strings (id = position); ``None`` for images."""
    from mitigate.data.text.dataset import LabelledText

    train = data.splits.train
    if isinstance(train, LabelledText) and train.vocabulary is not None:
        return list(train.vocabulary.tokens)
    return None


def _check_shape(meta: dict, data: Data, where: str) -> None:
    shape = tuple(meta.get("input_shape", data.input_shape))
    classes = int(meta.get("num_classes", len(data.classes)))
    if shape != data.input_shape or classes != len(data.classes):
        raise MitigateError(
            f"checkpoint {where} takes inputs {shape} with {classes} classes; "
            f"the data has {data.input_shape} with {len(data.classes)} classes"
        )
    tokens = _vocabulary_tokens(data)
    if tokens is not None and meta.get("vocabulary") != tokens:
        raise MitigateError(
            f"checkpoint {where} was trained with another vocabulary than the one built "
            "from this config's training split; use the [data] settings (dataset, sizes, "
            "vocab_size, min_freq) and seed it was trained with"
        )


def model_inputs(config: Config, data: Data) -> dict[str, object]:
    """:func:`mitigate.models.build_model` keywords for the configured architecture on
    ``data``: ``in_channels``, ``image_size`` and ``num_classes`` for images; ``vocab_size``,
    ``seq_len`` and ``num_classes`` for text.

    Raises:
        MitigateError: an image model on text data or the other way round.
    """
    from mitigate.data.text.dataset import LabelledText
    from mitigate.models.registry import model_modality, model_names

    arch = config.model.arch
    if model_modality(arch) != data.modality:
        raise MitigateError(
            f"model {arch!r} reads {model_modality(arch)} inputs but dataset "
            f"{config.data.dataset!r} holds {data.modality}; {data.modality} models: "
            + ", ".join(model_names(data.modality))
        )
    classes = len(data.classes)
    train = data.splits.train
    if isinstance(train, LabelledText) and train.vocabulary is not None:
        return {
            "vocab_size": len(train.vocabulary),
            "seq_len": data.input_shape[0],
            "num_classes": classes,
        }
    c, h, w = data.input_shape
    return {"in_channels": c, "image_size": (h, w), "num_classes": classes}


def check_schemes(
    config: Config,
    data: Data,
    schemes: Sequence[str],
    check: Callable[[nn.Module, Data], None] | None = None,
) -> None:
    """Fail fast, before any training, on a scheme name that is unknown or cannot quantize the
    configured model (static int8 on an LSTM or GRU, or on a model FX cannot trace), on a
    model that does not fit the data, and on whatever ``check`` refuses in the untrained
    model: it has the same layers as the trained one."""
    from mitigate.quantization import check_supported, parse_scheme
    from mitigate.runs.objects import given, is_given

    parsed = [parse_scheme(name) for name in schemes]
    if not parsed and check is None and not config.model.factory:
        return
    if is_given(config.model.factory):
        blank = given(config.model.factory, "model")
    else:
        with torch.random.fork_rng():  # leave the global RNG as training expects it
            blank = new_model(config, data)
    for scheme in parsed:
        check_supported(blank, scheme, example=_example(data, 1))
    if check is not None:
        check(blank, data)
