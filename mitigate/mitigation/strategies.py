"""Mitigation strategies: named recipes that turn (f0, q0, selected inputs) into (f1, q1).

Each strategy is one step ``(context, state) -> state``. A run starts from the original FP
model f0 and its quantized copy; steps can be chained (``settings+fallback``,
``settings+distill``): each starts from what the previous one produced, and the report
measures what every step contributed.

==============  ======  ======  ===========================================================
strategy        labels  trains  what it does
==============  ======  ======  ===========================================================
none            no      no      re-quantize unchanged: the noise floor (exactly zero change)
recalibrate     no      no      redo PTQ calibration with the selected inputs added
finetune        yes     yes     the study's recipe: fine-tune the FP model on training data
                                plus the selected inputs with their true labels, re-quantize
qat             yes     yes     fine-tune with fake quantization on the same data, convert
                                (int8-dynamic / int4-weight: weight rounding only, see
                                :mod:`mitigate.trainers.qat`; how LSTM/GRU models get QAT)
distill         no      yes     QAT fine-tuning that matches f0's outputs (temperature T) on
                                training inputs plus the selected ones; no labels
settings        no      no      search engine / activation range / per-channel / observer,
                                scored by disagreements on the selected inputs
fallback        no      no      keep the most sensitive layers in float, greedily, scored on
                                the selected inputs
==============  ======  ======  ===========================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from mitigate.data.base import LabelledData
from mitigate.errors import MitigateError, unknown_choice
from mitigate.quantization.schemes import Scheme
from mitigate.selectors.pool import Selected
from mitigate.trainers.settings import TrainConfig

__all__ = [
    "STRATEGIES",
    "Context",
    "Selected",
    "State",
    "Strategy",
    "StrategySettings",
    "parse_strategy",
    "strategy_names",
]


@dataclass(frozen=True)
class StrategySettings:
    """What the steps read from a run's configuration.

    Attributes:
        train: the training settings the training steps start from (batch size, weight
            decay, the methods' options, ``selected_weight``).
        epochs: fine-tuning epochs.
        lr: fine-tuning learning rate.
        max_float_layers: at most this many layers ``fallback`` keeps in float (0 = no limit).
        max_float_params: at most this share of the parameters in float (0 = no limit).
    """

    train: TrainConfig
    epochs: int = 5
    lr: float = 5e-4
    max_float_layers: int = 2
    max_float_params: float = 0.0


@dataclass(frozen=True)
class Context:
    """What every step may read; nothing here is modified.

    Attributes:
        settings: what the steps read from the run's configuration.
        original: f0, the FP model the user validated; the reference of every count.
        train: the labelled training split (a ``LabelledData``: images or texts).
        selected: the selected pool inputs (the budget).
        probe: unlabelled pool inputs, picked by the same selector, that ``settings`` and
            ``fallback`` score candidates on (``retrain.probe_size`` of them).
        seed: seed of this run's training.
        progress: show training progress.
    """

    settings: StrategySettings
    original: nn.Module
    train: LabelledData
    selected: Selected
    probe: Tensor
    seed: int
    progress: bool = False


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


@dataclass(frozen=True)
class Strategy:
    name: str
    step: Callable[[Context, State], State]
    uses_labels: bool
    trains: bool
    description: str
    uses_probe: bool = False


def _none(ctx: Context, state: State) -> State:
    from mitigate.quantization import quantize

    return dataclasses.replace(
        state, quantized=quantize(state.fp_model, state.scheme, state.calibration)
    )


def _recalibrate(ctx: Context, state: State) -> State:
    from mitigate.quantization import Int8Static, quantize

    calibration = torch.cat([state.calibration, ctx.selected.x])
    quantized = quantize(state.fp_model, state.scheme, calibration)
    notes = {"calibration_inputs": len(calibration), "added": len(ctx.selected)}
    if not isinstance(state.scheme, Int8Static):  # say it, rather than report a silent no-op
        notes["scheme_uses_calibration"] = False
    return dataclasses.replace(state, quantized=quantized, calibration=calibration, notes=notes)


def _labelled_loader(ctx: Context) -> DataLoader:
    """Training split plus the selected inputs with their true labels; the selected inputs
    carry ``train.selected_weight`` as per-sample loss weight."""
    train = ctx.train
    weight = ctx.settings.train.selected_weight
    x = torch.cat([train.batch(slice(None)), ctx.selected.x])
    y = torch.cat([train.labels, ctx.selected.y])
    w = torch.cat([torch.ones(len(train)), torch.full((len(ctx.selected),), float(weight))])
    return _loader(ctx, TensorDataset(x, y, w))


def _unlabelled_loader(ctx: Context) -> DataLoader:
    """Training inputs plus the selected ones, no labels: ``(x, -1, w)`` batches (the
    placeholder label is never read; the weight gives the selected inputs
    ``train.selected_weight``)."""
    train, k = ctx.train, len(ctx.selected)
    x = torch.cat([train.batch(slice(None)), ctx.selected.x])
    placeholder = torch.full((len(x),), -1, dtype=torch.long)
    weight = float(ctx.settings.train.selected_weight)
    w = torch.cat([torch.ones(len(train)), torch.full((k,), weight)])
    return _loader(ctx, TensorDataset(x, placeholder, w))


def _loader(ctx: Context, dataset: TensorDataset) -> DataLoader:
    generator = torch.Generator().manual_seed(ctx.seed)
    return DataLoader(
        dataset, batch_size=ctx.settings.train.batch_size, shuffle=True, generator=generator
    )


def _settings(ctx: Context, method: str, scheme: Scheme) -> TrainConfig:
    from mitigate.quantization import scheme_label

    r = ctx.settings
    return dataclasses.replace(
        r.train, method=method, epochs=r.epochs, lr=r.lr, qat_scheme=scheme_label(scheme)
    )


def _train(ctx: Context, state: State, method: str, labelled: bool, qat: bool) -> State:
    from mitigate.quantization import quantize
    from mitigate.trainers import train_classifier

    loader = _labelled_loader(ctx) if labelled else _unlabelled_loader(ctx)
    trained = train_classifier(
        state.fp_model,
        loader,
        settings=_settings(ctx, method, state.scheme),
        seed=ctx.seed,
        teacher=ctx.original if method == "distill" else None,
        qat=qat,
        progress=ctx.progress,
    )
    quantized = (
        trained.quantized() if qat else quantize(trained.model, state.scheme, state.calibration)
    )
    from mitigate.quantization import Int8Static

    notes = {
        "method": method,
        "qat": qat,
        # What the fake quantization simulated: a recurrent model gets weight rounding only.
        "fake_quant": (
            ("weights and activations" if isinstance(state.scheme, Int8Static) else "weights")
            if qat
            else None
        ),
        "epochs": ctx.settings.epochs,
        "lr": ctx.settings.lr,
        "training_inputs": len(ctx.train) + len(ctx.selected),
        "selected_inputs": len(ctx.selected),
    }
    return dataclasses.replace(
        state,
        fp_model=trained.model,
        quantized=quantized,
        notes=notes,
        # Labels of the *selected* inputs are what a user pays a labeller for.
        used_labels=state.used_labels or (labelled and len(ctx.selected) > 0),
    )


def _finetune(ctx: Context, state: State) -> State:
    return _train(ctx, state, "standard", labelled=True, qat=False)


def _qat(ctx: Context, state: State) -> State:
    _require_qat(state.scheme, "qat")
    return _train(ctx, state, "qat", labelled=True, qat=True)


def _distill(ctx: Context, state: State) -> State:
    _require_qat(state.scheme, "distill")
    return _train(ctx, state, "distill", labelled=False, qat=True)


def _search_settings(ctx: Context, state: State) -> State:
    from mitigate.mitigation.settings_search import search_settings
    from mitigate.quantization import quantize, scheme_label

    _require_static(state.scheme, "settings")
    _require_probe(ctx, "settings")
    result = search_settings(state.fp_model, state.scheme, state.calibration, ctx.probe)
    notes = {"winner": scheme_label(result.best), "probe": len(ctx.probe), "table": result.table}
    quantized = quantize(state.fp_model, result.best, state.calibration)
    return dataclasses.replace(state, quantized=quantized, scheme=result.best, notes=notes)


def _fallback(ctx: Context, state: State) -> State:
    from mitigate.mitigation.fallback import greedy_fallback
    from mitigate.quantization import quantize

    _require_static(state.scheme, "fallback")
    _require_probe(ctx, "fallback")
    r = ctx.settings
    result = greedy_fallback(
        state.fp_model,
        state.scheme,
        state.calibration,
        ctx.probe,
        max_float_layers=r.max_float_layers or None,
        max_float_params=r.max_float_params or None,
    )
    notes = {
        "float_layers": list(result.float_layers),
        "probe": len(ctx.probe),
        "steps": result.steps,
    }
    quantized = quantize(state.fp_model, result.scheme, state.calibration)
    return dataclasses.replace(state, quantized=quantized, scheme=result.scheme, notes=notes)


def _require_static(scheme: Scheme, strategy: str) -> None:
    from mitigate.quantization import Int8Static, scheme_label

    if not isinstance(scheme, Int8Static):
        raise MitigateError(
            f"strategy {strategy!r} needs a static int8 scheme (int8[:options]); "
            f"got {scheme_label(scheme)!r}"
        )


def _require_qat(scheme: Scheme, strategy: str) -> None:
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


def _require_probe(ctx: Context, strategy: str) -> None:
    if not len(ctx.probe):
        raise MitigateError(
            f"strategy {strategy!r} scores candidates on selected pool inputs; "
            "retrain.probe_size is 0"
        )


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("none", _none, False, False, "re-quantize unchanged: the noise floor"),
        Strategy("recalibrate", _recalibrate, False, False, "PTQ calibration + selected inputs"),
        Strategy("finetune", _finetune, True, True, "fine-tune on train + selected, labels"),
        Strategy("qat", _qat, True, True, "QAT fine-tune on train + selected, labels"),
        Strategy("distill", _distill, False, True, "distill-QAT from f0, no labels"),
        Strategy("settings", _search_settings, False, False, "search quantization settings", True),
        Strategy("fallback", _fallback, False, False, "sensitive layers kept in float", True),
    )
}


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def parse_strategy(text: str) -> list[Strategy]:
    """``"settings+fallback"`` (or ``settings,fallback``) -> the steps, validated."""
    names = [n.strip() for n in text.replace(",", "+").split("+") if n.strip()]
    if not names:
        raise MitigateError(f"no strategy given; valid choices: {', '.join(STRATEGIES)}")
    steps = []
    for name in names:
        if name not in STRATEGIES:
            raise unknown_choice("strategy", name, list(STRATEGIES))
        steps.append(STRATEGIES[name])
    if len(names) > 1 and "none" in names:
        raise MitigateError("strategy 'none' cannot be combined with others")
    return steps
