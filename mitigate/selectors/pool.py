"""Select from the unlabelled pool: score every pool input under every pool group, keep the
top of the budget, and rebuild just those inputs.

Settings search, layer fallback and sensitivity score a quantized copy by its disagreements
on a few thousand inputs, and the training strategies retrain with a budget of them. The
cheap, label-free choice is the pool inputs a selector ranks highest (margin by default):
they hold most of the pool's disagreements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mitigate.data.base import LabelledData
from mitigate.data.evalset import Group, iter_batches, split_seed
from mitigate.errors import MitigateError, unknown_choice
from mitigate.scanning import forward_batches
from mitigate.selectors.scores import SCORES, ScoreSpec, score_logits
from mitigate.selectors.selection import resolve_budget, select
from mitigate.selectors.streaming import StreamingTopK

__all__ = [
    "Selected",
    "check_selector",
    "pool_size",
    "select_from_pool",
    "top_of_pool",
    "tops_of_pool",
]


@dataclass(frozen=True)
class Selected:
    """The pool inputs a selector picked, in pick order (highest score first).

    Attributes:
        x: ``float [K, C, H, W]`` images or ``int64 [K, max_len]`` token ids.
        y: ``int64 [K]`` true labels, read only by strategies that use labels (a labeller).
        meta: ``K`` pairs (pool group name, index in the pool split), for reports.
    """

    x: Tensor
    y: Tensor
    meta: list[tuple[str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def without_inputs(self) -> Selected:
        """An empty selection of the same input shape: the control run."""
        return self.head(0)

    def head(self, k: int) -> Selected:
        """The first ``k`` picks: what a budget of ``k`` selects (a prefix of a larger one)."""
        return Selected(self.x[:k], self.y[:k], self.meta[:k])


def check_selector(selector: str) -> ScoreSpec:
    """The registry entry of ``selector``; a one-line :class:`MitigateError` naming the valid
    selectors for an unknown one. Where a name enters, look it up once with this and pass the
    :class:`~mitigate.selectors.ScoreSpec` on."""
    spec = SCORES.get(selector) if isinstance(selector, str) else None
    if spec is None:
        raise unknown_choice("selector", selector, list(SCORES))
    return spec


def pool_size(pool: LabelledData, groups: Sequence[Group]) -> int:
    """How many inputs a selector ranks: every input of ``pool`` under every group. Input
    ``i`` of group ``g`` sits at position ``g * len(pool) + i``."""
    return len(pool) * len(groups)


def select_from_pool(
    model: nn.Module,
    pool: LabelledData,
    groups: Sequence[Group],
    *,
    selector: str,
    budget: int | float,
    seed: int,
    batch_size: int = 512,
    q_model: nn.Module | None = None,
    class_balanced: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> Selected:
    """Score the whole pool with ``selector`` and return the top ``budget`` inputs.

    The pool is every input of ``pool`` under every group of ``groups`` (e.g. clean plus each
    shift family not held out, at each severity). It is scanned batch by batch, keeping only
    the running top-``budget`` in memory; then the picked inputs are rebuilt by re-applying
    their shift to those indices only (a shifted input depends only on ``(seed, split, shift,
    severity, index)``, so it is the input that was scored, up to float rounding of about
    1e-7 in the resampling families).

    Pool position of input ``i`` of group ``g`` is ``g * len(pool) + i``: the ``random``
    selector hashes that position, and ties go to the lower position.

    Args:
        model: the full-precision model, ``[B, ...] -> [B, classes]`` logits.
        pool: the pool split (images or texts).
        groups: the pool groups (:func:`mitigate.data.evalset.build_groups`).
        selector: a name from :func:`mitigate.selectors.score_names`.
        budget: a count, or a fraction of the whole pool (see
            :func:`mitigate.selectors.resolve_budget`).
        seed: the run's seed (shifts and the ``random`` score).
        batch_size: scan batch size.
        q_model: the quantized copy; required by differential selectors, ignored by the
            others.
        class_balanced: pick round-robin over the FP model's predicted classes, as
            :func:`mitigate.selectors.select` does; the scan keeps a running top-``budget`` per
            class, so memory stays O(budget x classes), not O(pool).
        on_batch: called with each scanned batch's input count (a progress bar).

    Returns:
        The picked inputs as :class:`Selected`, in pick order.

    Raises:
        MitigateError: unknown selector, a differential selector without ``q_model``, or a
            bad budget.
    """
    score = check_selector(selector)
    k = resolve_budget(budget, pool_size(pool, groups))
    return top_of_pool(
        model,
        pool,
        groups,
        score,
        k,
        seed=seed,
        batch_size=batch_size,
        q_model=q_model,
        class_balanced=class_balanced,
        on_batch=on_batch,
    )


def top_of_pool(
    model: nn.Module,
    pool: LabelledData,
    groups: Sequence[Group],
    score: ScoreSpec,
    k: int,
    *,
    seed: int,
    batch_size: int = 512,
    q_model: nn.Module | None = None,
    class_balanced: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> Selected:
    """:func:`select_from_pool` for a selector already looked up (:func:`check_selector`) and
    a budget already resolved to a count ``k`` (:func:`~mitigate.selectors.resolve_budget`):
    what a run calls once it has validated both where they entered.

    Raises:
        MitigateError: a differential selector without ``q_model``, or non-finite logits.
    """
    return tops_of_pool(
        model,
        pool,
        groups,
        [score],
        k,
        seed=seed,
        batch_size=batch_size,
        q_model=q_model,
        class_balanced=class_balanced,
        on_batch=on_batch,
    )[score.name]


def tops_of_pool(
    model: nn.Module,
    pool: LabelledData,
    groups: Sequence[Group],
    scores: Sequence[ScoreSpec],
    k: int,
    *,
    seed: int,
    batch_size: int = 512,
    q_model: nn.Module | None = None,
    class_balanced: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Selected]:
    """:func:`top_of_pool` for several selectors from one scan of the pool: each batch is
    shifted and run through the models once and ranked by every score (the quantized copy
    runs only when a score needs it). Each selector gets exactly what its own
    :func:`top_of_pool` would pick; memory stays O(k x selectors) (x classes when
    class-balanced).

    Returns:
        Selector name -> its picks, in pick order.

    Raises:
        MitigateError: a differential selector without ``q_model``, or non-finite logits.
    """
    needs_q = any(score.needs_quantized for score in scores)
    for score in scores:
        if score.needs_quantized and q_model is None:
            raise MitigateError(
                f"selector {score.name!r} compares the two models; pass the quantized model "
                "(q_model)"
            )
    top = {score.name: StreamingTopK(k) for score in scores}
    per_class: dict[str, dict[int, StreamingTopK]] = {score.name: {} for score in scores}
    batches = iter_batches(pool, groups, batch_size=batch_size, seed=seed, split="pool")
    variants = {"q": q_model} if needs_q and q_model is not None else {}
    for batch, fp, outputs in forward_batches(model, variants, batches):
        position = batch.position
        values = score_logits(scores, fp, outputs.get("q"), index=position, seed=seed)
        if on_batch is not None:
            on_batch(len(position))
        if not class_balanced:
            for name, score_of_batch in values.items():
                top[name].update(score_of_batch, position)
            continue
        predicted = fp.argmax(1)
        for c in predicted.unique().tolist():
            rows = predicted == c
            for name, score_of_batch in values.items():
                per_class[name].setdefault(c, StreamingTopK(k)).update(
                    score_of_batch[rows], position[rows]
                )
    return {
        name: _rebuild(
            pool,
            groups,
            _balanced(per_class[name], k) if class_balanced else top[name].result(),
            seed,
        )
        for name in top
    }


def _rebuild(pool: LabelledData, groups: Sequence[Group], picked: Tensor, seed: int) -> Selected:
    """The picked pool positions as inputs, each under its group's shift."""
    n = len(pool)
    group_of, index_of = picked // n, picked % n
    x = pool.batch(index_of[:0]).new_empty((len(picked), *pool.input_shape))
    shift_seed = split_seed(seed, "pool")
    for g in group_of.unique().tolist():
        rows = (group_of == g).nonzero().flatten()
        group = groups[g]
        x[rows] = pool.batch(index_of[rows], group.shift, group.severity, seed=shift_seed)
    meta = [(groups[g].name, i) for g, i in zip(group_of.tolist(), index_of.tolist(), strict=True)]
    return Selected(x, pool.labels[index_of].clone(), meta)


def _balanced(per_class: dict[int, StreamingTopK], k: int) -> Tensor:
    """Round-robin over the classes from each class's running top-``k`` (enough: no class
    gives more than ``k``), ties to the lower pool position as in an in-memory ``select``."""
    if not per_class:
        return torch.empty(0, dtype=torch.int64)
    kept = [(c, top.result(), top.values) for c, top in per_class.items()]
    index = torch.cat([i for _, i, _ in kept])
    values = torch.cat([v for _, _, v in kept])
    labels = torch.cat([torch.full((len(i),), c) for c, i, _ in kept])
    order = torch.argsort(index)
    index, values, labels = index[order], values[order], labels[order]
    return index[select(values, k, labels=labels, class_balanced=True)]
