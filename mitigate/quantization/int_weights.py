"""The integers of a converted static-int8 model: list its Conv/Linear layers, read them, and
write other integers or biases into a copy — the backend calls that learned rounding
(:mod:`mitigate.mitigation.adaround`) and bias correction
(:mod:`mitigate.mitigation.bias_correction`) need, kept here with every other torch.ao call.

Three facts these functions rest on (checked by ``tests/quantization/test_int_weights.py``):

- **Names.** A converted FX model keeps each quantized layer under the FP model's module name
  (``conv1``, ``classifier.fc1``); a Conv or Linear fused with the ReLU after it becomes one
  ``ConvReLU2d``/``LinearReLU`` module under the Conv/Linear's name.
- **Fused BatchNorm.** FX folds a BatchNorm that follows a Conv into the Conv's weight and bias
  before the weight observer sees them, so the float weight the backend rounded is not the FP
  module's own weight. The converted module keeps only ``scale * integer``; the fractional
  part that rounding threw away is gone. :func:`fuse_float` therefore re-runs FX's own fusion
  step (``fuse_fx``: the same pattern table and the same eval-mode BN fold that ``prepare_fx``
  applies) on a copy of the FP model; :func:`float_weight` reads the folded weight and bias.
  The backend's integers are round-to-nearest of ``weight / scale`` from exactly those
  weights (the backend divides in float32, so a value a hair from ``x.5`` may round either
  way; :meth:`IntLayer.rounding_base` handles that).
- **Packing.** Writing integers goes through ``set_weight_bias``, which packs them for the
  engine selected at that moment; a model packed for qnnpack must be copied and packed with
  qnnpack selected. :func:`with_weights` does both under the scheme's engine, on a deep copy
  whose packed params are fresh, so the original model never changes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mitigate.errors import MitigateError
from mitigate.quantization._quiet import quiet_backend
from mitigate.quantization.api import QuantizedModel
from mitigate.quantization.static import _engine

__all__ = [
    "IntLayer",
    "LayerIO",
    "check_static_int8",
    "float_weight",
    "fuse_float",
    "layer_io",
    "quantized_layers",
    "read_layer",
    "with_weights",
]

_QINT8_RANGE = (-128, 127)
_QUINT8_RANGE = (0, 255)


def _layer_types() -> tuple[dict[type, str], dict[type, str]]:
    """Converted module types -> functional op, split into plain and fused-with-ReLU ones.

    Exact types, not ``isinstance``: ``ConvAdd2d`` or ``LinearTanh`` subclass the plain
    modules but compute something else, and transposed convs keep their channels on axis 1.
    """
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    plain = {nnq.Conv1d: "conv1d", nnq.Conv2d: "conv2d", nnq.Conv3d: "conv3d", nnq.Linear: "linear"}
    relu = {
        nniq.ConvReLU1d: "conv1d",
        nniq.ConvReLU2d: "conv2d",
        nniq.ConvReLU3d: "conv3d",
        nniq.LinearReLU: "linear",
    }
    return plain, relu


@dataclass(frozen=True)
class IntLayer:
    """One quantized Conv/Linear layer as the int8 kernel sees it.

    Attributes:
        name: the FP model's module name, e.g. ``"conv1"`` or ``"classifier.fc1"``.
        op: ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"conv3d"``.
        relu: whether a ReLU is fused into the kernel (its output is then post-ReLU).
        weight: the integers, ``int8 [out, in / groups, *kernel]`` (``[out, in]`` for linear).
        scales: ``float64 [out]`` per channel, or ``[1]`` per tensor.
        zero_points: ``int64``, same shape as ``scales`` (0 for symmetric weights).
        axis: the channel axis of per-channel scales (0), or ``None`` per tensor.
        bias: ``float32 [out]`` or ``None``; the kernel adds it in float.
        output_scale, output_zero_point: the quint8 grid the kernel requantizes its output
            to; outputs outside ``[(0 - zp) * scale, (255 - zp) * scale]`` are clipped.
        quant_min, quant_max: the range the integers must stay in (qint8: -128, 127).
        conv: ``stride``, ``padding``, ``dilation``, ``groups``, ``padding_mode`` (convs only).
    """

    name: str
    op: str
    relu: bool
    weight: Tensor
    scales: Tensor
    zero_points: Tensor
    axis: int | None
    bias: Tensor | None
    output_scale: float
    output_zero_point: int
    quant_min: int = _QINT8_RANGE[0]
    quant_max: int = _QINT8_RANGE[1]
    conv: dict[str, Any] = field(default_factory=dict)

    def _per_channel(self, values: Tensor, ndim: int) -> Tensor:
        """``values`` (``[out]`` or ``[1]``) shaped to broadcast against a weight."""
        if self.axis is None:
            return values.reshape([1] * ndim)
        shape = [1] * ndim
        shape[self.axis] = -1
        return values.reshape(shape)

    def grid(self, weight: Tensor) -> Tensor:
        """A float weight in integer units, ``weight / scale + zero_point`` (float64): the
        value the backend rounds to nearest and clamps."""
        ndim = weight.ndim
        return weight.double() / self._per_channel(self.scales, ndim) + self._per_channel(
            self.zero_points, ndim
        )

    def rounding_base(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(base, rest)``: the lower of the two integers next to ``grid(weight)`` and the
        fractional part, both ``float64``, with this layer's own integers always one of
        ``base`` and ``base + 1``.

        The backend rounds in float32, so where ``grid(weight)`` lies within float32 noise of
        ``x.5`` (or of an integer) its choice can differ from float64 rounding; taking the base
        from the layer's integers keeps round-to-nearest exactly representable: ``rest`` is
        clipped into ``[0, 1]``.
        """
        t = self.grid(weight)
        q = self.weight.double()
        base = q - (q > t).double()
        return base, (t - base).clamp(0.0, 1.0)

    def dequantize(self, integers: Tensor) -> Tensor:
        """``(integers - zero_point) * scale`` as float32 (``integers`` may be soft floats)."""
        ndim = integers.ndim
        zero = self._per_channel(self.zero_points, ndim).to(integers.dtype)
        scale = self._per_channel(self.scales, ndim).float()
        return (integers - zero).float() * scale

    def forward_float(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """The layer's op in float on ``x`` with ``weight`` and ``bias``, before the ReLU.

        With ``x`` the dequantized layer input and ``weight`` the dequantized integers, this is
        what the int8 kernel accumulates (exactly, in int32) before it requantizes the output
        (and applies a fused ReLU); float summation order aside, the two agree.
        """
        if self.op == "linear":
            return F.linear(x, weight, bias)
        conv = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}[self.op]
        padding = self.conv["padding"]
        if self.conv["padding_mode"] != "zeros":
            pad = [p for p in reversed(padding) for _ in range(2)]
            x = F.pad(x, pad, mode=self.conv["padding_mode"])
            padding = 0
        return conv(
            x,
            weight,
            bias,
            stride=self.conv["stride"],
            padding=padding,
            dilation=self.conv["dilation"],
            groups=self.conv["groups"],
        )

    def activate(self, y: Tensor) -> Tensor:
        """The fused activation (ReLU or none) applied to a :meth:`forward_float` output."""
        return F.relu(y) if self.relu else y

    def clip_output(self, y: Tensor) -> Tensor:
        """``y`` clipped to the range the kernel's quint8 output can hold (its rounding to the
        output grid is left out: it has no gradient, and is the same function whatever the
        weights)."""
        low = (_QUINT8_RANGE[0] - self.output_zero_point) * self.output_scale
        high = (_QUINT8_RANGE[1] - self.output_zero_point) * self.output_scale
        return y.clamp(low, high)

    @property
    def channel_dim(self) -> int:
        """The output tensor's channel dimension: 1 for convs, -1 for linear."""
        return -1 if self.op == "linear" else 1


