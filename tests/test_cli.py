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
    assert cli.main(["info", "--device", "tpu"]) == 1
    assert "unknown device 'tpu'" in capsys.readouterr().err


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
    assert ours and all(r["median_us"] > 0 and r["% of copy"] > 0 for r in ours)
    assert all(r["saved (formula)"] == r["saved (measured)"] for r in rows if r["suite"] == "memory")
    try:
        import torch  # noqa: F401

        torch_rows = [r for r in kernels if r["impl"] == "torch"]
        assert len(torch_rows) == len(ours) and all(r["gpugrad time / this"] > 0 for r in torch_rows)
        mlp = [r for r in rows if r["suite"] == "mlp" and r["impl"] == "gpugrad"]
        assert mlp and all(r["gpugrad / torch"] > 0 for r in mlp)
    except ImportError:
        assert "PyTorch is not installed" in printed
    assert "% of copy" in printed and "samples/s" in printed


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
