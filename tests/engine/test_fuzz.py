"""The differential fuzzer (tests/engine/fuzz.py) as CI runs it on the default device: random graphs
in every mode against PyTorch, the bitwise arrays-vs-recorded property, a run against finite
differences alone (which needs no PyTorch), every op in every mode, and the fuzzer's coverage
of the op table. A failure prints each failing graph with the command that replays it."""

import dataclasses
import os
import warnings

import numpy as np
import pytest

import fuzz
import gpugrad as gg
from gpugrad.ops import shortcuts

SEED = int(os.environ.get("GPUGRAD_FUZZ_SEED", "0"))  # CI's graphs; set it to fuzz others
CHUNK = 250  # graphs per test, so that a failure points at a mode and a range of seeds
GRAPHS = {"first": 1500, "second": 750, "forward": 750, "fwd_rev": 750, "nested_fwd": 750,
          "multi": 750, "float32": 750}
ARRAYS_GRAPHS = 750  # arrays_vs_recorded, which needs no reference
FD_GRAPHS = 50  # per mode, against finite differences alone
NO_TORCH = ("PyTorch is not installed (pip install torch==2.13.0); "
            "test_random_graphs_against_finite_differences checks the same modes without it")
NO_TORCH_REFEREE = ("PyTorch is not installed (pip install torch==2.13.0): this verdict is "
                    "about PyTorch's side")

# names in gg.OPS that no graph of the fuzzer records, each with the reason (none today: the
# backward ops are reached through their public functions, scatter through ops.shape.scatter,
# to_device through ops.shape.to_device on the tensor's own device)
EXCLUDED = {}


def _reference():
    return "torch" if fuzz.load_torch() is not None else "fd"


def _check(summary):
    if summary.excused:  # recorded, not skipped: the warnings summary lists them
        warnings.warn(fuzz.RefereeWarning(
            f"{len(summary.excused)} graph(s) disagreed where gpugrad is not to blame:\n"
            + summary.excused_report()))
    if summary.failures:
        pytest.fail(summary.report(), pytrace=False)


def _chunks(graphs):
    return [(mode, start) for mode, n in graphs.items() for start in range(0, n, CHUNK)]


@pytest.mark.parametrize("mode,start", _chunks(GRAPHS),
                         ids=[f"{m}-{s}" for m, s in _chunks(GRAPHS)])
def test_random_graphs_against_pytorch(mode, start):
    pytest.importorskip("torch", reason=NO_TORCH)
    _check(fuzz.run(SEED, mode, range(start, start + CHUNK), reference="torch"))


@pytest.mark.parametrize("start", range(0, ARRAYS_GRAPHS, CHUNK))
def test_backward_on_arrays_gives_the_recorded_rules_bits(start):
    """First-order backward run on arrays against the same rules recorded as Tensor ops
    (create_graph=True), bit for bit, in float32 and float64, where values fan out."""
    _check(fuzz.run(SEED, "arrays_vs_recorded", range(start, start + CHUNK), reference="fd"))


def test_the_arrays_vs_recorded_graphs_take_the_engines_shortcuts(monkeypatch):
    """The named shortcuts of ops/shortcuts.py happen in the graphs that the bitwise check
    above runs, so that each is compared with the plain rules recorded: relu's mask dropped
    for the output its consumer saves, the mask made again from that output, and the L2
    gradient added into the one pending for its weight."""
    taken = {"share": 0, "remake": 0, "into": 0}
    share, remake = shortcuts.share_saved_outputs, shortcuts.remake_from_output
    op = gg.OPS["half_sum_squares"]
    into = op.vjp_into

    def sharing_parents(node):
        return sum(1 for p in node.parents if p is not None and p.op is not None
                   and p.op.aux_from_output is not None and not p.freed and "y" in p.saved)

    def counted_share(node, xs):
        before = sharing_parents(node)
        share(node, xs)
        taken["share"] += sharing_parents(node) - before

    def counted_remake(node, pending, expand):
        before = sharing_parents(node)
        remake(node, pending, expand)
        taken["remake"] += before - sharing_parents(node)

    def counted_into(acc, g, x, y):
        out = into(acc, g, x, y=y)
        taken["into"] += out is None
        return out

    monkeypatch.setattr(shortcuts, "share_saved_outputs", counted_share)
    monkeypatch.setattr(shortcuts, "remake_from_output", counted_remake)
    monkeypatch.setattr(op, "vjp_into", counted_into)
    _check(fuzz.run(SEED, "arrays_vs_recorded", range(ARRAYS_GRAPHS), reference="fd"))
    assert all(taken.values()), f"a shortcut no graph took: {taken}"


