"""A differential fuzzer: random computation graphs over every op of gpugrad's table, built from
one seed, run in gpugrad and in PyTorch (float64), with values and every leaf's gradient
compared in eight modes (MODES).

    python -m tests.engine.fuzz --graphs 100000 --seed 0 [--mode all|first|...] [--device cpu|strict]
    python -m tests.engine.fuzz --replay SEED --mode MODE [--op KIND]   # one graph, printed, with diffs

Graph i of a run with base seed S is built from graph_seed(S, i), its mode and (for the
every-op sweep) a forced op alone, so each failure prints the command that rebuilds it. Where
gpugrad and PyTorch disagree, central finite differences of the same function in float64
referee: if they side with gpugrad and not PyTorch, or their stencil crosses a kink (relu, abs,
clip, ties, a where's boundary: any piecewise op on the leaves' path changes branch), the graph
is recorded as not gpugrad's; anything else is a gpugrad mismatch. Without PyTorch the same
graphs are checked against the finite differences alone (reference="fd").
"""

import argparse
import dataclasses
import math
import sys
import time
import traceback
import zlib

import numpy as np

import gpugrad as gg
from gpugrad.devices.cuda import kernels
from gpugrad.ops import activation_numba

MODES = ("first", "second", "forward", "fwd_rev", "nested_fwd", "multi", "float32",
         "arrays_vs_recorded")
HEAD = -1  # an output index meaning "the head": the weighted sum of the head's values
BOUND_LIMIT = 40.0  # values whose bound passes this are scaled back (exp must stay finite)
MAX_SIZE = 36  # elements per value: small graphs, many of them

# gpugrad (float64) against PyTorch (float64): |a - b| <= RTOL |b| + ATOL max(1, max |b|);
# ROUNDED where a float64 graph rounds through float32 (astype), which forward and reverse
# mode, or two libraries, may do at different points
RTOL, ATOL = 1e-7, 1e-9
ROUNDED = 1e-6
# gpugrad float32 against PyTorch float64, relative to each array's largest element
RTOL32 = 1e-4
# finite differences: (step, rtol, atol relative to the estimate's scale) by order
FD = {1: (1e-6, 1e-5, 1e-6), 2: (1e-4, 1e-3, 1e-4)}

torch = F = None  # imported on first use, so that gpugrad's side runs without PyTorch


def load_torch():
    """PyTorch, or None where it is not installed."""
    global torch, F
    if torch is None:
        try:
            import torch as _torch
            import torch.nn.functional as _F
        except ImportError:
            return None
        torch, F = _torch, _F
    return torch


def graph_seed(base_seed, index):
    """The seed of graph `index` of a run: reproducible from the pair, distinct across both."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, np.uint64)[0] >> 1)


def host(t):
    """A gpugrad tensor's values on the host, copied explicitly (the strict device refuses an
    implicit conversion)."""
    return t.numpy()


def pt_host(t):
    """A PyTorch tensor's values, including the unallocated zeros torch.func hands back."""
    t = t.detach()
    if getattr(t, "_is_zerotensor", lambda: False)():
        return np.zeros(tuple(t.shape))
    return t.numpy()


# ----------------------------------------------------------------------------- the program


@dataclasses.dataclass
class Value:
    op: str  # "leaf" or the name of a Kind
    shape: tuple
    dtype: str
    bound: float  # an upper bound on |element|, to keep exp and powers finite
    args: tuple = ()
    params: dict = dataclasses.field(default_factory=dict)
    data: np.ndarray = None  # a leaf's values: float64, exactly representable in float32
    requires_grad: bool = False
    grad_args: tuple = ()  # the args it passes a gradient to (not a where's condition)
    on_grad_path: bool = False  # depends on a leaf that requires grad, through grad_args


@dataclasses.dataclass
class Program:
    seed: int
    mode: str
    dtype: str
    force: str
    values: list
    head: list  # [(value index, weights, how)]: the head adds sum(values[i] * weights)
    #             (how "weighted"), or weights * sum(values[i]) or * mean(values[i]), whose
    #             gradient is uniform (a shortcut of the engine's)
    outputs: list  # what f returns in the forward, nested_fwd and multi modes (HEAD allowed)
    tangents: list  # per leaf that requires grad: the direction of jvp ...
    tangents2: list  # ... and of the outer jvp (nested_fwd)
    second_weights: list  # per leaf that requires grad: weights on its first gradient
    cotangents: list  # per output
    argnums: object  # gg.grad's argnums in fwd_rev mode

    @property
    def grad_leaves(self):
        return [i for i, v in enumerate(self.values) if v.op == "leaf" and v.requires_grad]

    @property
    def rounds_to_float32(self):
        return any(v.op == "astype" and v.params["variant"] == "roundtrip" and v.on_grad_path
                   for v in self.values)

    @property
    def steps(self):
        return [i for i, v in enumerate(self.values) if v.op != "leaf"]

    def output_shape(self, o):
        return () if o == HEAD else self.values[o].shape

    def describe(self):
        lines = [f"graph seed {self.seed}, mode {self.mode}, {self.dtype}"
                 + (f", forced op {self.force}" if self.force else "")]
        for i, v in enumerate(self.values):
            if v.op == "leaf":
                kind = "requires grad" if v.requires_grad else "constant"
                data = np.array2string(v.data, separator=", ", floatmode="unique",
                                       max_line_width=200, threshold=64)
                lines.append(f"  v{i} = leaf {v.shape} {v.dtype}, {kind}: {data}")
            else:
                args = ", ".join(f"v{a}" for a in v.args)
                # "_" marks what only the PyTorch side reads (flat positions of a gather)
                params = ", ".join(f"{k}={_show(p)}" for k, p in v.params.items()
                                   if not k.startswith("_"))
                lines.append(f"  v{i} = {v.op}({args}{'; ' if params else ''}{params})"
                             f"  -> {v.shape} {v.dtype}")
        terms = [f"sum(v{i} * w{k})" if how == "weighted" else f"{w!r} * {how}(v{i})"
                 for k, (i, w, how) in enumerate(self.head)]
        lines.append(f"  head = {' + '.join(terms)}")
        for k, (_, w, how) in enumerate(self.head):
            if how == "weighted":
                lines.append(f"    w{k} = {_show(w)}")
        outs = ", ".join("head" if o == HEAD else f"v{o}" for o in self.outputs)
        lines.append(f"  outputs (forward/nested_fwd/multi modes): {outs}; argnums (fwd_rev) "
                     f"{self.argnums}")
        return "\n".join(lines)


def _show(p):
    if isinstance(p, np.ndarray):
        return "array(" + np.array2string(p, separator=", ", floatmode="unique",
                                          max_line_width=200, threshold=64) + ")"
    if isinstance(p, tuple):
        return "(" + ", ".join(_show(q) for q in p) + ("," if len(p) == 1 else "") + ")"
    return repr(p)


# ----------------------------------------------------------------------------- building


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


def _promote(*dtypes):
    return "float64" if "float64" in dtypes else "float32"


class Builder:
    """Grows a program one op at a time; operands are earlier values (so values fan out) or
    new leaves of a shape the op needs."""

    def __init__(self, rng, dtype):
        self.rng = rng
        self.dtype = dtype
        self.values = []

    # values
    def add(self, value):
        self.values.append(value)
        return len(self.values) - 1

    def leaf(self, shape, requires_grad=None, zeros=False):
        """A new input; zeros: with some elements exactly 0 (a power's base, a kink)."""
        rng = self.rng
        shape = tuple(int(d) for d in shape)
        a = np.clip(rng.standard_normal(shape), -3, 3)
        a = np.array(np.where(np.abs(a) < 0.05, 0.37, a), dtype=np.float64)  # off the kinks
        if zeros and a.size:
            a.flat[rng.integers(a.size)] = 0.0
            a[rng.random(shape) < 0.3] = 0.0
        a = a.astype(np.float32).astype(np.float64)  # the float32 mode sees the same inputs
        rg = bool(rng.random() < 0.75) if requires_grad is None else requires_grad
        return self.add(Value("leaf", shape, self.dtype, float(np.max(np.abs(a), initial=0.0)),
                              data=a, requires_grad=rg, on_grad_path=rg))

    def step(self, op, args, params, shape, bound, dtype=None, differentiable=None):
        """Appends a value; `differentiable` lists the args it has a gradient for (all)."""
        args = tuple(args)
        dtype = dtype or _promote(*(self.values[a].dtype for a in args))
        grad_args = tuple(args if differentiable is None else differentiable)
        on_path = any(self.values[a].on_grad_path for a in grad_args)
        i = self.add(Value(op, tuple(int(d) for d in shape), dtype, float(bound), args, params,
                           grad_args=grad_args, on_grad_path=on_path))
        if bound > BOUND_LIMIT:  # keep later exp, power and products finite
            i = self.scalar(i, "*", 4.0 / bound)
        return i

    def scalar(self, i, op, s, side="right"):
        v = self.values[i]
        bound = {"+": v.bound + abs(s), "-": v.bound + abs(s), "*": v.bound * abs(s)}[op]
        return self.step("scalar_arith", (i,), {"op": op, "scalar": float(s), "side": side},
                         v.shape, bound)

    # choosing operands
    def pick(self, ok=None):
        """An earlier value satisfying ok, most often the latest one (depth), else any (fan-out)."""
        cands = [i for i, v in enumerate(self.values) if ok is None or ok(v)]
        if not cands:
            return None
        if self.rng.random() < 0.5:
            return cands[-1]
        return int(cands[self.rng.integers(len(cands))])

    def operand(self, ok=None, shape=None, new=0.2):
        i = None if self.rng.random() < new else self.pick(ok)
        if i is None:
            i = self.leaf(shape() if callable(shape) else (shape if shape is not None
                                                           else self.shape()))
        return i

    def exact(self, shape, reuse=0.4):
        """A value of exactly this shape: an earlier one sometimes, else a new leaf."""
        shape = tuple(shape)
        if self.rng.random() < reuse:
            i = self.pick(lambda v: v.shape == shape)
            if i is not None:
                return i
        return self.leaf(shape)

    def shape(self, min_rank=0, max_rank=3, max_size=12):
        rng = self.rng
        ranks = [r for r in range(min_rank, max_rank + 1)]
        probs = np.array([{0: 0.1, 1: 0.3, 2: 0.4, 3: 0.2, 4: 0.05}[r] for r in ranks])
        rank = int(rng.choice(ranks, p=probs / probs.sum()))
        dims = [int(rng.choice([1, 2, 3], p=[0.25, 0.4, 0.35])) for _ in range(rank)]
        while _size(dims) > max_size:
            dims[int(np.argmax(dims))] -= 1
        return tuple(dims)

    def partner_shape(self, shape):
        """A shape that broadcasts with `shape`: unit dims on either side, fewer or more dims,
        or 0-d."""
        rng = self.rng
        for _ in range(10):
            dims = list(shape)
            for k, d in enumerate(dims):
                r = rng.random()
                if r < 0.25:
                    dims[k] = 1
                elif d == 1 and r < 0.5:
                    dims[k] = int(rng.integers(2, 4))  # this side broadcasts the other
            r = rng.random()
            if dims and r < 0.25:
                dims = dims[int(rng.integers(1, len(dims) + 1)):]
            elif r < 0.45 and len(dims) < 4:
                dims = [int(rng.integers(1, 4))] + dims
            elif r < 0.55:
                dims = []
            out = np.broadcast_shapes(tuple(shape), tuple(dims))
            if _size(out) <= MAX_SIZE:
                return tuple(dims)
        return tuple(shape)

    def partner(self, i):
        """A second operand that broadcasts with value i: an earlier value or a new leaf."""
        shape = self.values[i].shape
        if self.rng.random() < 0.35:
            j = self.pick(lambda v: _broadcastable(v.shape, shape))
            if j is not None:
                return j
        return self.leaf(self.partner_shape(shape))

    # domains
    def positive(self, i):
        """A positive function of value i (>= 0.5, or exp of a bounded value), for log, sqrt,
        a denominator or a power's base."""
        v = self.values[i]
        r = self.rng.random()
        if r < 0.4:
            sq = self.step("square", (i,), {}, v.shape, v.bound ** 2)
        elif r < 0.7:
            sq = self.step("multiply", (i, i), {"style": "op"}, v.shape, v.bound ** 2)
        else:
            j = self.bounded(i, 2.0)
            return self.step("exp", (j,), {}, v.shape, math.exp(self.values[j].bound))
        return self.scalar(sq, "+", 0.5)

    def bounded(self, i, limit):
        v = self.values[i]
        return i if v.bound <= limit else self.scalar(i, "*", limit / v.bound)


def _broadcastable(a, b):
    try:
        return _size(np.broadcast_shapes(a, b)) <= MAX_SIZE
    except ValueError:
        return False


def _dummy(shape):
    return np.zeros(shape)


# ----------------------------------------------------------------------------- the op kinds


@dataclasses.dataclass
class Kind:
    """One way the fuzzer calls gpugrad: build(builder) appends it (and whatever makes its
    operands valid) to a program; gg and pt compute it from the operand tensors and params;
    kink(operands, params, output) gives the branch each element is on: an array whose
    change between two points means a kink lies between them."""
    name: str
    covers: tuple  # the names in gg.OPS that it records
    build: object
    gg: object
    pt: object
    kink: object = None


KINDS = {}


def kind(name, covers, build, gg_fn, pt_fn, kink=None):
    KINDS[name] = Kind(name, tuple(covers), build, gg_fn, pt_fn, kink)


def _pt_same(*xs):
    """Cast PyTorch operands to their widest float dtype: NumPy's rule (a 0-d float64 array
    promotes a float32 array), where PyTorch would keep float32."""
    ts = [x for x in xs if isinstance(x, torch.Tensor)]
    if any(t.dtype == torch.float64 for t in ts):
        return [x.to(torch.float64) if isinstance(x, torch.Tensor) else x for x in xs]
    return list(xs)


def _side(d):
    """The branch of a piecewise op whose pieces meet where d == 0 (itself a branch: a point
    on the kink that the stencil moves off has crossed it)."""
    return np.sign(np.asarray(d, dtype=np.float64))


# elementwise, two operands --------------------------------------------------------------


