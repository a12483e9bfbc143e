"""A deployable runtime margin guard: answer with the quantized copy, re-run FP where it is unsure.

A quantized copy ``q`` of a validated full-precision (FP) model ``f`` disagrees with ``f`` on a
few inputs, almost all of them inputs where ``q``'s top-1/top-2 probability margin
``p1 - p2`` is small. :class:`GuardedModel` answers with ``q`` and re-runs ``f`` only on the
inputs whose *quantized* margin is below a threshold, which removes most disagreements at
the cost of running ``f`` on a few percent of inputs. :func:`choose_threshold` picks that
threshold on an unlabelled pool (a target share of disagreements to catch, or a target share
of inputs to reroute), :func:`threshold_outcome` measures a threshold on any set, and
:func:`save_guard` / :func:`load_guard` ship the pair as one safe file.

The routing rule is one line everywhere: input ``i`` is rerouted iff
``guard_margin(q_logits)[i] < threshold``. Threshold ``0`` never reroutes (the plain
quantized model); any threshold above 1, ``math.inf`` included, always reroutes (the FP model).

Example:
    >>> import torch
    >>> from mitigate.quantization import quantize
    >>> _ = torch.manual_seed(0)
    >>> fp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    >>> q = quantize(fp, "int8-dynamic")
    >>> pool = torch.randn(200, 1, 4, 4)
    >>> q_logits = q(pool)
    >>> disagree = q_logits.argmax(1) != fp(pool).argmax(1)
    >>> choice = choose_threshold(guard_margin(q_logits), disagree, catch=1.0)
    >>> choice.caught
    1.0
    >>> guard = GuardedModel(q, fp, choice.threshold)
    >>> bool((guard(pool).argmax(1) == fp(pool).argmax(1)).all())
    True
"""

from __future__ import annotations

import math
import numbers
import os
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError, first_line
from mitigate.models.checkpoint import read_torch_file, write_torch_file
from mitigate.quantization import QuantizedModel, parse_scheme, quantize, scheme_label
from mitigate.selectors.scores import _margin as margin_maths

__all__ = [
    "GUARD_FORMAT",
    "GUARD_VERSION",
    "GuardChoice",
    "GuardedModel",
    "choose_threshold",
    "guard_margin",
    "load_guard",
    "save_guard",
    "threshold_outcome",
]

GUARD_FORMAT = "mitigate-guard"
GUARD_VERSION = 1
# Input dtypes a guard file may name for its example input (images, token ids).
_INPUT_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
}


# ---- margins --------------------------------------------------------------------------------


def _margin(logits: Tensor) -> Tensor:
    # p1 - p2 from the selectors' margin score (one formula in the package, in float64, so a
    # pool's margins and the guard's are the same numbers); a row with a NaN or infinite
    # logit gets margin 0, the least sure possible: any guard that is on (threshold > 0)
    # reroutes it, and threshold 0 still passes the quantized output through. The score's
    # private maths, not its public checks: this runs on every call of a deployed guard, and
    # for a one-input request the checks cost more than a small model's forward pass.
    wide = logits.to(torch.float64)
    if bool(torch.isfinite(wide).all()):
        return 1.0 - margin_maths(wide)
    finite = torch.isfinite(wide).all(dim=1)
    margin = torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)
    margin[finite] = 1.0 - margin_maths(wide[finite])
    return margin


def guard_margin(logits: Tensor) -> Tensor:
    """The margin the guard thresholds: ``p1 - p2`` of ``softmax(logits)``, in ``[0, 1]``.

    Computed as ``1 - margin_score(logits)`` (:func:`mitigate.selectors.margin_score`), in
    float64, so a pool's margins and the guard's run-time margins are the same numbers. A row
    holding a NaN or infinite logit gets margin ``0``: a guard with a threshold above 0
    reroutes it.

    Args:
        logits: ``[N, C]`` floating-point logits of the quantized model, ``C >= 2``.

    Returns:
        ``[N]`` float64 margins; small = unsure = likely to disagree.

    Raises:
        MitigateError: not a floating ``[N, C]`` tensor with ``C >= 2``.

    Example:
        >>> guard_margin(torch.tensor([[2.0, 2.0, -1.0], [9.0, -9.0, 0.0]])).round(decimals=4)
        tensor([0.0000, 0.9998], dtype=torch.float64)
    """
    if not isinstance(logits, Tensor):
        raise MitigateError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[1] < 2 or not logits.is_floating_point():
        raise MitigateError(
            f"logits must be floating-point of shape [N, C] with C >= 2, got "
            f"{logits.dtype} {list(logits.shape)}"
        )
    return _margin(logits)


