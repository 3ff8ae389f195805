import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.app import cli
from gpugrad.app.cli import bench as bench_command
from gpugrad.app.cli import plotting, refusals
from gpugrad import recording
from gpugrad.app import experiments, training
from gpugrad.app.bench import jax_baseline


def _readme():
    path = pathlib.Path(__file__).parents[2] / "README.md"
    if not path.is_file():  # the copy of the tests inside an installed wheel (gpugrad selftest)
        pytest.skip("README.md is not beside these tests (they run from an installed wheel)")
    return path.read_text()


@pytest.mark.slow
def test_info_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "info.json"
    assert cli.main(["info", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["default device"] in printed and "numpy" in report
    assert report["differentiable ops"] > 40 and report["devices"][0] == "cpu"


@pytest.mark.slow
def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "gpugrad.app.cli", "info"], capture_output=True, text=True)
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


@pytest.mark.slow
def test_info_reports_the_kernels(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "kernel sources" in out and "activations.cu" in out and "fused kernels" in out


@pytest.mark.slow
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


def test_an_empty_plot_panel_says_why(tmp_path, monkeypatch):
    """A suite whose every ratio was withheld (a loaded machine) draws a panel with the reason,
    not a blank one."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install 'gpugrad[plot]'")
    from gpugrad.app.bench import table

    rows = [{"suite": "jacobian", "shape (m, n)": "8x64", "impl": "gpugrad rev",
             "gpugrad / torch": None, "note": "unstable (machine loaded): yardstick 3.0x; no ratio"}]
    texts = []
    real_text = __import__("matplotlib.axes", fromlist=["Axes"]).Axes.text

    def noting(ax, x, y, s, *args, **kwargs):
        texts.append(s)
        return real_text(ax, x, y, s, *args, **kwargs)
    monkeypatch.setattr("matplotlib.axes.Axes.text", noting)
    path = tmp_path / "empty.png"
    plotting.plot_bench(rows, ["jacobian"], str(path), "cpu")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert texts == [__import__("textwrap").fill(table.why_no_ratio(rows, "gpugrad / torch"), 100)]
    assert texts[0].startswith("no gpugrad / torch: 1 row(s) flagged, e.g. unstable (machine")


@pytest.mark.slow
def test_bench_all_prints_ratios_and_writes_json(tmp_path, capsys):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    assert cli.main(["bench", "--device", "cpu", "--json", str(out), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert result["environment"]["device"] == "cpu" and result["environment"]["numpy"]
    assert {r["suite"] for r in rows} == {"kernels", "mlp", "memory", "jacobian", "overhead",
                                          "einsum", "rnn"}
    assert {r["layer"] for r in rows if r["suite"] == "rnn" and r["impl"] == "gpugrad"} == {
        "RNN", "LSTM", "GRU"}
    einsum = {(r["problem"].split(" ")[0], r["impl"], r["mode"]) for r in rows if r["suite"] == "einsum"}
    assert {("batched", "gpugrad", "forward + backward"), ("bilinear,", "numpy", "forward")} <= einsum
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
        ours = [r for r in rows if r["suite"] == "einsum" and r["impl"] == "gpugrad"]
        assert len(ours) == 4 and all(_ratio_or_flagged(r, "gpugrad / torch") for r in ours)
    except ImportError:
        assert "PyTorch is not installed" in printed
    assert "% of copy" in printed and "samples/s" in printed


@pytest.mark.slow
def test_bench_mlp_runs_at_the_batch_sizes_asked_for(tmp_path, capsys):
    """--batch picks the mlp suite's batch sizes (a target may name one the defaults lack);
    given to another suite it is refused, naming the command that takes it."""
    out = tmp_path / "mlp.json"
    assert cli.main(["bench", "mlp", "--device", "cpu", "--batch", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["batch"]) for r in rows} == {
        ("4.7 (784-256-10)", 3), ("deep (784-1024x3-10)", 3)}
    # JAX is optional: its row is there where it is installed, and the run says when it is not
    jax_installed = jax_baseline.version() is not None
    assert any(r["impl"] == "jax jit" for r in rows) == jax_installed
    assert ("no 'jax jit' row" in capsys.readouterr().out) == (not jax_installed)
    assert cli.main(["bench", "kernels", "--device", "cpu", "--batch", "8"]) == 1
    assert "gpugrad bench mlp --batch 8" in capsys.readouterr().err


def test_the_jax_row_is_left_out_where_jax_cannot_be_imported(monkeypatch):
    from gpugrad.app.bench.suites import mlp as mlp_suite

    cases = mlp_suite.mlp_step_cases([8, 4, 2], 4, "cpu")
    assert ("jax jit" in cases) == (jax_baseline.version() is not None)
    if "jax jit" in cases:
        cases["jax jit"]()  # it runs on the CPU
    monkeypatch.setitem(sys.modules, "jax", None)  # as if JAX were not installed
    assert "jax jit" not in mlp_suite.mlp_step_cases([8, 4, 2], 4, "cpu")


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


@pytest.mark.slow
def test_selftest_runs_the_bundled_tests_on_the_device_and_says_what_failed(tmp_path, monkeypatch,
                                                                          capsys):
    from gpugrad.app import selftest

    assert selftest.tests_dir() is not None and (selftest.tests_dir() / "ops" / "test_ops.py").is_file()
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
    (["train", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["minibatch", "--seed", str(2**32)], "argument --seed: must be at most 4294967295"),
    (["rnn-grads", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["train", "--layers", "4"], "argument --layers: invalid choice: 4"),
    (["train", "--layers", "0"], "argument --layers: invalid choice: 0"),
    (["train", "--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    (["train", "--resume", "/nonexistent-dir/c.npz"], "argument --resume: /nonexistent-dir/c.npz does not exist"),
    (["graph", "--out", "/proc/gpugrad-figs"], "argument --out: cannot make or write the folder /proc/gpugrad-figs (/proc takes no new files"),
    (["train", "--json", "/proc/h.json"], "argument --json: the directory /proc is not writable"),
])
def test_every_command_checks_its_arguments_before_any_work(argv, message, capsys, monkeypatch):

    if any(a.startswith("/proc") for a in argv) and not pathlib.Path("/proc/self").is_dir():
        pytest.skip("no /proc here: a folder that takes no new files is Linux's /proc")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the command started work before checking its arguments")

    for name in ("train", "load_dataset", "rnn_gradient_norms"):
        monkeypatch.setattr(training, name, must_not_run)
    monkeypatch.setattr(experiments, "experiment", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"gpugrad {argv[0]}: error: {message}" in err and "usage:" in err, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_train_interrupted_keeps_the_finished_epochs_and_their_parameters(tmp_path, capsys,
                                                                          monkeypatch):
    """Ctrl-C in epoch 2: epoch 1's line was printed as it finished, the table and JSON keep
    it, and --save writes exactly epoch 1's parameters (equal to a one-epoch run's)."""
    common = ["train", "--dataset", "digits", "--layers", "1", "--batch", "256", "--seed", "3"]
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
    assert kept["epoch"] == reference["epoch"] == 1
    assert list(kept["model"]) == list(reference["model"])
    for name in kept["model"]:
        assert (kept["model"][name].numpy() == reference["model"][name].numpy()).all()


@pytest.mark.slow
def test_train_prints_each_epoch_as_it_finishes_into_a_pipe(tmp_path):
    """Not a TTY: the lines still come as the epochs end (flushed), before the process exits."""
    script = ("import sys, gpugrad.app.training as t\n"
              "real = t.train\n"
              "def slow(*a, on_epoch, **k):\n"
              "    def told(model, entry):\n"
              "        on_epoch(model, entry)\n"
              "        sys.stderr.write('EPOCH-END\\n'); sys.stderr.flush()\n"
              "        if entry['epoch'] == 1: sys.stdin.readline()  # wait for the reader\n"
              "    return real(*a, on_epoch=told, **k)\n"
              "t.train = slow\n"
              "from gpugrad.app import cli\n"
              "cli.main(['train', '--layers', '1', '--epochs', '2', '--batch', '512'])\n")
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

    from gpugrad.app.bench import timing

    pattern = itertools.cycle([0.0, 0.004, 0.004, 0.004])

    def busy():
        delay = next(pattern)
        if delay:
            time.sleep(delay)

    t = timing.timing(busy, "cpu", warmup=0, min_repeats=8, min_seconds=0)
    assert not t.stable and t.attempts == 3 and t.spread > timing.UNSTABLE_FACTOR
    assert "unstable: median" in t.note() and "after 3 attempts" in t.note()
    steady = timing.timing(lambda: time.sleep(0.002), "cpu", warmup=0, min_repeats=5,
                               min_seconds=0)
    assert steady.stable and steady.attempts == 1 and steady.note() is None
    # in a suite: the flagged baseline gets a note and no ratio is printed from it
    cases = {"gpugrad": lambda: time.sleep(0.002), "torch": busy}
    times, unstable = timing.alternating_blocks(cases, "cpu", blocks=2, min_seconds=0)
    assert unstable == {"torch"}
    assert timing.median_ratio(times, "gpugrad", "torch", unstable) is None
    assert timing.median_ratio(times, "gpugrad", "gpugrad", unstable) == 1.0


def test_bench_draws_its_progress_line_only_on_a_terminal(capsys, monkeypatch):
    bench_command.progress(1, 2, "kernels")
    assert capsys.readouterr().err == ""  # pytest's stderr is not a TTY
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bench_command.progress(2, 2, "kernels")
    assert "\r[" in capsys.readouterr().err


@pytest.mark.slow
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
    # 64 -> 16 -> 10 (2 weight layers, the default): the first linear keeps x, the second h,
    # the loss its logits and labels, all float32 but the int64 labels
    for r in rows:
        assert r["saved bytes per step"] == r["batch"] * ((64 + 16 + 10) * 4 + 8)
    assert rows[1]["saved bytes per step"] > rows[0]["saved bytes per step"]
    assert all(0 < r["test accuracy"] <= 1 and r["us per sample"] > 0 for r in rows)


# ---------------------------------------------------------------------------- user lines


def test_user_line_names_the_tests_shipped_inside_the_package_not_its_own_modules():
    """A wheel ships the tests as gpugrad/_tests: their lines are the user's lines, while the
    frames of gpugrad's own modules are still skipped (note_lines, detect_anomaly)."""
    package = pathlib.Path(recording._PACKAGE_DIR)
    own_module = str(package / "a_module_of_gpugrad.py")
    shipped_test = str(package / "_tests" / "test_shipped.py")
    scope = {"gg": gg}
    exec(compile("def helper(x):\n    return (x * x).sum()\n", own_module, "exec"), scope)
    exec(compile("def test_body(x):\n    return helper(x)\n", shipped_test, "exec"), scope)
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    with gg.autograd.note_lines(), gg.autograd.record():
        y = scope["test_body"](x)
    lines = [n.line for n in gg.graph_of(y).nodes]
    assert lines and all(line.startswith(f"{shipped_test}:2 in test_body") for line in lines), lines