def _binary_build(name, positive_b=False):
    def build(b):
        i = b.operand()
        j = b.partner(i)
        if positive_b:
            j = b.positive(j)
        vi, vj = b.values[i], b.values[j]
        shape = np.broadcast_shapes(vi.shape, vj.shape)
        bound = {"add": vi.bound + vj.bound, "subtract": vi.bound + vj.bound,
                 "multiply": vi.bound * vj.bound, "divide": vi.bound / 0.1}[name]
        if name == "divide" and b.values[j].op == "scalar_arith":
            bound = vi.bound / 0.5
        style = b.rng.choice(["op", "fn"])
        return b.step(name, (i, j), {"style": str(style)}, shape, bound)
    return build


_OPERATORS = {"add": "__add__", "subtract": "__sub__", "multiply": "__mul__",
              "divide": "__truediv__"}


def _gg_binary(name):
    def apply(x, p):
        if p["style"] == "op":
            return getattr(x[0], _OPERATORS[name])(x[1])
        return getattr(gg, name)(x[0], x[1])
    return apply


def _pt_binary(name):
    def apply(x, p):
        a, b = _pt_same(*x)
        return getattr(a, _OPERATORS[name])(b)
    return apply


for _name in _OPERATORS:
    kind(_name, [_name], _binary_build(_name, positive_b=_name == "divide"), _gg_binary(_name),
         _pt_binary(_name))


def _scalar_build(b):
    rng = b.rng
    op = str(rng.choice(["+", "-", "*", "/"]))
    side = str(rng.choice(["left", "right"]))
    s = float(rng.choice([2.5, -1.5, 0.5, 3.0, 1.0]))
    i = b.operand()
    if op == "/" and side == "left":
        i = b.positive(i)
    v = b.values[i]
    bound = {"+": v.bound + abs(s), "-": v.bound + abs(s), "*": v.bound * abs(s),
             "/": (abs(s) / 0.1 if side == "left" else v.bound / abs(s))}[op]
    return b.step("scalar_arith", (i,), {"op": op, "scalar": s, "side": side}, v.shape, bound)


def _scalar_apply(x, p):
    a, s, op = x[0], p["scalar"], p["op"]
    if p["side"] == "right":
        return a + s if op == "+" else a - s if op == "-" else a * s if op == "*" else a / s
    return s + a if op == "+" else s - a if op == "-" else s * a if op == "*" else s / a


kind("scalar_arith", ["add", "subtract", "multiply", "divide"], _scalar_build,
     _scalar_apply, _scalar_apply)


def _power_build(b):
    i = b.positive(b.operand())
    j = b.bounded(b.partner(i), 2.0)
    vi, vj = b.values[i], b.values[j]
    return b.step("power", (i, j), {"style": str(b.rng.choice(["op", "fn"]))},
                  np.broadcast_shapes(vi.shape, vj.shape), (max(vi.bound, 2.0)) ** vj.bound)


kind("power", ["power"], _power_build,
     lambda x, p: x[0] ** x[1] if p["style"] == "op" else gg.power(x[0], x[1]),
     lambda x, p: torch.pow(*_pt_same(*x)))


def _power_scalar_build(b):
    rng = b.rng
    r = rng.random()
    if r < 0.45:  # an integer exponent: any base, exactly 0 included now and then
        k = int(rng.choice([0, 1, 2, 3]))
        i = b.leaf(b.shape(), zeros=True) if rng.random() < 0.3 else b.operand()
        i = b.bounded(i, 3.0)
        return b.step("power_scalar", (i,), {"exponent": k, "side": "base"}, b.values[i].shape,
                      max(b.values[i].bound, 1.0) ** k)
    if r < 0.8:  # negative or fractional exponents need a positive base
        k = float(rng.choice([-1, -2, 0.5, 1.5, -0.5, 2.5]))
        i = b.bounded(b.positive(b.operand()), 3.0)
        return b.step("power_scalar", (i,), {"exponent": k, "side": "base"}, b.values[i].shape,
                      max(b.values[i].bound, 1.0) ** abs(k) * 50)
    s = float(rng.choice([0.5, 2.0, 3.0]))
    i = b.bounded(b.operand(), 2.0)
    return b.step("power_scalar", (i,), {"exponent": s, "side": "exponent"}, b.values[i].shape,
                  s ** 2 if s > 1 else 4.0)


def _power_scalar(x, p):
    return x[0] ** p["exponent"] if p["side"] == "base" else p["exponent"] ** x[0]


kind("power_scalar", ["power"], _power_scalar_build, _power_scalar, _power_scalar)


def _extremum_build(name):
    def build(b):
        rng = b.rng
        i = b.operand()
        r = rng.random()
        if r < 0.15:
            return b.step(name, (i,), {"scalar": float(rng.choice([0.0, 0.3, -0.5]))},
                          b.values[i].shape, max(b.values[i].bound, 0.5))
        j = i if r < 0.22 else b.partner(i)  # maximum(a, a): ties everywhere, split 50/50
        vi, vj = b.values[i], b.values[j]
        return b.step(name, (i, j), {}, np.broadcast_shapes(vi.shape, vj.shape),
                      max(vi.bound, vj.bound))
    return build


def _extremum_kink(x, p, y):
    return _side(np.asarray(x[0]) - (p["scalar"] if "scalar" in p else x[1]))


def _pt_extremum(fn):
    def apply(x, p):
        if "scalar" in p:
            return fn(x[0], torch.full_like(x[0], p["scalar"]))
        return fn(*_pt_same(*x))
    return apply


kind("maximum", ["maximum"], _extremum_build("maximum"),
     lambda x, p: gg.maximum(x[0], p["scalar"] if "scalar" in p else x[1]),
     _pt_extremum(lambda a, b: torch.maximum(a, b)), _extremum_kink)
kind("minimum", ["minimum"], _extremum_build("minimum"),
     lambda x, p: gg.minimum(x[0], p["scalar"] if "scalar" in p else x[1]),
     _pt_extremum(lambda a, b: torch.minimum(a, b)), _extremum_kink)


def _where_build(b):
    rng = b.rng
    i = b.operand()
    params = {}
    args = [i]
    if rng.random() < 0.2:
        params["b_scalar"] = float(rng.choice([0.0, 1.5]))
    else:
        args.append(b.partner(i))
    out = np.broadcast_shapes(*(b.values[a].shape for a in args))
    if rng.random() < 0.6:  # the condition compares a value with a threshold
        c = b.operand(lambda v: _broadcastable(v.shape, out), shape=lambda: b.partner_shape(out))
        params["threshold"] = float(rng.choice([0.0, 0.25]))
        params["cond"] = "value"
        args.append(c)
        out = np.broadcast_shapes(out, b.values[c].shape)
    else:
        mask_shape = b.partner_shape(out)
        params["cond"] = "mask"
        params["mask"] = rng.random(mask_shape) < 0.5
        out = np.broadcast_shapes(out, mask_shape)
    chosen = args[: 1 if "b_scalar" in params else 2]  # the condition has no gradient
    bound = max([b.values[a].bound for a in chosen] + [1.5])
    return b.step("where", args, params, out, bound,
                  dtype=_promote(*(b.values[a].dtype for a in chosen)), differentiable=chosen)


def _where_parts(x, p):
    a = x[0]
    other = p["b_scalar"] if "b_scalar" in p else x[1]
    return a, other


def _gg_where(x, p):
    a, other = _where_parts(x, p)
    cond = x[-1] > p["threshold"] if p["cond"] == "value" else gg.tensor(p["mask"])
    return gg.where(cond, a, other)


def _pt_where(x, p):
    a, other = _where_parts(x, p)
    cond = x[-1] > p["threshold"] if p["cond"] == "value" else torch.as_tensor(p["mask"])
    if isinstance(other, float):
        return torch.where(cond, a, torch.full_like(a, other))
    a, other = _pt_same(a, other)
    return torch.where(cond, a, other)


def _where_kink(x, p, y):
    return _side(np.asarray(x[-1]) - p["threshold"] if p["cond"] == "value" else 1.0)


kind("where", ["where"], _where_build, _gg_where, _pt_where, _where_kink)


# elementwise, one operand ----------------------------------------------------------------


def unary(name, gg_fn, pt_fn, bound, domain=None, params=None, kink=None):
    """An elementwise op of one operand. domain: what its operand is mapped into first
    ("positive", "nonnegative", "small" for exp, "unit" for tan); bound(params, b): the
    output's bound from the operand's."""
    def build(b):
        i = b.operand()
        v = b.values[i]
        if domain == "positive":
            i = b.positive(i)
        elif domain == "nonnegative":
            i = b.step("square", (i,), {}, v.shape, v.bound ** 2)
        elif domain == "small":
            i = b.bounded(i, 3.0)
        elif domain == "unit" and v.bound > 1.2:
            i = b.step("tanh", (i,), {}, v.shape, 1.0)
        elif domain == "inside_unit":  # (-0.9, 0.9): arcsin's and arctanh's derivatives stay finite
            i = b.scalar(b.step("tanh", (i,), {}, v.shape, 1.0), "*", 0.9)
        elif domain == "above_one":  # >= 1.5, for arccosh
            i = b.scalar(b.positive(i), "+", 1.0)
        p = params(b.rng) if params else {}
        return b.step(name, (i,), p, b.values[i].shape, bound(p, b.values[i].bound))
    kind(name, [name], build, gg_fn, pt_fn, kink)


def _kink_at_zero(x, p, y):
    return _side(x[0])


def _pt_function(path):
    """PyTorch's function of one tensor by its dotted name ("torch.exp", "F.silu")."""
    module, attr = path.split(".")

    def apply(x, p):
        return getattr(torch if module == "torch" else F, attr)(x[0])
    return apply


def _gg_function(name):
    def apply(x, p):
        return getattr(gg, name)(x[0])
    return apply


# fmt: off
# name, PyTorch's function, the bound of the output from the operand's, domain, kink
for _name, _theirs, _bound, _domain, _kink in [
    ("square",   "torch.square",  lambda p, b: b * b,         None,          None),
    ("exp",      "torch.exp",     lambda p, b: math.exp(b),   "small",       None),
    ("expm1",    "torch.expm1",   lambda p, b: math.exp(b),   "small",       None),
    ("log",      "torch.log",     lambda p, b: math.log(max(b, 2)) + 3, "positive", None),
    ("log1p",    "torch.log1p",   lambda p, b: math.log1p(b), "nonnegative", None),
    ("sqrt",     "torch.sqrt",    lambda p, b: math.sqrt(b),  "positive",    None),
    ("abs",      "torch.abs",     lambda p, b: b,             None,          _kink_at_zero),
    ("sin",      "torch.sin",     lambda p, b: 1.0,           None,          None),
    ("cos",      "torch.cos",     lambda p, b: 1.0,           None,          None),
    ("tan",      "torch.tan",     lambda p, b: 2.6,           "unit",        None),
    ("tanh",     "torch.tanh",    lambda p, b: 1.0,           None,          None),
    ("erf",      "torch.erf",     lambda p, b: 1.0,           None,          None),
    ("sigmoid",  "torch.sigmoid", lambda p, b: 1.0,           None,          None),
    ("relu",     "torch.relu",    lambda p, b: b,             None,          _kink_at_zero),
    ("silu",     "F.silu",        lambda p, b: b + 0.3,       None,          None),
    # softsign's second derivative jumps at 0
    ("softsign", "F.softsign",    lambda p, b: 1.0,           None,          _kink_at_zero),
]:
    unary(_name, _gg_function(_name), _pt_function(_theirs), _bound, _domain, kink=_kink)
# fmt: on


def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


unary("negative", lambda x, p: -x[0] if p["style"] == "operator" else gg.negative(x[0]),
      lambda x, p: -x[0], lambda p, b: b,
      params=lambda rng: {"style": _choice(rng, ["fn", "operator"])})
# the parameters' defaults are also left out of the call now and then
unary("gelu", lambda x, p: gg.gelu(x[0], **p), lambda x, p: F.gelu(
          x[0], approximate=p.get("approximate", "none")), lambda p, b: b + 0.2,
      params=lambda rng: _choice(rng, [{}, {"approximate": "none"}, {"approximate": "tanh"}]))
unary("leaky_relu", lambda x, p: gg.leaky_relu(x[0], **p),
      lambda x, p: F.leaky_relu(x[0], p.get("negative_slope", 0.01)),
      lambda p, b: b * max(1.0, abs(p.get("negative_slope", 0.01))),
      params=lambda rng: _choice(rng, [{}] + [{"negative_slope": s}
                                              for s in (0.1, -0.2, 0.0, 1.5)]),
      kink=_kink_at_zero)
unary("elu", lambda x, p: gg.elu(x[0], **p), lambda x, p: F.elu(x[0], p.get("alpha", 1.0)),
      lambda p, b: b + abs(p.get("alpha", 1.0)),
      params=lambda rng: _choice(rng, [{}] + [{"alpha": a} for a in (0.5, -0.5, 2.0)]),
      kink=_kink_at_zero)


_SOFTPLUS_DEFAULTS = {"beta": 1.0, "threshold": 20.0}


def _softplus_params(rng):
    return {"beta": float(rng.choice([1.0, 2.0, 0.5])),
            "threshold": float(rng.choice([20.0, 1.0, 3.0, 0.5]))}


def _softplus_kink(x, p, y):
    """softplus switches to the identity where beta x > threshold (a jump in the slope)."""
    return _side(p["beta"] * np.asarray(x[-1]) - p["threshold"])


unary("softplus", lambda x, p: gg.softplus(x[0]) if p == _SOFTPLUS_DEFAULTS
      else gg.softplus(x[0], beta=p["beta"], threshold=p["threshold"]),
      lambda x, p: F.softplus(x[0], beta=p["beta"], threshold=p["threshold"]),
      lambda p, b: b + 1.5, params=_softplus_params, kink=_softplus_kink)


def _clip_params(rng):
    lo, hi = sorted(rng.choice([-1.0, -0.5, 0.0, 0.2, 0.7, 1.2], size=2, replace=False))
    which = rng.choice(["both", "min", "max"])
    return {"a_min": float(lo) if which != "max" else None,
            "a_max": float(hi) if which != "min" else None,
            "style": str(rng.choice(["positional", "keyword"]))}


def _clip_kink(x, p, y):
    return np.stack([_side(np.asarray(x[0]) - p[k]) for k in ("a_min", "a_max")
                     if p[k] is not None])


