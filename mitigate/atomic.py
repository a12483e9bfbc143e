"""Atomic writes: a crash or a Ctrl-C never leaves a half-written file behind.

Every file is written to a temporary name in its target folder and renamed onto the target
(``os.replace``, atomic on one file system), so a reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "publish",
    "read_json",
    "temporary_beside",
    "write_bytes",
    "write_json",
    "write_npz",
    "write_text",
    "write_torch",
]


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file onto ``path`` with the permissions a plain ``open`` would
    give (``mkstemp`` creates files readable by their owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextlib.contextmanager
def temporary_beside(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file name next to ``path``; published onto ``path`` when the block ends
    normally, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    with temporary_beside(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` through a temporary file in the same directory."""
    import torch

    with temporary_beside(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same directory."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """``numpy.savez_compressed(path, **arrays)`` through a temporary file."""
    import numpy as np

    with temporary_beside(path, suffix=".tmp.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
