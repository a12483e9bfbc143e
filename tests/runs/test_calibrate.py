from __future__ import annotations

import numpy as np
import pytest
import torch

from mitigate.calibration import Setting
from mitigate.config import Config, override
from mitigate.counting import group_metrics
from mitigate.data.evalset import Group
from mitigate.errors import MitigateError
from mitigate.quantization import activation_qparams, quantize
from mitigate.runs.calibrate import calibrate, cell_predictions, plan_settings
from mitigate.runs.calibration import calibration_set
from mitigate.scanning import Predictions

# The same data, model and training as tests/cli/conftest.py's tiny config: one cached model.
TINY = dict(
    data__train=300,
    data__val=50,
    data__calibration=50,
    data__pool=100,
    data__test=100,
    model__arch="lenet1",
    train__epochs=3,
    shifts__families=["gaussian-noise", "rotate"],
    shifts__severities=[3],
    shifts__held_out=["rotate"],
    quantization__calibration_size=50,
)
SMALL_SWEEP = dict(
    calibration__sources=["clean", "shifted"],
    calibration__sizes=[16, 64],
    calibration__samplings=["random"],
    calibration__augmentations=[0],
    calibration__observers=["histogram"],
    calibration__granularities=["per-channel"],
    calibration__engines=["x86", "qnnpack"],
    calibration__extra=[],
    calibration__combine=False,
    calibration__seeds=2,
)


def _predictions(x, labels, fp_labels) -> Predictions:
    n = len(labels)
    return Predictions(
        groups=[Group("clean")],
        group=np.zeros(n, dtype=np.int32),
        index=np.arange(n),
        label=labels.numpy(),
        reference=fp_labels.numpy(),
        variants={},
        classes=tuple(str(c) for c in range(10)),
    )


def test_a_constant_calibration_image_gives_other_ranges_and_other_disagreements(tiny_data):
    config, data, model = tiny_data
    real = data.splits.calibration.float_batch(slice(None))
    constant = torch.full((1, 1, 8, 8), 0.05)
    q_real = quantize(model, "int8", real)
    q_const = quantize(model, "int8", constant)
    p_real, p_const = activation_qparams(q_real), activation_qparams(q_const)
    assert p_real.keys() == p_const.keys() and "conv1_input" in p_real
    assert p_real["conv1_input"] != p_const["conv1_input"]
    # the input range seen: [0, 1] for real digits (7-bit x86 range), [0, 0.05] for the constant
    assert p_real["conv1_input"][0] == pytest.approx(1 / 127, rel=0.05)
    assert p_const["conv1_input"][0] < p_real["conv1_input"][0] / 5

    test = data.splits.test
    x = test.float_batch(slice(None))
    with torch.no_grad():
        pred = _predictions(x, test.labels, model(x).argmax(1))
        m_real = group_metrics(pred, q_real(x).argmax(1).numpy())
        m_const = group_metrics(pred, q_const(x).argmax(1).numpy())
    assert m_const["overall"]["disagreements"] > m_real["overall"]["disagreements"]
    assert m_const["worst_disagreement"]["disagreement_rate"] > 0.2  # clipped inputs: garbage


def test_group_metrics_on_a_hand_made_example():
    pred = Predictions(
        groups=[Group("clean"), Group("fog/1", "fog", 1), Group("fog/2", "fog", 2)],
        group=np.array([0, 0, 1, 1, 2, 2], dtype=np.int32),
        index=np.arange(6),
        label=np.array([0, 1, 0, 1, 0, 1]),
        reference=np.array([0, 1, 0, 0, 0, 1]),
        variants={},
        classes=("a", "b"),
    )
    m = group_metrics(pred, np.array([0, 1, 1, 0, 0, 0]))
    names = [g["name"] for g in m["groups"]]
    assert names == ["clean", "fog", "class:a", "class:b"]
    fog = m["groups"][1]
    assert (fog["n"], fog["disagreements"], fog["accuracy"], fog["fp_accuracy"]) == (
        4,
        2,
        0.25,
        0.75,
    )
    assert m["worst_disagreement"] == {
        "name": "fog",
        "n": 4,
        "disagreements": 2,
        "disagreement_rate": 0.5,
    }
    assert m["worst_accuracy"] == {"name": "fog", "n": 4, "accuracy": 0.25, "fp_accuracy": 0.75}
    assert m["overall"]["disagreements"] == 2


