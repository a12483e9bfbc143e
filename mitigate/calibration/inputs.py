"""Build the calibration set a :class:`~mitigate.calibration.settings.Setting` describes.

Sources and samplings ``[quantization]`` already offers (clean / shifted / mixed, random /
class-balanced) go through :func:`mitigate.pipeline.calibration_inputs`, so the sweep's
baseline is exactly the set ``evaluate`` calibrates on. The rest is built here:

- ``selector-ranked`` sampling: every calibration candidate (the calibration split, then the
  training images; shifted as the source says) scored by the FP model with
  ``[calibration] selector``; the highest first.
- ``selected`` source: the pool inputs (clean + every family not held out) the selector ranks
  highest, through :func:`mitigate.mitigation.probe.selected_pool_inputs`.
- ``augment``: that many shifted copies of each calibration input (a random seen family at a
  random severity 1-5 per copy), appended after the originals.

Held-out shift families never enter a calibration set.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.calibration.settings import Setting, check_setting
from mitigate.config import Config
from mitigate.data.evalset import resolve_families, split_seed
from mitigate.errors import MitigateError

__all__ = ["available_inputs", "calibration_families", "calibration_set", "candidates_hold"]

_PIPELINE_SOURCES = ("clean", "shifted", "mixed")
_PIPELINE_SAMPLINGS = ("random", "class-balanced")


def calibration_families(config: Config, data: Any) -> list[str]:
    """The shift families calibration may use: ``[calibration] families`` (``["all"]`` = every
    measured family not held out). A held-out family is an error: it must stay unseen."""
    wanted = config.calibration.families
    if list(wanted) == ["all"]:
        return list(data.seen_families)
    channels = data.input_shape[0]
    families = resolve_families(wanted, channels)
    held = [f for f in families if f in data.held_out]
    if held:
        raise MitigateError(
            f"calibration families {', '.join(held)} are held out ([shifts] held_out) and must "
            f"stay unseen; choose from: {', '.join(data.seen_families)}"
        )
    return families


def available_inputs(config: Config, data: Any, source: str) -> int:
    """How many distinct inputs a source can give: the calibration and training splits
    (:func:`mitigate.pipeline.calibration_candidates`), or the whole pool."""
    from mitigate.pipeline import calibration_candidate_count, pool_groups

    if source == "selected":
        return len(data.splits.pool) * len(pool_groups(config, data))
    return calibration_candidate_count(data)


def candidates_hold(source: str) -> str:
    """Where a source's inputs come from, with its verb, for messages and report notes."""
    return "the pool holds" if source == "selected" else "the calibration and training splits hold"


def calibration_set(
    config: Config,
    data: Any,
    setting: Setting,
    *,
    model: nn.Module | None = None,
    memo: dict[str, Any] | None = None,
) -> Tensor:
    """The calibration inputs of ``setting``: ``float [setting.inputs, C, H, W]``.

    Args:
        config: seed, shifts and ``[calibration]`` (selector, families).
        data: :class:`mitigate.pipeline.Data` of ``config.seed``.
        setting: what to build.
        model: the FP model; needed when ``setting.needs_model``.
        memo: a dict kept across calls for one seed and model, so the pool is scanned and the
            candidates scored once (the pool selection is cached for the largest size asked,
            or ``memo["selected_budget"]`` if that is larger).

    Raises:
        MitigateError: a size larger than the source allows, a held-out family, or no model
            for a setting that ranks inputs.
    """
    setting = check_setting(setting)
    most = available_inputs(config, data, setting.source)
    if setting.size > most:
        hold = candidates_hold(setting.source)
        raise MitigateError(
            f"calibration size {setting.size} is more than {hold} ({most}) for source "
            f"{setting.source!r}; raise [data] sizes or ask for fewer"
        )
    if setting.needs_model and model is None:
        raise MitigateError(f"calibration setting {setting.name} ranks inputs: pass the FP model")
    memo = {} if memo is None else memo
    families = calibration_families(config, data)
    if setting.source == "selected":
        x = _selected(config, data, model, setting.size, memo)  # type: ignore[arg-type]
    elif setting.sampling == "selector-ranked":
        x = _ranked(config, data, model, setting, families, memo)  # type: ignore[arg-type]
    else:
        x = _from_pipeline(config, data, setting, families)
    if setting.augment:
        x = torch.cat([x, _augmented(x, families, setting.augment, config.seed)])
    return x