unary("clip", lambda x, p: gg.clip(x[0], p["a_min"], p["a_max"]) if p["style"] == "positional"
      else gg.clip(x[0], a_min=p["a_min"], a_max=p["a_max"]),
      lambda x, p: torch.clamp(x[0], p["a_min"], p["a_max"]),
      lambda p, b: b, params=_clip_params, kink=_clip_kink)


# the table's backward ops, through the public functions, each after its activation -------


def _backward_build(name, params=None):
    def build(b):
        x = b.operand()
        shape = b.values[x].shape
        g = b.exact(shape)
        p = params(b.rng) if params else {}
        bound = b.values[g].bound * 2.0
        if name == "relu_backward":
            p["bits"] = b.rng.random(shape) < 0.5
            return b.step(name, (g,), p, shape, bound)
        if name == "relu_backward_from_output":
            # relu's output only picks the branch: no gradient reaches it, nor its dtype
            return b.step(name, (g, x), p, shape, bound, dtype=b.values[g].dtype,
                          differentiable=(g,))
        return b.step(name, (g, x), p, shape, bound)
    return build


def _relu_bwd_params(rng):
    return {"negative_slope": float(rng.choice([0.0, 0.1, 0.3]))}


def _relu_out_params(rng):
    leaky = bool(rng.random() < 0.5)
    return {"leaky": leaky, "negative_slope": float(rng.choice([0.1, 0.3])) if leaky else 0.0}


def _gg_relu_from_output(x, p):
    g, a = x
    if p["leaky"]:
        out = gg.leaky_relu(a, negative_slope=p["negative_slope"])
        return gg.relu_backward_from_output(g, out, negative_slope=p["negative_slope"],
                                            leaky=True)
    return gg.relu_backward_from_output(g, gg.relu(a))


def _pt_gelu_derivative(a, approximate):
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        t = torch.tanh(k * (a + 0.044715 * a ** 3))
        return 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * k * (1 + 3 * 0.044715 * a * a)
    return 0.5 * (1 + torch.erf(a / math.sqrt(2))) + a * torch.exp(-a * a / 2) / math.sqrt(
        2 * math.pi)


def _pt_silu_derivative(a):
    s = torch.sigmoid(a)
    return s * (1 + a * (1 - s))


def _mask_tensor(bits):
    return gg.tensor(kernels.pack_mask(np, bits))


def _backward_reads(activation):
    """What gg.<activation>_backward takes beside g: the activation's input ("x") or its
    output ("y"), as the activation's declaration says."""
    try:
        return gg.ops.activation.ACTIVATIONS[activation].saves
    except (AttributeError, KeyError):
        return "y" if activation in ("sigmoid", "tanh", "elu") else "x"


def _gg_backward(name):
    activation = name[: -len("_backward")]

    def apply(x, p):
        if name == "relu_backward":
            return gg.relu_backward(x[0], _mask_tensor(p["bits"]),
                                    negative_slope=p["negative_slope"])
        if name == "relu_backward_from_output":
            return _gg_relu_from_output(x, p)
        g, a = x
        params = {k: v for k, v in p.items() if k in ("alpha", "beta", "threshold",
                                                      "approximate")}
        if _backward_reads(activation) == "y":
            a = getattr(gg, activation)(a, **params)
        return getattr(gg, name)(g, a, **params)
    return apply


def _pt_backward(name):
    def apply(x, p):
        if name == "relu_backward":
            g = x[0]
            return torch.where(torch.as_tensor(p["bits"]), g, g * p["negative_slope"])
        g, a = _pt_same(*x)
        if name == "sigmoid_backward":
            s = torch.sigmoid(a)
            return g * s * (1 - s)
        if name == "tanh_backward":
            t = torch.tanh(a)
            return g * (1 - t * t)
        if name == "elu_backward":
            return torch.where(a > 0, g, g * p["alpha"] * torch.exp(a))
        if name == "softplus_backward":
            return torch.where(a * p["beta"] > p["threshold"], g, g * torch.sigmoid(p["beta"] * a))
        if name == "gelu_backward":
            return g * _pt_gelu_derivative(a, p["approximate"])
        if name == "silu_backward":
            return g * _pt_silu_derivative(a)
        if name == "softsign_backward":
            return g / (1 + torch.abs(a)) ** 2
        g = x[0]  # relu_backward_from_output: g's dtype
        return torch.where(x[1] > 0, g, g * p["negative_slope"])
    return apply


def _elu_params(rng):
    return {"alpha": _choice(rng, [1.0, 0.5, 2.0])}  # alpha >= 0: elu_backward reads y


def _gelu_params(rng):
    return {"approximate": _choice(rng, ["none", "tanh"])}


def _kink_of_x(x, p, y):
    return _side(x[1])


# fmt: off
# name, the names of gg.OPS it records, its parameters, its kink
for _name, _covers, _params, _kink in [
    ("relu_backward",             ["relu_backward"],                 _relu_bwd_params, None),
    ("relu_backward_from_output", ["relu_backward_from_output", "relu", "leaky_relu"],
                                                                     _relu_out_params, _kink_of_x),
    ("sigmoid_backward",          ["sigmoid_backward", "sigmoid"],   None,             None),
    ("tanh_backward",             ["tanh_backward", "tanh"],         None,             None),
    ("elu_backward",              ["elu_backward", "elu"],           _elu_params,      _kink_of_x),
    ("softplus_backward",         ["softplus_backward", "softplus"], _softplus_params,
                                                                                       _softplus_kink),
    ("gelu_backward",             ["gelu_backward"],                 _gelu_params,     None),
    ("silu_backward",             ["silu_backward"],                 None,             None),
    ("softsign_backward",         ["softsign_backward"],             None,             _kink_of_x),
]:
    kind(_name, _covers, _backward_build(_name, _params), _gg_backward(_name),
         _pt_backward(_name), _kink)
# fmt: on


def _declared_kinks(points):
    """The branch of an activation whose derivative jumps at the declared `points`."""
    def kink(x, p, y):
        a = np.asarray(x[-1], dtype=np.float64)
        return sum(_side(a - c) for c in points)
    return kink if points else None


def _pt_backward_of(activation):
    """PyTorch's vector-Jacobian product of F.<activation> at x with g: the reference for the
    backward op of an activation declared with no kinds of its own here."""
    def apply(x, p):
        g, a = _pt_same(*x)
        return torch.func.vjp(getattr(F, activation), a)[1](g)[0]
    return apply


# An activation of the table with no parameters, whose backward reads its input, needs no row
# here: its kinds follow from its declaration (PyTorch's F.<name> as the reference, the kinks
# it declares). Others have rows above, with references written out.
for _name, _act in gg.ops.activation.ACTIVATIONS.items():
    if _name in KINDS or _act.params or _act.saves != "x":
        continue
    unary(_name, _gg_function(_name), _pt_function("F." + _name), lambda p, b: b + 1.0,
          kink=_declared_kinks(_act.kinks))
    kind(_name + "_backward", [_name + "_backward"], _backward_build(_name + "_backward"),
         _gg_backward(_name + "_backward"), _pt_backward_of(_name), _declared_kinks(_act.kinks))


# along an axis, and reductions -------------------------------------------------------------


def _softmax_build(name):
    def build(b):
        i = b.operand(lambda v: len(v.shape) >= 1, shape=lambda: b.shape(min_rank=1))
        v = b.values[i]
        axis = int(b.rng.integers(-len(v.shape), len(v.shape)))
        style = str(b.rng.choice(["keyword", "positional"]))
        bound = 1.0 if name == "softmax" else 2 * v.bound + math.log(v.shape[axis])
        return b.step(name, (i,), {"axis": axis, "style": style}, v.shape, bound)
    return build


def _gg_softmax(name):
    def apply(x, p):
        if p["style"] == "keyword":
            return getattr(gg, name)(x[0], axis=p["axis"])
        return getattr(gg, name)(x[0], p["axis"])
    return apply


def _pt_softmax(name):
    def apply(x, p):
        return getattr(torch, name)(x[0], dim=p["axis"])
    return apply


for _name in ("softmax", "log_softmax"):
    kind(_name, [_name], _softmax_build(_name), _gg_softmax(_name), _pt_softmax(_name))


def _axis(rng, ndim, allow_empty):
    r = rng.random()
    if ndim == 0 or r < 0.25:
        return () if allow_empty and ndim and r < 0.03 else None
    if r < 0.6:
        return int(rng.integers(-ndim, ndim))
    k = int(rng.integers(1, ndim + 1))
    axes = [int(a) - (ndim if rng.random() < 0.3 else 0)
            for a in rng.choice(ndim, size=k, replace=False)]
    return tuple(axes)


def _reduce_build(name):
    def build(b):
        rng = b.rng
        i = b.operand()
        if name == "logsumexp" and b.values[i].bound > 20:
            i = b.bounded(i, 20.0)
        v = b.values[i]
        axis = _axis(rng, len(v.shape), allow_empty=name in ("sum", "mean"))
        if name == "norm" and isinstance(axis, tuple) and len(axis) > 2:
            axis = axis[:2]
        keepdims = bool(rng.random() < 0.4)
        if name == "norm":
            shape = np.linalg.norm(_dummy(v.shape) + 1, axis=axis, keepdims=keepdims).shape
        else:
            shape = np.sum(_dummy(v.shape), axis=axis, keepdims=keepdims).shape
        n = _size(v.shape) // max(_size(shape), 1)
        bound = {"sum": v.bound * n, "mean": v.bound, "max": v.bound, "min": v.bound,
                 "logsumexp": v.bound + math.log(max(n, 1)) + 1,
                 "norm": v.bound * math.sqrt(n)}[name]
        style = str(rng.choice(["keyword", "positional", "method"]))
        if style == "method" and name not in ("sum", "mean", "max", "min"):
            style = "keyword"
        return b.step(name, (i,), {"axis": axis, "keepdims": keepdims, "style": style},
                      shape, bound)
    return build


def _gg_reduce(name):
    def apply(x, p):
        if p["style"] == "method":
            return getattr(x[0], name)(axis=p["axis"], keepdims=p["keepdims"])
        if p["style"] == "positional":
            return getattr(gg, name)(x[0], p["axis"], p["keepdims"]) if name != "norm" else \
                gg.norm(x[0], None, p["axis"], p["keepdims"])
        return getattr(gg, name)(x[0], axis=p["axis"], keepdims=p["keepdims"])
    return apply


def _pt_dims(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return (axis,) if isinstance(axis, int) else tuple(axis)


def _pt_reduce(name):
    def apply(x, p):
        a, axis, keep = x[0], p["axis"], p["keepdims"]
        if axis == ():  # NumPy: no axis reduced; PyTorch would reduce all of them
            return a.clone()
        dims = _pt_dims(axis, a.ndim)
        if name == "norm":
            return torch.linalg.vector_norm(a, 2, dim=dims or None, keepdim=keep)
        if name == "logsumexp":
            return torch.logsumexp(a, dim=dims, keepdim=keep) if dims else a.clone()
        fn = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin}[name]
        return fn(a, dim=dims, keepdim=keep) if dims else fn(a)
    return apply


def _winners(extreme):
    def kink(x, p, y):
        """Which elements win along the reduced axes."""
        a = np.asarray(x[0], dtype=np.float64)
        if p["axis"] == ():
            return np.ones(a.shape)
        return (a == extreme(a, axis=p["axis"], keepdims=True)).astype(np.float64)
    return kink


for _name in ("sum", "mean", "max", "min", "logsumexp", "norm"):
    kind(_name, [_name], _reduce_build(_name), _gg_reduce(_name), _pt_reduce(_name),
         _winners({"max": np.max, "min": np.min}[_name]) if _name in ("max", "min") else
         (lambda x, p, y: _side(y)) if _name == "norm" else None)


# shapes, views and indexing ------------------------------------------------------------


def _factor(n):
    out, d = [], 2
    while n > 1:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    return out


def _reshape_build(b):
    rng = b.rng
    i = b.operand()
    v = b.values[i]
    factors = _factor(_size(v.shape))
    rank = int(rng.integers(1 if factors else 0, 4))
    dims = [1] * rank
    for f in factors:
        dims[int(rng.integers(rank))] *= f
    target = tuple(dims)
    shown = list(target)
    if shown and rng.random() < 0.3:
        shown[int(rng.integers(len(shown)))] = -1
    style = str(rng.choice(["fn", "method", "method_args"]))
    return b.step("reshape", (i,), {"shape": tuple(shown), "style": style}, target, v.bound)


def _gg_reshape(x, p):
    if p["style"] == "fn":
        return gg.reshape(x[0], p["shape"])
    if p["style"] == "method":
        return x[0].reshape(p["shape"])
    return x[0].reshape(*p["shape"]) if p["shape"] else x[0].reshape(())


kind("reshape", ["reshape"], _reshape_build, _gg_reshape,
     lambda x, p: x[0].reshape(p["shape"]))


def _transpose_build(b):
    rng = b.rng
    i = b.operand()
    v = b.values[i]
    nd = len(v.shape)
    style = str(rng.choice(["fn", "method", "T", "reverse"]))
    axes = tuple(int(a) for a in rng.permutation(nd))
    if style in ("T", "reverse"):
        axes = tuple(reversed(range(nd)))
    return b.step("transpose", (i,), {"axes": axes, "style": style},
                  tuple(v.shape[a] for a in axes), v.bound)


def _gg_transpose(x, p):
    s = p["style"]
    if s == "T":
        return x[0].T
    if s == "reverse":
        return gg.transpose(x[0])
    if s == "method" and p["axes"]:
        return x[0].transpose(*p["axes"])
    return gg.transpose(x[0], p["axes"])


kind("transpose", ["transpose"], _transpose_build, _gg_transpose,
     lambda x, p: x[0].permute(p["axes"]) if p["axes"] else x[0].clone())


def _broadcast_to_build(b):
    rng = b.rng
    i = b.operand()
    v = b.values[i]
    for _ in range(10):
        dims = [int(rng.integers(2, 4)) if d == 1 and rng.random() < 0.6 else d for d in v.shape]
        lead = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(0, 3)))]
        target = tuple(lead + dims)
        if _size(target) <= MAX_SIZE:
            break
    else:
        target = v.shape
    return b.step("broadcast_to", (i,), {"shape": target}, target, v.bound)


