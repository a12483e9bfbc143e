"""What a mitigation costs in deployment: serialized size and latency relative to int8 and FP.

Size is exact: the bytes of ``torch.save(model.state_dict())``, pickle framing and per-channel
scales included, so a very small model shrinks less than 4x. Latency is a *ratio from one
run*: every model is timed in the same process, interleaved (one call of each model per
round, the order rotated every round so none always runs first on a warm cache), and each
model's median over the rounds is divided by the reference's. Absolute milliseconds are
reported too but only mean something on the machine and thread count that produced them;
ratios from one run are comparable across runs, absolute times are not.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError

__all__ = ["deployment_cost", "float_shares", "model_digest", "serialized_size"]

FP = "fp"


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what shipping the weights costs.

    Example:
        >>> serialized_size(torch.nn.Linear(100, 10)) > 1010 * 4
        True
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def model_digest(model: nn.Module) -> str:
    """A SHA-256 of everything that decides what ``model`` computes: its weights, scales and
    buffers (the bytes :func:`serialized_size` counts), its module tree, the generated code
    of an FX graph, and each submodule's scheme, engine and guard threshold. Two models with
    the same digest answer alike, so what was measured on one holds for the other.

    Example:
        >>> a = torch.nn.Linear(3, 2)
        >>> b = torch.nn.Linear(3, 2)
        >>> b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> model_digest(a) == model_digest(b), model_digest(a) == model_digest(torch.nn.ReLU())
        (True, False)
    """
    h = hashlib.sha256(_serialized(model))
    h.update(repr(model).encode())
    for name, module in model.named_modules():
        # what a state dict leaves out: the graph's code, the scheme and engine a quantized
        # wrapper runs with, a guard's threshold
        extra = [getattr(module, a, None) for a in ("code", "scheme", "engine", "threshold")]
        h.update(f"{name}:{extra!r}".encode())
    return h.hexdigest()


def _serialized(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def float_shares(
    model: nn.Module, scheme: object, input_shape: tuple[int, ...]
) -> dict[str, float]:
    """The shares of ``model``'s parameters and of its Conv/Linear MACs that ``scheme`` keeps in
    float: its ``float_layers`` for static int8, nothing for the other schemes.

    Example:
        >>> from mitigate.quantization import Int8Static
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        >>> float_shares(net, Int8Static(float_layers=("1",)), (4,))  # 18 of 58 parameters
        {'params': 0.3103448275862069, 'macs': 0.3333333333333333}
    """
    import math

    from mitigate.models import layer_table

    names = set(getattr(scheme, "float_layers", ()))
    if not names:
        return {"params": 0.0, "macs": 0.0}
    rows = [r for r in layer_table(model, input_shape) if r["name"] in names]
    return {
        "params": math.fsum(r["param_share"] for r in rows),
        "macs": math.fsum(r["mac_share"] for r in rows),
    }


def deployment_cost(
    fp_model: nn.Module,
    quantized: Mapping[str, nn.Module],
    example: Tensor,
    *,
    reference: str | None = None,
    repeats: int = 30,
    calls: int = 5,
    threads: int | None = 1,
    per_input_repeats: int = 0,
) -> dict[str, Any]:
    """Size and latency of each quantized model, relative to the reference int8 model and FP.

    Args:
        fp_model: the float32 model.
        quantized: label -> quantized model (e.g. ``{"int8": q, "int8:float_layers=conv1": f}``).
        example: ``float [B, ...]``, the batch every model is timed on.
        reference: the label of the all-int8 model in ``quantized``; defaults to ``"int8"``
            when present, else the first label.
        repeats: rounds of interleaved timing; the median round is used.
        calls: forward calls per timed measurement (timer resolution on small models).
        threads: intra-op threads while timing (restored after); ``None`` keeps torch's
            setting. One thread by default: a multi-threaded kernel waits for its slowest
            thread, so when another process holds a core, fbgemm's OpenMP kernels slow down
            several times more than qnnpack's and the ratios measure the neighbours.
        per_input_repeats: when above 0, also time every model on the example's inputs one
            at a time (a batch of 1 each, as a stream of requests meets it), in this many
            interleaved rounds; the median round's mean per input gives ``per_input_ms``. A
            model whose cost depends on the input (a guard that re-runs the FP model on a few
            of them) costs differently per input than per batch.

    Returns:
        ``{"reference": label, "repeats", "calls", "batch", "note", "models": {label:
        {size_bytes, size_vs_reference, size_vs_fp, latency_ms, latency_vs_reference,
        latency_vs_fp}}}``; ``models`` holds ``"fp"`` first, then each quantized label. With
        ``per_input_repeats``, every model also has ``per_input_ms``,
        ``per_input_vs_reference`` and ``per_input_vs_fp``.

    Raises:
        MitigateError: no quantized model, the label ``"fp"`` used for one, an unknown
            ``reference``, a bad ``example``, or ``repeats``/``calls`` below 1.

    Example:
        >>> from mitigate.quantization import quantize
        >>> net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(),
        ...                           torch.nn.Linear(256, 10))
        >>> cost = deployment_cost(net, {"int8": quantize(net, "int8", torch.rand(32, 256))},
        ...                        torch.rand(8, 256), repeats=3, calls=1)
        >>> cost["models"]["int8"]["size_vs_fp"] < 0.5
        True
    """
    models = _check(fp_model, quantized, example, reference, repeats, calls)
    if (
        isinstance(per_input_repeats, bool)
        or not isinstance(per_input_repeats, int)
        or per_input_repeats < 0
    ):
        raise MitigateError(f"per_input_repeats must be an int >= 0, got {per_input_repeats!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise MitigateError(f"threads must be an int >= 1 or None, got {threads!r}")
    reference = reference or ("int8" if "int8" in quantized else next(iter(quantized)))
    sizes = {label: serialized_size(m) for label, m in models.items()}
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        times = _median_ms(models, [example], repeats, calls)
        per_input = (
            _median_ms(models, list(example.split(1)), per_input_repeats, 1)
            if per_input_repeats
            else {}
        )
    finally:
        torch.set_num_threads(before)
    result = {
        "reference": reference,
        "threads": threads,
        "repeats": repeats,
        "calls": calls,
        "batch": int(example.shape[0]),
        "note": "latency ratios are medians of interleaved rounds from one run on one machine",
        "models": {
            label: {
                "size_bytes": sizes[label],
                "size_vs_reference": sizes[label] / sizes[reference],
                "size_vs_fp": sizes[label] / sizes[FP],
                "latency_ms": times[label],
                "latency_vs_reference": times[label] / times[reference],
                "latency_vs_fp": times[label] / times[FP],
            }
            for label in models
        },
    }
    for label, ms in per_input.items():
        result["models"][label] |= {
            "per_input_ms": ms,
            "per_input_vs_reference": ms / per_input[reference],
            "per_input_vs_fp": ms / per_input[FP],
        }
    return result


@torch.no_grad()
def _median_ms(
    models: dict[str, nn.Module], batches: list[Tensor], repeats: int, calls: int
) -> dict[str, float]:
    """Per model, the median over interleaved rounds of the time one call takes, averaged
    over ``calls`` passes through ``batches`` and over the batches."""
    labels = list(models)
    modes = {label: m.training for label, m in models.items()}
    samples: dict[str, list[float]] = {label: [] for label in labels}
    try:
        for model in models.values():
            model.eval()
            model(batches[0])  # warm-up: lazy init, weight packing, allocator
        for r in range(repeats):
            shift = r % len(labels)
            for label in labels[shift:] + labels[:shift]:
                model = models[label]
                start = time.perf_counter()
                for _ in range(calls):
                    for batch in batches:
                        model(batch)
                elapsed = time.perf_counter() - start
                samples[label].append(elapsed * 1000 / (calls * len(batches)))
    finally:
        for label, model in models.items():
            model.train(modes[label])
    # Guard a ratio against a zero median on a coarse clock.
    return {label: max(statistics.median(s), 1e-9) for label, s in samples.items()}


def _check(
    fp_model: object,
    quantized: object,
    example: object,
    reference: object,
    repeats: object,
    calls: object,
) -> dict[str, nn.Module]:
    if not isinstance(fp_model, nn.Module):
        raise MitigateError(f"fp_model must be a torch.nn.Module, got {type(fp_model).__name__}")
    if not isinstance(quantized, Mapping) or not quantized:
        raise MitigateError("quantized must be a non-empty dict of label -> quantized model")
    if FP in quantized:
        raise MitigateError(f"the label {FP!r} is reserved for the full-precision model")
    if reference is not None and reference not in quantized:
        raise MitigateError(
            f"reference {reference!r} is not among the models; labels: {', '.join(quantized)}"
        )
    if not isinstance(example, Tensor) or example.ndim < 2 or example.shape[0] == 0:
        raise MitigateError("example must be a non-empty float tensor [B, ...]")
    for name, value in (("repeats", repeats), ("calls", calls)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MitigateError(f"{name} must be an int >= 1, got {value!r}")
    return {FP: fp_model, **quantized}  # type: ignore[dict-item]
