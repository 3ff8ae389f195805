"""gg.distributed: the collectives in one process, and real jobs under mpirun (two ranks
training on half a batch each end equal to one process on the whole batch; a rank that dies or
never joins makes the others fail, not hang), and a model split across devices."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import distributed as dist

from conftest import host

WORKER = pathlib.Path(__file__).with_name("mpi_worker.py")


def _mpiexec():
    """mpiexec beside this Python (a virtual environment's, from the mpich wheel), else on
    the PATH; with OpenMPI's flags for 2 ranks on fewer cores and for root."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed: pip install 'gpugrad[distributed]'")
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec: pip install 'gpugrad[distributed]' (MPICH's wheel has one)")
    version = subprocess.run([found, "--version"], capture_output=True, text=True)
    # Open MPI 5 says "Open MPI", 4 says "OpenRTE"; MPICH ("HYDRA") refuses these flags
    open_mpi = any(name in (version.stdout + version.stderr).lower()
                   for name in ("open mpi", "openrte"))
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) \
        if open_mpi else []
    return [found, *flags]


def _run(mode, tmp_path, timeout_s="60", device="cpu"):
    out = tmp_path / f"{mode}.json"
    env = dict(os.environ, GPUGRAD_DIST_TIMEOUT=timeout_s, GPUGRAD_DEVICE=device,
               OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(WORKER.parent.parent))
    proc = subprocess.run([*_mpiexec(), "-n", "2", sys.executable, str(WORKER), mode, str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.parametrize("rank_device", ["cpu", "strict"])
def test_two_ranks_on_half_a_batch_each_train_as_one_process_on_the_whole(tmp_path, rank_device):
    """On the strict test device the gradients are staged through host memory, as a GPU's are
    where NCCL cannot run."""
    proc, result = _run("train", tmp_path, device=rank_device)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["size"] == 2
    assert result["starts equal"]  # different seeds per rank, made equal by the broadcast
    assert result["max difference between ranks"] == 0.0
    assert result["max difference from one process"] <= 1e-6  # float64, 5 SGD steps


def test_a_rank_that_dies_makes_the_job_fail_not_hang(tmp_path):
    proc, _ = _run("die", tmp_path)
    assert proc.returncode != 0  # within subprocess's 120 s: no hang


def test_a_rank_that_never_joins_times_out_with_a_clear_error(tmp_path):
    proc, result = _run("stuck", tmp_path, timeout_s="2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all_reduce: the other ranks did not take part within 2 s (rank 0 of 2)" in result["error"]


def test_ranks_that_send_different_shapes_or_dtypes_all_raise(tmp_path):
    """A length, a dtype or a model's widths that differ between ranks: MPI would sum the
    buffers it was given into a wrong answer (or fail on one rank); every rank raises instead,
    naming what each sends."""
    proc, result = _run("mismatch", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for errors in result["errors"]:  # one dict per rank
        assert "all_reduce: the ranks disagree" in errors["length"]
        assert "rank 0: ('all_reduce', 'sum', ((4,), 'float64'))" in errors["length"]
        assert "rank 1: ('all_reduce', 'sum', ((2,), 'float64'))" in errors["length"]
        assert "'float32'" in errors["dtype"] and "'float64'" in errors["dtype"]
        assert "broadcast_parameters: the ranks disagree" in errors["widths"]


def test_a_timeout_that_is_not_a_number_names_the_variable(monkeypatch):
    monkeypatch.setenv("GPUGRAD_DIST_TIMEOUT", "abc")
    with pytest.raises(dist.DistributedError, match="GPUGRAD_DIST_TIMEOUT must be a positive "
                                                    "number of seconds, got 'abc'"):
        dist.timeout()


# ---------------------------------------------------------------- one process (a world of one)

@pytest.fixture
def world():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install 'gpugrad[distributed]'")
    return dist.init()


def test_a_world_of_one(world, device, monkeypatch):
    assert world == (0, 1)
    t = gg.tensor([1.0, 2.0], device=device)
    monkeypatch.setitem(dist._state, "warned_host_staging", False)
    if device == "cpu":
        assert dist.all_reduce(t) is t
    else:  # device tensors go through host memory, said once
        with pytest.warns(UserWarning, match="copied through host memory for MPI"):
            assert dist.all_reduce(t) is t
    assert host(t).tolist() == [1.0, 2.0]
    assert host(dist.all_reduce(t, op="mean")).tolist() == [1.0, 2.0]
    assert host(dist.broadcast(t, 0)).tolist() == [1.0, 2.0]
    assert dist.sum_over_ranks(3) == 3.0
    model = gg.nn.MLP([3, 2], device=device)
    dist.average_gradients(model)  # nothing to average: no error


def test_bad_collective_calls_are_named(world):
    with pytest.raises(ValueError, match="op must be 'sum' or 'mean', got 'max'"):
        dist.all_reduce(gg.ones(2), op="max")
    with pytest.raises(ValueError, match="root 1 is not a rank of a world of 1"):
        dist.broadcast(gg.ones(2), root=1)
    with pytest.raises(TypeError, match="expected a Tensor, got ndarray"):
        dist.all_reduce(np.ones(2))


def test_shards_cover_the_batch_once():
    for n in (0, 1, 7, 8):
        for size in (1, 2, 3):
            parts = [dist.shard(n, r, size) for r in range(size)]
            covered = [i for p in parts for i in range(n)[p]]
            assert covered == list(range(n))
            assert max(len(range(n)[p]) for p in parts) - min(len(range(n)[p]) for p in parts) <= 1


def test_without_mpi4py_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(dist, "_state", {"comm": None, "warned_host_staging": False})
    with pytest.raises(dist.DistributedError, match=r"needs mpi4py.*gpugrad\[distributed\]"):
        dist.init()


# ---------------------------------------------------------------- a model across devices

def test_a_pipeline_across_two_devices_gives_one_devices_gradients():
    """Stage 1 on the CPU, stage 2 on the strict test device (a second device with CuPy's
    rules) and, where there is one, on a CUDA GPU: activations move forward, gradients back,
    and both equal a one-device run."""
    x = np.random.default_rng(0).standard_normal((5, 6))
    y = np.array([0, 1, 2, 0, 1])
    splits = [("cpu", "cpu"), ("cpu", "strict")] + [("cpu", "cuda")] * gg.cuda.is_available()
    results = []
    for devices in splits:
        gg.seed(0)
        first = gg.nn.Sequential(gg.nn.Linear(6, 8, dtype="float64"), gg.nn.Tanh())
        second = gg.nn.Linear(8, 3, dtype="float64")
        model = gg.nn.pipeline((first, devices[0]), (second, devices[1]))
        with gg.autograd.record():
            loss = gg.nn.functional.cross_entropy(model(gg.tensor(x)), y)
        loss.backward()
        stages = [gg.devices.canonical_device(d) for d in devices]
        assert [p.device for p in model.parameters()] == [stages[0]] * 2 + [stages[1]] * 2
        assert all(p.grad.device == p.device for p in model.parameters())
        results.append([host(loss)] + [host(p.grad) for p in model.parameters()])
    for a, b in zip(results[0], results[1]):  # the same arithmetic: bitwise
        np.testing.assert_array_equal(a, b)
    for a, b in zip(results[0], results[2:] and results[2]):  # cuBLAS sums in its own order
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_pipeline_refuses_what_is_not_a_stage():
    with pytest.raises(TypeError, match=r"stage 0 must be a \(module, device\) pair"):
        gg.nn.pipeline(gg.nn.Linear(2, 2))


def test_train_distributed_under_mpirun_matches_one_process(tmp_path):
    """`gpugrad train --distributed` with 2 ranks: rank 0 writes the JSON, and every epoch's
    figures equal those of one process (the same batches, split and averaged)."""
    args = ["train", "--distributed", "--epochs", "2", "--hidden", "16", "--batch", "32"]
    env = dict(os.environ, GPUGRAD_DIST_TIMEOUT="60", GPUGRAD_DEVICE="cpu",
               OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(WORKER.parent.parent))
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"train{n}.json"
        proc = subprocess.run([*_mpiexec(), "-n", str(n), sys.executable, "-m", "gpugrad.app.cli",
                               *args, "--json", str(out)], capture_output=True, text=True,
                              timeout=120, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.count("final test accuracy") == 1  # rank 0 alone speaks
        assert f"data parallel: {n} rank(s)" in proc.stdout
        runs[n] = json.loads(out.read_text())["history"]
    for one, two in zip(runs[1], runs[2]):
        assert one["test accuracy"] == two["test accuracy"]
        assert one["train accuracy"] == two["train accuracy"]
        assert abs(one["loss"] - two["loss"]) < 1e-5
