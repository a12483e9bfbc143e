"""The ONNX Runtime backend: the export agrees with torch, int8 runs integer kernels, exclude
keeps layers in float, a user's .onnx file is measured, and bad input is one clear error."""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.quantization import parse_scheme, quantize, scheme_label

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from mitigate.quantization.ort import OrtModule, export_onnx  # noqa: E402
from mitigate.quantization.ort.export import clear_export_cache, export_key  # noqa: E402

INT_KERNELS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger"}


def _ops(q) -> set[str]:
    return set(q.inner.optimized_ops())


def test_ort_fp32_agrees_with_torch_on_every_input(trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, "ort-fp32", x[:64])
    out, ref = q(x), trained_tiny(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.equal(out.argmax(1), ref.argmax(1))
    assert torch.allclose(out, ref, atol=1e-4)
    export = q.inner.info["export"]
    assert export["agrees_with_torch"] and export["inputs"] == 64
    assert export["labels_differ"] == 0


@pytest.mark.parametrize(
    "scheme",
    [
        "ort-int8",
        "ort-int8:per_channel=false",
        "ort-int8:calibration=entropy",
        "ort-int8:calibration=percentile:reduce_range=true",
        "ort-int8:activations=s8",
    ],
)
def test_ort_int8_runs_integer_kernels_and_mostly_agrees(scheme, trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, scheme, x[:100])
    ops = _ops(q)
    # the QDQ graph fused into integer convolutions and matrix products, not simulated in float
    assert {"QLinearConv", "QGemm"} & ops, ops
    assert "Gemm" not in ops
    agree = (q(x).argmax(1) == trained_tiny(x).argmax(1)).float().mean().item()
    assert agree > 0.9


def test_ort_int8_dynamic_runs_integer_kernels(trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, "ort-int8-dynamic", x[:64])
    assert INT_KERNELS & _ops(q) or "DynamicQuantizeMatMul" in _ops(q)
    assert (q(x).argmax(1) == trained_tiny(x).argmax(1)).float().mean().item() > 0.9


def test_simulated_qdq_graph_differs_from_the_fused_kernels(trained_tiny, digits_xy):
    # why reports must run at the deployed optimization level: with optimization off the QDQ
    # pairs run in float and the logits are not those of the integer kernels
    x, _ = digits_xy
    fused = quantize(trained_tiny, "ort-int8", x[:100])
    simulated = quantize(trained_tiny, "ort-int8:optimization=disable", x[:100])
    assert "QLinearConv" not in _ops(simulated) and "QLinearConv" in _ops(fused)
    assert not torch.equal(fused(x), simulated(x))


def test_exclude_keeps_the_named_layers_in_float(trained_tiny, digits_xy):
    x, _ = digits_xy
    base = quantize(trained_tiny, "ort-int8", x[:64])
    q = quantize(trained_tiny, "ort-int8:exclude=fc", x[:64])
    assert "Gemm" in _ops(q) and "Gemm" not in _ops(base)
    assert "QGemm" not in _ops(q) and "QLinearConv" in _ops(q)
    # conv1 is folded with bn1 by the exporter; its module name still finds the node
    conv = quantize(trained_tiny, "ort-int8:exclude=conv1+fc", x[:64])
    assert "Conv" in _ops(conv)
    assert q.inner.info["excluded_nodes"] and set(q.inner.info["excluded_nodes"]) < set(
        conv.inner.info["excluded_nodes"]
    )


def test_exclude_names_an_unknown_layer_in_one_line(trained_tiny, digits_xy):
    x, _ = digits_xy
    with pytest.raises(MitigateError, match=r"no layer or ONNX node named 'nope'.*conv1.*fc"):
        quantize(trained_tiny, "ort-int8:exclude=nope", x[:64])


def test_export_is_cached_by_weights(trained_tiny, digits_xy):
    x, _ = digits_xy
    clear_export_cache()
    first = export_onnx(trained_tiny, x[:8])
    assert export_onnx(trained_tiny, x[:4]) is first  # same weights, same input shape
    changed = copy.deepcopy(trained_tiny)
    with torch.no_grad():
        changed.fc.bias += 1
    assert export_key(changed, x[:8]) != export_key(trained_tiny, x[:8])
    assert export_onnx(changed, x[:8]) is not first


def test_export_is_reused_from_disk_by_the_next_process(trained_tiny, digits_xy, monkeypatch):
    from mitigate.quantization.ort import export as export_module

    x, _ = digits_xy
    first = export_onnx(trained_tiny, x[:8])
    assert (export_module.export_dir() / f"{export_key(trained_tiny, x[:8])}.onnx").is_file()
    clear_export_cache()  # as a new process starts: nothing in memory

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(export_module, "_export", no_export)
    assert export_onnx(trained_tiny, x[:8]) == first
    clear_export_cache(disk=True)
    with pytest.raises(AssertionError, match="exported again"):
        export_onnx(trained_tiny, x[:8])


def test_unexportable_model_names_the_operator():
    @torch.library.custom_op("mitigate_test::no_onnx", mutates_args=())
    def no_onnx(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @no_onnx.register_fake
    def _(x):
        return torch.empty_like(x)

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(no_onnx(x))

    with pytest.raises(MitigateError, match="operator mitigate_test.no_onnx") as err:
        quantize(Odd(), "ort-fp32", torch.rand(4, 4))
    assert "\n" not in str(err.value)


def test_user_onnx_file_is_the_quantized_side(trained_tiny, digits_xy, tmp_path):
    x, _ = digits_xy
    built = quantize(trained_tiny, "ort-int8", x[:64])
    path = tmp_path / "shipped.onnx"
    path.write_bytes(built.inner.model_bytes)
    q = quantize(trained_tiny, str(path), x[:64])
    assert scheme_label(q.scheme) == f"onnx:path={path}"
    assert torch.equal(q(x), built(x))  # the same file, the same session options
    with pytest.raises(MitigateError, match="no ONNX file"):
        quantize(trained_tiny, str(tmp_path / "missing.onnx"), x[:64])
    other = nn.Sequential(nn.Flatten(), nn.Linear(10, 3)).eval()
    (tmp_path / "other.onnx").write_bytes(export_onnx(other, torch.rand(2, 10)))
    with pytest.raises(MitigateError, match="does not take the FP model's inputs"):
        quantize(trained_tiny, str(tmp_path / "other.onnx"), x[:64])
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(MitigateError, match="ONNX Runtime cannot load"):
        quantize(trained_tiny, str(tmp_path / "bad.onnx"), x[:64])


def test_ort_model_copies_pickles_and_reloads(trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, "ort-int8", x[:64])
    assert torch.equal(copy.deepcopy(q)(x), q(x))
    assert torch.equal(pickle.loads(pickle.dumps(q))(x), q(x))
    buffer = io.BytesIO()
    torch.save(q.state_dict(), buffer)  # its size is the model ORT runs
    assert buffer.tell() > q.inner.onnx_model.numel()
    other = quantize(trained_tiny, "ort-int8:per_channel=false", x[:64])
    other.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert torch.equal(other(x), q(x))


def test_session_options_are_recorded(trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, "ort-int8:threads=1:optimization=extended", x[:64])
    described = q.inner.describe()
    assert described["threads"] == 1 and described["optimization"] == "extended"
    assert described["runtime"] == "onnxruntime" and described["version"]


def test_default_threads_follow_torch(trained_tiny, digits_xy):
    x, _ = digits_xy
    q = quantize(trained_tiny, "ort-int8", x[:64])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = q(x)
        assert q.inner.intra_op_threads == 1
        assert q.inner.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)
    assert q.inner.intra_op_threads == before
    assert torch.equal(q(x), one)  # the same integer kernels whatever the thread count


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ort-int8:calibration=kl", "valid choices: minmax, entropy, percentile"),
        ("ort-int8:activations=u4", "valid choices: u8, s8"),
        ("ort-fp32:optimization=max", "valid choices: all, extended, basic, disable"),
        ("ort-int8:threads=-1", "integer >= 0"),
        ("onnx", "needs a file"),
        ("ort-int8:observer=minmax", "exclude=..."),
    ],
)
def test_bad_ort_options_are_one_line(text, message):
    with pytest.raises(MitigateError, match=message):
        parse_scheme(text)


