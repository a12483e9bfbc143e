"""The activation ranges of a converted static-int8 model: list its activation quantization
points, and write other ranges (scale and zero point) into a copy — the backend calls that
range search (:mod:`mitigate.mitigation.ranges`) needs, kept here with every other torch.ao
call.

An *activation point* is a place where the converted FX graph puts a float activation on a
quint8 grid chosen at calibration:

- ``"quantize"``: a ``torch.quantize_per_tensor`` node — the model input, and the input of a
  quantized op that follows a layer or op kept in float. Its scale and zero point are buffers
  of the ``GraphModule`` (``conv1_input_scale_0``, ``conv1_input_zero_point_0``); the point is
  named after that prefix, as :func:`~mitigate.quantization.activation_qparams` names it
  (``conv1_input``: the input of ``conv1``; ``0``: the output of float module ``0``), or
  after the graph node (``quantize_per_tensor_2``) where the prefix has no module name in
  it or is taken.
- ``"module"``: the output of a quantized module (Conv, Linear, ConvReLU, LinearReLU,
  BatchNorm, ...). Its kernel requantizes the output to the module's ``scale``/``zero_point``
  attributes, read at every call. The point is named after the module (``conv1``); the last
  layer's output, the logits, is one of these.
- ``"function"``: the output of a quantized functional op (``quantized.add`` for a residual
  add, ``quantized.mul``, ...), whose scale and zero point are buffers passed to it as
  arguments. Named after the graph node (``add_1``).

Points are listed in forward order (graph order). Ops whose output range torch fixes
(sigmoid, tanh, softmax, hardsigmoid) are not points; ops that reuse their input's grid
(pooling, flatten, ReLU after a point) are not either.

Three facts these functions rest on (checked by ``tests/quantization/test_act_ranges.py``):

- **Quant range.** Each point's observer mapped a float range ``[lo, hi]`` onto the integers
  ``quant_min..quant_max``: ``0..127`` for x86's reduced range (the default with
  ``engine=x86``), ``0..255`` otherwise; layers torch's default mapping gives a qconfig of
  their own (ConvTranspose, LayerNorm, PReLU) keep theirs. The converted model does not store
  this range, so it is read from the scheme's qconfig mapping. The *tensor* is quint8 all the
  same: the kernels clip to ``0..255``, so a 7-bit point holds values up to about twice its
  ``hi`` before it clips (:attr:`ActPoint.clip_range`) — the reduced range costs resolution,
  not headroom.
- **Observer arithmetic.** :meth:`ActPoint.qparams_for` computes a range's scale and zero point
  with torch's own ``MinMaxObserver`` (quint8, per-tensor affine, the point's quant range) fed
  ``lo`` and ``hi``. Every activation observer torch offers ends in that same computation
  (``_calculate_qparams``): the range is first widened to contain 0, ``scale = (hi - lo) /
  (quant_max - quant_min)`` in float32 (at least float32's eps), ``zero_point = quant_min -
  round(lo / scale)`` (round half to even) clamped into the quant range. Going back from
  qparams to a range (``lo = (quant_min - zero_point) * scale``) and forward again can move
  the scale by one float32 ulp, so a range equal to the point's own ``(lo, hi)`` keeps its
  qparams exactly.
- **Fresh kernels.** Output qparams are read by the kernel at every call, but qnnpack caches
  its operator (and the scales in it) on the first call and does not notice an attribute
  changed afterwards: a model changed in place after it ran computes with stale qparams.
  :func:`with_qparams` therefore writes into a deep copy made under the scheme's engine
  (:func:`mitigate.quantization.int_weights.with_weights` with no weights), whose packed
  params are repacked and have never run; the original is not touched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.quantization._quiet import quiet_backend
from mitigate.quantization.api import QuantizedModel
from mitigate.quantization.int_weights import check_static_int8, with_weights

__all__ = ["KINDS", "ActPoint", "activation_points", "with_qparams", "with_ranges"]

#: What a point is: a quantize node, a quantized module's output, a quantized function's output.
KINDS = ("quantize", "module", "function")

_QUINT8_RANGE = (0, 255)
_SCALE = re.compile(r"_scale_\d+$")
_ZERO_POINT = re.compile(r"_zero_point_\d+$")
_QUANTIZED_MODULES = ("torch.ao.nn.quantized.modules", "torch.ao.nn.intrinsic.quantized.modules")


@dataclass(frozen=True)
class ActPoint:
    """One activation quantization point of a converted static-int8 model.

    Attributes:
        name: stable name: the module name for ``"module"`` points (``"conv1"``,
            ``"classifier.fc1"``), the buffer prefix for ``"quantize"`` points
            (``"conv1_input"``), the graph node for ``"function"`` points (``"add_1"``).
        kind: one of :data:`KINDS`.
        scale: the quint8 step, a float32 value held as a Python float.
        zero_point: the integer that stands for 0.0.
        quant_min, quant_max: the integers the observer mapped its range onto (``0, 127``
            with x86's reduced range, ``0, 255`` otherwise).
    """

    name: str
    kind: str
    scale: float
    zero_point: int
    quant_min: int
    quant_max: int

    @property
    def lo(self) -> float:
        """The float value of ``quant_min``: ``(quant_min - zero_point) * scale``."""
        return (self.quant_min - self.zero_point) * self.scale

    @property
    def hi(self) -> float:
        """The float value of ``quant_max``: ``(quant_max - zero_point) * scale``."""
        return (self.quant_max - self.zero_point) * self.scale

    @property
    def range(self) -> tuple[float, float]:
        """``(lo, hi)``: the float range the observer chose (always contains 0)."""
        return self.lo, self.hi

    @property
    def clip_range(self) -> tuple[float, float]:
        """Where the kernels really clip: the quint8 tensor's ``0..255`` in float. Equal to
        :attr:`range` for 8-bit points; about twice as high for 7-bit (x86) ones."""
        low, high = _QUINT8_RANGE
        return (low - self.zero_point) * self.scale, (high - self.zero_point) * self.scale

    def qparams_for(self, lo: float, hi: float) -> tuple[float, int]:
        """``(scale, zero_point)`` an observer with this point's quant range computes for the
        float range ``[lo, hi]`` (widened to contain 0, as observers do). A range equal to this
        point's own :attr:`range` returns its own qparams exactly.

        Example:
            >>> point = ActPoint("fc", "module", 0.02, 10, 0, 255)
            >>> point.qparams_for(*point.range)
            (0.02, 10)
            >>> scale, zero = point.qparams_for(0.0, 2.55)
            >>> round(scale, 6), zero
            (0.01, 0)
        """
        if (lo, hi) == self.range:
            return self.scale, self.zero_point
        return _observer_qparams(lo, hi, self.quant_min, self.quant_max)


def activation_points(quantized: nn.Module) -> list[ActPoint]:
    """The activation quantization points of a static-int8 model, in forward order.

    Args:
        quantized: a static-int8 :class:`~mitigate.quantization.QuantizedModel` (what
            ``quantize(model, "int8[:options]", calibration)`` returns).

    Returns:
        One :class:`ActPoint` per point; the first is the model input, the last the logits
        when the last layer is quantized.

    Example:
        >>> from mitigate.quantization import quantize
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> q = quantize(net, "int8:engine=qnnpack", torch.rand(16, 1, 8, 8))
        >>> [(p.name, p.kind, p.quant_max) for p in activation_points(q)]
        [('0', 'quantize', 255), ('1', 'module', 255), ('3', 'module', 255)]
    """
    check_static_int8(quantized, "activation_points")
    return [point for point, _ in _scan(quantized)]


def with_qparams(quantized: nn.Module, qparams: Mapping[str, tuple[float, int]]) -> QuantizedModel:
    """A copy of ``quantized`` whose points ``qparams`` names use the given scale and zero point.

    Weights, the other points and the scheme stay as they are; the copy runs the real int8
    kernels with the new qparams (its packed params are fresh), and ``quantized`` is not
    modified.

    Args:
        quantized: a static-int8 :class:`~mitigate.quantization.QuantizedModel`.
        qparams: point name -> ``(scale, zero_point)``, scale finite and ``> 0`` (stored as
            float32, as an observer's is), zero point an integer in ``0..255`` (quint8).

    Returns:
        A new :class:`~mitigate.quantization.QuantizedModel` with the same scheme.

    Example:
        >>> from mitigate.quantization import quantize
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        >>> q = quantize(net, "int8", torch.rand(16, 1, 8, 8))
        >>> q2 = with_qparams(q, {"1": (0.0625, 64)})
        >>> [(p.scale, p.zero_point) for p in activation_points(q2) if p.name == "1"]
        [(0.0625, 64)]
    """
    check_static_int8(quantized, "with_qparams")
    located = {point.name: (point, where) for point, where in _scan(quantized)}
    values = {}
    for name, value in qparams.items():
        _check_name(name, located)
        values[name] = _check_qparams(name, value)
    out = with_weights(quantized)  # a deep copy under the scheme's engine: fresh packed params
    for name, (scale, zero) in values.items():
        _write(out.inner, located[name][1], scale, zero)
    return out


def with_ranges(quantized: nn.Module, ranges: Mapping[str, tuple[float, float]]) -> QuantizedModel:
    """A copy of ``quantized`` whose points ``ranges`` names are quantized for new float ranges.

    Each point gets the scale and zero point its observer would compute for ``[lo, hi]``
    (:meth:`ActPoint.qparams_for`); a range equal to the point's own keeps its qparams, so
    writing back what :func:`activation_points` reports gives a bit-identical model.

    Args:
        quantized: a static-int8 :class:`~mitigate.quantization.QuantizedModel` (not modified).
        ranges: point name -> ``(lo, hi)``, finite, ``lo <= hi``.

    Returns:
        A new :class:`~mitigate.quantization.QuantizedModel` with the same scheme.

    Example:
        >>> from mitigate.quantization import quantize
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        >>> q = quantize(net, "int8:engine=qnnpack", torch.rand(16, 1, 8, 8))
        >>> q2 = with_ranges(q, {"0": (0.0, 0.51)})
        >>> point = activation_points(q2)[0]
        >>> round(point.scale, 6), point.zero_point
        (0.002, 0)
    """
    check_static_int8(quantized, "with_ranges")
    points = {point.name: point for point, _ in _scan(quantized)}
    qparams = {}
    for name, value in ranges.items():
        _check_name(name, points)
        lo, hi = _check_range(name, value)
        qparams[name] = points[name].qparams_for(lo, hi)
    return with_qparams(quantized, qparams)


def _scan(quantized: nn.Module) -> list[tuple[ActPoint, tuple[str, str | None]]]:
    """Every point with where it lives: ``(module name, None)`` for a module, ``(scale buffer,
    zero-point buffer)`` for a quantize node or a functional op."""
    from mitigate.quantization.static import qconfig_mapping

    inner = quantized.inner  # type: ignore[union-attr]
    with quiet_backend():
        mapping = qconfig_mapping(quantized.scheme)  # type: ignore[union-attr]
    ranges: dict[object, tuple[int, int] | None] = {}
    found: list[tuple[ActPoint, tuple[str, str | None]]] = []
    names: set[str] = set()
    seen: set[str] = set()
    for node in inner.graph.nodes:
        if node.op == "call_module":
            module = inner.get_submodule(node.target)
            target = str(node.target)
            if target in seen or not _has_output_qparams(module):
                continue
            key = getattr(type(module), "_FLOAT_MODULE", None)
            qrange = _quant_range(mapping, key, ranges)
            if qrange is None:
                continue
            seen.add(target)
            point = ActPoint(
                name=_unique(target, node.name, names),
                kind="module",
                scale=float(module.scale),
                zero_point=int(module.zero_point),
                quant_min=qrange[0],
                quant_max=qrange[1],
            )
            found.append((point, (target, None)))
        elif node.op == "call_function":
            pair = _qparam_buffers(inner, node)
            if pair is None or pair[0] in seen:
                continue
            if node.target is torch.quantize_per_tensor:
                if _quantize_dtype(node) != torch.quint8:
                    continue
                kind, key = "quantize", _first_user_type(inner, node)
                prefix = _SCALE.sub("", pair[0])
                # An empty module path gives "" or "_input": say which node instead.
                preferred = prefix if prefix and not prefix.startswith("_") else node.name
            else:
                kind, key, preferred = "function", None, node.name
            qrange = _quant_range(mapping, key, ranges)
            if qrange is None:
                continue
            seen.add(pair[0])
            scale, zero = getattr(inner, pair[0]), getattr(inner, pair[1])
            point = ActPoint(
                name=_unique(preferred, node.name, names),
                kind=kind,
                scale=float(scale),
                zero_point=int(zero),
                quant_min=qrange[0],
                quant_max=qrange[1],
            )
            found.append((point, pair))
    return found


def _has_output_qparams(module: nn.Module) -> bool:
    """A quantized module whose kernel requantizes its output to ``scale``/``zero_point``."""
    if not type(module).__module__.startswith(_QUANTIZED_MODULES):
        return False
    scale, zero = getattr(module, "scale", None), getattr(module, "zero_point", None)
    return all(
        isinstance(v, (float, int)) or (isinstance(v, Tensor) and v.numel() == 1)
        for v in (scale, zero)
    )


def _qparam_buffers(inner: nn.Module, node: Any) -> tuple[str, str] | None:
    """``(scale buffer, zero-point buffer)`` a function node takes as arguments, if any."""
    scales, zeros = [], []
    for arg in node.args:
        if getattr(arg, "op", None) != "get_attr":
            continue
        target = str(arg.target)
        value = getattr(inner, target, None)
        if not isinstance(value, Tensor) or value.numel() != 1:
            continue
        if _SCALE.search(target):
            scales.append(target)
        elif _ZERO_POINT.search(target):
            zeros.append(target)
    if len(scales) != 1 or len(zeros) != 1:
        return None
    return scales[0], zeros[0]


def _quantize_dtype(node: Any) -> object:
    if len(node.args) > 3:
        return node.args[3]
    return node.kwargs.get("dtype")


def _first_user_type(inner: nn.Module, node: Any) -> object:
    """The FP module type of the op a quantize node feeds (its input observer came from that
    op's qconfig), or ``None`` for a functional op."""
    for user in node.users:
        if user.op == "call_module":
            return getattr(type(inner.get_submodule(user.target)), "_FLOAT_MODULE", None)
        return None
    return None


def _quant_range(
    mapping: Any, key: object, cache: dict[object, tuple[int, int] | None]
) -> tuple[int, int] | None:
    """``(quant_min, quant_max)`` of the activation observer the scheme's mapping gives
    ``key`` (an FP module type; ``None``: the global qconfig), or ``None`` for a fixed range."""
    if key in cache:
        return cache[key]
    from torch.ao.quantization.observer import FixedQParamsObserver

    qconfig = mapping.object_type_qconfigs.get(key) if key is not None else None
    if qconfig is None:
        qconfig = mapping.global_qconfig
    with quiet_backend():
        observer = qconfig.activation()
    if isinstance(observer, FixedQParamsObserver) or getattr(observer, "quant_min", None) is None:
        result = None
    else:
        result = int(observer.quant_min), int(observer.quant_max)
    cache[key] = result
    return result


def _unique(preferred: str, node_name: str, taken: set[str]) -> str:
    name = preferred
    if name in taken:
        name = node_name
    suffix = 1
    while name in taken:
        suffix += 1
        name = f"{node_name}_{suffix}"
    taken.add(name)
    return name


def _observer_qparams(lo: float, hi: float, quant_min: int, quant_max: int) -> tuple[float, int]:
    from torch.ao.quantization.observer import MinMaxObserver

    with quiet_backend():
        observer = MinMaxObserver(
            dtype=torch.quint8,
            qscheme=torch.per_tensor_affine,
            quant_min=quant_min,
            quant_max=quant_max,
        )
        observer(torch.tensor([lo, hi], dtype=torch.float32))
        scale, zero = observer.calculate_qparams()
    return float(scale), int(zero)


@torch.no_grad()
def _write(inner: nn.Module, where: tuple[str, str | None], scale: float, zero: int) -> None:
    """Set one point's qparams in ``inner`` (a copy that has not run yet)."""
    first, second = where
    if second is None:
        module = inner.get_submodule(first)
        module.scale = _like(module.scale, scale)
        module.zero_point = _like(module.zero_point, zero)
    else:
        getattr(inner, first).fill_(scale)
        getattr(inner, second).fill_(zero)


def _like(old: object, value: float | int) -> object:
    """``value`` stored the way the attribute it replaces was (Python number or 0-d tensor)."""
    if isinstance(old, Tensor):
        return torch.full_like(old, value)
    return type(old)(value)  # type: ignore[call-arg]


def _check_name(name: object, known: Mapping[str, object]) -> None:
    if name not in known:
        raise MitigateError(
            f"no activation point named {name!r}; points: " + (", ".join(known) or "none")
        )


def _check_qparams(name: str, value: object) -> tuple[float, int]:
    try:
        scale, zero = value  # type: ignore[misc]
        scale_f = float(scale)
    except (TypeError, ValueError):
        raise MitigateError(
            f"qparams of {name} must be a pair (scale, zero_point), got {value!r}"
        ) from None
    if isinstance(zero, Tensor):
        zero = zero.item()
    if isinstance(zero, bool) or not float(zero).is_integer():
        raise MitigateError(f"zero point of {name} must be an integer, got {zero!r}")
    low, high = _QUINT8_RANGE
    if not (math.isfinite(scale_f) and scale_f > 0):
        raise MitigateError(f"scale of {name} must be finite and > 0, got {scale_f}")
    if not low <= int(zero) <= high:
        raise MitigateError(f"zero point of {name} must lie in [{low}, {high}], got {int(zero)}")
    return float(torch.tensor(scale_f, dtype=torch.float32)), int(zero)


def _check_range(name: str, value: object) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise MitigateError(f"range of {name} must be a pair (lo, hi), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise MitigateError(f"range of {name} must be finite with lo <= hi, got [{lo}, {hi}]")
    return lo, hi
