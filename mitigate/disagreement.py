"""Disagreement between a reference model and a quantized copy: the functional core.

A disagreement is an input on which the two models' top-1 labels differ; ground truth is not
involved. Functions take logits ``[N, C]``, probabilities ``[N, C]`` or labels ``[N]`` for
either model (anything with a class axis is reduced with ``argmax``).

The maths follows the torchmetrics layout: ``_*_update`` functions turn one batch into counts
(the states :class:`DisagreementRate` sums over batches and processes),
``_disagreement_output`` turns summed counts into rates, and the public functions chain the two
for a single batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from mitigate._checks import describe, is_integer_tensor
from mitigate.errors import MitigateError

__all__ = [
    "FLIP_DIRECTIONS",
    "DisagreementRate",
    "disagreement_count",
    "disagreement_rate",
    "find_disagreements",
    "flip_directions",
    "to_labels",
]

FLIP_DIRECTIONS = ("correct_to_wrong", "wrong_to_correct", "wrong_to_other_wrong")


def to_labels(outputs: Tensor) -> Tensor:
    """``[N]`` labels from logits/probabilities ``[N, C]`` or labels ``[N]``."""
    if not isinstance(outputs, Tensor):
        raise MitigateError(
            f"expected a tensor of labels [N] or scores [N, C], got {type(outputs).__name__}"
        )
    if outputs.ndim == 2:
        return outputs.argmax(dim=1)
    if outputs.ndim == 1:
        return outputs.long()
    raise MitigateError(f"expected labels [N] or scores [N, C], got shape {tuple(outputs.shape)}")


# ---- validation at the public edge ----------------------------------------------------------


def _check_num_classes(num_classes: object, per_class: bool) -> int | None:
    if num_classes is None:
        if per_class:
            raise MitigateError("per_class=True needs num_classes (the size of the class axis)")
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise MitigateError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return num_classes


def _check_batch(
    reference: Tensor, other: Tensor, target: Tensor | None, num_classes: int | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Labels ``[N]`` of both models (and the target), checked against each other."""
    ref, oth = to_labels(reference), to_labels(other)
    if ref.shape != oth.shape:
        raise MitigateError(
            "the two models' outputs cover different inputs: "
            f"{tuple(ref.shape)} vs {tuple(oth.shape)}"
        )
    if num_classes is not None:
        for name, outputs, labels in (("reference", reference, ref), ("other", other, oth)):
            if outputs.ndim == 2 and outputs.shape[1] != num_classes:
                raise MitigateError(
                    f"{name} has {outputs.shape[1]} classes, but num_classes={num_classes}"
                )
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                raise MitigateError(
                    f"{name} labels must be in [0, {num_classes}), "
                    f"got {int(labels.min())}..{int(labels.max())}"
                )
    if target is None:
        return ref, oth, None
    if not is_integer_tensor(target, ref.shape):
        raise MitigateError(
            f"target must be integer labels of shape {list(ref.shape)}, got {describe(target)}"
        )
    return ref, oth, target.to(ref.device).long()  # type: ignore[union-attr]


# ---- per-batch counts and their rates (trust their inputs) ----------------------------------


def _disagreement_update(ref: Tensor, oth: Tensor) -> tuple[Tensor, Tensor]:
    """Disagreements and inputs in one batch of ``[N]`` labels."""
    return (ref != oth).sum(), torch.tensor(ref.numel(), device=ref.device)


