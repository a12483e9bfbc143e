"""Knowledge distillation (Hinton et al., 2015): match a frozen teacher's softened outputs.

No labels are involved, so any inputs — training data, unlabelled pool inputs — can be used.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from mitigate.trainers._weighted import weighted_mean

__all__ = ["distill_kl"]


def distill_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    weights: Tensor | None = None,
) -> Tensor:
    """``KL(softmax(t / T) || softmax(s / T)) * T**2``, averaged (or weighted) over the batch.

    The ``T**2`` keeps the gradient's scale independent of the temperature.

    Args:
        student_logits: ``[B, C]``, with gradients.
        teacher_logits: ``[B, C]``, treated as constants.
        temperature: ``T > 0``; higher values weigh the teacher's non-top classes more.
        weights: optional per-sample weights ``[B]``.

    Example:
        >>> import torch
        >>> t = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(distill_kl(t, t, 2.0))
        0.0
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    per_sample = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(1)
    return weighted_mean(per_sample, weights) * temperature**2
