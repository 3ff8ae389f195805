"""The measurements behind `gpugrad bench` and the pytest-benchmark suites in bench/.

Every figure is taken beside its baseline in the same run (fused vs unfused, gpugrad vs
PyTorch, a device-to-device copy for bandwidth), as the median of many repeats after warm-up;
on CUDA each repeat is timed with CUDA events around the region. The cases take turns in
blocks, and a ratio is printed only from blocks a yardstick found unloaded and when its two
readings agree (Blocks, Yardstick); otherwise the row says why it has none.
"""

import collections
import datetime
import functools
import os
import platform
import statistics
import textwrap
import time

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.devices.cuda import kernels

# ---------------------------------------------------------------------------- timing


# A measurement whose median is more than this many times its fastest repeat caught a machine
# busy for part of it: it is taken again, and if it stays so it is flagged and no ratio is
# printed from it. A machine busy for all of it passes this guard: see "robust ratios" below.
UNSTABLE_FACTOR = 3.0


class Timing:
    """The repeats of one measurement: median and fastest seconds, and whether it is stable."""

    def __init__(self, times, attempts=1):
        self.times = times
        self.median = statistics.median(times)
        self.fastest = min(times)
        self.attempts = attempts

    @property
    def spread(self):
        """median / fastest repeat (1.0: every repeat alike)."""
        return self.median / self.fastest if self.fastest > 0 else float("inf")

    @property
    def stable(self):
        return self.spread <= UNSTABLE_FACTOR

    def note(self):
        return None if self.stable else (
            f"unstable: median {self.spread:.1f}x its fastest repeat after {self.attempts} "
            f"attempts; no ratio")


