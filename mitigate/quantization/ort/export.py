"""Export an FP model to ONNX once, cached by its weights and the export options.

``torch.onnx.export(..., dynamo=True)`` (the legacy TorchScript exporter is deprecated) with a
dynamic batch dimension, one file (no external data). A model torch cannot export fails with
one line naming the operator. Exports are kept in memory (a fallback search re-quantizes one
FP model dozens of times) and on disk beside the base models
(``$MITIGATE_CACHE_DIR/onnx``, default ``~/.cache/mitigate/onnx``), so the next command
reuses them.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import logging
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.quantization.ort._require import require

__all__ = [
    "OPSET",
    "clear_export_cache",
    "export_dir",
    "export_key",
    "export_onnx",
    "module_nodes",
]

#: The ONNX opset the exporter targets (ORT 1.20+ runs it; its quantizer needs >= 13).
OPSET = 20
# Exports kept in memory: each is the model's size in bytes; a fallback search re-quantizes
# one FP model dozens of times, a compare run holds a few FP models.
_CACHE_SIZE = 8
_cache: OrderedDict[str, bytes] = OrderedDict()


def export_key(model: nn.Module, example: Tensor, opset: int = OPSET) -> str:
    """The cache key: the model's class and structure, every weight and buffer's bytes, the
    input's per-example shape and dtype, the export options and torch's version."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}|{model!r}".encode())
    h.update(f"|{tuple(example.shape[1:])}|{example.dtype}|opset{opset}|dynamo".encode())
    h.update(f"|torch {torch.__version__}".encode())  # the exporter's output changes with it
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_onnx(model: nn.Module, example: Tensor, *, opset: int = OPSET) -> bytes:
    """The serialized ONNX model of ``model`` in eval mode, input ``x`` with a dynamic batch.

    Args:
        model: the FP classifier (not modified).
        example: ``[B, ...]`` inputs of the shape and dtype it takes.
        opset: the ONNX opset.

    Returns:
        The ``ModelProto`` bytes; the same object for the same weights and options.

    Raises:
        MitigateError: the extra is not installed, or torch cannot export the model (the
            message names the operator when the exporter does).
    """
    key = export_key(model, example, opset)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    require("onnxscript")  # the dynamo exporter's ONNX op library
    require("onnx")
    path = export_dir() / f"{key}.onnx"
    data = _read_cached(path)
    if data is None:
        data = _export(copy.deepcopy(model).eval().cpu(), _batch_of_two(example), opset)
        _write_cached(path, data)
    _cache[key] = data
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return data


def clear_export_cache(*, disk: bool = False) -> None:
    """Forget every export held in memory (and, with ``disk``, those in :func:`export_dir`)."""
    _cache.clear()
    if disk and export_dir().is_dir():
        for path in export_dir().glob("*.onnx"):
            path.unlink(missing_ok=True)


def export_dir() -> Path:
    """Where exports are cached: ``$MITIGATE_CACHE_DIR/onnx`` or ``~/.cache/mitigate/onnx``."""
    root = os.environ.get("MITIGATE_CACHE_DIR") or Path.home() / ".cache" / "mitigate"
    return Path(root) / "onnx"


def _read_cached(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data or None  # an empty file is no export


def _write_cached(path: Path, data: bytes) -> None:
    from mitigate.atomic import write_bytes

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)  # atomic: a reader never sees half a model
    except OSError:
        pass  # a read-only cache costs a re-export next time, nothing else


def module_nodes(model_bytes: bytes) -> dict[str, list[str]]:
    """Module qualified name -> names of the ONNX nodes exported from it (and its children),
    read from the exporter's ``pkg.torch.onnx.name_scopes`` metadata; empty for a model from
    another exporter."""
    onnx = require("onnx")
    proto = onnx.load_from_string(model_bytes)
    found: dict[str, list[str]] = {}
    for node in proto.graph.node:
        for prop in node.metadata_props:
            if prop.key != "pkg.torch.onnx.name_scopes":
                continue
            with contextlib.suppress(ValueError, SyntaxError):
                scopes = ast.literal_eval(prop.value)
                for scope in scopes[1:-1]:  # '' is the root; the last is the op itself
                    found.setdefault(scope, []).append(node.name)
    return found


def _batch_of_two(example: Tensor) -> Tensor:
    # A batch of one makes torch.export specialize the batch dimension to 1.
    example = example.detach().cpu()
    return example[:2] if len(example) >= 2 else example[:1].repeat(2, *[1] * (example.ndim - 1))


def _export(model: nn.Module, example: Tensor, opset: int) -> bytes:
    batch = torch.export.Dim("batch")
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=["x"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; all mean "cannot export"
        raise MitigateError(_export_failure(err)) from None
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise MitigateError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()


def _export_failure(err: BaseException) -> str:
    """One line for an export error, naming the operator when the exporter does."""
    errors = list(_chain(err))
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(str(e) for e in errors))
    found = re.search(r"OpOverload\(op='([\w.:]+)', overload='(\w+)'\)", text) or re.search(
        r"torch\.ops\.([\w.]+?)(?:\.(default|\w+))?\b[(,\]]", text
    )
    if found:
        return (
            f"cannot export the model to ONNX: operator {found.group(1)} has no ONNX "
            "translation in torch.onnx; replace it or register one"
        )
    # the innermost error is the cause; its first line says what failed
    root = re.sub(r"\x1b\[[0-9;]*m", "", str(errors[-1])).strip().splitlines()
    cause = root[0][:200] if root else type(errors[-1]).__name__
    return f"cannot export the model to ONNX: {cause}"


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs missing torchvision ops and warns about its internals; neither is
    the user's business."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
