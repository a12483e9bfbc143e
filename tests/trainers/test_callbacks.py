"""DisagreementMonitor and DisagreementMining inside real (small, CPU) Lightning fits."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import mitigate
from mitigate.errors import MitigateError
from mitigate.functional import disagreement_rate
from mitigate.selectors import compute_score, select
from mitigate.trainers import quiet_lightning
from mitigate.trainers.callbacks import DisagreementMining, DisagreementMonitor

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*no `val_dataloader`", "ignore:Be aware that when using `ckpt_path`"
)


def net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


class Module(pl.LightningModule):
    """A user's module: the classifier in ``.model``; cross-entropy takes labels or soft targets."""

    def __init__(self, model: nn.Module, lr: float = 1e-2) -> None:
        super().__init__()
        self.model, self.lr = model, lr
        self.seen = 0  # training inputs in the current epoch

    def on_train_epoch_start(self) -> None:
        self.seen = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen += len(x)
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", F.cross_entropy(self.model(x), y))

    def configure_optimizers(self):
        if self.lr == 0:
            return torch.optim.SGD(self.parameters(), lr=0.0)
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def fit(module, train, val=None, *, epochs, callbacks=(), ckpt_path=None, **trainer_options):
    options = (
        dict(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        | trainer_options
    )
    with quiet_lightning():
        trainer = pl.Trainer(max_epochs=epochs, callbacks=list(callbacks), **options)
        trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(scope="module")
def data(digits_xy):
    x, y = digits_xy
    return {
        "train": (x[:500], y[:500]),
        "pool": (x[500:1400], y[500:1400]),
        "val": (x[1400:], y[1400:]),
        "calibration": x[:200],
    }


def loader(pair, batch_size=64):
    return DataLoader(TensorDataset(*pair), batch_size=batch_size)


def measure(model: nn.Module, scheme: str, calibration, x, y):
    """The separate measurement: FP model vs a fresh quantized copy, on the same inputs."""
    model = copy.deepcopy(model).eval()
    quantized = mitigate.quantize(model, scheme, calibration)
    with torch.no_grad():
        fp, q = model(x), quantized(x)
    return disagreement_rate(fp, q), (q.argmax(1) == y).float().mean()


# ---- DisagreementMonitor --------------------------------------------------------------------


def test_monitor_logs_what_a_separate_measurement_finds(data):
    torch.manual_seed(0)
    module = Module(net())
    monitor = DisagreementMonitor("int8", data["calibration"])
    trainer = fit(
        module, loader(data["train"]), loader(data["val"], 128), epochs=2, callbacks=[monitor]
    )
    rate, accuracy = measure(module.model, "int8", data["calibration"], *data["val"])
    logged = trainer.callback_metrics
    assert 0 < rate < 0.2
    assert logged["val/disagreement_rate"] == rate
    assert logged["val/quantized_accuracy"] == pytest.approx(float(accuracy), abs=1e-6)
    assert monitor.measurements == 2 and monitor.last_epoch == 1
    assert monitor.last["val/disagreement_rate"] == pytest.approx(float(rate))
    with quiet_lightning():  # trainer.validate measures whatever the epoch
        (validated,) = trainer.validate(module, loader(data["val"], 128), verbose=False)
    assert validated["val/disagreement_rate"] == pytest.approx(float(rate))
    assert monitor.measurements == 3


def test_monitor_measures_an_onnx_runtime_scheme(data):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    module = Module(net())
    monitor = DisagreementMonitor("ort-int8", data["calibration"])
    trainer = fit(
        module, loader(data["train"]), loader(data["val"], 128), epochs=1, callbacks=[monitor]
    )
    rate, _ = measure(module.model, "ort-int8", data["calibration"], *data["val"])
    assert trainer.callback_metrics["val/disagreement_rate"] == rate
    assert monitor.measurements == 1


def _training_state(trainer, pl_module):
    model = pl_module.model
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "optimizer": str(trainer.optimizers[0].state_dict()),
        "rng": torch.get_rng_state(),
        "grad_enabled": torch.is_grad_enabled(),
    }


