"""A tiny config (small splits, a small model, two shifts) so CLI tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = """
seed = 0
[data]
train = 300
val = 50
calibration = 50
pool = 100
test = 100
[model]
arch = "lenet1"
[train]
epochs = 3
[shifts]
families = ["gaussian-noise", "rotate"]
severities = [3]
held_out = ["rotate"]
[quantization]
schemes = ["int8", "int4-weight"]
calibration_size = 50
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory) -> Path:
    """The tiny config, written once per session (for module- and session-scoped runs)."""
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY)
    return path
