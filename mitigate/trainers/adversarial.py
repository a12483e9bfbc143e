"""Adversarial examples for adversarial training: PGD (Madry et al., 2018) and FGSM.

Mode during the attack (a choice, documented here): the model runs in **eval mode with its
observers paused** while the examples are built. Batch norm then uses its running statistics
and does not update them from the attack's intermediate inputs, dropout is off, and a QAT
model's quantization ranges do not move; fake quantization stays on, so a QAT model is
attacked as the quantized model it will become. The caller's mode is restored afterwards,
and the training step that follows sees the finished adversarial batch in train mode — so
batch-norm running statistics describe the adversarial inputs the model is trained on, as in
Madry et al.'s adversarial-only training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mitigate.scanning import eval_mode
from mitigate.trainers.qat import pause_observers

__all__ = ["pgd_attack", "resolve_step_size"]


def resolve_step_size(eps: float, steps: int, step_size: float) -> float:
    """``step_size`` if positive, else the usual choice: ``eps`` for one step (FGSM), and
    ``2.5 * eps / steps`` for PGD (enough to reach the edge of the ball from its centre).

    Example:
        >>> resolve_step_size(0.3, 1, 0.0), resolve_step_size(0.1, 10, 0.0)
        (0.3, 0.025)
    """
    if step_size > 0:
        return step_size
    return eps if steps == 1 else 2.5 * eps / steps


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float = 0.0,
    random_start: bool | None = None,
) -> Tensor:
    """Inputs within ``eps`` (L-infinity) of ``x`` that raise ``model``'s cross-entropy.

    Args:
        model: classifier ``[B, ...] -> [B, C]``; its parameters receive no gradients.
        x: clean inputs ``[B, C, H, W]`` in ``[0, 1]``.
        labels: true labels ``[B]``.
        eps: radius of the L-infinity ball; ``0`` returns ``x`` unchanged.
        steps: signed-gradient steps; ``1`` with ``step_size = eps`` and no random start is
            FGSM.
        step_size: size of each step; ``0`` picks :func:`resolve_step_size`'s default.
        random_start: start from a uniform random point of the ball (torch's global
            generator); default ``True`` for PGD (``steps > 1``), ``False`` for FGSM.

    Returns:
        Adversarial inputs ``[B, C, H, W]``, clamped to ``[0, 1]``, detached.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(3, 1, 2, 2)
        >>> adv = pgd_attack(net, x, torch.tensor([0, 1, 0]), eps=0.1, steps=1)
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), bool(adv.min() >= 0)
        (True, True)
    """
    x = x.detach()
    if eps <= 0:
        return x.clone()
    step = resolve_step_size(eps, steps, step_size)
    start = steps > 1 if random_start is None else random_start
    low, high = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
    adv = x + torch.empty_like(x).uniform_(-eps, eps) if start else x.clone()
    adv = torch.max(torch.min(adv, high), low)
    with eval_mode(model), pause_observers(model), torch.enable_grad():
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), labels)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + step * grad.sign()
            adv = torch.max(torch.min(adv, high), low)
    return adv.detach()
