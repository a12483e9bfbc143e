"""Loaders read small files written here in the real formats, and refuse broken or hostile ones."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from mitigate.data.cifar import CIFAR10_CLASSES, SafeUnpickler, load_cifar10, safe_load
from mitigate.data.digits import load_digits
from mitigate.data.idx import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_mnist,
    parse_idx,
    read_idx,
)
from mitigate.data.loaders import DATASETS, load_dataset
from mitigate.data.npz import load_npz, load_npz_pair
from mitigate.errors import MitigateError

# ---------------------------------------------------------------- writers in the real formats


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX as LeCun wrote it: 0x0000, dtype code, ndim, big-endian int32 dims, big-endian data."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, code[array.dtype], array.ndim])
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(directory: Path, n_train: int = 5, n_test: int = 3, gz: bool = False, seed=0):
    """The four MNIST files with random 28x28 images; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes what Python 2's cPickle wrote for the CIFAR files: protocol 2, every str and
    bytes as BINSTRING, numpy's reconstructor under its old name ``numpy.core.multiarray``."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_string(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
        self.memoize(obj)


def dump_py2(obj, path: Path) -> None:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())


def write_cifar(directory: Path, n: int = 4, python2: bool = True, seed: int = 0):
    """``cifar-10-batches-py`` with ``n`` images per batch; returns {file: (data, labels)}."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        batches[name] = (data, labels)
        if python2:
            dump_py2(batch, directory / name)
        else:
            (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        b"num_cases_per_batch": n,
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_vis": 3072,
    }
    if python2:
        dump_py2(meta, directory / "batches.meta")
    else:
        (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


# ---------------------------------------------------------------------------- digits


def test_digits_match_sklearn() -> None:
    data = load_digits()
    reference = sklearn_digits()
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and data.max_value == 16
    assert int(data.images.max()) == 16 and int(data.images.min()) == 0
    np.testing.assert_array_equal(data.images[:, 0].numpy(), reference.images)
    np.testing.assert_array_equal(data.labels.numpy(), reference.target)
    assert data.classes == tuple("0123456789") and data.name == "digits"
    assert float(data.float_batch(slice(None)).max()) == 1.0


# ------------------------------------------------------------------------------- IDX


def test_parse_idx_other_dtypes_big_endian() -> None:
    values = np.array([[1, -2, 300], [4, 5, -600]], dtype=np.int16)
    np.testing.assert_array_equal(parse_idx(idx_bytes(values)), values)
    floats = np.array([0.5, -1.25], dtype=np.float32)
    np.testing.assert_array_equal(parse_idx(idx_bytes(floats)), floats)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["", "raw", "MNIST/raw"])
def test_mnist_round_trip(tmp_path: Path, gz: bool, layout: str) -> None:
    arrays = write_mnist(tmp_path / layout, gz=gz)
    train, test = load_mnist(tmp_path)
    assert train.images.shape == (5, 1, 28, 28) and test.images.shape == (3, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    np.testing.assert_array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(train.labels.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert train.name == "mnist/train" and test.name == "mnist/test"
    assert train.classes == tuple("0123456789") and train.max_value == 255


def test_fashion_mnist_classes_and_layout(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "FashionMNIST" / "raw", gz=True, seed=1)
    train, test = load_fashion_mnist(tmp_path)
    assert train.classes == FASHION_MNIST_CLASSES and train.classes[0] == "T-shirt/top"
    assert train.name == "fashion-mnist/train"
    np.testing.assert_array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])


def test_mnist_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(MitigateError, match=r"MNIST data directory .*nowhere does not exist") as e:
        load_mnist(missing)
    assert "train-images-idx3-ubyte[.gz]" in str(e.value)
    assert "download MNIST into it, or set data_dir in the config" in str(e.value)
    assert "\n" not in str(e.value)


def test_mnist_missing_file_names_it_and_the_absolute_dir(tmp_path: Path, monkeypatch) -> None:
    write_mnist(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MitigateError) as e:
        load_mnist("m")  # relative: the message must still give the absolute path
    message = str(e.value)
    assert f"t10k-labels-idx1-ubyte[.gz] not found in {tmp_path / 'm'}" in message
    assert "also looked in raw/, MNIST/raw/" in message and "\n" not in message


def test_mnist_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(MitigateError, match=r"file train-images-idx3-ubyte\[\.gz\] not found"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b"\x08\x03" + b[2:], r"bad magic number 0x0803"),
        (lambda b: b[:2] + b"\x07" + b[3:], r"bad magic number"),
        (lambda b: b[:-10], r"truncated: header says 5x28x28 uint8 \(3920 bytes\)"),
        (lambda b: b + b"\x00", r"too long"),
        (lambda b: b[:6], r"truncated header"),
        (lambda b: gzip.compress(b)[:-30], r"broken gzip stream"),
    ],
)
def test_mnist_corrupt_images(tmp_path: Path, damage, match: str) -> None:
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(MitigateError, match=match) as e:
        load_mnist(tmp_path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_mnist_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(MitigateError, match=r"holds 5 images but .* holds 4 labels"):
        load_mnist(tmp_path)


def test_mnist_wrong_kind_of_file(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros((5, 2), np.uint8)))
    with pytest.raises(MitigateError, match=r"train-labels-idx1-ubyte: expected uint8 labels"):
        load_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(5, 10, np.uint8)))
    with pytest.raises(MitigateError, match=r"label 10 outside 0..9"):
        load_mnist(tmp_path)


def test_read_idx_missing(tmp_path: Path) -> None:
    with pytest.raises(MitigateError, match="IDX file .*absent not found"):
        read_idx(tmp_path / "absent")


# ----------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("python2", [True, False])
@pytest.mark.parametrize("give_parent", [True, False])
def test_cifar_round_trip(tmp_path: Path, python2: bool, give_parent: bool) -> None:
    batches = write_cifar(tmp_path / "cifar-10-batches-py", python2=python2)
    train, test = load_cifar10(tmp_path if give_parent else tmp_path / "cifar-10-batches-py")
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    expected = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(train.images.reshape(20, -1).numpy(), expected)
    # Channel planes: the first 1024 values of a row are the red image, row-major.
    np.testing.assert_array_equal(train.images[0, 0].numpy().ravel(), expected[0, :1024])
    labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.labels.tolist() == labels and test.labels.tolist() == batches["test_batch"][1]
    assert train.classes == CIFAR10_CLASSES and train.name == "cifar10/train"


def test_cifar_missing_file(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(MitigateError) as e:
        load_cifar10(tmp_path)
    message = str(e.value)
    assert f"data_batch_3 not found in {tmp_path / 'cifar-10-batches-py'}" in message
    assert "cifar-10-python.tar.gz" in message and "set data_dir in the config" in message


def test_cifar_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MitigateError, match=r"CIFAR-10 data directory .*absent does not exist"):
        load_cifar10(tmp_path / "absent")


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({b"labels": [0]}, r"no data entry"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"2 images but labels"),
        ({b"data": np.zeros((1, 100), np.uint8), b"labels": [0]}, r"3072 values, got 100"),
        ({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}, r"uint8 \[N, 3072\]"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, r"label 12 outside"),
        ([1, 2], r"expected a dict"),
    ],
)
def test_cifar_corrupt_batch(tmp_path: Path, batch, match: str) -> None:
    write_cifar(tmp_path)
    dump_py2(batch, tmp_path / "data_batch_2")
    with pytest.raises(MitigateError, match=match) as e:
        load_cifar10(tmp_path)
    assert str(tmp_path / "data_batch_2") in str(e.value)


def test_cifar_truncated_pickle(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MitigateError, match=r"corrupt CIFAR-10 file .*test_batch: not a readable"):
        load_cifar10(tmp_path)


class _RunsCode:
    """A pickle payload that, if unpickled naively, calls ``func(*args)``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "make_payload",
    [
        lambda marker: _RunsCode(os.system, f"touch {marker}"),
        lambda marker: _RunsCode(eval, f"open({str(marker)!r}, 'w').close()"),
        lambda marker: _RunsCode(Path.touch, marker),
    ],
)
def test_hostile_pickle_is_refused_without_running(tmp_path: Path, make_payload) -> None:
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": make_payload(marker)}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(MitigateError, match=r"refusing to load .*data_batch_1: the pickle asks"):
        load_cifar10(tmp_path)
    assert not marker.exists()
    # The payload is real: a plain unpickler runs it.
    pickle.loads((tmp_path / "data_batch_1").read_bytes())
    assert marker.exists()


