"""Mitigate inside the training loop: every N epochs, move the pool inputs most likely to
disagree into the training set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from mitigate._checks import is_integer_tensor
from mitigate.errors import MitigateError, unknown_choice
from mitigate.quantization import Int8Static, parse_scheme, quantize
from mitigate.scanning import eval_mode
from mitigate.selectors import SCORES, compute_score, resolve_budget, score_names, select
from mitigate.trainers.callbacks._common import (
    ModelOption,
    check_model_option,
    check_positive_int,
    cpu_copy,
    is_inputs,
    resolve_model,
)

__all__ = ["DisagreementMining", "MinedDataset"]

Labeller = Callable[[Tensor], Tensor]
"""``indices [K] (int64 pool positions) -> labels [K] (int64)``."""


class MinedDataset(Dataset):
    """The labelled training set followed by the pool inputs mined so far.

    Item ``i < len(base)`` is ``base[i]``; the rest are ``(pool[picked[j]], targets[j])``. With
    soft targets (no labeller), ``num_classes`` is set and every target is a ``float [C]``
    distribution: the base set's labels become one-hot vectors, which ``F.cross_entropy``
    treats exactly like the integer labels.

    Attributes:
        picked: ``int64 [M]`` pool positions in the order they were added.
        targets: ``int64 [M]`` labels or ``float [M, C]`` soft targets, ``None`` while empty.
    """

    def __init__(self, base: Dataset, pool: Tensor) -> None:
        self.base, self.pool = base, pool
        self.picked = torch.empty(0, dtype=torch.int64)
        self.targets: Tensor | None = None
        self.num_classes: int | None = None

    def __len__(self) -> int:
        return len(self.base) + len(self.picked)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        n = len(self.base)  # type: ignore[arg-type]
        if i < 0:
            i += len(self)
        if i < n:
            x, y = self.base[i]
            if self.num_classes is not None:
                y = F.one_hot(torch.as_tensor(y).long(), self.num_classes).float()
            return x, y
        if i >= len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        return self.pool[self.picked[i - n]], self.targets[i - n]  # type: ignore[index]

    def add(self, indices: Tensor, targets: Tensor) -> None:
        """Append pool inputs ``indices [K]`` with their ``targets``."""
        self.picked = torch.cat([self.picked, indices.long().cpu()])
        targets = targets.cpu()
        self.targets = targets if self.targets is None else torch.cat([self.targets, targets])


class DisagreementMining(pl.Callback):
    """Every N epochs, score an unlabelled pool and add the top ``budget`` inputs to training.

    The mechanism: the callback owns :attr:`dataset`, a :class:`MinedDataset` that is your
    labelled training set followed by the inputs mined so far. Build your train DataLoader on
    it and let the Trainer re-read the loader after each round with
    ``pl.Trainer(reload_dataloaders_every_n_epochs=1)`` (checked at ``setup``)::

        mining = DisagreementMining(pool, TensorDataset(x, y), budget=50, labeller=oracle)
        loader = DataLoader(mining.dataset, batch_size=64, shuffle=True)
        pl.Trainer(reload_dataloaders_every_n_epochs=1, callbacks=[mining]).fit(module, loader)

    A round, at the end of every N-th training epoch (the last one too, so a fit resumed with
    more epochs continues exactly as an uninterrupted one): score the pool with the current
    model through the selector ``score`` (:func:`mitigate.selectors.compute_score`; scores that
    need a quantized copy quantize a CPU deep copy with ``scheme``), pick the ``budget`` best with
    :func:`mitigate.selectors.select`, never re-picking an input, and add them with targets:

    - with a ``labeller``: its labels, ``labeller(indices) -> labels`` (an oracle, a human, a
      lookup of held-back labels). Called once per round, on rank zero only.
    - without one: soft targets from a frozen teacher — a CPU copy of the model taken at
      ``setup`` of the first fit (or of ``teacher``) — ``softmax(teacher(x) / temperature)``,
      a distillation loss for the mined inputs with no labels needed. In this mode every
      batch's targets are ``float [B, C]`` distributions (the labelled set's as one-hot), so
      the training step must use a loss that takes them: ``F.cross_entropy(logits, targets)``
      accepts both.

    Distributed: rank zero scores, selects and labels; the result is broadcast so every rank
    adds the same inputs, and Lightning's sampler then shards the grown dataset.

    Args:
        pool: ``float [N, ...]`` unlabelled inputs (on the CPU).
        train_dataset: the labelled training set, items ``(x, y)``.
        budget: inputs per round: a count, or a fraction of the whole pool.
        labeller: ``indices [K] -> int64 labels [K]``; ``None`` for teacher soft targets.
        score: a selector name (``mitigate.selectors.score_names()``), higher = more likely
            to disagree.
        every_n_epochs: run a round after every N-th training epoch.
        class_balanced: pick round-robin over the model's predicted classes.
        scheme: the quantization scheme for scores that need a quantized copy (``kl``,
            ``top1-diff``, ``quantized-margin``, ``oracle``).
        calibration: ``float [M, ...]`` calibration inputs for a static int8 ``scheme``.
        teacher: the soft-target teacher (copied and frozen); default: the model at setup.
        temperature: softmax temperature of the teacher's targets, ``> 0``.
        model: where the classifier is in the LightningModule (see
            :class:`~mitigate.DisagreementMonitor`).
        batch_size: batch size for scoring the pool.
        seed: seed of the ``random`` score.

    Raises:
        MitigateError: an unknown score (the message lists the valid ones), a bad budget,
            pool or option, or (at ``setup``) a Trainer that does not reload the dataloader.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> labelled = TensorDataset(torch.rand(20, 1, 8, 8), torch.zeros(20, dtype=torch.long))
        >>> mining = DisagreementMining(torch.rand(100, 1, 8, 8), labelled, budget=0.1)
        >>> len(mining.dataset), mining.soft_targets
        (20, True)
    """

    def __init__(
        self,
        pool: Tensor,
        train_dataset: Dataset,
        budget: int | float,
        *,
        labeller: Labeller | None = None,
        score: str = "margin",
        every_n_epochs: int = 1,
        class_balanced: bool = False,
        scheme: str | None = None,
        calibration: Tensor | None = None,
        teacher: nn.Module | None = None,
        temperature: float = 1.0,
        model: ModelOption = None,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        if not is_inputs(pool):
            raise MitigateError(
                "pool must be a float tensor of unlabelled inputs [N, ...] (token ids int64 "
                "[N, L] for text models)"
            )
        if not len(pool):
            raise MitigateError("pool is empty; there is nothing to mine")
        if not hasattr(train_dataset, "__len__") or not hasattr(train_dataset, "__getitem__"):
            raise MitigateError("train_dataset must be a sized torch Dataset of (x, y) items")
        if resolve_budget(budget, len(pool)) < 1:
            raise MitigateError(f"budget {budget!r} selects no input from a pool of {len(pool)}")
        if score not in SCORES:
            raise unknown_choice("score", score, score_names())
        self.scheme = None
        if SCORES[score].needs_quantized:
            if scheme is None:
                raise MitigateError(f"score {score!r} needs a quantized copy; pass scheme=")
            self.scheme = parse_scheme(scheme)
            if isinstance(self.scheme, Int8Static) and calibration is None:
                raise MitigateError("static int8 needs calibration inputs; pass calibration=")
        elif scheme is not None:
            raise MitigateError(
                f"score {score!r} uses the model alone; scheme is for the scores that need a "
                "quantized copy: "
                + ", ".join(n for n in score_names() if n not in score_names(fp_only=True))
            )
        if labeller is not None and not callable(labeller):
            raise MitigateError("labeller must be a function indices -> labels, or None")
        if labeller is not None and teacher is not None:
            raise MitigateError("teacher is only used without a labeller; pass one of the two")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or (not temperature > 0)
        ):
            raise MitigateError(f"temperature must be a number > 0, got {temperature!r}")
        self.pool, self.budget, self.score = pool, budget, score
        self.labeller, self.calibration = labeller, calibration
        self.every_n_epochs = check_positive_int("every_n_epochs", every_n_epochs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.class_balanced, self.temperature, self.seed = bool(class_balanced), temperature, seed
        self.model = check_model_option(model)
        self.dataset = MinedDataset(train_dataset, pool)
        self.rounds = 0
        self._teacher_source = teacher
        self._teacher: nn.Module | None = None
        self._pending_teacher: dict[str, Tensor] | None = None

    @property
    def soft_targets(self) -> bool:
        """Whether mined inputs get teacher distributions (no labeller) instead of labels."""
        return self.labeller is None

    @property
    def picked(self) -> Tensor:
        """``int64 [M]`` pool positions added so far, in order."""
        return self.dataset.picked

    @property
    def state_key(self) -> str:
        return self._generate_state_key(score=self.score, budget=self.budget)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "picked": self.dataset.picked.clone(),
            "targets": None if self.dataset.targets is None else self.dataset.targets.clone(),
            "teacher": None if self._teacher is None else self._teacher.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rounds = int(state_dict["rounds"])
        self.dataset.picked = state_dict["picked"].long().cpu()
        self.dataset.targets = state_dict["targets"]
        teacher = state_dict.get("teacher")
        if teacher is not None:
            if self._teacher is None:
                self._pending_teacher = teacher
            else:
                self._teacher.load_state_dict(teacher)

    # ---- hooks --------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        reload = trainer.reload_dataloaders_every_n_epochs
        if not reload or self.every_n_epochs % reload:
            raise MitigateError(
                "DisagreementMining grows the training set between epochs, so the Trainer must "
                "re-read the train dataloader after every round: pass "
                f"pl.Trainer(reload_dataloaders_every_n_epochs=1), got {reload}"
            )
        model = resolve_model(pl_module, self.model)
        if self.soft_targets and self._teacher is None:
            self._teacher = cpu_copy(self._teacher_source or model)
            if self._pending_teacher is not None:
                self._teacher.load_state_dict(self._pending_teacher)
                self._pending_teacher = None
            with torch.no_grad():
                self.dataset.num_classes = int(self._teacher(self.pool[:1]).shape[1])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        mined = self._mine(pl_module) if trainer.is_global_zero else None
        indices, targets = trainer.strategy.broadcast(mined, src=0)
        self.dataset.add(indices, targets)
        self.rounds += 1
        pl_module.log(
            "mining/picked",
            float(len(self.dataset.picked)),
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            reduce_fx="max",
        )

    # ---- one round ----------------------------------------------------------------------

    @torch.no_grad()
    def _mine(self, pl_module: pl.LightningModule) -> tuple[Tensor, Tensor]:
        model = resolve_model(pl_module, self.model)
        device = pl_module.device
        with eval_mode(model):
            fp_logits = torch.cat(
                [model(x.to(device)).float().cpu() for x in self.pool.split(self.batch_size)]
            )
        q_logits = None
        if self.scheme is not None:
            # Converting to int8 draws from the global RNG; keep the training's sequence intact.
            with torch.random.fork_rng(devices=[]):
                quantized = quantize(cpu_copy(model), self.scheme, self.calibration)
                q_logits = torch.cat([quantized(x) for x in self.pool.split(self.batch_size)])
        scores = compute_score(self.score, fp_logits, q_logits, seed=self.seed)
        indices = select(
            scores,
            self.budget,
            labels=fp_logits.argmax(1) if self.class_balanced else None,
            class_balanced=self.class_balanced,
            exclude=self.dataset.picked,
        )
        return indices, self._targets(indices)

    def _targets(self, indices: Tensor) -> Tensor:
        if self.labeller is None:
            logits = self._teacher(self.pool[indices])  # type: ignore[misc]
            return torch.softmax(logits.float() / self.temperature, dim=1)
        labels = self.labeller(indices)
        labels = torch.as_tensor(labels) if not isinstance(labels, Tensor) else labels
        if not is_integer_tensor(labels, indices.shape):
            raise MitigateError(
                f"labeller must return {len(indices)} integer labels for {len(indices)} indices, "
                f"got {labels.dtype} of shape {list(labels.shape)}"
            )
        return labels.long().cpu()
