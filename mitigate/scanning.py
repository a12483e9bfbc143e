"""One pass of the reference model and every quantized variant over the measurement batches.

The scan keeps per-input labels and the few per-input numbers later stages need (scores such as
the reference model's margin), never logits, so memory grows by a few bytes per input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mitigate.atomic import write_npz
from mitigate.data.evalset import Batch, Group
from mitigate.errors import MitigateError, unknown_choice

__all__ = ["Predictions", "eval_mode", "forward_batches", "scan", "score_key"]


def score_key(score: str, scheme: str) -> str:
    """Where a scan keeps ``score`` for the copy ``scheme``: ``"margin"`` for a score of the FP
    model alone, ``"kl@int8"`` for one that needs the quantized copy.

    Example:
        >>> score_key("margin", "int8"), score_key("kl", "int8")
        ('margin', 'kl@int8')
    """
    from mitigate.selectors.scores import SCORES

    return f"{score}@{scheme}" if SCORES[score].needs_quantized else score


@dataclass(frozen=True)
class Predictions:
    """Per-input results of a scan; every count in a report can be recomputed from these.

    Attributes:
        groups: the measured groups; ``group[i]`` indexes this list.
        group: ``int32 [N]``.
        index: ``int64 [N]``, position of the input in its source split.
        label: ``int64 [N]``, true label.
        reference: ``int64 [N]``, the FP model's label.
        variants: scheme label -> ``int64 [N]`` labels of that quantized copy.
        scores: name -> ``float32 [N]`` per-input scores (``"margin"`` from the FP model,
            ``"kl@int8"`` for a score that needs a quantized copy).
        classes: class names.
    """

    groups: list[Group]
    group: np.ndarray
    index: np.ndarray
    label: np.ndarray
    reference: np.ndarray
    variants: dict[str, np.ndarray]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` atomically (a crash never leaves a half-written file)."""
        arrays: dict[str, np.ndarray] = {
            "group": self.group,
            "index": self.index,
            "label": self.label,
            "fp": self.reference,
            "group_names": np.array([g.name for g in self.groups]),
            "group_shifts": np.array([g.shift or "" for g in self.groups]),
            "group_severities": np.array([g.severity for g in self.groups], dtype=np.int64),
            "group_sources": np.array([g.source for g in self.groups]),
            "group_held_out": np.array([g.held_out for g in self.groups]),
            "schemes": np.array(list(self.variants)),
            "classes": np.array(self.classes),
        }
        arrays.update({f"pred/{k}": v for k, v in self.variants.items()})
        arrays.update({f"score/{k}": v for k, v in self.scores.items()})
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> Predictions:
        try:
            with np.load(path, allow_pickle=False) as f:
                groups = [
                    Group(str(n), str(s) or None, int(v), str(src), bool(h))
                    for n, s, v, src, h in zip(
                        f["group_names"],
                        f["group_shifts"],
                        f["group_severities"],
                        f["group_sources"],
                        f["group_held_out"],
                        strict=True,
                    )
                ]
                return cls(
                    groups=groups,
                    group=f["group"],
                    index=f["index"],
                    label=f["label"],
                    reference=f["fp"],
                    variants={str(s): f[f"pred/{s}"] for s in f["schemes"]},
                    scores={k[len("score/") :]: f[k] for k in f.files if k.startswith("score/")},
                    classes=tuple(str(c) for c in f["classes"]),
                )
        except (OSError, KeyError, ValueError) as err:
            raise MitigateError(f"cannot read predictions file {path}: {err}") from None


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode for the block, then give every submodule back its own
    training flag: not one ``.train(mode)`` per model, which would also put a shared or
    deliberately frozen submodule (a batch norm kept in eval, a wrapped validated model) in
    the wrapper's mode."""
    modes = [(module, module.training) for m in models for module in m.modules()]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for module, mode in reversed(modes):  # a module seen twice keeps its first flag
            module.training = mode


def forward_batches(
    reference: nn.Module, variants: Mapping[str, nn.Module], batches: Iterable[Batch]
) -> Iterator[tuple[Batch, Tensor, dict[str, Tensor]]]:
    """Each batch with the logits of ``reference`` and of every variant, computed in eval mode
    without gradients: the one loop behind every scan, pool selection included."""
    with eval_mode(reference, *variants.values()):
        for batch in batches:
            with torch.no_grad():
                logits = reference(batch.x)
                outputs = {name: model(batch.x) for name, model in variants.items()}
            yield batch, logits, outputs


