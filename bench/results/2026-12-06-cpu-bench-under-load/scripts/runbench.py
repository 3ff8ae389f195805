"""Run one `gpugrad bench SUITE --device cpu --json OUT`, then print its wall time and how many
cores other processes kept busy on average during it (/proc/stat's busy ticks less the
bench's own).  python runbench.py SUITE OUT"""

import os
import resource
import subprocess
import sys
import time


def busy_ticks():
    ticks = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4]


suite, out = sys.argv[1], sys.argv[2]
hz = os.sysconf("SC_CLK_TCK")
before, t0 = busy_ticks(), time.perf_counter()
rc = subprocess.call([sys.executable, "-m", "gpugrad.cli", "bench", suite, "--device", "cpu",
                      "--json", out])
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
own = (usage.ru_utime + usage.ru_stime) * hz
others = max(0.0, busy_ticks() - before - own) / hz / wall
print(f"# rc {rc}, wall {wall:.1f} s, other processes kept {others:.2f} cores busy on average "
      f"during the run")
