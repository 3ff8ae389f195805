"""--precision tf32 in `gpugrad train` and `gpugrad bench mlp`: float32 with
gg.backends.matmul.allow_tf32 on while the run or the step lasts and as it was after; off CUDA
it changes nothing (NumPy has no TF32), the numbers are float32's bit for bit, and the run
says so."""

import json
import types

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from gpugrad.app import cli, precisions, training
from gpugrad.app.bench import jax_baseline, torch_baseline
from gpugrad.app.bench.suites import mlp


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


def test_the_bench_steps_in_tf32_equal_float32_off_cuda_and_turn_the_switch_on(monkeypatch):
    """gpugrad's tf32 step runs whole (forward, backward, update) with the switch on and puts
    it back; off CUDA it is named for what it is and updates the weights as the fp32 step does."""
    from gpugrad.nn import functional

    device = gg.default_device()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4)
    seen, cross_entropy = [], functional.cross_entropy

    def recording(*args, **kwargs):
        seen.append(gg.backends.matmul.allow_tf32)
        return cross_entropy(*args, **kwargs)
    monkeypatch.setattr(functional, "cross_entropy", recording)
    tag = precisions.label("tf32", device)
    weights = {}
    for impl in ("gpugrad", f"gpugrad {tag}"):
        params, cases = mlp._gpugrad_cases([6, 5, 3], x, y, device, 1e-3, 0.1, precision="tf32")
        cases[impl]()
        weights[impl] = [p.numpy() for p in params]
    assert seen == [False, True] and gg.backends.matmul.allow_tf32 is False
    if _on_cuda(device):
        assert tag == "tf32"
        return
    assert tag == "tf32 (no-op off CUDA)"
    for a, b in zip(*weights.values()):
        np.testing.assert_array_equal(a, b)


def test_pytorchs_tf32_step_sets_both_switches_and_restores_them():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    seen = []

    def step():
        seen.append((matmul.allow_tf32, cudnn.allow_tf32))
        if len(seen) > 1:
            raise RuntimeError("a step that fails")
    tf32_step = torch_baseline.with_tf32(torch, step)
    tf32_step()
    assert (matmul.allow_tf32, cudnn.allow_tf32) == before
    with pytest.raises(RuntimeError, match="a step that fails"):
        tf32_step()
    assert seen == [(True, True), (True, True)]
    assert (matmul.allow_tf32, cudnn.allow_tf32) == before


def test_the_jax_baseline_has_every_bench_precision():
    """The JAX rows (a GPU's) know every precision the bench takes."""
    bench = cli.build_parser().commands["bench"]
    choices = next(a.choices for a in bench._actions if a.dest == "precision")
    assert set(choices) <= set(jax_baseline.JAX_PRECISIONS)
    assert set(training.PRECISIONS) == set(jax_baseline.JAX_PRECISIONS) - {None}


@pytest.mark.slow
def test_bench_mlp_tf32(tmp_path, capsys):
    """--precision tf32 adds each library's step with its TF32 switch on, beside its own float32
    step; off CUDA the rows say they are float32 and the run says why."""
    device = gg.default_device()
    out = tmp_path / "mlp.json"
    assert cli.main(["bench", "mlp", "--device", device, "--batch", "8", "--precision", "tf32",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    tag = precisions.label("tf32", device)
    impls = {r["impl"] for r in results["rows"]}
    assert f"gpugrad {tag}" in impls
    ours = [r for r in results["rows"] if r["impl"] == f"gpugrad {tag}"]
    assert all(r.get("time / fp32") is None or r["time / fp32"] > 0 for r in ours)
    assert all(r.get("time / fp32") is not None or "note" in r or any(
        o.get("note") for o in results["rows"] if o["batch"] == r["batch"]
        and o["model"] == r["model"]) for r in ours)
    if torch_baseline.torch_or_none() is not None:
        assert f"torch {tag}" in impls
    if _on_cuda(device):
        assert "note" not in results and f"gpugrad {tag} captured" in impls
    else:
        assert results["note"].startswith(f"note: --precision tf32 has no effect on {device}")
        assert results["note"] in printed
    assert gg.backends.matmul.allow_tf32 is False
