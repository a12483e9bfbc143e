"""``mitigate sensitivity`` as a function: base model -> probe set -> ranked layer table."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from mitigate.config import Config, config_to_dict
from mitigate.errors import MitigateError, unknown_choice

__all__ = ["PROBE_SIZE", "sensitivity_report", "write_sensitivity"]

# Why not a few hundred: the top few hundred margin-selected inputs are near-ties (FP logit
# gaps below 0.05 on digits) that flip under *any* perturbation, so their count hardly
# depends on which layer is in float: on the default digits model, probes of 100 and 300
# ranked the layers at random, while 1,000 found the layer the full 40k pool finds and 2,000
# to 3,000 reproduced the full pool's ranking and greedy fallback choice (seeds 0 and 1).
PROBE_SIZE = 2000


def sensitivity_report(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    scheme: str = "int8",
    probe_size: int = PROBE_SIZE,
    selector: str = "margin",
    progress: bool = False,
) -> dict[str, Any]:
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
    import torch

    from mitigate import __version__
    from mitigate.mitigation.probe import selected_pool_inputs
    from mitigate.mitigation.sensitivity import (
        disagreements,
        layer_sensitivity,
        unattributed_disagreements,
    )
    from mitigate.pipeline import base_model, calibration_inputs, load_data, pool_groups
    from mitigate.quantization import Int8Static, parse_scheme, quantize, scheme_label
    from mitigate.selectors import SCORES

    started = time.perf_counter()
    parsed = parse_scheme(scheme)
    if not isinstance(parsed, Int8Static):
        raise MitigateError(
            f"sensitivity needs a static int8 scheme such as int8 or int8:engine=qnnpack, "
            f"got {scheme!r}"
        )
    if selector not in SCORES:
        raise unknown_choice("selector", selector, list(SCORES))
    if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 1:
        raise MitigateError(f"probe size must be an int >= 1, got {probe_size!r}")

    data = load_data(config)
    _check_layers_before_training(config, data, parsed)
    model, model_info = base_model(config, data, checkpoint=checkpoint, progress=progress)
    calibration = calibration_inputs(config, data)
    q_model = quantize(model, parsed, calibration) if SCORES[selector].needs_quantized else None
    probe, _, meta = selected_pool_inputs(
        config, data, model, selector=selector, budget=probe_size, q_model=q_model
    )
    rows = layer_sensitivity(model, parsed, calibration, probe)
    all_int8 = (
        rows[0].disagreements_without + rows[0].removed_by_float  # type: ignore[operator]
        if rows
        else disagreements(model, parsed, calibration, probe)
    )
    floor = unattributed_disagreements(model, parsed, calibration, probe)
    groups = Counter(name for name, _ in meta)
    pool_size = len(data.splits.pool) * len(pool_groups(config, data))  # type: ignore[attr-defined]
    return {
        "command": "sensitivity",
        "mitigate_version": __version__,
        "torch_version": torch.__version__,
        "seed": config.seed,
        "model": {"arch": config.model.arch, **model_info},
        "config": config_to_dict(config),
        "scheme": scheme_label(parsed),
        "probe": {
            "selector": selector,
            "size": len(meta),
            "pool_size": pool_size,
            "groups": dict(sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))),
        },
        "disagreements": {"all_int8": all_int8, "every_module_in_float": floor},
        "layers": [{"rank": i, **row.as_dict()} for i, row in enumerate(rows, start=1)],
        "wall_time_s": round(time.perf_counter() - started, 2),
    }


def _check_layers_before_training(config: Config, data: Any, scheme: Any) -> None:
    """Fail on an unknown float layer now, not after minutes of training: an untrained model
    of the configured architecture has the same layer names."""
    import torch

    from mitigate.mitigation._measure import check_float_layers, weighted_layers
    from mitigate.models import build_model
    from mitigate.pipeline import model_inputs
    from mitigate.quantization import check_supported

    with torch.random.fork_rng():  # leave the global RNG as training expects it
        blank = build_model(config.model.arch, **model_inputs(config, data))
    try:
        check_supported(blank, scheme)  # static int8 refuses LSTM / GRU models
    except MitigateError as err:
        raise MitigateError(
            f"sensitivity ranks layers under static int8, which does not apply to "
            f"{config.model.arch!r} ({err}); measure its schemes with mitigate evaluate"
        ) from None
    check_float_layers(
        scheme.float_layers, weighted_layers(blank, torch.zeros(1, *data.input_shape))
    )


def write_sensitivity(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``report.json`` into ``out`` atomically; return the paths written."""
    from mitigate.reports.io import write_json

    path = Path(out) / "report.json"
    write_json(path, report)
    return [path]