def test_ort_labels_round_trip():
    for text in ("ort-int8:calibration=entropy:exclude=conv1+fc", "ort-int8-dynamic", "m.onnx"):
        scheme = parse_scheme(text)
        assert parse_scheme(scheme_label(scheme)) == scheme


def test_without_the_extra_an_ort_scheme_names_the_install_command(tmp_path):
    # a process where onnxruntime cannot be imported: the package still imports, the scheme
    # fails with the install command
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import torch, mitigate\n"
        "from mitigate.errors import MitigateError\n"
        "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
        "try:\n"
        "    mitigate.quantize(net, 'ort-int8', torch.rand(4, 4))\n"
        "except MitigateError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'mitigate[onnx]'" in out.stdout


def test_ort_module_is_a_plain_module(trained_tiny, digits_xy):
    x, _ = digits_xy
    module = OrtModule(export_onnx(trained_tiny, x[:2]))
    assert module.train().training is False
    assert torch.allclose(module(x[:5]), trained_tiny(x[:5]), atol=1e-4)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_text_models_take_token_ids_in_ort(arch):
    from mitigate.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, vocab_size=50, seq_len=8, num_classes=3).eval()
    ids = torch.randint(0, 50, (40, 8))
    fp32 = quantize(model, "ort-fp32", ids)
    assert torch.equal(fp32(ids).argmax(1), model(ids).argmax(1))
    assert fp32.inner.info["export"]["agrees_with_torch"]
    dynamic = quantize(model, "ort-int8-dynamic", ids)
    assert dynamic(ids).shape == (40, 3)


def test_training_monitor_needs_example_inputs_for_ort(trained_tiny, digits_xy):
    from mitigate.trainers.callbacks import DisagreementMonitor

    x, _ = digits_xy
    with pytest.raises(MitigateError, match="'ort-int8' \\(ONNX Runtime\\) needs example inputs"):
        DisagreementMonitor(["ort-int8"])
    monitor = DisagreementMonitor(["int8", "ort-int8"], calibration=x[:64])
    assert list(monitor.schemes) == ["int8", "ort-int8"]