kind("broadcast_to", ["broadcast_to"], _broadcast_to_build,
     lambda x, p: gg.broadcast_to(x[0], p["shape"]),
     lambda x, p: torch.broadcast_to(x[0], p["shape"]))


def _join_build(name):
    def build(b):
        rng = b.rng
        stack = name == "stack"
        i = b.operand(None if stack else (lambda v: len(v.shape) >= 1),
                      shape=lambda: b.shape(min_rank=0 if stack else 1))
        v = b.values[i]
        nd = len(v.shape)
        axis = int(rng.integers(-(nd + 1), nd + 1)) if stack else int(rng.integers(-nd, nd))
        args = [i]
        for _ in range(int(rng.integers(1, 3))):
            r = rng.random()
            if r < 0.3:
                args.append(i)  # the same value twice: its gradient is summed
            elif stack or r < 0.6:
                args.append(b.exact(v.shape))
            else:
                shape = list(v.shape)
                shape[axis] = int(rng.integers(1, 4))
                args.append(b.exact(shape))
        fn = np.stack if stack else np.concatenate
        shape = fn([_dummy(b.values[a].shape) for a in args], axis=axis).shape
        if _size(shape) > MAX_SIZE:
            args = args[:2]
            shape = fn([_dummy(b.values[a].shape) for a in args], axis=axis).shape
        return b.step(name, args, {"axis": axis}, shape, max(b.values[a].bound for a in args))
    return build


kind("concatenate", ["concatenate"], _join_build("concatenate"),
     lambda x, p: gg.concatenate(list(x), axis=p["axis"]),
     lambda x, p: torch.cat(_pt_same(*x), dim=p["axis"]))
kind("stack", ["stack"], _join_build("stack"),
     lambda x, p: gg.stack(list(x), axis=p["axis"]),
     lambda x, p: torch.stack(_pt_same(*x), dim=p["axis"]))


def _basic_key(rng, shape):
    items = []
    for n in shape:
        r = rng.random()
        if r < 0.25:
            items.append(int(rng.integers(-n, n)))
        elif r < 0.65:
            step = int(rng.choice([1, 2, -1, -2]))
            start = int(rng.integers(-n, n)) if rng.random() < 0.5 else None
            items.append(slice(start, None, step))
        else:
            items.append(slice(None))
    if items and rng.random() < 0.3:
        items = items[: int(rng.integers(0, len(items)))] + [Ellipsis]
    if rng.random() < 0.25:
        items.insert(int(rng.integers(0, len(items) + 1)), None)
    return tuple(items)


def _advanced_key(rng, shape):
    nd = len(shape)
    items = [slice(None)] * nd
    k = int(rng.integers(nd))
    idx_shape = (int(rng.integers(1, 5)),) if rng.random() < 0.7 else (2, 2)
    items[k] = rng.integers(-shape[k], shape[k], size=idx_shape)  # repeats accumulate
    if nd > 1 and rng.random() < 0.3:
        k2 = (k + 1) % nd
        items[k2] = rng.integers(0, shape[k2], size=idx_shape)  # broadcast with the first
    if rng.random() < 0.3:
        items[k] = items[k].tolist()
    return tuple(items) if nd > 1 or rng.random() < 0.5 else items[0]


def _getitem_build(variant):
    def build(b):
        rng = b.rng
        p = {"variant": variant}
        for _ in range(20):
            if variant == "basic":
                i = b.operand()
                shape = b.values[i].shape
                key = _basic_key(rng, shape) if shape else (None if rng.random() < 0.5
                                                            else Ellipsis)
            elif variant == "advanced":
                i = b.operand(lambda v: len(v.shape) >= 1, shape=lambda: b.shape(min_rank=1))
                shape = b.values[i].shape
                key = _advanced_key(rng, shape)
            else:
                i = b.operand(lambda v: len(v.shape) >= 1, shape=lambda: b.shape(min_rank=1))
                v = b.values[i]
                shape = v.shape
                if v.op == "leaf" and rng.random() < 0.5:
                    # a mask computed from the values: x[x > t], its shape known from the leaf
                    t = float(rng.choice([0.0, 0.5]))
                    mask = v.data > t
                    if mask.any():
                        p.update(threshold=t)
                        key = mask
                    else:
                        continue
                else:
                    k = int(rng.integers(1, len(shape) + 1))
                    mask = rng.random(shape[:k]) < 0.6
                    mask.flat[rng.integers(mask.size)] = True
                    key = mask if k == len(shape) or rng.random() < 0.5 else (mask, Ellipsis)
            out = _dummy(shape)[key]
            if out.size and out.size <= MAX_SIZE:
                break
        else:
            key = Ellipsis
        flat = np.array(np.arange(_size(shape)).reshape(shape)[key], order="C")
        p.update(key=key, _gather=flat)
        return b.step("getitem_" + variant, (i,), p, flat.shape, b.values[i].bound)
    return build


def _gg_getitem(x, p):
    if "threshold" in p:
        return x[0][x[0] > p["threshold"]]
    return x[0][p["key"]]


def _pt_gather(x, p):
    """NumPy's indexing as a gather of flat positions, so PyTorch's own key rules (no negative
    steps) play no part."""
    return x[0].reshape(-1)[torch.as_tensor(p["_gather"])]


def _mask_kink(x, p, y):
    return _side(np.asarray(x[0]) - p["threshold"] if "threshold" in p else 1.0)


for _variant in ("basic", "advanced", "bool"):
    kind("getitem_" + _variant, ["getitem"], _getitem_build(_variant), _gg_getitem, _pt_gather,
         _mask_kink if _variant == "bool" else None)


def _scatter_build(b):
    rng = b.rng
    g = b.operand(lambda v: len(v.shape) >= 1, shape=lambda: b.shape(min_rank=1))
    shape = b.values[g].shape
    m = int(rng.integers(1, 4))
    if rng.random() < 0.6:
        key = (rng.integers(0, m, size=shape[0]),)  # repeated rows add up
    else:
        m = shape[0] + int(rng.integers(0, 3))
        start = int(rng.integers(0, m - shape[0] + 1))
        key = (slice(start, start + shape[0]),)
    target = (m,) + shape[1:]
    rows = np.arange(m)[key[0]]
    onehot = np.zeros((m, shape[0]))
    np.add.at(onehot, (rows, np.arange(shape[0])), 1.0)
    return b.step("scatter", (g,), {"key": key, "shape": target, "_onehot": onehot}, target,
                  b.values[g].bound * shape[0])


kind("scatter", ["scatter"], _scatter_build,
     lambda x, p: gg.ops.shape.scatter(x[0], key=p["key"], shape=p["shape"]),
     lambda x, p: (torch.as_tensor(p["_onehot"], dtype=x[0].dtype)
                   @ x[0].reshape(x[0].shape[0], -1)).reshape(p["shape"]))


def _take_build(b):
    rng = b.rng
    i = b.operand()
    shape = b.values[i].shape
    axis = None if not shape or rng.random() < 0.4 else int(rng.integers(-len(shape), len(shape)))
    n = _size(shape) if axis is None else shape[axis]
    ishape = [(), (3,), (2, 2), (1,)][int(rng.integers(4))]
    indices = rng.integers(-n, n, size=ishape)
    if axis is None and not shape:
        indices = np.zeros(ishape, dtype=np.int64)
    as_list = bool(rng.random() < 0.3 and indices.ndim)
    flat = np.take(np.arange(_size(shape)).reshape(shape), indices, axis=axis)
    return b.step("take", (i,), {"indices": indices.tolist() if as_list else indices,
                                 "axis": axis, "_gather": flat}, flat.shape, b.values[i].bound)


kind("take", ["take"], _take_build,
     lambda x, p: gg.take(x[0], p["indices"], axis=p["axis"]), _pt_gather)


def _astype_build(b):
    i = b.operand()
    v = b.values[i]
    variant = str(b.rng.choice(["same", "roundtrip", "widen"] if v.dtype == "float32"
                               else ["same", "roundtrip"]))
    dtype = "float64" if variant == "widen" else v.dtype
    return b.step("astype", (i,), {"variant": variant}, v.shape, v.bound, dtype=dtype)


def _astype(dtype_of, cast):
    def apply(x, p):
        a = x[0]
        own = dtype_of(a)
        if p["variant"] == "same":
            return cast(a, own)
        if p["variant"] == "widen":
            return cast(a, "float64")
        other = "float32" if own == "float64" else "float64"
        return cast(cast(a, other), own)
    return apply


kind("astype", ["astype"], _astype_build,
     _astype(lambda a: str(a.dtype), lambda a, d: a.astype(d)),
     _astype(lambda a: str(a.dtype).replace("torch.", ""),
             lambda a, d: a.to(getattr(torch, d))))


def _copy_build(b):
    i = b.operand()
    v = b.values[i]
    return b.step("copy", (i,), {"style": str(b.rng.choice(["fn", "method"]))}, v.shape, v.bound)


kind("copy", ["copy"], _copy_build,
     lambda x, p: gg.copy(x[0]) if p["style"] == "fn" else x[0].copy(),
     lambda x, p: x[0].clone())


def _to_device_build(b):
    i = b.operand()
    v = b.values[i]
    return b.step("to_device", (i,), {}, v.shape, v.bound)


kind("to_device", ["to_device"], _to_device_build,
     lambda x, p: gg.ops.shape.to_device(x[0], device=x[0].device),
     lambda x, p: x[0].clone())


# losses --------------------------------------------------------------------------------


def _logits(b):
    i = b.operand(lambda v: len(v.shape) == 2 and v.bound < 30,
                  shape=lambda: (int(b.rng.integers(1, 4)), int(b.rng.integers(1, 5))))
    n, c = b.values[i].shape
    return i, n, c


def _labels(rng, n, c):
    return rng.integers(0, c, size=n)


def _sce_build(b):
    i, n, c = _logits(b)
    v = b.values[i]
    return b.step("softmax_cross_entropy", (i,), {"labels": _labels(b.rng, n, c)}, (n,),
                  2 * v.bound + math.log(c) + 1)


def _device_labels(x, labels):
    return gg.devices.get(x.device).asarray(labels)


kind("softmax_cross_entropy", ["softmax_cross_entropy"], _sce_build,
     lambda x, p: gg.softmax_cross_entropy(x[0], labels=_device_labels(x[0], p["labels"])),
     lambda x, p: F.cross_entropy(x[0], torch.as_tensor(p["labels"]), reduction="none"))


def _ce_build(b):
    rng = b.rng
    i, n, c = _logits(b)
    reduction = str(rng.choice(["mean", "sum", "none", "default"]))
    shape = (n,) if reduction == "none" else ()
    return b.step("cross_entropy", (i,), {
        "labels": _labels(rng, n, c), "reduction": reduction,
        "labels_as": str(rng.choice(["numpy", "tensor"]))}, shape,
        (2 * b.values[i].bound + math.log(c) + 1) * n)


def _gg_ce(x, p):
    labels = p["labels"] if p["labels_as"] == "numpy" else gg.tensor(p["labels"])
    if p["reduction"] == "default":
        return gg.nn.functional.cross_entropy(x[0], labels)
    return gg.nn.functional.cross_entropy(x[0], labels, reduction=p["reduction"])


kind("cross_entropy", ["softmax_cross_entropy"], _ce_build, _gg_ce,
     lambda x, p: F.cross_entropy(x[0], torch.as_tensor(p["labels"]),
                                  reduction="mean" if p["reduction"] == "default"
                                  else p["reduction"]))


def _sce_backward_build(b):
    i, n, c = _logits(b)
    g = b.exact((n,))
    return b.step("softmax_cross_entropy_backward", (g, i), {"labels": _labels(b.rng, n, c)},
                  (n, c), b.values[g].bound * 2)


def _pt_sce_backward(x, p):
    g, logits = _pt_same(*x)
    onehot = F.one_hot(torch.as_tensor(p["labels"]), logits.shape[1]).to(logits.dtype)
    return g[:, None] * (torch.softmax(logits, dim=1) - onehot)


kind("softmax_cross_entropy_backward", ["softmax_cross_entropy_backward"], _sce_backward_build,
     lambda x, p: gg.softmax_cross_entropy_backward(x[0], x[1],
                                                    labels=_device_labels(x[1], p["labels"])),
     _pt_sce_backward)


def _mse_build(b):
    rng = b.rng
    i = b.operand()
    v = b.values[i]
    reduction = str(rng.choice(["mean", "sum", "none", "default"]))
    p = {"reduction": reduction}
    args = [i]
    if rng.random() < 0.25:
        p["target"] = rng.standard_normal(v.shape).astype(np.float32).astype(np.float64)
        tb = 3.0
    else:
        j = b.exact(v.shape)
        args.append(j)
        tb = b.values[j].bound
    shape = v.shape if reduction == "none" else ()
    n = _size(v.shape) if reduction == "sum" else 1
    return b.step("mse_loss", args, p, shape, (v.bound + tb) ** 2 * n)


def _gg_mse(x, p):
    target = x[1] if len(x) > 1 else p["target"]
    if p["reduction"] == "default":
        return gg.nn.functional.mse_loss(x[0], target)
    return gg.nn.functional.mse_loss(x[0], target, reduction=p["reduction"])


def _pt_mse(x, p):
    pred, target = (_pt_same(*x) if len(x) > 1
                    else (x[0], torch.as_tensor(p["target"], dtype=x[0].dtype)))
    # written out: torch.func.jvp over grad of F.mse_loss raises "ZeroTensors are immutable"
    # where the target is constant (PyTorch 2.13)
    d = (pred - target) ** 2
    return d if p["reduction"] == "none" else d.sum() if p["reduction"] == "sum" else d.mean()


kind("mse_loss", ["multiply", "subtract"], _mse_build, _gg_mse, _pt_mse)


def _l2_build(b):
    rng = b.rng
    args = []
    for _ in range(int(rng.integers(1, 4))):
        r = rng.random()
        if r < 0.5:
            args.append(b.operand())
        else:  # a frozen parameter (no gradient) beside trainable ones
            args.append(b.leaf(b.shape(), requires_grad=bool(r < 0.7)))
    bound = 0.5 * sum(b.values[a].bound ** 2 * _size(b.values[a].shape) for a in args)
    style = str(rng.choice(["half_sum_squares", "l2_penalty"]))
    return b.step("half_sum_squares", args, {"style": style}, (), bound)


