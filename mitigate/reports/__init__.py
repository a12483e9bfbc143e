"""One rendering module per command — ``mitigate/reports/<command>.py`` holds its terminal
tables, its ``report.md`` and its plots — and one writer (:mod:`.writer`) that publishes a
run's files at once. Reports read the plain report dicts the runs return; they never run
anything. Shared pieces: :mod:`.tables` (tables that wrap, never cut), :mod:`.figures`
(headless matplotlib), :mod:`.markdown` (Markdown and self-contained HTML).
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "Plot": ".writer",
    "markdown_to_html": ".markdown",
    "write_report": ".writer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
