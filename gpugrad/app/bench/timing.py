"""Timing one case: the median of many repeats after warm-up (CUDA events per repeat on a GPU),
taken again while the machine was busy for part of it; and the plain form of cases taking
turns in blocks."""

import statistics
import time

from gpugrad import devices

# A measurement whose median is more than this many times its fastest repeat caught a machine
# busy for part of it: it is taken again, and if it stays so it is flagged and no ratio is
# printed from it. A machine busy for all of it passes this guard: see blocks.py.
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
    that the suites' ratios go through (blocks.Blocks)."""
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
