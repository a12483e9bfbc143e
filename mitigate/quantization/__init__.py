"""Every quantization backend call lives in this package, so a future torch changes one place.

Names resolve lazily: ``from mitigate.quantization import scheme_names`` does not import torch.
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "QuantizedModel": ".api",
    "RECURRENT_SCHEMES": ".api",
    "activation_qparams": ".inspect",
    "ActPoint": ".act_ranges",
    "activation_points": ".act_ranges",
    "with_qparams": ".act_ranges",
    "with_ranges": ".act_ranges",
    "IntLayer": ".int_weights",
    "quantized_layers": ".int_weights",
    "read_layer": ".int_weights",
    "with_weights": ".int_weights",
    "check_supported": ".api",
    "quantize": ".api",
    **{
        name: ".schemes"
        for name in (
            "ENGINES",
            "OBSERVERS",
            "SCHEMES",
            "BFloat16",
            "Float16",
            "Int4Weight",
            "Int8Dynamic",
            "Int8Static",
            "ORT_ACTIVATIONS",
            "ORT_CALIBRATIONS",
            "ORT_OPTIMIZATIONS",
            "ORT_SCHEMES",
            "OnnxFile",
            "OrtFloat32",
            "OrtInt8",
            "OrtInt8Dynamic",
            "Scheme",
            "parse_scheme",
            "scheme_label",
            "scheme_names",
            "validate_scheme",
        )
    },
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
