"""AdaRound (Nagel et al., 2020, arXiv 2004.10568): learn, per weight, whether to round down
or up, so each quantized layer reproduces the FP model's layer output; no labels, no training
of the FP model, nothing but the integers changes.

For each quantized Conv/Linear layer, in forward order, a soft rounding variable ``h(V)`` in
``[0, 1]`` is fitted per weight::

    h(V)      = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1),   zeta = 1.1, gamma = -0.1
    W~        = scale * (clamp(floor(W / scale) + h(V), qmin, qmax) - zero_point)
    loss      = mean((clip(act(W~ x~ + b)) - act(W x + b))^2) / (the same with round-to-nearest)
                + reg * mean(1 - |2 h(V) - 1|^beta)

``beta`` stays off for the first ``warmup`` share of the iterations, then anneals from 20 to 2
so the regularizer pushes every ``h`` to 0 or 1; the result is hard-rounded (``h >= 0.5``
rounds up) and written into the int8 kernels. Scales, zero points, biases, activation ranges,
model size and kernels stay exactly those of ``quantized``.

Which inputs, which targets:

- ``x~`` is the layer's input as the quantized model sees it *with every earlier layer already
  re-rounded* (the dequantized int8 activation its kernel multiplies); ``W x + b`` is the FP
  model's own layer output on the FP model's own input. This is the paper's "asymmetric"
  reconstruction (its eq. 25, the variant it found best): each layer also absorbs the error
  that reaches it from the layers before, which is what a disagreement with f0 is made of.
  The alternative, the FP input on both sides, fits each layer in isolation and ignores that
  error; QDrop (Wei et al., 2022) mixes the two at random per element to avoid fitting the
  calibration inputs' error pattern too closely — worth trying if held-out inputs get worse.
- ``act`` is the ReLU fused into the kernel (none otherwise): errors on outputs the ReLU
  zeroes in both models do not count, as in the paper.
- With BatchNorm folded into a conv, ``W`` and ``b`` are the folded weight and bias — the
  values the backend rounded (:func:`mitigate.quantization.int_weights.fuse_float`).
- ``clip`` is the range the kernel's quint8 output can hold: an output beyond it is clipped
  by the backend whatever the weights, so it must not pull on them. The rounding of the
  output to its grid is left out (no gradient; the output scale stays fixed).

The reconstruction term is normalized by round-to-nearest's error, so one ``reg`` suits every
layer. The paper runs 10k-20k steps; the defaults (500 steps of 128 inputs, Adam at lr 0.1,
reg 10) were chosen on digits models so that a LeNet-sized layer takes about a second on one
CPU core and ends with (almost) every ``h`` at 0 or 1: with a weaker ``reg`` a third of them
were still undecided after 500 steps and hard rounding lost most of the gain. A layer whose
learned rounding reconstructs worse than round-to-nearest on ``inputs`` keeps
round-to-nearest; its row says so (``kept=False``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.mitigation._reconstruction import layer_inputs, prepare
from mitigate.quantization.api import QuantizedModel
from mitigate.quantization.int_weights import IntLayer

__all__ = ["AdaRoundLayer", "AdaRoundResult", "adaround"]

_ZETA, _GAMMA = 1.1, -0.1
_BETA = (20.0, 2.0)


@dataclass(frozen=True)
class AdaRoundLayer:
    """What :func:`adaround` did to one layer.

    Attributes:
        name: the layer's module name in the FP model.
        weights: number of integers in the layer.
        changed: integers that differ from round-to-nearest (``quantized``'s own).
        mse_before: reconstruction MSE with round-to-nearest: mean squared difference between
            the layer's (activated) output in the quantized model, earlier layers already
            re-rounded, and the FP model's, over ``inputs``.
        mse_after: the same with the learned integers (the kept ones if ``kept`` is false).
        kept: ``False`` when the learned rounding reconstructed worse and round-to-nearest
            was kept (then ``changed`` is 0).
        seconds: wall time for this layer.
    """

    name: str
    weights: int
    changed: int
    mse_before: float
    mse_after: float
    kept: bool
    seconds: float


@dataclass(frozen=True)
class AdaRoundResult:
    """What :func:`adaround` returns.

    Attributes:
        quantized: the new :class:`~mitigate.quantization.QuantizedModel` (same scheme, same
            scales and size as the input one; only integers differ).
        layers: one :class:`AdaRoundLayer` per fitted layer, in forward order.
    """

    quantized: QuantizedModel
    layers: tuple[AdaRoundLayer, ...]

    @property
    def changed(self) -> int:
        """Integers changed from round-to-nearest, over all layers."""
        return sum(layer.changed for layer in self.layers)

    def as_dict(self) -> dict[str, Any]:
        from mitigate.quantization import scheme_label

        return {
            "scheme": scheme_label(self.quantized.scheme),
            "changed": self.changed,
            "layers": [asdict(layer) for layer in self.layers],
        }


def adaround(
    model: nn.Module,
    quantized: nn.Module,
    inputs: Tensor,
    *,
    iterations: int = 500,
    lr: float = 0.1,
    batch_size: int = 128,
    reg: float = 10.0,
    warmup: float = 0.2,
    seed: int = 0,
    layers: Sequence[str] | None = None,
) -> AdaRoundResult:
    """Re-round the integers of a static-int8 model, layer by layer, to reproduce ``model``.

    Args:
        model: the FP model ``f0`` that ``quantized`` was made from (not modified).
        quantized: ``q0``, a static-int8 :class:`~mitigate.quantization.QuantizedModel` of
            ``model`` (not modified); layers its scheme keeps in float are skipped.
        inputs: ``float [N, ...]`` unlabelled model inputs; a few hundred suffice.
        iterations: optimizer steps per layer (``>= 0``; 0 keeps round-to-nearest).
        lr: Adam learning rate for the rounding variables ``V``.
        batch_size: inputs per step (``>= 1``; more than ``N`` uses all of them).
        reg: weight of the rounding regularizer against the normalized reconstruction error.
        warmup: share of the iterations before the regularizer starts, in ``[0, 1)``.
        seed: seeds the batch order; the same seed gives the same integers (on one machine
            and torch build: int8 kernels differ across CPUs).
        layers: names of the layers to re-round (default all quantized Conv/Linear layers);
            the others keep their integers.

    Returns:
        An :class:`AdaRoundResult`.

    Example:
        >>> from mitigate.quantization import quantize
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> x = torch.rand(128, 1, 8, 8)
        >>> q0 = quantize(net, "int8", x)
        >>> result = adaround(net, q0, x, iterations=100)
        >>> [row.name for row in result.layers]
        ['1', '3']
        >>> all(row.mse_after <= row.mse_before for row in result.layers)
        True
    """
    _check_options(iterations, lr, batch_size, reg, warmup)
    fused, names = prepare(model, quantized, inputs, layers, "adaround")
    from mitigate.quantization.int_weights import float_weight, read_layer, with_weights

    generator = torch.Generator().manual_seed(seed)
    current = quantized
    rows = []
    for name in names:
        start = time.perf_counter()
        layer = read_layer(current, name)
        x_q, x_fp = layer_inputs(fused, current, inputs, name)
        w_fp, b_fp = float_weight(fused, name)
        with torch.no_grad():
            target = layer.activate(layer.forward_float(x_fp, w_fp, b_fp))
        learned, before, after = _fit_layer(
            layer, w_fp, x_q, target, iterations, lr, batch_size, reg, warmup, generator
        )
        kept = after <= before
        if not kept:
            learned, after = layer.weight, before
        changed = int((learned != layer.weight).sum())
        if changed:
            current = with_weights(current, {name: learned})
        rows.append(
            AdaRoundLayer(
                name=name,
                weights=layer.weight.numel(),
                changed=changed,
                mse_before=before,
                mse_after=after,
                kept=kept,
                seconds=time.perf_counter() - start,
            )
        )
    if current is quantized:
        current = with_weights(quantized)  # always a copy: callers may modify the result
    return AdaRoundResult(quantized=current, layers=tuple(rows))


def _check_options(iterations: int, lr: float, batch_size: int, reg: float, warmup: float) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise MitigateError(f"iterations must be an integer >= 0, got {iterations!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MitigateError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise MitigateError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(reg, (int, float)) and math.isfinite(reg) and reg >= 0):
        raise MitigateError(f"reg must be a number >= 0, got {reg!r}")
    if not (isinstance(warmup, (int, float)) and 0 <= warmup < 1):
        raise MitigateError(f"warmup must be in [0, 1), got {warmup!r}")


def _soft(v: Tensor) -> Tensor:
    """The rectified sigmoid ``h(V)`` in ``[0, 1]``."""
    return (torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA).clamp(0.0, 1.0)


def _inverse_soft(rest: Tensor) -> Tensor:
    """``V`` with ``h(V) == rest`` for ``rest`` in ``[0, 1]``."""
    return -torch.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1.0)


def _beta(step: int, iterations: int, warmup: float) -> float | None:
    """The regularizer's exponent at ``step``: ``None`` during warmup, then 20 -> 2 linearly."""
    start = int(warmup * iterations)
    if step < start:
        return None
    progress = (step - start) / max(1, iterations - start)
    return _BETA[1] + (_BETA[0] - _BETA[1]) * (1.0 - progress)


def _fit_layer(
    layer: IntLayer,
    w_fp: Tensor,
    x: Tensor,
    target: Tensor,
    iterations: int,
    lr: float,
    batch_size: int,
    reg: float,
    warmup: float,
    generator: torch.Generator,
) -> tuple[Tensor, float, float]:
    """Learned integers (``int8``, the layer's shape), and the reconstruction MSE of
    round-to-nearest and of the learned integers on all of ``x``."""
    base, rest = layer.rounding_base(w_fp)
    base = base.float()
    low, high = float(layer.quant_min), float(layer.quant_max)

    def output(ints: Tensor, xb: Tensor) -> Tensor:
        y = layer.forward_float(xb, layer.dequantize(ints), layer.bias)
        return layer.clip_output(layer.activate(y))

    with torch.no_grad():
        before = _mse(output(layer.weight.float(), x), target)
    if iterations == 0 or before == 0.0:
        return layer.weight.clone(), before, before

    v = nn.Parameter(_inverse_soft(rest.float()))
    optimizer = torch.optim.Adam([v], lr=lr)
    n = x.shape[0]
    for step in range(iterations):
        idx = (
            torch.randint(0, n, (batch_size,), generator=generator)
            if batch_size < n
            else slice(None)
        )
        h = _soft(v)
        ints = torch.clamp(base + h, low, high)
        loss = ((output(ints, x[idx]) - target[idx]) ** 2).mean() / before
        beta = _beta(step, iterations, warmup)
        if beta is not None and reg > 0:
            loss = loss + reg * (1.0 - (2.0 * h - 1.0).abs().pow(beta)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        hard = torch.clamp(base + (_soft(v) >= 0.5).float(), low, high)
        after = _mse(output(hard, x), target)
    return hard.to(torch.int8), before, after


def _mse(a: Tensor, b: Tensor) -> float:
    return float(((a - b) ** 2).mean())
