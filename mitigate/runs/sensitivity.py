"""``mitigate sensitivity``: which layers of the quantized model cause its disagreements,
counted on the pool inputs a selector picks (no labels needed)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from mitigate.config import Config
from mitigate.data.dataset import Data
from mitigate.errors import MitigateError
from mitigate.quantization.schemes import Int8Static, OrtInt8
from mitigate.runs.objects import accepts_objects
from mitigate.runs.result import RunResult, run_header

__all__ = ["PROBE_SIZE", "SensitivityResult", "sensitivity"]

# Why not a few hundred: the top few hundred margin-selected inputs are near-ties (FP logit
# gaps below 0.05 on digits) that flip under *any* perturbation, so their count hardly
# depends on which layer is in float: on the default digits model, probes of 100 and 300
# ranked the layers at random, while 1,000 found the layer the full 40k pool finds and 2,000
# to 3,000 reproduced the full pool's ranking and greedy fallback choice (seeds 0 and 1).
PROBE_SIZE = 2000


@dataclass(frozen=True)
class SensitivityResult(RunResult):
    """The report: the probe, the all-int8 and every-module-in-float counts, ranked layers."""


@accepts_objects
def sensitivity(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    scheme: str = "int8",
    probe_size: int = PROBE_SIZE,
    selector: str = "margin",
    progress: bool = False,
) -> SensitivityResult:
    """Rank the base model's layers by the disagreements they cause on a selected probe set.

    Args:
        config: the run configuration (data, model, shifts, calibration, seed).
        checkpoint: a model checkpoint; default the cached (or freshly trained) base model.
        scheme: a static int8 scheme name such as ``"int8:engine=qnnpack"``.
        probe_size: how many pool inputs the selector picks (``>= 1``); see
            :data:`PROBE_SIZE` for why the default is not a few hundred.
        selector: a score from :func:`mitigate.selectors.score_names`.
        progress: show training progress if the base model has to be trained.

    Returns:
        The report: model, scheme, probe (selector, size, groups), disagreements of the
        all-int8 model and with every module in float, and ``layers`` ranked (see
        :class:`~mitigate.mitigation.LayerSensitivity`), plus ``wall_time_s``.

    Raises:
        MitigateError: a scheme that is not static int8, an unknown selector, a float layer
            that is not a Conv/Linear layer of the model, or a probe size below 1 — all
            checked before any training.
    """
    from mitigate.mitigation.sensitivity import (
        disagreements,
        layer_sensitivity,
        unattributed_disagreements,
    )
    from mitigate.quantization import parse_scheme, quantize, scheme_label
    from mitigate.runs.session import Session
    from mitigate.selectors import check_selector

    started = time.perf_counter()
    parsed = parse_scheme(scheme)
    if not isinstance(parsed, (Int8Static, OrtInt8)):
        raise MitigateError(
            f"sensitivity needs a static int8 scheme such as int8, int8:engine=qnnpack or "
            f"ort-int8, "
            f"got {scheme!r}"
        )
    score = check_selector(selector)
    if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 1:
        raise MitigateError(f"probe size must be an int >= 1, got {probe_size!r}")

    session = Session.open(
        config,
        checkpoint=checkpoint,
        check=lambda blank, data: _check_layers(blank, data, parsed, config.model.arch),
        progress=progress,
    )
    model, calibration = session.model, session.calibration
    q_model = quantize(model, parsed, calibration) if score.needs_quantized else None
    probe = session.select(score, min(probe_size, session.pool_size), q_model=q_model)
    rows = layer_sensitivity(model, parsed, calibration, probe.x)
    all_int8 = (
        rows[0].disagreements_without + rows[0].removed_by_float  # type: ignore[operator]
        if rows
        else disagreements(model, parsed, calibration, probe.x)
    )
    floor = unattributed_disagreements(model, parsed, calibration, probe.x)
    groups = Counter(name for name, _ in probe.meta)
    report = {
        **run_header("sensitivity", session.config, session.model_info),
        "scheme": scheme_label(parsed),
        "probe": {
            "selector": selector,
            "size": len(probe),
            "pool_size": session.pool_size,
            "groups": dict(sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))),
        },
        "disagreements": {"all_int8": all_int8, "every_module_in_float": floor},
        "layers": [{"rank": i, **row.as_dict()} for i, row in enumerate(rows, start=1)],
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return SensitivityResult(report)


def _check_layers(blank: torch.nn.Module, data: Data, scheme: Int8Static, arch: str) -> None:
    """Static int8 must apply to the architecture, and layers kept in float must be its
    Conv/Linear layers (a fused-away BatchNorm would be accepted by the backend and silently
    change nothing)."""
    from mitigate.mitigation._measure import check_float_layers, weighted_layers
    from mitigate.quantization import check_supported

    try:
        check_supported(blank, scheme)  # static int8 refuses LSTM / GRU models
    except MitigateError as err:
        raise MitigateError(
            f"sensitivity ranks layers under static int8, which does not apply to "
            f"{arch!r} ({err}); measure its schemes with mitigate evaluate"
        ) from None
    example = torch.zeros(1, *data.input_shape)
    check_float_layers(scheme.float_layers, weighted_layers(blank, example))