@pytest.fixture(scope="module")
def tiny_data():
    from mitigate.runs.base_model import base_model
    from mitigate.runs.data import load_data

    config = override(Config(), **TINY)
    data = load_data(config)
    model, _ = base_model(config, data)
    return config, data, model


def test_calibration_sets(tiny_data):
    from mitigate.runs.calibration import calibration_inputs

    config, data, model = tiny_data
    # the baseline is exactly what evaluate calibrates on
    for source in ("clean", "shifted", "mixed"):
        plain = override(config, quantization__calibration_source=source)
        expected = calibration_inputs(plain, data)
        got = calibration_set(plain, data, Setting(source=source, size=50))
        assert torch.equal(got, expected)
    memo: dict = {}
    ranked = calibration_set(
        config, data, Setting(size=10, sampling="selector-ranked"), model=model, memo=memo
    )
    assert ranked.shape == (10, 1, 8, 8)
    # a smaller ranked set is a prefix of a larger one
    assert torch.equal(
        calibration_set(
            config, data, Setting(size=4, sampling="selector-ranked"), model=model, memo=memo
        ),
        ranked[:4],
    )
    selected = calibration_set(
        config, data, Setting(source="selected", size=30), model=model, memo=memo
    )
    assert selected.shape == (30, 1, 8, 8)
    augmented = calibration_set(config, data, Setting(size=20, augment=2))
    assert augmented.shape == (60, 1, 8, 8)
    assert torch.equal(augmented[:20], calibration_set(config, data, Setting(size=20)))
    assert not torch.equal(augmented[20:40], augmented[:20])
    # beyond the 50-image calibration split, calibration continues into the training images
    calibration = data.splits.calibration.float_batch(slice(None))
    larger = calibration_set(config, data, Setting(size=120))
    assert larger.shape == (120, 1, 8, 8) and torch.equal(larger[:50], calibration)
    with pytest.raises(
        MitigateError,
        match=r"calibration size 351 is more than the calibration and training splits hold \(350\)",
    ):
        calibration_set(config, data, Setting(size=351))
    with pytest.raises(MitigateError, match="ranks inputs: pass the FP model"):
        calibration_set(config, data, Setting(source="selected", size=5))
    held = override(config, calibration__families=["rotate"])
    with pytest.raises(MitigateError, match="rotate are held out.*choose from: gaussian-noise"):
        calibration_set(held, data, Setting(source="shifted", size=5))


def test_plan_clips_sizes_and_merges_duplicates(tiny_data):
    config, data, _ = tiny_data
    sweep = {
        **SMALL_SWEEP,
        "calibration__sizes": [16, 400, 1024],
        "calibration__extra": ["selected-1024", "16-balanced"],
        "calibration__samplings": ["random", "class-balanced"],
    }
    plan = {p.setting.name: p for p in plan_settings(override(config, **sweep), data)}
    names = list(plan)
    assert names[0] == "clean-50-random-aug0-histogram-perchannel-x86"
    # baseline, shifted, 16, 350 (400 and 1024 clipped), 50 balanced, qnnpack, selected, 16-bal.
    assert len(names) == 8
    clipped = plan["clean-350-random-aug0-histogram-perchannel-x86"]
    assert clipped.notes == (
        "size 400 clipped to 350: the calibration and training splits hold 350",
        "also stands for size 1024 (clipped to 350)",
    )
    assert "clean-50-balanced-aug0-histogram-perchannel-x86" in plan
    assert "clean-16-balanced-aug0-histogram-perchannel-x86" in plan
    selected = plan["selected-200-ranked-aug0-histogram-perchannel-x86"]
    assert selected.notes == ("size 1024 clipped to 200: the pool holds 200",)