class _Sandwich(pl.Callback):
    """Two of these go around the monitor in the callback list: the first records the trained
    model's state at validation start (before the monitor copies it), the second compares at
    validation end (after the monitor has logged)."""

    def __init__(self, shared: dict, role: str) -> None:
        self.shared, self.role = shared, role

    def on_validation_epoch_start(self, trainer, pl_module):
        if self.role == "record":
            self.shared["before"] = _training_state(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        if self.role != "check":
            return
        before, after = self.shared["before"], _training_state(trainer, pl_module)
        assert after["weights"].keys() == before["weights"].keys()
        for key, value in before["weights"].items():
            assert torch.equal(after["weights"][key], value), key
        assert torch.equal(after.pop("rng"), before["rng"])  # training randomness unchanged
        assert {k: v for k, v in after.items() if k != "weights"} == {
            k: v for k, v in before.items() if k not in ("weights", "rng")
        }
        self.shared["checked"] = self.shared.get("checked", 0) + 1


def test_monitor_never_touches_the_model_being_trained(data):
    def run(with_monitor: bool):
        pl.seed_everything(0, verbose=False)
        model = net()
        model[1].bias.requires_grad_(False)  # a frozen tensor must stay frozen
        module = Module(model)
        shared: dict = {}
        monitor = [DisagreementMonitor("int8", data["calibration"])]
        callbacks = [
            _Sandwich(shared, "record"),
            *monitor[:with_monitor],
            _Sandwich(shared, "check"),
        ]
        train = DataLoader(TensorDataset(*data["train"]), batch_size=64, shuffle=True)
        trainer = fit(module, train, loader(data["val"], 128), epochs=2, callbacks=callbacks)
        assert shared["checked"] == 2
        return module, trainer

    module, trainer = run(True)
    baseline, baseline_trainer = run(False)
    assert module.model.training and module.training
    assert [p.requires_grad for p in module.model.parameters()] == [True, False, True, True]
    for key, value in baseline.model.state_dict().items():
        assert torch.equal(module.model.state_dict()[key], value), key
    assert str(trainer.optimizers[0].state_dict()) == str(
        baseline_trainer.optimizers[0].state_dict()
    )


def test_several_schemes_log_one_key_each_every_n_epochs(data):
    torch.manual_seed(0)
    module = Module(net())
    monitor = DisagreementMonitor(
        ["int8", "fp16"], data["calibration"], every_n_epochs=2, log_accuracy=False
    )
    assert monitor.metric_names == ["val/disagreement_rate/int8", "val/disagreement_rate/fp16"]
    trainer = fit(
        module, loader(data["train"]), loader(data["val"], 128), epochs=3, callbacks=[monitor]
    )
    assert monitor.measurements == 1 and monitor.last_epoch == 1
    assert set(monitor.last) == set(monitor.metric_names)
    assert "val/quantized_accuracy/int8" not in trainer.callback_metrics
    assert "val/disagreement_rate" not in trainer.callback_metrics
    assert 0 <= float(trainer.callback_metrics["val/disagreement_rate/fp16"]) <= 0.05


def test_early_stopping_stops_on_a_flat_disagreement_rate(data):
    torch.manual_seed(0)
    module = Module(net(), lr=0.0)  # weights never move: the rate stays flat
    stop = pl.callbacks.EarlyStopping(monitor="val/disagreement_rate", mode="min", patience=1)
    monitor = DisagreementMonitor("int8", data["calibration"])
    trainer = fit(
        module,
        loader(data["train"]),
        loader(data["val"], 128),
        epochs=10,
        callbacks=[monitor, stop],
    )
    assert trainer.should_stop and stop.stopped_epoch == 1 and trainer.current_epoch == 2
    assert monitor.measurements == 2
    assert float(stop.best_score) == monitor.last["val/disagreement_rate"] > 0


def test_monitor_value_equals_mitigate_evaluate_on_the_best_checkpoint(tmp_path):
    from mitigate.config import load_config
    from mitigate.models import build_model, save_checkpoint
    from mitigate.runs.base_model import model_meta
    from mitigate.runs.calibration import calibration_inputs
    from mitigate.runs.data import load_data
    from mitigate.runs.evaluate import evaluate

    base = load_config()
    config = replace(
        base,
        model=replace(base.model, arch="mlp"),
        shifts=replace(base.shifts, families=(), held_out=()),
        quantization=replace(base.quantization, schemes=("int8",)),
    )
    data = load_data(config)
    splits = data.splits
    test_x, test_y = splits.test.float_batch(slice(None)), splits.test.labels
    torch.manual_seed(0)
    module = Module(build_model("mlp", in_channels=1, image_size=8, num_classes=10))
    monitor = DisagreementMonitor(
        "int8", calibration_inputs(config, data), val_inputs=(test_x, test_y)
    )
    best = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path, monitor="val/disagreement_rate", mode="min", save_top_k=1
    )
    train = (splits.train.float_batch(slice(None)), splits.train.labels)
    val = (splits.val.float_batch(slice(None)), splits.val.labels)
    fit(
        module,
        loader(train),
        loader(val, 256),
        epochs=3,
        callbacks=[monitor, best],
        enable_checkpointing=True,
    )

    checkpoint = torch.load(best.best_model_path, weights_only=True)
    module.load_state_dict(checkpoint["state_dict"])
    save_checkpoint(tmp_path / "best.pt", module.model, model_meta(config, data))
    report = evaluate(config, checkpoint=tmp_path / "best.pt").report
    clean = report["totals"]["clean"]
    assert clean["n"] == len(test_x)
    assert float(best.best_model_score) == pytest.approx(
        clean["disagreements"]["int8"] / clean["n"], abs=1e-7
    )
    logged_then = checkpoint["callbacks"][monitor.state_key]["last"]
    assert logged_then["val/quantized_accuracy"] == pytest.approx(
        clean["accuracy"]["int8"], abs=1e-6
    )


