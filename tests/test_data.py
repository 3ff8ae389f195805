"""Datasets: digits, the MNIST IDX reader on small files the tests write, batches, gpugrad train."""

import json

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.app import cli
from gpugrad import data
from gpugrad.app import training


def _write_mnist(directory, n_train=20, n_test=8, gz=False):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for stem, n in (("train", n_train), ("t10k", n_test)):
        data.write_idx(directory / f"{stem}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
        data.write_idx(directory / f"{stem}-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n, dtype=np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_idx_files(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz)
    d = gg.data.load_mnist(str(tmp_path))
    assert d.train_x.shape == (20, 16) and d.test_x.shape == (8, 16)
    assert d.train_x.dtype == np.float32 and 0 <= d.train_x.min() and d.train_x.max() <= 1
    assert d.train_y.dtype == np.int64 and d.train_y.max() <= 9


def test_bad_idx_files_get_clear_errors(tmp_path):
    _write_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated or wrong file"):
        gg.data.load_mnist(str(tmp_path))
    images.write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(ValueError, match="bad IDX magic number 0x1234"):
        gg.data.load_mnist(str(tmp_path))
    images.write_bytes(raw)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with pytest.raises(ValueError, match="20 images but .* 19 labels"):
        gg.data.load_mnist(str(tmp_path))
    data.write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(20, 12, np.uint8))
    with pytest.raises(ValueError, match="digits 0..9"):
        gg.data.load_mnist(str(tmp_path))
    data.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(20, np.uint8))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        gg.data.load_mnist(str(tmp_path))
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="cannot be read as gzip"):
        data.read_idx(gz)


def test_idx_round_trip_keeps_dtype_and_shape(tmp_path):
    for arr in (np.arange(6, dtype=np.uint8).reshape(2, 3), np.array([1.5, -2.0], np.float32)):
        data.write_idx(tmp_path / "a.idx", arr)
        back = data.read_idx(tmp_path / "a.idx")
        assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_batches_cover_the_data_once_with_a_seeded_shuffle():
    x, y = np.arange(10)[:, None], np.arange(10)
    first = [b[1].tolist() for b in data.batches(x, y, 4, seed=1)]
    again = [b[1].tolist() for b in data.batches(x, y, 4, seed=1)]
    assert first == again and [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) and sum(first, []) != list(range(10))
    with pytest.raises(ValueError, match="10 inputs but 9 labels"):
        next(data.batches(x, y[:9], 4))


def test_load_digits():
    d = gg.data.load_digits()
    assert d.train_x.shape == (1438, 64) and d.test_x.shape == (359, 64)
    assert set(np.unique(d.train_y)) == set(range(10)) and d.train_x.max() <= 1


def test_train_the_4_7_mlp_on_digits_reaches_97_percent(tmp_path, capsys):
    out, plot, weights = tmp_path / "h.json", tmp_path / "c.png", tmp_path / "w.npz"
    assert cli.main(["train", "--dataset", "digits", "--layers", "2", "--epochs", "15",
                     "--json", str(out), "--plot", str(plot), "--save", str(weights)]) == 0
    history = json.loads(out.read_text())["history"]
    assert history[-1]["test accuracy"] >= 0.97, history[-1]
    assert history[-1]["loss"] < history[0]["loss"]
    assert plot.read_bytes()[:4] == b"\x89PNG" and "final test accuracy" in capsys.readouterr().out
    model = training.build_mlp(2, 64, 256, 10)  # 2 weight layers: section 4.7's network
    model.load_state_dict(gg.load(weights)["model"])  # --save writes a checkpoint


@pytest.mark.parametrize("layers", [1, 3])
def test_train_one_and_three_weight_layers_on_mnist_files(tmp_path, layers, capsys):
    _write_mnist(tmp_path, n_train=64, n_test=16, gz=True)
    assert cli.main(["train", "--dataset", f"mnist:{tmp_path}", "--layers", str(layers),
                     "--hidden", "16", "--epochs", "2", "--batch", "16"]) == 0
    assert "final test accuracy" in capsys.readouterr().out


def test_train_reports_a_bad_dataset_clearly(capsys):
    with pytest.raises(SystemExit) as exit_info:  # at parse time, before anything is loaded
        cli.main(["train", "--dataset", "imagenet"])
    assert exit_info.value.code == 2
    assert "argument --dataset: unknown dataset 'imagenet'" in capsys.readouterr().err
