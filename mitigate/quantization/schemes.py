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
    "Scheme",
    "parse_scheme",
    "scheme_label",
    "scheme_names",
    "validate_scheme",
]

ENGINES = ("x86", "qnnpack")
# Activation observers torch's PTQ offers; "histogram" is torch's default for both engines.
OBSERVERS = ("histogram", "minmax", "moving-average")


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


Scheme = Int8Static | Int8Dynamic | Float16 | BFloat16 | Int4Weight

SCHEMES: dict[str, type] = {
    cls.kind: cls for cls in (Int8Static, Int8Dynamic, Float16, BFloat16, Int4Weight)
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
    name, *overrides = text.strip().split(":")
    if name not in SCHEMES:
        raise unknown_choice("quantization scheme", name, scheme_names())
    cls = SCHEMES[name]
    options = {f.name: f for f in fields(cls)}
    values: dict[str, object] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in options:
            raise MitigateError(
                f"bad option {item!r} for scheme {name!r}; valid options: "
                + (", ".join(f"{k}=..." for k in options) or "none")
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
    return scheme


def scheme_label(scheme: Scheme) -> str:
    """The canonical name: the registry name plus every option that differs from its default.

    Example:
        >>> scheme_label(Int8Static(engine="qnnpack"))
        'int8:engine=qnnpack'
    """
    parts = [scheme.kind]
    for f in fields(scheme):
        value = getattr(scheme, f.name)
        if value != f.default:
            shown = "+".join(value) if isinstance(value, tuple) else value
            parts.append(f"{f.name}={str(shown).lower() if isinstance(value, bool) else shown}")
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
