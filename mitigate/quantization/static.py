"""Static int8 through torch's FX graph mode: qconfig from a scheme, prepare, calibrate, convert.

FX (not eager) mode, because it needs no QuantStub/DeQuantStub in the model, fuses
conv-bn-relu by itself, handles residual adds, and inserts the quant/dequant pairs around a
layer kept in float — so any traceable classifier works, and layer fallback is one mapping
entry. Prepare and convert are separate, explicit steps (QAT trains in between).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from types import TracebackType

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError, first_line
from mitigate.quantization._quiet import quiet_backend
from mitigate.quantization.schemes import Int8Static

__all__ = [
    "UNTRACED_SCHEMES",
    "calibrate",
    "convert",
    "prepare",
    "prepare_qat",
    "qconfig_mapping",
]


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
    """A deep copy of ``model`` in eval mode with observers inserted, ready to calibrate.

    Raises:
        MitigateError: FX cannot trace the model (naming the module and the schemes that
            need no tracing).
    """
    from torch.ao.quantization.quantize_fx import prepare_fx

    with quiet_backend(), _traceable(model):
        return prepare_fx(
            copy.deepcopy(model).eval(), qconfig_mapping(scheme), example_inputs=(example,)
        )


def prepare_qat(model: nn.Module, scheme: Int8Static, example: Tensor) -> nn.Module:
    """A deep copy of ``model`` in train mode with fake-quantize modules, ready to fine-tune."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with quiet_backend(), _traceable(model):
        return prepare_qat_fx(
            copy.deepcopy(model).train(),
            qconfig_mapping(scheme, qat=True),
            example_inputs=(example,),
        )


# Schemes that quantize module by module, with no graph to trace.
UNTRACED_SCHEMES = ("int8-dynamic", "fp16", "bf16", "int4-weight")


@contextlib.contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """Turn FX's failure to trace ``model`` (data-dependent control flow, an untraceable
    call) into one line naming the innermost module whose ``forward`` failed."""
    from torch.fx.proxy import TraceError

    try:
        yield
    except (TraceError, NotImplementedError, TypeError) as err:
        if not isinstance(err, TraceError) and "symbolically traced" not in str(err).lower():
            raise
        where = _failing_module(model, err.__traceback__)
        raise MitigateError(
            f"static int8 cannot trace {where}: {first_line(err)}; schemes that need no "
            f"tracing: {', '.join(UNTRACED_SCHEMES)}"
        ) from None


def _failing_module(model: nn.Module, tb: TracebackType | None) -> str:
    """``module 'name' (Class)`` for the innermost frame of ``tb`` that runs a ``forward`` of
    one of ``model``'s modules (matched by class: tracing runs a copy)."""
    names = {type(m): name for name, m in reversed(list(model.named_modules()))}
    found = f"the model ({type(model).__name__})"
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and type(owner) in names:
            name = names[type(owner)]
            found = f"module {name!r} ({type(owner).__name__})" if name else found
        tb = tb.tb_next
    return found


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
