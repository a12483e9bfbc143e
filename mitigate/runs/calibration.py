"""Every static-int8 calibration set a run uses, built in one place, and the named presets.

A calibration set is described by a :class:`~mitigate.calibration.settings.Setting`: the
``[quantization] calibration_*`` options (the default), a ``[calibration] preset``, or a row of
the ``mitigate calibrate`` sweep. Its inputs come from

- the *calibration candidates*: the calibration split, then the training images (their labels
  are never used), drawn at random or class-balanced, as they are (``clean``), all shifted
  (``shifted``) or every other one shifted (``mixed``); ``selector-ranked`` sampling takes the
  candidates the selector ranks highest instead;
- or the pool (``selected``): the pool inputs the selector ranks highest;

plus ``augment`` shifted copies of each. Held-out shift families never enter a calibration set.

A preset is ``""`` (the ``[quantization]`` options), ``best`` (what ``mitigate calibrate``
recommended for this data, model, training and shifts, saved under the model cache), a
``best.json`` path, or a (partial) preset name such as ``clean-256-minmax-qnnpack``.
:func:`apply_preset` resolves it once, for the CLI and Python callers alike: the calibration
data follow it and every static int8 scheme takes its observer, granularity and engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.calibration.settings import Setting, check_setting, parse_setting, setting_of_scheme
from mitigate.config import CALIBRATION_SAMPLING, CALIBRATION_SOURCES, Config, config_digest
from mitigate.data.base import LabelledData
from mitigate.data.dataset import Data
from mitigate.data.evalset import resolve_families, split_seed
from mitigate.errors import MitigateError, unknown_choice

__all__ = [
    "apply_preset",
    "available_inputs",
    "baseline_setting",
    "best_file",
    "best_record",
    "calibration_candidates",
    "calibration_families",
    "calibration_inputs",
    "calibration_set",
    "candidates_hold",
    "resolve_preset",
    "save_best",
]

# Memo of one seed and model: pool selections and ranked candidates, computed once.
Memo = dict[str, Any]


def calibration_inputs(config: Config, data: Data, *, model: nn.Module | None = None) -> Tensor:
    """The static-int8 calibration batch of a run: the preset's set, or
    ``[quantization] calibration_*`` (``float [N, C, H, W]``).

    ``model`` is the FP model a setting that ranks inputs scores them with (the run's base
    model; required by such a preset)."""
    setting = resolve_preset(config)
    if setting is None:
        q = config.quantization
        if q.calibration_source not in CALIBRATION_SOURCES:
            raise unknown_choice("calibration source", q.calibration_source, CALIBRATION_SOURCES)
        if q.calibration_sampling not in CALIBRATION_SAMPLING:
            raise unknown_choice(
                "calibration sampling", q.calibration_sampling, CALIBRATION_SAMPLING
            )
        most = calibration_candidate_count(data)
        # Splits given as they are: calibrate on what they hold, up to calibration_size.
        size = min(q.calibration_size, most) if data.fixed_splits else q.calibration_size
        if most == 0:
            raise MitigateError(
                "static int8 needs calibration inputs, and the data has no calibration or "
                "training split to draw them from"
            )
        if not 1 <= size <= most:
            raise MitigateError(
                f"calibration_size {size} must be between 1 and {most}, what the "
                f"calibration and training splits hold (data.calibration + data.train)"
            )
        setting = Setting(source=q.calibration_source, size=size, sampling=q.calibration_sampling)
    return calibration_set(config, data, setting, model=model)


def calibration_set(
    config: Config,
    data: Data,
    setting: Setting,
    *,
    model: nn.Module | None = None,
    memo: Memo | None = None,
) -> Tensor:
    """The calibration inputs of ``setting``: ``float [setting.inputs, C, H, W]``.

    Args:
        config: seed, shifts, ``eval.batch_size`` and ``[calibration]`` (selector, families).
        data: the seed's data.
        setting: what to build (only its data factors matter here).
        model: the FP model; needed when ``setting.needs_model``.
        memo: a dict kept across calls for one seed and model, so the pool is scanned and the
            candidates scored once (the pool selection is cached for the largest size asked,
            or ``memo["selected_budget"]`` if that is larger).

    Raises:
        MitigateError: a size larger than the source allows, a held-out family, or no model
            for a setting that ranks inputs.
    """
    setting = check_setting(setting)
    most = available_inputs(config, data, setting.source)
    if setting.size > most:
        raise MitigateError(
            f"calibration size {setting.size} is more than {candidates_hold(setting.source)} "
            f"({most}) for source {setting.source!r}; raise [data] sizes or ask for fewer"
        )
    if setting.needs_model and model is None:
        raise MitigateError(f"calibration setting {setting.name} ranks inputs: pass the FP model")
    memo = {} if memo is None else memo
    families = calibration_families(config, data)
    if setting.source in ("shifted", "mixed") and not families:
        raise MitigateError("shifted calibration needs at least one shift family not held out")
    if setting.source == "selected":
        x = _selected(config, data, model, setting.size, memo)  # type: ignore[arg-type]
    elif setting.sampling == "selector-ranked":
        x = _ranked(config, data, model, setting, families, memo)  # type: ignore[arg-type]
    else:
        x = _sampled(config, data, setting, families)
    if setting.augment:
        x = torch.cat([x, _augmented(x, families, setting.augment, config.seed)])
    return x


def calibration_candidates(data: Data) -> LabelledData:
    """What static-int8 calibration may draw from: the calibration split, then the training
    split's images (their labels are never used).

    PTQ calibrates on unlabelled inputs from the training distribution; putting the
    calibration split first means a size it can serve picks exactly what it would alone, and
    larger sizes (e.g. 256 or 1024 on the 100-image digits split) continue into training
    images. Text models have no static int8, so they keep the calibration split alone.
    """
    from mitigate.data.images import LabelledImages

    calibration, train = data.splits.calibration, data.splits.train
    if not (isinstance(calibration, LabelledImages) and isinstance(train, LabelledImages)):
        return calibration
    return replace(
        calibration,
        images=torch.cat([calibration.images, train.images]),
        labels=torch.cat([calibration.labels, train.labels]),
    )


def calibration_candidate_count(data: Data) -> int:
    """``len(calibration_candidates(data))`` without building them."""
    splits = data.splits
    return len(splits.calibration) + (len(splits.train) if data.modality == "image" else 0)


def calibration_families(config: Config, data: Data) -> list[str]:
    """The shift families calibration may use: ``[calibration] families`` (``["all"]`` = every
    measured family not held out). A held-out family is an error: it must stay unseen."""
    wanted = config.calibration.families
    if list(wanted) == ["all"]:
        return list(data.seen_families)
    families = resolve_families(wanted, data.splits.train)
    held = [f for f in families if f in data.held_out]
    if held:
        raise MitigateError(
            f"calibration families {', '.join(held)} are held out ([shifts] held_out) and must "
            f"stay unseen; choose from: {', '.join(data.seen_families)}"
        )
    return families


def available_inputs(config: Config, data: Data, source: str) -> int:
    """How many distinct inputs a source can give: the calibration candidates, or the whole
    pool (every pool input under every pool group)."""
    if source == "selected":
        from mitigate.runs.data import pool_groups
        from mitigate.selectors import pool_size

        return pool_size(data.splits.pool, pool_groups(config, data))
    return calibration_candidate_count(data)


def candidates_hold(source: str) -> str:
    """Where a source's inputs come from, with its verb, for messages and report notes."""
    return "the pool holds" if source == "selected" else "the calibration and training splits hold"


