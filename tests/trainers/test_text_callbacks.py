"""The callbacks on a text model: token-id batches, an LSTM, int8-dynamic copies."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from mitigate.errors import MitigateError
from mitigate.models import build_model
from mitigate.quantization import quantize
from mitigate.trainers import ClassifierModule, quiet_lightning
from mitigate.trainers.callbacks import DisagreementMining, DisagreementMonitor

pytestmark = pytest.mark.filterwarnings("ignore:.*no `val_dataloader`")


def _tokens(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 40, (n, 10), generator=gen)
    return x, (x == 5).any(1).long()


def test_monitor_and_mining_work_on_token_ids() -> None:
    torch.manual_seed(0)
    model = build_model("lstm", vocab_size=40, seq_len=10, num_classes=2)
    train, val, (pool, pool_y) = _tokens(256, 0), _tokens(128, 1), _tokens(300, 2)
    monitor = DisagreementMonitor(["int8-dynamic", "int4-weight"], val_inputs=val)
    mining = DisagreementMining(
        pool, TensorDataset(*train), 30, labeller=lambda i: pool_y[i], score="margin"
    )
    with quiet_lightning():
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            reload_dataloaders_every_n_epochs=1,
            callbacks=[monitor, mining],
        )
        trainer.fit(
            ClassifierModule(model, lr=1e-2, epochs=2),
            DataLoader(mining.dataset, batch_size=64, shuffle=True),
            DataLoader(TensorDataset(*val), batch_size=64),
        )
    assert mining.rounds == 2 and len(mining.dataset) == 256 + 60
    assert mining.dataset[256][0].dtype == torch.int64
    rate = float(trainer.callback_metrics["val/disagreement_rate/int8-dynamic"])
    with torch.no_grad():
        fp = model.eval()(val[0]).argmax(1)
        q = quantize(model, "int8-dynamic")(val[0]).argmax(1)
    assert rate == pytest.approx(float((fp != q).float().mean()), abs=1e-6)


def test_callbacks_still_refuse_non_inputs() -> None:
    with pytest.raises(MitigateError, match="val_inputs must be float inputs .*token ids"):
        DisagreementMonitor("int8-dynamic", val_inputs=torch.zeros(4, 3, dtype=torch.bool))
    with pytest.raises(MitigateError, match="pool must be a float tensor .*token ids"):
        DisagreementMining(torch.zeros(5, dtype=torch.long), TensorDataset(torch.zeros(2)), 1)