def repeat_times(fn, device, warmup=3, min_repeats=15, min_seconds=0.05, max_repeats=500):
    """Seconds of each repeat of fn() on device after warm-up; CUDA events per repeat on a GPU.
    fn runs inside the device's context, so a case need not enter it on every call."""
    be = devices.get(device)
    with be.active:
        for _ in range(warmup):
            fn()
        be.synchronize()
        if be.is_cuda:
            cp = be.xp
            events = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(max(min_repeats, 50))]
            for start, end in events:
                start.record()
                fn()
                end.record()
            events[-1][1].synchronize()
            return [cp.cuda.get_elapsed_time(s, e) / 1e3 for s, e in events]
        times = []
        start_all = time.perf_counter()
        while len(times) < min_repeats or (time.perf_counter() - start_all < min_seconds
                                           and len(times) < max_repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return times


def timing(fn, device, attempts=3, **repeat_kwargs):
    """A Timing of fn(), taken again (up to `attempts` in all) while it is unstable; the most
    stable attempt is kept."""
    best = None
    for attempt in range(1, attempts + 1):
        t = Timing(repeat_times(fn, device, **repeat_kwargs), attempt)
        if best is None or t.spread < best.spread:
            best = t
        if t.stable:
            break
    best.attempts = attempt
    return best


def alternating_blocks(cases, device, blocks=3, min_seconds=0.2):
    """({impl: [median seconds per block]}, {impls whose timing was unstable}): each case timed
    in a block of its own (warm-up, then timing()), the cases taking turns block after block, so
    that the drift of a shared machine falls on all of them alike and ratios can be taken block
    by block. Blocks, not single calls, take turns: NumPy's and PyTorch's thread pools spin for
    a while after their work, and calls interleaved one by one would time each library against
    the other's spin. A case is unstable if a block stayed unstable or its block medians differ
    by more than UNSTABLE_FACTOR. The plain form, without the checks against a loaded machine
    that the suites' ratios go through (Blocks, below)."""
    times = {impl: [] for impl in cases}
    unstable = set()
    for _ in range(blocks):
        for impl, fn in cases.items():
            t = timing(fn, device, warmup=2, min_repeats=5, min_seconds=min_seconds)
            times[impl].append(t.median)
            if not t.stable:
                unstable.add(impl)
    for impl, medians in times.items():
        if max(medians) > UNSTABLE_FACTOR * min(medians):
            unstable.add(impl)
    return times, unstable


def median_ratio(times, impl, baseline, unstable=()):
    """The median over blocks of impl's time / baseline's time in the same block; None if
    either timing was unstable."""
    if impl in unstable or baseline in unstable:
        return None
    return statistics.median(a / b for a, b in zip(times[impl], times[baseline]))


# ---------------------------------------------------------------------------- robust ratios
#
# A baseline slowed for a whole run (another process holding a core: a thread pool then waits
# for a worker that cannot run) gives steady timings that the "unstable" guard above passes,
# yet the ratio is not this code's: a busy machine once printed sigmoid 0.00308 (PyTorch's
# kernels flat at 8-12 ms) and gpugrad / torch 0.0226 for the Jacobian. So every ratio is
# taken from turns interleaved in blocks (Blocks), from the blocks that a yardstick read beside
# each turn found unloaded and where each side's time matches its other blocks, and only when
# the two ways of reading those blocks agree; otherwise further blocks are taken, a bounded
# number, and the row is flagged with no ratio.

# The ratio of medians over the blocks and the median of the per-block ratios must agree
# within this factor (they part when a load hit the two sides in different blocks: at batch
# 8192 the deep net's medians were 1,805 ms vs 1,061 while the per-block ratios' median said
# 0.914).
RATIO_AGREEMENT = 1.2
# A turn counts as loaded when, beside it, other processes kept more than this many cores busy
# (on average over the turn). A busy loop pinned to one core reads 1.0, as does another
# engineer's test run on this 2-core machine; a free machine 0.0 (a daemon's tick now and then
# reads 0.1-0.4 in a 70 ms block: taken again). 0.4 of a core made PyTorch's relu read 3x.
YARDSTICK_TOLERANCE = 0.25
# ... or when the yardstick's fixed workload ran more than this many times its quickest.
WORKLOAD_TOLERANCE = 1.5
# ... or, beside a PyTorch turn, when its probe of PyTorch's thread pool did (a free machine:
# within 1.5x; a pool whose worker waits for a core: more).
POOL_TOLERANCE = 2.0
# Turns shorter than this are judged by the load over their whole block: /proc/stat counts in
# ticks of 10 ms, too coarse for a turn of 20 ms.
YARDSTICK_WINDOW = 0.1

RATIO_METHOD = ("median over clean blocks of the per-block ratio of medians (each block: every "
                "case's turn of repeats, interleaved; clean: beside both turns other processes "
                "kept under {tol:g} cores busy, a fixed NumPy workload ran within {work:g}x "
                "its quickest (and a probe of PyTorch's pool within {pool:g}x, beside PyTorch's "
                "turns), and each side within {unstable:g}x of its other blocks; printed only when it agrees within {agree:g}x with the ratio of "
                "the medians over those blocks)")
# What each ratio column of each suite is: format_table prints these under a suite's table.
RATIO_COLUMNS = {
    "gpugrad / torch": {
        "mlp": "this row's step time / its PyTorch counterpart's (eager / eager, products / "
               "products, captured / torch graph)",
        "jacobian": "gg.jacobian's time / torch.func's in the same mode (rev / jacrev, fwd / "
                    "jacfwd)",
        "overhead": "gpugrad's time per op / PyTorch's in the same mode"},
    "gpugrad time / this": {"kernels": "gpugrad's time / this row's"},
    "% of copy": {"kernels": "100 x (bytes the kernel moves / its time) / (bytes a device copy "
                             "moves / its time)"},
    "captured / hand-written": {"mlp": "the captured step's time / the hand-written captured "
                                       "step's"},
}


def _label(impl):
    return " ".join(impl) if isinstance(impl, tuple) else impl


class Yardstick:
    """Two readings beside every turn: how many cores other processes kept busy, and how slow a
    fixed single-threaded NumPy workload ran against its quickest.

    Other processes' cores: the CPU time the whole machine spent (/proc/stat: user, nice,
    system, irq, softirq and steal, the last a VM's host taking the CPU) less this process's
    own (/proc/self/stat, every thread, so PyTorch's and OpenBLAS's spinning workers count as
    ours), over the wall time between two readings. This is the reading that matters: what
    slowed the baselines for whole runs was another process holding a core, which stalls a
    thread pool (every worker must run before a call returns: PyTorch's kernels read 8-12 ms,
    and with 0.4 of a core taken PyTorch's relu backward ran 3x its time), while a
    single-threaded workload moves to the free core and reads as quiet. A workload spread over
    every core, tried first, read anywhere from 1x to 3.6x its quickest on a free 2-core VM (a
    sleeping vCPU is slow to wake), so no tolerance told load from quiet; the counters read
    the cause itself, cost two file reads, and need no quiet machine to calibrate.

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
        torch = torch_or_none()
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


class Blocks:
    """Implementations timed in turns, block after block, with the yardstick read between turns.

    In each block every case takes one turn (warm-up, then a Timing of its repeats), the order
    reversed in every other block so that neither side always follows the other; the
    yardstick is read before the first turn and after each, so each turn has a reading on
    either side. Turns, not single calls, alternate: NumPy's and PyTorch's thread pools spin
    for a while after their work, and calls interleaved one by one would time each library
    against the other's spin (PyTorch's deep step took up to 4x its time so).

    A turn is clean when its timing was stable, the yardstick beside it found under
    YARDSTICK_TOLERANCE cores busy with other processes, its workload under WORKLOAD_TOLERANCE
    times its quickest and (a PyTorch turn) its pool probe under POOL_TOLERANCE times its
    quickest, and its median is within UNSTABLE_FACTOR of the
    case's fastest clean turn (a pool stalled for one turn makes a kernel of 5 us read 12 ms).
    verdict(impl, base) takes the per-block ratios of medians from the blocks clean on both
    sides, and gives a ratio only from most of the blocks planned and when the ratio of the
    medians over the same blocks agrees with it; settle() takes further blocks, a bounded
    number, of the pairs that have none yet."""

    def __init__(self, cases, device, blocks=3, min_seconds=0.2, min_repeats=5, warmup=2,
                 yardstick=None):
        self.cases = cases
        self.device = device
        self.planned = blocks
        self.repeat = {"warmup": warmup, "min_repeats": min_repeats, "min_seconds": min_seconds}
        self.yardstick = yardstick if yardstick is not None else Yardstick()
        self.times = {impl: {} for impl in cases}     # {impl: {block: median seconds}}
        self.stable = {impl: {} for impl in cases}    # {impl: {block: its timing stable}}
        self.loads = {impl: {} for impl in cases}     # {impl: {block: others' cores}}
        self.slowdowns = {impl: {} for impl in cases}  # {impl: {block: workload / quickest}}
        self.pools = {impl: {} for impl in cases}  # {impl: {block: pool probe / quickest}}
        self.blocks_run = 0
        for _ in range(blocks):
            self.run_block(list(cases))

    def run_block(self, impls):
        block = self.blocks_run
        order = impls if block % 2 == 0 else impls[::-1]
        start = before = self.yardstick.reading()
        turns = {}
        for impl in order:
            t = timing(self.cases[impl], self.device, **self.repeat)
            after = self.yardstick.reading()
            self.times[impl][block] = t.median
            self.stable[impl][block] = t.stable
            turns[impl] = (before, after)
            before = after
        whole = self.yardstick.load(start, before)
        for impl, (a, b) in turns.items():  # a short turn is judged by its whole block
            self.loads[impl][block] = (self.yardstick.load(a, b) if b[0] - a[0] >= YARDSTICK_WINDOW
                                       else whole)
            self.slowdowns[impl][block] = self.yardstick.slowdown(a, b)
            # PyTorch's pool only where the turn ran on it: after a NumPy turn, OpenBLAS's
            # workers spin for a while and hold up the probe (1,700x once), not that turn
            self.pools[impl][block] = (self.yardstick.pool_slowdown(a, b)
                                       if _label(impl).startswith("torch")
                                       and hasattr(self.yardstick, "pool_slowdown") else 1.0)
        self.blocks_run += 1

    def load(self, impl, block):
        """Cores other processes kept busy beside impl's turn in block."""
        return self.loads[impl][block]

    def loaded(self, impl, block):
        return (self.loads[impl][block] > YARDSTICK_TOLERANCE
                or self.slowdowns[impl][block] > WORKLOAD_TOLERANCE
                or self.pools[impl][block] > POOL_TOLERANCE)

    def _unloaded(self, impl):
        return [b for b in self.times[impl] if self.stable[impl][b] and not self.loaded(impl, b)]

    def clean(self, impl):
        """impl's clean blocks: stable, unloaded, and within UNSTABLE_FACTOR of its fastest."""
        unloaded = self._unloaded(impl)
        if not unloaded:
            return []
        fastest = min(self.times[impl][b] for b in unloaded)
        return [b for b in unloaded if self.times[impl][b] <= UNSTABLE_FACTOR * fastest]

    def median(self, impl):
        """The median of impl's block medians (seconds) over its clean blocks, or over all
        when none was clean (its ratios are flagged then), so that the times printed are
        those the ratios come from."""
        clean = self.clean(impl)
        return statistics.median(self.times[impl][b] for b in clean or self.times[impl])

    def turn_note(self, impl):
        """None if any of impl's turns was clean, else why none was."""
        if self.clean(impl):
            return None
        if all(self.loaded(impl, b) for b in self.times[impl]):
            return f"loaded: {self._load_words(impl, list(self.times[impl]))} beside every turn"
        return (f"unstable: no clean turn of {_label(impl)} (each loaded, or over "
                f"{UNSTABLE_FACTOR:g}x its fastest repeat or its fastest turn)")

    def _load_words(self, impl, blocks):
        """What the yardstick read beside impl's turns in blocks (medians)."""
        cores = statistics.median(self.loads[impl][b] for b in blocks)
        slowdown = statistics.median(self.slowdowns[impl][b] for b in blocks)
        pool = statistics.median(self.pools[impl][b] for b in blocks)
        return (f"other processes kept {cores:.1f} cores busy, a fixed workload ran "
                f"{slowdown:.1f}x its quickest" + (
                    f", PyTorch's pool {pool:.1f}x" if pool > POOL_TOLERANCE else ""))

    def verdict(self, impl, base):
        """{"ratio": float or None, "note": why there is none, and the figures behind it}."""
        both = [b for b in self.times[impl] if b in self.times[base]]
        clean = {i: set(self.clean(i)) for i in (impl, base)}
        usable = [b for b in both if b in clean[impl] and b in clean[base]]
        load = {i: statistics.median(self.load(i, b) for b in both) for i in (impl, base)}
        fig = {"ratio of": f"{_label(impl)} / {_label(base)}", "blocks": len(both),
               "clean blocks": len(usable),
               "others' cores": round(max(load.values()), 2),
               "workload slowdown": round(max(statistics.median(self.slowdowns[i][b] for b in both)
                                              for i in (impl, base)), 2)}
        if len(usable) >= self.planned // 2 + 1:  # most of the blocks planned
            per_block = statistics.median(self.times[impl][b] / self.times[base][b]
                                          for b in usable)
            of_medians = (statistics.median(self.times[impl][b] for b in usable)
                          / statistics.median(self.times[base][b] for b in usable))
            fig.update({"median of block ratios": per_block, "ratio of medians": of_medians})
            if max(per_block / of_medians, of_medians / per_block) <= RATIO_AGREEMENT:
                return {"ratio": per_block, "note": None, "cause": None, **fig}
            return {"ratio": None, "cause": "disagree", **fig, "note": (
                f"unstable: ratio of medians {of_medians:.3g} vs median of block ratios "
                f"{per_block:.3g}, over {RATIO_AGREEMENT:g}x apart after {len(both)} blocks; "
                f"no ratio")}
        loaded = {i: sum(self.loaded(i, b) for b in both) for i in (impl, base)}
        worst = max((impl, base), key=lambda i: (loaded[i], load[i]))
        if loaded[worst] > len(both) - (self.planned // 2 + 1):  # too many to have a ratio
            return {"ratio": None, "cause": "load", **fig, "note": (
                f"unstable (machine loaded): {self._load_words(worst, both)} beside "
                f"{_label(worst)}, loaded in {loaded[worst]} of {len(both)} blocks; no ratio")}
        spread = {i: max(self.times[i][b] for b in both) / min(self.times[i][b] for b in both)
                  for i in (impl, base)}
        worst = max((impl, base), key=spread.get)
        return {"ratio": None, "cause": "unstable", **fig, "note": (
            f"unstable: {_label(worst)}'s blocks differ up to {spread[worst]:.3g}x (clean: "
            f"within {UNSTABLE_FACTOR:g}x of its fastest block and of each block's fastest "
            f"repeat) in {len(both)} blocks; no ratio")}

    def settle(self, pairs, extra=None):
        """Take further blocks (at most `extra`, default as many as planned) of the cases of
        the pairs without a ratio yet, until each has one or the blocks run out; not for a
        pair with no clean block because of a load beside every one (it would only double
        the time of a run on a busy machine)."""
        for _ in range(self.planned if extra is None else extra):
            verdicts = {p: self.verdict(*p) for p in pairs}
            # a load beside every block so far is not waited out: it outlasts a few blocks
            pending = [p for p, v in verdicts.items() if v["ratio"] is None
                       and not (v["cause"] == "load" and v["clean blocks"] == 0)]
            if not pending:
                break
            self.run_block(list(dict.fromkeys(i for p in pending for i in p)))
        return {p: self.verdict(*p) for p in pairs}


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def environment(device):
    """Device, date and library versions, stored with every result."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "gpugrad": gpugrad.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    torch = torch_or_none()
    env["torch"] = torch.__version__ if torch else None
    if torch:
        env["torch threads"] = torch.get_num_threads()
    be = devices.get(device)
    if be.is_cuda:
        cp = be.xp
        props = cp.cuda.runtime.getDeviceProperties(be.index)
        env.update({"cupy": cp.__version__, "gpu": props["name"].decode(),
                    "cuda driver": cp.cuda.runtime.driverGetVersion(),
                    "cuda runtime": cp.cuda.runtime.runtimeGetVersion()})
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


# ---------------------------------------------------------------------------- kernels suite

# PyTorch's own backward kernel of an activation kernel (torch.ops.aten), called as
# fn(aten, g, x, y). An activation without one (softsign: PyTorch composes it) is timed as
# PyTorch's autograd runs it: the vjp of torch.nn.functional.<name>.
TORCH_BACKWARDS = {
    "relu": lambda a, g, x, y: a.threshold_backward(g, y, 0),
    "leaky_relu": lambda a, g, x, y: a.leaky_relu_backward(g, x, 0.01, False),
    "elu": lambda a, g, x, y: a.elu_backward(g, 1.0, 1, 1, True, y),
    "gelu": lambda a, g, x, y: a.gelu_backward(g, x, approximate="none"),
    "gelu_tanh": lambda a, g, x, y: a.gelu_backward(g, x, approximate="tanh"),
    "silu": lambda a, g, x, y: a.silu_backward(g, x),
    "softplus": lambda a, g, x, y: a.softplus_backward(g, x, 1.0, 20.0),
    "sigmoid": lambda a, g, x, y: a.sigmoid_backward(g, y),
    "tanh": lambda a, g, x, y: a.tanh_backward(g, y),
}


def activation_backwards():
    """{activation kernel: (its declared activation, the params selecting it)}: every kernel of
    every declared activation (gpugrad/ops/activation.py), with the declared defaults."""
    from gpugrad.ops import activation as act

    return {kernel: (a, {**dict(a.params), **fixed})
            for a in act.ACTIVATIONS.values() for kernel, fixed in act.variant_params(a)}


# relu's and leaky_relu's backward read from the output, as the networks run it where the next
# layer keeps that output (relu_backward_from_output): {row name: (activation, its params)}
FROM_OUTPUT = {"relu from y": ("relu", {}),
               "leaky_relu from y": ("leaky_relu", {"negative_slope": 0.01, "leaky": True})}


def kernel_cases(activation, n, device):
    """{impl: callable} for one activation backward on n float32 elements, plus bytes moved.

    impls: "gpugrad" (fused on CUDA, the NumPy composition on the CPU), "unfused" (not on NumPy:
    the CuPy composition), "torch" (PyTorch's own backward kernel, when installed for this
    device) and "copy" (a device-to-device copy of n elements, the bandwidth yardstick).
    """
    be = devices.get(device)
    xp = be.xp
    base, params = FROM_OUTPUT.get(activation, (activation, None))
    declared, forward_params = activation_backwards()[base]
    saved_kind = declared.saves
    if params is not None:
        op, saved_kind = gpugrad.OPS["relu_backward_from_output"], "y"
    elif saved_kind == "mask":  # relu and leaky_relu share the backward from the mask
        op = gpugrad.OPS["relu_backward"]
        params = {"negative_slope": forward_params.get("negative_slope", 0.0)}
    else:
        op, params = gpugrad.OPS[f"{declared.name}_backward"], forward_params
    rng = np.random.default_rng(n)
    with be.active:
        x = xp.asarray((rng.standard_normal(n) * 3).astype(np.float32))
        g = xp.asarray(rng.standard_normal(n).astype(np.float32))
        y = gpugrad.OPS[declared.name].forward(xp, x, **forward_params)
        saved = {"x": x, "y": y, "mask": kernels.pack_mask(xp, x > 0)}[saved_kind]
        dst = xp.empty_like(x)

    def run(on):
        if on == kernels.enabled():  # the op as a backward pass calls it: no switch per call
            return functools.partial(op.forward, xp, g, saved, **params)

        def call():
            with kernels.fused(on):
                return op.forward(xp, g, saved, **params)
        return call

    # repeat_times runs every case inside the device's context
    cases = {"gpugrad": run(True), "copy": lambda: xp.copyto(dst, x)}
    if xp is not np:  # a device with fused kernels (CUDA, or the strict device's stand-ins)
        cases["unfused"] = run(False)
    torch = torch_or_none()
    # PyTorch shares NumPy's and CuPy's arrays through DLPack; the strict device's it cannot
    if torch is not None and (xp is np or (be.is_cuda and torch.cuda.is_available())):
        tg, tx, ty = (torch.from_dlpack(a) for a in (g, x, y))
        torch_fn = TORCH_BACKWARDS.get(base)
        if torch_fn is not None:
            aten = torch.ops.aten
            cases["torch"] = lambda: torch_fn(aten, tg, tx, ty)
        else:
            _, torch_vjp = torch.func.vjp(getattr(torch.nn.functional, declared.name), tx)
            cases["torch"] = lambda: torch_vjp(tg)
    moved = g.nbytes + saved.nbytes + g.nbytes  # read g and the saved array, write dx, once each
    return cases, moved, 2 * x.nbytes


def kernels_suite(device, quick=True, progress=None, yardstick=None):
    """Rows for every activation backward and size: time, GB/s, % of copy, ratios; each size's
    cases (gpugrad, unfused, torch, copy) timed in turns, block after block (Blocks)."""
    be = devices.get(device)
    if not be.is_cuda:
        sizes = [2**16, 2**20] if quick else [2**16, 2**18, 2**20, 2**22]
    else:
        sizes = [2**16, 2**20, 2**24] if quick else [2**16, 2**18, 2**20, 2**22, 2**24, 2**26]
    yardstick = yardstick if yardstick is not None else Yardstick()
    rows = []
    work = [(a, n) for a in [*activation_backwards(), *FROM_OUTPUT] for n in sizes]
    for i, (activation, n) in enumerate(work):
        cases, moved, copy_bytes = kernel_cases(activation, n, device)
        impls = [impl for impl in ("gpugrad", "unfused", "torch") if impl in cases]
        # a turn of at least 5 repeats and 1/3 of the 50 ms one measurement took before
        # blocks: the same time in all when nothing is taken again
        blocks = Blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.017,
                        yardstick=yardstick)
        of_copy = {impl: (impl, "copy") for impl in impls}
        against_ours = {impl: ("gpugrad", impl) for impl in impls if impl != "gpugrad"}
        verdicts = blocks.settle([*of_copy.values(), *against_ours.values()])
        copy_secs = blocks.median("copy")
        for impl in impls:
            secs = blocks.median(impl)
            checks = [verdicts[of_copy[impl]]] + (
                [verdicts[against_ours[impl]]] if impl in against_ours else [])
            row = {
                "suite": "kernels", "activation": activation, "n": n, "impl": impl,
                "median_us": secs * 1e6, "GB/s": moved / secs / 1e9,
                "copy GB/s": copy_bytes / copy_secs / 1e9,
                "% of copy": _ratio_of(checks[0], lambda r: 100 * moved / copy_bytes / r),
                "gpugrad time / this": _ratio_of(checks[1]) if impl in against_ours else None,
            }
            rows.append(_with_verdicts(row, checks))
        if progress:
            progress(i + 1, len(work), f"{activation} n={n}")
    return rows


def _ratio_of(verdict, scale=lambda r: r):
    return None if verdict["ratio"] is None else scale(verdict["ratio"])


def _with_verdicts(row, verdicts):
    """The row, and if any of the verdicts its ratios come from was flagged, its note, with
    every ratio of the row withheld (a row prints a ratio or a note, never both); the figures
    behind each verdict go with it ("ratio checks", in the JSON, not the table)."""
    notes = [v["note"] for v in verdicts if v["note"]]
    if notes:
        row.update({k: None for k in RATIO_COLUMNS if k in row})
        row["note"] = notes[0]
    row["ratio checks"] = [{k: v for k, v in verdict.items() if k not in ("note", "cause")}
                           for verdict in verdicts]
    return row


SUITES = {"kernels": kernels_suite}


# keys of a row that the JSON keeps and the table leaves out
NOT_IN_TABLE = ("suite", "ratio checks")


def format_table(rows):
    """A fixed-width table of the rows (every key a column), and under a benchmark suite's
    table what its ratio columns are and how they were taken."""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r if k not in NOT_IN_TABLE))

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    table = [cols] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table]
    return "\n".join(lines + ratio_legend(rows, cols))


def ratio_legend(rows, cols=None):
    """Lines saying what each ratio column of benchmark rows is and how it was taken (none for
    other tables)."""
    suites = list(dict.fromkeys(r.get("suite") for r in rows if r.get("suite") in SUITES))
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    mine = [(c, s, RATIO_COLUMNS[c][s]) for c in cols if c in RATIO_COLUMNS
            for s in suites if s in RATIO_COLUMNS[c]]
    if not mine:
        return []
    method = RATIO_METHOD.format(tol=YARDSTICK_TOLERANCE, work=WORKLOAD_TOLERANCE,
                                 pool=POOL_TOLERANCE, unstable=UNSTABLE_FACTOR,
                                 agree=RATIO_AGREEMENT)
    lines = [f"ratio columns, each the {method}:"] + [
        f"{c}{f' ({s})' if len(suites) > 1 else ''}: {what}" for c, s, what in mine]
    lines.append("'-' beside a note: no ratio, and the note says why")
    return [textwrap.fill(line, 100, initial_indent="  " if i else "",
                          subsequent_indent="    " if i else "  ")
            for i, line in enumerate(lines)]


def why_no_ratio(rows, key):
    """Why none of the rows has a `key` to draw (for an empty plot panel)."""
    if not rows:
        return "no rows"
    notes = [r["note"] for r in rows if r.get("note")]
    if notes:
        return (f"no {key}: {len(notes)} row(s) flagged, e.g. "
                f"{notes[0].split('; no ratio')[0]}")
    if not any(key in r for r in rows):
        return f"no {key} column in these rows"
    return f"no {key}: no baseline ran beside these rows (PyTorch missing or not on this device)"


# ---------------------------------------------------------------------------- mlp suite

MLP_MODELS = {"4.7 (784-256-10)": [784, 256, 10], "deep (784-1024x3-10)": [784, 1024, 1024, 1024, 10]}


def mlp_step_cases(sizes, batch, device, lam=1e-3, lr=0.01):
    """{impl: step()} for one SGD training step (forward, cross-entropy + L2, backward, update)
    of the same bias-free MLP on the same data, in gpugrad and (when installed) PyTorch."""
    from gpugrad import nn
    from gpugrad import optim
    from gpugrad.nn import functional as F

    be = devices.get(device)
    rng = np.random.default_rng(batch)
    x_host = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y_host = rng.integers(0, sizes[-1], batch)
    devices.seed(0)
    model = nn.MLP(sizes, bias=False, device=device)
    opt = optim.SGD(model.parameters(), lr=lr)
    with be.active:
        x, y = gpugrad.tensor(x_host, device=device), be.asarray(y_host)
    params = model.parameters()

    def step_with(labels):
        def step():
            with gpugrad.autograd.record():
                loss = F.cross_entropy(model(x), labels) + lam * F.l2_penalty(params)
            loss.backward()
            opt.step()
        return step

    ours = step_with(y)
    cases = {"gpugrad": ours}
    if not be.is_cpu:  # labels as a data loader gives them, host data: checked on the host
        # before they move, where labels on the device are read back to be checked (a sync)
        cases["gpugrad host labels"] = step_with(y_host)
    if be.is_cuda:  # the same step captured once and replayed (on the CPU it would run eagerly)
        cases["gpugrad captured"] = gpugrad.cuda.graph(ours, device=device)
    # the step's matrix products alone (each layer's forward and weight gradient, and the
    # gradient of every layer's input but the data's, which neither step computes), in the
    # array library and in PyTorch: the gap between them is the floor under gpugrad / torch
    weights_host = [p.numpy() for p in params]
    acts_host = [rng.standard_normal((batch, n)).astype(np.float32) for n in sizes]
    with be.active:
        weights, acts = ([be.xp.asarray(a) for a in arrays] for arrays in (weights_host, acts_host))

    def products(xp_matmul, ws, hs):
        def run():
            for i, (w, h_in, h_out) in enumerate(zip(ws, hs[:-1], hs[1:])):
                xp_matmul(h_in, w.T)   # forward
                if i:
                    xp_matmul(h_out, w)    # gradient of the layer's input
                xp_matmul(h_out.T, h_in)  # gradient of the weight
        return run
    cases[f"{array_library(device)} matmuls"] = products(be.xp.matmul, weights, acts)
    torch = torch_or_none()
    if torch is not None and (not be.is_cuda or torch.cuda.is_available()):
        dev = "cpu" if not be.is_cuda else "cuda"
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b, bias=False))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        tmodel = torch.nn.Sequential(*layers).to(dev)
        with torch.no_grad():  # the same weights
            for p, tp in zip(params, tmodel.parameters()):
                tp.copy_(torch.from_numpy(p.numpy()))
        topt = torch.optim.SGD(tmodel.parameters(), lr=lr)
        tx, ty = torch.from_numpy(x_host).to(dev), torch.from_numpy(y_host).to(dev)
        cases["torch matmuls"] = products(
            torch.matmul, *([torch.from_numpy(a).to(dev) for a in arrays]
                            for arrays in (weights_host, acts_host)))

        def theirs():
            topt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(tmodel(tx), ty) + lam / 2 * sum(
                (p * p).sum() for p in tmodel.parameters())
            loss.backward()
            topt.step()
        cases["torch"] = theirs
        if be.is_cuda:
            cases["torch graph"] = _torch_graph(torch, theirs, topt)
    if be.is_cuda:  # the floor: the same step by hand on CuPy arrays, captured
        with be.active:
            floor_weights = [be.xp.asarray(w) for w in weights_host]
            floor_x, floor_y = be.xp.asarray(x_host), be.xp.asarray(y_host)
        cases["hand-written captured"] = gpugrad.cuda.graph(
            hand_written_step(floor_weights, floor_x, floor_y, lam, lr), device=device)
        jax_step = _jax_step(weights_host, x_host, y_host, lam, lr)
        if jax_step is not None:
            cases["jax jit"] = jax_step
    return cases


def hand_written_step(weights, x, y, lam, lr):
    """The same SGD step written by hand on raw arrays of one device (no autograd, no Tensor):
    the floor under a step built from the same array library and gpugrad's capturable matmul
    (devices.matmul), which gg.cuda.graph can capture on CUDA. Updates `weights` (arrays,
    (out, in) each) in place and returns the loss (cross-entropy + lam/2 |W|^2, before the
    update); x (N, d) and integer labels y (N,) stay fixed."""
    be = devices.get(devices.device_of_array(x))
    xp, n = be.xp, x.shape[0]
    with be.active:
        rows = xp.arange(n)

    def step():
        with be.active:
            hs, h = [x], x
            for i, w in enumerate(weights):
                z = devices.matmul(xp, h, w.T)
                if i < len(weights) - 1:
                    h = xp.maximum(z, 0)
                    hs.append(h)
            shifted = z - z.max(axis=1, keepdims=True)
            p = xp.exp(shifted)
            total = p.sum(axis=1, keepdims=True)
            loss = (xp.log(total[:, 0]) - shifted[rows, y]).mean()
            loss += devices.sum_of_squares(xp, weights, lam / 2)
            p /= total
            p[rows, y] -= 1
            dz = p
            dz /= n  # d mean(cross-entropy) / d logits
            for i in range(len(weights) - 1, -1, -1):
                w = weights[i]
                grad_w = devices.matmul(xp, dz.T, hs[i])
                if i:
                    dz = devices.matmul(xp, dz, w)
                    dz *= hs[i] > 0
                grad_w += lam * w  # the L2 term's gradient
                w -= lr * grad_w
        return loss
    return step


def _torch_graph(torch, step, opt):
    """PyTorch's step captured whole into a CUDA graph, as its docs show (warm-up on a side
    stream, gradients set to None before the capture), replayed per call."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    opt.zero_grad(set_to_none=True)
    try:  # kept, so that its nodes can be counted (PyTorch >= 2.6)
        graph = torch.cuda.CUDAGraph(keep_graph=True)
    except TypeError:
        graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # zero_grad(set_to_none) inside is host-side only
        step()

    def replay():
        graph.replay()
    replay.cuda_graph = graph
    return replay


