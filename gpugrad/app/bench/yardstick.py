"""The yardstick read beside every timed turn: other processes' load, a fixed workload's speed
and PyTorch's thread pool."""

import os
import time

import numpy as np

from gpugrad.app.bench import torch_baseline


class Yardstick:
    """Two readings beside every turn: how many cores other processes kept busy, and how slow a
    fixed single-threaded NumPy workload ran against its quickest.

    Other processes' cores: the CPU time the whole machine spent (/proc/stat: user, nice,
    system, irq, softirq and steal, the last a VM's host taking the CPU) less this process's
    own (/proc/self/stat, every thread, so PyTorch's and OpenBLAS's spinning workers count as
    ours), over the wall time between two readings. This is the reading that matters: what
    slows a baseline for a whole run is another process holding a core, which stalls a thread
    pool (every worker must run before a call returns: PyTorch's kernels read 8-12 ms, and
    with 0.4 of a core taken PyTorch's relu backward runs 3x its time), while a
    single-threaded workload moves to the free core and reads as quiet. A workload spread over
    every core reads anywhere from 1x to 3.6x its quickest on a free 2-core VM (a sleeping
    vCPU is slow to wake), so no tolerance tells load from quiet; the counters read the cause
    itself, cost two file reads, and need no quiet machine to calibrate.

    The workload (np.sin over 16K cached doubles, 4 passes, the quicker of two runs, ~1 ms)
    sees what the counters cannot: a CPU slower than it was (a VM's neighbours on the same
    physical core, a lower clock), and everything where /proc is missing (not Linux). Its
    readings on a free machine lie within 1.3x of its quickest.

    Where PyTorch is installed, a probe of its thread pool (the quickest of 5 adds of 2^16
    floats, ~5 us, which take both its threads) is read too, and counts for PyTorch's turns
    (cases named torch...): under a light load (a process spinning 40 ms in 100, 0.26 cores on
    average) PyTorch's relu backward read 3x its time in blocks where no other process was
    counted, its pool waiting for a worker, and the probe read so too; on a free machine it
    lies within 1.5x of its quickest."""

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.proc = self._counters() is not None
        self._src = np.random.default_rng(0).standard_normal(16384)
        self._dst = np.empty_like(self._src)
        self.quickest = min(self._workload() for _ in range(7))
        torch = torch_baseline.torch_or_none()
        if torch is not None:  # PyTorch's pool: an add of 2^16 floats takes both its threads
            a, b, out = torch.ones(2**16), torch.ones(2**16), torch.empty(2**16)
            self._pool_call = lambda: torch.add(a, b, out=out)
            self.pool_quickest = min(self._pool() for _ in range(5))
        else:
            self._pool_call = self.pool_quickest = None

    @staticmethod
    def _counters():
        """(machine's busy ticks, this process's ticks), or None without /proc."""
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces
        except (OSError, ValueError, IndexError):
            return None
        return sum(ticks) - ticks[3] - ticks[4], int(own[11]) + int(own[12])

    def _workload(self):
        t0 = time.perf_counter()
        for _ in range(4):
            np.sin(self._src, out=self._dst)
        return time.perf_counter() - t0

    def _pool(self):
        """The quickest of 5 calls of the pool probe, back to back (seconds)."""
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            self._pool_call()
            best = min(best, time.perf_counter() - t0)
        return best

    def reading(self):
        """A reading now (wall clock, counters, workload seconds, pool probe seconds); load()
        and slowdown() compare two."""
        seconds = min(self._workload(), self._workload())
        self.quickest = min(self.quickest, seconds)
        pool = None
        if self._pool_call is not None:
            pool = self._pool()
            self.pool_quickest = min(self.pool_quickest, pool)
        return time.perf_counter(), self._counters() if self.proc else None, seconds, pool

    def load(self, earlier, later):
        """Cores other processes kept busy between two readings (0.0 without /proc)."""
        wall = later[0] - earlier[0]
        if earlier[1] is None or later[1] is None or wall <= 0:
            return 0.0
        machine = later[1][0] - earlier[1][0]
        own = later[1][1] - earlier[1][1]
        return max(0.0, machine - own) / self.tick / wall

    def slowdown(self, earlier, later):
        """The slower of the workload's two readings over its quickest."""
        return max(earlier[2], later[2]) / self.quickest

    def pool_slowdown(self, earlier, later):
        """The slower of the pool probe's two readings over its quickest (1.0 without
        PyTorch)."""
        if self._pool_call is None:
            return 1.0
        return max(earlier[3], later[3]) / self.pool_quickest
