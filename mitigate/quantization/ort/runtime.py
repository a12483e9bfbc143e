"""An ONNX Runtime ``InferenceSession`` as an ``nn.Module``: tensors in, float32 logits out.

The model's bytes are a ``uint8`` buffer, so ``state_dict`` / ``torch.save`` carry the very
model ORT runs (its deployment size is what it ships) and a deep copy or a pickle rebuilds
the session from them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.quantization.ort._require import require

__all__ = ["OrtModule", "ort_sessions"]

_LEVELS = {
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "disable": "ORT_DISABLE_ALL",
}


class OrtModule(nn.Module):
    """Run a serialized ONNX model in ONNX Runtime's CPU provider.

    Args:
        model_bytes: the ``ModelProto`` bytes; one input ``[B, ...]``, first output
            ``[B, classes]``.
        threads: intra-op threads; 0 follows torch's (``torch.get_num_threads()`` at each
            call), so ORT and torch models timed side by side use the same number.
        optimization: graph optimization level (``all``, ``extended``, ``basic``, ``disable``);
            measure at the level you deploy: ``all`` fuses QDQ pairs into integer kernels.
        info: what built it (export check, calibration...), copied into reports.

    Example:
        >>> from mitigate.quantization.ort import export_onnx
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> ort_net = OrtModule(export_onnx(net, torch.rand(2, 4)))
        >>> x = torch.rand(5, 4)
        >>> bool(torch.allclose(ort_net(x), net(x), atol=1e-5))
        True
    """

    def __init__(
        self,
        model_bytes: bytes,
        *,
        threads: int = 0,
        optimization: str = "all",
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer(
            "onnx_model", torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8)
        )
        self.threads = threads
        self.optimization = optimization
        self.info = dict(info or {})
        self._sessions: dict[int, Any] = {}  # by thread count: torch's may change between calls
        self.session  # fail here, on a model ORT cannot load, not at the first batch  # noqa: B018

    @property
    def model_bytes(self) -> bytes:
        return self.onnx_model.numpy().tobytes()

    def session_options(self, optimized_path: str | None = None) -> Any:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _LEVELS[self.optimization]
        )
        options.intra_op_num_threads = self.intra_op_threads
        options.log_severity_level = 3  # errors only: ORT warns about every fused model saved
        if optimized_path:
            options.optimized_model_filepath = optimized_path
        return options

    @property
    def session(self) -> Any:
        """The ``InferenceSession`` (built on first use, rebuilt after ``load_state_dict``)."""
        threads = self.intra_op_threads
        if threads not in self._sessions:
            self._sessions[threads] = self._open(self.model_bytes, self.session_options())
        return self._sessions[threads]

    @property
    def intra_op_threads(self) -> int:
        """The threads ORT runs with now: :attr:`threads`, or torch's when that is 0."""
        return self.threads or torch.get_num_threads()

    def forward(self, x: Tensor) -> Tensor:
        session = self.session
        feed = session.get_inputs()[0]
        array = x.detach().cpu().contiguous().numpy()
        if feed.type == "tensor(float)" and array.dtype != "float32":
            array = array.astype("float32")
        out = session.run(None, {feed.name: array})[0]
        return torch.from_numpy(out).float()

    def optimized_ops(self) -> list[str]:
        """The op types of the graph ORT actually runs at this optimization level (``QGemm``,
        ``QLinearConv`` where the QDQ pairs fused into integer kernels)."""
        onnx = require("onnx")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "optimized.onnx")
            self._open(self.model_bytes, self.session_options(path))
            graph = onnx.load(path).graph
        return [node.op_type for node in graph.node]

    def describe(self) -> dict[str, Any]:
        """What a report records: the runtime, its version and session options, and
        :attr:`info`."""
        ort = require("onnxruntime")
        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "provider": "CPUExecutionProvider",
            "threads": self.threads or "torch's",
            "optimization": self.optimization,
            **self.info,
        }

    def train(self, mode: bool = True) -> OrtModule:
        return super().train(False)  # an ORT session has no training mode

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sessions"] = {}  # an InferenceSession neither pickles nor deep-copies
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Another model's bytes may have another length: take the buffer, not copy into it.
        key = prefix + "onnx_model"
        if key in state_dict:
            self.onnx_model = state_dict[key].detach().clone().to(torch.uint8)
            self._sessions = {}
            state_dict = {k: v for k, v in state_dict.items() if k != key}
            state_dict[key] = self.onnx_model
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"bytes={self.onnx_model.numel()}, optimization={self.optimization}"

    @staticmethod
    def _open(model_bytes: bytes, options: Any) -> Any:
        ort = require("onnxruntime")
        try:
            return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            line = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise MitigateError(f"ONNX Runtime cannot load the model: {line}") from None


def ort_sessions(models: Mapping[str, nn.Module]) -> dict[str, dict[str, Any]]:
    """Label -> :meth:`OrtModule.describe` for every model ORT runs (a quantized copy, or a
    wrapper such as a guard around one); the others are left out."""
    found = {}
    for label, model in models.items():
        ort_module = next((m for m in model.modules() if isinstance(m, OrtModule)), None)
        if ort_module is not None:
            found[label] = ort_module.describe()
    return found
