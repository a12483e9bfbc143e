"""Runs on objects: ``mitigate.retrain(model=net, data=mitigate.Data(...), strategy=...)``.

A run reads its model and data through the config (``[model] factory``, ``[data] dataset``),
so that every cache key, cell digest and report says what was measured. A model or data
object handed to a run is registered under ``object:<digest of its weights / arrays>`` and the
config names that key for the length of the run: two runs on different objects never share a
cached cell, and a rerun on the same objects resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from mitigate.config import Config, override
from mitigate.errors import MitigateError

__all__ = ["OBJECT_PREFIX", "accepts_objects", "given", "is_given", "settings_override"]

OBJECT_PREFIX = "object:"
_GIVEN: dict[str, Any] = {}
R = TypeVar("R")


def is_given(spec: str) -> bool:
    return spec.startswith(OBJECT_PREFIX)


def given(spec: str, what: str) -> Any:
    """The object a running call registered under ``spec``."""
    if spec not in _GIVEN:
        raise MitigateError(
            f"{what} {spec!r} names an object given to another call; pass the object itself"
        )
    return _GIVEN[spec]


def weights_digest(model: nn.Module) -> str:
    """A digest of a model's class and the bytes of every tensor of its state: the same in
    every process (a rerun finds its cells), unlike a digest of ``torch.save``'s output."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        raw = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8)  # any dtype
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _registered(config: Config, model: nn.Module | None, data: Any) -> Iterator[Config]:
    from mitigate.data.own import Data

    keys, changes = [], {}
    if model is not None:
        if not isinstance(model, nn.Module):
            raise MitigateError(f"model must be a torch nn.Module, got {type(model).__name__}")
        key = OBJECT_PREFIX + weights_digest(model)
        keys.append(key)
        changes["model"] = dataclasses.replace(config.model, factory=key, weights="")
        _GIVEN[key] = model
    if data is not None:
        if not isinstance(data, Data):
            raise MitigateError(f"data must be mitigate.Data, got {type(data).__name__}")
        key = OBJECT_PREFIX + data.digest()
        keys.append(key)
        changes["data"] = dataclasses.replace(config.data, dataset=key)
        _GIVEN[key] = data
    try:
        yield dataclasses.replace(config, **changes)
    finally:
        for key in keys:
            _GIVEN.pop(key, None)


def settings_override(config: Config, settings: dict[str, Any]) -> Config:
    """``config`` with keyword settings applied: ``section__key=value``, or a key name that
    only one section has (``strategy="guard"``, ``budget=50``, ``schemes=["int8"]``).

    Example:
        >>> settings_override(Config(), {"strategy": "guard", "seed": 3}).retrain.strategy
        'guard'
    """
    dotted: dict[str, Any] = {}
    for key, value in settings.items():
        dotted[_dotted(key)] = tuple(value) if isinstance(value, list) else value
    return override(config, **dotted)


def _dotted(key: str) -> str:
    top = {f.name: f for f in dataclasses.fields(Config)}
    if "__" in key or (key in top and not dataclasses.is_dataclass(getattr(Config(), key))):
        return key
    owners = [
        name
        for name, f in top.items()
        if dataclasses.is_dataclass(section := getattr(Config(), name))
        and key in {g.name for g in dataclasses.fields(section)}
    ]
    if len(owners) == 1:
        return f"{owners[0]}__{key}"
    if not owners:
        raise MitigateError(
            f"unknown setting {key!r}; use a config key (strategy, budget, schemes, seed, ...) "
            "or section__key"
        )
    raise MitigateError(
        f"setting {key!r} is in several sections ({', '.join(owners)}); write it as "
        + " or ".join(f"{o}__{key}" for o in owners)
    )


def accepts_objects(run: Callable[..., R]) -> Callable[..., R]:
    """Let ``run(config, ...)`` also be called as ``run(model=..., data=..., **settings)``:
    ``config`` defaults to the embedded default, settings are applied to it, and the model and
    data objects stand in for the configured ones."""
    own = set(inspect.signature(run).parameters)

    @functools.wraps(run)
    def wrapper(
        config: Config | None = None,
        *args: Any,
        model: nn.Module | None = None,
        data: Any = None,
        **kwargs: Any,
    ) -> R:
        if config is not None and not isinstance(config, Config):
            raise MitigateError(f"config must be a mitigate.Config, got {type(config).__name__}")
        run_kwargs = {k: v for k, v in kwargs.items() if k in own}
        settings = {k: v for k, v in kwargs.items() if k not in own}
        config = config or Config()
        if settings:
            config = settings_override(config, settings)
        with _registered(config, model, data) as config:
            return run(config, *args, **run_kwargs)

    return wrapper
