"""`gpugrad bench` prints a ratio only when a load could not have made it: a baseline slowed
for a whole run (another process holding a core) gives steady timings that the "unstable"
guard passes, and can read sigmoid 0.00308 and gpugrad / torch 0.0226. These tests inject
such a baseline and check that its row is taken again and flagged, never printed as a clean
number, and that a clean run is not flagged.

Three ways of injecting, from the most deterministic: timings replaced by figures chosen per
block (the logic of re-measuring and agreeing), cases that sleep a fixed time with a yardstick
that finds the injected load (the suites' wiring), and a real load, another process let spin
during the baseline's turns, found by the real yardstick."""

import signal
import subprocess
import sys
import time

import pytest

import gpugrad as gg
from gpugrad.app.bench import blocks as ratio_blocks
from gpugrad.app.bench import timing
from gpugrad.app.bench.blocks import Blocks
from gpugrad.app.bench.suites import jacobian
from gpugrad.app.bench.table import format_table, why_no_ratio
from gpugrad.app.bench.yardstick import Yardstick

DEVICE = gg.default_device()  # cpu, or strict in CI's second run


class ScriptedTimes:
    """Replaces timing.timing: each case is a function of the block number returning the
    seconds its turn takes, so a load can be placed in exactly the blocks a test wants."""

    def __init__(self, monkeypatch):
        self.turns = []
        monkeypatch.setattr(timing, "timing", self.timing)

    def timing(self, fn, device, **_):
        seconds = fn()
        self.turns.append(seconds)
        return timing.Timing([seconds] * 5)


class QuietYardstick:
    """A yardstick that finds the machine free: no other process busy."""

    def reading(self):
        return time.perf_counter(), 0

    def load(self, earlier, later):
        return 0.0

    def slowdown(self, earlier, later):
        return 1.0


def block_cases(blocks, ours, theirs):
    """{"gpugrad": fn, "torch": fn} whose turns take ours(block) and theirs(block) seconds, the
    block read from how many turns `blocks` has seen."""
    seen = {"gpugrad": 0, "torch": 0}

    def case(name, seconds):
        def turn():
            block = seen[name]
            seen[name] += 1
            return seconds(block)
        return turn
    return {"gpugrad": case("gpugrad", ours), "torch": case("torch", theirs)}


def test_agreeing_blocks_give_the_ratio_at_once(monkeypatch):
    ScriptedTimes(monkeypatch)
    cases = block_cases(3, lambda b: 0.010, lambda b: 0.005)
    blocks = Blocks(cases, DEVICE, blocks=3, yardstick=QuietYardstick())
    verdict = blocks.settle([("gpugrad", "torch")])["gpugrad", "torch"]
    assert verdict["ratio"] == pytest.approx(2.0) and verdict["note"] is None
    assert blocks.blocks_run == 3  # nothing taken again


def test_disagreeing_blocks_are_taken_again_until_they_agree(monkeypatch):
    """The load hits gpugrad in block 2 and the baseline in blocks 1 and 2 (2.5x, each side's
    blocks within the factor that flags a block on its own): the per-block ratios' median
    says 1.0 and the ratio of medians 0.4. Extra blocks, now quiet, settle it at 1.0 after two
    more."""
    ScriptedTimes(monkeypatch)
    cases = block_cases(3, lambda b: 0.025 if b == 2 else 0.010,
                        lambda b: 0.025 if b in (1, 2) else 0.010)
    blocks = Blocks(cases, DEVICE, blocks=3, yardstick=QuietYardstick())
    first = blocks.verdict("gpugrad", "torch")
    assert first["ratio"] is None and "ratio of medians 0.4 vs median of block ratios 1" in (
        first["note"])
    verdict = blocks.settle([("gpugrad", "torch")])["gpugrad", "torch"]
    assert verdict["ratio"] == pytest.approx(1.0) and verdict["note"] is None
    assert blocks.blocks_run == 5