def _per_class_update(ref: Tensor, oth: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """``[C]`` disagreements and ``[C]`` inputs, by the reference model's label."""
    flipped = torch.bincount(ref[ref != oth], minlength=num_classes)
    return flipped, torch.bincount(ref, minlength=num_classes)


def _flip_update(ref: Tensor, oth: Tensor, target: Tensor) -> Tensor:
    """``[3]`` counts in :data:`FLIP_DIRECTIONS` order."""
    flipped = ref != oth
    return torch.stack(
        [
            (flipped & (ref == target)).sum(),
            (flipped & (oth == target)).sum(),
            (flipped & (ref != target) & (oth != target)).sum(),
        ]
    )


def _disagreement_compute(disagreements: Tensor, total: Tensor) -> Tensor:
    # An empty batch has no disagreements: rate 0, not NaN, so sums over groups stay finite.
    return disagreements.float() / total.clamp_min(1).float()


def _disagreement_output(
    disagreements: Tensor,
    total: Tensor,
    class_counts: tuple[Tensor, Tensor] | None = None,
    flip_counts: Tensor | None = None,
) -> Tensor | dict[str, Tensor]:
    """The scalar rate, or a dict with ``rate``, ``per_class`` and the three flip rates."""
    rate = _disagreement_compute(disagreements, total)
    if class_counts is None and flip_counts is None:
        return rate
    out = {"rate": rate}
    if class_counts is not None:
        out["per_class"] = _disagreement_compute(*class_counts)
    if flip_counts is not None:
        for name, count in zip(FLIP_DIRECTIONS, flip_counts, strict=True):
            out[name] = _disagreement_compute(count, total)
    return out


# ---- public functions -----------------------------------------------------------------------


def disagreement_count(reference: Tensor, other: Tensor) -> int:
    """How many inputs the two models label differently.

    Example:
        >>> disagreement_count(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        1
    """
    ref, oth, _ = _check_batch(reference, other, None, None)
    return int(_disagreement_update(ref, oth)[0])


def disagreement_rate(
    reference: Tensor,
    other: Tensor,
    *,
    target: Tensor | None = None,
    num_classes: int | None = None,
    per_class: bool = False,
    flips: bool = False,
) -> Tensor | dict[str, Tensor]:
    """Share of inputs the two models label differently, a scalar tensor in ``[0, 1]``.

    The functional twin of :class:`mitigate.DisagreementRate`: the metric fed the same inputs
    in any number of batches computes the same values.

    Args:
        reference: the FP model's logits or probabilities ``[N, C]``, or labels ``[N]``.
        other: the quantized copy's outputs, same forms.
        target: ``[N]`` true labels; only needed by ``flips``.
        num_classes: size of the class axis; needed by ``per_class``, and checked against the
            inputs when given.
        per_class: also return ``per_class``, ``[C]`` rates among the inputs the *reference*
            model assigns to each class (0 for a class it never predicts).
        flips: also return the rate of each flip direction (share of all ``N`` inputs, so the
            three add up to ``rate``): ``correct_to_wrong`` (the reference was right, the copy
            is wrong), ``wrong_to_correct`` and ``wrong_to_other_wrong``.

    Returns:
        The scalar rate, or with ``per_class`` or ``flips`` a dict with ``rate`` and the
        requested entries. No inputs gives rate 0.

    Raises:
        MitigateError: mismatched shapes, labels outside ``[0, num_classes)``, ``per_class``
            without ``num_classes`` or ``flips`` without ``target``.

    Example:
        >>> ref, other = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 0, 1])
        >>> disagreement_rate(ref, other)
        tensor(0.5000)
        >>> out = disagreement_rate(ref, other, num_classes=3, per_class=True)
        >>> out["per_class"]
        tensor([0., 0., 1.])
        >>> disagreement_rate(ref, other, target=torch.tensor([0, 1, 2, 1]), flips=True)
        {'rate': tensor(0.5000), 'correct_to_wrong': tensor(0.2500), \
'wrong_to_correct': tensor(0.2500), 'wrong_to_other_wrong': tensor(0.)}
    """
    num_classes = _check_num_classes(num_classes, per_class)
    if flips and target is None:
        raise MitigateError("flips=True needs the true labels: pass target=[N] labels")
    ref, oth, tgt = _check_batch(reference, other, target, num_classes)
    return _disagreement_output(
        *_disagreement_update(ref, oth),
        _per_class_update(ref, oth, num_classes) if per_class else None,  # type: ignore[arg-type]
        _flip_update(ref, oth, tgt) if flips else None,  # type: ignore[arg-type]
    )


def flip_directions(reference: Tensor, other: Tensor, target: Tensor) -> dict[str, int]:
    """Count the disagreements by what they do to correctness against the true ``target``.

    ``correct_to_wrong``: the reference was right, the copy is wrong; ``wrong_to_correct``: the
    reverse; ``wrong_to_other_wrong``: both wrong, with different labels.

    Example:
        >>> ref, other = torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0])
        >>> flip_directions(ref, other, target=torch.tensor([0, 1, 0]))
        {'correct_to_wrong': 1, 'wrong_to_correct': 1, 'wrong_to_other_wrong': 0}
    """
    ref, oth, tgt = _check_batch(reference, other, target, None)
    counts = _flip_update(ref, oth, tgt)  # type: ignore[arg-type]
    return {name: int(c) for name, c in zip(FLIP_DIRECTIONS, counts, strict=True)}


@torch.no_grad()
def find_disagreements(
    reference: nn.Module, other: nn.Module, inputs: Tensor, *, batch_size: int = 256
) -> Tensor:
    """Indices of the inputs on which two models' top-1 labels differ.

    Both models run in eval mode (their modes are restored afterwards) on the inputs' device.

    Args:
        reference: the FP model, ``[B, ...] -> [B, C]`` logits.
        other: the copy to compare, e.g. ``mitigate.quantize(reference, "int8", calibration)``.
        inputs: ``float [N, ...]``.
        batch_size: inputs per forward pass.

    Returns:
        ``int64 [K]`` ascending positions in ``inputs``.

    Example:
        >>> net = torch.nn.Linear(4, 3)
        >>> same = torch.nn.Sequential(net, torch.nn.Flatten())  # same answers
        >>> find_disagreements(net, same, torch.rand(10, 4))
        tensor([], dtype=torch.int64)
    """
    if not isinstance(inputs, Tensor) or inputs.ndim < 1:
        raise MitigateError(f"inputs must be a tensor [N, ...], got {type(inputs).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MitigateError(f"batch_size must be an int >= 1, got {batch_size!r}")
    modes = [(m, m.training) for model in (reference, other) for m in model.modules()]
    reference.eval()
    other.eval()
    try:
        found = [
            torch.nonzero(to_labels(reference(x)) != to_labels(other(x))).flatten() + start
            for start, x in zip(
                range(0, inputs.shape[0], batch_size), inputs.split(batch_size), strict=True
            )
        ]
    finally:
        for module, mode in modes:
            module.training = mode
    return torch.cat(found) if found else torch.empty(0, dtype=torch.int64)


class DisagreementRate(Metric):
    """Share of inputs on which a reference model and a copy (e.g. quantized) disagree.

    A torchmetrics ``Metric``: call ``update`` once per batch, ``compute`` at the end, and log
    it with ``self.log("val/disagreement_rate", metric)`` like any metric. Its states are
    counts summed over batches and, under DDP, over processes, so the result equals
    :func:`disagreement_rate` on all inputs at once however they are split.

    Args:
        num_classes: size of the class axis; needed by ``per_class``, checked when given.
        per_class: also compute ``per_class``, ``[C]`` rates by the reference model's label.
        flips: also compute the three flip-direction rates (share of all inputs); ``update``
            then needs ``target``.
        kwargs: torchmetrics options (``sync_on_compute``, ``process_group``, ...).

    ``compute`` returns a scalar, or with ``per_class``/``flips`` a dict shaped like
    :func:`disagreement_rate`'s (log its scalars with ``self.log_dict``).

    Example:
        >>> metric = DisagreementRate()
        >>> metric.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([1, 1]), torch.tensor([1, 1]))
        >>> metric.compute()
        tensor(0.2500)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    disagreements: Tensor
    total: Tensor
    class_disagreements: Tensor
    class_total: Tensor
    flip_counts: Tensor

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        per_class: bool = False,
        flips: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = _check_num_classes(num_classes, per_class)
        self.per_class, self.flips = bool(per_class), bool(flips)
        zero = torch.tensor(0, dtype=torch.int64)
        self.add_state("disagreements", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("total", default=zero.clone(), dist_reduce_fx="sum")
        if self.per_class:
            counts = torch.zeros(num_classes, dtype=torch.int64)  # type: ignore[arg-type]
            self.add_state("class_disagreements", default=counts.clone(), dist_reduce_fx="sum")
            self.add_state("class_total", default=counts.clone(), dist_reduce_fx="sum")
        if self.flips:
            self.add_state(
                "flip_counts", default=torch.zeros(3, dtype=torch.int64), dist_reduce_fx="sum"
            )

    def update(self, reference: Tensor, other: Tensor, target: Tensor | None = None) -> None:
        """Add one batch: outputs ``[B, C]`` or labels ``[B]`` of both models, ``target [B]``."""
        if self.flips and target is None:
            raise MitigateError("DisagreementRate(flips=True) needs target=[B] true labels")
        ref, oth, tgt = _check_batch(reference, other, target, self.num_classes)
        ref, oth = ref.to(self.device), oth.to(self.device)
        disagreements, total = _disagreement_update(ref, oth)
        self.disagreements += disagreements
        self.total += total
        if self.per_class:
            flipped, seen = _per_class_update(ref, oth, self.num_classes)  # type: ignore[arg-type]
            self.class_disagreements += flipped
            self.class_total += seen
        if self.flips:
            self.flip_counts += _flip_update(ref, oth, tgt.to(self.device))  # type: ignore[union-attr]

    def compute(self) -> Tensor | dict[str, Tensor]:
        """The rate over every input seen since the last ``reset`` (0 before any input)."""
        return _disagreement_output(
            self.disagreements,
            self.total,
            (self.class_disagreements, self.class_total) if self.per_class else None,
            self.flip_counts if self.flips else None,
        )