@pytest.mark.parametrize("mode", list(GRAPHS))
def test_random_graphs_against_finite_differences(mode):
    _check(fuzz.run(SEED + 1, mode, range(FD_GRAPHS), reference="fd"))


@pytest.mark.parametrize("mode", fuzz.MODES)
def test_every_op_in_every_mode(mode):
    """Each op of the fuzzer in a small graph of its own, so that coverage owes nothing to
    luck (against PyTorch where it is installed, else against finite differences)."""
    _check(fuzz.sweep(mode, _reference()))


def _recorded_ops(kind_name, seed):
    """The names of the ops recorded by a graph forced to contain kind_name, with every leaf
    requiring grad so that every step is recorded."""
    program = fuzz.generate(seed, "first", force=kind_name)
    leaves = {i: fuzz.gg_leaf(v, "float64", requires_grad=True)
              for i, v in enumerate(program.values) if v.op == "leaf"}
    with gg.autograd.record():
        values = fuzz.run_values(program, "gg", leaves)
    recorded = [values[i] for i in program.steps if values[i].dtype.kind == "f"]
    return {node.op for node in gg.graph_of(recorded).nodes}


def test_the_fuzzer_covers_every_op_in_the_table():
    declared = {name for k in fuzz.KINDS.values() for name in k.covers}
    assert not sorted(set(EXCLUDED) - set(gg.OPS)), "exclusions of ops that are not in gg.OPS"
    assert not sorted(set(EXCLUDED) & declared), "exclusions of ops that the fuzzer covers"
    missing = sorted(set(gg.OPS) - declared - set(EXCLUDED))
    assert not missing, f"ops in gg.OPS that no kind of tests/engine/fuzz.py calls: {missing}"
    unknown = sorted(declared - set(gg.OPS))
    assert not unknown, f"kinds claim ops that gg.OPS lacks: {unknown}"
    recorded, errors = set(), []
    for name, kind in sorted(fuzz.KINDS.items()):
        for seed in range(5):  # a few graphs, in case one trips over a gpugrad bug
            try:
                ops = _recorded_ops(name, seed)
            except Exception as e:
                errors.append(f"{name} (seed {seed}): {type(e).__name__}: {e}")
                continue
            recorded |= ops
            if ops & set(kind.covers):
                break
        else:
            pytest.fail(f"no graph forced to contain {name} recorded any of {kind.covers}: "
                        f"{errors}")
    unrecorded = sorted(set(gg.OPS) - recorded - set(EXCLUDED))
    assert not unrecorded, f"ops that no graph of the sweep records: {unrecorded}"


def test_every_graph_is_rebuilt_from_its_seed():
    for mode in fuzz.MODES:
        seed = fuzz.graph_seed(SEED, 7)
        assert fuzz.generate(seed, mode).describe() == fuzz.generate(seed, mode).describe()
    assert fuzz.graph_seed(0, 1) != fuzz.graph_seed(1, 0)
    assert fuzz.generate(1, "first").describe() != fuzz.generate(2, "first").describe()


def test_replay_prints_the_graph_and_each_check(capsys):
    assert fuzz.main(["--replay", "12345", "--mode", "first", "--reference", "fd"]) == 0
    out = capsys.readouterr().out
    assert "graph seed 12345, mode first" in out and "head = " in out
    assert "first/backward: ok" in out


