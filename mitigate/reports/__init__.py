"""Report writers: JSON/NPZ files, summaries, terminal tables, Markdown/HTML and plots.

:func:`write_report` publishes one run's files (``report.json``, ``report.md``, optional
``report.html``, PNG plots, data files) into a directory all at once; :mod:`.plots` draws the
figures (matplotlib, headless).
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "Plot": ".bundle",
    "markdown_to_html": ".markdown",
    "read_json": ".io",
    "summarize": ".summary",
    "write_bytes": ".io",
    "write_json": ".io",
    "write_report": ".bundle",
    "write_text": ".io",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
