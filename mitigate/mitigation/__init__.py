"""Mitigations that change *how* a model is quantized, without training f0 or using labels:
find the layers and settings that cause disagreements, keep layers in float within a budget,
pick better settings, re-round the integers (AdaRound), correct biases, re-pick activation
ranges, guard the quantized model at run time — and say what each costs in deployment. The
strategies (:mod:`.strategies`) chain these and the training steps for ``retrain``.

Names resolve lazily: importing this package does not import torch.
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "MODES": ".sensitivity",
    "LayerSensitivity": ".sensitivity",
    "disagreements": ".sensitivity",
    "layer_sensitivity": ".sensitivity",
    "unattributed_disagreements": ".sensitivity",
    "FallbackResult": ".fallback",
    "FallbackSearchResult": ".fallback",
    "greedy_fallback": ".fallback",
    "parse_share": ".fallback",
    "search_fallback": ".fallback",
    "AdaRoundResult": ".adaround",
    "adaround": ".adaround",
    "BiasCorrectionResult": ".bias_correction",
    "bias_correction": ".bias_correction",
    "RangesResult": ".ranges",
    "search_ranges": ".ranges",
    **{
        name: ".guard"
        for name in (
            "GuardChoice",
            "GuardedModel",
            "choose_threshold",
            "guard_margin",
            "load_guard",
            "save_guard",
            "threshold_outcome",
        )
    },
    "SettingsResult": ".settings_search",
    "search_settings": ".settings_search",
    "deployment_cost": ".deployment",
    "serialized_size": ".deployment",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
