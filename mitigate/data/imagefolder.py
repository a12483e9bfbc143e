"""A user's own labelled images from a folder: one subfolder per class, PNG or JPEG files.

Layout (``train/`` and ``test/`` are optional; with them, ``test/`` is the official test part)::

    PATH/cat/001.png  PATH/dog/002.jpg ...
    PATH/train/cat/001.png ... PATH/test/cat/101.png ...

Classes are the subfolder names in sorted order (label ``i`` is the ``i``-th name); files are
read in sorted order. Pillow decodes them; nothing else is executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mitigate.data._files import absolute
from mitigate.data.images import LabelledImages
from mitigate.errors import MitigateError

__all__ = ["IMAGE_SUFFIXES", "load_imagefolder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_MODES = {1: "L", 3: "RGB"}


def load_imagefolder(
    path: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] | None = None,
    channels: int = 0,
) -> tuple[LabelledImages, LabelledImages | None]:
    """Load a class-per-subfolder image folder.

    Args:
        path: the folder (or one holding ``train/`` and ``test/`` class folders).
        image_size: ``(H, W)`` to resize every image to (bilinear); ``None`` keeps the stored
            size, which must then be the same for every image.
        channels: 1 (grey) or 3 (RGB) to convert every image to; 0 keeps the stored mode,
            which must then be grey for all images or colour for all.

    Returns:
        ``(data, test)``: ``uint8 [N, C, H, W]`` images, ``max_value=255``; ``test`` is
        ``None`` without a ``test/`` folder.

    Raises:
        MitigateError: a missing folder, no class folders or no images, an unreadable image,
            or sizes / modes that differ while no ``image_size`` / ``channels`` was given.

    Example:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for c in ("a", "b"):
        ...         Path(tmp, c).mkdir()
        ...         Image.fromarray(np.zeros((8, 8), np.uint8)).save(f"{tmp}/{c}/0.png")
        ...     data, test = load_imagefolder(tmp)
        ...     data.images.shape, data.classes, test is None
        (torch.Size([2, 1, 8, 8]), ('a', 'b'), True)
    """
    if channels not in (0, *_MODES):
        raise MitigateError(f"imagefolder channels must be 0 (as stored), 1 or 3, got {channels}")
    root = absolute(path)
    if not root.is_dir():
        raise MitigateError(
            f"imagefolder {root} is not a folder; give a folder with one subfolder per class"
        )
    split_folders = (root / "train").is_dir() and (root / "test").is_dir()
    data_root = root / "train" if split_folders else root
    classes = _class_names(data_root)
    data = _read_part(data_root, classes, image_size, channels, name=root.name)
    if not split_folders:
        return data, None
    test_classes = _class_names(root / "test")
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise MitigateError(
            f"imagefolder {root}: test/ has classes not in train/: {', '.join(unknown)}"
        )
    test = _read_part(root / "test", classes, image_size, channels, name=f"{root.name}/test")
    if test.input_shape != data.input_shape:
        raise MitigateError(
            f"imagefolder {root}: test images are {test.input_shape} but train images are "
            f"{data.input_shape}; set image_size and channels in [data]"
        )
    return data, test


def _class_names(folder: Path) -> tuple[str, ...]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise MitigateError(
            f"imagefolder {folder} has no class subfolders; put each class's images in its "
            "own subfolder (PATH/cat/1.png, PATH/dog/2.png)"
        )
    return tuple(names)


def _read_part(
    folder: Path,
    classes: tuple[str, ...],
    image_size: tuple[int, int] | None,
    channels: int,
    name: str,
) -> LabelledImages:
    files, labels = [], []
    for label, cls in enumerate(classes):
        if not (folder / cls).is_dir():
            continue  # a test part may lack a class
        found = sorted(p for p in (folder / cls).iterdir() if _is_image(p))
        files += found
        labels += [label] * len(found)
    if not files:
        raise MitigateError(
            f"imagefolder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class "
            "subfolders"
        )
    arrays = [_read_image(f, image_size, channels) for f in files]
    _check_same(arrays, files)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return LabelledImages(images, torch.tensor(labels, dtype=torch.int64), classes, 255, name)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _read_image(path: Path, image_size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """``uint8 [H, W, C]`` pixels of one file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = _MODES.get(channels) or ("L" if image.mode in ("1", "L", "I", "I;16") else "RGB")
            image = image.convert(mode)
            if image_size is not None and image.size != (image_size[1], image_size[0]):
                image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise MitigateError(f"imagefolder image {path} cannot be read: {err}") from None
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _check_same(arrays: list[np.ndarray], files: list[Path]) -> None:
    first = arrays[0].shape
    for pixels, path in zip(arrays, files, strict=True):
        if pixels.shape[2] != first[2]:
            raise MitigateError(
                f"imagefolder image {path} is {'grey' if pixels.shape[2] == 1 else 'colour'} "
                f"but {files[0].name} is not; set channels = 1 or 3 in [data]"
            )
        if pixels.shape != first:
            raise MitigateError(
                f"imagefolder image {path} is {pixels.shape[0]}x{pixels.shape[1]} but "
                f"{files[0].name} is {first[0]}x{first[1]}; set image_size = [H, W] in [data]"
            )