def test_blocks_that_keep_disagreeing_are_flagged_after_a_bounded_number(monkeypatch):
    ScriptedTimes(monkeypatch)
    # the same pattern every three blocks: the two readings never come together
    cases = block_cases(3, lambda b: 0.025 if b % 3 == 2 else 0.010,
                        lambda b: 0.025 if b % 3 else 0.010)
    blocks = Blocks(cases, DEVICE, blocks=3, yardstick=QuietYardstick())
    verdict = blocks.settle([("gpugrad", "torch")])["gpugrad", "torch"]
    assert verdict["ratio"] is None and verdict["note"].startswith("unstable: ratio of medians")
    assert blocks.blocks_run == 6  # three planned, three more at most


def test_a_baseline_stalled_in_most_blocks_is_flagged_not_printed(monkeypatch):
    """PyTorch's pool stalled (a worker waiting for a core): a 5 us kernel reads 12 ms in
    blocks 1 and 2 while gpugrad reads 10 ms throughout. Both readings of the blocks say 0.83,
    agreeing; the stalled blocks are set aside because they are over UNSTABLE_FACTOR times the
    baseline's fastest block, and with the stall lasting, the row is flagged, not 0.83."""
    ScriptedTimes(monkeypatch)
    cases = block_cases(3, lambda b: 0.010, lambda b: 5e-6 if b == 0 else 0.012)
    blocks = Blocks(cases, DEVICE, blocks=3, yardstick=QuietYardstick())
    verdict = blocks.settle([("gpugrad", "torch")])["gpugrad", "torch"]
    assert verdict["ratio"] is None
    assert verdict["note"].startswith("unstable: torch's blocks differ up to 2.4e+03x")
    assert blocks.blocks_run == 6  # taken again, three more blocks at most


class LoadDuringBaseline:
    """A load that comes with the baseline's calls (a process busy exactly while PyTorch runs),
    slowing each by `extra` seconds, in `blocks_loaded` (None: every block); the yardstick
    finds `cores` cores busy beside a turn in which it ran."""

    def __init__(self, extra, cores=1.0, blocks_loaded=None):
        self.extra, self.cores, self.blocks_loaded = extra, cores, blocks_loaded
        self.loaded_calls = 0  # what the yardstick's readings count
        self.turns = 0
        self.yardstick = self

    def reading(self):
        return time.perf_counter(), self.loaded_calls

    def load(self, earlier, later):
        return self.cores if later[1] > earlier[1] else 0.0

    def slowdown(self, earlier, later):
        return 1.0

    def baseline(self, seconds):
        def turn():
            loaded = self.blocks_loaded is None or self.turns in self.blocks_loaded
            self.turns += 1
            self.loaded_calls += loaded
            return seconds + (self.extra if loaded else 0.0)
        return turn


@pytest.fixture
def turn_by_turn(monkeypatch):
    """Each turn judged by the load beside it alone, however short (scripted turns take no
    time, so the real rule would judge them by their whole block)."""
    monkeypatch.setattr(ratio_blocks, "YARDSTICK_WINDOW", 0.0)


def test_a_baseline_slowed_in_every_block_is_flagged_not_printed(monkeypatch, turn_by_turn):
    """gpugrad takes 10 ms and the baseline 5; a load slows the baseline to 15 ms in every
    block: the steady timings would print 0.667 where the machine's ratio is 2."""
    ScriptedTimes(monkeypatch)
    load = LoadDuringBaseline(extra=0.010)
    cases = {"gpugrad": lambda: 0.010, "torch": load.baseline(0.005)}
    blocks = Blocks(cases, DEVICE, blocks=3, yardstick=load.yardstick)
    verdict = blocks.settle([("gpugrad", "torch")])["gpugrad", "torch"]
    assert verdict["ratio"] is None
    assert verdict["note"].startswith("unstable (machine loaded): other processes kept 1.0 "
                                      "cores busy, a fixed workload ran 1.0x its quickest beside "
                                      "torch, loaded in 3 of 3 blocks")
    # a load beside every block is not waited out (it would double a busy machine's run)
    assert blocks.blocks_run == 3 and verdict["clean blocks"] == 0
    assert blocks.turn_note("torch").startswith("loaded: other processes kept 1.0 cores busy")
    assert blocks.median("torch") == pytest.approx(0.015)  # no clean turn: every turn's median
    assert blocks.turn_note("gpugrad") is None


