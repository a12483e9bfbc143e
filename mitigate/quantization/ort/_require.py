"""Import ONNX Runtime (and onnx) only when an ``ort-*`` scheme asks for them."""

from __future__ import annotations

import importlib
from types import ModuleType

from mitigate.errors import MitigateError

__all__ = ["INSTALL", "require"]

#: What to run to get the optional backend.
INSTALL = "pip install 'mitigate[onnx]'"


def require(module: str = "onnxruntime", *, scheme: str = "ort-*") -> ModuleType:
    """The imported ``module`` (``onnxruntime``, ``onnx``, ``onnxscript``); a one-line
    :class:`MitigateError` naming the install command when the extra is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MitigateError(
            f"scheme {scheme!r} runs in ONNX Runtime, which is not installed ({module} "
            f"missing); install it with: {INSTALL}"
        ) from None
