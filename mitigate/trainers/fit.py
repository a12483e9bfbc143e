"""Run a Lightning fit with the pitfalls handled, and return the trained model."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mitigate.data.images import LabelledImages
from mitigate.trainers.module import ClassifierModule

__all__ = ["fit", "quiet_lightning"]

_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up banners and its advice about worker counts and logging."""
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*log_every_n_steps.*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def images_loader(data: LabelledImages, *, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """A DataLoader of ``(float image, label)`` with its own seeded shuffling generator."""
    dataset = TensorDataset(data.float_batch(slice(None)), data.labels)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def fit(
    module: ClassifierModule,
    train: DataLoader,
    val: DataLoader | None = None,
    *,
    epochs: int,
    seed: int,
    callbacks: Sequence[pl.Callback] = (),
    progress: bool = False,
) -> nn.Module:
    """Train ``module.model`` in place for ``epochs`` and return it in eval mode.

    Handles what Lightning leaves to the caller: it does not call ``.train()`` on a model handed
    to it in eval mode, and ``deterministic=True`` leaves torch's deterministic mode on after
    ``fit`` (quantized ops then fail), so both are set and restored here.
    """
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    with quiet_lightning():
        pl.seed_everything(seed, workers=True, verbose=False)
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            deterministic=True,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            num_sanity_val_steps=0,
            callbacks=list(callbacks),
        )
        module.model.train()
        try:
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
        finally:
            torch.use_deterministic_algorithms(deterministic_before)
    return module.model.eval()
