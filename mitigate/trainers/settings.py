"""How a model is trained: the settings every training method reads (no torch import here, so
the config and the CLI's ``--help`` stay light)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """How models are trained: the base model (``mitigate train``) and the fine-tuning that
    mitigation strategies run. ``method`` is one of ``mitigate.trainers.METHODS``; each
    method reads only its own fields (``mixup_*``, ``adv_*``, ``distill_*``, ``qat_*``).

    ``freeze_bn_epoch`` / ``freeze_observer_epoch``: freeze batch-norm statistics / QAT
    observers once that many epochs have run (``0`` = from the start, ``-1`` = never).
    ``selected_weight``: loss weight of each selected pool input relative to a training
    input when a strategy fine-tunes on both (``1`` = plain union).
    """

    method: str = "standard"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    mixup_alpha: float = 0.2
    adv_eps: float = 0.1
    adv_steps: int = 10
    adv_step_size: float = 0.0  # 0 = eps for FGSM (steps 1), else 2.5 * eps / steps
    distill_temperature: float = 2.0
    qat_scheme: str = "int8"
    freeze_bn_epoch: int = -1
    freeze_observer_epoch: int = -1
    selected_weight: float = 1.0
