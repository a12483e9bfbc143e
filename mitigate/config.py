"""Run configuration: frozen dataclasses, TOML loading, and command-line overrides.

The dataclass defaults *are* the embedded default (``configs/default.toml`` mirrors them and a
test keeps the two equal), so ``mitigate evaluate`` with no flags needs no file. A TOML file
only names what it changes; an unknown section or key is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from mitigate.config_checks import check_config
from mitigate.errors import MitigateError
from mitigate.trainers.settings import TrainConfig

__all__ = [
    "CalibrationConfig",
    "CompareConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "QuantConfig",
    "RetrainConfig",
    "SelectionConfig",
    "ShiftConfig",
    "TrainConfig",
    "config_digest",
    "config_to_dict",
    "load_config",
    "override",
]

CALIBRATION_SOURCES = ("clean", "shifted", "mixed")
CALIBRATION_SAMPLING = ("random", "class-balanced")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where its files are, and how it is split (counts of inputs); for text,
    how texts become token ids."""

    # A registry name ("digits", "mnist", ...; files in data_dir), "kind:PATH" ("npz:PATH",
    # "imagefolder:PATH", "mnist:PATH", ...), or "pkg.module:function" returning a
    # mitigate.Data (or a dict of its splits). The split sizes below cut a whole dataset;
    # a function's splits are used as they are.
    dataset: str = "digits"
    data_dir: str = ""
    train: int = 700
    val: int = 147
    calibration: int = 100
    pool: int = 400
    test: int = 450
    # Other datasets (same shape and classes) measured as natural shifts: "name" or
    # "kind:PATH" ("npz:PATH", "text-csv:PATH", "imdb:PATH").
    natural: tuple[str, ...] = ()
    # At most this many inputs of each natural-shift set (a seeded random sample); 0 = all.
    natural_size: int = 0
    # Text datasets only: tokens per input (padded / truncated) and the vocabulary built from
    # the training split (at most vocab_size entries, tokens seen at least min_freq times).
    max_len: int = 32
    vocab_size: int = 20000
    min_freq: int = 2
    # Image folders: resize every image to [H, W] (empty: keep the stored size) and convert to
    # 1 (grey) or 3 (RGB) channels (0: keep the stored mode).
    image_size: tuple[int, ...] = ()
    channels: int = 0
    # The normalization the model expects, per channel (or one value), applied to every batch
    # after any shift; empty: the model takes pixels in [0, 1].
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """The FP model: a zoo architecture, or your own (``factory``), trained on the configured
    data unless ``weights`` are given."""

    arch: str = "lenet5"
    # "pkg.module:callable" returning an nn.Module; replaces arch. It gets `kwargs` and, if its
    # signature names them, the data's in_channels, image_size, input_shape and num_classes.
    factory: str = ""
    # A state dict for the model (safetensors, or a torch file read with weights_only=True):
    # the model is used as it is, not trained.
    weights: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """What reports call the model: the factory if there is one, else the architecture."""
        return self.factory or self.arch


@dataclass(frozen=True)
class ShiftConfig:
    """Synthetic shifts applied to test (and pool) inputs; ``families = ["all"]`` means every one
    that fits the data's channel count. ``held_out`` families never enter the pool."""

    families: tuple[str, ...] = ("all",)
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    held_out: tuple[str, ...] = (
        "fog",
        "glass-blur",
        "rotate",
        "zigzag",
        "speckle-noise",
        "elastic",
    )


@dataclass(frozen=True)
class QuantConfig:
    """Schemes to measure and the calibration set static int8 uses."""

    schemes: tuple[str, ...] = ("int8", "int8-dynamic", "fp16", "bf16", "int4-weight")
    calibration_size: int = 100
    calibration_source: str = "clean"
    calibration_sampling: str = "random"


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 512


@dataclass(frozen=True)
class SelectionConfig:
    """How inputs are picked from the unlabelled pool (clean + the shifts not held out).

    ``budget`` is a count (``100``) or a fraction of the pool (``0.01``).
    """

    selector: str = "margin"
    budget: int | float = 100
    class_balanced: bool = False


@dataclass(frozen=True)
class RetrainConfig:
    """One mitigation run (``mitigate retrain``).

    ``strategy`` is a name from ``mitigate.mitigation.STRATEGIES`` or several joined with
    ``+`` (applied in order, e.g. ``settings+fallback``). The training strategies fine-tune
    for ``epochs`` at ``lr`` with the other ``[train]`` options; ``control`` also runs the
    same training with no selected inputs, the noise floor a training strategy must beat.

    Cost is a budget, not a footnote: ``max_float_params`` and ``max_float_macs`` (shares of
    the model's parameters and of its Conv/Linear MACs, 0 = no limit) and ``max_float_layers``
    (0 = no limit) bound what ``fallback`` may keep in float. The label-free steps
    (``settings``, ``fallback``, ``adaround``, ``bias-correction``) score candidates on, or
    fit to, ``probe_size`` selected pool inputs rather than the (labelled) budget: on a few
    hundred near-tie inputs their choices are noise. ``qat-anchor`` trains only the quantizers
    (f0 frozen) for ``anchor_epochs`` at ``anchor_lr``. ``guard`` picks its threshold on the
    whole pool: the one that reroutes ``guard_catch`` of the pool's disagreements, or, when
    ``guard_rate`` is above 0, at most ``guard_rate`` of its inputs.
    """

    strategy: str = "settings+fallback+adaround+ranges"
    scheme: str = "int8"
    epochs: int = 5
    lr: float = 5e-4
    control: bool = True
    max_float_params: float = 0.1
    max_float_macs: float = 0.1
    max_float_layers: int = 0
    probe_size: int = 2000
    anchor_epochs: int = 15
    anchor_lr: float = 1e-2
    guard_catch: float = 0.95
    guard_rate: float = 0.0


