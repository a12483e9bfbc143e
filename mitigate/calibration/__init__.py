"""PTQ calibration reliability: how the calibration set and method decide worst-group
behaviour (``mitigate calibrate``), and named calibrations for ``evaluate`` / ``retrain``.

Names resolve lazily: importing this package does not import torch.
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    **{
        name: ".settings"
        for name in (
            "ENGINES",
            "FACTORS",
            "GRANULARITIES",
            "SAMPLINGS",
            "SOURCES",
            "Setting",
            "check_setting",
            "parse_setting",
            "setting_of_scheme",
        )
    },
    "available_inputs": ".inputs",
    "calibration_families": ".inputs",
    "calibration_set": ".inputs",
    "activation_qparams": ".metrics",
    "group_masks": ".metrics",
    "group_metrics": ".metrics",
    "GRIDS": ".plan",
    "Planned": ".plan",
    "baseline_setting": ".plan",
    "check_sweep": ".plan",
    "plan_settings": ".plan",
    "CalibrateResult": ".sweep",
    "calibrate": ".sweep",
    "cell_predictions": ".sweep",
    "combined_setting": ".sweep",
    "summarize_cells": ".sweep",
    "apply_preset": ".presets",
    "best_file": ".presets",
    "best_record": ".presets",
    "preset_inputs": ".presets",
    "resolve_preset": ".presets",
    "save_best": ".presets",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