# ---- the three ways to draw a set -----------------------------------------------------------


def _sampled(config: Config, data: Data, setting: Setting, families: list[str]) -> Tensor:
    """``setting.size`` candidates at random (or class-balanced), shifted as the source says."""
    candidates = calibration_candidates(data)
    generator = torch.Generator().manual_seed(split_seed(config.seed, "calibration"))
    own = len(data.splits.calibration)
    order = _draw_order(config.seed, setting, candidates, own, generator)
    index = order[: setting.size].sort().values
    x = candidates.batch(index)
    if setting.source == "clean":
        return x
    shifted = torch.ones(len(index), dtype=torch.bool)
    if setting.source == "mixed":
        shifted = torch.arange(len(index)) % 2 == 1
    seed = split_seed(config.seed, "calibration")
    _shift_rows(
        x,
        shifted,
        families,
        generator,
        lambda rows, family, severity: candidates.batch(index[rows], family, severity, seed=seed),
    )
    return x


def _draw_order(
    seed: int, setting: Setting, candidates: LabelledData, own: int, generator: torch.Generator
) -> Tensor:
    """Positions in ``candidates`` in draw order: the first ``own`` (the calibration split,
    seeded as it always was), then the training images' from a generator of their own;
    class-balanced sampling alternates classes within the part a ``size`` needs."""
    order = torch.randperm(own, generator=generator)
    balanced = setting.sampling == "class-balanced"
    if setting.size <= own:
        return _round_robin_by_class(order, candidates.labels[:own]) if balanced else order
    extra = torch.Generator().manual_seed(split_seed(seed, "calibration-train"))
    order = torch.cat([order, own + torch.randperm(len(candidates) - own, generator=extra)])
    return _round_robin_by_class(order, candidates.labels) if balanced else order


