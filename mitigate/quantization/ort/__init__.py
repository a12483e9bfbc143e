"""ONNX Runtime backend: the ``ort-*`` schemes and ``.onnx`` files as quantized models.

The FP model is exported once (cached by its weights and the export options), quantized with
``onnxruntime.quantization`` and run by an ``InferenceSession`` wrapped as an ``nn.Module``
(:class:`OrtModule`), so every run measures it like a torch.ao copy. Nothing here imports
``onnxruntime`` until an ``ort-*`` scheme is used: it is the optional extra
``pip install 'mitigate[onnx]'``.
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "INSTALL": "._require",
    "OrtModule": ".runtime",
    "build": ".build",
    "clear_export_cache": ".export",
    "export_onnx": ".export",
    "module_nodes": ".export",
    "ort_sessions": ".runtime",
    "require": "._require",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