def test_monitor_resumes_from_a_checkpoint(data, tmp_path):
    torch.manual_seed(0)
    save = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    first = DisagreementMonitor("int8", data["calibration"])
    fit(
        Module(net()),
        loader(data["train"]),
        loader(data["val"], 128),
        epochs=2,
        callbacks=[first, save],
        enable_checkpointing=True,
    )
    resumed = DisagreementMonitor("int8", data["calibration"])
    fit(
        Module(net()),
        loader(data["train"]),
        loader(data["val"], 128),
        epochs=3,
        callbacks=[resumed],
        ckpt_path=tmp_path / "last.ckpt",
    )
    assert first.measurements == 2 and resumed.measurements == 3
    assert resumed.last_epoch == 2
    copy_ = DisagreementMonitor("int8", data["calibration"])
    copy_.load_state_dict(resumed.state_dict())
    assert copy_.state_dict() == resumed.state_dict()


def test_monitor_finds_the_classifier_in_a_module_without_a_model_attribute(data):
    class Direct(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            pass

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    torch.manual_seed(0)
    module = Direct()
    unlabelled = data["val"][0]
    monitor = DisagreementMonitor(
        "int8",
        data["calibration"],
        log_accuracy=False,
        unpack_batch=lambda batch: (batch[0], None),
    )
    trainer = fit(
        module,
        loader(data["train"]),
        DataLoader(TensorDataset(unlabelled), 128),
        epochs=1,
        callbacks=[monitor],
    )
    rate, _ = measure(module, "int8", data["calibration"], *data["val"])
    assert trainer.callback_metrics["val/disagreement_rate"] == rate


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schemes": "int3"}, "unknown quantization scheme 'int3'; valid choices: int8"),
        ({"schemes": []}, "schemes is empty"),
        ({"schemes": [8]}, "unknown quantization scheme 8; valid choices: int8"),
        ({"schemes": "int8:engine=tpu"}, "unknown int8 engine 'tpu'; valid choices"),
        ({"schemes": ["int8", "int8"]}, "listed twice"),
        ({"schemes": "int8", "calibration": None}, "needs calibration"),
        ({"every_n_epochs": 0}, "every_n_epochs must be an int >= 1"),
        ({"val_inputs": torch.zeros(4, dtype=torch.long)}, "val_inputs must be float"),
        ({"val_inputs": torch.zeros(4, 1, 8, 8)}, "log_accuracy=True needs labels"),
        ({"val_inputs": (torch.zeros(4, 1, 8, 8), torch.zeros(3))}, "integer labels of shape"),
        ({"model": 3}, "model must be None, an attribute name"),
    ],
)
def test_monitor_options_are_checked_at_construction(options, message):
    options = {"schemes": "fp16", "calibration": torch.rand(8, 1, 8, 8)} | options
    with pytest.raises(MitigateError, match=message):
        DisagreementMonitor(**options)