def _round_robin_by_class(order: Tensor, labels: Tensor) -> Tensor:
    """Reorder ``order`` so classes alternate: the first k*C entries hold k of each class."""
    lab = labels[order]
    rank = torch.zeros_like(order)
    for c in lab.unique():
        members = (lab == c).nonzero().flatten()
        rank[members] = torch.arange(len(members))
    key = rank * (int(lab.max()) + 1) + lab
    return order[torch.argsort(key, stable=True)]


@torch.no_grad()
def _ranked(
    config: Config,
    data: Data,
    model: nn.Module,
    setting: Setting,
    families: list[str],
    memo: Memo,
) -> Tensor:
    """The calibration candidates under the source's shifts, highest selector score first."""
    from mitigate.scanning import eval_mode
    from mitigate.selectors import compute_score

    key = f"ranked/{setting.source}"
    if key not in memo:
        candidates = calibration_candidates(data)
        index = torch.arange(len(candidates))
        x = candidates.batch(index)
        if setting.source != "clean":
            rows = index if setting.source == "shifted" else index[index % 2 == 1]
            seed = split_seed(config.seed, "calibration-ranked")
            part = x[rows]
            _shift_rows(
                part,
                torch.ones(len(rows), dtype=torch.bool),
                families,
                torch.Generator().manual_seed(seed),
                lambda r, family, severity: _apply(part[r], family, severity, seed, rows[r]),
            )
            x[rows] = part
        with eval_mode(model):
            logits = torch.cat([model(b) for b in x.split(config.eval.batch_size)])
        score = compute_score(config.calibration.selector, logits, index=index, seed=config.seed)
        order = torch.sort(score, descending=True, stable=True).indices
        memo[key] = x[order]
    return memo[key][: setting.size].clone()


def _selected(config: Config, data: Data, model: nn.Module, size: int, memo: Memo) -> Tensor:
    """The pool inputs ``[calibration] selector`` ranks highest; one pool scan per memo."""
    from mitigate.runs.data import pool_groups
    from mitigate.selectors import select_from_pool

    cached = memo.get("selected")
    if cached is None or len(cached) < size:
        budget = max(size, memo.get("selected_budget", 0))
        memo["selected"] = cached = select_from_pool(
            model,
            data.splits.pool,
            pool_groups(config, data),
            selector=config.calibration.selector,
            budget=budget,
            seed=config.seed,
            batch_size=config.eval.batch_size,
        ).x
    return cached[:size].clone()  # the selection is in pick order: a prefix is a smaller budget


def _augmented(x: Tensor, families: list[str], copies: int, seed: int) -> Tensor:
    """``copies`` shifted versions of every input, copy-major: ``[copies * N, C, H, W]``."""
    if not families:
        raise MitigateError("calibration augmentation needs a shift family not held out")
    out = x.repeat(copies, 1, 1, 1)
    seed = split_seed(seed, "augment")
    _shift_rows(
        out,
        torch.ones(len(out), dtype=torch.bool),
        families,
        torch.Generator().manual_seed(seed),
        lambda rows, family, severity: _apply(out[rows], family, severity, seed, rows),
    )
    return out


def _apply(x: Tensor, family: str, severity: int, seed: int, index: Tensor) -> Tensor:
    from mitigate.data.shifts import apply_shift

    return apply_shift(x, family, severity, seed=seed, index=index)


def _shift_rows(
    x: Tensor,
    mask: Tensor,
    families: list[str],
    generator: torch.Generator,
    shifted: Callable[[Tensor, str, int], Tensor],
) -> None:
    """Shift the rows of ``x`` where ``mask`` holds, in place: each row gets a random (family,
    severity 1-5) drawn from ``generator`` (two draws per row, whether masked or not), and
    ``shifted(rows, family, severity)`` makes those rows under that shift (each row is
    written once, so ``shifted`` may read the unshifted rows of ``x`` itself)."""
    choice = torch.randint(len(families), (len(x),), generator=generator)
    severity = torch.randint(1, 6, (len(x),), generator=generator)
    for f, family in enumerate(families):
        for s in range(1, 6):
            rows = (mask & (choice == f) & (severity == s)).nonzero().flatten()
            if len(rows):
                x[rows] = shifted(rows, family, s)


# ---- presets --------------------------------------------------------------------------------


