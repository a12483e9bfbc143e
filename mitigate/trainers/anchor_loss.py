"""What anchored QAT optimizes and reads: its options, its loss (KL to f0 plus a margin hinge on
the selected inputs) and its batches. The training itself is :mod:`mitigate.trainers.anchor`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from mitigate.errors import MitigateError
from mitigate.trainers._weighted import weighted_mean

__all__ = ["AnchorOptions", "anchor_batch", "anchor_loader", "anchor_loss"]


@dataclass(frozen=True)
class AnchorOptions:
    """What anchored QAT learns and minimises.

    Attributes:
        temperature: softmax temperature ``T > 0`` of the KL term (``T**2``-scaled).
        margin: the logit margin ``m >= 0`` the hinge asks of ``f0``'s top-1 on selected
            inputs. ``0`` penalises only a selected input ``q`` answers differently; a
            larger ``m`` also pushes ``q`` past ``f0``'s own margin, against the KL term
            (on digits LeNet-5, ``m = 1`` removed fewer disagreements than ``m = 0``).
        hinge_weight: weight ``>= 0`` of the hinge term (``0`` = KL only).
        learn_activations: learn activation scales and zero points.
        learn_weight_scales: learn the weight scales (per channel, or per tensor).
        learn_rounding: learn per-weight rounding offsets in ``[0, 1]`` (AdaRound-style).
        learn_bias: learn a shift of each quantized layer's float bias; ``q1`` then no longer
            quantizes ``f0``'s own biases (``AnchorResult.fp_identical`` is ``False``).
        floor_activation_scales: activation scales never shrink below their calibrated
            values. ``None`` (default): only under a reduced range (x86's default), whose 7
            bits keep fbgemm's int16 accumulation from saturating on CPUs without VNNI;
            learning finer scales there mostly re-learns ``reduce_range=false``, which a
            scheme can ask for directly.
    """

    temperature: float = 1.0
    margin: float = 0.0
    hinge_weight: float = 1.0
    learn_activations: bool = True
    learn_weight_scales: bool = True
    learn_rounding: bool = False
    learn_bias: bool = False
    floor_activation_scales: bool | None = None

    def __post_init__(self) -> None:
        checks = (
            ("temperature", _finite(self.temperature) and self.temperature > 0, "> 0"),
            ("margin", _finite(self.margin) and self.margin >= 0, ">= 0"),
            ("hinge_weight", _finite(self.hinge_weight) and self.hinge_weight >= 0, ">= 0"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise MitigateError(f"anchor {name} must be {rule}, got {getattr(self, name)}")
        if not (
            self.learn_activations
            or self.learn_weight_scales
            or self.learn_rounding
            or self.learn_bias
        ):
            raise MitigateError(
                "anchor has nothing to learn; enable one of learn_activations, "
                "learn_weight_scales, learn_rounding, learn_bias"
            )


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ---- the loss ------------------------------------------------------------------------------


def anchor_loss(
    logits: Tensor,
    reference: Tensor,
    selected: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    temperature: float = 1.0,
    margin: float = 0.0,
    hinge_weight: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, kl, hinge)``: the anchored-QAT loss of one batch and its two terms.

    Per input ``i``: ``kl_i = KL(softmax(r_i / T) || softmax(z_i / T)) * T**2`` and, if
    selected, ``hinge_i = max(0, margin - (z_i[y0] - max_{j != y0} z_i[j]))`` with
    ``y0 = argmax r_i``; ``total_i = kl_i + hinge_weight * hinge_i``. Each returned value is
    the (weighted) mean over the batch, non-selected inputs counting 0 in the hinge.

    Args:
        logits: the quantized model's logits ``z: [B, C]``, with gradients.
        reference: ``f0``'s logits ``r: [B, C]``, treated as constants.
        selected: bool ``[B]``, the inputs the hinge applies to (``None``: none).
        weights: per-sample weights ``[B]`` or ``None``.
        temperature, margin, hinge_weight: see :class:`AnchorOptions`.

    Example:
        >>> r = torch.tensor([[2.0, 0.0, -1.0]])
        >>> z = torch.tensor([[1.0, 0.5, 0.0]])
        >>> total, kl, hinge = anchor_loss(z, r, torch.tensor([True]), margin=1.0)
        >>> round(float(hinge), 3)
        0.5
        >>> [round(float(v), 3) for v in anchor_loss(r, r, torch.tensor([True]))]
        [0.0, 0.0, 0.0]
    """
    reference = reference.detach()
    log_q = F.log_softmax(logits / temperature, dim=1)
    log_p = F.log_softmax(reference / temperature, dim=1)
    kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1) * temperature**2
    if selected is None or not bool(selected.any()):
        hinge = torch.zeros_like(kl)
    else:
        top = reference.argmax(1, keepdim=True)
        chosen = logits.gather(1, top).squeeze(1)
        others = logits.scatter(1, top, float("-inf")).amax(1)
        hinge = F.relu(margin - (chosen - others)) * selected.to(logits.dtype)
    total = kl + hinge_weight * hinge
    return (
        weighted_mean(total, weights),
        weighted_mean(kl.detach(), weights),
        weighted_mean(hinge.detach(), weights),
    )