def test_a_baseline_slowed_in_some_blocks_is_taken_again_and_measured_clean(monkeypatch,
                                                                           turn_by_turn):
    """The same load in the first two blocks only: those blocks are set aside, and the ratio
    comes from the clean ones, taken again as needed; it is the machine's 2, not 0.667."""
    ScriptedTimes(monkeypatch)
    load = LoadDuringBaseline(extra=0.010, blocks_loaded={0, 1})
    cases = {"gpugrad": lambda: 0.010, "torch": load.baseline(0.005)}
    blocks = Blocks(cases, DEVICE, blocks=3, yardstick=load.yardstick)
    verdict = blocks.settle([("gpugrad", "torch")])["gpugrad", "torch"]
    assert verdict["ratio"] == pytest.approx(2.0) and verdict["note"] is None
    assert verdict["clean blocks"] == 2 and blocks.blocks_run == 4
    assert blocks.median("torch") == pytest.approx(0.005)  # the times printed are the clean ones


class SleepingCases:
    """jacobian_cases stand-ins: gpugrad's cases sleep 4 ms, PyTorch's 2 ms, and when
    `loaded`, 6 ms more under a load the yardstick finds (real sleeps, timed by the real
    harness on DEVICE)."""

    def __init__(self, loaded):
        self.loaded, self.loaded_calls = loaded, 0

    def reading(self):
        return time.perf_counter(), self.loaded_calls

    def load(self, earlier, later):
        return 1.0 if later[1] > earlier[1] else 0.0

    def slowdown(self, earlier, later):
        return 1.0

    def baseline(self):
        if self.loaded:
            self.loaded_calls += 1
        time.sleep(0.008 if self.loaded else 0.002)

    def __call__(self, m, n, device):
        return {"gpugrad rev": lambda: time.sleep(0.004),
                "gpugrad fwd": lambda: time.sleep(0.004),
                "torch jacrev": self.baseline, "torch jacfwd": self.baseline}


@pytest.mark.slow
@pytest.mark.parametrize("loaded", [False, True])
def test_jacobian_suite_flags_a_slowed_baseline_and_says_which_ratio(monkeypatch, loaded):
    """The suite end to end on the default device with sleeping cases: quiet, gpugrad / torch
    reads 2 with no note; with the baseline slowed by 6 ms under a load the yardstick finds,
    every ratio is withheld with a note (0.5 would be printed otherwise), and the table says
    what its ratio column is."""
    cases = SleepingCases(loaded)
    monkeypatch.setattr(jacobian, "jacobian_cases", cases)
    rows = jacobian.jacobian_suite(DEVICE, quick=True, yardstick=cases)
    ours = [r for r in rows if r["impl"].startswith("gpugrad")]
    assert len(ours) == 4
    if loaded:
        assert all(r["gpugrad / torch"] is None and "machine loaded" in r["note"] for r in ours)
    else:
        assert all("note" not in r and 1.6 < r["gpugrad / torch"] < 2.4 for r in ours), ours
    table = format_table(rows)
    assert "ratio columns, each the median over clean blocks of the per-block ratio of" in table
    assert "gpugrad / torch: gg.jacobian's time / torch.func's in the same mode" in table
    assert max(len(line) for line in table.splitlines()[-5:]) <= 100
    # the figures behind each ratio go to the JSON, not the table
    assert "ratio checks" not in table
    assert all(r["ratio checks"][0]["ratio of"] == f"{r['impl']} / torch jac{r['impl'][-3:]}"
               for r in ours)
    reason = why_no_ratio(ours, "gpugrad / torch")
    assert (reason.startswith("no gpugrad / torch: 4 row(s) flagged, e.g. unstable (machine "
                              "loaded)") if loaded else reason)


def test_other_tables_get_no_ratio_legend():
    assert format_table([{"suite": None, "gpugrad / torch": 1.0}]).count("\n") == 1
    assert why_no_ratio([], "gpugrad / torch") == "no rows"
    assert "no baseline ran" in why_no_ratio(
        [{"suite": "jacobian", "gpugrad / torch": None}], "gpugrad / torch")


