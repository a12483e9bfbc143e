"""The one resumable-grid engine behind ``compare`` and ``calibrate``.

A grid is a list of *cells* (one configuration on one seed). Each finished cell is saved at
once as ``<folder>/<key>.json``; a rerun of the same grid loads finished cells instead of
recomputing them, and a grid with another configuration uses another folder (its name is a
digest of everything a cell depends on besides its own coordinates). Cells run seed by seed,
so the work a seed's cells share (data, base model, scans) is built once, and only when one
of its cells still has to run. A cell file that cannot be read is set aside (renamed to
``<key>.json.corrupt``) and its cell runs again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mitigate.atomic import write_json

__all__ = ["CellStore", "GridRun", "run_cells"]

Cell = TypeVar("Cell", bound=Hashable)
Runner = TypeVar("Runner")
Record = dict[str, Any]


@dataclass
class CellStore:
    """The finished cells of one grid, one JSON file each, under ``folder``.

    Attributes:
        folder: ``<out>/cells/<digest>``.
        set_aside: cell files found unreadable and renamed, in the order found.
    """

    folder: Path
    set_aside: list[Path] = field(default_factory=list)

    def path(self, key: str, suffix: str = ".json") -> Path:
        return self.folder / f"{key}{suffix}"

    def load(self, key: str) -> Record | None:
        """The saved cell ``key``, or ``None`` when it has not finished (or was unreadable)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            return record
        except (OSError, ValueError):
            aside = path.with_name(path.name + ".corrupt")
            path.replace(aside)
            self.set_aside.append(aside)
            return None

    def aside_report(self) -> Record:
        """``{"set_aside": [paths]}`` for a report: the unreadable cell files this run found,
        renamed to ``*.corrupt`` and computed again."""
        return {"set_aside": [str(p) for p in self.set_aside]}

    def save(self, key: str, record: Record) -> None:
        """Write cell ``key`` atomically; its presence marks the cell done."""
        write_json(self.path(key), record)


@dataclass(frozen=True)
class GridRun:
    """What :func:`run_cells` did: every cell's record (seed by seed; within a seed the reused
    cells first, in plan order, then the computed ones) and how many were reused."""

    records: list[Record]
    reused: int


def run_cells(
    cells: Sequence[Cell],
    store: CellStore,
    *,
    key: Callable[[Cell], str],
    seed: Callable[[Cell], int],
    open_seed: Callable[[int], Runner],
    run: Callable[[Runner, Cell], Record],
    on_cell: Callable[[Cell, bool], None] | None = None,
) -> GridRun:
    """Run every unfinished cell of ``cells`` and load the finished ones.

    Args:
        cells: the grid in plan order.
        store: where finished cells live.
        key: a cell's file name (without ``.json``), unique in the grid.
        seed: a cell's seed.
        open_seed: builds what a seed's cells share; called once per seed that still has a
            cell to run, never for a seed whose cells all finished.
        run: computes one cell's record with its seed's runner.
        on_cell: called after each cell with ``(cell, was_reused)``, e.g. a progress bar.
    """
    records: list[Record] = []
    reused = 0
    for seed_value, group in _by_seed(cells, seed):
        todo = []
        for cell in group:
            record = store.load(key(cell))
            if record is None:
                todo.append(cell)
                continue
            records.append(record)
            reused += 1
            if on_cell is not None:
                on_cell(cell, True)
        if not todo:
            continue
        runner = open_seed(seed_value)
        for cell in todo:
            record = run(runner, cell)
            store.save(key(cell), record)
            records.append(record)
            if on_cell is not None:
                on_cell(cell, False)
    return GridRun(records, reused)


def _by_seed(
    cells: Iterable[Cell], seed: Callable[[Cell], int]
) -> Iterator[tuple[int, list[Cell]]]:
    """Cells grouped by seed, seeds in first-seen order, plan order kept within a seed."""
    groups: dict[int, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(seed(cell), []).append(cell)
    yield from groups.items()