@dataclass(frozen=True)
class LayerIO:
    """What one layer received and returned on a set of inputs, as float32.

    Attributes:
        inputs: the layer's input ``[N, ...]``; for a quantized model the dequantized int8
            activation, exactly the values its kernel multiplies.
        outputs: the layer's output ``[N, ...]``; for a quantized model the dequantized,
            requantized output (after a fused ReLU).
    """

    inputs: Tensor
    outputs: Tensor


def check_static_int8(quantized: object, what: str = "this") -> None:
    """Raise a one-line :class:`MitigateError` unless ``quantized`` is a static-int8
    :class:`~mitigate.quantization.QuantizedModel` (what ``quantize(model, "int8", ...)``
    returns)."""
    from mitigate.quantization.api import QuantizedModel
    from mitigate.quantization.schemes import Int8Static, scheme_label

    if not isinstance(quantized, QuantizedModel):
        raise MitigateError(
            f"{what} needs a QuantizedModel from quantize(model, 'int8[:options]', "
            f"calibration), got {type(quantized).__name__}"
        )
    if not isinstance(quantized.scheme, Int8Static):
        raise MitigateError(
            f"{what} works on static int8 models only (scheme int8[:options], e.g. int8 or "
            f"int8:engine=qnnpack), got {scheme_label(quantized.scheme)}"
        )


