import json
import pathlib
import subprocess
import sys

import pytest

import gpugrad as gg
from gpugrad import cli


def _readme():
    path = pathlib.Path(__file__).parent.parent / "README.md"
    if not path.is_file():  # the copy of the tests inside an installed wheel (gpugrad selftest)
        pytest.skip("README.md is not beside these tests (they run from an installed wheel)")
    return path.read_text()


def test_info_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "info.json"
    assert cli.main(["info", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["default device"] in printed and "numpy" in report
    assert report["differentiable ops"] > 40 and report["devices"][0] == "cpu"


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "gpugrad.cli", "info"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "cuda available" in out.stdout


def test_an_unknown_device_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["info", "--device", "tpu"])
    assert exit_info.value.code == 2
    assert "gpugrad info: error: argument --device: unknown device 'tpu'" in capsys.readouterr().err


def test_readme_lists_every_op_in_the_table():
    import re

    import gpugrad as gg

    readme = _readme()
    listed = set(re.findall(r"^\| `(\w+)` \|", readme, flags=re.M))
    assert listed == set(gg.OPS), f"README op table differs: {sorted(listed ^ set(gg.OPS))}"


def test_info_reports_the_kernels(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "kernel sources" in out and "activations.cu" in out and "fused kernels" in out


def test_bench_kernels_runs_on_the_strict_device(tmp_path):
    """The launchers run under the benchmark as they will on a GPU (stand-ins for the kernels);
    PyTorch, which cannot take the strict device's arrays, gets no row there."""
    out = tmp_path / "k.json"
    assert cli.main(["bench", "kernels", "--device", "strict", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["impl"] for r in rows} == {"gpugrad", "unfused"}
    assert all(r["median_us"] > 0 for r in rows)
    # the backward from the output, as the networks run relu, has rows of its own
    assert {r["activation"] for r in rows} >= {"relu", "relu from y", "leaky_relu from y"}


def test_bench_all_prints_ratios_and_writes_json(tmp_path, capsys):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    assert cli.main(["bench", "--device", "cpu", "--json", str(out), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert result["environment"]["device"] == "cpu" and result["environment"]["numpy"]
    assert {r["suite"] for r in rows} == {"kernels", "mlp", "memory", "jacobian", "overhead"}
    overhead = {(r["impl"], r["mode"]): r for r in rows if r["suite"] == "overhead"}
    assert {m for _, m in overhead} == {"no grad", "record", "record + backward"}
    assert all(r["us per op"] > 0 for r in overhead.values())
    # recording costs more than not recording, and a backward more again
    assert (overhead["gpugrad", "no grad"]["us per op"] < overhead["gpugrad", "record"]["us per op"]
            < overhead["gpugrad", "record + backward"]["us per op"])
    kernels = [r for r in rows if r["suite"] == "kernels"]
    assert {r["activation"] for r in kernels} >= {"relu", "sigmoid", "gelu", "tanh"}
    ours = [r for r in kernels if r["impl"] == "gpugrad"]
    # a timing flagged unstable (a busy machine) carries a note and no ratio; the rest a ratio
    assert ours and all(r["median_us"] > 0 and _ratio_or_flagged(r, "% of copy") for r in ours)
    assert all(r["saved (formula)"] == r["saved (measured)"] for r in rows if r["suite"] == "memory")
    try:
        import torch  # noqa: F401

        torch_rows = [r for r in kernels if r["impl"] == "torch"]
        assert len(torch_rows) == len(ours)
        assert all(_ratio_or_flagged(r, "gpugrad time / this", others=ours) for r in torch_rows)
        mlp = [r for r in rows if r["suite"] == "mlp" and r["impl"] == "gpugrad"]
        assert mlp and all(_ratio_or_flagged(r, "gpugrad / torch", others=rows) for r in mlp)
    except ImportError:
        assert "PyTorch is not installed" in printed
    assert "% of copy" in printed and "samples/s" in printed


def test_bench_mlp_runs_at_the_batch_sizes_asked_for(tmp_path, capsys):
    """--batch picks the mlp suite's batch sizes (a target may name one the defaults lack);
    given to another suite it is refused, naming the command that takes it."""
    out = tmp_path / "mlp.json"
    assert cli.main(["bench", "mlp", "--device", "cpu", "--batch", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["batch"]) for r in rows} == {
        ("4.7 (784-256-10)", 3), ("deep (784-1024x3-10)", 3)}
    capsys.readouterr()
    assert cli.main(["bench", "kernels", "--device", "cpu", "--batch", "8"]) == 1
    assert "gpugrad bench mlp --batch 8" in capsys.readouterr().err


def _ratio_or_flagged(row, key, others=()):
    """A positive ratio, or none because this row or the one it is taken against was flagged
    unstable (its note says so)."""
    if row.get(key) is not None:
        return row[key] > 0 and "note" not in row
    partners = [o for o in others if o is not row and o.get("note")
                and all(o.get(k) == row.get(k) for k in ("activation", "n", "model", "batch"))]
    return "unstable" in row.get("note", "") or bool(partners)


def test_readme_tour_runs_as_written(capsys):
    import re

    readme = _readme()
    tour = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    exec(compile(tour, "README.md tour", "exec"), {})
    printed = capsys.readouterr().out
    # the tour makes its tensors on the default device, so that is the device it prints
    assert f"tensor([ 0.,  4.,  8., 12.], dtype=float32, device='{gg.default_device()}')" in printed
    assert "tensor(12., dtype=float32" in printed


def test_selftest_runs_the_bundled_tests_on_the_device_and_says_what_failed(tmp_path, monkeypatch,
                                                                          capsys):
    from gpugrad import selftest

    assert selftest.tests_dir() is not None and (selftest.tests_dir() / "test_ops.py").is_file()
    fake = tmp_path / "tests"
    fake.mkdir()
    (fake / "conftest.py").write_text("")
    (fake / "test_fake.py").write_text(
        "import gpugrad as gg\n"
        "def test_on_the_device():\n    assert gg.default_device() == 'strict'\n"
        "def test_on_the_cpu():\n    assert gg.default_device() == 'cpu'\n")
    monkeypatch.setattr(selftest, "tests_dir", lambda: fake)
    out = tmp_path / "selftest.json"
    assert cli.main(["selftest", "--device", "strict", "--no-bench", "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["verdict"] == "FAIL" and result["device"] == "strict"
    assert result["tests"]["passed"] == 1 and result["tests"]["failed"] == 1
    assert "test_on_the_cpu" in result["tests"]["failures"][0]
    assert "tests      FAIL  1 passed, 1 failed" in printed and "verdict    FAIL" in printed


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["train", "--batch", "0"], "argument --batch: must be at least 1, got 0"),
    (["train", "--hidden", "0"], "argument --hidden: must be at least 1, got 0"),
    (["train", "--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["train", "--momentum", "1"], "argument --momentum: must be a finite number >= 0 and < 1"),
    (["train", "--weight-decay", "-1"], "argument --weight-decay: must be a finite number >= 0"),
    (["train", "--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
    (["train", "--save", "/nonexistent-dir/m.npz"], "argument --save: the directory /nonexistent-dir does not exist"),
    (["train", "--json", "/nonexistent-dir/h.json"], "argument --json: the directory /nonexistent-dir does not exist"),
    (["train", "--plot", "/nonexistent-dir/c.png"], "argument --plot: the directory /nonexistent-dir does not exist"),
    (["train", "--plot", "curves.txt"], "argument --plot: curves.txt: the file name must end in one of"),
    (["memory", "--h", "0"], "argument --h: must be at least 1, got 0"),
    (["memory", "--batch", "0"], "argument --batch: batch sizes are comma-separated integers >= 1"),
    (["memory", "--batch", "64,,8"], "argument --batch: batch sizes are comma-separated integers >= 1"),
    (["memory", "--layers", "1"], "argument --layers: must be at least 2, got 1"),
    (["memory", "--lam", "-0.1"], "argument --lam: must be a finite number >= 0"),
    (["rnn-grads", "--steps", "0"], "argument --steps: must be at least 2, got 0"),
    (["rnn-grads", "--steps", "1"], "argument --steps: must be at least 2, got 1"),
    (["rnn-grads", "--hidden", "0"], "argument --hidden: must be at least 1, got 0"),
    (["bench", "--json", "/nonexistent-dir/b.json"], "argument --json: the directory /nonexistent-dir does not exist"),
    (["info", "--json", "/nonexistent-dir/i.json"], "argument --json: the directory /nonexistent-dir does not exist"),
    (["selftest", "--json", "/nonexistent-dir/s.json"], "argument --json: the directory /nonexistent-dir does not exist"),
    (["bench", "--device", "tpu"], "argument --device: unknown device 'tpu'"),
    (["train", "--device", "gpu:x"], "argument --device: unknown device 'gpu:x'"),
    (["memory", "--device", "npu"], "argument --device: unknown device 'npu'"),
    (["selftest", "--device", "tpu"], "argument --device: unknown device 'tpu'"),
    (["train", "--dataset", "cifar"], "argument --dataset: unknown dataset 'cifar'"),
    (["graph", "--batch", "0"], "argument --batch: must be at least 1, got 0"),
    (["graph", "--out", "/etc/passwd"], "argument --out: /etc/passwd is a file, not a folder"),
    (["graph", "--out", "/etc/passwd/figs"], "argument --out: cannot make or write the folder"),
    (["graph", "--device", "tpu"], "argument --device: unknown device 'tpu'"),
    (["train", "--dataset", "mnist:/nonexistent-dir"], "argument --dataset: mnist:/nonexistent-dir: the directory"),
])
def test_every_command_checks_its_arguments_before_any_work(argv, message, capsys, monkeypatch):
    from gpugrad import training

    def must_not_run(*args, **kwargs):
        raise AssertionError("the command started work before checking its arguments")

    for name in ("train", "load_dataset", "rnn_gradient_norms"):
        monkeypatch.setattr(training, name, must_not_run)
    monkeypatch.setattr(gg.experiments, "experiment", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"gpugrad {argv[0]}: error: {message}" in err and "usage:" in err, err
    assert "Traceback" not in err


def test_train_interrupted_keeps_the_finished_epochs_and_their_parameters(tmp_path, capsys,
                                                                          monkeypatch):
    """Ctrl-C in epoch 2: epoch 1's line was printed as it finished, the table and JSON keep
    it, and --save writes exactly epoch 1's parameters (equal to a one-epoch run's)."""
    common = ["train", "--dataset", "digits", "--layers", "2", "--batch", "256", "--seed", "3"]
    one_epoch = tmp_path / "one.npz"
    assert cli.main(common + ["--epochs", "1", "--save", str(one_epoch)]) == 0
    capsys.readouterr()
    steps_per_epoch = -(-1438 // 256)
    calls = []
    real_step = gg.optim.SGD.step

    def step_then_interrupt(self):
        calls.append(1)
        if len(calls) == steps_per_epoch + 2:  # in the middle of epoch 2
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(gg.optim.SGD, "step", step_then_interrupt)
    saved, history = tmp_path / "interrupted.npz", tmp_path / "h.json"
    code = cli.main(common + ["--epochs", "5", "--save", str(saved), "--json", str(history)])
    out = capsys.readouterr().out
    assert code == 130
    assert "interrupted during epoch 2: keeping the 1 finished epoch(s)" in out
    assert out.index("    1  ") < out.index("interrupted during epoch 2")
    record = json.loads(history.read_text())
    assert record["interrupted"] and [h["epoch"] for h in record["history"]] == [1]
    kept, reference = gg.load(saved), gg.load(one_epoch)
    assert list(kept) == list(reference)
    for name in kept:
        assert (kept[name].numpy() == reference[name].numpy()).all()


def test_train_prints_each_epoch_as_it_finishes_into_a_pipe(tmp_path):
    """Not a TTY: the lines still come as the epochs end (flushed), before the process exits."""
    script = ("import sys, gpugrad.training as t\n"
              "real = t.train\n"
              "def slow(*a, on_epoch, **k):\n"
              "    def told(model, entry):\n"
              "        on_epoch(model, entry)\n"
              "        sys.stderr.write('EPOCH-END\\n'); sys.stderr.flush()\n"
              "        if entry['epoch'] == 1: sys.stdin.readline()  # wait for the reader\n"
              "    return real(*a, on_epoch=told, **k)\n"
              "t.train = slow\n"
              "from gpugrad import cli\n"
              "cli.main(['train', '--layers', '2', '--epochs', '2', '--batch', '512'])\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while "EPOCH-END" not in proc.stderr.readline():
            assert proc.poll() is None, proc.stderr.read()
        # the process now waits inside epoch 1's callback: its line must already be readable
        lines = []
        while not any(line.startswith("    1  ") for line in lines):
            lines.append(proc.stdout.readline())
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()


def test_a_keyboard_interrupt_in_any_command_ends_without_a_traceback(capsys, monkeypatch):
    from gpugrad import training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "rnn_gradient_norms", interrupted)
    assert cli.main(["rnn-grads"]) == 130
    assert "gpugrad rnn-grads: interrupted" in capsys.readouterr().err


def test_an_unstable_timing_is_taken_again_then_flagged_never_a_ratio(monkeypatch):
    """A fn that is slow on most calls and fast on a few: the median is far above the fastest
    repeat, as on a machine busy for part of the measurement."""
    import itertools
    import time

    from gpugrad import benchmarks

    pattern = itertools.cycle([0.0, 0.004, 0.004, 0.004])

    def busy():
        delay = next(pattern)
        if delay:
            time.sleep(delay)

    t = benchmarks.timing(busy, "cpu", warmup=0, min_repeats=8, min_seconds=0)
    assert not t.stable and t.attempts == 3 and t.spread > benchmarks.UNSTABLE_FACTOR
    assert "unstable: median" in t.note() and "after 3 attempts" in t.note()
    steady = benchmarks.timing(lambda: time.sleep(0.002), "cpu", warmup=0, min_repeats=5,
                               min_seconds=0)
    assert steady.stable and steady.attempts == 1 and steady.note() is None
    # in a suite: the flagged baseline gets a note and no ratio is printed from it
    cases = {"gpugrad": lambda: time.sleep(0.002), "torch": busy}
    times, unstable = benchmarks.alternating_blocks(cases, "cpu", blocks=2, min_seconds=0)
    assert unstable == {"torch"}
    assert benchmarks.median_ratio(times, "gpugrad", "torch", unstable) is None
    assert benchmarks.median_ratio(times, "gpugrad", "gpugrad", unstable) == 1.0


def test_bench_draws_its_progress_line_only_on_a_terminal(capsys, monkeypatch):
    cli._progress(1, 2, "kernels")
    assert capsys.readouterr().err == ""  # pytest's stderr is not a TTY
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    cli._progress(2, 2, "kernels")
    assert "\r[" in capsys.readouterr().err


def test_minibatch_sweep_trains_at_each_batch_size(tmp_path, capsys):
    """Exercise 5's minibatch half: one row per batch size, the saved bytes measured per step
    and growing with the batch, fewer updates per epoch for larger batches."""
    out = tmp_path / "m.json"
    assert cli.main(["minibatch", "--batch", "4,64", "--epochs", "1", "--hidden", "16",
                     "--json", str(out)]) == 0
    assert "updates per epoch" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["batch"] for r in rows] == [4, 64]
    assert rows[0]["updates per epoch"] == -(-1438 // 4) and rows[1]["updates per epoch"] == 23
    # 64 -> 16 -> 10 (train's 3 layers, one hidden): the first linear keeps x, the second h,
    # the loss its logits and labels, all float32 but the int64 labels
    for r in rows:
        assert r["saved bytes per step"] == r["batch"] * ((64 + 16 + 10) * 4 + 8)
    assert rows[1]["saved bytes per step"] > rows[0]["saved bytes per step"]
    assert all(0 < r["test accuracy"] <= 1 and r["us per sample"] > 0 for r in rows)