kind("half_sum_squares", ["half_sum_squares"], _l2_build,
     lambda x, p: gg.half_sum_squares(list(x)) if p["style"] == "half_sum_squares"
     else gg.nn.functional.l2_penalty(list(x)),
     lambda x, p: 0.5 * sum((t * t).sum() for t in _pt_same(*x)))


# linear algebra ------------------------------------------------------------------------


def _linear_build(b):
    rng = b.rng
    i = b.operand(lambda v: len(v.shape) >= 1 and v.shape[-1] <= 4,
                  shape=lambda: b.shape(min_rank=1))
    v = b.values[i]
    k = v.shape[-1]
    out = int(rng.integers(1, 4))
    w = b.exact((out, k))
    args = [i, w]
    if rng.random() < 0.6:
        args.append(b.exact((out,)))
    shape = v.shape[:-1] + (out,)
    if _size(shape) > MAX_SIZE:
        return _matmul_build(b)
    bound = v.bound * b.values[w].bound * k + (b.values[args[2]].bound if len(args) > 2 else 0)
    style = str(rng.choice(["gg", "functional"]))
    return b.step("linear", args, {"style": style}, shape, bound)


def _gg_linear(x, p):
    fn = gg.linear if p["style"] == "gg" else gg.nn.functional.linear
    return fn(*x)


kind("linear", ["linear"], _linear_build, _gg_linear, lambda x, p: F.linear(*_pt_same(*x)))


def _matmul_shapes(rng, shape, on_left):
    """The other operand's shape for a product with an operand of `shape` (1-D, 2-D or
    batched, batch dims broadcasting with unit dims)."""
    nd = len(shape)
    if on_left:
        k = shape[-1]
        batch = shape[:-2]
    else:
        k = shape[-2] if nd >= 2 else shape[0]
        batch = shape[:-2]
    n = int(rng.integers(1, 4))
    r = rng.random()
    if r < 0.2:
        return (k,)
    if r < 0.55:
        return (k, n) if on_left else (n, k)
    other_batch = [1 if rng.random() < 0.4 else d for d in batch]
    if other_batch and rng.random() < 0.3:
        other_batch = other_batch[1:]  # fewer batch dims
    elif not other_batch or rng.random() < 0.4:
        other_batch = [int(rng.integers(1, 4))] + other_batch  # more
    return tuple(other_batch) + ((k, n) if on_left else (n, k))


def _matmul_build(b):
    rng = b.rng
    i = b.operand(lambda v: len(v.shape) >= 1, shape=lambda: b.shape(min_rank=1))
    on_left = bool(rng.random() < 0.6)
    for _ in range(10):
        other = _matmul_shapes(rng, b.values[i].shape, on_left)
        a, c = (b.values[i].shape, other) if on_left else (other, b.values[i].shape)
        shape = np.matmul(_dummy(a), _dummy(c)).shape
        if _size(shape) <= MAX_SIZE:
            break
    j = b.exact(other)
    args = (i, j) if on_left else (j, i)
    k = b.values[i].shape[-1] if on_left else b.values[j].shape[-1]
    both_small = all(len(b.values[a].shape) <= 2 for a in args)
    style = str(rng.choice(["op", "fn", "dot"] if both_small else ["op", "fn"]))
    bound = b.values[i].bound * b.values[j].bound * k
    return b.step("matmul", args, {"style": style}, shape, bound)


kind("matmul", ["matmul"], _matmul_build,
     lambda x, p: x[0] @ x[1] if p["style"] == "op" else gg.matmul(x[0], x[1])
     if p["style"] == "fn" else gg.dot(x[0], x[1]),
     lambda x, p: torch.matmul(*_pt_same(*x)))


if __package__:  # python -m tests.engine.fuzz
    from . import fuzz_cells, fuzz_numpy  # noqa: E402  (their kinds use the helpers above)
else:  # imported as `fuzz` by the tests, or run as a script from its folder
    import fuzz_cells  # noqa: E402
    import fuzz_numpy  # noqa: E402

fuzz_numpy.register(sys.modules[__name__])
fuzz_cells.register(sys.modules[__name__])


# ----------------------------------------------------------------------------- generating


SECOND_ORDER_MODES = ("second", "fwd_rev", "nested_fwd")


def generate(seed, mode, force=None):
    """The program of graph `seed` in `mode`: deterministic in (seed, mode, force)."""
    rng = np.random.default_rng(seed)
    dtype = "float32" if mode == "float32" else (
        str(rng.choice(["float32", "float64"])) if mode == "arrays_vs_recorded" else "float64")
    b = Builder(rng, dtype)
    for _ in range(int(rng.integers(1, 3))):
        b.leaf(b.shape())
    max_steps = 6 if mode in SECOND_ORDER_MODES else 10
    n = int(min(rng.geometric(0.25), max_steps))
    names = sorted(KINDS)
    forced_at = None
    for k in range(n if force is None else min(n, 3)):
        name = force if force is not None and k == 0 else names[int(rng.integers(len(names)))]
        KINDS[name].build(b)
        if k == 0 and force is not None:
            forced_at = max(j for j, v in enumerate(b.values) if v.op == force)
    values = b.values
    if forced_at is not None:  # the forced op must see a gradient in every mode
        todo = [forced_at]
        while todo:
            v = values[todo.pop()]
            if v.op == "leaf":
                v.requires_grad = True
            todo.extend(v.grad_args)
    if not any(v.requires_grad for v in values if v.op == "leaf"):
        next(v for v in values if v.op == "leaf").requires_grad = True
    mark_grad_paths(values)
    steps = [i for i, v in enumerate(values) if v.op != "leaf"]
    # the head: every value no later op reads (so every op is checked), sometimes an earlier
    # one too (its gradient adds to what flows back through its readers)
    read = {a for v in values for a in v.args}
    chosen = [i for i in steps if i not in read][-4:]
    if rng.random() < 0.3:
        chosen.append(int(rng.integers(len(values))))
    if not any(values[i].on_grad_path for i in chosen):
        chosen.append(next(i for i, v in enumerate(values) if v.on_grad_path))
    chosen = list(dict.fromkeys(chosen))
    head = [_head_term(rng, i, values[i].shape) for i in chosen]
    on_path = [i for i in steps if values[i].on_grad_path] or chosen
    out1 = forced_at if forced_at is not None else on_path[-1]
    others = [i for i in on_path if i != out1] + [HEAD]
    out2 = others[int(rng.integers(len(others)))]
    outputs = [out1, out2]
    grad_leaves = [i for i, v in enumerate(values) if v.op == "leaf" and v.requires_grad]
    tangents = [_weights(rng, values[i].shape) for i in grad_leaves]
    tangents2 = [_weights(rng, values[i].shape) for i in grad_leaves]
    second = [_weights(rng, values[i].shape) for i in grad_leaves]
    cotangents = [_weights(rng, () if o == HEAD else values[o].shape) for o in outputs]
    if len(grad_leaves) > 1 and rng.random() < 0.5:
        argnums = tuple(sorted(int(a) for a in rng.choice(
            len(grad_leaves), size=int(rng.integers(1, len(grad_leaves) + 1)), replace=False)))
    else:
        argnums = int(rng.integers(len(grad_leaves)))
    return Program(seed, mode, dtype, force, values, head, outputs, tangents, tangents2,
                   second, cotangents, argnums)


def mark_grad_paths(values):
    """Sets each value's on_grad_path from the leaves' requires_grad, through grad_args."""
    for v in values:
        if v.op == "leaf":
            v.on_grad_path = v.requires_grad
        else:
            v.on_grad_path = any(values[a].on_grad_path for a in v.grad_args)


def _weights(rng, shape):
    return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], size=shape)


def _head_term(rng, i, shape):
    r = rng.random()
    if r < 0.6:
        return i, _weights(rng, shape), "weighted"
    c = 1.0 if rng.random() < 0.5 else float(_weights(rng, ()))
    return i, c, "sum" if r < 0.9 else "mean"


# ----------------------------------------------------------------------------- running


def run_values(program, lib, leaves):
    """Every value of the program, from a {leaf index: tensor} map, in gpugrad ("gg") or
    PyTorch ("pt")."""
    out = []
    for i, v in enumerate(program.values):
        if v.op == "leaf":
            out.append(leaves[i])
        else:
            impl = KINDS[v.op].gg if lib == "gg" else KINDS[v.op].pt
            out.append(impl([out[a] for a in v.args], v.params))
    return out


def head_of(program, lib, values):
    total = None
    for i, w, how in program.head:
        x = values[i]
        if how != "weighted":
            term = x.sum() if how == "sum" else x.mean()
            term = term if w == 1.0 else term * w
        elif lib == "gg":
            term = gg.sum(x * gg.tensor(w, dtype=x.dtype))
        else:
            term = (x * torch.as_tensor(w, dtype=x.dtype)).sum()
        total = term if total is None else total + term
    return total


def gg_leaf(v, dtype, requires_grad=False):
    """A leaf; one that takes a gradient is a gg.nn.Parameter where it has an odd number of
    elements, so that both kinds run through apply's fast pass (no draw: graphs stay as built)."""
    if requires_grad and v.data.size % 2:
        return gg.nn.Parameter(v.data, dtype=dtype)
    return gg.tensor(v.data, dtype=dtype, requires_grad=requires_grad)


def pt_leaf(v, dtype, requires_grad=False):
    return torch.tensor(v.data, dtype=getattr(torch, dtype), requires_grad=requires_grad)


def program_fn(program, lib, dtype, outputs):
    """f(*primals): the program with the leaves that require grad as arguments (the rest held
    constant), returning the given outputs (one tensor, or a tuple for several)."""
    make = gg_leaf if lib == "gg" else pt_leaf
    consts = {i: make(v, dtype) for i, v in enumerate(program.values)
              if v.op == "leaf" and not v.requires_grad}
    grad_leaves = program.grad_leaves

    def f(*primals):
        leaves = dict(consts)
        leaves.update(zip(grad_leaves, primals))
        values = run_values(program, lib, leaves)
        outs = [head_of(program, lib, values) if o == HEAD else values[o] for o in outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)
    return f


class Reference:
    """The program evaluated in float64 on the host, for finite differences: through PyTorch
    where it is installed, else through gpugrad. It notes the branch of every piecewise op at
    each point it evaluates, so that a referee knows whether its stencil crossed a kink."""

    def __init__(self, program, lib, x0):
        self.program, self.lib, self.x0 = program, lib, x0
        self.base = None  # the branches at x0
        self.crossed = False  # an evaluation since watch() took another branch

    def watch(self):
        if self.base is None:
            probe = []
            try:
                self.values(self.x0, probe)
            except Exception:
                pass  # judge() reports a reference that cannot evaluate the graph
            self.base = probe
        self.crossed = False

    def values(self, primals, probe=None):
        if probe is None and self.base is not None:
            probe = []
        vals = self._values(primals, probe)
        if self.base is not None and probe is not None and not self.crossed:
            self.crossed = len(probe) != len(self.base) or any(
                b.shape != base.shape or np.any(b != base) for b, base in zip(probe, self.base))
        return vals

    def _values(self, primals, probe):
        p = self.program
        if self.lib == "pt":
            with torch.no_grad():
                leaves = {i: torch.as_tensor(v.data) for i, v in enumerate(p.values)
                          if v.op == "leaf"}
                leaves.update((i, torch.as_tensor(a)) for i, a in zip(p.grad_leaves, primals))
                vals = [pt_host(t) for t in self._run(leaves, probe, pt_host)]
        else:
            leaves = {i: gg.tensor(v.data, dtype="float64") for i, v in enumerate(p.values)
                      if v.op == "leaf"}
            leaves.update((i, gg.tensor(a, dtype="float64"))
                          for i, a in zip(p.grad_leaves, primals))
            vals = [host(t) for t in self._run(leaves, probe, host)]
        return vals

    def _run(self, leaves, probe, to_host):
        out = []
        impl = "gg" if self.lib == "gg" else "pt"
        for i, v in enumerate(self.program.values):
            if v.op == "leaf":
                out.append(leaves[i])
                continue
            args = [out[a] for a in v.args]
            if v.op == "astype" and v.params["variant"] == "roundtrip":
                out.append(args[0])  # rounding through float32 is a staircase to differences
                continue
            y = getattr(KINDS[v.op], impl)(args, v.params)
            # constants do not move under finite differences, so only the grad path counts
            if probe is not None and KINDS[v.op].kink is not None and any(
                    self.program.values[a].on_grad_path for a in v.args):
                probe.append(KINDS[v.op].kink([to_host(a) for a in args], v.params, to_host(y)))
            out.append(y)
        return out

    def outputs(self, primals, outputs):
        vals = self.values(primals)
        return [self._head(vals) if o == HEAD else vals[o] for o in outputs]

    def head(self, primals):
        return self._head(self.values(primals))

    def _head(self, vals):
        reduce = {"weighted": np.sum, "sum": np.sum, "mean": np.mean}
        return np.asarray(sum(float(reduce[how](vals[i] * w)) for i, w, how in self.program.head))


# finite differences of functions of the primals (lists of float64 arrays) ---------------


def _shift(xs, pairs):
    """xs + sum of coefficient * direction over pairs of (coefficient, per-leaf directions)."""
    out = [x.copy() for x in xs]
    for c, d in pairs:
        for o, di in zip(out, d):
            o += c * di
    return out


def _unit(xs, k, flat):
    d = [np.zeros_like(x) for x in xs]
    d[k].flat[flat] = 1.0
    return d


def fd_gradient(fun, xs, rows=None):
    """d fun / d xs[k] element by element (central differences), for k in rows."""
    h = FD[1][0]
    rows = range(len(xs)) if rows is None else rows
    out = []
    for k in rows:
        g = np.zeros_like(xs[k])
        for j in range(xs[k].size):
            e = _unit(xs, k, j)
            g.flat[j] = (float(fun(_shift(xs, [(h, e)]))) - float(fun(_shift(xs, [(-h, e)])))) \
                / (2 * h)
        out.append(g)
    return out