def baseline_setting(config: Config) -> Setting:
    """The calibration ``evaluate`` uses by default: ``[quantization] calibration_*`` with the
    observer, granularity and engine of ``[calibration] scheme``."""
    from mitigate.quantization import Int8Static, parse_scheme

    scheme = parse_scheme(config.calibration.scheme)
    if not isinstance(scheme, Int8Static):
        raise MitigateError(
            f"calibration.scheme must be a static torch.ao int8 scheme (int8[:options]), "
            f"got {config.calibration.scheme!r}"
            + (
                "; ORT's calibration settings are searched by "
                "`mitigate retrain --scheme ort-int8 --strategy settings`"
                if config.calibration.scheme.startswith("ort-")
                else ""
            )
        )
    q = config.quantization
    return setting_of_scheme(
        scheme,
        source=q.calibration_source,
        size=q.calibration_size,
        sampling=q.calibration_sampling,
    )


def best_file(config: Config) -> Path:
    """Where ``best`` is saved for ``config``'s data, model, training and shifts."""
    from mitigate.runs.base_model import cache_dir, slug

    key = config_digest(config.data, config.model, config.train, config.shifts)
    name = f"best-{slug(config.data.dataset)}-{slug(config.model.name)}-{key}.json"
    return cache_dir() / "calibration" / name


def save_best(config: Config, record: dict[str, Any], out: str | Path | None = None) -> list[Path]:
    """Write the recommended setting to :func:`best_file` (and ``<out>/best.json`` if given)."""
    from mitigate.atomic import write_json

    paths = [best_file(config)] + ([Path(out) / "best.json"] if out is not None else [])
    for path in paths:
        write_json(path, record)
    return paths


def resolve_preset(config: Config) -> Setting | None:
    """The setting ``[calibration] preset`` names, or ``None`` when it is empty."""
    name = config.calibration.preset.strip()
    if not name:
        return None
    if name == "best":
        path = best_file(config)
        if not path.is_file():
            raise MitigateError(
                "no saved best calibration for this data, model, training and shifts; run "
                "`mitigate calibrate` with the same config first, or name a preset such as "
                "clean-256-minmax-qnnpack or a best.json path"
            )
        return _read(path)
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise MitigateError(f"calibration preset file not found: {path.resolve()}")
        return _read(path)
    return parse_setting(name, baseline_setting(config))


def _read(path: Path) -> Setting:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return check_setting(Setting(**record["calibration"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, MitigateError):
            raise
        # a KeyError's text is the bare key: say what was missing
        why = f"no {err.args[0]!r} entry" if isinstance(err, KeyError) else str(err)
        raise MitigateError(
            f"cannot read calibration preset {path}: {why} (a best.json written by "
            "`mitigate calibrate` holds a 'calibration' setting)"
        ) from None


def apply_preset(config: Config) -> Config:
    """``config`` with its preset resolved to a canonical name and the static int8 schemes
    rewritten to the preset's observer, granularity and engine (duplicates dropped); layers
    kept in float stay as they were. Applying it twice changes nothing more.

    Example:
        >>> from mitigate.config import override
        >>> c = apply_preset(override(Config(), calibration__preset="qnnpack"))
        >>> c.calibration.preset, c.quantization.schemes[0], c.retrain.scheme
        ('clean-100-random-aug0-histogram-perchannel-qnnpack', 'int8:engine=qnnpack', \
'int8:engine=qnnpack')
    """
    setting = resolve_preset(config)
    if setting is None:
        return config
    schemes = tuple(dict.fromkeys(_rewrite(s, setting) for s in config.quantization.schemes))
    return replace(
        config,
        calibration=replace(config.calibration, preset=setting.name),
        quantization=replace(config.quantization, schemes=schemes),
        retrain=replace(config.retrain, scheme=_rewrite(config.retrain.scheme, setting)),
    )


def _rewrite(name: str, setting: Setting) -> str:
    from mitigate.quantization import Int8Static, parse_scheme, scheme_label

    scheme = parse_scheme(name)
    return scheme_label(setting.scheme(scheme)) if isinstance(scheme, Int8Static) else name


def best_record(config: Config, report: dict[str, Any]) -> dict[str, Any]:
    """What ``best.json`` holds: the recommended setting, its numbers and where it came from."""
    recommendation = report["recommendation"]
    row = next(r for r in report["rows"] if r["setting"] == recommendation["setting"])
    return {
        "preset": row["setting"],
        "calibration": row["calibration"],
        "scheme": row["scheme"],
        "recommendation": recommendation,
        "seeds": report["seeds"],
        "for": {
            "dataset": config.data.dataset,
            "arch": config.model.name,
            "digest": best_file(config).stem,
        },
        "default_calibration": report["baseline"],
    }