@pytest.fixture
def busy_process():
    """Another process spinning on a core, stopped until a test lets it run."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    busy.send_signal(signal.SIGSTOP)
    yield busy
    busy.kill()
    busy.wait()


def test_a_real_process_busy_during_the_baseline_is_found_by_the_real_yardstick(busy_process):
    """A real load: a busy process let run from the baseline's turn until gpugrad's, and the
    real yardstick (which reads /proc: Linux, where CI runs). The timings sleep, so only the
    yardstick can see it."""
    def ours():
        busy_process.send_signal(signal.SIGSTOP)
        time.sleep(0.004)

    def theirs():
        busy_process.send_signal(signal.SIGCONT)
        time.sleep(0.002)

    blocks = Blocks({"gpugrad": ours, "torch": theirs}, DEVICE, blocks=3,
                               min_seconds=ratio_blocks.YARDSTICK_WINDOW, min_repeats=3)
    verdict = blocks.settle([("gpugrad", "torch")])["gpugrad", "torch"]
    assert verdict["ratio"] is None and "machine loaded" in verdict["note"], verdict
    assert blocks.blocks_run == 3
    assert min(blocks.loads["torch"].values()) > ratio_blocks.YARDSTICK_TOLERANCE


def test_a_workload_slowed_beside_the_baseline_flags_it_without_other_processes(monkeypatch,
                                                                             turn_by_turn):
    """The CPU itself slower in the baseline's turns (a VM's neighbour on the same core: no
    other process here to count), seen by the yardstick's fixed workload alone."""
    ScriptedTimes(monkeypatch)
    load = LoadDuringBaseline(extra=0.010, cores=0.0)
    load.slowdown = lambda earlier, later: 2.0 if later[1] > earlier[1] else 1.0
    cases = {"gpugrad": lambda: 0.010, "torch": load.baseline(0.005)}
    verdict = Blocks(cases, DEVICE, blocks=3, yardstick=load).settle(
        [("gpugrad", "torch")])["gpugrad", "torch"]
    assert verdict["ratio"] is None and "a fixed workload ran 2.0x its quickest beside torch" in (
        verdict["note"])


class StalledPool(QuietYardstick):
    """No other process, the workload as quick as ever, and PyTorch's pool probe at 3x its
    quickest (its worker waiting for a core)."""

    def pool_slowdown(self, earlier, later):
        return 3.0


def test_a_stalled_pytorch_pool_flags_pytorch_turns_only(monkeypatch):
    ScriptedTimes(monkeypatch)
    times = {"gpugrad": lambda: 0.010, "torch": lambda: 0.015, "numpy": lambda: 0.005}
    blocks = Blocks(times, DEVICE, blocks=3, yardstick=StalledPool())
    verdicts = blocks.settle([("gpugrad", "torch"), ("gpugrad", "numpy")])
    assert verdicts["gpugrad", "torch"]["ratio"] is None
    assert "PyTorch's pool 3.0x beside torch" in verdicts["gpugrad", "torch"]["note"]
    # the probe says nothing about a turn that did not run on PyTorch's pool
    assert verdicts["gpugrad", "numpy"]["ratio"] == pytest.approx(2.0)


def test_the_real_yardstick_reads_its_workload_with_or_without_proc(monkeypatch):
    """Off Linux there are no counters: other processes read as 0 cores, and the workload's
    time over its quickest is the reading left."""
    yardstick = Yardstick()
    first, second = yardstick.reading(), yardstick.reading()
    assert yardstick.proc and yardstick.load(first, second) >= 0.0  # Linux, where CI runs
    assert yardstick.slowdown(first, second) >= 1.0
    monkeypatch.setattr(Yardstick, "_counters", staticmethod(lambda: None))
    yardstick = Yardstick()
    first = yardstick.reading()
    slowed = (time.perf_counter(), None, 2 * yardstick.quickest)  # twice its quickest time
    assert not yardstick.proc and yardstick.load(first, slowed) == 0.0
    assert yardstick.slowdown(first, slowed) == pytest.approx(2.0)


def test_the_real_yardstick_probes_pytorchs_pool():
    pytest.importorskip("torch", reason="the pool probe times PyTorch's thread pool")
    yardstick = Yardstick()
    first, second = yardstick.reading(), yardstick.reading()
    assert 0 < yardstick.pool_quickest <= min(first[3], second[3])
    assert yardstick.pool_slowdown(first, second) >= 1.0
