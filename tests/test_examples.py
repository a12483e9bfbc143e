"""The scripts in examples/ run to the end and print what the README says they print.

They run in this process with ``runpy`` (as ``python examples/<name>.py`` would run them),
which skips a second start-up of torch and Lightning.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RATE = r"0\.\d{4}"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a second intra-op thread only fights the other tests for 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_example(name: str, capsys) -> list[str]:
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    except SystemExit as stop:  # a script that calls sys.exit must exit 0
        assert stop.code in (0, None)
    return capsys.readouterr().out.splitlines()


def test_plain_pytorch_loop_prints_the_rate_every_epoch(capsys):
    lines = run_example("plain_pytorch.py", capsys)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 5
    for i, line in enumerate(epochs):
        assert re.fullmatch(
            rf"epoch {i}: disagreement rate {RATE} \(correct->wrong {RATE}, worst class \d\)", line
        ), line
    match = re.fullmatch(r"int8 disagrees on (\d+) of 497 validation digits: \[(.*)\]", lines[-1])
    assert match, lines[-1]
    final_rate = float(re.search(RATE, epochs[-1]).group())
    assert int(match.group(1)) == round(final_rate * 497)


def test_lightning_trainer_prints_the_monitored_rate_and_a_growing_training_set(capsys):
    lines = run_example("lightning_trainer.py", capsys)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert 2 <= len(epochs) <= 5  # EarlyStopping may end it early
    sizes = []
    for i, line in enumerate(epochs):
        match = re.fullmatch(
            rf"epoch {i}: disagreement rate {RATE}, int8 accuracy {RATE}, "
            r"training on (\d+) digits",
            line,
        )
        assert match, line
        sizes.append(int(match.group(1)))
    # printed after that epoch's mining round: 500 labelled digits + 100 per round
    assert sizes == [500 + 100 * (i + 1) for i in range(len(epochs))]
    assert lines[-1] == f"mined {100 * len(epochs)} pool digits in {len(epochs)} rounds"


def test_own_model_evaluates_then_retrains_and_prints_the_accounting(capsys):
    lines = run_example("own_model.py", capsys)
    measured = [re.fullmatch(r"(\S+): (\d+) disagreements in (\d+) inputs", x) for x in lines[:2]]
    assert [m.group(1) for m in measured] == ["int8", "fp16"], lines
    match = re.fullmatch(
        r"settings\+fallback: (\d+) -> (\d+) disagreements \((\d+) removed, (\d+) introduced, "
        r"churn 0\)",
        lines[-1],
    )
    assert match, lines[-1]
    before, after, removed, introduced = map(int, match.groups())
    assert before == int(measured[0].group(2))  # retrain's q0 is evaluate's int8 model
    assert before - removed + introduced == after


@pytest.mark.parametrize("name", ["plain_pytorch.py", "lightning_trainer.py", "own_model.py"])
def test_examples_stay_short(name):
    code = [
        line
        for line in (EXAMPLES / name).read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(code) <= 80
