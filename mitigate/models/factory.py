"""A user's own model: built by their factory (``pkg.module:callable``), its weights read from a
safetensors or ``weights_only`` torch file, and checked against the data before any work."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError, first_line
from mitigate.models._state import non_finite, some, state_problems

__all__ = [
    "build_from_factory",
    "check_model_fits",
    "load_weights",
    "read_weights",
]


def build_from_factory(
    factory: Callable[..., Any],
    name: str,
    kwargs: Mapping[str, Any],
    shape: Mapping[str, Any],
) -> nn.Module:
    """Call ``factory`` with the config's ``kwargs``, plus whichever of the data's ``shape``
    keywords (``in_channels``, ``image_size``, ``input_shape``, ``num_classes``, ...) its
    signature takes and ``kwargs`` does not set.

    Raises:
        MitigateError: the factory raised, or returned something that is not an ``nn.Module``.
    """
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: pass kwargs alone
        parameters = {}
    # Only the keywords the signature names: a **kwargs factory may pass them on to a layer
    # that does not take them.
    extra = {key: value for key, value in shape.items() if key in parameters and key not in kwargs}
    try:
        model = factory(**{**extra, **kwargs})
    except Exception as err:
        raise MitigateError(
            f"model factory {name} raised {type(err).__name__}: {first_line(err)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise MitigateError(
            f"model factory {name} returned a {type(model).__name__}, not a torch nn.Module"
        )
    return model.float()


def read_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file loaded with
    ``weights_only=True`` (a plain state dict, or a dict holding one under ``state_dict``, as
    mitigate's own checkpoints do). Nothing in the file can run code.

    Raises:
        MitigateError: a missing file, a file that is not one of these, or a non-tensor entry.
    """
    from mitigate.models.checkpoint import read_torch_file

    path = Path(path)
    if not path.exists():
        raise MitigateError(f"weights file not found: {path}")
    if not path.is_file():
        raise MitigateError(f"weights path {path} is not a file")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise MitigateError(f"{path} is not a readable safetensors file: {err}") from None
    else:
        state = read_torch_file(path, what="weights file")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise MitigateError(
            f"{path} does not hold a state dict (names mapped to tensors); save one with "
            "torch.save(model.state_dict(), path) or safetensors.torch.save_file"
        )
    return state


def load_weights(model: nn.Module, state: Mapping[str, Tensor], where: str) -> nn.Module:
    """Load ``state`` into ``model`` strictly, naming the first missing, unexpected, mis-shaped
    or non-finite entries in one line instead of torch's long message."""
    problems = state_problems(model, state)
    if problems:
        raise MitigateError(f"weights {where} do not fit the model; {'; '.join(problems)}")
    broken = non_finite(state)
    if broken:
        raise MitigateError(
            f"weights {where} hold NaN or infinite values in {some(broken)}; a model with "
            "them cannot be measured"
        )
    model.load_state_dict(dict(state), strict=True)
    return model


def check_model_fits(model: nn.Module, example: Tensor, num_classes: int, name: str) -> None:
    """Run ``model`` on an example batch of the data and check it returns ``[B, num_classes]``
    logits: a wrong input shape or class count fails here, in one line, before any work.

    Raises:
        MitigateError: the forward pass raised, or the output has the wrong shape.
    """
    from mitigate.scanning import eval_mode

    with torch.random.fork_rng(), eval_mode(model), torch.no_grad():
        try:
            out = model(example)
        except Exception as err:
            raise MitigateError(
                f"model {name} fails on the data's inputs {list(example.shape)}: "
                f"{type(err).__name__}: {first_line(err)}"
            ) from None
    expected = (example.shape[0], num_classes)
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise MitigateError(
            f"model {name} returns {got} for a batch of {example.shape[0]}; the data has "
            f"{num_classes} classes, so it must return logits [{example.shape[0]}, {num_classes}]"
        )


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length, then ``{``."""
    with path.open("rb") as file:
        head = file.read(9)
    return path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")