def _fake_tests(tmp_path, body):
    fake = tmp_path / "tests"
    fake.mkdir()
    (fake / "conftest.py").write_text("")
    (fake / "test_fake.py").write_text(body)
    return fake


@pytest.mark.slow
def test_selftest_shows_its_progress_on_stderr_and_keeps_stdout_one_screen(tmp_path, monkeypatch,
                                                                         capsys):
    from gpugrad.app import selftest

    fake = _fake_tests(tmp_path, "def test_one():\n    pass\ndef test_two():\n    pass\n")
    monkeypatch.setattr(selftest, "tests_dir", lambda: fake)
    assert cli.main(["selftest", "--device", "strict", "--no-bench"]) == 0
    captured = capsys.readouterr()
    assert "selftest: running 2 tests in 1 files on strict" in captured.err
    assert "selftest: 2/2 tests, 0 failed" in captured.err and "(test_fake.py done)" in captured.err
    assert "selftest:" not in captured.out and captured.out.rstrip().endswith("verdict    PASS")


@pytest.mark.slow
def test_selftest_no_slow_leaves_out_the_tests_marked_slow(tmp_path, monkeypatch):
    from gpugrad.app import selftest

    fake = _fake_tests(tmp_path, "import pytest\n"
                                 "def test_quick():\n    pass\n"
                                 "@pytest.mark.slow\n"
                                 "def test_end_to_end():\n    assert False\n")
    (fake / "conftest.py").write_text(
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'slow: end to end')\n")
    monkeypatch.setattr(selftest, "tests_dir", lambda: fake)
    out = tmp_path / "quick.json"
    assert cli.main(["selftest", "--device", "strict", "--no-bench", "--no-slow",
                     "--json", str(out)]) == 0
    assert json.loads(out.read_text())["tests"]["passed"] == 1
    assert cli.main(["selftest", "--device", "strict", "--no-bench", "--json", str(out)]) == 1
    assert json.loads(out.read_text())["tests"]["failed"] == 1


