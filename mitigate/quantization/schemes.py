"""Quantization schemes: frozen config dataclasses, a registry, and a parser for their names.

A scheme says *what* to do (int8 static with the x86 engine, 4-bit weights per group, ...);
:mod:`mitigate.quantization.api` maps each scheme type to the handler that does it, as torchao
does. Names on the command line are a registry name optionally followed by ``:key=value``
overrides, e.g. ``int8:engine=qnnpack:per_channel=false``; commas stay free for lists.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from mitigate.errors import MitigateError, unknown_choice

__all__ = [
    "ENGINES",
    "OBSERVERS",
    "SCHEMES",
    "BFloat16",
    "Float16",
    "Int4Weight",
    "Int8Dynamic",
    "Int8Static",
    "ORT_ACTIVATIONS",
    "ORT_CALIBRATIONS",
    "ORT_OPTIMIZATIONS",
    "ORT_SCHEMES",
    "OnnxFile",
    "OrtFloat32",
    "OrtInt8",
    "OrtInt8Dynamic",
    "Scheme",
    "parse_scheme",
    "scheme_label",
    "scheme_names",
    "validate_scheme",
]

ENGINES = ("x86", "qnnpack")
# Activation observers torch's PTQ offers; "histogram" is torch's default for both engines.
OBSERVERS = ("histogram", "minmax", "moving-average")
# ONNX Runtime's calibration methods (quantize_static), and its graph optimization levels:
# "all" is ORT's default and the level that fuses QDQ pairs into integer kernels.
ORT_CALIBRATIONS = ("minmax", "entropy", "percentile")
ORT_OPTIMIZATIONS = ("all", "extended", "basic", "disable")
ORT_ACTIVATIONS = ("u8", "s8")


@dataclass(frozen=True)
class Int8Static:
    """Static post-training int8: weights and activations int8, calibrated on sample inputs.

    Attributes:
        engine: ``x86`` (fbgemm kernels) or ``qnnpack`` (ARM/mobile kernels; runs on x86 too).
        reduce_range: quantize activations to 7 bits. ``None`` means the engine default:
            on for x86 (its kernels can overflow otherwise), off for qnnpack. Our measurements
            found x86's reduced range alone roughly doubles disagreements.
        per_channel: one weight scale per output channel (else one per tensor).
        observer: how activation ranges are estimated from the calibration data.
        float_layers: qualified module names kept in float (layer fallback).
    """

    kind: ClassVar[str] = "int8"
    engine: str = "x86"
    reduce_range: bool | None = None
    per_channel: bool = True
    observer: str = "histogram"
    float_layers: tuple[str, ...] = ()

    @property
    def effective_reduce_range(self) -> bool:
        return self.engine == "x86" if self.reduce_range is None else self.reduce_range


@dataclass(frozen=True)
class Int8Dynamic:
    """Dynamic int8: int8 weights; activations quantized on the fly per batch.

    Applies to Linear, LSTM and GRU layers; convolutions stay in float.
    """

    kind: ClassVar[str] = "int8-dynamic"
    engine: str = "x86"


@dataclass(frozen=True)
class Float16:
    """Half precision: weights and activations in IEEE float16."""

    kind: ClassVar[str] = "fp16"


@dataclass(frozen=True)
class BFloat16:
    """bfloat16: float32's range with an 8-bit mantissa."""

    kind: ClassVar[str] = "bf16"


@dataclass(frozen=True)
class Int4Weight:
    """Weight-only 4-bit: symmetric int4 weights, float activations (simulated on CPU).

    Attributes:
        group_size: input elements sharing one scale; ``0`` means one scale per output channel.
    """

    kind: ClassVar[str] = "int4-weight"
    group_size: int = 0