def quantized_layers(quantized: nn.Module) -> list[str]:
    """Names of the quantized Conv/Linear layers (fused with ReLU or not), in forward order.

    Layers the scheme keeps in float, and quantized modules without integer weights of their
    own (pooling, add), are not listed.

    Example:
        >>> from mitigate.quantization import quantize
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
        >>> quantized_layers(quantize(net, "int8", torch.rand(8, 1, 8, 8)))
        ['0', '3']
    """
    check_static_int8(quantized, "quantized_layers")
    plain, relu = _layer_types()
    inner = quantized.inner  # type: ignore[union-attr]
    names: list[str] = []
    for node in inner.graph.nodes:
        if node.op != "call_module" or node.target in names:
            continue
        if type(inner.get_submodule(node.target)) in plain | relu:
            names.append(str(node.target))
    return names


def read_layer(quantized: nn.Module, name: str) -> IntLayer:
    """The integers, scales, zero points, axis and float bias of layer ``name``.

    Example:
        >>> from mitigate.quantization import quantize
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        >>> layer = read_layer(quantize(net, "int8", torch.rand(8, 1, 8, 8)), "1")
        >>> layer.weight.dtype, tuple(layer.weight.shape), tuple(layer.scales.shape), layer.axis
        (torch.int8, (3, 64), (3,), 0)
    """
    _check_names(quantized, [name])
    module = quantized.inner.get_submodule(name)  # type: ignore[union-attr]
    plain, relu = _layer_types()
    with quiet_backend(), _engine(quantized.scheme.engine):  # type: ignore[union-attr]
        w = module.weight()
        bias = module.bias()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales = w.q_per_channel_scales().double()
        zero_points = w.q_per_channel_zero_points().long()
        axis: int | None = int(w.q_per_channel_axis())
    else:
        scales = torch.tensor([w.q_scale()], dtype=torch.float64)
        zero_points = torch.tensor([w.q_zero_point()], dtype=torch.int64)
        axis = None
    op = plain.get(type(module)) or relu[type(module)]
    conv = (
        {}
        if op == "linear"
        else {
            "stride": tuple(module.stride),
            "padding": tuple(module.padding),
            "dilation": tuple(module.dilation),
            "groups": int(module.groups),
            "padding_mode": module.padding_mode,
        }
    )
    return IntLayer(
        name=name,
        op=op,
        relu=type(module) in relu,
        weight=w.int_repr().clone(),
        scales=scales,
        zero_points=zero_points,
        axis=axis,
        bias=None if bias is None else bias.detach().float().clone(),
        output_scale=float(module.scale),
        output_zero_point=int(module.zero_point),
        conv=conv,
    )


def with_weights(
    quantized: nn.Module,
    weights: Mapping[str, Tensor] | None = None,
    biases: Mapping[str, Tensor | None] | None = None,
) -> QuantizedModel:
    """A copy of ``quantized`` whose kernels compute with the given integers and biases.

    Scales, zero points, axis, output qparams and every other layer stay as they were; the
    copy's packed params are new objects, so the original model never changes.

    Args:
        quantized: a static-int8 :class:`~mitigate.quantization.QuantizedModel`.
        weights: layer name -> integer tensor of the layer's weight shape, every value in
            ``[quant_min, quant_max]`` (any integer dtype; stored as int8).
        biases: layer name -> float bias ``[out]`` (or ``None`` to drop the bias).

    Returns:
        A new :class:`~mitigate.quantization.QuantizedModel` with the same scheme.

    Example:
        >>> from mitigate.quantization import quantize
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        >>> q = quantize(net, "int8", torch.rand(8, 1, 8, 8))
        >>> q2 = with_weights(q, {"1": torch.ones(3, 64, dtype=torch.int8)})
        >>> int(q2.inner.get_submodule("1").weight().int_repr().sum())
        192
    """
    weights = dict(weights or {})
    biases = dict(biases or {})
    _check_names(quantized, list(weights) + list(biases))
    layers = {name: read_layer(quantized, name) for name in {**weights, **biases}}
    for name, ints in weights.items():
        _check_integers(layers[name], ints)
    for name, bias in biases.items():
        _check_bias(layers[name], bias)
    engine = quantized.scheme.engine  # type: ignore[union-attr]
    with quiet_backend(), _engine(engine):
        out = copy.deepcopy(quantized)
        for name, layer in layers.items():
            ints = weights[name].to(torch.int8) if name in weights else layer.weight
            bias = biases.get(name, layer.bias)
            module = out.inner.get_submodule(name)
            module.set_weight_bias(
                _quantized_weight(layer, ints),
                None if bias is None else bias.detach().float().clone(),
            )
    return out


