"""The steps that change only how f0 is quantized — f1 is f0, churn 0 — from re-quantizing it
unchanged to keeping layers in float, re-rounding its integers, clipping its activation
ranges, and guarding it at run time."""

from __future__ import annotations

import dataclasses

import torch

from mitigate.errors import MitigateError
from mitigate.mitigation.context import (
    Context,
    State,
    require_layered,
    require_probe,
    require_static,
)

__all__ = [
    "adaround",
    "bias_correction",
    "fallback",
    "guard",
    "none",
    "ranges",
    "recalibrate",
    "settings",
]


def none(ctx: Context, state: State) -> State:
    from mitigate.quantization import quantize

    return dataclasses.replace(
        state, quantized=quantize(state.fp_model, state.scheme, state.calibration)
    )


def recalibrate(ctx: Context, state: State) -> State:
    from mitigate.mitigation._measure import LAYERED
    from mitigate.quantization import quantize

    calibration = torch.cat([state.calibration, ctx.selected.x])
    quantized = quantize(state.fp_model, state.scheme, calibration)
    notes = {"calibration_inputs": len(calibration), "added": len(ctx.selected)}
    if not isinstance(state.scheme, LAYERED):  # say it, rather than report a silent no-op
        notes["scheme_uses_calibration"] = False
    return dataclasses.replace(state, quantized=quantized, calibration=calibration, notes=notes)


def settings(ctx: Context, state: State) -> State:
    from mitigate.mitigation.settings_search import search_settings
    from mitigate.quantization import quantize, scheme_label

    require_layered(state.scheme, "settings")
    require_probe(ctx, "settings")
    result = search_settings(state.fp_model, state.scheme, state.calibration, ctx.probe)
    notes = {"winner": scheme_label(result.best), "probe": len(ctx.probe), "table": result.table}
    quantized = quantize(state.fp_model, result.best, state.calibration)
    return dataclasses.replace(state, quantized=quantized, scheme=result.best, notes=notes)


def fallback(ctx: Context, state: State) -> State:
    """The set of layers to keep in float that leaves the fewest probe disagreements within
    the budget of parameters, MACs and layers (searched, not greedy)."""
    from mitigate.mitigation.fallback import search_fallback
    from mitigate.quantization import quantize

    require_layered(state.scheme, "fallback")
    require_probe(ctx, "fallback")
    r = ctx.settings
    result = search_fallback(
        state.fp_model,
        state.scheme,  # type: ignore[arg-type]  # checked static above
        state.calibration,
        ctx.probe,
        max_float_params=r.max_float_params or None,
        max_float_macs=r.max_float_macs or None,
        max_float_layers=r.max_float_layers or None,
    )
    notes = {"probe": len(ctx.probe), **result.as_dict()}
    quantized = quantize(state.fp_model, result.scheme, state.calibration)
    return dataclasses.replace(state, quantized=quantized, scheme=result.scheme, notes=notes)


def adaround(ctx: Context, state: State) -> State:
    """Re-round q's integers layer by layer to reproduce f0 on the calibration and probe
    inputs (no labels); same scales, size and kernels."""
    from mitigate.mitigation.adaround import adaround as fit

    require_static(state.scheme, "adaround")
    inputs = torch.cat([state.calibration, ctx.probe])
    result = fit(state.fp_model, state.quantized, inputs, seed=ctx.seed)
    notes = {"inputs": len(inputs), **result.as_dict()}
    return dataclasses.replace(state, quantized=result.quantized, notes=notes)


def bias_correction(ctx: Context, state: State) -> State:
    """Subtract from each layer's bias the mean shift quantization adds to its output, measured
    against f0 on the calibration and probe inputs."""
    from mitigate.mitigation.bias_correction import bias_correction as correct

    require_static(state.scheme, "bias-correction")
    inputs = torch.cat([state.calibration, ctx.probe])
    result = correct(state.fp_model, state.quantized, inputs)
    notes = {"inputs": len(inputs), **result.as_dict()}
    return dataclasses.replace(state, quantized=result.quantized, notes=notes)


def ranges(ctx: Context, state: State) -> State:
    """Clip (or widen) each activation range of q, in forward order, to the ratio of its
    calibrated range that leaves the fewest probe disagreements; weights and size unchanged."""
    from mitigate.mitigation.ranges import search_ranges

    require_static(state.scheme, "ranges")
    require_probe(ctx, "ranges")
    result = search_ranges(
        state.fp_model, state.quantized, ctx.probe, calibration=state.calibration
    )
    notes = {"probe": len(ctx.probe), "moved": list(result.changed), **result.as_dict()}
    return dataclasses.replace(state, quantized=result.quantized, notes=notes)


def guard(ctx: Context, state: State) -> State:
    """Answer with q, and re-run f on the inputs whose quantized margin is below a threshold
    chosen on the unlabelled pool (a share of its disagreements to catch, or of its inputs to
    reroute)."""
    from mitigate.mitigation.guard import GuardedModel, choose_threshold, guard_margin
    from mitigate.scanning import forward_batches

    if ctx.pool is None:
        raise MitigateError("strategy 'guard' picks its threshold on the pool; no pool given")
    margins, disagree = [], []
    for _, fp, outputs in forward_batches(state.fp_model, {"q": state.quantized}, ctx.pool()):
        margins.append(guard_margin(outputs["q"]))
        disagree.append(outputs["q"].argmax(1) != fp.argmax(1))
    r = ctx.settings
    target = {"rate": r.guard_rate} if r.guard_rate > 0 else {"catch": r.guard_catch}
    choice = choose_threshold(torch.cat(margins), torch.cat(disagree), **target)
    notes = {"target": target, **dataclasses.asdict(choice)}
    guarded = GuardedModel(state.quantized, state.fp_model, choice.threshold)
    return dataclasses.replace(state, quantized=guarded, notes=notes)
