"""Report writers: JSON/NPZ files, summaries, and terminal tables."""

from mitigate._lazy import lazy_exports

_EXPORTS = {"read_json": ".io", "write_json": ".io", "write_text": ".io", "summarize": ".summary"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
