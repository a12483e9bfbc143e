"""Per-group accuracy and disagreement of one quantized copy, and its activation ranges.

Groups are the ones study B reports worst-case numbers over: the clean inputs, each shift
family (all its severities together, held-out families included), each natural shift, and
each class (by true label). A pure function of per-input labels, so every number in a
calibration report can be recounted from the saved per-input file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["activation_qparams", "group_masks", "group_metrics"]


def group_masks(pred: Any) -> dict[str, np.ndarray]:
    """Group name -> boolean mask over ``pred``'s inputs (a :class:`Predictions`): ``clean``,
    each family, each ``natural:<name>``, then ``class:<name>`` for every class present."""
    masks: dict[str, np.ndarray] = {}
    of_group = np.asarray(pred.group)
    for name in dict.fromkeys(g.shift or g.name for g in pred.groups):
        members = [i for i, g in enumerate(pred.groups) if (g.shift or g.name) == name]
        masks[name] = np.isin(of_group, members)
    classes = pred.classes or tuple(str(c) for c in range(int(pred.label.max()) + 1))
    for c, class_name in enumerate(classes):
        mask = pred.label == c
        if mask.any():
            masks[f"class:{class_name}"] = mask
    return {name: mask for name, mask in masks.items() if mask.any()}


def group_metrics(pred: Any, quantized: np.ndarray) -> dict[str, Any]:
    """Accuracy and disagreement (against ``pred.reference``, the FP labels) overall and per
    group, and the worst group of each.

    Args:
        pred: :class:`mitigate.scanning.Predictions` holding labels and the FP model's labels.
        quantized: ``int [N]`` labels of the quantized copy on the same inputs.

    Returns:
        ``overall`` and every entry of ``groups``: ``{n, disagreements, disagreement_rate,
        accuracy, fp_accuracy}``; ``worst_disagreement``: the group with the highest
        disagreement rate; ``worst_accuracy``: the one with the lowest quantized accuracy
        (ties: the first in group order).
    """
    quantized = np.asarray(quantized)
    overall = _counts(pred.label, pred.reference, quantized)
    groups = [
        {"name": name} | _counts(pred.label[m], pred.reference[m], quantized[m])
        for name, m in group_masks(pred).items()
    ]
    worst_dis = max(groups, key=lambda g: g["disagreement_rate"])
    worst_acc = min(groups, key=lambda g: g["accuracy"])
    return {
        "overall": overall,
        "groups": groups,
        "worst_disagreement": {
            k: worst_dis[k] for k in ("name", "n", "disagreements", "disagreement_rate")
        },
        "worst_accuracy": {k: worst_acc[k] for k in ("name", "n", "accuracy", "fp_accuracy")},
    }


def _counts(label: np.ndarray, fp: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    n = int(label.shape[0])
    disagreements = int((q != fp).sum())
    return {
        "n": n,
        "disagreements": disagreements,
        "disagreement_rate": disagreements / n if n else 0.0,
        "accuracy": float((q == label).sum()) / n if n else 0.0,
        "fp_accuracy": float((fp == label).sum()) / n if n else 0.0,
    }


def activation_qparams(quantized: Any) -> dict[str, list[float]]:
    """``[scale, zero_point]`` of every quantized activation of a static int8 copy.

    These are what calibration decides (weight scales come from the weights alone): the
    input quantizer's buffers and every quantized module's output ``scale``/``zero_point``.
    Names are module paths (``conv1``) or the graph's buffer prefix (``conv1_input``).
    """
    inner = getattr(quantized, "inner", quantized)
    params: dict[str, list[float]] = {}
    buffers = dict(inner.named_buffers())
    for name, value in buffers.items():
        if name.endswith("_scale_0"):
            prefix = name[: -len("_scale_0")]
            zero = buffers.get(f"{prefix}_zero_point_0")
            params[prefix] = [float(value), float(zero) if zero is not None else 0.0]
    for name, module in inner.named_modules():
        scale, zero = getattr(module, "scale", None), getattr(module, "zero_point", None)
        if name and scale is not None and zero is not None and not callable(scale):
            params[name] = [float(scale), float(zero)]
    return params