def fd_directional(fun, xs, v, order=1):
    """The derivative of fun (a list of arrays) at xs along v."""
    h = FD[order][0]
    plus, minus = fun(_shift(xs, [(h, v)])), fun(_shift(xs, [(-h, v)]))
    return [(a - b) / (2 * h) for a, b in zip(plus, minus)]


def fd_mixed(fun, xs, u, w):
    """The second derivative of fun (a list of arrays) along u and w: four points."""
    h = FD[2][0]
    vals = [fun(_shift(xs, [(s * h, u), (t * h, w)])) for s, t in
            ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    return [(a - b - c + d) / (4 * h * h) for a, b, c, d in zip(*vals)]


def fd_hessian_rows(fun, xs, w, rows):
    """(H w) restricted to the leaves in rows, for scalar fun, element by element."""
    out = []
    for k in rows:
        col = np.zeros_like(xs[k])
        for j in range(xs[k].size):
            col.flat[j] = float(fd_mixed(lambda z: [np.asarray(fun(z))], xs,
                                         _unit(xs, k, j), w)[0])
        out.append(col)
    return out


# ----------------------------------------------------------------------------- judging


@dataclasses.dataclass
class Result:
    check: str  # "mode/what"
    verdict: str  # ok, gpugrad, or why it is not gpugrad's: pytorch, kink, pytorch_error,
    #               float32_conditioning
    detail: str = ""


NOT_GPUGRADS = ("pytorch", "kink", "pytorch_error", "float32_conditioning")


class RefereeWarning(UserWarning):
    """Graphs where gpugrad and PyTorch disagree but the referee cleared gpugrad."""


def _arrays(xs):
    return [np.asarray(x, dtype=np.float64) for x in xs]


def _scale(b):
    return max(1.0, float(np.max(np.abs(b[np.isfinite(b)]), initial=0.0)))


def _close(a, b, rtol, atol):
    if a.shape != b.shape:
        return False
    ok = np.abs(a - b) <= rtol * np.abs(b) + atol * _scale(b)
    ok |= (np.isnan(a) & np.isnan(b)) | (a == b)
    return bool(np.all(ok))


def _distance(ours, est, rtol, atol):
    """The largest error of ours against the estimate, in units of the tolerance."""
    worst = 0.0
    for a, b in zip(ours, est):
        err = np.abs(a - b) / (rtol * np.abs(b) + atol * _scale(b))
        err = np.where((np.isnan(a) & np.isnan(b)) | (a == b), 0.0, err)
        worst = max(worst, float(np.max(err, initial=0.0)))
    return worst


def _closer(ours, theirs, est, rtol, atol):
    """Whether ours is far closer to the finite differences than theirs, where both lie within
    the differences' own tolerance (small values, whose tolerance is set by the scale 1)."""
    return _distance(ours, est, rtol, atol) * 100 <= _distance(theirs, est, rtol, atol)


def _all_close(ours, theirs, rtol, atol):
    return len(ours) == len(theirs) and all(_close(a, b, rtol, atol)
                                            for a, b in zip(ours, theirs))


def _diff(ours, theirs, label="pytorch"):
    """Where two lists of arrays differ most, for the failure message."""
    if len(ours) != len(theirs):
        return f"gpugrad gave {len(ours)} arrays, {label} {len(theirs)}"
    lines = []
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            lines.append(f"  [{k}] shape {a.shape} (gpugrad) vs {b.shape} ({label})")
            continue
        if a.size == 0:
            continue
        err = np.abs(a - b)
        err = np.where(np.isnan(a) & np.isnan(b), 0.0, np.where(np.isnan(err), np.inf, err))
        j = int(np.argmax(err))
        if err.flat[j] == 0:
            continue
        where = np.unravel_index(j, a.shape) if a.shape else ()
        lines.append(f"  [{k}] max |diff| {err.flat[j]:.3g} at {where}: gpugrad "
                     f"{a.flat[j]!r}, {label} {b.flat[j]!r}")
        if a.size <= 12:
            lines.append(f"       gpugrad {np.array2string(a, precision=6)}\n"
                         f"       {label} {np.array2string(b, precision=6)}")
    return "\n".join(lines) or "  (equal)"


class Case:
    """One graph in one mode: runs the mode's checks and keeps a Result per check."""

    def __init__(self, program, reference):
        if reference == "torch" and load_torch() is None:
            raise ImportError("the torch reference needs PyTorch (pip install torch==2.13.0)")
        self.program = program
        self.reference = reference  # "torch" or "fd"
        self.results = []
        self.x0 = [program.values[i].data.copy() for i in program.grad_leaves]
        self.ref = Reference(program, "pt" if reference == "torch" else "gg", self.x0)

    def add(self, check, verdict, detail=""):
        self.results.append(Result(f"{self.program.mode}/{check}", verdict, detail))

    def judge(self, check, ours, theirs, fd=None, order=1):
        """ours, theirs: lists of arrays, or the exception raised computing them; theirs is
        None without a PyTorch reference. fd() estimates the same arrays by finite
        differences (None for plain values, which no referee can judge)."""
        if isinstance(ours, BaseException):
            return self.add(check, "gpugrad", f"gpugrad raised {_exc(ours)}")
        ours = _arrays(ours)
        if isinstance(theirs, list):
            theirs = _arrays(theirs)
            rtol, atol = (ROUNDED, ROUNDED) if self.program.rounds_to_float32 else (RTOL, ATOL)
            if _all_close(ours, theirs, rtol, atol):
                return self.add(check, "ok")
        if fd is None:
            if isinstance(theirs, list):
                return self.add(check, "gpugrad", "values differ:\n" + _diff(ours, theirs))
            if isinstance(theirs, BaseException):
                return self.add(check, "pytorch_error", f"pytorch raised {_exc(theirs)}")
            return self.add(check, "ok")
        self.ref.watch()
        try:
            est = _arrays(fd())
        except Exception as e:  # the reference cannot evaluate around this point
            est = e
        kinked = self.ref.crossed
        _, rtol, atol = FD[order]
        if isinstance(est, BaseException):
            if not kinked and not isinstance(theirs, list):
                return self.add(check, "fuzzer_error", "no reference could evaluate this "
                                f"graph: finite differences raised {_exc(est)}"
                                + (f"; pytorch raised {_exc(theirs)}" if theirs is not None
                                   else ""))
            ours_ok = theirs_ok = False
        else:
            ours_ok = _all_close(ours, est, rtol, atol)
            theirs_ok = isinstance(theirs, list) and _all_close(theirs, est, rtol, atol)
        if kinked and not (ours_ok and theirs is None):
            other = theirs if isinstance(theirs, list) else est
            return self.add(check, "kink", "the finite differences' stencil crosses a kink"
                            + (":\n" + _diff(ours, other) if isinstance(other, list) else ""))
        if ours_ok and theirs_ok and _closer(ours, theirs, est, rtol, atol):
            return self.add(check, "pytorch", "finite differences side with gpugrad (both "
                            "within their tolerance, gpugrad 100x or more closer):\n"
                            + _diff(ours, theirs))
        if ours_ok and not theirs_ok:
            if theirs is None:
                return self.add(check, "ok")
            if isinstance(theirs, BaseException):
                return self.add(check, "pytorch_error", f"pytorch raised {_exc(theirs)}; "
                                "finite differences agree with gpugrad")
            return self.add(check, "pytorch", "finite differences side with gpugrad:\n"
                            + _diff(ours, theirs))
        lines = []
        if isinstance(theirs, list):
            lines.append(_diff(ours, theirs))
        elif isinstance(theirs, BaseException):
            lines.append(f"  pytorch raised {_exc(theirs)}")
        if isinstance(est, BaseException):
            lines.append(f"  finite differences failed: {_exc(est)}")
        else:
            side = "pytorch" if theirs_ok else "neither"
            lines.append(f"  finite differences (order {order}) agree with {side}:\n"
                         + _diff(ours, est, "finite differences"))
        return self.add(check, "gpugrad", "\n".join(lines))

    def judge_dtypes(self, check, problems):
        self.add(check, "gpugrad" if problems else "ok", "\n".join(problems))


def _exc(e):
    text = f"{type(e).__name__}: {e}"
    return text if len(text) < 400 else text[:400] + "..."


def _attempt(fn):
    try:
        return fn()
    except Exception as e:
        return e


def _part(result, k):
    return result if isinstance(result, BaseException) else result[k]


# ----------------------------------------------------------------------------- the modes


def _dtype_problems(program, values, grads, leaf_dtype_of):
    problems = []
    for i in program.steps:
        v, t = program.values[i], values[i]
        if str(t.dtype) != v.dtype:
            problems.append(f"v{i} ({v.op}) is {t.dtype}, NumPy's rules give {v.dtype}")
        if tuple(t.shape) != v.shape:
            problems.append(f"v{i} ({v.op}) has shape {tuple(t.shape)}, expected {v.shape}")
    for i, g in zip(program.grad_leaves, grads):
        if g is None:
            problems.append(f"leaf v{i} received no .grad")
        elif str(g.dtype) != leaf_dtype_of(i) or tuple(g.shape) != program.values[i].shape:
            problems.append(f"the gradient of leaf v{i} is {g.dtype} {tuple(g.shape)}, the "
                            f"leaf {leaf_dtype_of(i)} {program.values[i].shape}")
    return problems


def _gg_first(program, dtype):
    """gpugrad's values, backward() gradients, autograd.grad gradients and dtype problems."""
    leaves = {i: gg_leaf(v, dtype, v.requires_grad) for i, v in enumerate(program.values)
              if v.op == "leaf"}
    with gg.autograd.record():
        values = run_values(program, "gg", leaves)
        y = head_of(program, "gg", values)
    xs = [leaves[i] for i in program.grad_leaves]
    shown = [host(values[i]) for i in program.steps] + [host(y)]
    api = _attempt(lambda: [host(g) for g in gg.autograd.grad(y, xs, retain_graph=True)])

    def backward():
        y.backward()
        return [host(x.grad) for x in xs]
    grads = _attempt(backward)
    problems = _dtype_problems(program, values, [x.grad for x in xs], lambda i: dtype)
    problems += [f"constant leaf v{i} has a .grad" for i, t in leaves.items()
                 if not program.values[i].requires_grad and t.grad is not None]
    return shown, grads, api, problems


def _pt_first(program, dtype="float64"):
    leaves = {i: pt_leaf(v, dtype, v.requires_grad) for i, v in enumerate(program.values)
              if v.op == "leaf"}
    values = run_values(program, "pt", leaves)
    y = head_of(program, "pt", values)
    xs = [leaves[i] for i in program.grad_leaves]
    if y.requires_grad:
        y.backward()
    grads = [pt_host(x.grad) if x.grad is not None else np.zeros(x.shape) for x in xs]
    shown = [pt_host(values[i]) for i in program.steps] + [pt_host(y)]
    return shown, grads


def mode_first(case):
    p = case.program
    ours = _attempt(lambda: _gg_first(p, "float64"))
    theirs = _attempt(lambda: _pt_first(p)) if case.reference == "torch" else None
    fd = lambda: fd_gradient(case.ref.head, case.x0)  # noqa: E731
    case.judge("values", _part(ours, 0), _part(theirs, 0) if theirs is not None else None)
    case.judge("backward", _part(ours, 1), _part(theirs, 1) if theirs is not None else None, fd)
    case.judge("autograd.grad", _part(ours, 2), _part(theirs, 1) if theirs is not None else None,
               fd)
    if not isinstance(ours, BaseException):
        case.judge_dtypes("dtypes", ours[3])


class NoGraph(Exception):
    """gpugrad's first gradients carry no graph, so the second order cannot be asked."""


def _gg_second(program):
    xs = [gg_leaf(program.values[i], "float64", True) for i in program.grad_leaves]
    leaves = {i: gg_leaf(v, "float64") for i, v in enumerate(program.values)
              if v.op == "leaf" and not v.requires_grad}
    leaves.update(zip(program.grad_leaves, xs))
    with gg.autograd.record():
        values = run_values(program, "gg", leaves)
        y = head_of(program, "gg", values)
        firsts = gg.autograd.grad(y, xs, create_graph=True)
        z = None
        for g, w in zip(firsts, program.second_weights):
            term = gg.sum(g * gg.tensor(w, dtype="float64"))
            z = term if z is None else z + term
    try:
        seconds = gg.autograd.grad(z, xs)
    except gg.GraphError as e:
        if "no graph" not in str(e):
            raise
        seconds = NoGraph(str(e))
    return [host(g) for g in firsts], seconds


def _pt_second(program):
    xs = [pt_leaf(program.values[i], "float64", True) for i in program.grad_leaves]
    leaves = {i: pt_leaf(v, "float64") for i, v in enumerate(program.values)
              if v.op == "leaf" and not v.requires_grad}
    leaves.update(zip(program.grad_leaves, xs))
    y = head_of(program, "pt", run_values(program, "pt", leaves))
    if not y.requires_grad:
        zeros = [np.zeros(x.shape) for x in xs]
        return zeros, zeros, False
    firsts = torch.autograd.grad(y, xs, create_graph=True, allow_unused=True,
                                 materialize_grads=True)
    z = sum((g * torch.as_tensor(w)).sum() for g, w in zip(firsts, program.second_weights))
    # linear in every leaf: the first gradients are constants (materialized zeros are leaves
    # that require grad, so ask for a grad_fn rather than requires_grad)
    if all(g.grad_fn is None for g in firsts):
        return [pt_host(g) for g in firsts], [np.zeros(x.shape) for x in xs], False
    seconds = torch.autograd.grad(z, xs, allow_unused=True, materialize_grads=True)
    return [pt_host(g) for g in firsts], [pt_host(g) for g in seconds], True


def mode_second(case):
    p = case.program
    ours = _attempt(lambda: _gg_second(p))
    theirs = _attempt(lambda: _pt_second(p)) if case.reference == "torch" else None
    case.judge("create_graph grad", _part(ours, 0), _part(theirs, 0) if theirs is not None
               else None, lambda: fd_gradient(case.ref.head, case.x0))
    seconds = _part(ours, 1)
    if isinstance(seconds, NoGraph):
        # an error only where PyTorch's first gradients do depend on the leaves
        if isinstance(theirs, tuple) and theirs[2]:
            seconds = gg.GraphError(f"the first gradients have no graph ({seconds}), but "
                                    "PyTorch's depend on the leaves")
        else:
            seconds = [np.zeros(p.values[i].shape) for i in p.grad_leaves]
    elif not isinstance(seconds, BaseException):
        seconds = [host(g) for g in seconds]
    case.judge("grad of grad", seconds, _part(theirs, 1) if theirs is not None else None,
               lambda: fd_hessian_rows(case.ref.head, case.x0, p.second_weights,
                                       range(len(case.x0))), order=2)


def _gg_primals(program, dtype="float64"):
    return [gg_leaf(program.values[i], dtype) for i in program.grad_leaves]


def _pt_primals(program):
    return [pt_leaf(program.values[i], "float64") for i in program.grad_leaves]


def _gg_list(out):
    return [host(t) for t in (out if isinstance(out, (tuple, list)) else [out])]


def _pt_list(out):
    return [pt_host(t) for t in (out if isinstance(out, (tuple, list)) else [out])]


def _tensors(arrays, lib, dtype="float64"):
    if lib == "gg":
        return [gg.tensor(a, dtype=dtype) for a in arrays]
    return [torch.as_tensor(a) for a in arrays]


def _small_single(program, limit=8):
    """The one leaf that requires grad, where it is small enough for a Jacobian or Hessian."""
    leaves = program.grad_leaves
    return len(leaves) == 1 and program.values[leaves[0]].data.size <= limit


def _pt_jacobian(f, x, out_shape):
    """d f / d x as out_shape + x.shape, one jvp per column (vmap refuses data-dependent
    masks, which the loop does not mind)."""
    cols = []
    for j in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=x.dtype)
        e[j] = 1
        cols.append(pt_host(torch.func.jvp(f, (x,), (e.reshape(x.shape),))[1]).reshape(-1))
    return np.stack(cols, axis=-1).reshape(tuple(out_shape) + tuple(x.shape))


