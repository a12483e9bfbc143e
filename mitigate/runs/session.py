"""The session every run builds once: the data and its groups, the base model, the calibration
set, the quantized copies and the pool — validated where they enter, then trusted.

A run (``evaluate``, ``retrain``, ...) opens one :class:`Session` per seed with
:meth:`Session.open` and asks it for what it needs; nothing below a session re-reads the
config to rebuild the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mitigate.config import Config
from mitigate.data.dataset import Data
from mitigate.data.evalset import Batch, Group, iter_batches
from mitigate.errors import MitigateError
from mitigate.runs.base_model import ModelInfo, base_model, check_schemes
from mitigate.runs.data import load_data, measurement_groups, pool_groups

if TYPE_CHECKING:
    from mitigate.quantization import QuantizedModel
    from mitigate.scanning import Predictions
    from mitigate.selectors import ScoreSpec, Selected

__all__ = ["Session"]

ScanCallback = Callable[[int], None]


class Session:
    """Everything the runs of one seed share.

    Attributes:
        config: the run's configuration, with its calibration preset applied (the static int8
            schemes take the preset's observer, granularity and engine).
        data: the seeded splits, natural shifts and shift families.
        model: the base FP model f0, in eval mode.
        model_info: where f0 came from (``source``: checkpoint, cache or trained; ``path``).
    """

    def __init__(self, config: Config, data: Data, model: nn.Module, model_info: ModelInfo):
        self.config, self.data, self.model, self.model_info = config, data, model, model_info
        self._kept_test: list[Batch] | None = None

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        checkpoint: str | Path | None = None,
        schemes: Sequence[str] = (),
        check: Callable[[nn.Module, Data], None] | None = None,
        presets: bool = True,
        progress: bool = False,
    ) -> Session:
        """Load the data, check ``schemes`` fit the architecture and run ``check`` on an
        untrained model of it (both before any training), and get the base model from
        ``checkpoint``, the cache, or training.

        ``presets=False`` leaves ``[calibration] preset`` unapplied (the calibration sweep
        builds its own sets)."""
        from mitigate.quantization import parse_scheme
        from mitigate.runs.calibration import apply_preset

        for name in schemes:  # a bad name fails before any data is loaded
            parse_scheme(name)
        if presets:
            config = apply_preset(config)
        data = load_data(config)
        check_schemes(config, data, schemes, check)
        model, info = base_model(config, data, checkpoint=checkpoint, progress=progress)
        return cls(config, data, model, info)

    @property
    def seed(self) -> int:
        return self.config.seed

    @cached_property
    def groups(self) -> list[Group]:
        """Test groups: clean, every family x severity (held-out ones marked), naturals."""
        return measurement_groups(self.config, self.data)

    @cached_property
    def pool_groups(self) -> list[Group]:
        """Pool groups: clean plus every family not held out, at every severity."""
        return pool_groups(self.config, self.data)

    @property
    def pool_size(self) -> int:
        """Inputs a selector ranks: every pool input under every pool group."""
        from mitigate.selectors import pool_size

        return pool_size(self.data.splits.pool, self.pool_groups)

    @cached_property
    def calibration(self) -> Tensor:
        """The static-int8 calibration inputs (``[quantization] calibration_*``, or the preset),
        ranked with this session's model where the preset ranks inputs."""
        from mitigate.runs.calibration import calibration_inputs

        return calibration_inputs(self.config, self.data, model=self.model)

    def quantize(self, schemes: Sequence[str]) -> dict[str, QuantizedModel]:
        """Label -> quantized copy of the base model for every scheme name."""
        from mitigate.quantization import parse_scheme, quantize, scheme_label

        parsed = [parse_scheme(s) for s in schemes]  # validate every name before any work
        variants: dict[str, QuantizedModel] = {}
        for scheme in parsed:
            label = scheme_label(scheme)
            if label in variants:
                raise MitigateError(f"scheme {label!r} is listed twice")
            variants[label] = quantize(self.model, scheme, self.calibration)
        return variants

    def test_batches(self) -> Iterator[Batch]:
        """The test split under every measurement group, one batch at a time (made as they
        are needed, or the batches :meth:`keep_test_batches` kept)."""
        if self._kept_test is not None:
            return iter(self._kept_test)
        return iter_batches(
            self.data.splits.test,
            self.groups,
            batch_size=self.config.eval.batch_size,
            seed=self.seed,
            naturals=self.data.naturals,
        )

    def keep_test_batches(self, max_bytes: int) -> bool:
        """Make the shifted test inputs once and keep them for every later scan, when they
        take at most ``max_bytes``; a run that scans the test groups many times (``compare``:
        once per distinct q1) then shifts each input once instead of once per scan. The kept
        batches are the ones :meth:`test_batches` would make, so every scan counts the same.

        Returns:
            Whether the batches are kept (``False``: too large, each scan makes them anew).
        """
        if self._kept_test is not None:
            return True
        naturals = self.data.naturals
        count = sum(
            len(naturals[g.source]) if g.kind == "natural" else len(self.data.splits.test)
            for g in self.groups
        )
        one = next(self.test_batches(), None)
        if one is None or count * one.x[:1].nbytes > max_bytes:
            return False
        self._kept_test = list(self.test_batches())
        return True

    def pool_batches(self) -> Iterator[Batch]:
        """The pool under every pool group, one batch at a time."""
        return iter_batches(
            self.data.splits.pool,
            self.pool_groups,
            batch_size=self.config.eval.batch_size,
            seed=self.seed,
            split="pool",
        )

    def timing_batch(self, n: int = 64) -> Tensor:
        """``n`` test inputs spread over every measurement group (input ``i`` from group
        ``i mod G``): what a deployed model meets, for timing models whose cost depends on the
        input (a guard reroutes the shifted, low-margin ones)."""
        from mitigate.data.evalset import split_seed

        test, rows = self.data.splits.test, []
        for i in range(n):
            group = self.groups[i % len(self.groups)]
            source = self.data.naturals[group.source] if group.kind == "natural" else test
            index = torch.tensor([(i // len(self.groups)) % len(source)])
            shift_seed = split_seed(self.seed, "test")
            rows.append(source.batch(index, group.shift, group.severity, seed=shift_seed))
        return torch.cat(rows)

    def scan_test(
        self,
        reference: nn.Module,
        variants: Mapping[str, nn.Module],
        *,
        scores: Sequence[str] = (),
        on_batch: ScanCallback | None = None,
    ) -> Predictions:
        """One scan of ``reference`` and ``variants`` over the test groups."""
        from mitigate.scanning import scan

        return scan(
            reference,
            variants,
            self.test_batches(),
            groups=self.groups,
            scores=scores,
            classes=self.data.classes,
            seed=self.seed,
            on_batch=on_batch,
        )

    def select(
        self,
        score: ScoreSpec,
        k: int,
        *,
        q_model: nn.Module | None = None,
        class_balanced: bool = False,
        on_batch: ScanCallback | None = None,
    ) -> Selected:
        """The ``k`` pool inputs ``score`` ranks highest, in pick order. The selector was
        looked up (:func:`~mitigate.selectors.check_selector`) and the budget resolved against
        :attr:`pool_size` where they entered the run."""
        from mitigate.selectors import top_of_pool

        return top_of_pool(
            self.model,
            self.data.splits.pool,
            self.pool_groups,
            score,
            k,
            seed=self.seed,
            batch_size=self.config.eval.batch_size,
            q_model=q_model,
            class_balanced=class_balanced,
            on_batch=on_batch,
        )
