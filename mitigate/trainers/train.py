"""Train a classifier with a method from the registry: prepare (QAT), fit, extract the float
model — every step explicit, the caller's model never modified.

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from mitigate.trainers.settings import TrainConfig
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> data = TensorDataset(torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    >>> settings = TrainConfig(method="qat", epochs=1)
    >>> trained = train_classifier(net, DataLoader(data, batch_size=16), settings=settings, seed=0)
    >>> trained.prepared is not None, type(trained.model) is type(net)
    (True, True)
    >>> trained.quantized()(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import pytorch_lightning as pl
from torch import nn
from torch.utils.data import DataLoader

from mitigate.errors import MitigateError
from mitigate.quantization.api import QuantizedModel
from mitigate.quantization.schemes import Scheme
from mitigate.trainers.fitting import fit
from mitigate.trainers.methods import MethodOptions, get_method
from mitigate.trainers.module import ClassifierModule
from mitigate.trainers.qat import (
    FreezeQAT,
    convert_qat,
    extract_float,
    prepare_qat_model,
    qat_scheme,
)
from mitigate.trainers.settings import TrainConfig

__all__ = ["Trained", "check_train_config", "train_classifier"]


@dataclass
class Trained:
    """What a training run produced.

    Attributes:
        model: the float model in the original architecture, eval mode (for QAT: the
            fine-tuned weights taken out of the prepared model, ready to re-quantize with any
            scheme or to save with ``save_checkpoint``).
        method: the training method's name.
        prepared: the trained QAT-prepared (fake-quant) model, or ``None``.
        scheme: the scheme the QAT model was trained for (static int8, or int8-dynamic /
            int4-weight for weight-rounding QAT), or ``None``.
    """

    model: nn.Module
    method: str
    prepared: nn.Module | None = None
    scheme: Scheme | None = None

    def quantized(self) -> QuantizedModel:
        """The quantized model converted from the QAT-trained model (a copy; nothing changes)."""
        if self.prepared is None or self.scheme is None:
            raise MitigateError(
                f"a model trained with {self.method!r} has no QAT model to convert; "
                "quantize trained.model with mitigate.quantize instead"
            )
        return convert_qat(self.prepared, self.scheme)


def check_train_config(settings: TrainConfig) -> None:
    """Raise a one-line :class:`MitigateError` for the first invalid training setting."""
    get_method(settings.method)
    MethodOptions.from_config(settings)
    checks = (
        ("epochs", settings.epochs >= 1, ">= 1"),
        ("batch_size", settings.batch_size >= 1, ">= 1"),
        ("lr", settings.lr > 0, "> 0"),
        ("weight_decay", settings.weight_decay >= 0, ">= 0"),
        ("freeze_bn_epoch", settings.freeze_bn_epoch >= -1, ">= 0, or -1 for never"),
        ("freeze_observer_epoch", settings.freeze_observer_epoch >= -1, ">= 0, or -1 for never"),
        ("selected_weight", settings.selected_weight > 0, "> 0"),
    )
    for name, ok, rule in checks:
        if not ok:
            raise MitigateError(f"train.{name} must be {rule}, got {getattr(settings, name)}")
    qat_scheme(settings.qat_scheme)


def train_classifier(
    model: nn.Module,
    train: DataLoader,
    val: DataLoader | None = None,
    *,
    settings: TrainConfig,
    seed: int,
    teacher: nn.Module | None = None,
    qat: bool | None = None,
    callbacks: Sequence[pl.Callback] = (),
    progress: bool = False,
) -> Trained:
    """Train a copy of ``model`` with ``settings.method``; ``model`` itself is not touched.

    Args:
        model: float classifier ``[B, C, H, W] -> [B, classes]`` (the starting weights).
        train: batches ``(x, y)``, ``(x, y, w)`` or, for label-free methods, ``(x,)``.
        val: optional labelled batches for validation accuracy (observers paused).
        settings: method, epochs, optimiser and the methods' options.
        seed: seeds the fit (mixup draws, PGD starts) for repeatable results.
        teacher: the frozen model ``distill`` matches (e.g. the original FP model).
        qat: train a QAT-prepared copy for ``settings.qat_scheme``; ``None`` means "if the
            method needs it" (``qat``). ``distill`` with ``qat=True`` is distill-QAT.
        callbacks: extra Lightning callbacks.
        progress: show Lightning's progress bar.

    Returns:
        A :class:`Trained`; ``.quantized()`` converts the QAT model when there is one.
    """
    check_train_config(settings)
    method = get_method(settings.method)
    use_qat = method.fake_quant if qat is None else qat
    if method.fake_quant and not use_qat:
        raise MitigateError(f"training method {method.name!r} always trains a QAT model")
    student = copy.deepcopy(model)
    scheme = None
    if use_qat:
        scheme = qat_scheme(settings.qat_scheme)
        example = train.dataset[0][0].unsqueeze(0)  # first input; draws no random numbers
        student = prepare_qat_model(student, scheme, example)
    freeze = FreezeQAT(
        bn_epoch=settings.freeze_bn_epoch if settings.freeze_bn_epoch >= 0 else None,
        observer_epoch=(
            settings.freeze_observer_epoch if settings.freeze_observer_epoch >= 0 else None
        ),
    )
    extra = [freeze] if freeze.bn_epoch is not None or freeze.observer_epoch is not None else []
    module = ClassifierModule(
        student,
        method=method.name,
        options=MethodOptions.from_config(settings),
        teacher=teacher,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        epochs=settings.epochs,
    )
    fit(
        module,
        train,
        val,
        epochs=settings.epochs,
        seed=seed,
        callbacks=[*extra, *callbacks],
        progress=progress,
    )
    if not use_qat:
        return Trained(student.eval(), method.name)
    return Trained(extract_float(student, model).eval(), method.name, student.eval(), scheme)