def _fd_jacobian(fun, x0, out_shape):
    cols = []
    for j in range(x0[0].size):
        cols.append(fd_directional(fun, x0, _unit(x0, 0, j))[0].reshape(-1))
    return np.stack(cols, axis=-1).reshape(tuple(out_shape) + x0[0].shape)


def mode_forward(case):
    p = case.program
    out = p.outputs[0]

    def ours():
        f = program_fn(p, "gg", "float64", [out])
        y, t = gg.jvp(f, tuple(_gg_primals(p)), tuple(_tensors(p.tangents, "gg")))
        return [host(y)], [host(t)]

    def theirs():
        f = program_fn(p, "pt", "float64", [out])
        y, t = torch.func.jvp(f, tuple(_pt_primals(p)), tuple(_tensors(p.tangents, "pt")))
        return _pt_list(y), _pt_list(t)
    o = _attempt(ours)
    t = _attempt(theirs) if case.reference == "torch" else None
    case.judge("value", _part(o, 0), _part(t, 0) if t is not None else None)
    case.judge("jvp", _part(o, 1), _part(t, 1) if t is not None else None,
               lambda: fd_directional(lambda z: case.ref.outputs(z, [out]), case.x0, p.tangents))
    if _small_single(p):
        _jacobian_checks(case, out, {"jacfwd": lambda f: gg.jacfwd(f),
                                     "jacobian(fwd)": lambda f: gg.jacobian(f, mode="fwd")})


def _jacobian_checks(case, out, transforms):
    p = case.program
    shape = p.output_shape(out)
    x = _gg_primals(p)[0]
    theirs = None
    if case.reference == "torch":
        theirs = _attempt(lambda: [_pt_jacobian(program_fn(p, "pt", "float64", [out]),
                                                _pt_primals(p)[0], shape)])
    for name, transform in transforms.items():
        ours = _attempt(lambda: [host(transform(program_fn(p, "gg", "float64", [out]))(x))])
        case.judge(name, ours, theirs, lambda: [_fd_jacobian(
            lambda z: case.ref.outputs(z, [out]), case.x0, shape)])


def _argnum_list(program):
    a = program.argnums
    return list(a) if isinstance(a, tuple) else [a]


def mode_fwd_rev(case):
    """Forward over reverse: jvp of grad, that is H v for the argnums' rows."""
    p = case.program
    rows = _argnum_list(p)

    def ours():
        g = gg.grad(program_fn(p, "gg", "float64", [HEAD]), argnums=p.argnums)
        y, t = gg.jvp(g, tuple(_gg_primals(p)), tuple(_tensors(p.tangents, "gg")))
        return _gg_list(y), _gg_list(t)

    def theirs():
        g = torch.func.grad(program_fn(p, "pt", "float64", [HEAD]), argnums=p.argnums)
        y, t = torch.func.jvp(g, tuple(_pt_primals(p)), tuple(_tensors(p.tangents, "pt")))
        return _pt_list(y), _pt_list(t)
    o = _attempt(ours)
    t = _attempt(theirs) if case.reference == "torch" else None
    case.judge("grad", _part(o, 0), _part(t, 0) if t is not None else None,
               lambda: fd_gradient(case.ref.head, case.x0, rows))
    case.judge("jvp of grad", _part(o, 1), _part(t, 1) if t is not None else None,
               lambda: fd_hessian_rows(case.ref.head, case.x0, p.tangents, rows), order=2)
    if len(p.grad_leaves) == 1:  # the same H v, reverse over reverse
        f = program_fn(p, "gg", "float64", [HEAD])
        v = _tensors(p.tangents, "gg")[0]
        ours_hvp = _attempt(lambda: [host(gg.hvp(f, _gg_primals(p)[0], v))])
        case.judge("hvp", ours_hvp, _part(t, 1) if t is not None else None,
                   lambda: fd_hessian_rows(case.ref.head, case.x0, p.tangents, [0]), order=2)
    if _small_single(p):
        x = _gg_primals(p)[0]
        ours_h = _attempt(lambda: [host(gg.hessian(program_fn(p, "gg", "float64", [HEAD]))(x))])
        theirs_h = None
        if case.reference == "torch":
            def pt_hessian():
                f = program_fn(p, "pt", "float64", [HEAD])
                return [_pt_jacobian(torch.func.grad(f), _pt_primals(p)[0], x.shape)]
            theirs_h = _attempt(pt_hessian)

        def fd_hessian():
            x0 = case.x0
            cols = [fd_hessian_rows(case.ref.head, x0, _unit(x0, 0, j), [0])[0].reshape(-1)
                    for j in range(x0[0].size)]
            return [np.stack(cols, axis=-1).reshape(x0[0].shape + x0[0].shape)]
        case.judge("hessian", ours_h, theirs_h, fd_hessian, order=2)


def mode_nested_fwd(case):
    """jvp of jvp: the second derivative of an output along the tangents and tangents2."""
    p = case.program
    out = p.outputs[0]

    def ours():
        f = program_fn(p, "gg", "float64", [out])
        v = tuple(_tensors(p.tangents, "gg"))
        inner = lambda *xs: gg.jvp(f, xs, v)[1]  # noqa: E731
        y, t = gg.jvp(inner, tuple(_gg_primals(p)), tuple(_tensors(p.tangents2, "gg")))
        return [host(y)], [host(t)]

    def theirs():
        f = program_fn(p, "pt", "float64", [out])
        v = tuple(_tensors(p.tangents, "pt"))
        inner = lambda *xs: torch.func.jvp(f, xs, v)[1]  # noqa: E731
        y, t = torch.func.jvp(inner, tuple(_pt_primals(p)), tuple(_tensors(p.tangents2, "pt")))
        return _pt_list(y), _pt_list(t)
    o = _attempt(ours)
    t = _attempt(theirs) if case.reference == "torch" else None
    fun = lambda z: case.ref.outputs(z, [out])  # noqa: E731
    case.judge("inner jvp", _part(o, 0), _part(t, 0) if t is not None else None,
               lambda: fd_directional(fun, case.x0, p.tangents))
    case.judge("jvp of jvp", _part(o, 1), _part(t, 1) if t is not None else None,
               lambda: fd_mixed(fun, case.x0, p.tangents, p.tangents2), order=2)


def mode_multi(case):
    """Functions returning a tuple: vjp with one cotangent per output, jvp with a tangent per
    output, and jacrev."""
    p = case.program
    outs = p.outputs

    def ours_vjp():
        f = program_fn(p, "gg", "float64", outs)
        y, vjp_fn = gg.vjp(f, *_gg_primals(p))
        grads = vjp_fn(tuple(_tensors(p.cotangents, "gg")))
        return _gg_list(y), _gg_list(grads)

    def theirs_vjp():
        f = program_fn(p, "pt", "float64", outs)
        y, vjp_fn = torch.func.vjp(f, *_pt_primals(p))
        return _pt_list(y), _pt_list(vjp_fn(tuple(_tensors(p.cotangents, "pt"))))

    def ours_jvp():
        f = program_fn(p, "gg", "float64", outs)
        return _gg_list(gg.jvp(f, tuple(_gg_primals(p)), tuple(_tensors(p.tangents, "gg")))[1])

    def theirs_jvp():
        f = program_fn(p, "pt", "float64", outs)
        return _pt_list(torch.func.jvp(f, tuple(_pt_primals(p)),
                                       tuple(_tensors(p.tangents, "pt")))[1])
    torch_ref = case.reference == "torch"
    o = _attempt(ours_vjp)
    t = _attempt(theirs_vjp) if torch_ref else None
    fun = lambda z: case.ref.outputs(z, outs)  # noqa: E731
    pairing = lambda z: sum(float(np.sum(a * c)) for a, c in zip(fun(z), p.cotangents))  # noqa
    case.judge("values", _part(o, 0), _part(t, 0) if t is not None else None)
    case.judge("vjp", _part(o, 1), _part(t, 1) if t is not None else None,
               lambda: fd_gradient(pairing, case.x0))
    # the same through the recording API: backward(head_grad) on the first output, and
    # autograd.grad of both outputs with a head gradient each
    first = lambda z: float(np.sum(fun(z)[0] * p.cotangents[0]))  # noqa: E731
    case.judge("backward(head_grad)", _attempt(lambda: _gg_heads(p, outs[:1], backward=True)),
               _attempt(lambda: _pt_heads(p, outs[:1])) if torch_ref else None,
               lambda: fd_gradient(first, case.x0))
    case.judge("autograd.grad(heads)", _attempt(lambda: _gg_heads(p, outs)),
               _attempt(lambda: _pt_heads(p, outs)) if torch_ref else None,
               lambda: fd_gradient(pairing, case.x0))
    case.judge("jvp", _attempt(ours_jvp), _attempt(theirs_jvp) if torch_ref else None,
               lambda: fd_directional(fun, case.x0, p.tangents))
    if _small_single(p):
        _jacobian_checks(case, outs[0], {"jacrev": lambda f: gg.jacrev(f),
                                         "jacobian(rev)": lambda f: gg.jacobian(f, mode="rev")})


def _gg_heads(program, outputs, backward=False):
    outputs = _with_graph(program, outputs)
    leaves = {i: gg_leaf(v, "float64", v.requires_grad) for i, v in enumerate(program.values)
              if v.op == "leaf"}
    xs = [leaves[i] for i in program.grad_leaves]
    with gg.autograd.record():
        values = run_values(program, "gg", leaves)
        heads = [head_of(program, "gg", values) if o == HEAD else values[o] for o in outputs]
    head_grads = [gg.tensor(program.cotangents[k], dtype="float64") for k in outputs.values()]
    if not heads:
        return [np.zeros(x.shape) for x in xs]
    if backward:
        heads[0].backward(head_grads[0])
        return [host(x.grad) for x in xs]
    return [host(g) for g in gg.autograd.grad(heads, xs, head_grads=head_grads)]


def _with_graph(program, outputs):
    """{output: its cotangent's index} for the outputs that depend on a leaf requiring grad
    (a head without a graph is an error in either library)."""
    return {o: k for k, o in enumerate(outputs) if o == HEAD or program.values[o].on_grad_path}


def _pt_heads(program, outputs):
    outputs = _with_graph(program, outputs)
    leaves = {i: pt_leaf(v, "float64", v.requires_grad) for i, v in enumerate(program.values)
              if v.op == "leaf"}
    xs = [leaves[i] for i in program.grad_leaves]
    values = run_values(program, "pt", leaves)
    heads = [head_of(program, "pt", values) if o == HEAD else values[o] for o in outputs]
    head_grads = [torch.as_tensor(program.cotangents[k]) for k in outputs.values()]
    pairs = [(h, c) for h, c in zip(heads, head_grads) if h.requires_grad]
    if not pairs:
        return [np.zeros(x.shape) for x in xs]
    grads = torch.autograd.grad([h for h, _ in pairs], xs, [c for _, c in pairs],
                                allow_unused=True, materialize_grads=True)
    return [pt_host(g) for g in grads]


def _relative_error(a, b):
    return float(np.max(np.abs(a - b), initial=0.0)) / _scale(b) if a.shape == b.shape \
        else np.inf


def mode_float32(case):
    """The graph in float32 against float64: relative RTOL32 to each array's largest element;
    past it, the graph counts as ill-conditioned when PyTorch's own float32 run (or, without
    PyTorch, gpugrad's float64 run at inputs moved by float32 rounding) is off by as much."""
    p = case.program
    ours = _attempt(lambda: _gg_first(p, "float32"))
    if isinstance(ours, BaseException):
        return case.add("forward and backward", "gpugrad", f"gpugrad raised {_exc(ours)}")
    case.judge_dtypes("dtypes", ours[3])
    if case.reference == "torch":
        exact = _attempt(lambda: _pt_first(p))
        rough = _attempt(lambda: _pt_first(p, "float32"))
    else:
        exact = _attempt(lambda: _gg_first(p, "float64"))
        rough = _attempt(lambda: _perturbed_first(p))
    for k, check in ((0, "values"), (1, "backward"), (2, "autograd.grad")):
        if isinstance(ours[k], BaseException):
            case.add(check, "gpugrad", f"gpugrad raised {_exc(ours[k])}")
            continue
        if isinstance(exact, BaseException):
            case.add(check, "pytorch_error", f"the float64 reference raised {_exc(exact)}")
            continue
        a, b = _arrays(ours[k]), _arrays(exact[min(k, 1)])
        errs = [_relative_error(x, y) for x, y in zip(a, b)]
        if len(a) == len(b) and max(errs, default=0.0) <= RTOL32:
            case.add(check, "ok")
            continue
        if not isinstance(rough, BaseException) and len(a) == len(b):
            noise = [_relative_error(x, y) for x, y in zip(_arrays(rough[min(k, 1)]), b)]
            if all(e <= max(10 * n, RTOL32) for e, n in zip(errs, noise)):
                case.add(check, "float32_conditioning",
                         f"float32 error {max(errs):.3g}, the reference's own float32 error "
                         f"{max(noise):.3g}")
                continue
        case.add(check, "gpugrad", f"float32 against float64 (relative error {max(errs):.3g})"
                 + ":\n" + _diff(a, b, "float64"))


