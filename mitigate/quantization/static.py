"""Static int8 through torch's FX graph mode: qconfig from a scheme, prepare, calibrate, convert.

FX (not eager) mode, because it needs no QuantStub/DeQuantStub in the model, fuses
conv-bn-relu by itself, handles residual adds, and inserts the quant/dequant pairs around a
layer kept in float — so any traceable classifier works, and layer fallback is one mapping
entry. Prepare and convert are separate, explicit steps (QAT trains in between).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from mitigate.quantization._quiet import quiet_backend
from mitigate.quantization.schemes import Int8Static

__all__ = ["calibrate", "convert", "prepare", "prepare_qat", "qconfig_mapping"]


def qconfig_mapping(scheme: Int8Static, *, qat: bool = False):  # -> QConfigMapping
    """The torch ``QConfigMapping`` that implements ``scheme``.

    Starts from the engine's default mapping (it carries the fixed-range settings for sigmoid,
    softmax, ...) and replaces the global qconfig with the scheme's observers.
    """
    from torch.ao import quantization as tq

    with quiet_backend():
        reduce = scheme.effective_reduce_range
        if qat:
            mapping = tq.get_default_qat_qconfig_mapping(scheme.engine)
            activation = tq.FusedMovingAvgObsFakeQuantize.with_args(
                observer=tq.MovingAverageMinMaxObserver,
                quant_min=0,
                quant_max=127 if reduce else 255,
                dtype=torch.quint8,
            )
            weight = (
                tq.default_fused_per_channel_wt_fake_quant
                if scheme.per_channel
                else tq.default_fused_wt_fake_quant
            )
        else:
            mapping = tq.get_default_qconfig_mapping(scheme.engine)
            observer = {
                "histogram": tq.HistogramObserver,
                "minmax": tq.MinMaxObserver,
                "moving-average": tq.MovingAverageMinMaxObserver,
            }[scheme.observer]
            activation = observer.with_args(
                dtype=torch.quint8, quant_min=0, quant_max=127 if reduce else 255
            )
            weight = (
                tq.PerChannelMinMaxObserver.with_args(
                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric
                )
                if scheme.per_channel
                else tq.MinMaxObserver.with_args(
                    dtype=torch.qint8, qscheme=torch.per_tensor_symmetric
                )
            )
        mapping.set_global(tq.QConfig(activation=activation, weight=weight))
        for name in scheme.float_layers:
            mapping.set_module_name(name, None)
    return mapping


def prepare(model: nn.Module, scheme: Int8Static, example: Tensor) -> nn.Module:
    """A deep copy of ``model`` in eval mode with observers inserted, ready to calibrate."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    with quiet_backend():
        return prepare_fx(
            copy.deepcopy(model).eval(), qconfig_mapping(scheme), example_inputs=(example,)
        )


def prepare_qat(model: nn.Module, scheme: Int8Static, example: Tensor) -> nn.Module:
    """A deep copy of ``model`` in train mode with fake-quantize modules, ready to fine-tune."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with quiet_backend():
        return prepare_qat_fx(
            copy.deepcopy(model).train(),
            qconfig_mapping(scheme, qat=True),
            example_inputs=(example,),
        )


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable[Tensor]) -> None:
    """Run calibration batches (``float [B, C, H, W]``) through a prepared model's observers."""
    prepared.eval()
    with quiet_backend():
        for x in batches:
            prepared(x)


def convert(prepared: nn.Module, engine: str) -> nn.Module:
    """The int8 model for a calibrated (or QAT-trained) prepared model; ``prepared`` is kept."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet_backend(), _engine(engine):
        return convert_fx(copy.deepcopy(prepared).eval())


class _engine:
    """Select a quantized engine for the enclosed block and restore the previous one."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        self.previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = self.engine

    def __exit__(self, *exc: object) -> None:
        torch.backends.quantized.engine = self.previous