def _recount(pred: Predictions, q: np.ndarray) -> tuple[float, float, float]:
    """Worst-group disagreement, worst-group accuracy, overall disagreement, by hand."""
    shift = np.array([g.shift or g.name for g in pred.groups])[pred.group]
    masks = [shift == s for s in np.unique(shift)] + [
        pred.label == c for c in np.unique(pred.label)
    ]
    rates = [float((q[m] != pred.reference[m]).mean()) for m in masks]
    accs = [float((q[m] == pred.label[m]).mean()) for m in masks]
    return max(rates), min(accs), float((q != pred.reference).mean())


def test_sweep_numbers_recount_from_files_and_a_rerun_resumes(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    config = override(Config(), **TINY, **SMALL_SWEEP)
    seen = []
    first = calibrate(
        config,
        tmp_path,
        on_cell=lambda done, total, p, seed, cached: seen.append((done, total, cached)),
    )
    # baseline (50), shifted, 16, 64 (beyond the split: training images), qnnpack; 2 seeds
    assert len(seen) == 10 and seen[-1][:2] == (10, 10) and not any(c for *_, c in seen)
    report = first.report
    rows = report["rows"]
    means = [r["worst_disagreement"]["mean"] for r in rows]
    assert means == sorted(means)
    assert report["best"] == rows[0]["setting"]
    assert report["recommendation"]["line"].startswith(
        f"recommended calibration: {rows[0]['setting']}"
    )

    for cell in first.cells:
        pred = cell_predictions(report["cells_dir"], cell["seed"], cell["setting"])
        q = pred.variants[cell["setting"]]
        worst, worst_acc, overall = _recount(pred, q)
        assert cell["worst_disagreement"]["disagreement_rate"] == pytest.approx(worst)
        assert cell["worst_accuracy"]["accuracy"] == pytest.approx(worst_acc)
        assert cell["overall"]["disagreement_rate"] == pytest.approx(overall)
        assert len(pred) == 100 * 3  # clean + two families at one severity
    for row in rows:
        per_seed = [c for c in first.cells if c["setting"] == row["setting"]]
        expected = np.mean([_recount(*_load(report, c))[0] for c in per_seed])
        assert row["worst_disagreement"]["mean"] == pytest.approx(expected)

    # the default calibration's labels are exactly evaluate's int8 labels
    from mitigate.data.evalset import iter_batches
    from mitigate.runs.base_model import base_model
    from mitigate.runs.calibration import calibration_inputs
    from mitigate.runs.data import load_data, measurement_groups
    from mitigate.scanning import scan

    data = load_data(config)
    model, _ = base_model(config, data)
    groups = measurement_groups(config, data)
    q = quantize(model, "int8", calibration_inputs(config, data))
    batches = iter_batches(data.splits.test, groups, batch_size=512, seed=0)
    expected = scan(model, {"int8": q}, batches, groups=groups).variants["int8"]
    baseline = cell_predictions(report["cells_dir"], 0, report["baseline"])
    np.testing.assert_array_equal(baseline.variants[report["baseline"]], expected)

    # a rerun must not recompute anything: make recomputation impossible
    import mitigate.runs.calibrate as module

    monkeypatch.setattr(module, "_SeedRun", None)
    second = calibrate(config, tmp_path)
    assert second.report["cells"] == {"total": 10, "reused": 10, "set_aside": []}
    assert second.report["rows"] == rows


def _load(report, cell):
    pred = cell_predictions(report["cells_dir"], cell["seed"], cell["setting"])
    return pred, pred.variants[cell["setting"]]
