"""Cases timed in turns, block after block, with a yardstick read between turns; a ratio only
from the blocks clean on both sides, and only when its two readings agree."""

import statistics

from gpugrad.app.bench import timing
from gpugrad.app.bench.yardstick import Yardstick

# A baseline slowed for a whole run (another process holding a core: a thread pool then waits
# for a worker that cannot run) gives steady timings that timing.py's "unstable" guard passes,
# yet the ratio is not this code's: on a busy machine sigmoid read 0.00308 (PyTorch's kernels
# flat at 8-12 ms) and gpugrad / torch 0.0226 for the Jacobian. So every ratio is
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
# user's test run on this 2-core machine; a free machine 0.0 (a daemon's tick now and then
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


def _label(impl):
    return " ".join(impl) if isinstance(impl, tuple) else impl


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
            t = timing.timing(self.cases[impl], self.device, **self.repeat)
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
            # workers spin for a while and can hold up the probe 1,700x, not that turn
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
        return [b for b in unloaded if self.times[impl][b] <= timing.UNSTABLE_FACTOR * fastest]

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
                f"{timing.UNSTABLE_FACTOR:g}x its fastest repeat or its fastest turn)")

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
            f"within {timing.UNSTABLE_FACTOR:g}x of its fastest block and of each block's fastest "
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
