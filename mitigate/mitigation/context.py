"""What a mitigation step reads (:class:`Context`), what it returns (:class:`State`), the
settings it takes from the run, and the checks steps share."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from mitigate.data.base import LabelledData
from mitigate.data.evalset import Batch
from mitigate.errors import MitigateError
from mitigate.quantization.schemes import Scheme
from mitigate.selectors.pool import Selected
from mitigate.trainers.settings import TrainConfig

__all__ = [
    "Context",
    "State",
    "StrategySettings",
    "require_layered",
    "require_probe",
    "require_qat",
    "require_static",
]


@dataclass(frozen=True)
class StrategySettings:
    """What the steps read from a run's configuration.

    Attributes:
        train: the training settings the training steps start from (batch size, weight
            decay, the methods' options, ``selected_weight``).
        epochs: fine-tuning epochs.
        lr: fine-tuning learning rate.
        max_float_params: at most this share of the parameters in float layers (0 = no
            limit); ``fallback`` searches for the best set within it.
        max_float_macs: at most this share of the MACs in float layers (0 = no limit).
        max_float_layers: at most this many layers in float (0 = no limit).
        anchor_epochs: epochs of ``qat-anchor`` (it trains only quantizers: more epochs at
            a larger ``anchor_lr`` than fine-tuning).
        anchor_lr: its peak learning rate.
        guard_catch: ``guard`` picks the threshold that reroutes this share of the pool's
            disagreements ...
        guard_rate: ... or, when above 0, the one that reroutes at most this share of the
            pool's inputs.
    """

    train: TrainConfig
    epochs: int = 5
    lr: float = 5e-4
    max_float_params: float = 0.1
    max_float_macs: float = 0.1
    max_float_layers: int = 0
    anchor_epochs: int = 15
    anchor_lr: float = 1e-2
    guard_catch: float = 0.95
    guard_rate: float = 0.0


@dataclass(frozen=True)
class Context:
    """What every step may read; nothing here is modified.

    Attributes:
        settings: what the steps read from the run's configuration.
        original: f0, the FP model the user validated; the reference of every count.
        train: the labelled training split (a ``LabelledData``: images or texts).
        selected: the selected pool inputs (the budget).
        probe: unlabelled pool inputs, picked by the same selector, that the label-free
            steps score candidates on or fit to (``retrain.probe_size`` of them).
        seed: seed of this run's training.
        progress: show training progress.
        pool: the whole unlabelled pool, batch by batch (``guard`` picks its threshold on
            it); ``None`` where no pool is at hand.
    """

    settings: StrategySettings
    original: nn.Module
    train: LabelledData
    selected: Selected
    probe: Tensor
    seed: int
    progress: bool = False
    pool: Callable[[], Iterable[Batch]] | None = None


@dataclass(frozen=True)
class State:
    """A model pair and how the quantized one was made.

    Attributes:
        fp_model: f (f0 until a step trains).
        quantized: q.
        scheme: the scheme q was made with (settings and fallback change it).
        calibration: the PTQ calibration inputs (recalibrate adds to them).
        notes: what each step chose (layers, winning setting, epochs...), by step name.
        used_labels: some step read the selected inputs' true labels.
    """

    fp_model: nn.Module
    quantized: nn.Module
    scheme: Scheme
    calibration: Tensor
    notes: dict[str, Any] = field(default_factory=dict)
    used_labels: bool = False


def require_static(scheme: Scheme, strategy: str) -> None:
    from mitigate.quantization import Int8Static, scheme_label

    if not isinstance(scheme, Int8Static):
        raise MitigateError(
            f"strategy {strategy!r} needs a static int8 scheme (int8[:options]); "
            f"got {scheme_label(scheme)!r}"
        )


def require_layered(scheme: Scheme, strategy: str) -> None:
    """settings and fallback also take ORT's static int8 (``exclude`` keeps layers in float)."""
    from mitigate.mitigation._measure import LAYERED
    from mitigate.quantization import scheme_label

    if not isinstance(scheme, LAYERED):
        raise MitigateError(
            f"strategy {strategy!r} needs a static int8 scheme (int8[:options] or "
            f"ort-int8[:options]); got {scheme_label(scheme)!r}"
        )


def require_qat(scheme: Scheme, strategy: str) -> None:
    """qat and distill train with fake quantization: static int8 (torch.ao), or the weight
    rounding of int8-dynamic / int4-weight (the only kind LSTM and GRU models can get)."""
    from mitigate.quantization import scheme_label
    from mitigate.trainers.qat import qat_scheme

    try:
        qat_scheme(scheme)
    except MitigateError:
        raise MitigateError(
            f"strategy {strategy!r} trains with fake quantization for int8[:options], "
            f"int8-dynamic or int4-weight; got {scheme_label(scheme)!r}"
        ) from None


def require_probe(ctx: Context, strategy: str) -> None:
    if not len(ctx.probe):
        raise MitigateError(
            f"strategy {strategy!r} scores candidates on selected pool inputs; "
            "retrain.probe_size is 0"
        )
