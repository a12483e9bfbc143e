from __future__ import annotations

import pytest

from mitigate.calibration.settings import Setting, parse_setting, setting_of_scheme
from mitigate.config import Config, override
from mitigate.errors import MitigateError
from mitigate.quantization import Int8Static, parse_scheme, scheme_label
from mitigate.runs.calibrate import check_sweep
from mitigate.runs.calibration import apply_preset, baseline_setting, resolve_preset


def test_names_round_trip_and_partial_names_fill_from_the_base():
    s = Setting("mixed", 64, "class-balanced", 3, "moving-average", "per-tensor", "x86-full")
    assert s.name == "mixed-64-balanced-aug3-movingavg-pertensor-x86full"
    assert parse_setting(s.name) == s
    assert parse_setting("qnnpack-256-minmax-clean") == Setting(
        size=256, observer="minmax", engine="qnnpack"
    )
    base = Setting(size=16, augment=1)
    assert parse_setting("class-balanced", base) == Setting(
        size=16, augment=1, sampling="class-balanced"
    )
    # the selected source is always ranked by its selector
    assert parse_setting("selected").sampling == "selector-ranked"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("clean-foo", "unknown token 'foo'.*valid tokens: clean, shifted"),
        ("clean-shifted", "sets the source twice"),
        ("0", "size must be >= 1"),
    ],
)
def test_bad_names_fail_with_one_line(name, match):
    with pytest.raises(MitigateError, match=match):
        parse_setting(name)


def test_engines_map_to_schemes_and_back():
    base = parse_scheme("int8:float_layers=conv1")
    for engine, label in [
        ("x86", "int8:float_layers=conv1"),
        ("x86-full", "int8:reduce_range=false:float_layers=conv1"),
        ("qnnpack", "int8:engine=qnnpack:float_layers=conv1"),
    ]:
        scheme = Setting(engine=engine).scheme(base)
        assert scheme_label(scheme) == label
        assert (
            setting_of_scheme(scheme, source="clean", size=100, sampling="random").engine == engine
        )
    per_tensor = Setting(granularity="per-tensor", observer="minmax").scheme()
    assert per_tensor == Int8Static(per_channel=False, observer="minmax")


def test_baseline_is_the_default_calibration_and_sweep_options_are_checked():
    assert baseline_setting(Config()) == Setting()
    assert baseline_setting(
        override(Config(), calibration__scheme="int8:engine=qnnpack")
    ).engine == ("qnnpack")
    for key, value, match in [
        ("calibration__sources", ["clean", "dirty"], "unknown calibration source 'dirty'"),
        ("calibration__engines", ["arm"], "unknown calibration engine 'arm'"),
        ("calibration__selector", "oracle", "FP model only"),
        ("calibration__grid", "random", "unknown calibration grid"),
        ("calibration__scheme", "fp16", "static torch.ao int8 scheme"),
        ("calibration__extra", ["clean-bogus"], "unknown token 'bogus'"),
        ("calibration__sizes", [0], "sizes must be >= 1"),
    ]:
        with pytest.raises(MitigateError, match=match):
            check_sweep(override(Config(), **{key: value}))


def test_apply_preset_rewrites_static_int8_schemes_only(tmp_path):
    config = override(
        Config(),
        quantization__schemes=["int8", "int8:engine=qnnpack", "int8-dynamic", "fp16"],
        retrain__scheme="int8:float_layers=conv1",
        calibration__preset="minmax-qnnpack",
    )
    applied = apply_preset(config)
    assert applied.calibration.preset == "clean-100-random-aug0-minmax-perchannel-qnnpack"
    # both int8 entries become the same scheme: listed once
    assert applied.quantization.schemes == (
        "int8:engine=qnnpack:observer=minmax",
        "int8-dynamic",
        "fp16",
    )
    assert applied.retrain.scheme == "int8:engine=qnnpack:observer=minmax:float_layers=conv1"
    assert apply_preset(applied) == applied  # idempotent
    assert apply_preset(Config()) == Config()


def test_best_needs_a_saved_recommendation(tmp_path):
    with pytest.raises(MitigateError, match="no saved best calibration.*mitigate calibrate"):
        resolve_preset(override(Config(), calibration__preset="best"))
    with pytest.raises(MitigateError, match="preset file not found"):
        resolve_preset(override(Config(), calibration__preset=str(tmp_path / "none.json")))
    bad = tmp_path / "bad.json"
    bad.write_text('{"calibration": {"source": "soup"}}')
    with pytest.raises(MitigateError, match="unknown calibration source 'soup'"):
        resolve_preset(override(Config(), calibration__preset=str(bad)))
