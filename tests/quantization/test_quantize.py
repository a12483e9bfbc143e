from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.quantization import Int8Static, parse_scheme, quantize, scheme_label, scheme_names

ALL = [
    "int8",
    "int8:engine=qnnpack",
    "int8-dynamic",
    "fp16",
    "bf16",
    "int4-weight",
    "int4-weight:group_size=16",
]


@pytest.mark.parametrize("scheme", ALL)
def test_every_scheme_gives_float32_logits_close_to_fp(scheme, trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, scheme, x[:100])
    out = q(x[:300])
    ref = trained_tiny(x[:300])
    assert out.dtype == torch.float32 and out.shape == ref.shape
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agree > 0.9, f"{scheme} agrees with FP on only {agree:.1%}"


@pytest.mark.parametrize("scheme", ALL)
def test_quantize_never_modifies_the_model_passed_in(scheme, trained_tiny, digits_xy):
    x, _ = digits_xy
    model = copy.deepcopy(trained_tiny).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantize(model, scheme, x[:64])
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_no_deprecation_warnings_reach_the_user(trained_tiny, digits_xy):
    x, _ = digits_xy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scheme in ALL:
            quantize(trained_tiny, scheme, x[:64])(x[:8])


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(
        MitigateError,
        match=r"unknown quantization scheme 'int3'; valid choices: int8, int8-dynamic",
    ):
        parse_scheme("int3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("int8:engine=arm", r"unknown int8 engine 'arm'; valid choices: x86, qnnpack"),
        ("int8:color=red", r"bad option 'color=red' for scheme 'int8'; valid options: engine=..."),
        ("int8:per_channel=maybe", r"takes true or false"),
        ("int8:observer=kl", r"valid choices: histogram, minmax, moving-average"),
        ("fp16:engine=x86", r"valid options: none"),
        ("int4-weight:group_size=x", r"takes an integer"),
    ],
)
def test_bad_scheme_options_fail_with_one_clear_line(text, message):
    with pytest.raises(MitigateError, match=message):
        parse_scheme(text)


def test_scheme_labels_round_trip_through_the_parser():
    for text in [
        *scheme_names(),
        "int8:engine=qnnpack:per_channel=false",
        "int8:reduce_range=false",
    ]:
        scheme = parse_scheme(text)
        assert parse_scheme(scheme_label(scheme)) == scheme
    assert scheme_label(Int8Static()) == "int8"


def test_static_int8_needs_calibration(trained_tiny):
    with pytest.raises(MitigateError, match="calibration"):
        quantize(trained_tiny, "int8")


def test_layer_kept_in_float_runs_in_float_and_the_others_in_int8(trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, "int8:float_layers=conv1+fc", x[:64])
    modules = dict(q.inner.named_modules())
    assert not type(modules["conv1"]).__module__.startswith("torch.ao.nn.intrinsic.quantized")
    assert type(modules["fc"]) is nn.Linear
    assert type(modules["conv2"]).__module__.startswith("torch.ao.nn.intrinsic.quantized")
    with pytest.raises(MitigateError, match="no layer named 'nope'"):
        quantize(trained_tiny, "int8:float_layers=nope", x[:64])


def test_quantized_model_selects_its_engine_and_restores_the_global_one(trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, "int8:engine=qnnpack", x[:64])
    torch.backends.quantized.engine = "x86"
    q(x[:4])
    assert torch.backends.quantized.engine == "x86"


def test_quantized_model_runs_under_deterministic_mode(trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, "int8", x[:64])
    torch.use_deterministic_algorithms(True)
    try:
        out = q(x[:4])
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert out.shape == (4, 10)


def test_int4_weights_use_at_most_15_levels_per_output_channel(trained_tiny):
    q = quantize(trained_tiny, "int4-weight")
    w = q.inner.conv2.weight.detach().reshape(8, -1)
    for row in w:
        assert len(row.unique()) <= 15


def test_calibration_data_changes_the_quantization_parameters(trained_tiny, digits_xy):
    x, _ = digits_xy
    real = quantize(trained_tiny, "int8", x[:100])
    constant = quantize(trained_tiny, "int8", torch.full_like(x[:100], 0.5))
    assert real.inner.conv2.scale != constant.inner.conv2.scale
    # logits, not top-1: whether a label flips depends on the CPU's int8 kernels
    assert not torch.equal(real(x[:300]), constant(x[:300]))


def test_same_inputs_same_quantized_model(trained_tiny, digits_xy):
    x, _ = digits_xy
    a, b = quantize(trained_tiny, "int8", x[:100]), quantize(trained_tiny, "int8", x[:100])
    assert torch.equal(a(x[:200]), b(x[:200]))