def kernels_per_step(case):
    """Work items (kernels, memsets, copies) one replay of a captured step launches: a
    gg.cuda.graph step, or a PyTorch graph from _torch_graph; None where there is no graph."""
    from gpugrad import cuda

    if isinstance(case, cuda.GraphedStep):
        nodes = case.nodes() if case.captured else None
    else:
        try:
            nodes = cuda.graph_nodes(case.cuda_graph.raw_cuda_graph())
        except (AttributeError, RuntimeError):  # an older PyTorch, or a graph not kept
            nodes = None
    return None if nodes is None else sum(nodes.get(k, 0) for k in ("kernel", "memset", "memcpy"))


def _jax_step(weights_host, x_host, y_host, lam, lr):
    """The same step in JAX, jit-compiled, its matmuls at full float32 precision (JAX's default
    on a GPU is TF32); each call waits for its result, as CUDA events cannot see JAX's stream.
    None when JAX or its GPU backend is missing."""
    import os

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave CuPy its memory
    try:
        import jax
        import jax.numpy as jnp
        gpu = jax.devices("gpu")[0]
    except Exception:  # noqa: BLE001 - not installed, or no GPU backend: no row
        return None

    def loss_fn(ws, x, y):
        h = x
        for i, w in enumerate(ws):
            h = jnp.matmul(h, w.T, precision="highest")
            if i < len(ws) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h, axis=1)
        xent = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        return xent + lam / 2 * sum(jnp.sum(w * w) for w in ws)

    @functools.partial(jax.jit, donate_argnums=0)
    def update(ws, x, y):
        grads = jax.grad(loss_fn)(ws, x, y)
        return [w - lr * g for w, g in zip(ws, grads)]

    state = [jax.device_put(w, gpu) for w in weights_host]
    x, y = jax.device_put(x_host, gpu), jax.device_put(y_host.astype(np.int32), gpu)

    def step():
        state[:] = update(state, x, y)
        state[0].block_until_ready()
    return step


