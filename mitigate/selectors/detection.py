"""How well does a score find the disagreements? Detector metrics, overall and per group.

Two protocols:

- ``standard`` (:func:`detection_metrics`): the score itself ranks every input. AUROC,
  average precision (AUPR, disagreements as the positive class), the true negative rate at
  95% true positive rate, and precision / recall of the top-``budget`` selection (what share
  of the selected inputs really disagree; what share of all disagreements the budget catches).
- ``paper`` (:func:`paper_protocol`): the study's protocol. The disagreements against an
  equal number of random agreements, a one-feature logistic regression fitted on a stratified
  90% split, AUROC / AUPR / TNR@95 of its decision function on the other 10%.

The curves are computed once per call from exact integer true/false positive counts and the
areas in float64. ``torchmetrics`` (``binary_auroc``, ``binary_average_precision``,
``binary_roc``) uses the same definitions and the tests check against it and scikit-learn, but
torchmetrics 1.9 divides the counts in float32, which puts a perfect detector's AUROC at
0.99999994 or 1.0000001; here a perfect detector scores exactly 1.

Metrics that are undefined come back as NaN: AUROC, AUPR and TNR@95 when the inputs hold no
disagreement or nothing but disagreements; precision at the budget when the budget is 0;
recall at the budget when there is no disagreement.

Example:
    >>> import torch
    >>> scores = torch.tensor([0.9, 0.8, 0.3, 0.2, 0.1])
    >>> truth = torch.tensor([True, False, True, False, False])
    >>> m = detection_metrics(scores, truth, budget=2)
    >>> round(m["auroc"], 4), m["precision_at_budget"], m["recall_at_budget"]
    (0.8333, 0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mitigate._checks import describe, is_integer_tensor
from mitigate.errors import MitigateError, unknown_choice
from mitigate.selectors.selection import _check_scores, resolve_budget, select

__all__ = [
    "PROTOCOLS",
    "detection_metrics",
    "evaluate_scores",
    "paper_protocol",
]

PROTOCOLS: tuple[str, ...] = ("standard", "paper")
"""Choices for ``protocol`` in :func:`evaluate_scores` (and the CLI's ``--protocol``)."""

# TPR >= 95% checked on integers: 20 * TP >= 19 * P, no rounding at the boundary.
_TPR_NUM, _TPR_DEN = 19, 20
# The paper protocol needs a few of each class so the 10% test split holds both.
_PAPER_MIN_PER_CLASS = 10

_NAN = float("nan")


# ---- maths on validated inputs ---------------------------------------------------------------


def _curve(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """True and false positive counts at each distinct threshold, highest first, from (0, 0)."""
    order = torch.sort(scores, descending=True).indices
    sorted_scores, hits = scores[order], target[order].to(torch.int64)
    # The last position of each run of equal scores is one threshold.
    ends = torch.nonzero(sorted_scores[1:] != sorted_scores[:-1]).squeeze(1)
    last = torch.tensor([scores.shape[0] - 1], device=scores.device)
    ends = torch.cat([ends, last])
    tps = hits.cumsum(0)[ends]
    fps = ends + 1 - tps
    zero = torch.zeros(1, dtype=torch.int64, device=scores.device)
    return torch.cat([zero, tps]), torch.cat([zero, fps])


def _ranking_metrics(scores: Tensor, target: Tensor) -> dict[str, float]:
    positives = int(target.sum())
    negatives = target.shape[0] - positives
    if positives == 0 or negatives == 0:
        return {"auroc": _NAN, "aupr": _NAN, "tnr_at_95tpr": _NAN}
    tps, fps = _curve(scores, target)
    # Trapezoids on integer counts; one exact division at the end.
    twice_area = int(((fps[1:] - fps[:-1]) * (tps[1:] + tps[:-1])).sum())
    auroc = twice_area / (2 * positives * negatives)
    # Step-wise average precision: sum over thresholds of (recall gain) * precision.
    tp, fp = tps[1:].to(torch.float64), fps[1:].to(torch.float64)
    gain = (tps[1:] - tps[:-1]).to(torch.float64)
    aupr = float((gain * tp / (tp + fp)).sum()) / positives
    # Largest TNR among thresholds with TPR >= 95%; the last threshold always qualifies.
    reach = tps * _TPR_DEN >= positives * _TPR_NUM
    tnr = (negatives - int(fps[reach].min())) / negatives
    return {"auroc": auroc, "aupr": aupr, "tnr_at_95tpr": tnr}


def _budget_metrics(selected: Tensor, target: Tensor) -> dict[str, float]:
    """``selected``: [N] bool mask of the selection, restricted to the inputs evaluated."""
    k = int(selected.sum())
    positives = int(target.sum())
    hits = int((selected & target).sum())
    return {
        "budget": k,
        "precision_at_budget": hits / k if k else _NAN,
        "recall_at_budget": hits / positives if positives else _NAN,
    }


def _paper(scores: Tensor, target: Tensor, seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    positives = torch.nonzero(target).squeeze(1).cpu()
    negatives = torch.nonzero(~target).squeeze(1).cpu()
    n_pos = positives.shape[0]
    generator = torch.Generator().manual_seed(seed % 2**63)
    pick = torch.randperm(negatives.shape[0], generator=generator)[:n_pos]
    negatives = negatives[pick.sort().values]
    out = {"n": n_pos + negatives.shape[0], "positives": n_pos, "n_test": 0}
    if min(n_pos, negatives.shape[0]) < _PAPER_MIN_PER_CLASS:
        return {"auroc": _NAN, "aupr": _NAN, "tnr_at_95tpr": _NAN, **out}
    chosen = torch.cat([positives, negatives])
    x = scores.detach().cpu()[chosen].to(torch.float64).numpy().reshape(-1, 1)
    y = target.cpu()[chosen].numpy().astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.1, stratify=y, random_state=seed % 2**32
    )
    # Standardising first keeps L2 regularisation from flattening a score with a tiny range
    # (a monotone change, so it does not alter what the protocol measures).
    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(x_train, y_train)
    # The decision function (the logit) ranks like predict_proba but never saturates to ties.
    test_scores = torch.from_numpy(np.asarray(model.decision_function(x_test), dtype=np.float64))
    metrics = _ranking_metrics(test_scores, torch.from_numpy(y_test).bool())
    return {**metrics, **out, "n_test": int(y_test.shape[0])}


# ---- validation at the public edge ----------------------------------------------------------


def _check_truth(is_disagreement: object, n: int | None = None) -> Tensor:
    if not isinstance(is_disagreement, Tensor) or is_disagreement.ndim != 1:
        got = (
            list(is_disagreement.shape)
            if isinstance(is_disagreement, Tensor)
            else type(is_disagreement).__name__
        )
        raise MitigateError(f"is_disagreement must be a 1-D tensor, got {got}")
    if n is not None and is_disagreement.shape[0] != n:
        raise MitigateError(
            f"is_disagreement has {is_disagreement.shape[0]} entries but scores have {n}"
        )
    if is_disagreement.dtype != torch.bool:
        if is_disagreement.is_complex() or not bool(
            ((is_disagreement == 0) | (is_disagreement == 1)).all()
        ):
            raise MitigateError("is_disagreement must be boolean or hold only 0 and 1")
        is_disagreement = is_disagreement != 0
    return is_disagreement


def _check_pair(scores: object, is_disagreement: object) -> tuple[Tensor, Tensor]:
    scores = _check_scores(scores)
    truth = _check_truth(is_disagreement, scores.shape[0])
    return scores, truth.to(scores.device)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MitigateError(f"seed must be an int, got {seed!r}")
    return seed


# ---- public functions -----------------------------------------------------------------------


def detection_metrics(
    scores: Tensor, is_disagreement: Tensor, *, budget: int | float
) -> dict[str, float]:
    """Detector metrics of one score on one set of inputs.

    Args:
        scores: ``[N]`` scores, higher = more likely to disagree.
        is_disagreement: ``[N]`` bool (or 0/1) truth: did the two models disagree.
        budget: count or fraction of ``N`` selected by :func:`~mitigate.selectors.select`
            (highest scores, ties to the lower index) for precision / recall at the budget.

    Returns:
        ``auroc``, ``aupr``, ``tnr_at_95tpr`` (the largest TNR among thresholds whose TPR is
        at least 95%), ``precision_at_budget``, ``recall_at_budget`` as floats (NaN where
        undefined, see the module docstring), and the counts ``n``, ``positives`` and
        ``budget`` (the resolved count) as ints.

    Example:
        >>> m = detection_metrics(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1, 0, 0]), budget=1)
        >>> m["auroc"], m["tnr_at_95tpr"], m["precision_at_budget"]
        (1.0, 1.0, 1.0)
    """
    scores, truth = _check_pair(scores, is_disagreement)
    k = resolve_budget(budget, scores.shape[0])
    selected = torch.zeros_like(truth)
    selected[select(scores, k)] = True
    return {
        **_ranking_metrics(scores, truth),
        **_budget_metrics(selected, truth),
        "n": int(truth.shape[0]),
        "positives": int(truth.sum()),
    }


def paper_protocol(scores: Tensor, is_disagreement: Tensor, *, seed: int) -> dict[str, float]:
    """The study's detector protocol on one score.

    Takes every disagreement and an equal number of agreements drawn at random (all of them if
    there are fewer), fits a one-feature logistic regression (the score, standardised) on a
    stratified 90% split and reports AUROC, AUPR and TNR@95 of its decision function on the
    other 10%. The regression is monotone in the score, so it can flip a score that points the
    wrong way but otherwise measures the score's own ranking on a small balanced sample.

    Args:
        scores: ``[N]`` scores.
        is_disagreement: ``[N]`` bool (or 0/1) truth.
        seed: draws the agreements and the split.

    Returns:
        ``auroc``, ``aupr``, ``tnr_at_95tpr`` (NaN when either class has fewer than 10
        inputs), ``n`` (the balanced sample), ``positives`` and ``n_test``.

    Example:
        >>> truth = torch.arange(200) % 4 == 0
        >>> paper_protocol(truth.double() + torch.rand(200) * 0.1, truth, seed=0)["auroc"]
        1.0
    """
    scores, truth = _check_pair(scores, is_disagreement)
    return _paper(scores, truth, _check_seed(seed))


def evaluate_scores(
    scores: Mapping[str, Tensor],
    is_disagreement: Tensor,
    *,
    budget: int | float | None = None,
    groups: Tensor | None = None,
    group_names: Sequence[str] | None = None,
    protocol: str = "standard",
    seed: int = 0,
) -> list[dict[str, object]]:
    """Detector metrics for every score, overall and per group: one row per (score, group).

    With the ``standard`` protocol the budget is spent once on the whole pool, as a user
    would: a group's ``precision_at_budget`` is the share of the selected inputs *in that
    group* that disagree, its ``recall_at_budget`` the share of the group's disagreements that
    the selection caught, and its ``budget`` how many selected inputs fell in the group.
    AUROC, AUPR and TNR@95 rank the inputs within the group. The ``paper`` protocol runs
    :func:`paper_protocol` within each group with the same seed.

    Args:
        scores: ``{score name: [N] scores}``, e.g. from
            :func:`~mitigate.selectors.compute_scores`.
        is_disagreement: ``[N]`` bool (or 0/1) truth.
        budget: count or fraction of the pool; required by the ``standard`` protocol.
        groups: ``[N]`` integer group id of each input (e.g. the shift); None = overall only.
        group_names: names indexed by group id; default ``str(id)``.
        protocol: one of :data:`PROTOCOLS`.
        seed: seed of the ``paper`` protocol.

    Returns:
        Rows ``{"score", "group", **metrics}``: for each score, first the group ``"all"``,
        then the groups in ascending id order (groups with no input are left out).

    Example:
        >>> truth = torch.tensor([True, False, False, True])
        >>> rows = evaluate_scores(
        ...     {"s": torch.tensor([0.9, 0.1, 0.2, 0.8])}, truth, budget=2,
        ...     groups=torch.tensor([0, 0, 1, 1]), group_names=["clean", "noise"])
        >>> [(r["group"], r["auroc"], r["budget"]) for r in rows]
        [('all', 1.0, 2), ('clean', 1.0, 1), ('noise', 1.0, 1)]
    """
    if protocol not in PROTOCOLS:
        raise unknown_choice("protocol", protocol, PROTOCOLS)
    if protocol == "standard" and budget is None:
        raise MitigateError("the standard protocol needs a budget (a count or a fraction)")
    if not isinstance(scores, Mapping) or not scores:
        raise MitigateError("scores must be a non-empty mapping {score name: [N] scores}")
    truth = _check_truth(is_disagreement)
    n = truth.shape[0]
    checked = {}
    for name, values in scores.items():
        values = _check_scores(values, f"scores[{name!r}]")
        if values.shape[0] != n:
            raise MitigateError(f"scores[{name!r}] has {values.shape[0]} entries, truth has {n}")
        checked[name] = values
    seed = _check_seed(seed)
    members: list[tuple[str, Tensor | None]] = [("all", None)]
    if groups is not None:
        members += _group_members(groups, n, group_names)

    rows: list[dict[str, object]] = []
    for name, values in checked.items():
        target = truth.to(values.device)
        if protocol == "standard":
            selected = torch.zeros_like(target)
            selected[select(values, budget)] = True  # type: ignore[arg-type]
        for group, member in members:
            mask = None if member is None else member.to(values.device)
            v, t = (values, target) if mask is None else (values[mask], target[mask])
            if protocol == "paper":
                metrics = _paper(v, t, seed)
            else:
                s = selected if mask is None else selected[mask]
                metrics = {
                    **_ranking_metrics(v, t),
                    **_budget_metrics(s, t),
                    "n": int(t.shape[0]),
                    "positives": int(t.sum()),
                }
            rows.append({"score": name, "group": group, **metrics})
    return rows


def _group_members(
    groups: object, n: int, group_names: Sequence[str] | None
) -> list[tuple[str, Tensor]]:
    if not is_integer_tensor(groups, (n,)):
        raise MitigateError(
            f"groups must be an integer tensor of shape [{n}], got {describe(groups)}"
        )
    ids = [int(g) for g in torch.unique(groups)]
    if group_names is not None and ids and (ids[0] < 0 or ids[-1] >= len(group_names)):
        raise MitigateError(
            f"group ids must be in [0, {len(group_names)}) to index group_names, "
            f"got {ids[0]}..{ids[-1]}"
        )
    # Integer indices, not boolean masks: slicing a 40k-input pool by index is ~400x faster.
    order = torch.argsort(groups, stable=True)
    counts = torch.bincount(groups - groups.min()) if ids else torch.zeros(0, dtype=torch.long)
    members = torch.split(order, [int(c) for c in counts if c])
    return [
        (group_names[i] if group_names is not None else str(i), m)
        for i, m in zip(ids, members, strict=True)
    ]