# the referee, on graphs written by hand ----------------------------------------------------


def _program(mode, values, head):
    """A hand-written program: values as fuzz.Value, head as fuzz.Program.head."""
    fuzz.mark_grad_paths(values)
    leaves = [v for v in values if v.op == "leaf" and v.requires_grad]
    ones = [np.ones(v.shape) for v in leaves]
    return fuzz.Program(0, mode, "float64", None, values, head, [len(values) - 1, fuzz.HEAD],
                        ones, ones, ones, [np.ones(values[-1].shape), np.ones(())], 0)


def _leaf(data):
    data = np.asarray(data, dtype=np.float64)
    return fuzz.Value("leaf", data.shape, "float64", 1.0, data=data, requires_grad=True)


def _step(op, args, shape, **params):
    return fuzz.Value(op, shape, "float64", 1.0, tuple(args), params, grad_args=tuple(args))


def _verdicts(program, reference):
    case = fuzz.Case(program, reference)
    fuzz.MODE_CHECKS[program.mode](case)
    return {r.check: r.verdict for r in case.results}


class _WrongSin(gg.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * gg.cos(x) * 1.5


def _sin_program():
    return _program("first", [_leaf([0.3, -1.2, 2.0]), _step("sin", [0], (3,))],
                    [(1, np.array([1.0, -0.5, 2.0]), "weighted")])


@pytest.mark.parametrize("reference", ["torch", "fd"])
def test_the_referee_blames_gpugrad_for_a_wrong_gradient(reference, monkeypatch):
    if reference == "torch":
        pytest.importorskip("torch", reason=NO_TORCH_REFEREE)
    wrong = dataclasses.replace(fuzz.KINDS["sin"], gg=lambda x, p: _WrongSin.apply(x[0]))
    monkeypatch.setitem(fuzz.KINDS, "sin", wrong)
    verdicts = _verdicts(_sin_program(), reference)
    assert verdicts["first/backward"] == "gpugrad"
    assert verdicts["first/values"] == "ok"


def test_the_referee_clears_gpugrad_when_pytorch_is_wrong(monkeypatch):
    torch = pytest.importorskip("torch", reason=NO_TORCH_REFEREE)

    class WrongSin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sin(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * torch.cos(x) * 1.5
    wrong = dataclasses.replace(fuzz.KINDS["sin"], pt=lambda x, p: WrongSin.apply(x[0]))
    monkeypatch.setitem(fuzz.KINDS, "sin", wrong)
    verdicts = _verdicts(_sin_program(), "torch")
    assert verdicts["first/backward"] == "pytorch"


def test_the_referee_clears_a_disagreement_at_a_kink(monkeypatch):
    """relu at exactly 0 with PyTorch's side made to pass the gradient there: the finite
    differences' stencil crosses the kink, so neither side is blamed."""
    torch = pytest.importorskip("torch", reason=NO_TORCH_REFEREE)
    other = dataclasses.replace(fuzz.KINDS["relu"],
                                pt=lambda x, p: torch.where(x[0] >= 0, x[0], 0 * x[0]))
    monkeypatch.setitem(fuzz.KINDS, "relu", other)
    program = _program("first", [_leaf([0.0, 1.5, -0.7]), _step("relu", [0], (3,))],
                       [(1, np.array([1.0, 2.0, 3.0]), "weighted")])
    assert _verdicts(program, "torch")["first/backward"] == "kink"
    program.values[0].data = np.array([0.25, 1.5, -0.7])
    assert _verdicts(program, "torch")["first/backward"] == "ok"


def test_float32_results_are_judged_against_float64():
    program = _program("float32", [_leaf([0.3, -1.2, 2.0]), _step("sin", [0], (3,))],
                       [(1, np.array([1.0, -0.5, 2.0]), "weighted")])
    for v in program.values:
        v.dtype = "float32"
    program.dtype = "float32"
    verdicts = _verdicts(program, _reference())
    assert set(verdicts.values()) == {"ok"}, verdicts
