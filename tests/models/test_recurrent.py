"""LSTM and GRU classifiers: building, checkpoints with a vocabulary, the layer table, every
quantization scheme that applies, a crafted disagreement count, and weight-rounding QAT."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mitigate.config import TrainConfig
from mitigate.data.evalset import Group, iter_batches
from mitigate.data.text.dataset import LabelledText
from mitigate.data.text.vocab import Vocabulary
from mitigate.disagreement import disagreement_count
from mitigate.errors import MitigateError
from mitigate.models import build_model, layer_table, load_checkpoint, save_checkpoint
from mitigate.quantization import quantize
from mitigate.quantization.weight_only import fake_quantize_int8
from mitigate.scanning import scan
from mitigate.trainers import train_classifier
from mitigate.trainers.qat import WeightQAT, extract_float, prepare_qat_model

ARCHS = ["lstm", "gru"]
VOCAB, LENGTH = 30, 12


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny recurrent models: a second thread only waits
    yield
    torch.set_num_threads(threads)


def _task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids in 2..VOCAB-1 (some left padding); class = token 2 ("good") appears more
    often than token 3 ("bad")."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(2, VOCAB, (n, LENGTH), generator=gen)
    x[:, : LENGTH // 4] *= torch.rand(n, 1, generator=gen) < 0.5  # pad some in front
    return x, ((x == 2).sum(1) > (x == 3).sum(1)).long()


@pytest.fixture(scope="module")
def trained() -> dict[str, nn.Module]:
    """Each architecture after 150 Adam steps on the counting task (about 90% accurate)."""
    torch.set_num_threads(1)
    x, y = _task(2048, 0)
    models = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        model = build_model(arch, vocab_size=VOCAB, seq_len=LENGTH, num_classes=2)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(150):
            rows = torch.arange(step * 64, step * 64 + 64) % len(x)
            opt.zero_grad()
            F.cross_entropy(model(x[rows]), y[rows]).backward()
            opt.step()
        model.zero_grad(set_to_none=True)
        models[arch] = model.eval()
    return models


# -------------------------------------------------------------------------- building


@pytest.mark.parametrize("arch", ARCHS)
def test_build_and_forward(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, vocab_size=VOCAB, seq_len=LENGTH, num_classes=3)
    assert model.modality == "text" and model.input_shape == (LENGTH,)
    assert model.vocab_size == VOCAB and isinstance(model.rnn, getattr(nn, arch.upper()))
    logits = model(torch.randint(0, VOCAB, (4, LENGTH)))
    assert logits.shape == (4, 3) and logits.dtype == torch.float32
    logits.sum().backward()
    assert float(model.embedding.weight.grad[0].abs().sum()) == 0.0  # <pad> stays zero
    assert model.eval()(torch.randint(0, VOCAB, (2, 5))).shape == (2, 3)  # any length


def test_build_rejects_the_other_modality() -> None:
    with pytest.raises(MitigateError, match="model 'lstm' reads token ids: pass vocab_size"):
        build_model("lstm", in_channels=1, image_size=8, num_classes=2)
    with pytest.raises(MitigateError, match="model 'lenet5' reads images: .* text models: lstm"):
        build_model("lenet5", vocab_size=10, seq_len=4, num_classes=2)
    with pytest.raises(MitigateError, match="vocab_size must be an integer >= 3, got 2"):
        build_model("gru", vocab_size=2, seq_len=4, num_classes=2)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_keeps_the_vocabulary(arch: str, tmp_path, trained) -> None:
    vocabulary = Vocabulary(("<pad>", "<unk>", *(f"w{i}" for i in range(VOCAB - 2))))
    meta = {"vocabulary": list(vocabulary.tokens), "max_len": LENGTH}
    save_checkpoint(tmp_path / "m.pt", trained[arch], meta)
    # weights_only loading (load_checkpoint) takes plain lists of strings.
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["meta"]["vocabulary"][:3] == ["<pad>", "<unk>", "w0"]
    model, loaded = load_checkpoint(tmp_path / "m.pt", expected_arch=arch)
    assert loaded["input_shape"] == [LENGTH] and loaded["vocab_size"] == VOCAB
    assert Vocabulary(tuple(loaded["vocabulary"])) == vocabulary
    x, _ = _task(16, 1)
    torch.testing.assert_close(model(x), trained[arch](x))
    raw["meta"].pop("vocab_size")
    torch.save(raw, tmp_path / "broken.pt")
    with pytest.raises(MitigateError, match=f"a {arch} needs vocab_size"):
        load_checkpoint(tmp_path / "broken.pt")


@pytest.mark.parametrize(("arch", "gates"), [("lstm", 4), ("gru", 3)])
def test_layer_table_counts_recurrent_layers(arch: str, gates: int) -> None:
    model = build_model(arch, vocab_size=VOCAB, seq_len=LENGTH, num_classes=2)
    rows = {row["name"]: row for row in layer_table(model, (LENGTH,))}
    assert [r["type"] for r in rows.values()] == ["Embedding", arch.upper(), "Linear"]
    assert sum(r["params"] for r in rows.values()) == sum(p.numel() for p in model.parameters())
    embed, hidden = model.rnn.input_size, model.rnn.hidden_size
    assert rows["rnn"]["macs"] == LENGTH * gates * hidden * (embed + hidden)
    assert rows["embedding"]["macs"] == 0 and rows["classifier"]["macs"] == hidden * 2


# -------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    ("scheme", "max_diff", "agreement"),
    [("int8-dynamic", 0.2, 0.98), ("fp16", 0.02, 0.995), ("bf16", 0.2, 0.98),
     ("int4-weight", 1.0, 0.9)],
)  # fmt: skip
def test_quantized_copies_stay_close(arch, scheme, max_diff, agreement, trained) -> None:
    model = trained[arch]
    x, y = _task(1000, 2)
    with torch.no_grad():
        fp = model(x)
        q = quantize(model, scheme)(x)
    assert q.dtype == torch.float32 and q.shape == fp.shape
    assert float((fp.argmax(1) == y).float().mean()) > 0.8  # the model did learn the task
    assert float((q - fp).abs().max()) < max_diff
    assert float((q.argmax(1) == fp.argmax(1)).float().mean()) >= agreement


@pytest.mark.parametrize("arch", ARCHS)
def test_int4_weight_rounds_the_recurrent_weights(arch, trained) -> None:
    q = quantize(trained[arch], "int4-weight").inner
    for name in ("weight_ih_l0", "weight_hh_l0"):
        rounded = getattr(q.rnn, name)
        assert not torch.equal(rounded, getattr(trained[arch].rnn, name))
        assert all(len(row.unique()) <= 15 for row in rounded)  # 15 levels per row
    assert torch.equal(q.embedding.weight, trained[arch].embedding.weight)  # stays float


def test_static_int8_and_its_qat_refuse_recurrent_models(trained) -> None:
    x, _ = _task(8, 3)
    message = (
        r"static int8 cannot quantize recurrent layers \(LSTM rnn\); for recurrent models "
        r"use one of: int8-dynamic, fp16, bf16, int4-weight"
    )
    with pytest.raises(MitigateError, match=message):
        quantize(trained["lstm"], "int8", x)
    with pytest.raises(MitigateError, match="cannot quantize recurrent layers \\(GRU rnn\\)"):
        prepare_qat_model(trained["gru"], "int8:engine=qnnpack", x[:1])


def test_fake_int8_equals_the_dynamic_weights() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 4)
    packed = quantize(nn.Sequential(linear), "int8-dynamic").inner[0].weight().dequantize()
    torch.testing.assert_close(fake_quantize_int8(linear.weight.detach()), packed)


def _crafted(arch: str) -> nn.Module:
    """A model whose hidden unit 1 after the last step is tanh(tanh(3)) ~ 0.76 for the last
    token "good", -0.76 for "bad" and 0 for "meh" (no memory: the recurrent weights are 0),
    and whose class 0 wins in float iff that unit exceeds 0.5 — by 0.002 * h - 0.001, a
    margin int8's per-tensor weight scale (1 / 127.5) rounds to zero, so every text ending
    in "good" flips to class 1 and nothing else does."""
    model = build_model(arch, vocab_size=5, seq_len=4, num_classes=2).eval()
    rnn = model.rnn
    hidden = rnn.hidden_size
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embedding.weight[2:5, 1] = torch.tensor([3.0, -3.0, 0.0])  # good, bad, meh
        if arch == "lstm":  # gates i, f, g, o: input and output open, forget closed
            rnn.bias_ih_l0[:hidden] = 20.0
            rnn.bias_ih_l0[hidden : 2 * hidden] = -20.0
            rnn.bias_ih_l0[3 * hidden :] = 20.0
            rnn.weight_ih_l0[2 * hidden + 1, 1] = 1.0  # candidate of unit 1 reads the token
        else:  # gates r, z, n: update gate closed, so h = n = tanh(W x)
            rnn.bias_ih_l0[hidden : 2 * hidden] = -20.0
            rnn.weight_ih_l0[2 * hidden + 1, 1] = 1.0
        model.classifier.weight[:, 0] = 1.0  # fixes the int8 weight scale at 1 / 127.5
        model.classifier.weight[0, 1] = 0.002
        model.classifier.bias[0] = -0.001
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_a_crafted_case_counts_disagreements_exactly(arch: str) -> None:
    vocabulary = Vocabulary(("<pad>", "<unk>", "good", "bad", "meh"))
    texts = ["bad good", "good bad", "meh", "good", "bad meh good", "good meh", "x", "good good"]
    data = LabelledText(tuple(texts), torch.zeros(8, dtype=torch.int64), ("a", "b"))
    data = data.with_vocabulary(vocabulary, max_len=4)
    model = _crafted(arch)
    groups = [Group("clean")]
    batches = iter_batches(data, groups, batch_size=3, seed=0)
    variants = {"int8-dynamic": quantize(model, "int8-dynamic")}
    predictions = scan(model, variants, batches, groups=groups, scores=())
    ends_good = [t.split()[-1] == "good" for t in texts]
    assert predictions.reference.tolist() == [0 if g else 1 for g in ends_good]
    assert predictions.variants["int8-dynamic"].tolist() == [1] * 8
    flips = disagreement_count(
        torch.as_tensor(predictions.reference),
        torch.as_tensor(predictions.variants["int8-dynamic"]),
    )
    assert int(flips) == sum(ends_good) == 4


# -------------------------------------------------------------------------- QAT


def test_weight_qat_rounds_in_forward_and_trains_the_float_weights(trained) -> None:
    model = trained["gru"]
    qat = prepare_qat_model(model, "int8-dynamic", torch.zeros(1, LENGTH, dtype=torch.long))
    assert isinstance(qat, WeightQAT) and qat.training
    assert qat.names == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "classifier.weight"]
    x, y = _task(64, 4)
    rounded = build_model("gru", vocab_size=VOCAB, seq_len=LENGTH, num_classes=2)
    rounded.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name in qat.names:
            rounded.get_parameter(name).copy_(fake_quantize_int8(model.get_parameter(name)))
    qat.eval()
    torch.testing.assert_close(qat(x), rounded.eval()(x))
    qat.train()
    F.cross_entropy(qat(x), y).backward()  # straight-through: gradients reach float weights
    assert qat.model.rnn.weight_hh_l0.grad is not None
    assert float(qat.model.rnn.weight_hh_l0.grad.abs().sum()) > 0
    assert model.rnn.weight_hh_l0.grad is None  # the original is never touched


def test_qat_and_distill_train_recurrent_models_for_int8_dynamic(trained) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    x, y = _task(256, 5)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    settings = TrainConfig(method="qat", qat_scheme="int8-dynamic", epochs=1, lr=1e-3)
    out = train_classifier(trained["lstm"], loader, settings=settings, seed=0)
    assert isinstance(out.prepared, WeightQAT) and out.scheme.kind == "int8-dynamic"
    state = out.prepared.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in out.model.state_dict().items())
    assert not torch.equal(out.model.rnn.weight_hh_l0, trained["lstm"].rnn.weight_hh_l0)
    q = out.quantized()
    assert q.label == "int8-dynamic" and q(x).shape == (256, 2)
    assert torch.equal(extract_float(out.prepared, trained["lstm"]).rnn.weight_hh_l0,
                       out.model.rnn.weight_hh_l0)  # fmt: skip
    distill = TrainConfig(method="distill", qat_scheme="int4-weight", epochs=1, lr=1e-3)
    taught = train_classifier(
        trained["gru"], loader, settings=distill, seed=0, teacher=trained["gru"], qat=True
    )
    assert taught.quantized().label == "int4-weight"
    with pytest.raises(MitigateError, match="perturbs float inputs; torch.int64 inputs"):
        train_classifier(trained["gru"], loader, settings=TrainConfig(method="mixup"), seed=0)