def fuse_float(model: nn.Module) -> nn.Module:
    """A float copy of ``model`` with the fusions static int8 applies: each BatchNorm after a
    Conv folded into it (eval mode), each Conv/Linear grouped with the ReLU after it.

    It computes ``model``'s function (up to float rounding of the fold) and holds every
    quantized layer under the same name as the converted model, so :func:`float_weight` gives
    the float weight the backend rounded and a forward hook on a name sees the layer's FP
    input. ``model`` is not modified.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
        >>> fused = fuse_float(net)
        >>> type(fused.get_submodule("0")).__name__
        'ConvReLU2d'
        >>> x = torch.rand(2, 1, 5, 5)
        >>> torch.allclose(fused(x), net(x), atol=1e-6)
        True
    """
    from torch.ao.quantization.quantize_fx import fuse_fx

    with quiet_backend():
        return fuse_fx(copy.deepcopy(model).eval())


def float_weight(fused: nn.Module, name: str) -> tuple[Tensor, Tensor | None]:
    """``(weight, bias)`` of layer ``name`` in a :func:`fuse_float` model: the float values the
    backend rounds (BatchNorm folded in), detached copies."""
    module = fused.get_submodule(name)
    from torch.ao.nn.intrinsic import _FusedModule

    if isinstance(module, _FusedModule):
        module = module[0]
    bias = module.bias
    return module.weight.detach().clone(), None if bias is None else bias.detach().clone()


@torch.no_grad()
def layer_io(
    model: nn.Module, inputs: Tensor, names: Sequence[str], *, batch_size: int = 256
) -> dict[str, LayerIO]:
    """Each named layer's input and output over ``inputs``, through forward hooks.

    Args:
        model: a static-int8 :class:`~mitigate.quantization.QuantizedModel` (names are its
            :func:`quantized_layers`; tensors come back dequantized) or a float module such as
            a :func:`fuse_float` model (names are module names).
        inputs: ``float [N, ...]`` model inputs, run in batches of ``batch_size``.
        names: layers to record; each must run exactly once per forward.

    Returns:
        ``{name: LayerIO}`` with ``inputs``/``outputs`` of shape ``[N, ...]``.
    """
    from mitigate.quantization.api import QuantizedModel

    root = model.inner if isinstance(model, QuantizedModel) else model
    seen: dict[str, tuple[list[Tensor], list[Tensor]]] = {n: ([], []) for n in names}

    def hook(name: str):
        def record(_module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            ins, outs = seen[name]
            ins.append(_float(args[0]))
            outs.append(_float(output))

        return record

    handles = [root.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        for batch in inputs.split(batch_size):
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {n: LayerIO(torch.cat(ins), torch.cat(outs)) for n, (ins, outs) in seen.items()}


def _float(t: Tensor) -> Tensor:
    return (t.dequantize() if t.is_quantized else t).detach().float()


def _quantized_weight(layer: IntLayer, ints: Tensor) -> Tensor:
    ints = ints.to(torch.int8).contiguous()
    if layer.axis is None:
        return torch._make_per_tensor_quantized_tensor(
            ints, float(layer.scales[0]), int(layer.zero_points[0])
        )
    return torch._make_per_channel_quantized_tensor(
        ints, layer.scales, layer.zero_points, layer.axis
    )


def _check_names(quantized: nn.Module, names: list[str]) -> None:
    valid = quantized_layers(quantized)
    for name in names:
        if name not in valid:
            raise MitigateError(
                f"no quantized Conv/Linear layer named {name!r}; layers: "
                + (", ".join(valid) or "none")
            )


def _check_integers(layer: IntLayer, ints: object) -> None:
    if not isinstance(ints, Tensor) or ints.is_floating_point() or ints.is_complex():
        got = ints.dtype if isinstance(ints, Tensor) else type(ints).__name__
        raise MitigateError(f"integer weights of {layer.name} must be an integer tensor, got {got}")
    if ints.shape != layer.weight.shape:
        raise MitigateError(
            f"integer weights of {layer.name} must have shape {list(layer.weight.shape)}, "
            f"got {list(ints.shape)}"
        )
    low, high = int(ints.min()), int(ints.max())
    if low < layer.quant_min or high > layer.quant_max:
        raise MitigateError(
            f"integer weights of {layer.name} must lie in [{layer.quant_min}, "
            f"{layer.quant_max}], got values from {low} to {high}"
        )


def _check_bias(layer: IntLayer, bias: object) -> None:
    if bias is None:
        return
    out = layer.weight.shape[0]
    if not isinstance(bias, Tensor) or not bias.is_floating_point() or bias.shape != (out,):
        got = list(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise MitigateError(f"bias of {layer.name} must be a float tensor [{out}], got {got}")
    if not torch.isfinite(bias).all():
        raise MitigateError(f"bias of {layer.name} holds NaN or infinite values")
