"""Build the ORT model for an ``ort-*`` scheme: export (cached), quantize, open a session.

Static int8 writes QDQ (QuantizeLinear/DequantizeLinear pairs around each quantized op), the
format ORT fuses into ``QLinearConv`` / ``QGemm`` kernels at its default optimization level.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.quantization.ort._require import require
from mitigate.quantization.ort.export import export_onnx, module_nodes
from mitigate.quantization.ort.runtime import OrtModule
from mitigate.quantization.schemes import (
    OnnxFile,
    OrtFloat32,
    OrtInt8,
    OrtInt8Dynamic,
    scheme_label,
)

__all__ = ["build", "excluded_nodes", "fused_into"]

# Logits of the export and of torch that differ by less than this agree (float32 kernels
# sum in different orders).
_AGREE_ATOL = 1e-4
# The ops that hold weights: what a layer name in ``exclude`` usually means.
_WEIGHTED = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def build(
    model: nn.Module,
    scheme: OrtInt8 | OrtInt8Dynamic | OrtFloat32 | OnnxFile,
    batches: Sequence[Tensor],
) -> OrtModule:
    """The :class:`OrtModule` that runs ``model`` under ``scheme``.

    Args:
        model: the FP classifier (not modified).
        scheme: an ``ort-*`` scheme or an :class:`OnnxFile`.
        batches: calibration batches ``[B, ...]`` (static int8 calibrates on all; the others
            use the first as the export example and to check the export agrees with torch).

    Raises:
        MitigateError: the extra is missing, no inputs, the export fails, an ``exclude`` name
            is neither a module nor a node, or ORT cannot load the file.
    """
    label = scheme_label(scheme)
    require("onnxruntime", scheme=label)
    options = {"threads": scheme.threads, "optimization": scheme.optimization}
    if not batches or len(batches[0]) == 0:
        raise MitigateError(f"scheme {label!r} needs example inputs; got none")
    if isinstance(scheme, OnnxFile):
        shipped = OrtModule(_read(scheme.path), **options, info={"source": scheme.path})
        _check_fits(model, shipped, batches[0][:2], scheme.path)
        return shipped
    fp_bytes = export_onnx(model, batches[0])
    # ort-fp32 checks the export on every input; the int8 schemes on one batch (they are built
    # many times over in a fallback search)
    checked = batches if isinstance(scheme, OrtFloat32) else batches[:1]
    exported = OrtModule(fp_bytes, **options)
    info: dict[str, Any] = {"export": _agreement(model, exported, checked)}
    if isinstance(scheme, OrtFloat32):
        exported.info = info
        return exported
    if isinstance(scheme, OrtInt8Dynamic):
        data = _dynamic(fp_bytes, scheme)
    else:
        nodes = excluded_nodes(
            fp_bytes, scheme.float_layers, fused_into(model), modules=_module_names(model)
        )
        info["excluded_nodes"] = nodes
        data = _static(fp_bytes, scheme, batches, nodes)
    return OrtModule(data, **options, info=info)


def excluded_nodes(
    model_bytes: bytes,
    names: Sequence[str],
    fused: Mapping[str, str] | None = None,
    *,
    modules: Collection[str] = (),
) -> list[str]:
    """ONNX node names to keep in float for ``names``: a node name as is, a module name as every
    node exported from it (and its children), in graph order.

    Args:
        model_bytes: the exported FP model.
        names: module or node names.
        fused: conv module -> the batch norm module the exporter folded it into (the folded
            node keeps only the norm's name; :func:`fused_into`).
        modules: the torch model's module names: one that left no node of its own (a folded
            norm, a dropout) has nothing to keep in float.
    """
    fused = fused or {}
    folded = set(fused.values())
    onnx = require("onnx")
    graph = onnx.load_from_string(model_bytes).graph
    graph_nodes = [n.name for n in graph.node]
    weighted = {n.name for n in graph.node if n.op_type in _WEIGHTED}
    scopes = module_nodes(model_bytes)
    chosen: set[str] = set()
    for name in names:
        if name in folded:
            continue  # its conv carries it: kept in float only with the conv
        if name in graph_nodes:
            chosen.add(name)
        elif name in scopes:
            chosen.update(scopes[name])
        elif fused.get(name) in scopes:
            chosen.update(n for n in scopes[fused[name]] if n in weighted)
        elif name in modules and not any(m.startswith(name + ".") for m in scopes):
            continue  # exported to no node (dropout, identity)
        else:
            owners = [m for m in scopes if weighted & set(scopes[m])]
            layers = [m for m in owners if not any(o.startswith(m + ".") for o in owners)]
            back = {bn: conv for conv, bn in fused.items()}
            layers = [back.get(m, m) for m in layers]
            raise MitigateError(
                f"no layer or ONNX node named {name!r} to keep in float; layers: "
                f"{', '.join(layers) or 'none'} (or a node name such as {graph_nodes[0]!r})"
            )
    return [n for n in graph_nodes if n in chosen]


def fused_into(model: nn.Module) -> dict[str, str]:
    """Conv module name -> the BatchNorm module that directly follows it (the exporter folds
    the pair into one Conv named after the norm); empty for a model FX cannot trace."""
    from mitigate.quantization.fusion import batchnorm_owners

    try:
        owners = batchnorm_owners(model, (nn.modules.conv._ConvNd,))
    except Exception:  # an untraceable model: exclude by node names then
        return {}
    return {conv: norm for norm, conv in owners.items()}


def _module_names(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_modules() if name}


def _read(path: str) -> bytes:
    if not os.path.isfile(path):
        raise MitigateError(f"no ONNX file {path!r} to use as the quantized model")
    with open(path, "rb") as f:
        return f.read()


@torch.no_grad()
def _check_fits(model: nn.Module, shipped: OrtModule, x: Tensor, path: str) -> None:
    """A user's file must take the FP model's inputs and give logits of its shape."""
    was_training = model.training
    try:
        expected = tuple(model.eval()(x).shape)
    finally:
        model.train(was_training)
    try:
        got = tuple(shipped(x).shape)
    except Exception as err:  # ORT's InvalidArgument / Fail: wrong rank, dtype, size
        line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise MitigateError(
            f"{path} does not take the FP model's inputs {list(x.shape[1:])}: {line}"
        ) from None
    if got != expected:
        raise MitigateError(
            f"{path} gives outputs of shape {list(got)} where the FP model gives {list(expected)}"
        )


@torch.no_grad()
def _agreement(model: nn.Module, exported: OrtModule, batches: Sequence[Tensor]) -> dict:
    """Does the export compute what torch computes? Max logit difference and label agreement
    on every calibration input."""
    was_training = model.training
    model.eval()
    try:
        diff, differ, n = 0.0, 0, 0
        for x in batches:
            ref, got = model(x).float(), exported(x)
            diff = max(diff, float((ref - got).abs().max()))
            differ += int((ref.argmax(1) != got.argmax(1)).sum())
            n += len(x)
    finally:
        model.train(was_training)
    return {
        "inputs": n,
        "max_abs_logit_diff": diff,
        "labels_differ": differ,
        "agrees_with_torch": differ == 0 and diff <= _AGREE_ATOL,
    }


class _Reader:
    """ORT's ``CalibrationDataReader`` protocol over our batches."""

    def __init__(self, name: str, batches: Sequence[Tensor]) -> None:
        self._items = iter([{name: b.detach().cpu().numpy()} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._items, None)

    def __iter__(self):  # newer ORT iterates the reader
        return self

    def __next__(self) -> dict:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _static(
    fp_bytes: bytes, scheme: OrtInt8, batches: Sequence[Tensor], exclude: list[str]
) -> bytes:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[scheme.calibration]
    activation = QuantType.QUInt8 if scheme.activations == "u8" else QuantType.QInt8
    # entropy calibration prints its histogram sizes to stdout
    with _workdir() as tmp, contextlib.redirect_stdout(io.StringIO()):
        src, dst = _write(tmp, fp_bytes), os.path.join(tmp, "int8.onnx")
        quantize_static(
            src,
            dst,
            _Reader("x", batches),
            quant_format=QuantFormat.QDQ,
            per_channel=scheme.per_channel,
            reduce_range=scheme.reduce_range,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=exclude,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        with open(dst, "rb") as f:
            return f.read()


def _dynamic(fp_bytes: bytes, scheme: OrtInt8Dynamic) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _workdir() as tmp:
        src, dst = _write(tmp, fp_bytes), os.path.join(tmp, "int8-dynamic.onnx")
        quantize_dynamic(
            src,
            dst,
            per_channel=scheme.per_channel,
            reduce_range=scheme.reduce_range,
            weight_type=QuantType.QInt8,
        )
        with open(dst, "rb") as f:
            return f.read()


def _write(folder: str, data: bytes) -> str:
    path = os.path.join(folder, "fp32.onnx")
    with open(path, "wb") as f:
        f.write(data)
    return path


@contextlib.contextmanager
def _workdir() -> Iterator[str]:
    """A temporary folder for ORT's quantizer (it reads and writes files), with its advice to
    pre-process the model (a root-logger warning on every call) silenced."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="mitigate-ort-") as tmp:
            yield tmp
    finally:
        logging.disable(previous)