def ops_per_step(step):
    """How many ops (registry.apply calls: each one or more array-library calls on the device)
    one call of step() runs, forward, backward and update together."""
    from gpugrad.ops import registry

    count = 0
    real = registry.apply

    def counting(op, inputs, params):
        nonlocal count
        count += 1
        return real(op, inputs, params)

    registry.apply = counting  # the op functions look apply up at call time
    try:
        step()
    finally:
        registry.apply = real
    return count


_TORCH_COUNTERPART = {"gpugrad captured": "torch graph"}


def device_calls_per_step(step):
    """{call name: count} of the calls one step() makes into the strict test device's array
    library (functions, array methods, indexing, fused kernels): on CuPy each is at most one
    kernel launch, a view none, so it bounds a GPU step's kernels from the CPU."""
    from gpugrad.devices import strict

    before = collections.Counter(strict.calls)
    step()
    return strict.calls - before


def device_calls_per_captured_step(step, device):
    """device_calls_per_step of step under gg.cuda.graph on the strict test device, where the
    capture is emulated: its replay runs the step under the capture's rules (matmuls through
    the capturable gemm), so this counts what a captured step calls (gemms not included)."""
    graphed = gpugrad.cuda.graph(step, device=device)
    graphed()  # the eager pass and the capture
    return device_calls_per_step(graphed)