def test_a_wrong_model_attribute_fails_before_training(data):
    monitor = DisagreementMonitor("fp16", model="classifier")
    with pytest.raises(MitigateError, match="unknown model attribute .* valid choices: model"):
        fit(
            Module(net()), loader(data["train"]), loader(data["val"]), epochs=1, callbacks=[monitor]
        )


# ---- DisagreementMining ---------------------------------------------------------------------


class _Expect(pl.Callback):
    """Before the mining callback runs, compute what it should pick from the same model."""

    def __init__(self, pool, budget):
        self.pool, self.budget, self.expected, self.sizes = pool, budget, [], []
        self.picked = torch.empty(0, dtype=torch.int64)

    def on_train_epoch_start(self, trainer, pl_module):
        self.sizes.append((len(trainer.train_dataloader.dataset), None))

    def on_train_epoch_end(self, trainer, pl_module):
        self.sizes[-1] = (self.sizes[-1][0], pl_module.seen)
        model = copy.deepcopy(pl_module.model).eval()
        with torch.no_grad():
            scores = compute_score("margin", model(self.pool))
        picks = select(scores, self.budget, exclude=self.picked)
        self.expected.append(picks)
        self.picked = torch.cat([self.picked, picks])


def test_mining_grows_the_training_set_by_the_budget_each_round(data):
    torch.manual_seed(0)
    pool_x, pool_y = data["pool"]
    asked = []

    def labeller(indices):
        asked.append(indices.clone())
        return pool_y[indices]

    mining = DisagreementMining(pool_x, TensorDataset(*data["train"]), 40, labeller=labeller)
    expect = _Expect(pool_x, 40)
    module = Module(net())
    trainer = fit(
        module,
        DataLoader(mining.dataset, batch_size=64, shuffle=True),
        epochs=4,
        callbacks=[expect, mining],
        reload_dataloaders_every_n_epochs=1,
    )
    # A round after every epoch, the last one included.
    assert mining.rounds == 4 and len(mining.dataset) == 500 + 4 * 40
    assert expect.sizes == [(500, 500), (540, 540), (580, 580), (620, 620)]
    assert len(set(mining.picked.tolist())) == 160
    assert torch.equal(mining.picked, torch.cat(expect.expected))
    assert [len(a) for a in asked] == [40, 40, 40, 40]
    assert torch.equal(mining.dataset.targets, pool_y[mining.picked])
    x, y = mining.dataset[500 + 7]
    assert torch.equal(x, pool_x[mining.picked[7]]) and y == pool_y[mining.picked[7]]
    assert trainer.callback_metrics["mining/picked"] == 160


def test_mining_without_labels_adds_teacher_soft_targets(data):
    torch.manual_seed(0)
    pool_x, _ = data["pool"]
    model = net()
    teacher = copy.deepcopy(model).eval()  # the callback snapshots the model at setup
    mining = DisagreementMining(
        pool_x, TensorDataset(*data["train"]), 0.05, every_n_epochs=2, temperature=2.0
    )
    assert mining.soft_targets
    fit(
        Module(model),
        DataLoader(mining.dataset, batch_size=64, shuffle=True),
        epochs=3,
        callbacks=[mining],
        reload_dataloaders_every_n_epochs=2,
    )
    assert mining.rounds == 1 and len(mining.picked) == 45
    with torch.no_grad():
        expected = torch.softmax(teacher(pool_x[mining.picked]) / 2.0, dim=1)
    torch.testing.assert_close(mining.dataset.targets, expected)
    x, y = mining.dataset[3]  # a labelled item becomes one-hot
    assert y.shape == (10,) and y.sum() == 1 and y[data["train"][1][3]] == 1
    x, y = mining.dataset[len(mining.dataset) - 1]
    assert y.dtype == torch.float32 and y.sum() == pytest.approx(1.0)


