"""Quantization-aware training around a Lightning fit, in explicit steps.

1. :func:`prepare_qat_model` — a fake-quantized copy of the float model (FX graph mode);
2. train it like any model (``ClassifierModule(prepared, method="qat")``), optionally with
   :class:`FreezeQAT` to freeze batch-norm statistics and observers after some epochs;
3. :func:`convert_qat` — an int8 copy; the trained prepared model is left as it was;
4. :func:`extract_float` — the fine-tuned float model ``f1`` in the original architecture, to
   re-quantize with any scheme or save with :func:`mitigate.models.save_checkpoint`.

Nothing here rewrites a model's ``forward`` or converts at the end of a fit (why Lightning
removed its own QAT callback in 2.0).

Two kinds of QAT, chosen by the scheme:

- static ``int8`` (torch.ao FX): fake quantization of weights *and* activations, conv-bn
  fusion; the converted model is a real int8 model.
- ``int8-dynamic`` and ``int4-weight`` (ours): :class:`WeightQAT` trains the float weights
  through the scheme's weight rounding with a straight-through gradient; activations stay
  float (``int8-dynamic`` quantizes them per batch at inference, which training does not
  simulate). "Converting" quantizes the trained float model with the scheme. This is the
  QAT that LSTM and GRU models get: torch.ao has no fake-quantized recurrent modules, and
  static int8 cannot quantize them at all.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> prepared = prepare_qat_model(net, "int8", torch.rand(1, 1, 8, 8))
    >>> int8 = convert_qat(prepared, "int8")
    >>> int8(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> f1 = extract_float(prepared, net)
    >>> type(f1) is type(net)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.quantization import static
from mitigate.quantization._quiet import quiet_backend
from mitigate.quantization.api import QuantizedModel, check_supported, quantize
from mitigate.quantization.fusion import batchnorm_owners
from mitigate.quantization.schemes import (
    Int4Weight,
    Int8Dynamic,
    Int8Static,
    Scheme,
    parse_scheme,
    scheme_label,
)
from mitigate.quantization.weight_only import weight_rounding

__all__ = [
    "FreezeQAT",
    "WeightQAT",
    "convert_qat",
    "extract_float",
    "freeze_batchnorm",
    "freeze_observers",
    "is_qat_prepared",
    "pause_observers",
    "prepare_qat_model",
    "qat_scheme",
]


QATScheme = Int8Static | Int8Dynamic | Int4Weight


def qat_scheme(scheme: Scheme | str) -> QATScheme:
    """The scheme, if QAT can train for it: static int8 (torch.ao FX), or the weight-quantized
    ``int8-dynamic`` and ``int4-weight`` (:class:`WeightQAT`)."""
    parsed = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    if not isinstance(parsed, (Int8Static, Int8Dynamic, Int4Weight)):
        raise MitigateError(
            f"QAT trains for static int8 schemes (int8, int8:engine=qnnpack, ...) and for the "
            f"weight-quantized int8-dynamic and int4-weight; got {scheme_label(parsed)!r}"
        )
    return parsed


class WeightQAT(nn.Module):
    """QAT for weight-quantized schemes: ``model``'s weights pass through the scheme's
    rounding in every forward, with a straight-through gradient to the float weights.

    ``model`` itself keeps float weights and its own ``forward`` (the rounded weights are
    swapped in with ``torch.func.functional_call``), so the trained float model is
    ``wrapper.model``, in the original architecture. Works for LSTM and GRU layers.

    Attributes:
        model: the float model being trained.
        scheme: ``Int8Dynamic`` or ``Int4Weight``.
        names: the qualified weight names that are rounded.

    Example:
        >>> net = nn.Sequential(nn.Embedding(20, 8), nn.GRU(8, 8, batch_first=True))
        >>> qat = WeightQAT(net, Int8Dynamic())
        >>> qat.names
        ['1.weight_ih_l0', '1.weight_hh_l0']
    """

    def __init__(self, model: nn.Module, scheme: Int8Dynamic | Int4Weight) -> None:
        super().__init__()
        self.model = model
        self.scheme = scheme
        self.names, self._rounding = weight_rounding(model, scheme)

    def rounded_weights(self) -> dict[str, Tensor]:
        """Name -> rounded weight (straight-through: the gradient flows to the float one)."""
        params = dict(self.model.named_parameters())
        return {n: params[n] + (self._rounding(params[n]) - params[n]).detach() for n in self.names}

    def forward(self, x: Tensor) -> Tensor:
        from torch.func import functional_call

        return functional_call(self.model, self.rounded_weights(), (x,))


def prepare_qat_model(model: nn.Module, scheme: Scheme | str, example: Tensor) -> nn.Module:
    """A fake-quantized copy of ``model`` in train mode, ready to fine-tune; ``model`` is kept.

    Args:
        model: a float classifier; for static int8 one that torch.fx can trace.
        scheme: a static int8 scheme (object or name such as ``"int8:engine=qnnpack"``), or
            ``int8-dynamic`` / ``int4-weight`` (weight rounding only, see :class:`WeightQAT`).
        example: one example input ``[1, ...]`` (only its shape and dtype matter).

    Returns:
        Static int8: a ``torch.fx.GraphModule`` with conv-bn(-relu) chains fused into QAT
        modules (their batch norm kept as a ``.bn`` child) and fake-quantize modules on
        weights and activations. Otherwise a :class:`WeightQAT` around a copy of ``model``.

    Raises:
        MitigateError: a scheme QAT cannot train for, static int8 on a recurrent model, or an
            unknown float layer.
    """
    scheme = qat_scheme(scheme)
    if not isinstance(scheme, Int8Static):
        was_training = model.training
        try:
            return WeightQAT(copy.deepcopy(model).train(), scheme)
        finally:
            model.train(was_training)
    try:
        check_supported(model, scheme)
    except MitigateError as err:
        raise MitigateError(
            f"{err}; QAT for such a model trains for int8-dynamic or int4-weight (train.qat_scheme)"
        ) from None
    known = dict(model.named_modules())
    for name in scheme.float_layers:
        if not name or name not in known:
            layers = [n for n, m in known.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
            raise MitigateError(
                f"no layer named {name!r} to keep in float; layers: {', '.join(layers)}"
            )
    was_training = model.training
    try:
        return static.prepare_qat(model, scheme, example)
    finally:
        model.train(was_training)


def is_qat_prepared(model: nn.Module) -> bool:
    """Whether ``model`` came from :func:`prepare_qat_model` (holds fake-quantize modules or
    is a :class:`WeightQAT`)."""
    return isinstance(model, WeightQAT) or bool(_fake_quantizers(model))


def convert_qat(prepared: nn.Module, scheme: Scheme | str) -> QuantizedModel:
    """The int8 model of a QAT-trained prepared model; ``prepared`` itself is not changed.

    Conversion works on a deep copy with the scheme's quantized engine selected (and restored
    afterwards), with torch's deterministic mode off for the call (quantized kernels refuse to
    run under it). The result takes and returns float32 like every ``quantize`` output.
    """
    scheme = qat_scheme(scheme)
    if not is_qat_prepared(prepared):
        raise MitigateError(
            "convert_qat needs a model from prepare_qat_model (it holds no fake-quantize modules)"
        )
    if isinstance(prepared, WeightQAT):
        return quantize(prepared.model, scheme)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        inner = static.convert(prepared, scheme.engine)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    return QuantizedModel(inner, scheme, torch.float32)


def extract_float(prepared: nn.Module, original: nn.Module) -> nn.Module:
    """The float model with ``prepared``'s trained weights, in ``original``'s architecture.

    A fresh deep copy of ``original`` (same class, same ``forward``) receives every parameter
    and buffer by name: FX keeps module names, and a batch norm fused into the conv or linear
    layer before it lives on as that layer's ``.bn`` child (or ``.1`` for a layer kept in
    float). Its outputs equal the prepared model's in eval mode with fake quantization off.

    Raises:
        MitigateError: ``prepared`` does not hold a weight of ``original`` (not prepared from
            this architecture).
    """
    if isinstance(prepared, WeightQAT):  # the float weights themselves, under the same names
        target = copy.deepcopy(original)
        target.load_state_dict(prepared.model.state_dict(), strict=True)
        return target.train(original.training)
    owners = batchnorm_owners(original)
    source = prepared.state_dict()
    target = copy.deepcopy(original)
    state = {}
    for key, value in target.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in owners:
            candidates = (f"{owners[module]}.bn.{leaf}", f"{owners[module]}.1.{leaf}")
        else:
            candidates = (key, f"{module}.0.{leaf}" if module else key)
        found = next(
            (c for c in candidates if c in source and source[c].shape == value.shape), None
        )
        if found is None:
            raise MitigateError(
                f"the prepared model holds no weight for {key!r} (looked for "
                f"{', '.join(candidates)}); was it prepared from this architecture?"
            )
        state[key] = source[found].detach().clone()
    target.load_state_dict(state, strict=True)
    return target.train(original.training)


def _fake_quantizers(model: nn.Module) -> list[nn.Module]:
    with quiet_backend():
        from torch.ao.quantization.fake_quantize import FakeQuantizeBase

        return [m for m in model.modules() if isinstance(m, FakeQuantizeBase)]


@contextmanager
def pause_observers(model: nn.Module) -> Iterator[None]:
    """Stop ``model``'s observers from updating their ranges in the block, then restore each
    one's previous state. Fake quantization stays on.

    Observers of a QAT model record ranges on every forward, *in eval mode too*; wrap passes
    that must not move them (validation, building adversarial examples) in this. A no-op for
    models without fake-quantize modules.
    """
    quantizers = _fake_quantizers(model)
    states = [q.observer_enabled.clone() for q in quantizers]
    for q in quantizers:
        q.observer_enabled.fill_(0)
    try:
        yield
    finally:
        for q, state in zip(quantizers, states, strict=True):
            q.observer_enabled.copy_(state)


def freeze_observers(model: nn.Module) -> None:
    """Stop every observer of ``model`` from updating its range (quantization scales freeze)."""
    for q in _fake_quantizers(model):
        q.observer_enabled.fill_(0)


def freeze_batchnorm(model: nn.Module) -> None:
    """Freeze batch-norm statistics: use and keep the running ones.

    Fused QAT conv-bn modules get ``freeze_bn_stats()`` (which survives ``.train()``); any
    other batch norm is put in eval mode (``.train()`` undoes that, so :class:`FreezeQAT`
    repeats it before every batch).
    """
    for module in model.modules():
        if hasattr(module, "freeze_bn_stats") and hasattr(module, "bn"):
            module.freeze_bn_stats()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class FreezeQAT(pl.Callback):
    """Freeze batch-norm statistics and/or observers after a number of epochs.

    A common QAT recipe: let ranges and statistics settle, then freeze them so the last epochs
    fine-tune the weights against fixed quantization grids. Works on any
    ``ClassifierModule``; observers exist only in QAT-prepared models.

    Args:
        bn_epoch: freeze batch-norm statistics once this many epochs have run (``0`` means
            from the start); ``None`` never.
        observer_epoch: the same for observers (quantization ranges).

    Example:
        >>> FreezeQAT(bn_epoch=3, observer_epoch=4)
        FreezeQAT(bn_epoch=3, observer_epoch=4)
    """

    def __init__(self, bn_epoch: int | None = None, observer_epoch: int | None = None) -> None:
        for name, value in (("bn_epoch", bn_epoch), ("observer_epoch", observer_epoch)):
            if value is not None and value < 0:
                raise MitigateError(f"FreezeQAT {name} must be >= 0 or None, got {value}")
        self.bn_epoch, self.observer_epoch = bn_epoch, observer_epoch

    def __repr__(self) -> str:
        return f"FreezeQAT(bn_epoch={self.bn_epoch}, observer_epoch={self.observer_epoch})"

    def _due(self, epoch_limit: int | None, trainer: pl.Trainer) -> bool:
        return epoch_limit is not None and trainer.current_epoch >= epoch_limit

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(self.observer_epoch, trainer):
            freeze_observers(pl_module.model)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        # Per batch, because Lightning calls .train() again after each validation run.
        if self._due(self.bn_epoch, trainer):
            freeze_batchnorm(pl_module.model)
