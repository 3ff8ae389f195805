"""--precision tf32 in `gpugrad train`: float32 with gg.backends.matmul.allow_tf32 on while
the run lasts and as it was after; off CUDA it changes nothing (NumPy has no TF32), the numbers
are float32's bit for bit, and the run says so."""

import json
import types

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from gpugrad.app import cli, training


def _on_cuda(device):
    return devices.get(device).is_cuda


def _leaves(tree, prefix=""):
    """{path: host array} of every tensor in a nested dict/list (a checkpoint)."""
    if isinstance(tree, gg.Tensor):
        return {prefix: tree.numpy()}
    items = tree.items() if isinstance(tree, dict) else (
        enumerate(tree) if isinstance(tree, list) else ())
    out = {}
    for k, v in items:
        out.update(_leaves(v, f"{prefix}/{k}"))
    return out


def _switch_seen_by_each_epoch(monkeypatch):
    """What gg.backends.matmul.allow_tf32 was as each epoch ran (a list that fills in)."""
    seen, run_epoch = [], training._run_epoch

    def recording(*args, **kwargs):
        seen.append(gg.backends.matmul.allow_tf32)
        return run_epoch(*args, **kwargs)
    monkeypatch.setattr(training, "_run_epoch", recording)
    return seen


@pytest.mark.slow
def test_train_tf32_is_float32_with_the_switch_on_and_says_so_off_cuda(tmp_path, capsys,
                                                                       monkeypatch):
    """The epochs run with the switch on and it is off again after; off CUDA the run prints
    (and writes into --json) that TF32 has no effect there, and its losses, accuracies and
    final parameters equal the fp32 run's bit for bit."""
    device = gg.default_device()
    seen = _switch_seen_by_each_epoch(monkeypatch)
    common = ["train", "--device", device, "--hidden", "16", "--epochs", "2", "--batch", "256",
              "--seed", "3"]
    runs = {}
    for precision in ("fp32", "tf32"):
        out, state = tmp_path / f"{precision}.json", tmp_path / f"{precision}.npz"
        assert cli.main(common + ["--precision", precision, "--json", str(out),
                                  "--save", str(state)]) == 0
        runs[precision] = (json.loads(out.read_text()), gg.load(state), capsys.readouterr().out)
    assert seen == [False, False, True, True]
    assert gg.backends.matmul.allow_tf32 is False
    (fp32, fp32_state, fp32_out), (tf32, tf32_state, tf32_out) = runs["fp32"], runs["tf32"]
    assert "note" not in fp32 and "no effect" not in fp32_out
    if _on_cuda(device):  # the TF32 math mode itself: a GPU run measures it
        assert "note" not in tf32 and "no effect" not in tf32_out
        return
    note = f"note: --precision tf32 has no effect on {device}"
    assert tf32["note"].startswith(note) and "these are float32's numbers" in tf32["note"]
    assert tf32["note"] in tf32_out
    key = ("epoch", "loss", "train accuracy", "test accuracy")
    assert ([[h[k] for k in key] for h in tf32["history"]]
            == [[h[k] for k in key] for h in fp32["history"]])
    a, b = _leaves(fp32_state["model"]), _leaves(tf32_state["model"])
    assert a.keys() == b.keys() and a
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def _tiny_dataset():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    return types.SimpleNamespace(train_x=x, train_y=y, test_x=x[:16], test_y=y[:16])


@pytest.mark.parametrize("before", [False, True])
def test_a_tf32_run_puts_the_switch_back_as_it_was_even_on_an_error(before, monkeypatch):
    seen = _switch_seen_by_each_epoch(monkeypatch)
    dataset = _tiny_dataset()
    gg.backends.matmul.allow_tf32 = before
    try:
        training.train(dataset, hidden=4, epochs=1, batch=16, precision="tf32")
        assert seen == [True] and gg.backends.matmul.allow_tf32 is before

        def interrupted(*args, **kwargs):
            seen.append(gg.backends.matmul.allow_tf32)
            raise KeyboardInterrupt
        monkeypatch.setattr(training, "_run_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            training.train(dataset, hidden=4, epochs=1, batch=16, precision="tf32")
        assert seen == [True, True] and gg.backends.matmul.allow_tf32 is before
    finally:
        gg.backends.matmul.allow_tf32 = False


def test_fp32_and_the_autocast_precisions_leave_the_switch_alone(monkeypatch):
    seen = _switch_seen_by_each_epoch(monkeypatch)
    try:
        for before in (False, True):
            gg.backends.matmul.allow_tf32 = before
            training.train(_tiny_dataset(), hidden=4, epochs=1, batch=16, precision="bf16")
            assert seen[-1] is before and gg.backends.matmul.allow_tf32 is before
    finally:
        gg.backends.matmul.allow_tf32 = False


@pytest.mark.slow
def test_a_checkpoint_resumes_only_in_the_precision_it_was_trained_in(tmp_path, capsys):
    device = gg.default_device()
    common = ["train", "--device", device, "--hidden", "16", "--epochs", "1", "--batch", "512"]
    saved = {p: tmp_path / f"{p}.npz" for p in ("fp32", "tf32")}
    for precision, path in saved.items():
        assert cli.main(common + ["--precision", precision, "--save", str(path)]) == 0
    capsys.readouterr()
    for now, trained in [("fp32", "tf32"), ("tf32", "fp32"), ("bf16", "tf32")]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(common + ["--precision", now, "--resume", str(saved[trained])])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert (f"argument --precision: {now} here, but {saved[trained]} was trained with "
                f"--precision {trained}") in err and "Traceback" not in err, err
    assert cli.main(common + ["--precision", "tf32", "--resume", str(saved["tf32"])]) == 0
    assert "resuming from" in capsys.readouterr().out
