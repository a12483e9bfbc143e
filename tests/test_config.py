from __future__ import annotations

from pathlib import Path

import pytest

from mitigate.config import Config, config_digest, load_config, override
from mitigate.errors import MitigateError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_toml_equals_the_built_in_defaults():
    assert load_config(CONFIGS / "default.toml") == Config()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_every_shipped_config_loads(name):
    config = load_config(CONFIGS / f"{name}.toml")
    assert config.data.data_dir


@pytest.mark.parametrize(("name", "arch"), [("text-lstm", "lstm"), ("text-gru", "gru")])
def test_text_configs_load_with_recurrent_models_and_dynamic_int8(name, arch):
    config = load_config(CONFIGS / f"{name}.toml")
    assert config.model.arch == arch and config.data.dataset == "tweets"
    assert "int8" not in config.quantization.schemes  # static int8 cannot quantize LSTM / GRU
    assert config.retrain.scheme == config.train.qat_scheme == "int8-dynamic"


def test_unknown_keys_list_the_valid_ones(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[data]\ndatset = 'mnist'\n")
    with pytest.raises(
        MitigateError,
        match=r"unknown config key 'data.datset' in .*bad.toml; valid keys: data.dataset",
    ):
        load_config(path)
    path.write_text("[modle]\narch = 'x'\n")
    with pytest.raises(MitigateError, match=r"unknown config key 'modle'"):
        load_config(path)


def test_wrong_types_and_missing_files_fail_clearly(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nepochs = 'ten'\n")
    with pytest.raises(MitigateError, match=r"'train.epochs' .* must be int"):
        load_config(path)
    path.write_text("[train\n")
    with pytest.raises(MitigateError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(MitigateError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_overrides_skip_unset_options_and_parse_lists():
    config = override(Config(), seed=None, shifts__severities="1, 3", model__arch="lenet1")
    assert config.seed == 0
    assert config.shifts.severities == (1, 3)
    assert config.model.arch == "lenet1"


def test_digest_is_stable_and_sensitive():
    assert config_digest(Config().data) == config_digest(Config().data)
    assert config_digest(Config().data) != config_digest(override(Config(), data__train=10).data)
