"""Text data: tokenizer and vocabulary, LabelledText, loaders on files the tests write, the
embedded tweets, and the text shifts."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import torch

from mitigate.data.loaders import load_dataset
from mitigate.data.text.dataset import LabelledText
from mitigate.data.text.loaders import load_imdb, load_text_csv, load_tweets
from mitigate.data.text.shifts import apply_text_shift, text_shift_names
from mitigate.data.text.vocab import (
    PAD_ID,
    UNK_ID,
    Vocabulary,
    build_vocabulary,
    tokenize,
)
from mitigate.errors import MitigateError

TEXTS = [
    "The film was GREAT, I loved it!",
    "Terrible acting... and a boring plot?",
    "it's not bad: a fine, quiet film",
    "Worst movie of the year #fail @studio",
    "A great cast, a great story and a great score",
]


# -------------------------------------------------------------------------- tokenizer


def test_tokenize_lowercases_and_splits_punctuation() -> None:
    assert tokenize("It's GREAT!! See https://t.co/x?y=1 :)") == [
        "it's", "great", "!", "!", "see", "url", ":", ")",
    ]  # fmt: skip
    assert tokenize("  ") == [] and tokenize("café") == ["caf"]  # non-ASCII letters separate


def test_vocabulary_is_ranked_by_count_then_alphabet_and_round_trips() -> None:
    vocab = build_vocabulary(TEXTS, min_freq=1)
    assert vocab.tokens[:2] == ("<pad>", "<unk>")
    counts = {t: sum(tokenize(x).count(t) for x in TEXTS) for t in vocab.tokens[2:]}
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    assert list(vocab.tokens[2:]) == ranked and vocab.tokens[2] == "a"
    for text in TEXTS:  # every token is known: decode(encode(text)) is the token stream
        ids = vocab.encode(text, max_len=20)
        assert vocab.decode(ids) == " ".join(tokenize(text))
        assert UNK_ID not in ids
    # Same texts, same ids: in another order too.
    assert build_vocabulary(TEXTS[::-1], min_freq=1) == vocab


def test_min_freq_max_size_padding_truncation_and_unknown_words() -> None:
    vocab = build_vocabulary(TEXTS, min_freq=2)
    assert all(sum(tokenize(x).count(t) for x in TEXTS) >= 2 for t in vocab.tokens[2:])
    small = build_vocabulary(TEXTS, min_freq=1, max_size=5)
    assert len(small) == 5 and small.tokens[2:] == ("a", "great", ",")
    ids = small.encode("a great zebra", max_len=6)
    assert ids == [PAD_ID, PAD_ID, PAD_ID, 2, 3, UNK_ID]  # left padding, <unk> for zebra
    assert small.encode("a a great a great", max_len=3) == [2, 2, 3]  # keeps the first tokens
    batch = small.encode_batch(["a", "great great"], max_len=4)
    assert batch.dtype == torch.int64 and batch.tolist() == [[0, 0, 0, 2], [0, 0, 3, 3]]
    with pytest.raises(MitigateError, match="data.min_freq must be >= 1"):
        build_vocabulary(TEXTS, min_freq=0)
    with pytest.raises(MitigateError, match="data.vocab_size must be 0 .* or >= 3"):
        build_vocabulary(TEXTS, max_size=2)
    with pytest.raises(MitigateError, match="must start with '<pad>', '<unk>'"):
        Vocabulary(("a", "<pad>", "<unk>"))


def test_labelled_text_batches_subsets_and_needs_a_vocabulary() -> None:
    data = LabelledText(tuple(TEXTS), torch.tensor([1, 0, 1, 0, 1]), ("neg", "pos"), "toy")
    with pytest.raises(MitigateError, match="has no vocabulary yet"):
        data.batch(torch.arange(2))
    vocab = build_vocabulary(TEXTS)
    bound = data.with_vocabulary(vocab, max_len=8)
    assert bound.input_shape == (8,) and bound.modality == "text" and bound.num_classes == 2
    x = bound.batch(slice(None))
    assert x.shape == (5, 8) and x.dtype == torch.int64
    assert torch.equal(x, vocab.encode_batch(TEXTS, 8))
    sub = bound.subset(torch.tensor([4, 0]))
    assert sub.texts == (TEXTS[4], TEXTS[0]) and sub.labels.tolist() == [1, 1]
    assert torch.equal(sub.batch(torch.arange(2)), x[[4, 0]])
    shifted = bound.batch(torch.tensor([0, 1]), "oov-substitution", 5, seed=3)
    expected = apply_text_shift(TEXTS[:2], "oov-substitution", 5, seed=3, index=torch.arange(2))
    assert torch.equal(shifted, vocab.encode_batch(expected, 8))
    assert bound.shift_names() == text_shift_names()
    with pytest.raises(MitigateError, match="4 texts but 5 labels"):
        LabelledText(tuple(TEXTS[:4]), torch.zeros(5, dtype=torch.int64), ("a", "b"))


# -------------------------------------------------------------------------- loaders


def _write_imdb(root: Path) -> None:
    reviews = {
        "train": {"pos": ["Loved it.<br />Great!", "Fine film"], "neg": ["Awful<br/>movie"]},
        "test": {"pos": ["Superb"], "neg": ["Dull", "Bad plot"]},
    }
    for part, folders in reviews.items():
        for label, texts in folders.items():
            folder = root / "aclImdb" / part / label
            folder.mkdir(parents=True)
            for i, text in enumerate(texts):
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(text)
    (root / "aclImdb" / "train" / "unsup").mkdir()  # ignored
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("no label")


def test_imdb_folder_layout(tmp_path: Path) -> None:
    _write_imdb(tmp_path)
    for where in (tmp_path, tmp_path / "aclImdb"):  # the folder or its parent
        train, test = load_imdb(where)
        assert train.classes == ("negative", "positive") and train.name == "imdb/train"
        assert train.texts == ("Awful movie", "Loved it. Great!", "Fine film")
        assert train.labels.tolist() == [0, 1, 1]
        assert test is not None and test.labels.tolist() == [0, 0, 1]
    train, test = load_dataset("imdb", tmp_path)
    assert len(train) == 3 and len(test) == 3
    with pytest.raises(MitigateError, match="holds no train/ or test/ folder"):
        load_imdb(tmp_path / "aclImdb" / "train")
    (tmp_path / "aclImdb" / "test" / "pos" / "0_7.txt").unlink()
    (tmp_path / "aclImdb" / "test" / "pos").rmdir()
    with pytest.raises(MitigateError, match="lacks pos/"):
        load_imdb(tmp_path)
    with pytest.raises(MitigateError, match="dataset 'imdb' needs data_dir"):
        load_dataset("imdb")


def test_text_csv(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text('Text,Label,extra\n"Good, really",2,x\nBad,0,y\n"Multi\nline",10,z\n')
    data, test = load_text_csv(path)
    assert test is None and data.name == "reviews"
    assert data.texts == ("Good, really", "Bad", "Multi\nline")
    assert data.classes == ("0", "2", "10")  # integer labels sort numerically
    assert data.labels.tolist() == [1, 0, 2]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 cr\xe8me,pos\n".encode("latin-1"))
    assert load_text_csv(latin)[0].texts == ("café crème",)
    named, _ = load_text_csv(path, classes=("0", "2", "10", "99"))
    assert named.num_classes == 4
    assert len(load_dataset("text-csv", path)[0]) == 3
    with pytest.raises(MitigateError, match="label '10' is not one of 0, 2"):
        load_text_csv(path, classes=("0", "2"))
    (tmp_path / "bad.csv").write_text("words,y\nhi,1\n")
    with pytest.raises(MitigateError, match="needs a header with 'text' and 'label'"):
        load_text_csv(tmp_path / "bad.csv")
    with pytest.raises(MitigateError, match="text CSV file not found"):
        load_text_csv(tmp_path / "nope.csv")


def test_embedded_tweets_are_two_disjoint_topics() -> None:
    general, none = load_tweets("general")
    airline, _ = load_tweets("airline")
    everything, _ = load_tweets("all")
    assert none is None and general.classes == ("negative", "neutral", "positive")
    assert (len(general), len(airline), len(everything)) == (22818, 14425, 37243)
    assert not set(general.texts) & set(airline.texts)
    assert len(set(everything.texts)) == len(everything)  # duplicates removed
    assert sorted(torch.bincount(general.labels).tolist()) == [4534, 6893, 11391]
    assert all("@" in t for t in airline.texts[:100])
    assert load_dataset("tweets-airline")[0].name == "tweets-airline"
    with pytest.raises(MitigateError, match="unknown tweet topic 'cars'"):
        load_tweets("cars")


# -------------------------------------------------------------------------- shifts

SHIFT_TEXTS = [" ".join(f"word{(7 * i + j) % 23} is, fine" for j in range(6)) for i in range(60)]


def _changed_share(before: list[str], after: list[str]) -> float:
    """Share of tokens not kept in place (1 - difflib's matching ratio), averaged."""
    ratios = [
        difflib.SequenceMatcher(None, tokenize(a), tokenize(b), autojunk=False).ratio()
        for a, b in zip(before, after, strict=True)
    ]
    return 1 - sum(ratios) / len(ratios)


@pytest.mark.parametrize("name", text_shift_names())
def test_text_shifts_are_deterministic_per_text(name: str) -> None:
    index = torch.arange(100, 160)
    out = apply_text_shift(SHIFT_TEXTS, name, 3, seed=5, index=index)
    assert out == apply_text_shift(SHIFT_TEXTS, name, 3, seed=5, index=index)
    assert out != SHIFT_TEXTS
    # Each text depends on its own index only: not on the batch or its place in it.
    order = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    shuffled = apply_text_shift(
        [SHIFT_TEXTS[i] for i in order], name, 3, seed=5, index=index[order]
    )
    assert shuffled == [out[i] for i in order]
    assert apply_text_shift(SHIFT_TEXTS[7:8], name, 3, seed=5, index=index[7:8]) == [out[7]]
    assert apply_text_shift(SHIFT_TEXTS, name, 3, seed=6, index=index) != out


@pytest.mark.parametrize("name", text_shift_names())
def test_share_of_changed_tokens_grows_with_severity(name: str) -> None:
    index = torch.arange(60)
    shares = [
        _changed_share(SHIFT_TEXTS, apply_text_shift(SHIFT_TEXTS, name, s, seed=0, index=index))
        for s in (1, 2, 3, 4, 5)
    ]
    assert all(a < b for a, b in zip(shares, shares[1:], strict=False)), shares
    assert 0.0 < shares[0] < 0.1 and shares[-1] > 0.1


def test_what_each_shift_keeps() -> None:
    vocab = build_vocabulary(SHIFT_TEXTS)
    index = torch.arange(60)
    oov = apply_text_shift(SHIFT_TEXTS, "oov-substitution", 5, seed=0, index=index)
    new_words = {w for text in oov for w in tokenize(text)} - set(vocab.tokens)
    assert new_words and all(w not in vocab for w in new_words)
    assert UNK_ID in vocab.encode_batch(oov, 40)

    def words(text: str) -> list[str]:
        return [t for t in tokenize(text) if t.isalnum()]

    # case-punct changes casing and punctuation only; a shuffle keeps every word.
    cased = apply_text_shift(SHIFT_TEXTS, "case-punct", 5, seed=0, index=index)
    assert cased != SHIFT_TEXTS and [words(t) for t in cased] == [words(t) for t in SHIFT_TEXTS]
    assert any(t != t.lower() for t in cased)
    shuffled = apply_text_shift(SHIFT_TEXTS, "word-shuffle", 5, seed=0, index=index)
    assert [sorted(t.split()) for t in shuffled] == [sorted(t.split()) for t in SHIFT_TEXTS]
    dropped = apply_text_shift(SHIFT_TEXTS, "word-dropout", 5, seed=0, index=index)
    for before, after in zip(SHIFT_TEXTS, dropped, strict=True):  # a subsequence, in order
        rest = iter(before.split())
        assert all(w in rest for w in after.split())


def test_text_shift_errors() -> None:
    index = torch.arange(2)
    with pytest.raises(MitigateError, match="unknown text shift 'typo'; valid choices: char-typo"):
        apply_text_shift(["a", "b"], "typo", 1, seed=0, index=index)
    with pytest.raises(MitigateError, match="unknown severity 6"):
        apply_text_shift(["a", "b"], "char-typo", 6, seed=0, index=index)
    with pytest.raises(MitigateError, match=r"index must be an integer tensor of shape \[2\]"):
        apply_text_shift(["a", "b"], "char-typo", 1, seed=0, index=torch.arange(3))
    assert apply_text_shift([], "char-typo", 1, seed=0, index=torch.arange(0)) == []
    assert apply_text_shift([""], "word-shuffle", 5, seed=0, index=torch.arange(1)) == [""]
