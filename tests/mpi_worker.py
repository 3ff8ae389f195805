"""Run by tests/test_distributed.py under mpirun: one rank of a data-parallel job.

    mpirun -n 2 python mpi_worker.py train OUT.json   # train on shards; rank 0 compares
    mpirun -n 2 python mpi_worker.py die OUT.json     # rank 1 dies; rank 0 must not hang
    mpirun -n 2 python mpi_worker.py stuck OUT.json   # rank 1 never joins; rank 0 times out
    mpirun -n 2 python mpi_worker.py mismatch OUT.json  # ranks send different shapes/dtypes
"""

import json
import os
import sys
import time

import numpy as np

import gpugrad as gg
from gpugrad import distributed as dist

mode, out = sys.argv[1], sys.argv[2]
rank, size = dist.init()

if mode == "mismatch":  # each collective called with different shapes or dtypes per rank
    errors = {}
    cases = {
        "length": lambda: dist.all_reduce(gg.ones(4 if rank == 0 else 2, dtype="float64")),
        "dtype": lambda: dist.all_reduce(gg.ones(3, dtype="float64" if rank == 0 else "float32")),
        "widths": lambda: dist.DataParallel(gg.nn.MLP([4, 5 + rank, 2], dtype="float64")),
    }
    for name, call in cases.items():
        try:
            call()
            errors[name] = None
        except dist.DistributedError as e:
            errors[name] = str(e)
    gathered = dist._comm().gather(errors, root=0)
    if rank == 0:
        with open(out, "w") as fh:
            json.dump({"errors": gathered}, fh)
    sys.exit(0)

if mode in ("die", "stuck"):
    if rank == 1 and mode == "die":
        os._exit(3)  # gone without a word, as a crashed process is
    if rank == 1:  # alive but never joins the collective: waits until rank 0 has given up
        while not os.path.exists(out):
            time.sleep(0.05)
        sys.exit(0)
    try:
        dist.all_reduce(gg.ones(4, dtype="float64"))
        result = {"error": None}
    except dist.DistributedError as e:
        result = {"error": str(e)}
    with open(out, "w") as fh:
        json.dump(result, fh)
    sys.exit(0)


def model_and_optimizer(seed):
    gg.seed(seed)
    model = gg.nn.MLP([6, 8, 3], dtype="float64")  # on the default device (GPUGRAD_DEVICE)
    return model, gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def step(model, opt, x, y):
    with gg.autograd.record():
        loss = gg.nn.functional.cross_entropy(model(gg.tensor(x)), y) + 1e-3 * \
            gg.nn.functional.l2_penalty(model.parameters())
    loss.backward()
    return loss


rng = np.random.default_rng(0)
batches = [(rng.standard_normal((8, 6)), rng.integers(0, 3, 8)) for _ in range(5)]
model, opt = model_and_optimizer(seed=rank)  # different on each rank until the broadcast
parallel = dist.DataParallel(model)
start = {n: p.numpy().copy() for n, p in model.named_parameters()}
for x, y in batches:
    part = dist.shard(len(x))
    step(parallel, opt, x[part], y[part])
    parallel.average_gradients()
    opt.step()
trained = {n: p.numpy() for n, p in model.named_parameters()}

result = {"rank": rank, "size": size}
gathered = dist._comm().gather(trained, root=0)
starts = dist._comm().gather(start, root=0)
if rank == 0:
    # one process on the whole batch from the same (broadcast) start
    single, single_opt = model_and_optimizer(seed=0)
    for n, p in single.named_parameters():
        p.data[:] = gg.tensor(start[n], device=p.device).data
    for x, y in batches:
        step(single, single_opt, x, y)
        single_opt.step()
    result["max difference from one process"] = max(
        float(np.abs(trained[n] - p.numpy()).max()) for n, p in single.named_parameters())
    result["max difference between ranks"] = max(
        float(np.abs(g[n] - trained[n]).max()) for g in gathered for n in trained)
    result["starts equal"] = all(np.array_equal(s[n], start[n]) for s in starts for n in start)
    with open(out, "w") as fh:
        json.dump(result, fh)