def test_unpickler_allows_only_numpy_arrays() -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 3, 4):
        loaded = SafeUnpickler(io.BytesIO(pickle.dumps({b"a": array}, protocol=protocol))).load()
        np.testing.assert_array_equal(loaded[b"a"], array)
    with pytest.raises(MitigateError, match=r"asks for collections.OrderedDict"):
        SafeUnpickler(io.BytesIO(pickle.dumps(__import__("collections").OrderedDict()))).load()


def test_unpickler_limits_the_allowed_callables(tmp_path: Path) -> None:
    # `_codecs.encode` may only produce latin-1 bytes, `ndarray` cannot be called directly.
    codec = b"\x80\x02c_codecs\nencode\nX\x05\x00\x00\x00helloX\x09\x00\x00\x00rot13_bad\x86R."
    (tmp_path / "codec").write_bytes(codec)
    with pytest.raises(MitigateError, match=r"not a readable pickle .*encoding 'rot13_bad'"):
        safe_load(tmp_path / "codec")
    alloc = b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a;\x85\x85R."  # ndarray((10**9,))
    (tmp_path / "alloc").write_bytes(alloc)
    with pytest.raises(MitigateError, match=r"not a readable pickle"):
        safe_load(tmp_path / "alloc")


# ------------------------------------------------------------------------------- npz


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((4, 6, 5), "hw"), ((4, 6, 5, 3), "hwc"), ((4, 3, 6, 5), "chw"), ((4, 1, 6, 5), "chw")],
)
def test_npz_layouts(tmp_path: Path, shape, layout: str) -> None:
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    y = np.array([0, 2, 1, 2])
    np.savez(tmp_path / "fog.npz", x=x, y=y)
    data = load_npz(tmp_path / "fog.npz")
    expected = {
        "hw": lambda: x[:, None],
        "hwc": lambda: x.transpose(0, 3, 1, 2),
        "chw": lambda: x,
    }[layout]()
    np.testing.assert_array_equal(data.images.numpy(), expected)
    assert data.labels.tolist() == [0, 2, 1, 2] and data.classes == ("0", "1", "2")
    assert data.name == "fog" and data.max_value == 255


