"""Watch and reduce disagreement with a Lightning Trainer.

``DisagreementMonitor`` quantizes a copy of the model after every validation epoch and logs
``val/disagreement_rate``, which ``EarlyStopping`` watches here. ``DisagreementMining`` moves the
pool digits the model is least sure about (smallest margin, the likeliest to flip under
quantization) into the training set after each epoch, labelled by a ``labeller``; here the
labels are looked up, in real use a person or an oracle provides them.
Run: ``python examples/lightning_trainer.py`` (about ten seconds on a laptop CPU).
"""

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import mitigate
from mitigate.data import load_digits
from mitigate.trainers import quiet_lightning


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/accuracy", (self.model(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


pl.seed_everything(0, verbose=False)
digits = load_digits()
x, y = digits.float_batch(slice(None)), digits.labels
order = torch.randperm(len(x))
train, pool, val = order[:500], order[500:1300], order[1300:]

monitor = mitigate.DisagreementMonitor("int8", calibration=x[train[:256]])
mining = mitigate.DisagreementMining(
    x[pool], TensorDataset(x[train], y[train]), budget=100, labeller=lambda i: y[pool][i]
)
report = pl.callbacks.LambdaCallback(
    on_train_epoch_end=lambda trainer, module: print(
        f"epoch {trainer.current_epoch}: "
        f"disagreement rate {trainer.callback_metrics['val/disagreement_rate']:.4f}, "
        f"int8 accuracy {trainer.callback_metrics['val/quantized_accuracy']:.4f}, "
        f"training on {len(mining.dataset)} digits"
    )
)
stop = pl.callbacks.EarlyStopping(monitor="val/disagreement_rate", mode="min", patience=3)
with quiet_lightning():  # no start-up banners
    trainer = pl.Trainer(
        max_epochs=5,
        reload_dataloaders_every_n_epochs=1,  # re-read the training set that mining grows
        callbacks=[monitor, mining, report, stop],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        Classifier(),
        DataLoader(mining.dataset, batch_size=64, shuffle=True),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=256),
    )
print(f"mined {len(mining.picked)} pool digits in {mining.rounds} rounds")