MLP_BATCHES = {True: [32, 1024], False: [32, 128, 512, 1024, 4096]}  # quick, full


def mlp_suite(device, quick=True, progress=None, batches=None, yardstick=None):
    """Step time, samples/s and gpugrad/torch for the section 4.7 and the deep MLP, at
    `batches` (default: MLP_BATCHES[quick])."""
    batches = MLP_BATCHES[quick] if batches is None else list(batches)
    yardstick = yardstick if yardstick is not None else Yardstick()
    rows = []
    work = [(name, b) for name in MLP_MODELS for b in batches]
    for i, (name, batch) in enumerate(work):
        cases = mlp_step_cases(MLP_MODELS[name], batch, device)
        ops = ops_per_step(cases["gpugrad"])
        strict = devices.get(device).name == "strict"
        calls = sum(device_calls_per_step(cases["gpugrad"]).values()) if strict else None
        captured_calls = (sum(device_calls_per_captured_step(cases["gpugrad"], device).values())
                          if strict else None)
        be_cuda = devices.get(device).is_cuda
        # each gpugrad row against its PyTorch counterpart: products with products, the
        # captured step with PyTorch's CUDA graph, the eager step with the eager step; the
        # captured step also against the hand-written floor
        pairs = {}
        for impl in cases:
            base = ("torch matmuls" if impl.endswith(" matmuls")
                    else _TORCH_COUNTERPART.get(impl, "torch"))
            if not impl.startswith(("torch", "jax", "hand")) and base in cases:
                pairs[impl, "gpugrad / torch"] = (impl, base)
        if "gpugrad captured" in cases and "hand-written captured" in cases:
            pairs["gpugrad captured", "captured / hand-written"] = (
                "gpugrad captured", "hand-written captured")
        blocks = Blocks(cases, device, blocks=3 if quick else 5, yardstick=yardstick)
        verdicts = blocks.settle(list(pairs.values()))
        # on CUDA, what one replay of each captured step launches, counted in its graph
        launches = {impl: kernels_per_step(cases[impl])
                    for impl in ("gpugrad captured", "torch graph") if impl in cases}
        for impl in cases:
            secs = blocks.median(impl)
            mine = {col: verdicts[pair] for (who, col), pair in pairs.items() if who == impl}
            row = {"suite": "mlp", "model": name, "batch": batch, "impl": impl,
                   "median ms": secs * 1e3, "samples/s": batch / secs,
                   "ops per step": ops if impl == "gpugrad" else None,
                   **({"device calls per step": calls if impl == "gpugrad" else None,
                       "device calls per captured step":
                           captured_calls if impl == "gpugrad" else None}
                      if calls is not None else {}),
                   **({"kernels per step": launches.get(impl)} if be_cuda else {}),
                   "gpugrad / torch": _ratio_of(mine["gpugrad / torch"])
                   if "gpugrad / torch" in mine else None,
                   **({"captured / hand-written": _ratio_of(mine["captured / hand-written"])
                       if "captured / hand-written" in mine else None}
                      if "hand-written captured" in cases else {})}
            rows.append(_with_verdicts(row, list(mine.values())) if mine
                        else _with_turn_note(row, blocks, impl))
        if progress:
            progress(i + 1, len(work), f"{name} batch {batch}")
    return rows