# ---- the guard ------------------------------------------------------------------------------


def _check_threshold(threshold: object) -> float:
    if (
        not isinstance(threshold, numbers.Real)
        or isinstance(threshold, bool)
        or math.isnan(float(threshold))
        or float(threshold) < 0
    ):
        raise MitigateError(
            f"threshold must be a real number >= 0 (0 = quantized only, inf = FP only), "
            f"got {threshold!r}"
        )
    return float(threshold)


class GuardedModel(nn.Module):
    """Answer with the quantized model; re-run the FP model where the quantized margin is small.

    Input ``i`` of a batch is *rerouted* iff ``guard_margin(quantized(x))[i] < threshold``;
    its logits are then the FP model's, computed on the rerouted rows only (the FP model is
    not called at all when no row is rerouted). Threshold ``0`` gives exactly the quantized
    model's output, any threshold above 1 (``math.inf`` included) exactly the FP model's.

    Eval only: both models are put in eval mode (in place) and :meth:`train` keeps them
    there, as :class:`~mitigate.quantization.QuantizedModel` does. Every call runs under
    ``torch.no_grad()``.

    Args:
        quantized: the quantized copy, e.g. from :func:`mitigate.quantization.quantize`;
            maps ``[N, ...]`` inputs to ``[N, C]`` logits. Only a
            :class:`~mitigate.quantization.QuantizedModel` can be saved with
            :func:`save_guard`.
        fp: the full-precision model, same inputs, ``[N, C]`` logits.
        threshold: a real number ``>= 0`` (``math.inf`` allowed).

    Attributes:
        seen: inputs routed since construction or :meth:`reset_counts`.
        rerouted: how many of them went to the FP model.
        input_shape: the shape of one input (no batch dimension) of the latest call, or of
            the file it was loaded from; :func:`save_guard` stores it.

    Raises:
        MitigateError: a model that is not an ``nn.Module``, or a bad threshold.

    Example:
        >>> fp = torch.nn.Linear(4, 3)
        >>> q = torch.nn.Linear(4, 3)  # stands in for a quantized copy here
        >>> guard = GuardedModel(q, fp, threshold=0.0)
        >>> logits, rerouted = guard.route(torch.randn(5, 4))
        >>> logits.shape, rerouted.shape, int(rerouted.sum()), guard.seen
        (torch.Size([5, 3]), torch.Size([5]), 0, 5)
    """

    def __init__(self, quantized: nn.Module, fp: nn.Module, threshold: float) -> None:
        super().__init__()
        for name, model in (("quantized", quantized), ("fp", fp)):
            if not isinstance(model, nn.Module):
                raise MitigateError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
        self.quantized = quantized
        self.fp = fp
        self.threshold = threshold
        self.seen = 0
        self.rerouted = 0
        self.input_shape: tuple[int, ...] | None = None
        self.input_dtype: torch.dtype | None = None
        self.train(False)

    @property
    def threshold(self) -> float:
        """Reroute an input iff its quantized margin ``p1 - p2`` is below this; checked on set."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = _check_threshold(value)

    @property
    def reroute_rate(self) -> float:
        """``rerouted / seen``; ``0.0`` before any input was seen."""
        return self.rerouted / self.seen if self.seen else 0.0

    def reset_counts(self) -> None:
        """Set :attr:`seen` and :attr:`rerouted` back to 0."""
        self.seen = 0
        self.rerouted = 0

    @torch.no_grad()
    def route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Guarded logits and which inputs were rerouted; updates the counters.

        Args:
            x: ``[N, ...]`` inputs, as both models take them.

        Returns:
            ``(logits, rerouted)``: float32 ``[N, C]`` and bool ``[N]`` (True = the row holds
            the FP model's logits).

        Raises:
            MitigateError: the quantized model's output is not ``[N, C]`` with ``C >= 2``, or
                the FP model's output does not match its shape.
        """
        q_logits = self.quantized(x)
        n = x.shape[0]
        if q_logits.ndim != 2 or q_logits.shape[0] != n or q_logits.shape[1] < 2:
            raise MitigateError(
                f"the quantized model must return [N, C] logits with C >= 2 for N={n} "
                f"inputs, got shape {list(q_logits.shape)}"
            )
        logits = q_logits.float()
        rerouted = _margin(logits) < self._threshold
        count = int(rerouted.sum())
        if count:
            fp_logits = self.fp(x if count == n else x[rerouted])
            if fp_logits.shape != (count, logits.shape[1]):
                raise MitigateError(
                    f"the FP model returned shape {list(fp_logits.shape)} for {count} inputs; "
                    f"the quantized model returns {logits.shape[1]} classes"
                )
            if count == n:
                logits = fp_logits.float()
            else:
                if logits is q_logits:  # never write into the quantized model's own tensor
                    logits = logits.clone()
                logits[rerouted] = fp_logits.to(logits.dtype)
        self.seen += n
        self.rerouted += count
        self.input_shape = tuple(x.shape[1:])
        self.input_dtype = x.dtype
        return logits, rerouted

    def forward(self, x: Tensor) -> Tensor:
        """Guarded logits: float32 ``[N, C]`` for inputs ``[N, ...]`` (see :meth:`route`)."""
        return self.route(x)[0]

    def rerouted_mask(self, x: Tensor) -> Tensor:
        """bool ``[N]``: which inputs of ``x`` the guard would send to the FP model.

        Runs only the quantized model and leaves the counters alone.
        """
        with torch.no_grad():
            return _margin(self.quantized(x).float()) < self._threshold

    def train(self, mode: bool = True) -> GuardedModel:
        # Deployment only: a guard has no training mode; keep both models in eval.
        return super().train(False)

    def extra_repr(self) -> str:
        return f"threshold={self._threshold!r}"


