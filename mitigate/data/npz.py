"""A user's own labelled images, or a "natural shift" set, from one ``.npz`` file.

The file holds ``x`` (images) and ``y`` (labels), optionally ``classes`` (names) and an
official test part ``x_test`` / ``y_test``. It is read with ``allow_pickle=False``, so it can
hold only plain arrays and can never run code.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from mitigate.data._files import absolute, corrupt
from mitigate.data.images import LabelledImages
from mitigate.errors import MitigateError

__all__ = ["load_npz", "load_npz_pair"]

_LABEL = "npz"
_CHANNELS = (1, 3, 4)


def _channels_first(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` -> ``[N, C, H, W]``."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        # Channels-first wins when both axes could be channels (torch's own layout).
        if x.shape[1] in _CHANNELS:
            return x
        if x.shape[3] in _CHANNELS:
            return x.transpose(0, 3, 1, 2)
    raise corrupt(
        _LABEL,
        path,
        f"{key} has shape {tuple(x.shape)}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] "
        "with C in 1, 3, 4",
    )


def _to_uint8(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Integer pixels in ``0..255`` pass as they are; float pixels in ``[0, 1]`` are scaled."""
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) and not np.issubdtype(x.dtype, np.timedelta64):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise corrupt(_LABEL, path, f"{key} is {x.dtype} with values outside 0..255")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise corrupt(_LABEL, path, f"{key} is {x.dtype} with values outside [0, 1] or NaN")
        return np.rint(x.astype(np.float64) * 255.0).astype(np.uint8)
    raise corrupt(_LABEL, path, f"{key} has dtype {x.dtype}; expected uint8 or float in [0, 1]")


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise corrupt(
            _LABEL, path, f"{key} should be integer labels [{n}], got {y.dtype} {tuple(y.shape)}"
        )
    if n and y.min() < 0:
        raise corrupt(_LABEL, path, f"{key} holds a negative label {int(y.min())}")
    return y.astype(np.int64)


def _part(arrays: dict[str, np.ndarray], x_key: str, y_key: str, path: Path):
    for key in (x_key, y_key):
        if key not in arrays:
            raise corrupt(_LABEL, path, f"no array {key!r} (arrays: {', '.join(sorted(arrays))})")
    x = _channels_first(_to_uint8(arrays[x_key], path, x_key), path, x_key)
    return np.ascontiguousarray(x), _labels(arrays[y_key], len(x), path, y_key)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        raise MitigateError(
            f"npz data_dir {path} is a directory; give the path of the .npz file holding x and y"
        )
    if not path.is_file():
        raise MitigateError(
            f"npz file {path} not found; give the path of an .npz file holding arrays x and y"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise corrupt(_LABEL, path, "a single .npy array, not an .npz archive of x and y")
        with loaded as npz:
            return {key: npz[key] for key in npz.files}
    except MitigateError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise corrupt(
                _LABEL, path, "holds an object (pickled) array, which is refused; store numbers"
            ) from err
        raise corrupt(_LABEL, path, str(err)) from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise corrupt(_LABEL, path, f"not a readable .npz ({type(err).__name__}: {err})") from err


def load_npz_pair(
    path: str | os.PathLike[str],
) -> tuple[LabelledImages, LabelledImages | None]:
    """Images from ``x`` / ``y`` and, when the file has them, a test part from ``x_test`` /
    ``y_test`` (same classes).

    Returns:
        ``(data, test)``; ``test`` is ``None`` without ``x_test``. Named after the file stem
        (``"fog"`` and ``"fog/test"`` for ``fog.npz``).

    Raises:
        MitigateError: see :func:`load_npz`.
    """
    path = absolute(path)
    arrays = _read_arrays(path)
    x, y = _part(arrays, "x", "y", path)
    test = _part(arrays, "x_test", "y_test", path) if "x_test" in arrays else None
    if test is not None and test[0].shape[1:] != x.shape[1:]:
        raise corrupt(
            _LABEL, path, f"x_test images are {test[0].shape[1:]} but x images are {x.shape[1:]}"
        )
    top = max(int(y.max(initial=-1)), -1 if test is None else int(test[1].max(initial=-1)))
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or not (names.dtype.kind in "US" or names.dtype.kind in "iu"):
            raise corrupt(
                _LABEL, path, f"classes should be a 1-D array of names, got {names.dtype}"
            )
        classes = tuple(str(c.decode() if isinstance(c, bytes) else c) for c in names.tolist())
        if top >= len(classes):
            raise corrupt(_LABEL, path, f"label {top} but only {len(classes)} classes")
    else:
        classes = tuple(str(i) for i in range(top + 1))
    if not classes:
        raise corrupt(_LABEL, path, "no images and no classes")

    def labelled(part: tuple[np.ndarray, np.ndarray], name: str) -> LabelledImages:
        return LabelledImages(
            images=torch.from_numpy(part[0]),
            labels=torch.from_numpy(part[1]),
            classes=classes,
            max_value=255,
            name=name,
        )

    stem = path.stem
    return labelled((x, y), stem), None if test is None else labelled(test, f"{stem}/test")


def load_npz(path: str | os.PathLike[str]) -> LabelledImages:
    """Labelled images from an ``.npz``: a user's dataset or a "natural shift" set.

    Arrays in the file:

    - ``x``: images ``uint8`` (or any integer type with values ``0..255``) or float in
      ``[0, 1]`` (scaled to ``0..255``), shaped ``[N, H, W]``, ``[N, H, W, C]`` or
      ``[N, C, H, W]`` with ``C`` in 1, 3, 4 (channels-first when both could be channels).
    - ``y``: integer labels ``[N]``.
    - ``classes`` (optional): names ``[K]``; without it classes are ``"0"`` .. ``str(max(y))``.

    Returns:
        ``uint8 [N, C, H, W]`` images, ``max_value=255``, named after the file stem.

    Raises:
        MitigateError: the file is missing, is not an ``.npz``, holds pickled objects, lacks
            ``x`` or ``y``, or has shapes, dtypes or labels that do not fit.

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     np.savez(f"{tmp}/mine.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1]))
        ...     load_npz(f"{tmp}/mine.npz").images.shape
        torch.Size([2, 1, 4, 4])
    """
    return load_npz_pair(path)[0]
