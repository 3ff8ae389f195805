"""Datasets that work offline, and a seeded shuffling batch iterator.

load_digits(): scikit-learn's bundled 8x8 digits (the optional extra `data`).
load_mnist(path): the standard IDX files (raw or .gz), validated before use.
"""

import collections
import gzip
import os
import struct

import numpy as np

Dataset = collections.namedtuple("Dataset", "train_x train_y test_x test_y")

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_digits(test_fraction=0.2, seed=0):
    """The 1,797 8x8 digit images as float32 in [0, 1] (64 features) and int64 labels, split
    into train and test with a seeded shuffle."""
    try:
        from sklearn import datasets
    except ImportError:
        raise ImportError("load_digits needs scikit-learn, which bundles the data: "
                          "pip install 'gpugrad[data]'") from None
    bunch = datasets.load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test])


def read_idx(path):
    """One IDX file (optionally gzipped) as a NumPy array, after checking its header."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'IDX'}: {e}") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000 "
                         f"followed by a type code and the number of dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes but dimensions {dims} of {dtype} need "
                         f"{expected} (truncated or wrong file)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(directory, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{directory}: no {stem} (or {stem}.gz); expected the four "
                            f"standard MNIST IDX files")


def _pair(directory, images_stem, labels_stem):
    images = read_idx(_find(directory, images_stem))
    labels = read_idx(_find(directory, labels_stem))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_stem}: expected uint8 images of 3 dimensions, got "
                         f"{images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{labels_stem}: expected 1-dimensional uint8 labels, got "
                         f"{labels.dtype} of shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_stem} has {len(images)} images but {labels_stem} has "
                         f"{len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_stem}: labels must be digits 0..9, found {labels.max()}")
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return x, labels.astype(np.int64)


def load_mnist(path):
    """MNIST from a directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each raw or .gz)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"load_mnist: {path} is not a directory")
    train_x, train_y = _pair(path, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    test_x, test_y = _pair(path, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train images have {train_x.shape[1]} pixels but test images "
                         f"{test_x.shape[1]}")
    return Dataset(train_x, train_y, test_x, test_y)


def write_idx(path, array):
    """Write an array as an IDX file (gzipped if the name ends in .gz); used by the tests."""
    array = np.asarray(array)
    code = {np.dtype(v).newbyteorder(">"): k for k, v in _IDX_TYPES.items()}[
        array.dtype.newbyteorder(">")]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + body)


def batches(x, y, batch_size, shuffle=True, seed=None):
    """(x_batch, y_batch) NumPy pairs covering the data once; a seeded shuffle when asked."""
    if len(x) != len(y):
        raise ValueError(f"batches: {len(x)} inputs but {len(y)} labels")
    if batch_size <= 0:
        raise ValueError(f"batches: batch_size must be positive, got {batch_size}")
    order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]
