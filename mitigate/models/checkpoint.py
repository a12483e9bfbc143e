"""Save and load zoo models as safe, self-describing checkpoint files.

File layout (one ``torch.save`` of plain data)::

    {"format": "mitigate-checkpoint", "version": 1,
     "meta": {"arch": str, "input_shape": [C, H, W], "num_classes": int, ...caller's keys},
     "state_dict": {name: tensor}}

A text model (``lstm``, ``gru``) records ``input_shape`` ``[L]`` and ``vocab_size``; the
pipeline adds its ``vocabulary`` (a list of token strings) and ``max_len``, all plain data.

Loading uses ``torch.load(weights_only=True)``: a file that holds anything beyond tensors
and plain containers is refused before any of its code can run, so a checkpoint from a
stranger is safe to open. Writes go to a temporary file in the same folder and are renamed
into place, so a crash never leaves half a checkpoint under the real name.
"""

from __future__ import annotations

import numbers
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mitigate.errors import MitigateError, unknown_choice
from mitigate.models.base import ZooModel
from mitigate.models.registry import build_model, model_modality, model_names

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "read_torch_file",
    "save_checkpoint",
    "write_torch_file",
]

CHECKPOINT_FORMAT = "mitigate-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED_META = ("arch", "input_shape", "num_classes")


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, meta: Mapping[str, Any]
) -> None:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically.

    ``meta`` must describe the architecture — ``arch``, ``input_shape`` ``[C, H, W]`` and
    ``num_classes`` — unless the model came from :func:`build_model`, which fills them in.
    Anything else in ``meta`` (seed, accuracy, config ...) is stored as given; values must be
    str, int, float, bool, None, or lists / str-keyed dicts of those (tuples become lists,
    NumPy scalars become Python numbers).
    Missing parent folders are created.

    Raises:
        MitigateError: meta that is incomplete, contradicts the model or is not plain data;
            a model whose state holds non-float tensors (e.g. an already quantized copy);
            a path that cannot be written.

    Example:
        >>> import tempfile, torch
        >>> model = build_model("mlp", in_channels=1, image_size=8, num_classes=10)
        >>> path = tempfile.mkdtemp() + "/mlp.pt"
        >>> save_checkpoint(path, model, {"seed": 0})
        >>> loaded, meta = load_checkpoint(path, expected_arch="mlp")
        >>> meta["input_shape"], meta["seed"]
        ([1, 8, 8], 0)
    """
    full_meta = _meta_for(model, meta)
    state = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            raise MitigateError(
                f"cannot checkpoint state entry {key!r} ({type(value).__name__}): checkpoints "
                "hold full-precision models; save the FP model and quantize after loading"
            )
        state[key] = value.detach().cpu()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "meta": full_meta,
        "state_dict": state,
    }
    write_torch_file(Path(path), payload)


def load_checkpoint(
    path: str | os.PathLike[str], *, expected_arch: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a zoo model from a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        expected_arch: if given, the architecture the caller needs; a checkpoint holding a
            different one is refused.

    Returns:
        ``(model, meta)``: the float32 model in eval mode on the CPU, and the stored meta.
        Torch's global RNG is left as it was (rebuilding does not consume random numbers).

    Raises:
        MitigateError: missing file, a file that is not a (safe) mitigate checkpoint, an
            architecture other than ``expected_arch``, or weights that do not fit it.
    """
    if expected_arch is not None and expected_arch not in model_names():
        raise unknown_choice("model", expected_arch, model_names())
    path = Path(path)
    if not path.exists():
        raise MitigateError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise MitigateError(f"checkpoint path is not a file: {path}")
    payload = read_torch_file(path)
    meta, state = _unpack(path, payload)
    arch = meta["arch"]
    if expected_arch is not None and arch != expected_arch:
        raise MitigateError(
            f"checkpoint {path} holds a {arch}, the config asks for {expected_arch}"
        )
    try:
        with torch.random.fork_rng(devices=[]):
            model = build_model(arch, num_classes=meta["num_classes"], **_shape_args(meta))
    except MitigateError as err:
        raise MitigateError(f"checkpoint {path} has unusable meta: {err}") from None
    _check_fits(path, model, state, meta)
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def _meta_for(model: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Caller's meta with the model's own description filled in and checked."""
    if not isinstance(meta, Mapping):
        raise MitigateError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    full = _plain(dict(meta), "meta")
    if isinstance(model, ZooModel):
        own = {
            "arch": model.arch,
            "input_shape": list(model.input_shape),
            "num_classes": model.num_classes,
        }
        if hasattr(model, "vocab_size"):
            own["vocab_size"] = model.vocab_size
        for key, value in own.items():
            if key in full and full[key] != value:
                raise MitigateError(
                    f"checkpoint meta says {key}={full[key]!r} but the model has {value!r}"
                )
            full[key] = value
    missing = [k for k in _REQUIRED_META if k not in full]
    if missing:
        raise MitigateError(
            f"checkpoint meta lacks {', '.join(missing)}; a model not built by build_model "
            f"needs meta with {', '.join(_REQUIRED_META)}"
        )
    _check_arch_meta(full, where="checkpoint meta")
    return full


def _plain(value: Any, where: str) -> Any:
    """Copy of ``value`` as plain data (tuples become lists), or an error naming the spot."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, numbers.Integral):  # e.g. numpy.int64 from a dataset's shape
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise MitigateError(f"{where} keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    raise MitigateError(
        f"{where} is a {type(value).__name__}; checkpoint meta holds only str, int, float, "
        "bool, None, lists and dicts"
    )


def _shape_args(meta: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`build_model` keywords for the input shape a (checked) meta records."""
    if model_modality(meta["arch"]) == "text":
        return {"vocab_size": meta["vocab_size"], "seq_len": meta["input_shape"][0]}
    c, h, w = meta["input_shape"]
    return {"in_channels": c, "image_size": (h, w)}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arch_meta(meta: Mapping[str, Any], *, where: str) -> None:
    arch, shape, classes = meta["arch"], meta["input_shape"], meta["num_classes"]
    if arch not in model_names():
        raise MitigateError(f"{where}: {unknown_choice('model', arch, model_names())}")
    text = model_modality(arch) == "text"
    rank, layout = (1, "[L]") if text else (3, "[C, H, W]")
    if not (isinstance(shape, list) and len(shape) == rank and all(map(_is_int, shape))):
        raise MitigateError(f"{where}: input_shape must be {layout} integers, got {shape!r}")
    if not _is_int(classes):
        raise MitigateError(f"{where}: num_classes must be an integer, got {classes!r}")
    if text and not _is_int(meta.get("vocab_size")):
        raise MitigateError(
            f"{where}: a {arch} needs vocab_size (an integer), got {meta.get('vocab_size')!r}"
        )


def write_torch_file(path: Path, payload: dict[str, Any], what: str = "checkpoint") -> None:
    """``torch.save(payload)`` to ``path`` through a temporary file in the same folder, so a
    crash never leaves half a file under the real name; ``what`` names the file in errors."""
    from mitigate.atomic import write_torch

    if path.is_dir():
        raise MitigateError(f"cannot write {what}: {path} is a folder")
    try:
        write_torch(path, payload)
    except OSError as err:
        raise MitigateError(f"cannot write {what} {path}: {err.strerror or err}") from None


def read_torch_file(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``: a file holding anything beyond tensors and plain
    data is refused before any of its code can run; any other failure is one line naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about unusual pickle protocols
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        if not _holds_objects(path, err):  # random bytes, text, a truncated file
            raise MitigateError(
                f"{path} is not a torch file (not a mitigate {what}, or corrupt)"
            ) from None
        raise MitigateError(
            f"{path} is not a safe mitigate {what}: it holds Python objects beyond tensors "
            "and plain data, which could run code when loaded, so it was refused"
        ) from None
    except Exception as err:  # a stranger's file can fail in any way; report, never crash
        reason = str(err).splitlines()[0][:120] if str(err) else "no details"
        raise MitigateError(
            f"{path} is not a mitigate {what} or is corrupt ({type(err).__name__}: {reason})"
        ) from None


_OBJECT_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"}


def _holds_objects(path: Path, err: Exception) -> bool:
    """Did torch refuse ``path`` because its pickle builds Python objects (rather than
    because it is no pickle at all)? Read with :mod:`pickletools`, which lists opcodes and
    never executes them."""
    import pickletools
    import zipfile

    if "global" in str(err).lower():  # torch names the blocked class: "GLOBAL posix.system"
        return True
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: the pickle is one member
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(member)
        else:
            data = path.read_bytes()
        return any(op.name in _OBJECT_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception:  # not a pickle stream: nothing in it could build an object
        return False


def _unpack(path: Path, payload: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise MitigateError(f"{path} is not a mitigate checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    version = payload.get("version")
    if version != CHECKPOINT_VERSION:
        raise MitigateError(
            f"{path} is checkpoint version {version!r}; this mitigate reads version "
            f"{CHECKPOINT_VERSION}"
        )
    meta, state = payload.get("meta"), payload.get("state_dict")
    if not isinstance(meta, dict) or any(k not in meta for k in _REQUIRED_META):
        raise MitigateError(
            f"{path} is a corrupt mitigate checkpoint: meta needs {', '.join(_REQUIRED_META)}"
        )
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise MitigateError(
            f"{path} is a corrupt mitigate checkpoint: state_dict must map names to tensors"
        )
    _check_arch_meta(meta, where=f"checkpoint {path}")
    return meta, state


def _check_fits(
    path: Path, model: nn.Module, state: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Name the first missing / unexpected / mis-shaped keys before torch's long message."""
    from mitigate.models._state import non_finite, some, state_problems

    problems = state_problems(model, state)
    if problems:
        raise MitigateError(
            f"checkpoint {path} weights do not fit a {meta['arch']} for input "
            f"{meta['input_shape']} and {meta['num_classes']} classes; {'; '.join(problems)}"
        )
    broken = non_finite(state)
    if broken:
        raise MitigateError(
            f"checkpoint {path} holds NaN or infinite weights in {some(broken)}; a model with "
            "them cannot be measured"
        )