@dataclass(frozen=True)
class OrtInt8:
    """Static int8 in ONNX Runtime: the exported FP model quantized to QDQ form by
    ``onnxruntime.quantization.quantize_static``, run at ``optimization`` (``all`` fuses the
    QDQ pairs into ``QLinearConv`` / ``QGemm`` integer kernels, as deployed).

    Attributes:
        calibration: ``minmax``, ``entropy`` or ``percentile`` activation ranges.
        per_channel: one weight scale per output channel (else one per tensor).
        activations: ``u8`` (asymmetric uint8) or ``s8`` (int8) activations.
        reduce_range: 7-bit weights (ORT's guard for CPUs without VNNI).
        float_layers: module names (``classifier.fc1``) or ONNX node names kept in float;
            spelled ``exclude=a+b`` in a scheme name.
        threads: ORT intra-op threads (0: torch's intra-op thread count at each call, so
            timings beside torch models compare like for like).
        optimization: ORT graph optimization level, one of ``ORT_OPTIMIZATIONS``.
    """

    kind: ClassVar[str] = "ort-int8"
    aliases: ClassVar[dict[str, str]] = {"exclude": "float_layers"}
    calibration: str = "minmax"
    per_channel: bool = True
    activations: str = "u8"
    reduce_range: bool = False
    float_layers: tuple[str, ...] = ()
    threads: int = 0
    optimization: str = "all"


@dataclass(frozen=True)
class OrtInt8Dynamic:
    """Dynamic int8 in ONNX Runtime (``quantize_dynamic``): int8 weights, activations
    quantized per batch at run time (``DynamicQuantizeMatMul``, ``ConvInteger``)."""

    kind: ClassVar[str] = "ort-int8-dynamic"
    per_channel: bool = False
    reduce_range: bool = False
    threads: int = 0
    optimization: str = "all"


@dataclass(frozen=True)
class OrtFloat32:
    """The exported FP model run in ONNX Runtime: measures the export and the runtime's float
    kernels, so its disagreements with torch should be zero."""

    kind: ClassVar[str] = "ort-fp32"
    threads: int = 0
    optimization: str = "all"


@dataclass(frozen=True)
class OnnxFile:
    """A model the user already ships as a ``.onnx`` file, run in ONNX Runtime as is. A scheme
    name that ends in ``.onnx`` is read as ``onnx:path=<name>``.

    Attributes:
        path: the ``.onnx`` file; its one input takes the FP model's inputs.
    """

    kind: ClassVar[str] = "onnx"
    path: str = ""
    threads: int = 0
    optimization: str = "all"


Scheme = (
    Int8Static
    | Int8Dynamic
    | Float16
    | BFloat16
    | Int4Weight
    | OrtInt8
    | OrtInt8Dynamic
    | OrtFloat32
    | OnnxFile
)
#: The schemes ONNX Runtime runs (``pip install mitigate[onnx]``).
ORT_SCHEMES = (OrtInt8, OrtInt8Dynamic, OrtFloat32, OnnxFile)

# "onnx" is not a registry name: it is a file, named ``model.onnx`` or ``onnx:path=...``.
SCHEMES: dict[str, type] = {
    cls.kind: cls
    for cls in (Int8Static, Int8Dynamic, Float16, BFloat16, Int4Weight, *ORT_SCHEMES[:-1])
}


def scheme_names() -> list[str]:
    """The registry names, in a fixed order."""
    return list(SCHEMES)


def parse_scheme(text: str) -> Scheme:
    """Build a scheme from ``name[:key=value]...``.

    Example:
        >>> parse_scheme("int8:engine=qnnpack:per_channel=false")
        Int8Static(engine='qnnpack', reduce_range=None, per_channel=False, \
observer='histogram', float_layers=())
    """
    if text.strip().lower().endswith(".onnx") and not text.strip().startswith("onnx:"):
        return validate_scheme(OnnxFile(path=text.strip()))
    name, *overrides = text.strip().split(":")
    if name == "onnx":  # a path may hold ':' itself
        key, _, path = text.strip()[len("onnx:") :].partition("=")
        if key.strip() != "path":
            raise MitigateError("scheme 'onnx' needs a file: onnx:path=model.onnx (or model.onnx)")
        return validate_scheme(OnnxFile(path=path.strip()))
    if name not in SCHEMES:
        raise unknown_choice("quantization scheme", name, scheme_names())
    cls = SCHEMES[name]
    options = {f.name: f for f in fields(cls)}
    aliases: dict[str, str] = getattr(cls, "aliases", {})
    values: dict[str, object] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        key = aliases.get(key, key)
        if not sep or key not in options:
            shown = {v: k for k, v in aliases.items()}
            raise MitigateError(
                f"bad option {item!r} for scheme {name!r}; valid options: "
                + (", ".join(f"{shown.get(k, k)}=..." for k in options) or "none")
            )
        values[key] = _parse_value(name, key, raw.strip())
    return validate_scheme(cls(**values))


