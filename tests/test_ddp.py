"""Two CPU processes under DDP (gloo): the metric and the callbacks give single-process answers.

The test runs this file as a script in a subprocess. Its two workers are started with the
"spawn" method, which imports the worker function by the script's path; a test module that
pytest imported in-process (``--import-mode=importlib``) cannot be imported that way. The
workers rendezvous on 127.0.0.1 at a free port, so nothing leaves the machine. Not marked slow:
it is the only check that the sums across processes are right, and it takes ~15 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

N, C = 203, 6  # uneven, so the two shards differ in size
SPLIT = 70  # rank 0 measures inputs [0, 70), rank 1 the other 133
BUDGET = 30


def outputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    ref = torch.randn(N, C, generator=g)
    return ref, ref + 0.7 * torch.randn(N, C, generator=g), torch.randint(0, C, (N,), generator=g)


def digits() -> dict[str, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(d.target)
    return {"x": x, "y": y}


def net() -> torch.nn.Module:
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


# ---- the script side: two workers -------------------------------------------------------------


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    from mitigate.disagreement import DisagreementRate

    # 1. The metric on uneven shards, in batches of 32.
    ref, other, target = outputs()
    lo, hi = (0, SPLIT) if rank == 0 else (SPLIT, N)
    metric = DisagreementRate(num_classes=C, per_class=True, flips=True)
    for start in range(lo, hi, 32):
        end = min(start + 32, hi)
        metric.update(ref[start:end], other[start:end], target[start:end])
    result = {"metric": {k: v.tolist() for k, v in metric.compute().items()}}

    # 2. A Lightning fit in these processes (Lightning sees LOCAL_RANK and joins the group).
    import pytorch_lightning as pl
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from mitigate.trainers import quiet_lightning
    from mitigate.trainers.callbacks import DisagreementMining, DisagreementMonitor

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = net()

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.model(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            pass

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    d = digits()
    x, y = d["x"], d["y"]
    pool_y = y[400:1200]
    monitor = DisagreementMonitor("int8", x[:200], val_inputs=(x[1200:], y[1200:]))
    mining = DisagreementMining(
        x[400:1200], TensorDataset(x[:400], y[:400]), BUDGET, labeller=lambda i: pool_y[i]
    )
    pl.seed_everything(0, verbose=False)
    module = Module()
    with quiet_lightning():
        trainer = pl.Trainer(
            strategy="ddp",
            accelerator="cpu",
            devices=world,
            max_epochs=2,
            reload_dataloaders_every_n_epochs=1,
            callbacks=[monitor, mining],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(
            module,
            DataLoader(mining.dataset, batch_size=32, shuffle=True),
            DataLoader(TensorDataset(x[1200:1300], y[1200:1300]), batch_size=50),
        )
    result["logged"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result["picked"] = mining.picked.tolist()
    result["dataset"] = len(mining.dataset)
    if rank == 0:
        torch.save(module.model.state_dict(), Path(out) / "model.pt")
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), sys.argv[1]), nprocs=2)
    sys.exit(0)


# ---- the test side ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp")
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    for _ in range(2):  # a second try if another process took the free port in between
        done = subprocess.run(
            [sys.executable, __file__, str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        if done.returncode == 0 or "address already in use" not in done.stderr.lower():
            break
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return {"ranks": ranks, "state": torch.load(out / "model.pt", weights_only=True)}


pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch without gloo"
)


def test_metric_under_two_process_ddp_equals_one_process(ddp_results):
    from mitigate.disagreement import DisagreementRate

    ref, other, target = outputs()
    single = DisagreementRate(num_classes=C, per_class=True, flips=True)
    single.update(ref, other, target)
    expected = {k: v.tolist() for k, v in single.compute().items()}
    for rank in ddp_results["ranks"]:  # every rank holds the global value
        assert rank["metric"].keys() == expected.keys()
        for key, value in expected.items():
            assert rank["metric"][key] == pytest.approx(value, abs=1e-7), key
    assert 0 < expected["rate"] < 1


def test_monitor_under_ddp_logs_the_single_process_measurement(ddp_results):
    import mitigate

    d = digits()
    x, y = d["x"], d["y"]
    model = net()
    model.load_state_dict(ddp_results["state"])
    model.eval()
    quantized = mitigate.quantize(model, "int8", x[:200])
    with torch.no_grad():
        fp, q = model(x[1200:]), quantized(x[1200:])
    rate = mitigate.functional.disagreement_rate(fp, q).item()
    accuracy = (q.argmax(1) == y[1200:]).float().mean().item()
    for rank in ddp_results["ranks"]:
        assert rank["logged"]["val/disagreement_rate"] == pytest.approx(rate, abs=1e-7)
        assert rank["logged"]["val/quantized_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_mining_under_ddp_adds_the_same_inputs_on_every_rank(ddp_results):
    first, second = ddp_results["ranks"]
    assert first["picked"] == second["picked"]
    assert len(set(first["picked"])) == len(first["picked"]) == 2 * BUDGET
    assert first["dataset"] == second["dataset"] == 400 + 2 * BUDGET
