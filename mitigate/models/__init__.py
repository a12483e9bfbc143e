"""Model zoo: small image classifiers (mlp, lenet1, lenet5, nin, resnet20) and recurrent text
classifiers (lstm, gru).

Every image model maps ``x: [N, C, H, W]`` with values in ``[0, 1]`` to
``logits: [N, classes]``, adapts to 1 or 3 channels, 8x8 to 32x32 (or larger) images and any
class count, and is written so torch's FX graph-mode quantization (PTQ and QAT), dynamic
quantization and fp16 / bf16 casts all work: a traceable forward, conv-bn-relu chains and plain
``+`` residuals. Text models map token ids ``int64 [N, L]`` to logits (embedding, recurrent
layer, linear) and take every scheme but static int8, which cannot quantize LSTM / GRU layers.

Example:
    >>> import torch
    >>> model = build_model("resnet20", in_channels=3, image_size=32, num_classes=10)
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from mitigate.models.checkpoint import load_checkpoint, save_checkpoint
from mitigate.models.registry import build_model, model_modality, model_names
from mitigate.models.summary import layer_table

__all__ = [
    "build_model",
    "layer_table",
    "load_checkpoint",
    "model_modality",
    "model_names",
    "save_checkpoint",
]
