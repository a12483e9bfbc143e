"""One LightningModule that trains any classifier with any registered method."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import ExitStack

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.trainers.methods import MethodOptions, get_method
from mitigate.trainers.qat import is_qat_prepared, pause_observers

__all__ = ["ClassifierModule", "unpack_batch"]


def unpack_batch(batch: Sequence[Tensor]) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(x,)``, ``(x, y)`` or ``(x, y, w)`` -> ``(x, y or None, w or None)``.

    Shapes: ``x: [B, ...]``, ``y: [B]`` labels, ``w: [B]`` per-sample loss weights.
    """
    x, *rest = batch
    labels = rest[0] if rest else None
    weights = rest[1] if len(rest) > 1 else None
    return x, labels, weights


class ClassifierModule(pl.LightningModule):
    """Wraps a classifier; never rewrites its ``forward`` and never converts it in place.

    ``model`` is trained in place. For ``qat`` it must come from
    :func:`mitigate.trainers.qat.prepare_qat_model`; ``distill`` trains a float or a
    QAT-prepared student against ``teacher``.

    Args:
        model: any ``nn.Module`` mapping ``[B, ...]`` to logits ``[B, C]``.
        method: a name from :data:`mitigate.trainers.methods.METHODS`.
        options: the methods' settings (mixup alpha, adversarial eps/steps, temperature).
        teacher: the frozen model ``distill`` matches; a deep copy is kept in eval mode with
            gradients off, so the caller's model is never updated (not even batch-norm
            statistics, which Lightning's ``.train()`` would otherwise switch on).
        lr: peak learning rate of AdamW (cosine decay over ``epochs``).
        weight_decay: AdamW weight decay.
        epochs: length of the schedule.

    Batches are ``(x, y)``, ``(x, y, w)`` with per-sample weights ``w: [B]`` (losses become
    weighted means), or ``(x,)`` for methods that use no labels. Validation batches need
    labels; a QAT model's observers are paused while validating.

    Attributes:
        train_losses: mean training loss of each finished epoch (also logged once per epoch
            as ``train/loss``; validation as ``val/loss`` and ``val/accuracy``; logged only
            when the trainer has a logger or a callback, the only things that read them).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> ClassifierModule(net, method="mixup").method.uses_labels
        True
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method: str = "standard",
        options: MethodOptions | None = None,
        teacher: nn.Module | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        epochs: int = 1,
    ) -> None:
        super().__init__()
        self.method = get_method(method)
        if self.method.needs_teacher and teacher is None:
            raise MitigateError(f"training method {method!r} needs a teacher model; pass teacher=")
        if not self.method.needs_teacher and teacher is not None:
            raise MitigateError(f"training method {method!r} uses no teacher; drop teacher=")
        if self.method.fake_quant and not is_qat_prepared(model):
            raise MitigateError(
                f"training method {method!r} trains a QAT-prepared model; prepare it with "
                "mitigate.trainers.qat.prepare_qat_model(model, scheme, example)"
            )
        self.model = model
        self.options = options or MethodOptions()
        self.teacher = None if teacher is None else copy.deepcopy(teacher).eval()
        if self.teacher is not None:
            self.teacher.requires_grad_(False)
        self.lr, self.weight_decay, self.epochs = lr, weight_decay, epochs
        self.train_losses: list[float] = []  # mean training loss of each epoch
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._paused = ExitStack()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # Lightning sets _current_fx_name before and after every hook, about 50 times a training
    # step. nn.Module's __setattr__ checks each value against Parameter, Module and Buffer
    # (~2 us); a hook name is a plain str, so it goes straight into __dict__ (~0.2 us).
    def __setattr__(self, name: str, value: object) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # Lightning calls .train() on the whole module each epoch
        return self

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, labels, weights = unpack_batch(batch)
        if labels is None and self.method.uses_labels:
            raise MitigateError(
                f"training method {self.method.name!r} needs labels; batches must be (x, y) "
                "or (x, y, w)"
            )
        loss = self.method.loss(self, x, labels, weights)
        self._sums["train"] += loss.detach() * len(x)
        self._counts["train"] += len(x)
        return loss

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, labels, _ = unpack_batch(batch)
        if labels is None:
            return
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        self._sums["val"] += loss.detach()
        self._sums["val_correct"] += (logits.argmax(1) == labels).sum()
        self._counts["val"] += len(x)

    # Sums per epoch and one self.log per epoch: Lightning's per-step self.log costs about a
    # millisecond a call (it moves its whole result collection each time), as much as a step.
    def on_train_epoch_start(self) -> None:
        self._sums["train"], self._counts["train"] = torch.zeros(()), 0

    def on_train_epoch_end(self) -> None:
        if self._counts["train"]:
            mean = float(self._sums["train"]) / self._counts["train"]
            self.train_losses.append(mean)
            self._log_epoch("train/loss", mean)

    def on_validation_epoch_start(self) -> None:
        self._sums["val"], self._sums["val_correct"] = torch.zeros(()), torch.zeros(())
        self._counts["val"] = 0

    def on_validation_epoch_end(self) -> None:
        n = self._counts["val"]
        if n:
            self._log_epoch("val/loss", float(self._sums["val"]) / n)
            self._log_epoch("val/accuracy", float(self._sums["val_correct"]) / n, prog_bar=True)

    # Even once an epoch these three self.log calls cost ~3.5 ms (measured on one-step epochs),
    # and only a logger or a callback (the progress bar is one) ever reads the values.
    def _log_epoch(self, name: str, value: float, *, prog_bar: bool = False) -> None:
        if self.trainer.loggers or self.trainer.callbacks:
            self.log(name, value, prog_bar=prog_bar)

    # Observers of a QAT model record ranges in eval mode too: keep validation data out.
    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        self._paused.enter_context(pause_observers(self.model))

    def on_validation_model_train(self) -> None:
        self._paused.close()
        super().on_validation_model_train()

    def configure_optimizers(self):  # type: ignore[override]
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": schedule}
