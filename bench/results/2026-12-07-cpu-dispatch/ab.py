"""Old tree against new tree, side by side: each round runs one subprocess per tree (PYTHONPATH
pointing at it, order alternating), each timing gpugrad beside PyTorch in interleaved blocks.

    python ab.py OLD_TREE NEW_TREE [rounds]     # driver: prints a table, writes ab-raw.json
    python ab.py --one                          # one measurement of the tree on PYTHONPATH
"""

import json
import os
import statistics
import subprocess
import sys
import time


def best_per_call(fn, calls, blocks):
    fn()
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return min(times)


def interleaved(fns, calls, rounds=5, blocks=3):
    """{name: best seconds per call}, the functions timed in turn, `rounds` times."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            best[k] = min(best[k], best_per_call(fn, calls, blocks))
    return best


def one():
    import gpugrad
    from gpugrad.app.bench.suites import mlp, overhead

    assert os.path.dirname(os.path.dirname(gpugrad.__file__)) == os.environ["PYTHONPATH"]
    n = 100
    cases = overhead.overhead_cases(n, "cpu")
    out = {}
    t = interleaved({"gg rec+bwd": cases["gpugrad", "record + backward"],
                     "torch rec+bwd": cases["torch", "record + backward"],
                     "gg no grad": cases["gpugrad", "no grad"],
                     "torch no grad": cases["torch", "no grad"],
                     "gg record": cases["gpugrad", "record"]}, calls=30)
    out.update({f"{k} us/op": v / n * 1e6 for k, v in t.items()})
    for batch, calls in ((32, 30), (1024, 4)):
        steps = mlp.mlp_step_cases([784, 256, 10], batch, "cpu")
        t = interleaved({"gg": steps["gpugrad"], "torch": steps["torch"]}, calls=calls)
        out[f"mlp{batch} gg ms"] = t["gg"] * 1e3
        out[f"mlp{batch} torch ms"] = t["torch"] * 1e3
    print(json.dumps(out))


def driver(old, new, rounds):
    raw = {"old": [], "new": []}
    for r in range(rounds):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            tree = old if name == "old" else new
            env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
            res = subprocess.run([sys.executable, __file__, "--one"], env=env, check=True,
                                 capture_output=True, text=True)
            raw[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(r, name, raw[name][-1], flush=True)
    rows = {}
    for name, runs in raw.items():
        ratio = lambda run: {  # noqa: E731
            "rec+bwd gg/torch": run["gg rec+bwd us/op"] / run["torch rec+bwd us/op"],
            "no grad gg/torch": run["gg no grad us/op"] / run["torch no grad us/op"],
            "mlp32 gg/torch": run["mlp32 gg ms"] / run["mlp32 torch ms"],
            "mlp1024 gg/torch": run["mlp1024 gg ms"] / run["mlp1024 torch ms"]}
        per_run = [{**run, **ratio(run)} for run in runs]
        rows[name] = {k: (min(r[k] for r in per_run), statistics.median(r[k] for r in per_run))
                      for k in per_run[0]}
    print(f"\n{'figure':26} {'old min':>9} {'old med':>9} {'new min':>9} {'new med':>9}")
    for k in rows["old"]:
        o, n = rows["old"][k], rows["new"][k]
        print(f"{k:26} {o[0]:9.3f} {o[1]:9.3f} {n[0]:9.3f} {n[1]:9.3f}")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ab-raw.json"), "w") as f:
        json.dump(raw, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        one()
    else:
        driver(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 4)
