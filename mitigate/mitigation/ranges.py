"""Activation range search: re-pick each activation range of a static-int8 model so that it
agrees with the FP model on more inputs; no labels, no training, the FP model fixed.

Calibration picks each activation point's float range ``[lo, hi]`` from calibration data with
an observer (histogram by default). A range too wide wastes resolution, one too narrow clips;
the observer's criterion (the histogram's L2 error) is not top-1 agreement. On the default
digits LeNet-5, after x86's 7-bit activations, weight rounding and activation ranges cause
about equal shares of int8 disagreements (``RESEARCH.md``). This search changes only the
ranges: the copy it returns has the same integers, kernels, scheme and size, and is fully int8.

The search is coordinate descent over the points of
:func:`mitigate.quantization.act_ranges.activation_points`, in forward order, ``passes``
times. For each point, every candidate ``ratio`` gives the range ``[ratio * lo, ratio * hi]``
of the *calibrated* range ``[lo, hi]``, quantized as the point's observer would
(:meth:`~mitigate.quantization.act_ranges.ActPoint.qparams_for`); the copy with that range
(and every other point at its current choice) is run on ``probe`` and its top-1 labels are
compared with the FP model's (computed once). The candidate with the fewest disagreements is
kept, and the search moves on. Choices:

- **Scaling about 0.** Observers make 0 exactly representable; scaling both ends by ``ratio``
  keeps the zero point (up to rounding) and multiplies the step by ``ratio``. For a ReLU
  output or an image in ``[0, 1]`` (``lo == 0``) this shrinks ``hi`` only: it clips the
  largest activations and refines every other step. For a two-sided range (the logits, a
  residual sum before its ReLU) it clips both tails in proportion. Shrinking one end only
  would move the zero point and double the candidates; it is not tried.
- **Ties** go to the ratio closest to 1 (the calibrated range; ``|log ratio|`` smallest,
  then the larger): with ratios ``<= 1``, the least clipping. Ratio 1 (the calibrated range)
  is always a candidate, so no step ever increases the probe disagreements; ratios that give
  the same qparams are measured once.
- **Widening.** Ratios above 1 are allowed. With ``calibration`` (the inputs the model was
  calibrated on), each point whose observer clipped (the histogram observer does; its range
  is narrower than the calibration data's min-max) also tries the smallest ratio that covers
  the min-max range, read from a copy quantized with ``observer=minmax``.
- **The logits** are a point too: clipping them can create ties at the top (argmax then picks
  the first), which the count sees like any other disagreement.

x86's reduced range (``0..127``) clips only at about twice ``hi`` (quint8 holds ``0..255``),
so on x86 a ratio below 1 mostly buys resolution: ratio 0.5 on the logits, which feed no
kernel, clips where the calibrated range did and halves the step (the search picked 0.5-0.6
there on every digits LeNet-5 we tried). An intermediate value above 127 feeds the next
kernel, which the reduced range exists to protect from int16 overflow on CPUs without VNNI;
the probe count measures what this CPU's kernels do, as every int8 count here does.

Overfitting: the ranges are chosen to minimize disagreements *on the probe*, so the probe's
own count after the search is optimistic. Measure on inputs separate from the probe
(held-out shifts first); the probe should hold inputs where disagreements happen (low-margin
or shifted ones) and be large enough that a few flips are not the whole gain.

Cost: one forward pass over ``probe`` per candidate, at most ``passes * points *
(len(ratios) - 1)`` of them plus the widening ones (a LeNet-5 on 8x8 digits has 6 points: 30
candidates over 5,600 inputs took 1.3-1.5 s on one core with x86 kernels, 3-5 s with
qnnpack's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.mitigation._measure import labels

if TYPE_CHECKING:
    from mitigate.quantization.act_ranges import ActPoint
    from mitigate.quantization.api import QuantizedModel

__all__ = ["RangeStep", "RangesResult", "search_ranges"]

DEFAULT_RATIOS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
# A min-max range wider by less than this is the observers' rounding, not clipping.
_MIN_WIDENING = 1e-3


@dataclass(frozen=True)
class RangeStep:
    """What :func:`search_ranges` chose for one point in one pass.

    Attributes:
        pass_index: the pass, from 0.
        name: the point's name (:class:`~mitigate.quantization.act_ranges.ActPoint`).
        kind: ``"quantize"``, ``"module"`` or ``"function"``.
        ratio: the chosen multiple of the calibrated range (1.0: unchanged).
        old_range: the calibrated ``(lo, hi)`` (``quantized``'s own).
        new_range: the chosen ``(lo, hi)``, as the new qparams represent it.
        scale, zero_point: the chosen qparams.
        disagreements: probe disagreements with this choice (and every earlier one).
        candidates: candidate ratios for this point (ratio 1 included).
        measured: candidate models run for this point (the others were known already).
    """

    pass_index: int
    name: str
    kind: str
    ratio: float
    old_range: tuple[float, float]
    new_range: tuple[float, float]
    scale: float
    zero_point: int
    disagreements: int
    candidates: tuple[float, ...]
    measured: int


@dataclass(frozen=True)
class RangesResult:
    """What :func:`search_ranges` returns.

    Attributes:
        quantized: the new :class:`~mitigate.quantization.QuantizedModel` (same scheme,
            integers and size as the input one; only activation qparams differ).
        steps: one :class:`RangeStep` per point and pass, in search order.
        before: probe disagreements of ``quantized`` with the FP model.
        after: probe disagreements of the result (optimistic: chosen on the probe).
        evaluated: candidate models run on the probe (``before``'s run not included).
        probe_size: number of probe inputs.
        seconds: wall time of the whole search.
    """

    quantized: QuantizedModel
    steps: tuple[RangeStep, ...]
    before: int
    after: int
    evaluated: int
    probe_size: int
    seconds: float

    @property
    def choices(self) -> tuple[RangeStep, ...]:
        """The final choice per point (its last step), in forward order."""
        last = {step.name: step for step in self.steps}
        return tuple(last.values())

    @property
    def changed(self) -> tuple[str, ...]:
        """Names of the points whose qparams differ from ``quantized``'s."""
        return tuple(step.name for step in self.choices if step.ratio != 1.0)

    def as_dict(self) -> dict[str, Any]:
        from mitigate.quantization import scheme_label

        return {
            "scheme": scheme_label(self.quantized.scheme),
            "before": self.before,
            "after": self.after,
            "evaluated": self.evaluated,
            "probe_size": self.probe_size,
            "seconds": self.seconds,
            "steps": [asdict(step) for step in self.steps],
        }


def search_ranges(
    model: nn.Module,
    quantized: nn.Module,
    probe: Tensor,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    passes: int = 1,
    calibration: Tensor | None = None,
) -> RangesResult:
    """Re-pick the activation ranges of a static-int8 model to agree with ``model`` on ``probe``.

    Label-free: the FP model's own top-1 labels on ``probe`` are the target. Deterministic:
    the same inputs give the same ranges (on one machine and torch build: int8 kernels differ
    across CPUs).

    The ranges are chosen *on* ``probe``: keep the probe separate from the inputs you report
    disagreements on, or the count after is optimistic (see the module docstring).

    Args:
        model: the FP model ``f0`` that ``quantized`` was made from (not modified).
        quantized: ``q0``, a static-int8 :class:`~mitigate.quantization.QuantizedModel` of
            ``model`` (not modified).
        probe: ``float [N, ...]`` unlabelled model inputs, ``N >= 1``; a few hundred to a few
            thousand where disagreements happen (shifted or low-margin inputs).
        ratios: multiples of each calibrated range to try, finite and ``> 0`` (below 1
            clips, above 1 widens); 1.0 is always tried.
        passes: sweeps over the points (``>= 1``); a sweep that changes nothing ends the
            search early.
        calibration: the inputs ``quantized`` was calibrated on (``float [M, ...]``, same
            input shape as ``probe``), to also try each point's min-max range where the
            observer clipped; ``None`` skips that.

    Returns:
        A :class:`RangesResult`.

    Example:
        >>> from mitigate.quantization import quantize
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> x = torch.rand(256, 1, 8, 8)
        >>> result = search_ranges(net, quantize(net, "int8", x[:64]), x[64:])
        >>> [step.name for step in result.steps]
        ['0', '1', '3']
        >>> result.after <= result.before
        True
    """
    _check_inputs(model, quantized, probe, ratios, passes, calibration)
    from mitigate.quantization.act_ranges import activation_points, with_qparams

    start = time.perf_counter()
    points = activation_points(quantized)
    reference = labels(model, probe)
    before = int((labels(quantized, probe) != reference).sum())
    wide = _minmax_ratios(model, quantized, calibration, points) if calibration is not None else {}

    chosen: dict[str, tuple[float, int]] = {}  # point -> qparams, only where changed
    ratio_of = {point.name: 1.0 for point in points}
    measured: dict[tuple, int] = {(): before}
    current = before
    steps: list[RangeStep] = []
    for pass_index in range(passes):
        changed = False
        for point in points:
            candidates = _candidates(ratios, wide.get(point.name))
            best_ratio = ratio_of[point.name]
            best_qparams = chosen.get(point.name, (point.scale, point.zero_point))
            best = current
            runs = 0
            for ratio in candidates:
                qparams = point.qparams_for(ratio * point.lo, ratio * point.hi)
                config = dict(chosen)
                if qparams == (point.scale, point.zero_point):
                    config.pop(point.name, None)
                else:
                    config[point.name] = qparams
                key = tuple(sorted(config.items()))
                if key not in measured:
                    candidate = with_qparams(quantized, config)
                    measured[key] = int((labels(candidate, probe) != reference).sum())
                    runs += 1
                count = measured[key]
                if count < best or (count == best and _closer(ratio, best_ratio)):
                    best, best_ratio, best_qparams = count, ratio, qparams
            if best_qparams != chosen.get(point.name, (point.scale, point.zero_point)):
                changed = True
            if best_qparams == (point.scale, point.zero_point):
                chosen.pop(point.name, None)
            else:
                chosen[point.name] = best_qparams
            ratio_of[point.name] = best_ratio
            current = best
            new = replace(point, scale=best_qparams[0], zero_point=best_qparams[1])
            steps.append(
                RangeStep(
                    pass_index=pass_index,
                    name=point.name,
                    kind=point.kind,
                    ratio=best_ratio,
                    old_range=point.range,
                    new_range=new.range,
                    scale=best_qparams[0],
                    zero_point=best_qparams[1],
                    disagreements=best,
                    candidates=candidates,
                    measured=runs,
                )
            )
        if not changed:
            break
    return RangesResult(
        quantized=with_qparams(quantized, chosen),
        steps=tuple(steps),
        before=before,
        after=current,
        evaluated=len(measured) - 1,
        probe_size=int(probe.shape[0]),
        seconds=time.perf_counter() - start,
    )


def _candidates(ratios: Sequence[float], wide: float | None) -> tuple[float, ...]:
    """The ratios to try at one point, in a fixed order: 1.0 first, then as given, then the
    min-max widening; duplicates dropped."""
    out: list[float] = [1.0]
    for ratio in [*ratios, *([wide] if wide is not None else [])]:
        if float(ratio) not in out:
            out.append(float(ratio))
    return tuple(out)


def _closer(ratio: float, incumbent: float) -> bool:
    """Whether ``ratio`` is preferred to ``incumbent`` at equal counts: closer to 1 in
    ``|log ratio|``, then the larger."""
    a, b = abs(math.log(ratio)), abs(math.log(incumbent))
    return a < b or (a == b and ratio > incumbent)


def _minmax_ratios(
    model: nn.Module, quantized: QuantizedModel, calibration: Tensor, points: list[ActPoint]
) -> dict[str, float]:
    """Per point whose observer clipped the calibration data, the ratio of its calibrated
    range that covers the data's min-max range."""
    from mitigate.quantization import quantize
    from mitigate.quantization.act_ranges import activation_points

    scheme = quantized.scheme
    if scheme.observer == "minmax":
        return {}
    minmax = {
        p.name: p
        for p in activation_points(quantize(model, replace(scheme, observer="minmax"), calibration))
    }
    out = {}
    for point in points:
        other = minmax.get(point.name)
        if other is None:
            continue
        ratio = max(
            other.hi / point.hi if point.hi > 0 else 0.0,
            other.lo / point.lo if point.lo < 0 else 0.0,
        )
        if ratio > 1.0 + _MIN_WIDENING and math.isfinite(ratio):
            out[point.name] = ratio
    return out


def _check_inputs(
    model: object,
    quantized: object,
    probe: object,
    ratios: object,
    passes: object,
    calibration: object,
) -> None:
    from mitigate.quantization.int_weights import check_static_int8

    if not isinstance(model, nn.Module):
        raise MitigateError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_static_int8(quantized, "search_ranges")
    for what, x in (("probe", probe), ("calibration", calibration)):
        if x is None and what == "calibration":
            continue
        if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] == 0:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise MitigateError(f"{what} must be a non-empty float tensor [N, ...], got {got}")
        if not x.is_floating_point():
            raise MitigateError(f"{what} must be a float tensor, got dtype {x.dtype}")
    if calibration is not None and calibration.shape[1:] != probe.shape[1:]:  # type: ignore[union-attr]
        raise MitigateError(
            f"calibration inputs {list(calibration.shape[1:])} and probe inputs "  # type: ignore[union-attr]
            f"{list(probe.shape[1:])} have different shapes"  # type: ignore[union-attr]
        )
    _check_ratios(ratios)
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise MitigateError(f"passes must be an integer >= 1, got {passes!r}")
    _check_outputs(model, quantized, probe)  # type: ignore[arg-type]


def _check_ratios(ratios: object) -> None:
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence):
        raise MitigateError(f"ratios must be a sequence of numbers, got {ratios!r}")
    if len(ratios) == 0:
        raise MitigateError("ratios must hold at least one number > 0, got none")
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise MitigateError(f"ratios must be finite numbers > 0, got {ratio!r}")
        if not (math.isfinite(ratio) and ratio > 0):
            raise MitigateError(f"ratios must be finite numbers > 0, got {ratio}")


@torch.no_grad()
def _check_outputs(model: nn.Module, quantized: nn.Module, probe: Tensor) -> None:
    """Both models must take the probe's inputs and return logits of one shape."""
    sample = probe[:2]
    shapes = []
    for what, net in (("model", model), ("quantized", quantized)):
        was_training = net.training
        net.eval()
        try:
            shapes.append(tuple(net(sample).shape))
        except (RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MitigateError(
                f"probe inputs of shape {list(probe.shape[1:])} do not fit the {what}: {first}"
            ) from None
        finally:
            net.train(was_training)
    if shapes[0] != shapes[1]:
        raise MitigateError(
            f"model and quantized give outputs of different shapes: {list(shapes[0])} and "
            f"{list(shapes[1])}; is quantized a copy of model?"
        )