def _with_turn_note(row, blocks, impl):
    """A row with no ratio of its own (a baseline's) notes when none of its turns was clean,
    so that a time read under load is not taken for this implementation's."""
    note = blocks.turn_note(impl)
    if note:
        row["note"] = note
    return row


SUITES["mlp"] = mlp_suite


# ---------------------------------------------------------------------------- memory suite


def memory_suite(device, quick=True, progress=None):
    """Section 4.7's network: saved activations formula vs measured, and train vs predict peak."""
    from gpugrad.app import experiments

    batches = [64, 1024] if quick else [1, 64, 256, 1024, 4096]
    rows = []
    for i, r in enumerate(experiments.experiment(784, 256, 10, batches, device=device)):
        rows.append({"suite": "memory", "batch": r["batch"], "saved (formula)": r["saved (formula)"],
                     "saved (measured)": r["saved (measured)"], "predict peak": r["predict peak"],
                     "train peak": r["train peak"], "train / predict": r["train/predict peak"]})
        if progress:
            progress(i + 1, len(batches), f"memory batch {r['batch']}")
    return rows


# ---------------------------------------------------------------------------- jacobian suite


def jacobian_cases(m, n, device):
    """{impl: fn()} computing the Jacobian of f(x) = tanh(W x), W of shape (m, n), with
    gg.jacobian in both modes and (on the CPU, when installed) torch.func.jacrev/jacfwd."""
    rng = np.random.default_rng(m * n)
    w_host = rng.standard_normal((m, n)).astype(np.float32)
    x_host = rng.standard_normal(n).astype(np.float32)
    w, x = gpugrad.tensor(w_host, device=device), gpugrad.tensor(x_host, device=device)

    def f(v):
        return gpugrad.tanh(gpugrad.matmul(w, v))
    cases = {"gpugrad rev": lambda: gpugrad.jacobian(f, mode="rev")(x),
             "gpugrad fwd": lambda: gpugrad.jacobian(f, mode="fwd")(x)}
    torch = torch_or_none()
    if torch is not None and not devices.get(device).is_cuda:
        tw, tx = torch.from_numpy(w_host), torch.from_numpy(x_host)
        cases["torch jacrev"] = lambda: torch.func.jacrev(lambda v: torch.tanh(tw @ v))(tx)
        cases["torch jacfwd"] = lambda: torch.func.jacfwd(lambda v: torch.tanh(tw @ v))(tx)
    return cases


