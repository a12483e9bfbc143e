"""Learnable quantizers for static int8 around a frozen float model: prepare, train, convert.

The float model ``f0`` never changes. What trains is how it is quantized:

- :class:`ActQuantizer` — one per activation quantization point (the model input, every
  quantized layer's output, ``add``...): a learnable scale and zero point (LSQ, Esser et al.
  2020, with straight-through rounding);
- :class:`WeightQuantizer` — one per quantized Conv/Linear layer: a learnable scale per output
  channel (per tensor with ``per_channel=false``) and, optionally, one rounding offset per
  weight in ``[0, 1]`` (AdaRound, Nagel et al. 2020: up or down instead of to nearest);
- :class:`BiasShift` — optionally, a learnable shift of each layer's float bias (then ``q1``
  no longer quantizes ``f0``'s own biases).

Steps, each explicit:

1. :func:`prepare_learnable` — the scheme's normal PTQ (the same ``prepare``/``calibrate``/
   ``convert`` as :func:`mitigate.quantization.quantize`, so ``baseline`` *is* ``q0``), then a
   *simulation*: a copy of the calibrated FX model whose observers are replaced by
   :class:`ActQuantizer` s initialised from them, and whose layers' weights pass through
   :class:`WeightQuantizer` s (``torch.nn.utils.parametrize``) initialised from ``q0``'s own
   weight scales. With nothing learned yet the simulation computes ``q0`` in float, and
   converting gives ``q0`` bit for bit.
2. Train :attr:`LearnableInt8.parameters` (the quantizers' only) against any loss; the float
   weights are frozen copies that never get a gradient.
3. :func:`convert_learnable` — torch.ao's own ``convert_fx`` on a fresh copy of the calibrated
   model in which each observer is replaced by one that reports the learned scale and zero
   point, each layer's weight observer by one that reports the learned weight scales, and each
   layer's float weight by the learned integers times the learned scales (so convert's
   round-to-nearest gives back exactly the learned integers, learned rounding included).
   :func:`converted_mismatches` checks that the converted model uses exactly what was learned.

The simulation clips activations where the int8 kernels do — at the quint8 range ``0..255`` —
also for x86's reduced (7-bit) range, whose observers only pick a scale for ``0..127``. It does
not model fbgemm's int16 saturation on CPUs without VNNI, which an activation scale learned
finer than the calibrated one can expose (``floor_activation_scales`` forbids that); nor the
kernels' requantization rounding (on one AVX-512 VNNI x86 CPU the simulated logits of the test
model equalled the int8 model's exactly; with qnnpack they differed by up to one output step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mitigate.quantization._quiet import quiet_backend

__all__ = ["ActQuantizer", "BiasShift", "Simulation", "WeightQuantizer"]

_QUINT8 = (0, 255)
_QINT8 = (-128, 127)


def _round_ste(x: Tensor) -> Tensor:
    """``round(x)`` (half to even, as the backend's ``nearbyint``) with gradient 1."""
    return x + (torch.round(x) - x).detach()


def _floor_ste(x: Tensor) -> Tensor:
    return x + (torch.floor(x) - x).detach()


def _hard_ste(h: Tensor) -> Tensor:
    """``1`` where ``h >= 0.5`` else ``0``, with gradient 1 (rounding up or down)."""
    return h + ((h >= 0.5).to(h.dtype) - h).detach()


def _fake_quantize_base() -> type:
    with quiet_backend():
        from torch.ao.quantization.fake_quantize import FakeQuantizeBase

    return FakeQuantizeBase


class ActQuantizer(_fake_quantize_base()):  # type: ignore[misc]
    """A per-tensor activation quantizer with a learnable scale and zero point.

    Forward (``s`` the scale, ``z`` the zero point, ``[lo, hi]`` the dtype's range):
    ``(clamp(round(x * (1 / s)) + round(z), lo, hi) - round(z)) * s``, rounding
    straight-through, so ``s`` gets LSQ's gradient and ``z`` a gradient where values clip.
    The scale is ``init_scale * exp(log_scale)``: learning steps are relative, and at
    ``log_scale = 0`` it is the calibrated float32 scale exactly.

    A subclass of torch.ao's ``FakeQuantizeBase``: ``convert_fx`` would take its
    :meth:`calculate_qparams` like any fake-quantize module's.

    Args:
        scale: the calibrated scale (float32 value).
        zero_point: the calibrated zero point.
        dtype: ``torch.quint8`` (activations of torch's int8 engines) or ``torch.qint8``.
        qscheme: the observer's per-tensor qscheme; a symmetric one keeps its zero point.
        quant_min, quant_max: the observer's range (``0..127`` with x86's reduced range); it
            chose the scale. Clipping uses the dtype's full range, as the kernels do.
        learn_scale, learn_zero_point: which of the two train.
        floor: never let the scale shrink below ``scale`` (kept by :meth:`clamp_`): values
            keep no more integer steps than the calibrated range gave them (with x86's
            reduced range, 7 bits on that range).

    Example:
        >>> q = ActQuantizer(0.1, 0, learn_scale=True, learn_zero_point=True)
        >>> q(torch.tensor([0.04, 0.26, 30.0]))
        tensor([ 0.0000,  0.3000, 25.5000], grad_fn=<MulBackward0>)
        >>> q.calculate_qparams()
        (tensor([0.1000]), tensor([0], dtype=torch.int32))
    """

    def __init__(
        self,
        scale: float,
        zero_point: int,
        *,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        quant_min: int = 0,
        quant_max: int = 255,
        learn_scale: bool = True,
        learn_zero_point: bool = True,
        floor: bool = False,
    ) -> None:
        super().__init__()
        self.floor = floor
        self.dtype, self.qscheme = dtype, qscheme
        self.quant_min, self.quant_max = int(quant_min), int(quant_max)
        self.is_dynamic = False
        self.clip = _QUINT8 if dtype == torch.quint8 else _QINT8
        symmetric = qscheme == torch.per_tensor_symmetric
        self.register_buffer("init_scale", torch.tensor([scale], dtype=torch.float32))
        self.register_buffer("init_zero_point", torch.tensor([float(zero_point)]))
        self.log_scale = nn.Parameter(torch.zeros(1), requires_grad=learn_scale)
        self.zero_point = nn.Parameter(
            torch.tensor([float(zero_point)]), requires_grad=learn_zero_point and not symmetric
        )
        self.observer_enabled.fill_(0)  # nothing is observed: the qparams are parameters

    @property
    def scale(self) -> Tensor:
        """The current scale ``[1]`` (float32, with gradient)."""
        return self.init_scale * torch.exp(self.log_scale)

    def _zero(self) -> Tensor:
        return _round_ste(self.zero_point.clamp(*self.clip))

    def forward(self, x: Tensor) -> Tensor:
        if not self.fake_quant_enabled[0]:
            return x
        s, z = self.scale, self._zero()
        q = torch.clamp(_round_ste(x * (1.0 / s)) + z, *self.clip)
        return (q - z) * s

    @torch.jit.export
    def calculate_qparams(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """``(scale float32 [1], zero_point int32 [1])`` as ``convert_fx`` reads them."""
        with torch.no_grad():
            zero = torch.round(self.zero_point.clamp(*self.clip)).to(torch.int32)
            return self.scale.detach().clone(), zero

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the scale at or above the calibrated one when ``floor`` is set."""
        if self.floor:
            self.log_scale.clamp_(min=0.0)

    def extra_repr(self) -> str:
        scale, zero = self.calculate_qparams()
        return f"scale={float(scale):.6g}, zero_point={int(zero)}, dtype={self.dtype}"


class WeightQuantizer(nn.Module):
    """A weight's int8 quantizer with learnable scales and, optionally, learned rounding.

    Used as a ``torch.nn.utils.parametrize`` parametrization: ``layer.weight`` becomes
    ``integers * scale`` computed from the frozen float weight. Symmetric int8 (zero point 0,
    integers in ``[-128, 127]``), as every static-int8 scheme quantizes weights.

    - ``rounding=False``: ``round(w * (1 / s))``, the backend's own round-to-nearest (at the
      calibrated scale these *are* ``q0``'s integers).
    - ``rounding=True``: ``floor(w * (1 / s)) + [h >= 0.5]`` with a learnable ``h`` in
      ``[0, 1]`` per weight (straight-through); initialised so that it rounds exactly as
      ``q0`` does.

    Args:
        weight: the frozen float weight the layer quantizes (BN already folded in).
        scales: float32 ``[out]`` per channel or ``[1]`` per tensor: ``q0``'s scales.
        axis: the channel axis of per-channel scales (0), ``None`` per tensor.
        learn_scale: whether the scales train (``init * exp(log_scale)``).
        rounding: whether per-weight rounding offsets train.

    Example:
        >>> w = torch.tensor([[0.26, -0.14], [1.0, 0.5]])
        >>> wq = WeightQuantizer(w, torch.tensor([0.1, 0.5]), axis=0)
        >>> wq.integers(w)
        tensor([[ 3, -1],
                [ 2,  1]], dtype=torch.int8)
    """

    def __init__(
        self,
        weight: Tensor,
        scales: Tensor,
        axis: int | None,
        *,
        learn_scale: bool = True,
        rounding: bool = False,
    ) -> None:
        super().__init__()
        self.axis = axis
        shape = [1] * weight.ndim
        if axis is not None:
            shape[axis] = -1
        init = scales.detach().to(torch.float32).reshape(shape).clone()
        self.register_buffer("init_scale", init)
        self.log_scale = nn.Parameter(torch.zeros_like(init), requires_grad=learn_scale)
        self.offset: nn.Parameter | None = None
        if rounding:
            with torch.no_grad():
                u = weight.detach().float() * (1.0 / init)
                base, nearest = torch.floor(u), torch.round(u)
                rest = u - base
                up = nearest > base  # round-to-nearest rounded up: h starts at >= 0.5
                start = torch.where(up, rest.clamp(0.5, 1.0), rest.clamp(0.0, 0.4999))
            self.offset = nn.Parameter(start)

    def scale(self) -> Tensor:
        """The current scales, shaped to broadcast against the weight (float32, with grad)."""
        return self.init_scale * torch.exp(self.log_scale)

    def _integers(self, weight: Tensor) -> Tensor:
        u = weight * (1.0 / self.scale())
        if self.offset is None:
            q = _round_ste(u)
        else:
            q = _floor_ste(u) + _hard_ste(self.offset.clamp(0.0, 1.0))
        return torch.clamp(q, *_QINT8)

    def forward(self, weight: Tensor) -> Tensor:
        return self._integers(weight) * self.scale()

    @torch.no_grad()
    def integers(self, weight: Tensor) -> Tensor:
        """The int8 integers the current parameters give ``weight`` (same shape, int8)."""
        return self._integers(weight).to(torch.int8)

    @torch.no_grad()
    def nearest(self, weight: Tensor) -> Tensor:
        """Round-to-nearest integers of ``weight`` at the current scales (int8)."""
        return torch.clamp(torch.round(weight * (1.0 / self.scale())), *_QINT8).to(torch.int8)

    @torch.no_grad()
    def flat_scales(self) -> Tensor:
        """The current scales as float32 ``[out]`` (``[1]`` per tensor)."""
        return self.scale().detach().flatten().clone()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the rounding offsets in ``[0, 1]`` (call after each optimiser step)."""
        if self.offset is not None:
            self.offset.clamp_(0.0, 1.0)


class BiasShift(nn.Module):
    """A learnable shift added to a frozen float bias (parametrization; starts at zero)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(channels))

    def forward(self, bias: Tensor) -> Tensor:
        return bias + self.delta


class Simulation(nn.Module):
    """The float simulation of the int8 model that trains; always in eval mode.

    Its ``train()`` keeps eval mode whatever a caller (Lightning) asks: the float model's
    dropout and any unfused batch norm must behave as in ``f0``'s inference, and nothing in it
    learns from statistics.
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        self.train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.graph(x)

    def train(self, mode: bool = True) -> Simulation:
        return super().train(False)