def validate_scheme(scheme: Scheme) -> Scheme:
    """Check a scheme's option values; return it unchanged."""
    if isinstance(scheme, (Int8Static, Int8Dynamic)) and scheme.engine not in ENGINES:
        raise unknown_choice(f"{scheme.kind} engine", scheme.engine, ENGINES)
    if isinstance(scheme, Int8Static) and scheme.observer not in OBSERVERS:
        raise unknown_choice("int8 observer", scheme.observer, OBSERVERS)
    if isinstance(scheme, Int4Weight) and scheme.group_size < 0:
        raise MitigateError(f"int4-weight group_size must be >= 0, got {scheme.group_size}")
    if isinstance(scheme, (OrtInt8, OrtInt8Dynamic)) and scheme.reduce_range is None:
        raise MitigateError(f"option reduce_range of scheme {scheme.kind!r} takes true or false")
    if isinstance(scheme, OrtInt8):
        if scheme.calibration not in ORT_CALIBRATIONS:
            raise unknown_choice("ort-int8 calibration", scheme.calibration, ORT_CALIBRATIONS)
        if scheme.activations not in ORT_ACTIVATIONS:
            raise unknown_choice("ort-int8 activations", scheme.activations, ORT_ACTIVATIONS)
    if isinstance(scheme, ORT_SCHEMES):
        if scheme.optimization not in ORT_OPTIMIZATIONS:
            raise unknown_choice(
                f"{scheme.kind} optimization", scheme.optimization, ORT_OPTIMIZATIONS
            )
        if scheme.threads < 0:
            raise MitigateError(f"{scheme.kind} threads must be >= 0, got {scheme.threads}")
    if isinstance(scheme, OnnxFile) and not scheme.path:
        raise MitigateError("scheme 'onnx' needs a file: onnx:path=model.onnx (or model.onnx)")
    return scheme


def scheme_label(scheme: Scheme) -> str:
    """The canonical name: the registry name plus every option that differs from its default.

    Example:
        >>> scheme_label(Int8Static(engine="qnnpack"))
        'int8:engine=qnnpack'
    """
    parts = [scheme.kind]
    names = {v: k for k, v in getattr(scheme, "aliases", {}).items()}
    for f in fields(scheme):
        value = getattr(scheme, f.name)
        if value != f.default:
            shown = "+".join(value) if isinstance(value, tuple) else value
            shown = str(shown).lower() if isinstance(value, bool) else shown
            parts.append(f"{names.get(f.name, f.name)}={shown}")
    return ":".join(parts)


def _parse_value(scheme: str, key: str, raw: str) -> object:
    if key in ("reduce_range", "per_channel"):
        lowered = raw.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        if key == "reduce_range" and lowered in ("default", "none"):
            return None
        raise MitigateError(f"option {key} of scheme {scheme!r} takes true or false, got {raw!r}")
    if key == "threads":
        if not raw.isdigit():
            raise MitigateError(
                f"option threads of scheme {scheme!r} takes an integer >= 0 (0: as many as torch "
                f"uses), got {raw!r}"
            )
        return int(raw)
    if key == "group_size":
        if not raw.isdigit():
            raise MitigateError(
                f"option group_size of scheme {scheme!r} takes an integer >= 0 (0: one scale "
                f"per output channel; e.g. 32), got {raw!r}"
            )
        return int(raw)
    if key == "float_layers":
        return tuple(name for name in raw.split("+") if name)
    return raw