# ---- choosing a threshold on an unlabelled pool --------------------------------------------


@dataclass(frozen=True)
class GuardChoice:
    """A threshold and what it does on a set of inputs.

    Attributes:
        threshold: reroute an input iff its quantized margin is below this.
        rerouted: share of the inputs rerouted, in ``[0, 1]``.
        caught: share of the disagreements rerouted, in ``[0, 1]``; ``1.0`` when there are
            none (nothing to catch).
        pool_size: number of inputs.
        pool_disagreements: number of disagreements among them.
    """

    threshold: float
    rerouted: float
    caught: float
    pool_size: int
    pool_disagreements: int


def _check_pool(margins: object, disagree: object) -> tuple[Tensor, Tensor]:
    if not isinstance(margins, Tensor) or margins.ndim != 1 or not margins.is_floating_point():
        got = (
            f"{margins.dtype} {list(margins.shape)}"
            if isinstance(margins, Tensor)
            else type(margins).__name__
        )
        raise MitigateError(f"margins must be a float tensor of shape [N], got {got}")
    if margins.shape[0] == 0:
        raise MitigateError("margins is empty; a threshold needs at least one pool input")
    if bool(torch.isnan(margins).any()):
        raise MitigateError("margins contain NaN; compute them with guard_margin")
    if bool(((margins < 0) | (margins > 1)).any()):
        raise MitigateError(
            "margins must lie in [0, 1] (p1 - p2 of the quantized model, from guard_margin), "
            f"got values in [{float(margins.min()):.4g}, {float(margins.max()):.4g}]"
        )
    if (
        not isinstance(disagree, Tensor)
        or disagree.dtype != torch.bool
        or tuple(disagree.shape) != tuple(margins.shape)
    ):
        got = (
            f"{disagree.dtype} {list(disagree.shape)}"
            if isinstance(disagree, Tensor)
            else type(disagree).__name__
        )
        raise MitigateError(
            f"disagree must be a bool tensor of shape [{margins.shape[0]}] like margins, got {got}"
        )
    return margins.detach().to("cpu", torch.float64), disagree.detach().cpu()


def _share(value: object, name: str, *, open_at_zero: bool) -> Fraction:
    low = "(0" if open_at_zero else "[0"
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(float(value))
        or float(value) > 1
        or float(value) < 0
        or (open_at_zero and float(value) == 0)
    ):
        raise MitigateError(f"{name} must be a share in {low}, 1], got {value!r}")
    return Fraction(float(value))