def jacobian_suite(device, quick=True, progress=None, yardstick=None):
    """gg.jacobian in reverse and forward mode beside torch.func.jacrev/jacfwd, for
    f(x) = tanh(W x) with W of shape (m, n): reverse mode costs m vjps, forward mode n jvps."""
    shapes = [(8, 64), (64, 8)] if quick else [(8, 64), (64, 8), (64, 64), (256, 16)]
    yardstick = yardstick if yardstick is not None else Yardstick()
    rows = []
    for i, (m, n) in enumerate(shapes):
        cases = jacobian_cases(m, n, device)
        pairs = {impl: (impl, f"torch jac{impl[-3:]}") for impl in cases
                 if impl.startswith("gpugrad") and f"torch jac{impl[-3:]}" in cases}
        blocks = Blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.02,
                        yardstick=yardstick)
        verdicts = blocks.settle(list(pairs.values()))
        for impl in cases:
            row = {"suite": "jacobian", "shape (m, n)": f"({m}, {n})", "impl": impl,
                   "median ms": blocks.median(impl) * 1e3,
                   "gpugrad / torch": _ratio_of(verdicts[pairs[impl]]) if impl in pairs else None}
            rows.append(_with_verdicts(row, [verdicts[pairs[impl]]]) if impl in pairs
                        else _with_turn_note(row, blocks, impl))
        if progress:
            progress(i + 1, len(shapes), f"jacobian {m}x{n}")
    return rows