@dataclass(frozen=True)
class CompareConfig:
    """The grid ``mitigate compare`` runs: every selector x strategy x budget over ``seeds``
    seeds (``seed``, ``seed + 1``, ...)."""

    selectors: tuple[str, ...] = ("margin", "random", "oracle")
    strategies: tuple[str, ...] = (
        "none",
        "recalibrate",
        "finetune",
        "qat",
        "distill",
        "qat-anchor",
        "settings",
        "fallback",
        "adaround",
        "bias-correction",
        "ranges",
        "settings+fallback",
        "settings+fallback+adaround+ranges",
        "guard",
        "settings+fallback+guard",
    )
    budgets: tuple[int | float, ...] = (50, 200)
    seeds: int = 3


@dataclass(frozen=True)
class CalibrationConfig:
    """PTQ calibration: the sweep ``mitigate calibrate`` runs, and the calibration
    ``evaluate``/``retrain`` use.

    ``preset``: ``""`` = the ``[quantization] calibration_*`` options; ``"best"`` = what
    ``mitigate calibrate`` recommended for this data, model and training; a ``best.json``
    path; or a (partial) preset name such as ``clean-256-minmax-qnnpack``.

    The sweep varies, for the static int8 ``scheme`` over ``seeds`` seeds, the calibration
    ``sources`` (clean, shifted, mixed, selected = the pool inputs ``selector`` ranks
    highest), ``sizes``, ``samplings``, ``augmentations`` (shifted copies per input, from
    ``families``: ``["all"]`` = every family not held out), ``observers``,
    ``granularities`` and ``engines``; ``grid = "oat"`` one factor at a time around the
    default calibration (``"full"``: every combination), plus the ``extra`` preset names and,
    with ``combine``, every factor's best level together.
    """

    preset: str = ""
    scheme: str = "int8"
    seeds: int = 3
    selector: str = "margin"
    families: tuple[str, ...] = ("all",)
    grid: str = "oat"
    sources: tuple[str, ...] = ("clean", "shifted", "mixed", "selected")
    sizes: tuple[int, ...] = (16, 64, 256, 1024)
    samplings: tuple[str, ...] = ("random", "class-balanced", "selector-ranked")
    augmentations: tuple[int, ...] = (0, 1, 3)
    observers: tuple[str, ...] = ("histogram", "minmax", "moving-average")
    granularities: tuple[str, ...] = ("per-channel", "per-tensor")
    engines: tuple[str, ...] = ("x86", "x86-full", "qnnpack")
    extra: tuple[str, ...] = (
        "16-balanced",
        "16-ranked",
        "selected-1024",
        "shifted-qnnpack",
        "minmax-qnnpack",
    )
    combine: bool = True


@dataclass(frozen=True)
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    shifts: ShiftConfig = field(default_factory=ShiftConfig)
    quantization: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


def load_config(path: str | Path | None = None) -> Config:
    """The default config, with the values of the TOML file at ``path`` (if any) applied."""
    if path is None:
        return Config()
    path = Path(path)
    if path.is_dir():
        raise MitigateError(f"config file {path.resolve()} is a directory, not a TOML file")
    if not path.is_file():
        raise MitigateError(f"config file not found: {path.resolve()}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise MitigateError(f"config file {path} is not valid TOML: {err}") from None
    return check_config(_merge(Config(), raw, where=str(path)), str(path))


def override(config: Config, **dotted: Any) -> Config:
    """A copy of ``config`` with ``section__key=value`` (or top-level ``key=value``) replaced;
    ``None`` values are skipped so CLI options left unset change nothing.

    Example:
        >>> override(Config(), seed=3, model__arch="lenet1").model.arch
        'lenet1'
    """
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        if value is None:
            continue
        section, _, name = key.partition("__")
        if name:
            nested.setdefault(section, {})[name] = value
        else:
            nested[section] = value
    return check_config(_merge(config, nested, where="command line"), "command line")


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain JSON-able dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_digest(*parts: Any) -> str:
    """A short stable hash of config sections, for cache keys (never Python's ``hash``)."""
    blob = json.dumps([config_to_dict(p) if is_dataclass(p) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _merge(obj: Any, values: dict[str, Any], where: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(type(obj))
    valid = {f.name: f for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in valid:
            raise MitigateError(
                f"unknown config key {prefix + key!r} in {where}; valid keys: "
                + ", ".join(prefix + k for k in valid)
            )
        current = getattr(obj, name)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise MitigateError(f"config key {prefix + key!r} in {where} must be a table")
            changes[name] = _merge(current, value, where, prefix=f"{prefix}{name}.")
        else:
            changes[name] = _coerce(value, hints[name], f"{prefix}{key}", where)
    return replace(obj, **changes)


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise MitigateError(f"config key {key!r} in {where} must be a list")
        return tuple(
            _coerce(v.strip() if isinstance(v, str) else v, inner, key, where) for v in items
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is dict:  # [model] kwargs: a table of plain values, passed as given
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif isinstance(hint, types.UnionType) or origin is typing.Union:
        # int | float (a budget): keep ints as counts, parse "100" / "0.05" from the CLI.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    return float(value)
                except ValueError:
                    pass
    name = getattr(hint, "__name__", str(hint))
    raise MitigateError(f"config key {key!r} in {where} must be {name}, got {value!r}")
