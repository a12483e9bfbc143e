"""Named calibrations for ``evaluate`` / ``retrain``: ``[calibration] preset`` (``--calibration``).

A preset is

- ``""`` (default): the ``[quantization] calibration_*`` options, as before;
- ``best``: the setting ``mitigate calibrate`` recommended for this data, model, training and
  shifts (saved under the model cache, keyed by their digest; the seed is not part of it);
- a path ending in ``.json``: a ``best.json`` written by ``mitigate calibrate``;
- a (partial) preset name such as ``clean-256-minmax-qnnpack``; missing factors come from
  the default calibration (see :mod:`mitigate.calibration.settings`).

:func:`apply_preset` resolves it once: the calibration data follow it (through
:func:`mitigate.pipeline.calibration_inputs`) and every static int8 scheme in
``[quantization] schemes`` and ``[retrain] scheme`` takes its observer, weight granularity and
engine (layers kept in float stay as they were).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from mitigate.calibration.settings import Setting, check_setting, parse_setting
from mitigate.config import Config, config_digest
from mitigate.errors import MitigateError

__all__ = [
    "apply_preset",
    "best_file",
    "best_record",
    "preset_inputs",
    "resolve_preset",
    "save_best",
]


def best_file(config: Config) -> Path:
    """Where ``best`` is saved for ``config``'s data, model, training and shifts."""
    from mitigate.pipeline import cache_dir

    key = config_digest(config.data, config.model, config.train, config.shifts)
    return (
        cache_dir() / "calibration" / f"best-{config.data.dataset}-{config.model.arch}-{key}.json"
    )


def save_best(config: Config, record: dict[str, Any], out: str | Path | None = None) -> list[Path]:
    """Write the recommended setting to :func:`best_file` (and ``<out>/best.json`` if given)."""
    from mitigate.reports.io import write_json

    paths = [best_file(config)] + ([Path(out) / "best.json"] if out is not None else [])
    for path in paths:
        write_json(path, record)
    return paths


def resolve_preset(config: Config) -> Setting | None:
    """The setting ``[calibration] preset`` names, or ``None`` when it is empty."""
    from mitigate.calibration.plan import baseline_setting

    name = config.calibration.preset.strip()
    if not name:
        return None
    if name == "best":
        path = best_file(config)
        if not path.is_file():
            raise MitigateError(
                "no saved best calibration for this data, model, training and shifts; run "
                "`mitigate calibrate` with the same config first, or name a preset such as "
                "clean-256-minmax-qnnpack or a best.json path"
            )
        return _read(path)
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise MitigateError(f"calibration preset file not found: {path.resolve()}")
        return _read(path)
    return parse_setting(name, baseline_setting(config))


def _read(path: Path) -> Setting:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return check_setting(Setting(**record["calibration"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, MitigateError):
            raise
        raise MitigateError(f"cannot read calibration preset {path}: {err}") from None


def apply_preset(config: Config) -> Config:
    """``config`` with its preset resolved to a canonical name and the static int8 schemes
    rewritten to the preset's observer, granularity and engine (duplicates dropped).

    Example:
        >>> from mitigate.config import override
        >>> c = apply_preset(override(Config(), calibration__preset="qnnpack"))
        >>> c.calibration.preset, c.quantization.schemes[0], c.retrain.scheme
        ('clean-100-random-aug0-histogram-perchannel-qnnpack', 'int8:engine=qnnpack', \
'int8:engine=qnnpack')
    """
    setting = resolve_preset(config)
    if setting is None:
        return config
    schemes = tuple(dict.fromkeys(_rewrite(s, setting) for s in config.quantization.schemes))
    return replace(
        config,
        calibration=replace(config.calibration, preset=setting.name),
        quantization=replace(config.quantization, schemes=schemes),
        retrain=replace(config.retrain, scheme=_rewrite(config.retrain.scheme, setting)),
    )


def _rewrite(name: str, setting: Setting) -> str:
    from mitigate.quantization import Int8Static, parse_scheme, scheme_label

    scheme = parse_scheme(name)
    return scheme_label(setting.scheme(scheme)) if isinstance(scheme, Int8Static) else name


def preset_inputs(config: Config, data: Any, model: Any = None) -> Any:
    """The calibration set of ``config``'s preset (``float [N, C, H, W]``).

    A preset that ranks inputs needs the FP model; without ``model`` the cached base model of
    ``config`` is used.
    """
    from mitigate.calibration.inputs import calibration_set

    setting = resolve_preset(config)
    if setting is None:
        raise MitigateError("no calibration preset set ([calibration] preset is empty)")
    if setting.needs_model and model is None:
        from mitigate.pipeline import base_model

        model, _ = base_model(config, data)
    return calibration_set(config, data, setting, model=model)


def best_record(config: Config, report: dict[str, Any]) -> dict[str, Any]:
    """What ``best.json`` holds: the recommended setting, its numbers and where it came from."""
    recommendation = report["recommendation"]
    row = next(r for r in report["rows"] if r["setting"] == recommendation["setting"])
    return {
        "preset": row["setting"],
        "calibration": row["calibration"],
        "scheme": row["scheme"],
        "recommendation": recommendation,
        "seeds": report["seeds"],
        "for": {
            "dataset": config.data.dataset,
            "arch": config.model.arch,
            "digest": best_file(config).stem,
        },
        "default_calibration": report["baseline"],
    }