# ---------------------------------------------------------------------------- overhead suite


def overhead_cases(n_ops, device):
    """{(impl, mode): fn()} running a chain of n_ops tanh on a 16-element vector: the arrays are
    so small that the time is the framework's own, per op. Modes: "no grad" (not recorded),
    "record" (recorded, no backward) and "record + backward"."""
    x_host = np.linspace(-1, 1, 16, dtype=np.float32)
    x = gpugrad.tensor(x_host, device=device)
    x.attach_grad()

    def chain(v, tanh):
        for _ in range(n_ops):
            v = tanh(v)
        return v

    def plain():
        with gpugrad.no_grad():
            chain(x, gpugrad.tanh)

    def record():
        with gpugrad.autograd.record():
            chain(x, gpugrad.tanh)

    def backward():
        with gpugrad.autograd.record():
            y = chain(x, gpugrad.tanh).sum()
        y.backward()

    be = devices.get(device)
    raw = x.data

    def array_calls():  # the array library's own per-call cost: the floor under every op
        with be.active:
            chain(raw, be.xp.tanh)

    cases = {("gpugrad", "no grad"): plain, ("gpugrad", "record"): record,
             ("gpugrad", "record + backward"): backward,
             (array_library(device), "no grad"): array_calls}
    torch = torch_or_none()
    if torch is not None and (not be.is_cuda or torch.cuda.is_available()):
        tx = torch.tensor(x_host, device="cpu" if not be.is_cuda else "cuda", requires_grad=True)

        def t_plain():
            with torch.no_grad():
                chain(tx, torch.tanh)

        def t_backward():
            chain(tx, torch.tanh).sum().backward()

        cases.update({("torch", "no grad"): t_plain, ("torch", "record"): lambda: chain(tx, torch.tanh),
                      ("torch", "record + backward"): t_backward})
    return cases


def array_library(device):
    """The name of the device's array library, as the overhead suite labels its row."""
    be = devices.get(device)
    return "numpy" if be.xp is np else "cupy" if be.is_cuda else f"{be.name} xp"


def overhead_suite(device, quick=True, progress=None, yardstick=None):
    """Microseconds per op of the framework itself: a chain of tanh on 16 elements, beside the
    array library's own call (the floor) and PyTorch's."""
    n_ops = 100
    cases = overhead_cases(n_ops, device)
    pairs = {key: (key, ("torch", key[1])) for key in cases
             if key[0] == "gpugrad" and ("torch", key[1]) in cases}
    blocks = Blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.1,
                    yardstick=yardstick if yardstick is not None else Yardstick())
    verdicts = blocks.settle(list(pairs.values()))
    floor = blocks.median((array_library(device), "no grad")) / n_ops * 1e6
    rows = []
    for (impl, mode) in cases:
        us = blocks.median((impl, mode)) / n_ops * 1e6
        row = {"suite": "overhead", "mode": mode, "impl": impl, "us per op": us,
               "us over the array call": us - floor if impl == "gpugrad" else None,
               "gpugrad / torch": _ratio_of(verdicts[pairs[impl, mode]])
               if (impl, mode) in pairs else None}
        rows.append(_with_verdicts(row, [verdicts[pairs[impl, mode]]]) if (impl, mode) in pairs
                    else _with_turn_note(row, blocks, (impl, mode)))
    if progress:
        progress(1, 1, "overhead")
    return rows


SUITES["memory"] = memory_suite
SUITES["jacobian"] = jacobian_suite
SUITES["overhead"] = overhead_suite
