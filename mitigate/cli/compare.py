"""``mitigate compare``: strategies, selectors and budgets side by side over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitigate.cli.common import (
    ConfigOption,
    ModelOption,
    OutOption,
    QuietOption,
    SeedOption,
    console,
    handle_errors,
    show_progress,
    split_list,
)

__all__ = ["compare_command"]


@handle_errors
def compare_command(
    selectors: Annotated[
        str | None, typer.Option("--selectors", help="Comma-separated, e.g. margin,random,oracle.")
    ] = None,
    strategies: Annotated[
        str | None,
        typer.Option(
            "--strategies", help="Comma-separated; combine steps with +, e.g. settings+fallback."
        ),
    ] = None,
    budgets: Annotated[
        str | None, typer.Option("--budgets", help="Comma-separated counts or fractions.")
    ] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Number of seeds.")] = None,
    scheme: Annotated[
        str | None, typer.Option("--scheme", help="The scheme to fix, e.g. int8.")
    ] = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
) -> None:
    """Every strategy x selector x budget over seeds; finished cells are kept, a rerun resumes."""
    from mitigate.config import load_config, override
    from mitigate.mitigation.compare import compare, plan_cells
    from mitigate.reports.compare_tables import compare_markdown, compare_table
    from mitigate.reports.io import write_json, write_text

    cfg = override(
        load_config(config),
        seed=seed,
        compare__selectors=split_list(selectors),
        compare__strategies=split_list(strategies),
        compare__budgets=split_list(budgets),
        compare__seeds=seeds,
        retrain__scheme=scheme,
    )
    out = out or Path("runs") / "compare"
    total = len(plan_cells(cfg))
    with _progress(total, quiet) as advance:
        result = compare(cfg, out, checkpoint=model, on_cell=advance)
    console.print(compare_table(result.report))
    cached = result.report["cells"]["reused"]
    best = result.report.get("best_on_held_out")
    if best:
        mean = best["net_removal"]["mean"]
        console.print(
            f"most removed on held-out shifts: {best['strategy']} "
            f"(selector {best['selector']}, budget {best['budget']}): {100 * mean:+.0f}%"
        )
    write_json(out / "report.json", result.report)
    write_text(out / "report.md", compare_markdown(result.report))
    console.print(
        f"{total} cells ({cached} reused from {result.report['cells_dir']}); "
        f"time: {result.report['wall_time_s']:.1f}s"
    )
    console.print(f"wrote {out / 'report.json'}, {out / 'report.md'}")


class _progress:
    """A rich progress bar over cells, silent with --quiet or when stderr is not a terminal."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.enabled = total, show_progress(quiet)

    def __enter__(self):
        if not self.enabled:
            return lambda cell, cached: None
        from rich.progress import Progress

        self.bar = Progress(console=console, transient=True)
        self.bar.start()
        task = self.bar.add_task("compare", total=self.total)

        def advance(cell, cached: bool) -> None:
            label = f"{cell.strategy} {cell.selector} {cell.budget or ''} seed {cell.seed}"
            self.bar.update(task, advance=1, description=label + (" (cached)" if cached else ""))

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