# ---- batches -------------------------------------------------------------------------------


def anchor_batch(batch: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(x, weights or None, selected bool [B])`` from one loader batch.

    A batch is ``x`` or a tuple ``(x, *extras)``; each extra is a ``[B]`` tensor recognised by
    its dtype: integer = labels (never read; ``-1`` placeholders are fine), float = per-sample
    weights, bool = the selected flags. Without flags, an input whose weight is above 1 counts
    as selected: how strategies up-weight their selected inputs (``(x, -1, w)`` batches with
    ``w = train.selected_weight``); with ``selected_weight = 1`` pass flags instead.

    Raises:
        MitigateError: non-float inputs, an extra that is not ``[B]``, two extras of one
            kind, or weights that are negative or not finite.

    Example:
        >>> x = torch.rand(3, 1, 8, 8)
        >>> _, w, s = anchor_batch((x, torch.full((3,), -1), torch.tensor([1.0, 4.0, 1.0])))
        >>> s.tolist()
        [False, True, False]
    """
    if isinstance(batch, Tensor):
        x, extras = batch, ()
    else:
        if len(batch) == 0:
            raise MitigateError("an empty batch; batches are x or (x, labels, weights, flags)")
        x, *extras = batch
    if not isinstance(x, Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise MitigateError(f"anchored QAT needs float inputs x: [B, ...]; got {kind}")
    n = x.shape[0]
    found: dict[str, Tensor] = {}
    for extra in extras:
        if not isinstance(extra, Tensor) or extra.shape != (n,):
            shape = tuple(extra.shape) if isinstance(extra, Tensor) else type(extra).__name__
            raise MitigateError(
                f"each extra in a batch must be a [B] = [{n}] tensor (labels, weights or "
                f"flags); got {shape}"
            )
        kind = (
            "flags"
            if extra.dtype == torch.bool
            else "weights"
            if extra.is_floating_point()
            else "labels"
        )
        if kind in found:
            raise MitigateError(f"a batch holds two {kind} tensors; pass at most one of each")
        found[kind] = extra
    weights = found.get("weights")
    if weights is not None and (
        not bool(torch.isfinite(weights).all()) or bool((weights < 0).any())
    ):
        raise MitigateError("per-sample weights must be finite and >= 0")
    if "flags" in found:
        selected = found["flags"]
    elif weights is not None:
        selected = weights > 1
    else:
        selected = torch.zeros(n, dtype=torch.bool)
    return x, weights, selected


def anchor_loader(
    inputs: Tensor,
    selected: Tensor | None = None,
    *,
    weights: Tensor | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> DataLoader:
    """A shuffled loader of ``(x, weights [B], selected bool [B])`` batches for
    :func:`train_anchor`, with its own seeded generator.

    Args:
        inputs: unlabelled float inputs ``[N, ...]``.
        selected: bool ``[N]`` flags (or indices) of the inputs the hinge applies to.
        weights: per-sample weights ``[N]`` (default 1).
        batch_size: inputs per batch.
        seed: the shuffling generator's seed.

    Example:
        >>> loader = anchor_loader(torch.rand(10, 1, 8, 8), torch.tensor([0, 3]), batch_size=4)
        >>> x, w, s = next(iter(loader))
        >>> tuple(x.shape), w.dtype, s.dtype
        ((4, 1, 8, 8), torch.float32, torch.bool)
    """
    n = len(inputs)
    if n == 0:
        raise MitigateError("anchor_loader got no inputs")
    if batch_size < 1:
        raise MitigateError(f"batch_size must be >= 1, got {batch_size}")
    flags = torch.zeros(n, dtype=torch.bool)
    if selected is not None:
        selected = torch.as_tensor(selected)
        if selected.dtype == torch.bool:
            if selected.shape != (n,):
                raise MitigateError(f"got {len(selected)} selected flags for {n} inputs")
            flags = selected.clone()
        else:
            index = selected.long().flatten()
            if len(index) and (int(index.min()) < 0 or int(index.max()) >= n):
                raise MitigateError(f"selected indices must lie in [0, {n - 1}]")
            flags[index] = True
    w = torch.ones(n) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (n,):
        raise MitigateError(f"got {w.numel()} weights for {n} inputs")
    from mitigate.trainers.fitting import batched_loader

    generator = torch.Generator().manual_seed(seed)
    return batched_loader(
        TensorDataset(inputs, w, flags), batch_size=batch_size, shuffle=True, generator=generator
    )
