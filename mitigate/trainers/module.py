"""One LightningModule that trains any classifier with any registered method."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from mitigate.errors import unknown_choice
from mitigate.trainers.methods import METHODS

__all__ = ["ClassifierModule"]


class ClassifierModule(pl.LightningModule):
    """Wraps a classifier; never rewrites its ``forward`` and never converts it in place.

    Args:
        model: any ``nn.Module`` mapping ``[B, ...]`` to logits ``[B, C]``; trained in place.
        method: a name from :data:`mitigate.trainers.methods.METHODS`.
        lr: peak learning rate of AdamW (cosine decay over ``epochs``).
        weight_decay: AdamW weight decay.
        epochs: length of the schedule.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method: str = "standard",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        epochs: int = 1,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise unknown_choice("training method", method, list(METHODS))
        self.model = model
        self.method = METHODS[method]
        self.lr, self.weight_decay, self.epochs = lr, weight_decay, epochs

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.method.loss(self.model, x, y)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val/loss", nn.functional.cross_entropy(logits, y), on_epoch=True)
        self.log(
            "val/accuracy", (logits.argmax(1) == y).float().mean(), prog_bar=True, on_epoch=True
        )

    def configure_optimizers(self):  # type: ignore[override]
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": schedule}
