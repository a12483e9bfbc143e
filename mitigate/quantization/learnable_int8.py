"""Anchored QAT's three explicit steps on a frozen float model: prepare the learnable
quantizers from the scheme's normal PTQ, and convert what they learned with torch.ao's own
``convert_fx`` — exactly: :func:`converted_mismatches` checks the converted model uses what was
learned. The quantizers themselves are :mod:`mitigate.quantization.learnable`."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from mitigate.errors import MitigateError
from mitigate.quantization import static
from mitigate.quantization._quiet import quiet_backend
from mitigate.quantization.api import QuantizedModel, check_supported
from mitigate.quantization.learnable import (
    _QINT8,
    ActQuantizer,
    BiasShift,
    Simulation,
    WeightQuantizer,
)
from mitigate.quantization.schemes import Int8Static

__all__ = ["LearnableInt8", "convert_learnable", "converted_mismatches", "prepare_learnable"]


@dataclass
class LearnableInt8:
    """A static-int8 model's quantizers, ready to train: see :func:`prepare_learnable`.

    Attributes:
        scheme: the static int8 scheme.
        baseline: ``q0``, the scheme's PTQ model (what ``quantize(model, scheme, calibration)``
            returns).
        simulation: the float simulation to train (its forward is the fake-quantized model).
        observed: the calibrated FX model ``q0`` was converted from (never modified).
        activations: point name -> :class:`ActQuantizer`, in forward order; a point is named
            after what it quantizes: a module's name (``conv1``), else the graph node's
            (``x`` the input, ``add``).
        weights: layer name -> :class:`WeightQuantizer`, in forward order.
        biases: layer name -> :class:`BiasShift` (only when biases are learned).
        fixed: activation points whose qparams are fixed by the scheme (sigmoid, softmax...).
    """

    scheme: Int8Static
    baseline: QuantizedModel
    simulation: Simulation
    observed: nn.Module
    activations: dict[str, ActQuantizer]
    weights: dict[str, WeightQuantizer]
    biases: dict[str, BiasShift] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()
    _targets: dict[str, str] = field(default_factory=dict, repr=False)  # observer -> point

    def parameters(self) -> list[nn.Parameter]:
        """The parameters that train (requires_grad), in a fixed order; nothing else does."""
        found: list[nn.Parameter] = []
        for module in (*self.activations.values(), *self.weights.values(), *self.biases.values()):
            found.extend(p for p in module.parameters() if p.requires_grad)
        return found

    def clamp_(self) -> None:
        """Keep every rounding offset in ``[0, 1]`` and floored scales above their floor
        (call after every optimiser step)."""
        for quantizer in (*self.weights.values(), *self.activations.values()):
            quantizer.clamp_()

    def layer(self, name: str) -> nn.Module:
        """The float Conv/Linear module of layer ``name`` in the simulation (parametrized)."""
        return _float_part(self.simulation.graph.get_submodule(name))

    @torch.no_grad()
    def float_weight(self, name: str) -> Tensor:
        """The frozen float weight layer ``name`` quantizes (BN folded in)."""
        return _float_part(self.observed.get_submodule(name)).weight.detach()

    @torch.no_grad()
    def bias(self, name: str) -> Tensor | None:
        """The float bias layer ``name`` now uses (the learned one when biases train)."""
        module = self.layer(name)
        return None if module.bias is None else module.bias.detach().clone()

    @torch.no_grad()
    def integers(self, name: str) -> Tensor:
        """The int8 weight of layer ``name`` that the current parameters give."""
        return self.weights[name].integers(self.float_weight(name))


def prepare_learnable(
    model: nn.Module,
    scheme: Int8Static,
    calibration: Tensor | Iterable[Tensor],
    *,
    batch_size: int = 256,
    learn_activations: bool = True,
    learn_weight_scales: bool = True,
    learn_rounding: bool = False,
    learn_bias: bool = False,
    floor_activation_scales: bool = False,
) -> LearnableInt8:
    """Calibrate ``model`` as ``quantize`` does, and make its quantizers learnable.

    ``model`` is never modified: everything works on deep copies, and the simulation's float
    weights are frozen (``requires_grad`` off).

    Args:
        model: a float classifier that torch.fx can trace.
        scheme: a static int8 scheme.
        calibration: ``float [N, ...]`` or an iterable of batches, as for ``quantize``.
        batch_size: calibration batch size when ``calibration`` is one tensor.
        learn_activations: learn the activation scales and zero points.
        learn_weight_scales: learn the weight scales.
        learn_rounding: learn per-weight rounding offsets (AdaRound-style).
        learn_bias: learn a shift of every quantized layer's float bias.
        floor_activation_scales: activation scales never shrink below the calibrated ones
            (keeps x86's reduced 7-bit range on the calibration data; see
            :class:`ActQuantizer`).

    Raises:
        MitigateError: no calibration input, a recurrent model, an unknown ``float_layers``
            name, or a quantized layer with weights other than Conv1d/2d/3d or Linear.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        >>> learnable = prepare_learnable(net, Int8Static(), torch.rand(16, 1, 8, 8))
        >>> list(learnable.activations), list(learnable.weights)
        (['0', '1'], ['1'])
    """
    from mitigate.quantization.api import _check_layer_names

    check_supported(model, scheme)
    batches = list(
        calibration.split(batch_size) if isinstance(calibration, Tensor) else calibration
    )
    if not batches or batches[0].shape[0] == 0:
        raise MitigateError("static int8 needs at least one calibration input; got none")
    _check_layer_names(model, scheme.float_layers)
    was_training = model.training
    try:
        with torch.random.fork_rng():  # FX conversion draws from the global RNG
            observed = static.prepare(model, scheme, batches[0][:1])
            static.calibrate(observed, batches)
            baseline = QuantizedModel(
                static.convert(observed, scheme.engine), scheme, torch.float32
            )
    finally:
        model.train(was_training)
    layers = _weighted_layers(baseline)
    graph = copy.deepcopy(observed)
    graph.requires_grad_(False)
    activations, fixed, targets = _replace_observers(
        graph,
        learn_scale=learn_activations,
        learn_zero_point=learn_activations,
        floor=floor_activation_scales,
    )
    weights: dict[str, WeightQuantizer] = {}
    biases: dict[str, BiasShift] = {}
    for name, (scales, axis) in layers.items():
        module = _float_part(graph.get_submodule(name))
        quantizer = WeightQuantizer(
            module.weight, scales, axis, learn_scale=learn_weight_scales, rounding=learn_rounding
        )
        parametrize.register_parametrization(module, "weight", quantizer)
        weights[name] = quantizer
        if learn_bias and module.bias is not None:
            biases[name] = BiasShift(module.bias.shape[0])
            parametrize.register_parametrization(module, "bias", biases[name])
    return LearnableInt8(
        scheme=scheme,
        baseline=baseline,
        simulation=Simulation(graph),
        observed=observed,
        activations=activations,
        weights=weights,
        biases=biases,
        fixed=fixed,
        _targets=targets,
    )


def convert_learnable(learnable: LearnableInt8) -> QuantizedModel:
    """The int8 model that uses the learned parameters, made by torch.ao's ``convert_fx``.

    Works on a fresh copy of the calibrated model: observers report the learned activation
    qparams, weight observers the learned weight scales, and each float weight is set to the
    learned integers times the learned scales, which convert's round-to-nearest maps back to
    exactly those integers. Neither the simulation nor the model given to
    :func:`prepare_learnable` changes.
    """
    from torch.ao.quantization import QConfig

    scheme = learnable.scheme
    target = copy.deepcopy(learnable.observed)
    replaced: dict[int, nn.Module] = {}
    for node in target.graph.nodes:
        if node.op != "call_module" or node.target not in learnable._targets:
            continue
        point = learnable.activations[learnable._targets[node.target]]
        old = target.get_submodule(node.target)
        if id(old) not in replaced:
            scale, zero = point.calculate_qparams()
            replaced[id(old)] = _FixedQParams(
                scale,
                zero,
                dtype=point.dtype,
                qscheme=point.qscheme,
                quant_min=point.quant_min,
                quant_max=point.quant_max,
            )
        _set_module(target, node.target, replaced[id(old)])
    with torch.no_grad():
        for name, quantizer in learnable.weights.items():
            owner = target.get_submodule(name)
            module = _float_part(owner)
            integers = quantizer.integers(module.weight)
            scales = quantizer.flat_scales()
            module.weight.copy_(integers.float() * quantizer.scale().detach())
            if name in learnable.biases:
                module.bias.copy_(module.bias + learnable.biases[name].delta)
            axis = quantizer.axis
            weight_observer = _FixedQParams.with_args(
                scale=scales if axis is not None else scales.reshape(()),
                zero_point=torch.zeros(scales.shape, dtype=torch.int64)
                if axis is not None
                else torch.zeros((), dtype=torch.int64),
                dtype=torch.qint8,
                qscheme=torch.per_channel_symmetric
                if axis is not None
                else torch.per_tensor_symmetric,
                ch_axis=axis or 0,
                quant_min=_QINT8[0],
                quant_max=_QINT8[1],
            )
            owner.qconfig = QConfig(activation=owner.qconfig.activation, weight=weight_observer)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        with torch.random.fork_rng():
            inner = static.convert(target, scheme.engine)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    return QuantizedModel(inner, scheme, torch.float32)


def converted_mismatches(learnable: LearnableInt8, quantized: QuantizedModel) -> list[str]:
    """What in ``quantized`` differs from the learned parameters (empty: nothing).

    Checks every quantized layer's int8 weight, its scales and zero points, its float bias and
    its output scale and zero point, and that every other activation point's scale and zero
    point is among the converted model's quantize and quantized-op parameters.
    """
    problems: list[str] = []
    inner = quantized.inner
    with quiet_backend(), static._engine(learnable.scheme.engine):
        for name, quantizer in learnable.weights.items():
            module = inner.get_submodule(name)
            weight = module.weight()
            expected = learnable.integers(name)
            if not torch.equal(weight.int_repr(), expected):
                changed = int((weight.int_repr() != expected).sum())
                problems.append(f"{name}: {changed} weight integers differ")
            if quantizer.axis is not None:
                scales = weight.q_per_channel_scales()
                zeros = weight.q_per_channel_zero_points()
            else:
                scales = torch.tensor([weight.q_scale()], dtype=torch.float64)
                zeros = torch.tensor([weight.q_zero_point()])
            if not torch.equal(scales, quantizer.flat_scales().double()):
                problems.append(f"{name}: weight scales differ")
            if bool((zeros != 0).any()):
                problems.append(f"{name}: weight zero points are not 0")
            bias, learned = module.bias(), learnable.bias(name)
            if (bias is None) != (learned is None) or (
                bias is not None and not torch.equal(bias.detach().float(), learned)
            ):
                problems.append(f"{name}: bias differs")
    module_points, other_points = _points_by_owner(learnable)
    for point, name in module_points.items():
        module = inner.get_submodule(name)
        scale, zero = learnable.activations[point].calculate_qparams()
        if float(module.scale) != float(scale) or int(module.zero_point) != int(zero):
            problems.append(
                f"{name}: output qparams ({float(module.scale)}, {int(module.zero_point)}) "
                f"are not the learned ({float(scale)}, {int(zero)})"
            )
    found = set(_buffer_qparams(inner))
    for point in other_points:
        scale, zero = learnable.activations[point].calculate_qparams()
        if (float(scale), int(zero)) not in found:
            problems.append(f"{point}: learned qparams ({float(scale)}, {int(zero)}) not used")
    return problems


# ---- helpers -------------------------------------------------------------------------------


def _observer_base() -> type:
    with quiet_backend():
        from torch.ao.quantization.observer import ObserverBase

    return ObserverBase


class _FixedQParams(_observer_base()):  # type: ignore[misc]
    """An observer that observes nothing and reports given qparams (for ``convert_fx``)."""

    def __init__(
        self,
        scale: Tensor,
        zero_point: Tensor,
        *,
        dtype: torch.dtype,
        qscheme: torch.qscheme,
        ch_axis: int = 0,
        quant_min: int,
        quant_max: int,
    ) -> None:
        super().__init__(dtype=dtype, is_dynamic=False)
        self.qscheme, self.ch_axis = qscheme, ch_axis
        self.quant_min, self.quant_max = quant_min, quant_max
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("zero_point", zero_point.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x

    @torch.jit.export
    def calculate_qparams(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return self.scale, self.zero_point


def _float_part(module: nn.Module) -> nn.Module:
    """The Conv/Linear of a fused module (``ConvReLU2d`` -> its conv), else the module."""
    with quiet_backend():
        from torch.ao.nn.intrinsic import _FusedModule

    return module[0] if isinstance(module, _FusedModule) else module  # type: ignore[index]


def _set_module(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _weighted_layers(baseline: QuantizedModel) -> dict[str, tuple[Tensor, int | None]]:
    """Layer name -> (q0's weight scales float32, axis) for every quantized Conv/Linear."""
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    handled = (
        nnq.Conv1d,
        nnq.Conv2d,
        nnq.Conv3d,
        nnq.Linear,
        nniq.ConvReLU1d,
        nniq.ConvReLU2d,
        nniq.ConvReLU3d,
        nniq.LinearReLU,
    )
    inner = baseline.inner
    found: dict[str, tuple[Tensor, int | None]] = {}
    with quiet_backend(), static._engine(baseline.scheme.engine):  # type: ignore[union-attr]
        for node in inner.graph.nodes:
            if node.op != "call_module" or node.target in found:
                continue
            module = inner.get_submodule(node.target)
            if type(module) not in handled:
                if hasattr(module, "_packed_params") or hasattr(module, "_weight_bias"):
                    raise MitigateError(
                        f"learned quantizers handle Conv1d/2d/3d and Linear layers; "
                        f"{node.target} is a {type(module).__name__}"
                    )
                continue
            weight = module.weight()
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                scales = weight.q_per_channel_scales().float()
                axis: int | None = int(weight.q_per_channel_axis())
            else:
                scales = torch.tensor([weight.q_scale()], dtype=torch.float32)
                axis = None
            found[str(node.target)] = (scales, axis)
    return found


def _replace_observers(
    graph: nn.Module, *, learn_scale: bool, learn_zero_point: bool, floor: bool
) -> tuple[dict[str, ActQuantizer], tuple[str, ...], dict[str, str]]:
    """Swap every int8 activation observer of ``graph`` for an :class:`ActQuantizer` started
    at its calibrated qparams. An observer FX reuses for several nodes (max-pool, flatten
    share their input's) becomes one quantizer under every name it had.

    Returns ``(point name -> quantizer, fixed point names, observer target -> point name)``.
    """
    with quiet_backend():
        from torch.ao.quantization.observer import (
            FixedQParamsObserver,
            UniformQuantizationObserverBase,
        )

    made: dict[int, str] = {}
    points: dict[str, ActQuantizer] = {}
    fixed: list[str] = []
    targets: dict[str, str] = {}
    taken: set[str] = set()
    for node in list(graph.graph.nodes):
        if node.op != "call_module":
            continue
        observer = graph.get_submodule(node.target)
        if not isinstance(observer, UniformQuantizationObserverBase):
            continue
        if observer.dtype not in (torch.quint8, torch.qint8) or observer.qscheme not in (
            torch.per_tensor_affine,
            torch.per_tensor_symmetric,
        ):
            continue
        if id(observer) not in made:
            is_fixed = isinstance(observer, FixedQParamsObserver)
            with quiet_backend():
                scale, zero = observer.calculate_qparams()
            name = _point_name(node, taken)
            points[name] = ActQuantizer(
                float(scale),
                int(zero),
                dtype=observer.dtype,
                qscheme=observer.qscheme,
                quant_min=observer.quant_min,
                quant_max=observer.quant_max,
                learn_scale=learn_scale and not is_fixed,
                learn_zero_point=learn_zero_point and not is_fixed,
                floor=floor,
            )
            if is_fixed:
                fixed.append(name)
            made[id(observer)] = name
        name = made[id(observer)]
        targets[str(node.target)] = name
        _set_module(graph, node.target, points[name])
    graph.recompile()
    return points, tuple(fixed), targets


def _point_name(node: object, taken: set[str]) -> str:
    """The observed node's module name (``conv1``), else its graph name (``x``, ``add``)."""
    source = node.args[0] if node.args else None  # type: ignore[attr-defined]
    if getattr(source, "op", None) == "call_module":
        name = str(source.target)  # type: ignore[union-attr]
    else:
        name = str(getattr(source, "name", node.name))  # type: ignore[attr-defined]
    if name in taken:
        name = str(node.name)  # type: ignore[attr-defined]
    taken.add(name)
    return name


def _points_by_owner(learnable: LearnableInt8) -> tuple[dict[str, str], list[str]]:
    """``({point: quantized module name}, [other points])``: points that quantize a quantized
    module's output live on that module; the others (input, add...) in the graph's buffers."""
    inner = learnable.baseline.inner
    owners: dict[str, str] = {}
    modules = dict(inner.named_modules())
    for node in learnable.observed.graph.nodes:
        if node.op != "call_module" or node.target not in learnable._targets:
            continue
        point = learnable._targets[node.target]
        source = node.args[0]
        if point in owners or getattr(source, "op", None) != "call_module":
            continue
        module = modules.get(str(source.target))
        if module is not None and _has_output_qparams(module):
            owners[point] = str(source.target)
    others = [p for p in learnable.activations if p not in owners]
    return owners, others


def _has_output_qparams(module: nn.Module) -> bool:
    if not type(module).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic")):
        return False
    return hasattr(module, "scale") and hasattr(module, "zero_point")


def _buffer_qparams(inner: nn.Module) -> Iterator[tuple[float, int]]:
    """``(scale, zero_point)`` of every quantize node and quantized functional op."""
    buffers = dict(inner.named_buffers())
    for name, value in buffers.items():
        if "scale" not in name or value.numel() != 1:
            continue
        zero = buffers.get(name.replace("scale", "zero_point"))
        if zero is not None and zero.numel() == 1:
            yield float(value), int(zero)
