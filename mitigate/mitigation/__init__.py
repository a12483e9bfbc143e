"""Mitigations that change *how* a model is quantized, without training or labels: find the
layers and settings that cause disagreements, keep layers in float, pick better settings, and
say what that costs in deployment.

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
    "greedy_fallback": ".fallback",
    "parse_share": ".fallback",
    "SettingsResult": ".settings_search",
    "search_settings": ".settings_search",
    "deployment_cost": ".deployment",
    "serialized_size": ".deployment",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
