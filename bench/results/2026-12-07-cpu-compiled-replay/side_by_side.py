"""Side by side, round-robin: the mlp suite's steps on the CPU at one batch, gg.compile's replay
with its program made lighter (tape_plan) and as recorded, the hand-written NumPy step and JAX's
jit (where importable).

    PYTHONPATH=<tree>[:<jax>] python side_by_side.py BATCH [deep]

The machine was shared (load 6-9 on 2 cores), so each case is timed in many short samples (k
calls each), the cases taking turns sample by sample (the order rotated every round); the
figures are each case's fastest sample and its 10th percentile, and their ratios.
"""

import statistics
import sys
import time

from gpugrad.app.bench.suites import mlp
from gpugrad.devices import tape_plan

batch = int(sys.argv[1])
sizes = [784, 1024, 1024, 1024, 10] if "deep" in sys.argv[2:] else [784, 256, 10]
cases = mlp.mlp_step_cases(sizes, batch, "cpu")
planned = cases["gpugrad compiled"]
for _ in range(3):  # records (its second call) with the plan
    planned()
optimized = tape_plan.optimized
tape_plan.optimized = lambda entries, access: entries  # as recorded: every call and buffer
unplanned = mlp.mlp_step_cases(sizes, batch, "cpu")["gpugrad compiled"]
for _ in range(3):
    unplanned()
tape_plan.optimized = optimized
run = {"compiled": planned, "compiled as recorded": unplanned,
       "hand-written": cases["hand-written"]}
if "jax jit" in cases:
    run["jax jit"] = cases["jax jit"]
for f in run.values():
    f()
per_call = 0.0003 * max(1, batch / 32) * (8 if len(sizes) > 3 else 1)  # seconds, roughly
k = max(1, int(0.003 / per_call))
rounds = max(40, int(60 / (len(run) * k * per_call * 4)))
rounds = min(rounds, 400)
samples = {name: [] for name in run}
names = list(run)
for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
        f = run[name]
        start = time.perf_counter()
        for _ in range(k):
            f()
        samples[name].append((time.perf_counter() - start) / k)


def p10(xs):
    return statistics.quantiles(xs, n=10)[0]


print(f"model {sizes} batch {batch}: {rounds} rounds of {k} call(s) a sample; calls a replay: "
      f"with the plan {planned.calls}, as recorded {unplanned.calls}")
print("ms per step, fastest / 10th percentile / median: " + "; ".join(
    f"{n} {min(v) * 1e3:.3f} / {p10(v) * 1e3:.3f} / {statistics.median(v) * 1e3:.3f}"
    for n, v in samples.items()))
for a, b in [("compiled", "hand-written"), ("compiled as recorded", "hand-written"),
             ("compiled", "compiled as recorded"), ("compiled", "jax jit")]:
    if a in samples and b in samples:
        print(f"{a} / {b}: fastest {min(samples[a]) / min(samples[b]):.3f}, "
              f"10th percentile {p10(samples[a]) / p10(samples[b]):.3f}")