def _levels(margins: Tensor, disagree: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # Distinct margins u (ascending) and, for j = 0..len(u), how many inputs and how many
    # disagreements a threshold in (u[j-1], u[j]] reroutes: every threshold that routes the
    # pool the same way lies in one such interval, so ties are never split.
    values, inverse, counts = torch.unique(margins, return_inverse=True, return_counts=True)
    zero = torch.zeros(1, dtype=torch.int64)
    inputs = torch.cat([zero, counts.cumsum(0)])
    caught = torch.bincount(inverse[disagree], minlength=values.shape[0])
    return values, inputs, torch.cat([zero, caught.cumsum(0)])


def _representative(values: Tensor, j: int) -> float:
    # One threshold that reroutes exactly the inputs with the j smallest distinct margins:
    # 0 for none, inf for all, else the midpoint of the gap (robust to float noise on new
    # inputs), never equal to the lower value.
    if j == 0:
        return 0.0
    if j == values.shape[0]:
        return math.inf
    low, high = float(values[j - 1]), float(values[j])
    mid = low + (high - low) / 2
    return mid if low < mid <= high else high


def _outcome(margins: Tensor, disagree: Tensor, threshold: float) -> GuardChoice:
    rerouted = margins < threshold
    n, n_dis = margins.shape[0], int(disagree.sum())
    caught = int((rerouted & disagree).sum())
    return GuardChoice(
        threshold=threshold,
        rerouted=int(rerouted.sum()) / n,
        caught=caught / n_dis if n_dis else 1.0,
        pool_size=n,
        pool_disagreements=n_dis,
    )


def choose_threshold(
    margins: Tensor,
    disagree: Tensor,
    *,
    catch: float | None = None,
    rate: float | None = None,
) -> GuardChoice:
    """Pick the guard's threshold on an unlabelled pool.

    No labels are needed: a disagreement is the quantized model's top-1 differing from the FP
    model's. Give exactly one target:

    - ``catch``: the smallest threshold that reroutes at least that share of the pool's
      disagreements. With no disagreements in the pool there is nothing to catch and the
      threshold is ``0`` (the guard is off).
    - ``rate``: the largest threshold that reroutes at most that share of all pool inputs.

    Every threshold between two neighbouring distinct pool margins routes the pool the same
    way; the one returned is ``0`` when it reroutes nothing, ``math.inf`` when it reroutes
    every pool input, and otherwise the midpoint between the largest rerouted margin and the
    smallest kept one, so tied margins are never split and a new input whose margin differs
    from a pool input's by rounding noise is routed the same way.

    Args:
        margins: ``[N]`` float quantized margins of the pool inputs, from
            :func:`guard_margin`.
        disagree: ``[N]`` bool, True where the quantized top-1 differs from the FP top-1.
        catch: target share of the pool's disagreements to reroute, in ``(0, 1]``.
        rate: target share of all pool inputs to reroute, in ``[0, 1]``.

    Returns:
        A :class:`GuardChoice`: the threshold and the shares it reroutes and catches on the
        pool.

    Raises:
        MitigateError: both or neither target, a target out of range, empty or NaN margins,
            margins outside ``[0, 1]``, or ``disagree`` not bool of the same shape.

    Example:
        >>> margins = torch.tensor([0.05, 0.10, 0.10, 0.40, 0.90], dtype=torch.float64)
        >>> disagree = torch.tensor([True, False, True, False, False])
        >>> choose_threshold(margins, disagree, catch=1.0)
        GuardChoice(threshold=0.25, rerouted=0.6, caught=1.0, pool_size=5, pool_disagreements=2)
        >>> choose_threshold(margins, disagree, rate=0.5).threshold  # 0.10 is tied: not split
        0.07500000000000001
    """
    if (catch is None) == (rate is None):
        raise MitigateError(
            "give exactly one of catch= (share of disagreements to reroute) or rate= "
            "(share of inputs to reroute)"
        )
    margins, disagree = _check_pool(margins, disagree)
    values, inputs, caught = _levels(margins, disagree)
    if catch is not None:
        need = math.ceil(_share(catch, "catch", open_at_zero=True) * int(caught[-1]))
        j = int(torch.searchsorted(caught, need, side="left"))
    else:
        allowed = math.floor(_share(rate, "rate", open_at_zero=False) * margins.shape[0])
        j = int(torch.searchsorted(inputs, allowed, side="right")) - 1
    return _outcome(margins, disagree, _representative(values, j))


def threshold_outcome(margins: Tensor, disagree: Tensor, threshold: float) -> GuardChoice:
    """What ``threshold`` does on a set: the shares of inputs rerouted and disagreements caught.

    Use it on held-out data (a test split, a shifted set) after :func:`choose_threshold`
    picked the threshold on the pool.

    Args:
        margins: ``[N]`` float quantized margins, from :func:`guard_margin`.
        disagree: ``[N]`` bool, True where the quantized top-1 differs from the FP top-1.
        threshold: a real number ``>= 0`` (``math.inf`` allowed).

    Returns:
        A :class:`GuardChoice` for this threshold.

    Raises:
        MitigateError: as :func:`choose_threshold`, or a bad threshold.

    Example:
        >>> margins = torch.tensor([0.05, 0.10, 0.40], dtype=torch.float64)
        >>> threshold_outcome(margins, torch.tensor([True, True, False]), 0.1).caught
        0.5
    """
    margins, disagree = _check_pool(margins, disagree)
    return _outcome(margins, disagree, _check_threshold(threshold))


# ---- saving and loading ---------------------------------------------------------------------


def save_guard(
    path: str | os.PathLike[str],
    guarded: GuardedModel,
    *,
    input_shape: tuple[int, ...] | list[int] | None = None,
) -> None:
    """Write a guard to ``path`` atomically, as tensors and plain values only.

    File layout (one ``torch.save``; loads with ``torch.load(path, weights_only=True)``)::

        {"format": "mitigate-guard", "version": 1, "threshold": float,
         "scheme": str (scheme_label), "input_shape": [int, ...] (one input, no batch),
         "input_dtype": str, "fp_state_dict": {name: tensor},
         "quantized_state_dict": {name: tensor | packed-parameter tuple | dtype},
         "fp_metadata": {module: {"version": int}}, "quantized_metadata": {...}}

    The quantized state dict is the backend's own: for static int8 (torch.ao FX) it holds
    every activation scale and zero point, the int8 weights and their per-channel scales, so
    :func:`load_guard` restores the calibration exactly without the calibration data. The
    metadata are the state dicts' per-module format versions (``state_dict()._metadata``),
    kept as plain dicts: quantized ``Linear`` reads a version-3 state differently from a
    version-1 one and fails without them.

    Args:
        path: the file to write; missing parent folders are created.
        guarded: a guard whose quantized model came from
            :func:`mitigate.quantization.quantize`.
        input_shape: shape of one input without the batch dimension; defaults to the shape
            the guard saw in its latest call.

    Raises:
        MitigateError: not a :class:`GuardedModel`, a quantized model that is not a
            ``QuantizedModel``, no known input shape, or a path that cannot be written.
    """
    if not isinstance(guarded, GuardedModel):
        raise MitigateError(f"save_guard needs a GuardedModel, got {type(guarded).__name__}")
    q = guarded.quantized
    if not isinstance(q, QuantizedModel):
        raise MitigateError(
            "save_guard needs a quantized model from mitigate.quantization.quantize, got "
            f"{type(q).__name__}"
        )
    shape = guarded.input_shape if input_shape is None else input_shape
    if shape is None:
        raise MitigateError(
            "save_guard needs the shape of one input: call the guard once or pass input_shape="
        )
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise MitigateError(f"input_shape must be positive integers, got {shape!r}")
    dtype = guarded.input_dtype or torch.float32
    dtype_name = next((k for k, v in _INPUT_DTYPES.items() if v == dtype), "float32")
    payload: dict[str, Any] = {
        "format": GUARD_FORMAT,
        "version": GUARD_VERSION,
        "threshold": guarded.threshold,
        "scheme": scheme_label(q.scheme),
        "input_shape": list(shape),
        "input_dtype": dtype_name,
    }
    for what, model in (("fp", guarded.fp), ("quantized", q)):
        state = model.state_dict()
        payload[f"{what}_state_dict"] = dict(state)
        payload[f"{what}_metadata"] = {
            prefix: dict(meta) for prefix, meta in getattr(state, "_metadata", {}).items()
        }
    write_torch_file(Path(path), payload, what="guard")


def load_guard(path: str | os.PathLike[str], fp_model: nn.Module) -> GuardedModel:
    """Rebuild a guard saved by :func:`save_guard`.

    ``fp_model`` must have the saved FP model's architecture; its weights are overwritten by
    the saved ones (in place) and it becomes the guard's FP model. The quantized model is
    rebuilt with ``quantize(fp_model, scheme, calibration=zeros)`` for its structure, then
    gets the saved quantized state (scales, zero points, packed weights), under the scheme's
    quantized engine, so its outputs equal the saved guard's bit for bit on the same machine.

    Args:
        path: a file written by :func:`save_guard`.
        fp_model: a model instance of the saved FP architecture.

    Returns:
        The :class:`GuardedModel`, in eval mode, with fresh counters.

    Raises:
        MitigateError: a missing or unreadable file, a file that is not a guard (wrong tag,
            version, keys or types), or weights that do not fit ``fp_model``.
    """
    path = Path(path)
    if not isinstance(fp_model, nn.Module):
        raise MitigateError(f"fp_model must be a torch.nn.Module, got {type(fp_model).__name__}")
    if not path.is_file():
        raise MitigateError(f"no guard file at {path}")
    payload = _unpack(path, read_torch_file(path, what="guard"))
    try:
        scheme = parse_scheme(payload["scheme"])
    except MitigateError as err:
        raise MitigateError(f"{path}: bad quantization scheme in guard file ({err})") from None
    _load_into(path, "FP", fp_model, payload, "fp")
    example = torch.zeros(1, *payload["input_shape"], dtype=_INPUT_DTYPES[payload["input_dtype"]])
    try:
        q = quantize(fp_model, scheme, calibration=example)
    except Exception as err:  # the file's shape or scheme does not fit this model
        raise MitigateError(
            f"{path}: cannot rebuild its {payload['scheme']} model from fp_model "
            f"({type(err).__name__}: {first_line(err)})"
        ) from None
    _load_into(path, "quantized", q, payload, "quantized")
    guard = GuardedModel(q, fp_model, payload["threshold"])
    guard.input_shape = tuple(payload["input_shape"])
    guard.input_dtype = _INPUT_DTYPES[payload["input_dtype"]]
    return guard


def _load_into(path: Path, what: str, model: nn.Module, payload: dict[str, Any], key: str) -> None:
    state = OrderedDict(payload[f"{key}_state_dict"])
    state._metadata = OrderedDict(payload[f"{key}_metadata"])  # type: ignore[attr-defined]
    try:
        model.load_state_dict(state)  # a QuantizedModel loads under its own engine
    except Exception as err:
        raise MitigateError(
            f"{path}: its {what} weights do not fit the model passed in "
            f"({type(err).__name__}: {first_line(err)})"
        ) from None


def _unpack(path: Path, payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("format") != GUARD_FORMAT:
        raise MitigateError(f"{path} is not a mitigate guard (no '{GUARD_FORMAT}' tag)")
    if payload.get("version") != GUARD_VERSION:
        raise MitigateError(
            f"{path} is guard version {payload.get('version')!r}; this mitigate reads version "
            f"{GUARD_VERSION}"
        )
    threshold = payload.get("threshold")
    shape = payload.get("input_shape")
    problems = {
        "threshold (a number >= 0)": isinstance(threshold, (int, float))
        and not isinstance(threshold, bool)
        and threshold >= 0,  # False for NaN
        "scheme (a scheme label)": isinstance(payload.get("scheme"), str),
        "input_shape (positive integers)": isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape),
        "input_dtype (one of " + ", ".join(_INPUT_DTYPES) + ")": payload.get("input_dtype")
        in _INPUT_DTYPES,
        "fp_state_dict (a state dict)": _is_state_dict(payload.get("fp_state_dict")),
        "quantized_state_dict (a state dict)": _is_state_dict(payload.get("quantized_state_dict")),
        "fp_metadata (module versions)": _is_metadata(payload.get("fp_metadata")),
        "quantized_metadata (module versions)": _is_metadata(payload.get("quantized_metadata")),
    }
    bad = [key for key, ok in problems.items() if not ok]
    if bad:
        raise MitigateError(f"{path} is not a valid mitigate guard: bad or missing {bad[0]}")
    return payload


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _is_metadata(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, dict) for k, v in value.items()
    )
