"""One entry point for every scheme: ``quantize(model, scheme, calibration)``."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.quantization import static
from mitigate.quantization._quiet import quiet_backend
from mitigate.quantization.schemes import (
    ORT_SCHEMES,
    BFloat16,
    Float16,
    Int4Weight,
    Int8Dynamic,
    Int8Static,
    OnnxFile,
    Scheme,
    parse_scheme,
    scheme_label,
)
from mitigate.quantization.weight_only import quantize_weights

__all__ = ["RECURRENT_SCHEMES", "QuantizedModel", "check_supported", "quantize"]

#: The schemes that can quantize a model holding LSTM or GRU layers: those that quantize
#: layer by layer, with no graph to trace.
RECURRENT_SCHEMES = static.UNTRACED_SCHEMES


class QuantizedModel(nn.Module):
    """A quantized copy that is safe to call anywhere: takes and returns float32.

    It selects the quantized engine its weights were packed for (a qnnpack-packed model fails
    under the x86 engine), turns off torch's deterministic mode for the call (quantized ops
    refuse to run under it, and Lightning's ``deterministic=True`` leaves it on), casts float
    inputs to the model's dtype (integer token ids pass unchanged), and silences torch.ao's
    deprecation warnings.

    Attributes:
        inner: the backend module (an FX ``GraphModule`` for int8, a plain module otherwise).
        scheme: the scheme that produced it.
    """

    def __init__(self, inner: nn.Module, scheme: Scheme, input_dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.scheme = scheme
        self.input_dtype = input_dtype
        self.engine = getattr(scheme, "engine", None)

    @property
    def label(self) -> str:
        return scheme_label(self.scheme)

    def forward(self, x: Tensor) -> Tensor:
        if self.engine is None:
            return self.inner(x.to(self.input_dtype) if x.is_floating_point() else x).float()
        previous_engine = torch.backends.quantized.engine
        deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            torch.backends.quantized.engine = self.engine
            if deterministic:
                torch.use_deterministic_algorithms(False)
            with quiet_backend():
                return self.inner(x).float()
        finally:
            torch.backends.quantized.engine = previous_engine
            if deterministic:
                torch.use_deterministic_algorithms(True)

    def train(self, mode: bool = True) -> QuantizedModel:
        # A converted model has no training mode; keep it in eval whatever a caller asks.
        return super().train(False)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):  # type: ignore[override]
        # Loading re-packs int8 weights for whichever quantized engine is active, and a qnnpack
        # model re-packed under x86 silently runs x86 kernels: load under this model's engine.
        engine = static._engine(self.engine) if self.engine else contextlib.nullcontext()
        with engine, quiet_backend():
            return super().load_state_dict(state_dict, strict=strict, assign=assign)


def quantize(
    model: nn.Module,
    scheme: Scheme | str,
    calibration: Tensor | Iterable[Tensor] | None = None,
    *,
    batch_size: int = 256,
) -> QuantizedModel:
    """Quantize a copy of ``model``; the model passed in is never modified.

    Args:
        model: a float32 classifier mapping ``[B, ...]`` inputs to ``[B, C]`` logits.
        scheme: a scheme object or name, e.g. ``"int8"``, ``"int8:engine=qnnpack"``, ``"fp16"``.
        calibration: inputs for static int8's observers, ``float [N, ...]`` or an iterable of
            batches; ignored by the other schemes.
        batch_size: batch size when ``calibration`` is one tensor.

    Returns:
        A :class:`QuantizedModel` in eval mode.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> q = quantize(net, "int8", torch.rand(32, 1, 8, 8))
        >>> q(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """
    if isinstance(scheme, str):
        scheme = parse_scheme(scheme)
    was_training = model.training
    # FX conversion draws from the global RNG; quantizing must not change a training run.
    with torch.random.fork_rng():
        try:
            return _quantize(model, scheme, calibration, batch_size)
        finally:
            model.train(was_training)


def check_supported(
    model: nn.Module, scheme: Scheme | str, *, example: Tensor | None = None
) -> None:
    """Raise a one-line :class:`MitigateError` when ``scheme`` cannot quantize ``model``.

    With an ``example`` input, static int8 also traces the model (as quantizing will), so a
    model with data-dependent control flow fails here, naming the module, before any work.

    Static int8 cannot quantize LSTM or GRU layers: torch.ao has no static quantized GRU,
    FX would leave it in float without a word, and its static LSTM path (swapping in
    ``torch.ao.nn.quantizable.LSTM``) fails at run time on CPU in torch 2.13. The study this
    project follows could not build full-integer LSTM/GRU models either.

    Example:
        >>> lstm = nn.Sequential(nn.Embedding(10, 4), nn.LSTM(4, 4))
        >>> check_supported(lstm, "int8-dynamic")
        >>> try:
        ...     check_supported(lstm, "int8")
        ... except MitigateError as err:
        ...     print(str(err)[:50])
        static int8 cannot quantize recurrent layers (LSTM
    """
    if isinstance(scheme, str):
        scheme = parse_scheme(scheme)
    if isinstance(scheme, ORT_SCHEMES):  # fail before any training: extra missing, no file
        from mitigate.quantization.ort._require import require

        require("onnxruntime", scheme=scheme_label(scheme))
        if isinstance(scheme, OnnxFile) and not os.path.isfile(scheme.path):
            raise MitigateError(f"no ONNX file {scheme.path!r} to use as the quantized model")
        return
    if not isinstance(scheme, Int8Static):
        return
    recurrent = [name for name, m in model.named_modules() if isinstance(m, nn.RNNBase)]
    if recurrent:
        kind = type(model.get_submodule(recurrent[0])).__name__
        raise MitigateError(
            f"static int8 cannot quantize recurrent layers ({kind} {recurrent[0]}); for "
            f"recurrent models use one of: {', '.join(RECURRENT_SCHEMES)}"
        )
    if example is not None:
        with torch.random.fork_rng():
            static.prepare(model, scheme, example)


def _quantize(
    model: nn.Module,
    scheme: Scheme,
    calibration: Tensor | Iterable[Tensor] | None,
    batch_size: int,
) -> QuantizedModel:
    check_supported(model, scheme)
    if isinstance(scheme, Int8Static):
        return QuantizedModel(
            _static(model, scheme, calibration, batch_size), scheme, torch.float32
        )
    if isinstance(scheme, Int8Dynamic):
        return QuantizedModel(_dynamic(model, scheme), scheme, torch.float32)
    if isinstance(scheme, (Float16, BFloat16)):
        dtype = torch.float16 if isinstance(scheme, Float16) else torch.bfloat16
        return QuantizedModel(copy.deepcopy(model).eval().to(dtype), scheme, dtype)
    if isinstance(scheme, Int4Weight):
        return QuantizedModel(quantize_weights(model, scheme), scheme, torch.float32)
    if isinstance(scheme, ORT_SCHEMES):
        from mitigate.quantization.ort.build import build

        batches = _batches(calibration, batch_size, scheme_label(scheme))
        return QuantizedModel(build(model, scheme, batches), scheme, torch.float32)
    raise MitigateError(f"not a quantization scheme: {scheme!r}")


def _static(
    model: nn.Module,
    scheme: Int8Static,
    calibration: Tensor | Iterable[Tensor] | None,
    batch_size: int,
) -> nn.Module:
    batches = _batches(calibration, batch_size, "static int8")
    _check_layer_names(model, scheme.float_layers)
    prepared = static.prepare(model, scheme, batches[0][:1])
    static.calibrate(prepared, batches)
    return static.convert(prepared, scheme.engine)


def _batches(
    calibration: Tensor | Iterable[Tensor] | None, batch_size: int, what: str
) -> list[Tensor]:
    if calibration is None:
        raise MitigateError(f"{what} needs calibration inputs; pass calibration=...")
    batches = list(
        calibration.split(batch_size) if isinstance(calibration, Tensor) else calibration
    )
    if not batches or batches[0].shape[0] == 0:
        raise MitigateError(f"{what} needs at least one calibration input; got none")
    return batches


def _dynamic(model: nn.Module, scheme: Int8Dynamic) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with quiet_backend(), static._engine(scheme.engine):
        return quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8
        )


def _check_layer_names(model: nn.Module, names: tuple[str, ...]) -> None:
    known = dict(model.named_modules())
    for name in names:
        if name not in known or not name:
            layers = [n for n, m in known.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
            raise MitigateError(
                f"no layer named {name!r} to keep in float; layers: {', '.join(layers)}"
            )