def _perturbed_first(program):
    """gpugrad's float64 values and gradients at inputs moved by about one float32 rounding:
    how far float32 arithmetic alone may move this graph's results."""
    rng = np.random.default_rng(0)
    moved = dataclasses.replace(program, values=[
        dataclasses.replace(v, data=v.data * (1 + rng.uniform(-6e-8, 6e-8, v.data.shape)))
        if v.op == "leaf" else v for v in program.values])
    return _gg_first(moved, "float64")


def mode_arrays_vs_recorded(case):
    """First-order backward on arrays gives bit for bit the gradients that the same rules give
    recorded as Tensor ops (create_graph=True)."""
    p = case.program

    def run():
        leaves = {i: gg_leaf(v, p.dtype, v.requires_grad) for i, v in enumerate(p.values)
                  if v.op == "leaf"}
        xs = [leaves[i] for i in p.grad_leaves]
        with gg.autograd.record():
            y = head_of(p, "gg", run_values(p, "gg", leaves))
        recorded = gg.autograd.grad(y, xs, retain_graph=True, create_graph=True)
        on_arrays = gg.autograd.grad(y, xs)
        return recorded, on_arrays
    out = _attempt(run)
    if isinstance(out, BaseException):
        return case.add("bitwise", "gpugrad", f"gpugrad raised {_exc(out)}")
    problems = []
    for k, (a, b) in enumerate(zip(*out)):
        if str(a.dtype) != p.dtype or str(b.dtype) != p.dtype:
            problems.append(f"  leaf {k}: dtypes {a.dtype} (recorded), {b.dtype} (arrays), "
                            f"the leaf {p.dtype}")
        elif not np.array_equal(host(a), host(b), equal_nan=True):
            problems.append(_diff([host(b)], [host(a)], "recorded"))
    case.add("bitwise", "gpugrad" if problems else "ok",
             "first-order gradients on arrays differ from the recorded rules':\n"
             + "\n".join(problems) if problems else "")


MODE_CHECKS = {"first": mode_first, "second": mode_second, "forward": mode_forward,
               "fwd_rev": mode_fwd_rev, "nested_fwd": mode_nested_fwd, "multi": mode_multi,
               "float32": mode_float32, "arrays_vs_recorded": mode_arrays_vs_recorded}


# ----------------------------------------------------------------------------- running many


def replay_command(seed, mode, force=None, reference="torch"):
    device = gg.default_device()
    return (f"python -m tests.engine.fuzz --replay {seed} --mode {mode} --device {device}"
            + (f" --op {force}" if force else "")
            + (" --reference fd" if reference == "fd" else ""))


def fuzz_graph(seed, mode, reference="torch", force=None):
    """One graph: its program and its Results (a crash of the fuzzer itself is a Result too,
    never a silent skip)."""
    try:
        program = generate(seed, mode, force)
    except Exception:
        return None, [Result(f"{mode}/generate", "fuzzer_error", traceback.format_exc())]
    # the graphs' arrays are small: every other seed runs the CPU's numba activations on them
    # (where numba is installed), the others the formulas, as arrays this small take
    smallest = activation_numba.SMALLEST
    activation_numba.SMALLEST = 0 if seed % 2 else smallest
    try:
        return program, check(program, reference)
    finally:
        activation_numba.SMALLEST = smallest


@dataclasses.dataclass
class Failure:
    seed: int
    mode: str
    force: str
    reference: str
    results: list

    def command(self):
        return replay_command(self.seed, self.mode, self.force, self.reference)

    def text(self, program=None):
        lines = [f"graph seed {self.seed} ({self.mode}): replay with "
                 f"`{self.command()}`"]
        for r in self.results:
            lines.append(f" {r.check}: {r.verdict}\n{_indent(r.detail)}")
        if program is not None:
            lines.append(program.describe())
        return "\n".join(lines)


def _indent(text):
    return "\n".join("    " + line for line in text.splitlines())


@dataclasses.dataclass
class Summary:
    graphs: dict = dataclasses.field(default_factory=dict)  # per mode
    checks: dict = dataclasses.field(default_factory=dict)  # per (check, verdict)
    failures: list = dataclasses.field(default_factory=list)  # gpugrad's (and the fuzzer's)
    excused: list = dataclasses.field(default_factory=list)  # not gpugrad's, recorded
    seconds: float = 0.0

    def add(self, seed, mode, force, reference, results, program=None):
        self.graphs[mode] = self.graphs.get(mode, 0) + 1
        for r in results:
            key = (r.check, r.verdict)
            self.checks[key] = self.checks.get(key, 0) + 1
        bad = [r for r in results if r.verdict in ("gpugrad", "fuzzer_error")]
        excused = [r for r in results if r.verdict in NOT_GPUGRADS]
        if bad:
            self.failures.append((Failure(seed, mode, force, reference, bad), program))
        if excused:
            self.excused.append(Failure(seed, mode, force, reference, excused))

    def report(self, limit=5):
        lines = [f"gpugrad mismatches in {len(self.failures)} of {sum(self.graphs.values())} "
                 f"graphs ({self.seconds:.1f} s: "
                 + ", ".join(f"{m} {n}" for m, n in self.graphs.items()) + ")"]
        by_verdict = {}
        for (check, verdict), n in sorted(self.checks.items()):
            by_verdict.setdefault(verdict, []).append(f"{check} {n}")
        for verdict in ("ok", "gpugrad", "fuzzer_error") + NOT_GPUGRADS:
            if verdict in by_verdict:
                lines.append(f"  {verdict}: " + ", ".join(by_verdict[verdict]))
        lines.append(f"  graphs with a disagreement that is not gpugrad's (recorded): "
                     f"{len(self.excused)}")
        for f, program in self.failures[:limit]:
            lines.append(f.text(program))
        if len(self.failures) > limit:
            lines.append(f"... and {len(self.failures) - limit} more graphs with mismatches")
        return "\n".join(lines)

    def excused_report(self, limit=10):
        lines = []
        for f in self.excused[:limit]:
            checks = ", ".join(f"{r.check} {r.verdict}" for r in f.results)
            lines.append(f"seed {f.seed} ({f.mode}): {checks} -- "
                         f"`{f.command()}`")
        return "\n".join(lines)


def run(base_seed, mode, indices, reference="torch", force=None, progress=None,
        programs=True):
    """Graphs graph_seed(base_seed, i) for i in indices; mode "all" cycles through MODES."""
    summary = Summary()
    start = time.perf_counter()
    for n, i in enumerate(indices):
        m = MODES[i % len(MODES)] if mode == "all" else mode
        seed = graph_seed(base_seed, i)
        program, results = fuzz_graph(seed, m, reference, force)
        summary.add(seed, m, force, reference, results, program=program if programs else None)
        if progress is not None:
            progress(n + 1, summary, time.perf_counter() - start)
    summary.seconds = time.perf_counter() - start
    return summary


def sweep(mode, reference="torch"):
    """Every kind in `mode` once, each in a small graph from a seed of its own name."""
    summary = Summary()
    start = time.perf_counter()
    for name in sorted(KINDS):
        seed = zlib.crc32(f"{name}/{mode}".encode())
        program, results = fuzz_graph(seed, mode, reference, force=name)
        summary.add(seed, mode, name, reference, results, program=program)
    summary.seconds = time.perf_counter() - start
    return summary


# ----------------------------------------------------------------------------- shrinking


def check(program, reference):
    case = Case(program, reference)
    try:
        MODE_CHECKS[program.mode](case)
    except Exception:
        case.add("harness", "fuzzer_error", traceback.format_exc())
    return case.results


OUTPUT_MODES = ("forward", "nested_fwd", "multi")  # the modes that differentiate outputs


def pruned(program, head=None, outputs=None, constant=()):
    """The program cut down to what the head and the outputs (or new ones) read, with the
    leaves in `constant` no longer requiring grad; per-leaf directions follow their leaves.
    None where nothing left depends on a leaf that requires grad."""
    head = program.head if head is None else head
    outputs = program.outputs if outputs is None else outputs
    if program.mode not in OUTPUT_MODES:
        outputs = [HEAD, HEAD]
    values = program.values
    keep = set()
    todo = [t[0] for t in head] + [o for o in outputs if o != HEAD]
    while todo:
        i = todo.pop()
        if i not in keep:
            keep.add(i)
            todo.extend(values[i].args)
    order = sorted(keep)
    new = {old: k for k, old in enumerate(order)}
    out = []
    for i in order:
        v = values[i]
        rg = v.requires_grad and i not in constant
        out.append(dataclasses.replace(v, args=tuple(new[a] for a in v.args),
                                       grad_args=tuple(new[a] for a in v.grad_args),
                                       requires_grad=rg))
    mark_grad_paths(out)
    old_leaves = program.grad_leaves
    kept = [k for k, i in enumerate(old_leaves) if i in keep and i not in constant]
    on_path = [out[new[t[0]]].on_grad_path for t in head]
    if program.mode in OUTPUT_MODES:
        on_path = [out[new[o]].on_grad_path for o in outputs if o != HEAD]
    if not kept or not any(on_path):
        return None
    argnums = [kept.index(a) for a in _argnum_list(program) if a in kept] or [0]
    return dataclasses.replace(
        program, values=out, head=[(new[i], w, how) for i, w, how in head],
        outputs=[o if o == HEAD else new[o] for o in outputs],
        tangents=[program.tangents[k] for k in kept],
        tangents2=[program.tangents2[k] for k in kept],
        second_weights=[program.second_weights[k] for k in kept],
        argnums=argnums[0] if not isinstance(program.argnums, tuple) else tuple(argnums))


def shrink(program, reference):
    """A smaller program on which the same checks still fail: fewer head terms (down to a
    single intermediate value), fewer leaves requiring grad, and nothing the rest ignores."""
    def failing(p):
        return {r.check for r in check(p, reference) if r.verdict == "gpugrad"}
    target = failing(program)
    if not target:
        return program
    while True:
        heads = [[(i, _weights(np.random.default_rng(i), program.values[i].shape), "weighted")]
                 for i in program.steps]
        heads += [[t for t in program.head if t is not drop] for drop in program.head
                  if len(program.head) > 1]
        smaller = [pruned(program, head=h) for h in heads]
        for k in range(2 if program.mode in OUTPUT_MODES else 0):
            smaller += [pruned(program, outputs=[i if j == k else o
                                                 for j, o in enumerate(program.outputs)])
                        for i in program.steps if i not in program.outputs]
        smaller += [pruned(program, constant={i}) for i in program.grad_leaves]
        smaller = [p for p in smaller if p is not None and len(p.values) + len(p.head)
                   < len(program.values) + len(program.head)
                   or p is not None and len(p.grad_leaves) < len(program.grad_leaves)]
        smaller.sort(key=lambda p: (len(p.values), len(p.head), len(p.grad_leaves)))
        for p in smaller:
            if failing(p) & target:
                program = p
                break
        else:
            return program


# ----------------------------------------------------------------------------- the command


def _replay(seed, mode, reference, force, minimize=False):
    program, results = fuzz_graph(seed, mode, reference, force)
    if program is not None and minimize:
        program = shrink(program, reference)
        results = check(program, reference)
        print("shrunk to:")
    if program is not None:
        print(program.describe())
    for r in results:
        print(f"{r.check}: {r.verdict}")
        if r.detail:
            print(_indent(r.detail))
    return 1 if any(r.verdict in ("gpugrad", "fuzzer_error") for r in results) else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.engine.fuzz", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="base seed of the run")
    parser.add_argument("--start", type=int, default=0, help="index of the first graph")
    parser.add_argument("--mode", choices=("all",) + MODES, default="all")
    parser.add_argument("--device", default=None, help="cpu or strict (default: gpugrad's)")
    parser.add_argument("--replay", type=int, metavar="SEED",
                        help="rebuild one graph from its seed, print it and its diffs")
    parser.add_argument("--op", choices=sorted(KINDS), metavar="KIND",
                        help="force this kind of op into each graph (tests/engine/fuzz.py KINDS)")
    parser.add_argument("--reference", choices=("torch", "fd"), default=None,
                        help="torch (default where installed) or finite differences alone")
    parser.add_argument("--sweep", action="store_true", help="every op in every mode, once")
    parser.add_argument("--shrink", action="store_true",
                        help="with --replay: cut the graph down to what still fails")
    args = parser.parse_args(argv)
    reference = args.reference or ("torch" if load_torch() is not None else "fd")
    if reference == "torch" and load_torch() is None:
        parser.error("PyTorch is not installed; use --reference fd")
    with gg.device(args.device or gg.default_device()):
        if args.replay is not None:
            mode = "first" if args.mode == "all" else args.mode
            return _replay(args.replay, mode, reference, args.op, args.shrink)
        if args.sweep:
            summaries = [sweep(m, reference) for m in
                         (MODES if args.mode == "all" else (args.mode,))]
            failed = 0
            for s in summaries:
                print(s.report())
                failed += len(s.failures)
            return 1 if failed else 0
        last = [0.0]

        def progress(n, summary, elapsed):
            if elapsed - last[0] >= 5 or n == args.graphs:
                last[0] = elapsed
                print(f"{n}/{args.graphs} graphs, {n / elapsed:.0f}/s, gpugrad mismatches in "
                      f"{len(summary.failures)}, not gpugrad's in {len(summary.excused)}",
                      flush=True)
        summary = run(args.seed, args.mode, range(args.start, args.start + args.graphs),
                      reference, args.op, progress, programs=False)
        print(summary.report(limit=10))
        if summary.excused:
            print("not gpugrad's (first 10):\n" + summary.excused_report())
        return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
