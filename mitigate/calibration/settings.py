"""One calibration *setting*: what the calibration set is and how static int8 observes it.

A setting has seven factors: the calibration data (``source``, ``size``, ``sampling``,
``augment``) and the calibration method (``observer``, ``granularity``, ``engine``). Its
preset name is a dash-separated list of tokens, one per factor, e.g.
``clean-100-random-aug0-histogram-perchannel-x86``; a shorter name such as
``clean-256-minmax-qnnpack`` names only the factors it changes and takes the rest from a
baseline. Tokens are unique across factors, so their order does not matter.

No torch import here: the CLI's ``--help`` and option checks use this module.

Example:
    >>> s = parse_setting("shifted-64-minmax-qnnpack")
    >>> s.name
    'shifted-64-random-aug0-minmax-perchannel-qnnpack'
    >>> parse_setting("aug1", Setting(size=16)).name
    'clean-16-random-aug1-histogram-perchannel-x86'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mitigate.errors import MitigateError, unknown_choice
from mitigate.quantization.schemes import OBSERVERS, Int8Static

__all__ = [
    "ENGINES",
    "FACTORS",
    "GRANULARITIES",
    "OBSERVERS",
    "SAMPLINGS",
    "SOURCES",
    "Setting",
    "check_setting",
    "parse_setting",
    "setting_of_scheme",
]

# clean / shifted / mixed: the calibration candidates (calibration split, then training images)
# as they are, every one shifted, every other one;
# selected: the pool inputs (clean + seen shifts) the selector ranks highest.
SOURCES = ("clean", "shifted", "mixed", "selected")
# selector-ranked: the candidates the selector ranks highest (lowest FP margin first).
SAMPLINGS = ("random", "class-balanced", "selector-ranked")
GRANULARITIES = ("per-channel", "per-tensor")
# x86 = x86 with its default reduced (7-bit) activation range; x86-full = 8-bit activations.
ENGINES = ("x86", "x86-full", "qnnpack")
FACTORS = ("source", "size", "sampling", "augment", "observer", "granularity", "engine")

# Name tokens without dashes, so a name splits on "-" unambiguously.
_SHORT = {
    "class-balanced": "balanced",
    "selector-ranked": "ranked",
    "moving-average": "movingavg",
    "per-channel": "perchannel",
    "per-tensor": "pertensor",
    "x86-full": "x86full",
}
_LONG = {v: k for k, v in _SHORT.items()}
_CHOICES = {
    "source": SOURCES,
    "sampling": SAMPLINGS,
    "observer": OBSERVERS,
    "granularity": GRANULARITIES,
    "engine": ENGINES,
}
_TOKENS = {
    _SHORT.get(value, value): (factor, value)
    for factor, values in _CHOICES.items()
    for value in values
}


@dataclass(frozen=True)
class Setting:
    """A calibration setting (see the module docstring).

    Attributes:
        source: ``clean``, ``shifted``, ``mixed`` or ``selected`` (margin-selected pool inputs).
        size: calibration inputs before augmentation.
        sampling: how ``size`` inputs are drawn from the source's candidates; ``selected``
            is always ``selector-ranked``.
        augment: shifted copies added per calibration input (``0`` = none), so the set holds
            ``size * (1 + augment)`` inputs.
        observer: activation observer (``mitigate.quantization.OBSERVERS``).
        granularity: ``per-channel`` or ``per-tensor`` weight scales.
        engine: ``x86`` (reduced 7-bit activations, its default), ``x86-full`` or ``qnnpack``.
    """

    source: str = "clean"
    size: int = 100
    sampling: str = "random"
    augment: int = 0
    observer: str = "histogram"
    granularity: str = "per-channel"
    engine: str = "x86"

    @property
    def name(self) -> str:
        """The canonical preset name, every factor spelled out."""
        short = [_SHORT.get(getattr(self, f), getattr(self, f)) for f in _CHOICES]
        source, sampling, observer, granularity, engine = short
        return (
            f"{source}-{self.size}-{sampling}-aug{self.augment}-{observer}-{granularity}-{engine}"
        )

    @property
    def needs_model(self) -> bool:
        """Whether building the calibration set needs the FP model (to rank inputs)."""
        return self.source == "selected" or self.sampling == "selector-ranked"

    @property
    def inputs(self) -> int:
        """Calibration inputs after augmentation."""
        return self.size * (1 + self.augment)

    def scheme(self, base: Int8Static | None = None) -> Int8Static:
        """``base`` (default plain ``int8``) with this setting's observer, weight granularity
        and engine; its ``float_layers`` are kept."""
        base = base or Int8Static()
        return replace(
            base,
            engine="qnnpack" if self.engine == "qnnpack" else "x86",
            reduce_range=False if self.engine == "x86-full" else None,
            per_channel=self.granularity == "per-channel",
            observer=self.observer,
        )


def check_setting(setting: Setting) -> Setting:
    """Validate every factor; return the setting with ``selected`` sampling normalized."""
    for factor, choices in _CHOICES.items():
        value = getattr(setting, factor)
        if value not in choices:
            raise unknown_choice(f"calibration {factor}", value, choices)
    if setting.size < 1:
        raise MitigateError(f"calibration size must be >= 1, got {setting.size}")
    if setting.augment < 0:
        raise MitigateError(f"calibration augment must be >= 0 copies, got {setting.augment}")
    if setting.source == "selected" and setting.sampling != "selector-ranked":
        setting = replace(setting, sampling="selector-ranked")
    return setting


def parse_setting(text: str, base: Setting | None = None) -> Setting:
    """A setting from a (possibly partial) preset name; missing factors come from ``base``.

    Long value names (``class-balanced``, ``moving-average``, ``x86-full``) are accepted too.
    """
    base = base or Setting()
    name = text.strip().lower()
    for long, short in _SHORT.items():
        name = name.replace(long, short)
    values: dict[str, object] = {}
    for token in name.split("-"):
        if token.isdigit():
            factor, value = "size", int(token)
        elif re.fullmatch(r"aug\d+", token):
            factor, value = "augment", int(token[3:])
        elif token in _TOKENS:
            factor, value = _TOKENS[token]
        else:
            raise MitigateError(
                f"unknown token {token!r} in calibration preset {text!r}; valid tokens: "
                + ", ".join([*_TOKENS, "<size>", "aug<copies>"])
                + " (or 'best', or a best.json path)"
            )
        if factor in values:
            raise MitigateError(f"calibration preset {text!r} sets the {factor} twice")
        values[factor] = value
    return check_setting(replace(base, **values))  # type: ignore[arg-type]


def setting_of_scheme(
    scheme: Int8Static, *, source: str, size: int, sampling: str, augment: int = 0
) -> Setting:
    """The setting a static int8 scheme plus ``[quantization]`` calibration options describe."""
    reduce = scheme.effective_reduce_range
    if scheme.engine == "qnnpack" and reduce:
        raise MitigateError(
            "the calibration sweep has no qnnpack with reduced range; valid engines: "
            + ", ".join(ENGINES)
        )
    engine = "qnnpack" if scheme.engine == "qnnpack" else ("x86" if reduce else "x86-full")
    return check_setting(
        Setting(
            source=source,
            size=size,
            sampling=sampling,
            augment=augment,
            observer=scheme.observer,
            granularity="per-channel" if scheme.per_channel else "per-tensor",
            engine=engine,
        )
    )
