"""Step time of data-parallel training over MPI: run under mpirun with 1, 2, ... ranks.

    mpirun -n 2 python bench/distributed_scaling.py [global batch] [steps]

Each rank trains the deep MLP (784-1024x3-10, float32, SGD) on its shard of a fixed global
batch and averages gradients after each backward (gg.distributed); rank 0 prints the median
milliseconds per step, and how much of it the gradient all-reduce took.
"""

import statistics
import sys
import time

import numpy as np

import gpugrad as gg
from gpugrad import distributed as dist

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 256
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
rank, size = dist.init()
gg.seed(0)
model = dist.DataParallel(gg.nn.MLP([784, 1024, 1024, 1024, 10]))
opt = gg.optim.SGD(model.parameters(), lr=0.01)
rng = np.random.default_rng(0)
x_all = rng.standard_normal((batch, 784)).astype(np.float32)
y_all = rng.integers(0, 10, batch)
part = dist.shard(batch)
x, y = gg.tensor(x_all[part]), y_all[part]
step_times, reduce_times = [], []
for i in range(steps + 3):
    t0 = time.perf_counter()
    with gg.autograd.record():
        loss = gg.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    t1 = time.perf_counter()
    model.average_gradients()
    t2 = time.perf_counter()
    opt.step()
    if i >= 3:  # warm-up steps left out
        step_times.append(time.perf_counter() - t0)
        reduce_times.append(t2 - t1)
if rank == 0:
    print(f"ranks {size}, global batch {batch}: {statistics.median(step_times) * 1e3:.1f} ms "
          f"per step, of which all-reduce {statistics.median(reduce_times) * 1e3:.1f} ms")