class _Column:
    """One per-input column of a scan, gathered batch by batch into blocks of
    :data:`_BLOCK` values.

    Each batch's values are copied in and the batch's own arrays dropped at once. Keeping them
    (a few kB per batch) instead would leave long-lived small allocations between the large
    ones every batch frees (shifted images, activations); the C heap then cannot reuse or
    return those gaps, and resident memory grew by kilobytes per input, many times the
    results' own size.
    """

    def __init__(self, dtype: type[np.generic]) -> None:
        self.dtype = np.dtype(dtype)
        self.blocks: list[np.ndarray] = []
        self.fill = _BLOCK  # the last block's used length; full: the next value opens one

    def __len__(self) -> int:
        return (len(self.blocks) - 1) * _BLOCK + self.fill if self.blocks else 0

    def append(self, values: np.ndarray) -> None:
        values = values.reshape(-1)
        while values.size:
            if self.fill == _BLOCK:
                self.blocks.append(np.empty(_BLOCK, dtype=self.dtype))
                self.fill = 0
            take = min(values.size, _BLOCK - self.fill)
            self.blocks[-1][self.fill : self.fill + take] = values[:take]
            self.fill, values = self.fill + take, values[take:]

    def join(self) -> np.ndarray:
        """The column as one ``[N]`` array; the blocks are released."""
        if not self.blocks:
            return np.empty(0, dtype=self.dtype)
        self.blocks[-1] = self.blocks[-1][: self.fill]
        joined = np.concatenate(self.blocks)
        self.blocks = []
        return joined


# Values per block: 512 kB of int64, few enough blocks to stay out of the heap's way.
_BLOCK = 1 << 16


def scan(
    reference: nn.Module,
    variants: Mapping[str, nn.Module],
    batches: Iterable[Batch],
    *,
    groups: Sequence[Group],
    scores: Sequence[str] = ("margin",),
    classes: Sequence[str] = (),
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> Predictions:
    """Run ``reference`` and every variant over ``batches`` once and keep per-input labels.

    Args:
        reference: the full-precision model (put in eval mode for the scan, then restored).
        variants: label -> quantized copy.
        batches: from :func:`mitigate.data.evalset.iter_batches`.
        groups: the groups the batches' ``group`` field indexes.
        scores: selector scores to keep per input (see :mod:`mitigate.selectors`); a score that
            needs a quantized copy is kept once per variant as ``"<score>@<label>"``.
        classes: class names, stored for reports.
        seed: seed of the ``random`` score.
        on_batch: called with each batch's input count once the batch is scanned (a
            progress bar).
    """
    from mitigate.selectors.scores import SCORES, score_logits

    for score in scores:
        if score not in SCORES:
            raise unknown_choice("score", score, list(SCORES))
    fp_only = [SCORES[s] for s in scores if not SCORES[s].needs_quantized]
    differential = [SCORES[s] for s in scores if SCORES[s].needs_quantized]
    columns = {
        "group": _Column(np.int32),
        "index": _Column(np.int64),
        "label": _Column(np.int64),
        "fp": _Column(np.int64),
    }
    for name in variants:
        columns[f"pred/{name}"] = _Column(np.int64)
    for batch, fp_logits, outputs in forward_batches(reference, variants, batches):
        columns["group"].append(np.full(batch.y.shape[0], batch.group, dtype=np.int32))
        columns["index"].append(batch.index.numpy())
        columns["label"].append(batch.y.numpy())
        columns["fp"].append(fp_logits.argmax(1).numpy())
        if fp_only:
            values = score_logits(fp_only, fp_logits, index=batch.position, seed=seed)
            for score, value in values.items():
                column = columns.setdefault(f"score/{score}", _Column(np.float32))
                column.append(value.float().numpy())
        for name, q_logits in outputs.items():
            columns[f"pred/{name}"].append(q_logits.argmax(1).numpy())
            if differential:
                values = score_logits(
                    differential, fp_logits, q_logits, index=batch.index, seed=seed
                )
                for score, value in values.items():
                    key = f"score/{score_key(score, name)}"
                    columns.setdefault(key, _Column(np.float32)).append(value.float().numpy())
        if on_batch is not None:
            on_batch(int(batch.y.shape[0]))
    if not len(columns["label"]):
        raise MitigateError("nothing to scan: the measurement set is empty")
    # One column at a time, its blocks dropped once joined: the peak is the blocks plus one
    # joined column, not twice every column.
    merged = {k: columns.pop(k).join() for k in list(columns)}
    return Predictions(
        groups=list(groups),
        group=merged["group"],
        index=merged["index"],
        label=merged["label"],
        reference=merged["fp"],
        variants={n: merged[f"pred/{n}"] for n in variants},
        scores={k[len("score/") :]: v for k, v in merged.items() if k.startswith("score/")},
        classes=tuple(classes),
    )
