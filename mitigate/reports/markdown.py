"""Plain Markdown for ``report.md``: tables from rows, embedded plots, the provenance block every
report ends with (command, seed, versions, wall time, config), and the conversion to one
self-contained ``report.html`` (plots inlined as base64, no external file or network)."""

from __future__ import annotations

import base64
import html
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from mitigate.machine import machine_line

__all__ = ["markdown_to_html", "md_plots", "md_table", "provenance"]


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


def md_plots(plots: Sequence[Any]) -> str:
    """Embed each plot (anything with ``file`` and ``title``) as an image with its caption.

    Example:
        >>> from types import SimpleNamespace as P
        >>> print(md_plots([P(file="roc.png", title="ROC per scheme")]))
        ![ROC per scheme](roc.png)
        <BLANKLINE>
        *ROC per scheme*
    """
    return "\n\n".join(f"![{p.title}]({p.file})\n\n*{p.title}*" for p in plots)


def provenance(report: dict[str, Any], argv: Sequence[str] | None = None) -> str:
    """The exact command, seed, versions, wall time and the full config, as Markdown.

    The command is ``report["provenance"]["command"]`` when the CLI recorded it, else
    ``argv`` (default: this process's arguments).
    """
    recorded = report.get("provenance") or {}
    command = recorded.get("command") or shlex.join(
        ["mitigate", *(sys.argv[1:] if argv is None else argv)]
    )
    config = report.get("config", {})
    seed = report.get("seed", config.get("seed"))
    seeds = report.get("seeds")
    versions = f"mitigate {report.get('mitigate_version')}, torch {report.get('torch_version')}"
    if recorded.get("python"):
        versions += f", Python {recorded['python']}"
    machine = report.get("machine")
    return "\n".join(
        [
            "## Provenance",
            "",
            f"- command: `{command}`",
            f"- seed: {seed}" + (f" (seeds {seeds})" if seeds else ""),
            f"- {versions}",
            *(
                [f"- machine: {machine_line(machine)} (int8 counts differ across CPUs)"]
                if machine
                else []
            ),
            f"- wall time: {report.get('wall_time_s')} s",
            "",
            "```json",
            json.dumps(config, indent=2),
            "```",
        ]
    )


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 70rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; }
th { border-bottom: 2px solid #999; }
code { background: #f4f4f4; padding: 0 0.2rem; }
pre { background: #f4f4f4; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
img { max-width: 100%; }
"""


def markdown_to_html(text: str, images: Mapping[str, bytes], *, title: str = "mitigate") -> str:
    """One self-contained HTML page from ``text``: every image whose ``src`` is a key of
    ``images`` is inlined as a base64 ``data:`` URI (PNG); raw HTML in ``text`` is escaped.

    Example:
        >>> page = markdown_to_html("# hi\\n\\n![plot](p.png)", {"p.png": b"\\x89PNG"})
        >>> "data:image/png;base64,iVBORw==" in page and "<h1>hi</h1>" in page
        True
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    default_image = md.renderer.rules["image"]

    def image(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        token = tokens[idx]
        src = token.attrGet("src")
        if isinstance(src, str) and src in images:
            token.attrSet("src", "data:image/png;base64," + base64.b64encode(images[src]).decode())
        return default_image(tokens, idx, options, env)

    md.add_render_rule("image", image)
    body = md.render(text)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )
