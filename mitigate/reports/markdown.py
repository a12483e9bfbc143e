"""Plain Markdown for ``report.md``: tables from rows, and the provenance block every report
ends with (command, seed, versions, wall time, config)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["md_table", "provenance"]


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; the first column left-aligned, the others right.

    Example:
        >>> print(md_table(["a", "b"], [["x", "1"]]))
        | a | b |
        |:--|--:|
        | x | 1 |
    """
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(report: dict[str, Any], argv: Sequence[str] | None = None) -> str:
    """The exact command, seed, versions, wall time and the full config, as Markdown."""
    command = shlex.join(["mitigate", *(sys.argv[1:] if argv is None else argv)])
    return "\n".join(
        [
            "## Provenance",
            "",
            f"- command: `{command}`",
            f"- seed: {report.get('seed')}",
            f"- mitigate {report.get('mitigate_version')}, torch {report.get('torch_version')}",
            f"- wall time: {report.get('wall_time_s')} s",
            "",
            "```json",
            json.dumps(report.get("config", {}), indent=2),
            "```",
        ]
    )