def test_mining_with_a_quantized_score_picks_true_disagreements_first(data):
    torch.manual_seed(0)
    pool_x, pool_y = data["pool"]
    mining = DisagreementMining(
        pool_x,
        TensorDataset(*data["train"]),
        200,
        labeller=lambda i: pool_y[i],
        score="oracle",
        scheme="int8",
        calibration=data["calibration"],
    )
    truth = {}

    class Disagreements(pl.Callback):  # runs just before the mining round, on the same model
        def on_train_epoch_end(self, trainer, pl_module):
            model = copy.deepcopy(pl_module.model).eval()
            quantized = mitigate.quantize(model, "int8", data["calibration"])
            truth["flipped"] = mitigate.find_disagreements(model, quantized, pool_x)

    fit(
        Module(net()),
        DataLoader(mining.dataset, batch_size=64),
        epochs=1,
        callbacks=[Disagreements(), mining],
        reload_dataloaders_every_n_epochs=1,
    )
    flipped = truth["flipped"]
    assert 0 < len(flipped) < 200
    assert sorted(mining.picked[: len(flipped)].tolist()) == flipped.tolist()


def test_mining_resumes_without_picking_an_input_twice(data, tmp_path):
    torch.manual_seed(0)
    pool_x, pool_y = data["pool"]
    save = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)

    def run(epochs, ckpt_path=None, callbacks=()):
        mining = DisagreementMining(
            pool_x, TensorDataset(*data["train"]), 30, labeller=lambda i: pool_y[i]
        )
        fit(
            Module(net()),
            DataLoader(mining.dataset, batch_size=64),
            epochs=epochs,
            callbacks=[mining, *callbacks],
            ckpt_path=ckpt_path,
            reload_dataloaders_every_n_epochs=1,
            enable_checkpointing=bool(callbacks),
        )
        return mining

    first = run(2, callbacks=[save])
    resumed = run(4, ckpt_path=tmp_path / "last.ckpt")
    assert first.rounds == 2 and resumed.rounds == 4
    assert torch.equal(resumed.picked[:60], first.picked)
    assert len(set(resumed.picked.tolist())) == len(resumed.picked) == 120
    assert len(resumed.dataset) == 500 + 120


def test_mining_needs_the_dataloader_reloaded(data):
    mining = DisagreementMining(data["pool"][0], TensorDataset(*data["train"]), 10)
    with pytest.raises(MitigateError, match="reload_dataloaders_every_n_epochs=1"):
        fit(Module(net()), DataLoader(mining.dataset, batch_size=64), epochs=1, callbacks=[mining])


def test_a_labeller_that_returns_the_wrong_shape_is_refused(data):
    pool_x = data["pool"][0]
    mining = DisagreementMining(
        pool_x, TensorDataset(*data["train"]), 10, labeller=lambda i: torch.zeros(3)
    )
    with pytest.raises(MitigateError, match="labeller must return 10 integer labels"):
        fit(
            Module(net()),
            DataLoader(mining.dataset, batch_size=64),
            epochs=2,
            callbacks=[mining],
            reload_dataloaders_every_n_epochs=1,
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"score": "confidence"}, "unknown score 'confidence'; valid choices: margin"),
        ({"score": "kl"}, "score 'kl' needs a quantized copy; pass scheme="),
        ({"scheme": "int8"}, "score 'margin' uses the model alone.*kl"),
        ({"score": "kl", "scheme": "int8"}, "static int8 needs calibration"),
        ({"budget": 0}, "budget 0 selects no input"),
        ({"budget": 1.5}, r"budget fraction must be in \(0, 1\]"),
        ({"pool": torch.zeros(0, 1, 8, 8)}, "pool is empty"),
        ({"pool": torch.zeros(5, dtype=torch.long)}, "pool must be a float tensor"),
        ({"temperature": 0}, "temperature must be a number > 0"),
        ({"labeller": len, "teacher": nn.Linear(2, 2)}, "teacher is only used without"),
        ({"every_n_epochs": -1}, "every_n_epochs must be an int >= 1"),
    ],
)
def test_mining_options_are_checked_at_construction(options, message):
    options = {"pool": torch.rand(20, 1, 8, 8), "budget": 5} | options
    with pytest.raises(MitigateError, match=message):
        DisagreementMining(train_dataset=TensorDataset(torch.rand(4, 1, 8, 8)), **options)
