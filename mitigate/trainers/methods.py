"""Training methods: what one optimisation step minimises.

Each method is a small function ``(module, x, labels, weights) -> loss`` registered by name,
so the LightningModule stays one class and ``mitigate train --method`` takes its choices from
here. ``labels`` is ``None`` when a batch has none; ``weights`` (``[B]``) is ``None`` when the
batch carries no per-sample weights, and every loss is then a plain mean.

=============  ======  =======  ==========  ==================================================
method         labels  teacher  fake-quant  loss
=============  ======  =======  ==========  ==================================================
standard       yes     no       no          cross-entropy
mixup          yes     no       no          cross-entropy on Beta(alpha, alpha) mixtures
adversarial    yes     no       no          cross-entropy on PGD/FGSM examples
qat            yes     no       yes         cross-entropy through fake quantization
distill        no      yes      either      KL to the frozen teacher's outputs at temperature T
=============  ======  =======  ==========  ==================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mitigate.errors import MitigateError, unknown_choice
from mitigate.trainers._weighted import cross_entropy
from mitigate.trainers.adversarial import pgd_attack
from mitigate.trainers.distill import distill_kl
from mitigate.trainers.mixup import mix_inputs, mixup_cross_entropy, sample_mixup
from mitigate.trainers.settings import TrainConfig

if TYPE_CHECKING:
    from mitigate.trainers.module import ClassifierModule

__all__ = ["METHODS", "Method", "MethodOptions", "get_method", "method_names"]


@dataclass(frozen=True)
class MethodOptions:
    """The methods' own settings (``TrainConfig`` holds the same fields and defaults).

    Attributes:
        mixup_alpha: Beta(alpha, alpha) shape of mixup's mixing weight, ``> 0``.
        adv_eps: L-infinity radius of adversarial examples, inputs in ``[0, 1]``.
        adv_steps: PGD steps (``1`` = FGSM).
        adv_step_size: PGD step; ``0`` = ``eps`` for FGSM, ``2.5 * eps / steps`` for PGD.
        distill_temperature: softmax temperature ``T > 0`` of distillation.
    """

    mixup_alpha: float = 0.2
    adv_eps: float = 0.1
    adv_steps: int = 10
    adv_step_size: float = 0.0
    distill_temperature: float = 2.0

    def __post_init__(self) -> None:
        checks = (
            ("mixup_alpha", self.mixup_alpha > 0, "> 0"),
            ("adv_eps", 0 <= self.adv_eps <= 1, "between 0 and 1"),
            ("adv_steps", self.adv_steps >= 1, ">= 1"),
            ("adv_step_size", self.adv_step_size >= 0, ">= 0 (0 = automatic)"),
            ("distill_temperature", self.distill_temperature > 0, "> 0"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise MitigateError(f"train.{name} must be {rule}, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, train: TrainConfig) -> MethodOptions:
        """The options named the same in a :class:`mitigate.config.TrainConfig`."""
        return cls(**{f.name: getattr(train, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Method:
    """One registered training method.

    Attributes:
        name: registry key.
        loss: ``(module, x [B, ...], labels [B] | None, weights [B] | None) -> scalar``.
        uses_labels: whether the loss reads the labels (``distill`` does not).
        needs_teacher: whether the module must be given a frozen teacher model.
        fake_quant: whether the trained model must be QAT-prepared first
            (:func:`mitigate.trainers.qat.prepare_qat_model`) and converted after.
        description: one line for ``--help``.
    """

    name: str
    loss: Callable[[ClassifierModule, Tensor, Tensor | None, Tensor | None], Tensor]
    uses_labels: bool
    needs_teacher: bool
    fake_quant: bool
    description: str


def _standard(module: ClassifierModule, x: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
    return cross_entropy(module.model(x), y, w)


def _needs_float(method: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise MitigateError(
            f"training method {method!r} perturbs float inputs; {x.dtype} inputs (token ids "
            "of a text model) cannot be perturbed: use standard, qat or distill"
        )


def _mixup(module: ClassifierModule, x: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
    _needs_float("mixup", x)
    lam, perm = sample_mixup(len(x), module.options.mixup_alpha)
    return mixup_cross_entropy(module.model(mix_inputs(x, lam, perm)), y, lam, perm, w)


def _adversarial(module: ClassifierModule, x: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
    _needs_float("adversarial", x)
    o = module.options
    adv = pgd_attack(
        module.model, x, y, eps=o.adv_eps, steps=o.adv_steps, step_size=o.adv_step_size
    )
    return cross_entropy(module.model(adv), y, w)


def _distill(module: ClassifierModule, x: Tensor, y: Tensor | None, w: Tensor | None) -> Tensor:
    with torch.no_grad():
        teacher_logits = module.teacher(x)
    return distill_kl(module.model(x), teacher_logits, module.options.distill_temperature, w)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "standard",
            _standard,
            uses_labels=True,
            needs_teacher=False,
            fake_quant=False,
            description="cross-entropy on the true labels",
        ),
        Method(
            "mixup",
            _mixup,
            uses_labels=True,
            needs_teacher=False,
            fake_quant=False,
            description="cross-entropy on Beta(mixup_alpha, mixup_alpha) mixtures of input pairs",
        ),
        Method(
            "adversarial",
            _adversarial,
            uses_labels=True,
            needs_teacher=False,
            fake_quant=False,
            description="cross-entropy on PGD examples (adv_eps, adv_steps; 1 step = FGSM)",
        ),
        Method(
            "qat",
            _standard,
            uses_labels=True,
            needs_teacher=False,
            fake_quant=True,
            description="cross-entropy through int8 fake quantization (qat_scheme), then convert",
        ),
        Method(
            "distill",
            _distill,
            uses_labels=False,
            needs_teacher=True,
            fake_quant=False,
            description="match a frozen teacher's outputs at distill_temperature; no labels",
        ),
    )
}


def method_names() -> list[str]:
    """The registry names, in a fixed order."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """The method called ``name``, or an error listing the valid ones."""
    if name not in METHODS:
        raise unknown_choice("training method", name, method_names())
    return METHODS[name]