def test_selftest_without_pytest_says_incomplete_at_once_without_the_benchmark(monkeypatch, capsys):
    from gpugrad.app import selftest

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran although the tests could not")

    monkeypatch.setattr(selftest, "short_benchmark", must_not_run)
    monkeypatch.setitem(sys.modules, "pytest", None)  # `import pytest` now fails
    assert cli.main(["selftest", "--device", "strict"]) == 2
    out = capsys.readouterr().out
    assert "tests      NOT RUN: pytest is not installed: pip install 'gpugrad[test]'" in out
    assert "benchmark  NOT RUN: the tests could not run" in out
    assert out.rstrip().endswith("verdict    INCOMPLETE")


@pytest.mark.skipif(gg.cuda.is_available(), reason="needs a machine where CUDA is unusable")
def test_selftest_on_an_unusable_device_is_incomplete_not_a_failure(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert cli.main(["selftest", "--device", "cuda", "--json", str(out)]) == 2
    printed = capsys.readouterr().out
    assert "tests      NOT RUN: device 'cuda:0' requested but" in printed
    assert "verdict    INCOMPLETE" in printed and json.loads(out.read_text())["verdict"] == "INCOMPLETE"


@pytest.mark.parametrize("argv, missing, message", [
    (["train", "--distributed"], "mpi4py",
     "--distributed needs mpi4py, which is not installed: pip install 'gpugrad[distributed]'"),
    (["train", "--plot", "curves.png"], "matplotlib",
     "--plot needs matplotlib, which is not installed: pip install 'gpugrad[plot]'"),
    (["train"], "sklearn", "the digits dataset (--dataset digits, the default) needs "
                           "scikit-learn, which is not installed: pip install 'gpugrad[data]'"),
    (["minibatch"], "sklearn", "needs scikit-learn, which is not installed"),
    (["memory", "--compare-torch"], "torch",
     "--compare-torch needs PyTorch, which is not installed: pip install torch==2.13.0"),
    (["rnn-grads", "--plot", "g.svg"], "matplotlib", "--plot needs matplotlib"),
    (["train", "--device", "cuda"], "cupy", "requested but CuPy is not installed"),
])
def test_a_missing_extra_is_one_line_and_exit_status_2(argv, missing, message, monkeypatch,
                                                        capsys, tmp_path):

    if missing == "cupy" and gg.cuda.is_available():
        pytest.skip("CuPy is installed and usable here")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the command started work without what it needs")

    for name in ("train", "load_dataset", "rnn_gradient_norms", "minibatch_sweep"):
        monkeypatch.setattr(training, name, must_not_run)
    monkeypatch.setattr(experiments, "experiment", must_not_run)
    monkeypatch.setitem(sys.modules, missing, None)  # importing it now fails
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpugrad {argv[0]}: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_every_option_shows_its_default_and_layers_means_weight_layers_everywhere():
    parser = cli.build_parser()
    for name, command in parser.commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or action.default is argparse.SUPPRESS:
                continue  # a positional, --help
            if action.default is None or action.default is False:
                continue  # off unless given: nothing to show
            shown = formatter._expand_help(action)  # as --help prints it
            assert "default" in shown, (name, action.option_strings, shown)
    for name in ("train", "minibatch", "memory"):  # one meaning of --layers, said one way
        command = parser.commands[name]
        layers = next(a for a in command._actions if "--layers" in a.option_strings)
        shown = command._get_formatter()._expand_help(layers)
        assert shown.startswith("weight layers: 2 is section 4.7's network (one hidden layer)")
        assert shown.endswith("(default: 2)") and layers.default == 2


@pytest.mark.slow
def test_train_layers_counts_weight_layers_and_2_is_the_4_7_network(tmp_path):

    counts = {layers: sum(isinstance(m, gg.nn.Linear)
                          for m in training.build_mlp(layers, 64, 16, 10)._modules.values())
              for layers in (1, 2, 3)}
    assert counts == {1: 1, 2: 2, 3: 3}
    saved = tmp_path / "c.npz"
    assert cli.main(["train", "--layers", "2", "--hidden", "16", "--epochs", "1", "--batch",
                     "512", "--save", str(saved)]) == 0
    shapes = [tuple(t.shape) for t in gg.load(saved)["model"].values()]
    assert shapes == [(16, 64), (16,), (10, 16), (10,)]  # W1, b1, W2, b2 of section 4.7


@pytest.mark.parametrize("argv, option", [
    (["train", "--hidden", "1000000000"], "--hidden"),
    (["train", "--batch", "1000000000"], "--batch"),
    (["minibatch", "--hidden", "1000000000"], "--hidden"),
    (["memory", "--h", "100000000"], "--h"),
    (["memory", "--d", "100000000"], "--d"),
    (["memory", "--batch", "1,100000000"], "--batch"),
    (["graph", "--h", "100000000"], "--h"),
    (["rnn-grads", "--hidden", "100000"], "--hidden"),
    (["bench", "mlp", "--batch", "100000000"], "--batch"),
])
def test_a_command_that_cannot_fit_in_memory_is_refused_before_allocating(argv, option, capsys,
                                                                          monkeypatch):
    """The estimate comes from shapes alone (the meta device); the refusal names the option,
    the estimate and the memory available, as an argparse error (status 2)."""
    from gpugrad.app.bench import suites

    def must_not_run(*args, **kwargs):
        raise AssertionError("the command started work although it cannot fit")

    for name in ("train", "rnn_gradient_norms", "minibatch_sweep"):
        monkeypatch.setattr(training, name, must_not_run)
    monkeypatch.setattr(experiments, "experiment", must_not_run)
    monkeypatch.setattr(experiments, "graph_4_7", must_not_run)
    monkeypatch.setitem(suites.SUITES, "mlp", must_not_run)
    monkeypatch.setattr(refusals, "available_memory", lambda device: (8 << 30, "as the test says"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"gpugrad {argv[0]}: error: argument {option}: " in err, err
    assert "needs at least" in err and "has 8.0 GiB available (as the test says)" in err
    assert "Traceback" not in err


def test_available_memory_is_read_from_the_system():
    free, source = refusals.available_memory("cpu")
    assert free is not None and free > 0, source
    if pathlib.Path("/proc/meminfo").is_file():
        line = next(ln for ln in pathlib.Path("/proc/meminfo").read_text().splitlines()
                    if ln.startswith("MemAvailable:"))
        assert abs(free - int(line.split()[1]) * 1024) < 1 << 30
        assert source == "MemAvailable in /proc/meminfo"


def _train_history(argv, tmp_path, name):
    out = tmp_path / f"{name}.json"
    assert cli.main(argv + ["--json", str(out)]) == 0
    return json.loads(out.read_text())["history"]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_resumed_from_a_checkpoint_equals_an_uninterrupted_run(optimizer, tmp_path, capsys):
    """3 epochs, saved, then resumed for 2: the same losses, accuracies and final parameters
    and optimizer state as 5 epochs in one run, bit for bit (momentum SGD and Adam)."""
    common = ["train", "--hidden", "16", "--batch", "128", "--optimizer", optimizer,
              "--weight-decay", "1e-4", "--seed", "5"]
    five, three, resumed = (tmp_path / f"{n}.npz" for n in ("five", "three", "resumed"))
    whole = _train_history(common + ["--epochs", "5", "--save", str(five)], tmp_path, "whole")
    first = _train_history(common + ["--epochs", "3", "--save", str(three)], tmp_path, "first")
    rest = _train_history(common + ["--epochs", "2", "--resume", str(three),
                                    "--save", str(resumed)], tmp_path, "rest")
    assert "resuming from" in capsys.readouterr().out
    key = ("epoch", "loss", "train accuracy", "test accuracy")
    assert [[h[k] for k in key] for h in first + rest] == [[h[k] for k in key] for h in whole]
    a, b = gg.load(five), gg.load(resumed)
    assert a["epoch"] == b["epoch"] == 5 and len(b["history"]) == 5
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for part in ("model", "optimizer"):
        flat_a, flat_b = _leaves(a[part]), _leaves(b[part])
        assert flat_a.keys() == flat_b.keys() and flat_a
        for name in flat_a:
            assert np.array_equal(flat_a[name], flat_b[name]), (part, name)


def _leaves(tree, prefix=""):
    """{path: host array} of every tensor or array in a nested dict/list."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree.numpy()} if isinstance(tree, gg.Tensor) else (
            {prefix: tree} if isinstance(tree, np.ndarray) else {})
    out = {}
    for k, v in items:
        out.update(_leaves(v, f"{prefix}/{k}"))
    return out


@pytest.mark.slow
def test_train_refuses_to_resume_what_it_cannot_continue_exactly(tmp_path, capsys):
    saved, plain = tmp_path / "c.npz", tmp_path / "plain.npz"
    assert cli.main(["train", "--hidden", "16", "--epochs", "1", "--batch", "512",
                     "--save", str(saved)]) == 0
    gg.save({"w": gg.zeros(3)}, plain)
    capsys.readouterr()
    for argv, message in [
        (["--hidden", "32", "--resume", str(saved)],
         f"argument --hidden: 32 here, but {saved} was trained with --hidden 16"),
        (["--hidden", "16", "--optimizer", "adam", "--resume", str(saved)],
         f"argument --optimizer: adam here, but {saved} was trained with --optimizer sgd"),
        (["--resume", str(plain)],
         f"argument --resume: {plain}: it is not a checkpoint written by gpugrad train --save"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["train", "--epochs", "1", "--batch", "512"] + argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


@pytest.mark.slow
def test_bench_mlp_under_autocast(tmp_path, capsys):
    """--precision bf16 adds the step under gg.autocast (and torch.autocast beside it, where
    PyTorch is installed), each with its time over its own library's float32 step; given to
    another suite it is refused, naming the command that takes it."""
    out = tmp_path / "mlp.json"
    assert cli.main(["bench", "mlp", "--device", "cpu", "--batch", "8", "--precision", "bf16",
                     "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    impls = {r["impl"] for r in rows}
    assert "gpugrad bf16" in impls
    ours = [r for r in rows if r["impl"] == "gpugrad bf16"]
    assert all(_ratio_or_flagged(r, "time / fp32") for r in ours)
    try:
        import torch  # noqa: F401

        assert "torch bf16" in impls
        assert all(_ratio_or_flagged(r, "gpugrad / torch", others=rows) for r in ours)
    except ImportError:
        pass
    capsys.readouterr()
    assert cli.main(["bench", "kernels", "--device", "cpu", "--precision", "bf16"]) == 1
    assert "gpugrad bench mlp --precision bf16" in capsys.readouterr().err


def test_the_rnn_suites_compiled_step_replays(device):
    """The rnn suite's 'gpugrad compiled' row is the eager step under gg.compile: it records
    on its second call and replays from its third (on the CPU)."""
    from gpugrad.app.bench.suites import rnn

    for kind in ("RNN", "LSTM"):
        compiled = rnn.rnn_step_cases(kind, 3, 2, 8, device)["gpugrad compiled"]
        for _ in range(3):
            compiled()
        assert compiled.replays == 1 or device != "cpu"


def test_the_rnn_suites_models_compute_what_pytorchs_do():
    """The rnn suite times the same model in both libraries: gpugrad's layer and PyTorch's
    layer and cell loop, from the weights the suite copies, give the same outputs."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    import numpy as np

    import gpugrad as gg
    from gpugrad import nn

    x = np.random.default_rng(0).standard_normal((5, 3, 28)).astype(np.float32)
    for kind in ("RNN", "LSTM", "GRU"):
        gg.seed(0)
        layer = getattr(nn, kind)(28, 16)
        ours = layer(gg.tensor(x))[0].numpy()
        theirs = getattr(torch.nn, kind)(28, 16)
        with torch.no_grad():
            for name, p in layer.named_parameters():
                getattr(theirs, f"{name}_l0").copy_(torch.from_numpy(p.numpy()))
        np.testing.assert_allclose(ours, theirs(torch.from_numpy(x))[0].detach().numpy(), atol=1e-6)
