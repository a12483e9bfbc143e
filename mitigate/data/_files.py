"""Finding dataset files on disk and the one-line errors for missing or corrupt ones.

Shared by the IDX (MNIST, Fashion-MNIST) and CIFAR-10 loaders. Every message names the file
with all the names it may have (``train-images-idx3-ubyte[.gz]``), the absolute directory that
was searched, and what to do about it.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mitigate.errors import MitigateError

__all__ = ["DataFiles", "absolute", "corrupt", "find_files", "read_bytes"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class DataFiles:
    """The directory where all of a dataset's files were found, and each file's path.

    Attributes:
        directory: the absolute directory that holds every needed file.
        paths: needed name (without ``.gz``) -> the path found (raw or ``.gz``).
    """

    directory: Path
    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().absolute()


def _existing(directory: Path, name: str, gz: bool) -> Path | None:
    for candidate in (name, name + ".gz") if gz else (name,):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def find_files(
    data_dir: str | os.PathLike[str],
    names: Sequence[str],
    *,
    label: str,
    hint: str,
    subdirs: Sequence[str] = (),
    gz: bool = False,
) -> DataFiles:
    """Find all of ``names`` in ``data_dir`` or in the first of its ``subdirs`` that holds any.

    Args:
        data_dir: the directory the user gave.
        names: the files needed, without a ``.gz`` suffix.
        label: the dataset as people write it (``"MNIST"``), for messages.
        hint: what to do when something is missing, e.g. ``"download MNIST into it"``.
        subdirs: other layouts to try under ``data_dir`` (``"raw"``, ``"MNIST/raw"``).
        gz: also accept ``name + ".gz"``.

    Returns:
        Where each file is; all in one directory so the four MNIST files always belong together.

    Raises:
        MitigateError: the directory does not exist, or a file is missing; one line naming
            the file (``name[.gz]``), the absolute directory searched, and ``hint``.
    """
    root = absolute(data_dir)
    suffix = "[.gz]" if gz else ""
    fix = f"{hint}, or set data_dir in the config"
    if not root.exists():
        needed = ", ".join(n + suffix for n in names)
        raise MitigateError(
            f"{label} data directory {root} does not exist (it should hold {needed}); {fix}"
        )
    if not root.is_dir():
        raise MitigateError(f"{label} data_dir {root} is a file, not a directory; {fix}")
    candidates = [root] + [root / s for s in subdirs if (root / s).is_dir()]
    # The first layout holding any needed file wins, so a half-filled raw/ is reported as such.
    directory = next(
        (d for d in candidates if any(_existing(d, n, gz) for n in names)), candidates[0]
    )
    paths: dict[str, Path] = {}
    for name in names:
        found = _existing(directory, name, gz)
        if found is None:
            also = ""
            if subdirs and directory == root:
                also = " (also looked in " + ", ".join(f"{s}/" for s in subdirs) + ")"
            raise MitigateError(
                f"{label} file {name}{suffix} not found in {directory}{also}; {fix}"
            )
        paths[name] = found
    return DataFiles(directory, paths)


def corrupt(label: str, path: Path, problem: str) -> MitigateError:
    """The one-line error for a file that exists but cannot be what it claims to be."""
    return MitigateError(f"corrupt {label} file {path}: {problem}")


def read_bytes(path: Path, label: str) -> bytes:
    """All bytes of ``path``, gunzipped when the file starts with the gzip magic.

    Looking at the magic bytes (not the name) also reads an un-gzipped file named ``.gz``.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise MitigateError(f"cannot read {label} file {path}: {err.strerror or err}") from err
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise corrupt(label, path, f"broken gzip stream ({err or type(err).__name__})") from err
