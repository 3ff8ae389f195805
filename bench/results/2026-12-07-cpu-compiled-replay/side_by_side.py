"""Side by side, interleaved: the mlp suite's steps on the CPU at one batch, gg.compile's replay
with the program made lighter (tape_plan) and without, the hand-written NumPy step and JAX's jit.

    PYTHONPATH=<tree>[:<jax>] python side_by_side.py BATCH [deep]

Blocks of turns (order reversed every other block); a turn: a warm-up call, then the median of
5 repeats of n calls. Prints each block's ratios and, per pair, the median and min over blocks.
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
optimized = tape_plan.optimized
tape_plan.optimized = lambda entries, access: entries  # as recorded, every call and buffer
unplanned = mlp.mlp_step_cases(sizes, batch, "cpu")["gpugrad compiled"]
for _ in range(3):
    planned(), unplanned()
tape_plan.optimized = optimized
run = {"compiled": planned, "compiled unplanned": unplanned, "hand-written": cases["hand-written"]}
if "jax jit" in cases:
    run["jax jit"] = cases["jax jit"]
per_call = 0.0003 * max(1, batch / 32) * (8 if len(sizes) > 3 else 1)  # seconds, roughly
n = max(3, int(0.02 / per_call))
times = {k: [] for k in run}
for block in range(15):
    for k in (list(run) if block % 2 == 0 else list(run)[::-1]):
        run[k]()
        reps = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                run[k]()
            reps.append((time.perf_counter() - start) / n)
        times[k].append(statistics.median(reps))
pairs = [("compiled", "hand-written"), ("compiled unplanned", "hand-written"),
         ("compiled", "compiled unplanned")] + ([("compiled", "jax jit")] if "jax jit" in run else [])
print(f"model {sizes} batch {batch}, {n} calls a repeat; calls a replay: planned "
      f"{planned.calls}, unplanned {unplanned.calls}")
print("fastest block medians (ms): " + ", ".join(f"{k} {min(v) * 1e3:.3f}" for k, v in times.items()))
for a, b in pairs:
    ratios = [x / y for x, y in zip(times[a], times[b])]
    print(f"{a} / {b}: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}; per block " + " ".join(f"{r:.3f}" for r in ratios))