def test_npz_float_classes_and_test_part(tmp_path: Path) -> None:
    x = np.array([[[0.0, 1.0], [0.5, 0.25]]] * 2, dtype=np.float32)
    np.savez(
        tmp_path / "mine.npz",
        x=x,
        y=np.array([1, 0]),
        classes=np.array(["cat", "dog"]),
        x_test=np.zeros((1, 2, 2), np.uint8),
        y_test=np.array([1]),
    )
    data, test = load_npz_pair(tmp_path / "mine.npz")
    assert data.images[0, 0].tolist() == [[0, 255], [128, 64]]
    assert data.classes == ("cat", "dog") and test is not None and test.name == "mine/test"
    assert load_dataset("npz", tmp_path / "mine.npz")[1].labels.tolist() == [1]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y": np.zeros(2, int)}, r"no array 'x' \(arrays: y\)"),
        ({"x": np.zeros((2, 4, 4)) + 2, "y": np.zeros(2, int)}, r"outside \[0, 1\]"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(3, int)}, r"integer labels \[2\]"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, -1])}, r"negative label"),
        ({"x": np.zeros((2, 5, 4, 7), np.uint8), "y": np.zeros(2, int)}, r"shape \(2, 5, 4, 7\)"),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 2]), "classes": np.array(["a"])},
            r"label 2 but only 1 classes",
        ),
    ],
)
def test_npz_bad_contents(tmp_path: Path, arrays, match: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(MitigateError, match=match) as e:
        load_npz(tmp_path / "bad.npz")
    assert str(tmp_path / "bad.npz") in str(e.value)


def test_npz_refuses_pickled_objects_and_non_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([object()]), y=np.zeros(1, int))
    with pytest.raises(MitigateError, match=r"object \(pickled\) array, which is refused"):
        load_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MitigateError, match=r"corrupt npz file .*junk.npz"):
        load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(MitigateError, match=r"single .npy array"):
        load_npz(tmp_path / "one.npy")
    with pytest.raises(MitigateError, match=r"npz file .*nope.npz not found"):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(MitigateError, match=r"is a directory; give the path of the .npz file"):
        load_npz(tmp_path)


# -------------------------------------------------------------------------- registry


def test_registry(tmp_path: Path) -> None:
    images = {"digits", "mnist", "fashion-mnist", "cifar10", "npz"}
    assert set(DATASETS) == images | {"tweets", "tweets-airline", "imdb", "text-csv"}
    data, test = load_dataset("digits")
    assert len(data) == 1797 and test is None
    write_mnist(tmp_path, gz=True)
    train, test = load_dataset("mnist", tmp_path)
    assert len(train) == 5 and test is not None and len(test) == 3
    with pytest.raises(MitigateError, match=r"unknown dataset 'svhn'; valid choices: digits"):
        load_dataset("svhn")
    with pytest.raises(MitigateError, match=r"dataset 'cifar10' needs data_dir"):
        load_dataset("cifar10")


def test_an_absurd_idx_header_reports_its_true_byte_count() -> None:
    """Dimensions whose product overflows int64 must not show a negative byte count."""
    import struct

    data = bytes([0, 0, 8, 4]) + struct.pack(">IIII", *[4_000_000_000] * 4) + b"x" * 10
    with pytest.raises(MitigateError, match=r"\(256000000000000000000000000000000000000 bytes\)"):
        parse_idx(data)
