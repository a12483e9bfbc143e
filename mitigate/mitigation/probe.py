"""The probe set: the pool inputs a selector picks, materialized as one tensor.

Layer sensitivity, layer fallback and the settings search all score a quantized copy by its
disagreements on a few hundred inputs. The cheap, label-free choice is the pool inputs a
selector ranks highest (margin by default): they hold most of the pool's disagreements, so a
few hundred forward passes per candidate say which layer or setting causes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mitigate.config import Config
from mitigate.errors import MitigateError, unknown_choice

if TYPE_CHECKING:
    from mitigate.selectors import StreamingTopK

__all__ = ["selected_pool_inputs"]


@torch.no_grad()
def selected_pool_inputs(
    config: Config,
    data: object,
    model: nn.Module,
    *,
    selector: str,
    budget: int | float,
    q_model: nn.Module | None = None,
    batch_size: int | None = None,
    class_balanced: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor, list[tuple[str, int]]]:
    """Score the whole unlabelled pool with ``selector`` and return the top ``budget`` inputs.

    The pool is every pool-split image under every pool group (clean plus each family that is
    not held out, at each configured severity; see :func:`mitigate.pipeline.pool_groups`).
    It is scanned batch by batch, keeping only the running top-``budget`` in memory; then the
    picked inputs are rebuilt by re-applying their shift to those indices only (a shifted
    image depends only on ``(seed, split, shift, severity, index)``, so it is the image that
    was scored, up to float rounding of about 1e-7 in the resampling families).

    Pool position of input ``i`` of group ``g`` is ``g * len(pool) + i``: the ``random``
    selector hashes that position, and ties go to the lower position.

    Args:
        config: the run configuration (seed, shifts, ``eval.batch_size``).
        data: :class:`mitigate.pipeline.Data` from :func:`mitigate.pipeline.load_data`.
        model: the full-precision model, ``[B, ...] -> [B, classes]`` logits.
        selector: a name from :func:`mitigate.selectors.score_names`.
        budget: a count, or a fraction of the whole pool (see
            :func:`mitigate.selectors.resolve_budget`).
        q_model: the quantized copy; required by differential selectors (``kl``,
            ``top1-diff``, ``quantized-margin``, ``oracle``), ignored by the others.
        batch_size: scan batch size; defaults to ``config.eval.batch_size``.
        class_balanced: pick round-robin over the FP model's predicted classes, as
            :func:`mitigate.selectors.select` does; the scan keeps a running top-``budget`` per
            class, so memory stays O(budget x classes), not O(pool).
        on_batch: called with each scanned batch's input count (a progress bar).

    Returns:
        ``x``: ``float [K, C, H, W]`` images or ``int64 [K, max_len]`` token ids, the picked
        inputs in pick order (highest score first);
        ``y``: ``int64 [K]``, their true labels (only for strategies that may use labels);
        ``meta``: ``K`` pairs ``(group name, index in the pool split)``, for reports.

    Raises:
        MitigateError: unknown selector, a differential selector without ``q_model``, or a
            bad budget.
    """
    from mitigate.data.evalset import iter_batches, split_seed
    from mitigate.pipeline import pool_groups
    from mitigate.selectors import SCORES, StreamingTopK, compute_score, resolve_budget

    if selector not in SCORES:
        raise unknown_choice("selector", selector, list(SCORES))
    needs_q = SCORES[selector].needs_quantized
    if needs_q and q_model is None:
        raise MitigateError(
            f"selector {selector!r} compares the two models; pass the quantized model (q_model)"
        )
    pool = data.splits.pool  # type: ignore[attr-defined]
    groups = pool_groups(config, data)  # type: ignore[arg-type]
    n = len(pool)
    k = resolve_budget(budget, n * len(groups))
    top = StreamingTopK(k)
    per_class: dict[int, StreamingTopK] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in iter_batches(
            pool,
            groups,
            batch_size=batch_size or config.eval.batch_size,
            seed=config.seed,
            split="pool",
        ):
            position = batch.position
            fp = model(batch.x)
            q = q_model(batch.x) if needs_q else None  # type: ignore[misc]
            score = compute_score(selector, fp, q, index=position, seed=config.seed)
            if on_batch is not None:
                on_batch(len(position))
            if not class_balanced:
                top.update(score, position)
                continue
            predicted = fp.argmax(1)
            for c in predicted.unique().tolist():
                rows = predicted == c
                per_class.setdefault(c, StreamingTopK(k)).update(score[rows], position[rows])
    finally:
        model.train(was_training)

    picked = _balanced(per_class, k) if class_balanced else top.result()
    group_of, index_of = picked // n, picked % n
    x = pool.batch(index_of[:0]).new_empty((len(picked), *pool.input_shape))
    shift_seed = split_seed(config.seed, "pool")
    for g in group_of.unique().tolist():
        rows = (group_of == g).nonzero().flatten()
        group = groups[g]
        x[rows] = pool.batch(index_of[rows], group.shift, group.severity, seed=shift_seed)
    meta = [(groups[g].name, i) for g, i in zip(group_of.tolist(), index_of.tolist(), strict=True)]
    return x, pool.labels[index_of].clone(), meta


def _balanced(per_class: dict[int, StreamingTopK], k: int) -> Tensor:
    """Round-robin over the classes from each class's running top-``k`` (enough: no class
    gives more than ``k``), ties to the lower pool position as in an in-memory ``select``."""
    from mitigate.selectors import select

    if not per_class:
        return torch.empty(0, dtype=torch.int64)
    kept = [(c, top.result(), top.values) for c, top in per_class.items()]
    index = torch.cat([i for _, i, _ in kept])
    values = torch.cat([v for _, _, v in kept])
    labels = torch.cat([torch.full((len(i),), c) for c, i, _ in kept])
    order = torch.argsort(index)
    index, values, labels = index[order], values[order], labels[order]
    return index[select(values, k, labels=labels, class_balanced=True)]