def _from_pipeline(config: Config, data: Any, setting: Setting, families: list[str]) -> Tensor:
    from mitigate.pipeline import calibration_inputs

    if setting.source != "clean" and not families:
        raise MitigateError("shifted calibration needs at least one shift family not held out")
    quant = replace(
        config.quantization,
        calibration_size=setting.size,
        calibration_source=setting.source,
        calibration_sampling=setting.sampling,
    )
    plain = replace(config, quantization=quant, calibration=replace(config.calibration, preset=""))
    return calibration_inputs(plain, replace(data, families=list(families), held_out=()))


@torch.no_grad()
def _ranked(
    config: Config,
    data: Any,
    model: nn.Module,
    setting: Setting,
    families: list[str],
    memo: dict[str, Any],
) -> Tensor:
    """The calibration candidates under the source's shifts, highest selector score first."""
    from mitigate.pipeline import calibration_candidates
    from mitigate.selectors import compute_score

    key = f"ranked/{setting.source}"
    if key not in memo:
        split = calibration_candidates(data)
        index = torch.arange(len(split))
        x = split.float_batch(index)
        if setting.source != "clean":
            if not families:
                raise MitigateError(
                    "shifted calibration needs at least one shift family not held out"
                )
            rows = index if setting.source == "shifted" else index[index % 2 == 1]
            seed = split_seed(config.seed, "calibration-ranked")
            x[rows] = _shift_each(x[rows], rows, families, seed)
        was_training = model.training
        model.eval()
        try:
            logits = torch.cat([model(b) for b in x.split(config.eval.batch_size)])
        finally:
            model.train(was_training)
        score = compute_score(config.calibration.selector, logits, index=index, seed=config.seed)
        order = torch.sort(score, descending=True, stable=True).indices
        memo[key] = x[order]
    return memo[key][: setting.size].clone()


def _selected(config: Config, data: Any, model: nn.Module, size: int, memo: dict) -> Tensor:
    from mitigate.mitigation.probe import selected_pool_inputs

    cached = memo.get("selected")
    if cached is None or len(cached) < size:
        budget = max(size, memo.get("selected_budget", 0))
        x, _, _ = selected_pool_inputs(
            config, data, model, selector=config.calibration.selector, budget=budget
        )
        memo["selected"] = cached = x
    return cached[:size].clone()  # the selection is in pick order: a prefix is a smaller budget


def _augmented(x: Tensor, families: list[str], copies: int, seed: int) -> Tensor:
    """``copies`` shifted versions of every input, copy-major: ``[copies * N, C, H, W]``."""
    if not families:
        raise MitigateError("calibration augmentation needs a shift family not held out")
    n = len(x)
    rows = torch.arange(copies * n)
    return _shift_each(x.repeat(copies, 1, 1, 1), rows, families, split_seed(seed, "augment"))


def _shift_each(x: Tensor, index: Tensor, families: list[str], seed: int) -> Tensor:
    """Each row under a random (family, severity 1-5), drawn reproducibly from ``seed``."""
    from mitigate.data.shifts import apply_shift

    generator = torch.Generator().manual_seed(seed)
    choice = torch.randint(len(families), (len(x),), generator=generator)
    severity = torch.randint(1, 6, (len(x),), generator=generator)
    out = x.clone()
    for f, family in enumerate(families):
        for s in range(1, 6):
            rows = ((choice == f) & (severity == s)).nonzero().flatten()
            if len(rows):
                out[rows] = apply_shift(x[rows], family, s, seed=seed, index=index[rows])
    return out
