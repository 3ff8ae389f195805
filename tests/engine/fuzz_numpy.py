"""The fuzzer's kinds for NumPy's wider core (tests/engine/fuzz.py registers them): the
transcendental functions, remainder, fmod, lerp, prod, var, std, the cumulative ops, the
linear recurrence and einsum, each against PyTorch's own function; and the functions built from
the table's ops (flip, roll, pad, tril, triu, diagonal, trace, tile, repeat, take_along_axis,
tensordot, kron, the split and stack families) against the selection NumPy's own function
makes of an array of indices, taken by PyTorch."""

import math
import string

import numpy as np

import gpugrad as gg


def register(f):
    """Add the kinds to fuzz's table; f is the fuzz module (torch is f.torch at call time)."""
    _elementwise(f)
    _reductions(f)
    _einsum(f)
    _selections(f)
    _joins(f)


# elementwise -------------------------------------------------------------------------------


def _elementwise(f):
    pt = f._pt_function
    # name, PyTorch's function, the output's bound from the operand's, domain, kink
    for name, theirs, bound, domain, kink in [
        ("reciprocal", pt("torch.reciprocal"), lambda p, b: 2.0,                   "positive",    None),
        ("rsqrt",      pt("torch.rsqrt"),      lambda p, b: 1.5,                   "positive",    None),
        ("cbrt",       lambda x, p: f.torch.sign(x[0]) * x[0].abs() ** (1 / 3),
                                               lambda p, b: b ** (1 / 3) + 1,      "positive",    None),
        ("exp2",       pt("torch.exp2"),       lambda p, b: 2 ** b,                "small",       None),
        ("log2",       pt("torch.log2"),       lambda p, b: math.log2(max(b, 2)) + 2, "positive", None),
        ("log10",      pt("torch.log10"),      lambda p, b: math.log10(max(b, 2)) + 1, "positive", None),
        ("sinh",       pt("torch.sinh"),       lambda p, b: math.cosh(b),          "small",       None),
        ("cosh",       pt("torch.cosh"),       lambda p, b: math.cosh(b),          "small",       None),
        ("arcsin",     pt("torch.asin"),       lambda p, b: 1.6,                   "inside_unit", None),
        ("arccos",     pt("torch.acos"),       lambda p, b: 3.2,                   "inside_unit", None),
        ("arctan",     pt("torch.atan"),       lambda p, b: 1.6,                   None,          None),
        ("arcsinh",    pt("torch.asinh"),      lambda p, b: math.asinh(b) + 0.1,   None,          None),
        ("arccosh",    pt("torch.acosh"),      lambda p, b: math.acosh(b + 1) + 1, "above_one",   None),
        ("arctanh",    pt("torch.atanh"),      lambda p, b: 1.5,                   "inside_unit", None),
        ("deg2rad",    pt("torch.deg2rad"),    lambda p, b: b * 0.0175,            None,          None),
        ("rad2deg",    pt("torch.rad2deg"),    lambda p, b: b * 57.3,              None,          None),
    ]:
        f.unary(name, f._gg_function(name), theirs, bound, domain, kink=kink)
    for name, quotient in (("remainder", np.floor), ("fmod", np.trunc)):
        f.kind(name, [name], _modulo_build(f, name), _gg_modulo(name), _pt_modulo(f, name),
               lambda x, p, y, q=quotient: q(np.asarray(x[0]) / np.asarray(x[1])))
    f.kind("lerp", ["lerp"], _lerp_build(f),
           lambda x, p: gg.lerp(x[0], x[1], x[2] if len(x) > 2 else p["w"]),
           lambda x, p: f.torch.lerp(*f._pt_same(x[0], x[1]),
                                     f._pt_same(*x)[2] if len(x) > 2 else p["w"]))


def _modulo_build(f, name):
    def build(b):
        i = b.operand()
        j = b.positive(b.partner(i))
        if b.rng.random() < 0.5:
            j = b.scalar(j, "*", -1.0)  # a negative divisor: the result takes its sign
        style = str(b.rng.choice(["fn", "op"])) if name == "remainder" else "fn"
        shape = np.broadcast_shapes(b.values[i].shape, b.values[j].shape)
        return b.step(name, (i, j), {"style": style}, shape, b.values[j].bound)
    return build


def _gg_modulo(name):
    def apply(x, p):
        return x[0] % x[1] if p["style"] == "op" else getattr(gg, name)(x[0], x[1])
    return apply


def _pt_modulo(f, name):
    def apply(x, p):
        a, b = f._pt_same(*x)
        return f.torch.remainder(a, b) if name == "remainder" else f.torch.fmod(a, b)
    return apply


def _lerp_build(f):
    def build(b):
        i = b.operand()
        j = b.partner(i)
        args, p = [i, j], {}
        if b.rng.random() < 0.3:
            p["w"] = float(b.rng.choice([0.0, 0.25, 0.5, 0.9, 1.0, -0.5]))
            wb = abs(p["w"])
        else:
            w = b.partner(i)
            try:
                fits = f._size(np.broadcast_shapes(*(b.values[a].shape for a in (i, j, w)))) <= f.MAX_SIZE
            except ValueError:
                fits = False
            if not fits:
                w = b.leaf(b.values[i].shape)
            args.append(w)
            wb = b.values[w].bound
        shape = np.broadcast_shapes(*(b.values[a].shape for a in args))
        bound = b.values[i].bound + wb * (b.values[i].bound + b.values[j].bound)
        return b.step("lerp", args, p, shape, bound)
    return build


# reductions, running sums and products, the recurrence ----------------------------------


def _reductions(f):
    for name in ("prod", "var", "std"):
        # std is not differentiable where it is 0 (|x1 - x2| / 2 for two elements), as norm
        f.kind(name, [name], _moment_build(f, name), _gg_moment(name), _pt_moment(f, name),
               (lambda x, p, y: f._side(y)) if name == "std" else None)
    for name in ("cumsum", "cumprod"):
        f.kind(name, [name], _running_build(f, name), _gg_running(name), _pt_running(f, name))
    f.kind("linear_recurrence", ["linear_recurrence"], _recurrence_build(f),
           lambda x, p: gg.linear_recurrence(x[0], x[1], axis=p["axis"]), _pt_recurrence(f))


def _moment_build(f, name):
    def build(b):
        rng = b.rng
        i = b.operand()
        if name == "prod" and rng.random() < 0.4:  # exact zeros: prod's gradient there
            i = b.leaf(b.values[i].shape, zeros=True)
        v = b.values[i]
        axis = f._axis(rng, len(v.shape), allow_empty=False)
        shape = np.sum(f._dummy(v.shape), axis=axis, keepdims=True).shape
        n = f._size(v.shape) // max(f._size(shape), 1)
        if name != "prod" and n < 2:  # var of one element has no gradient worth checking
            axis, n = None, f._size(v.shape)
            if n < 2:
                i = b.leaf((3,))
                v, n = b.values[i], 3
        ddof = int(rng.integers(0, 2)) if name != "prod" and n >= 3 else 0
        keepdims = bool(rng.random() < 0.4)
        shape = np.sum(f._dummy(v.shape), axis=axis, keepdims=keepdims).shape
        bound = {"prod": max(v.bound, 1.0) ** n, "var": 4 * v.bound ** 2, "std": 2 * v.bound}[name]
        style = str(rng.choice(["keyword", "method"]))
        return b.step(name, (i,), {"axis": axis, "keepdims": keepdims, "ddof": ddof,
                                   "style": style}, shape, bound)
    return build


def _gg_moment(name):
    def apply(x, p):
        kw = {"axis": p["axis"], "keepdims": p["keepdims"]}
        if name != "prod":
            kw["ddof"] = p["ddof"]
        return getattr(x[0], name)(**kw) if p["style"] == "method" else getattr(gg, name)(x[0], **kw)
    return apply


def _pt_moment(f, name):
    def apply(x, p):
        a, axis, keep = x[0], p["axis"], p["keepdims"]
        dims = tuple(range(a.ndim)) if axis is None else (axis,) if isinstance(axis, int) else axis
        dims = tuple(d % max(a.ndim, 1) for d in dims)
        if name != "prod":
            return getattr(f.torch, name)(a, dim=dims or None, correction=p["ddof"], keepdim=keep)
        out = a
        for d in sorted(dims, reverse=True):
            out = f.torch.prod(out, dim=d, keepdim=True)
        if not keep:
            out = out.reshape([n for k, n in enumerate(a.shape) if k not in dims])
        return out
    return apply


def _running_build(f, name):
    def build(b):
        rng = b.rng
        i = b.operand()
        if name == "cumprod" and rng.random() < 0.4:
            i = b.leaf(b.values[i].shape, zeros=True)
        v = b.values[i]
        axis = None if not v.shape or rng.random() < 0.3 else int(rng.integers(-len(v.shape), len(v.shape)))
        shape = (f._size(v.shape),) if axis is None else v.shape
        n = shape[axis if axis is not None else 0] if shape else 1
        bound = v.bound * n if name == "cumsum" else max(v.bound, 1.0) ** n
        style = str(rng.choice(["fn", "method"]))
        return b.step(name, (i,), {"axis": axis, "style": style}, shape, bound)
    return build


def _gg_running(name):
    def apply(x, p):
        if p["style"] == "method":
            return getattr(x[0], name)(axis=p["axis"])
        return getattr(gg, name)(x[0], axis=p["axis"])
    return apply


def _pt_running(f, name):
    def apply(x, p):
        a = x[0].reshape(-1) if p["axis"] is None else x[0]
        return getattr(f.torch, name)(a, dim=0 if p["axis"] is None else p["axis"])
    return apply


def _recurrence_build(f):
    def build(b):
        rng = b.rng
        i = b.operand(lambda v: len(v.shape) >= 1, shape=lambda: b.shape(min_rank=1))
        shape = b.values[i].shape
        j = b.leaf(shape, zeros=True) if rng.random() < 0.3 else b.exact(shape)
        j = b.bounded(j, 1.5)
        axis = int(rng.integers(-len(shape), len(shape)))
        n = shape[axis]
        bound = b.values[i].bound * sum(b.values[j].bound ** k for k in range(n))
        return b.step("linear_recurrence", (i, j), {"axis": axis}, shape, bound)
    return build


def _pt_recurrence(f):
    def apply(x, p):
        bs, a_s = f._pt_same(*x)
        h, out = None, []
        for bk, ak in zip(bs.unbind(p["axis"]), a_s.unbind(p["axis"])):
            h = bk if h is None else ak * h + bk
            out.append(h)
        return f.torch.stack(out, dim=p["axis"])
    return apply


# einsum ------------------------------------------------------------------------------------


def _einsum(f):
    f.kind("einsum", ["einsum"], _einsum_build(f),
           lambda x, p: gg.einsum(p["spec"], *x), lambda x, p: f.torch.einsum(p["spec"], *f._pt_same(*x)))


def _einsum_build(f):
    def build(b):
        rng = b.rng
        i = b.operand(lambda v: len(v.shape) <= 3)
        shape = b.values[i].shape
        letters = list(string.ascii_lowercase[: len(shape)])
        sizes = dict(zip(letters, shape))
        for k in range(1, len(shape)):  # a repeated label where two axes are as long
            if shape[k] == shape[k - 1] and rng.random() < 0.3:
                letters[k] = letters[k - 1]
        terms, args = ["".join(letters)], [i]
        for _ in range(int(rng.integers(0, 3))):
            mine = [c for c in dict.fromkeys(letters) if rng.random() < 0.6]
            new = [c for c in "xyz"[: int(rng.integers(0, 2))]]
            for c in new:
                sizes.setdefault(c, int(rng.integers(1, 4)))
            term = "".join(rng.permutation(mine + new)) if mine + new else ""
            terms.append(term)
            args.append(b.exact(tuple(sizes[c] for c in term)))
        every = list(dict.fromkeys("".join(terms)))
        output = "".join(c for c in rng.permutation(every) if rng.random() < 0.5) if every else ""
        out_shape = tuple(sizes[c] for c in output)
        if f._size(out_shape) > f.MAX_SIZE:
            output, out_shape = "", ()
        spec = ",".join(terms) + "->" + output
        if len(shape) >= 2 and letters[0] != letters[1] and len(terms) == 1 and rng.random() < 0.3:
            spec = "..." + terms[0][-1] + "->..." + terms[0][-1]  # the ellipsis
            out_shape = shape
        summed = 1
        for c in every:
            if c not in output:
                summed *= sizes[c]
        bound = summed
        for a in args:
            bound *= b.values[a].bound
        return b.step("einsum", args, {"spec": spec}, out_shape, bound)
    return build


# built from the table's ops: selections ----------------------------------------------------


def _selections(f):
    """Each a function of one tensor whose values are a selection of its elements (0 where
    pad or tril puts a constant): PyTorch takes the same selection, computed by NumPy's own
    function from an array of flat indices."""
    for name, covers, choose in [
        ("flip", ["getitem"], _flip_params), ("roll", ["take"], _roll_params),
        ("pad", ["scatter", "take", "where"], _pad_params), ("tril", ["where"], _tri_params),
        ("triu", ["where"], _tri_params), ("diagonal", ["getitem", "transpose"], _diagonal_params),
        ("tile", ["broadcast_to", "reshape"], _tile_params), ("repeat", ["take"], _repeat_params),
        ("take_along_axis", ["getitem"], _along_params),
    ]:
        f.kind(name, covers, _selection_build(f, name, choose), _gg_selection(name),
               _pt_selection(f))


def _numpy_call(name, a, p):
    args = {k: v for k, v in p.items() if not k.startswith("_")}
    if name == "take_along_axis":
        return np.take_along_axis(a, np.asarray(args["indices"]), args["axis"])
    return getattr(np, name)(a, **args)


def _selection_build(f, name, choose):
    def build(b):
        for _ in range(10):
            i = b.operand()
            shape = b.values[i].shape
            p = choose(b.rng, shape)
            if p is None:
                i = b.leaf((2, 3))
                shape, p = (2, 3), choose(b.rng, (2, 3))
            unfilled = {k: v for k, v in p.items() if k != "constant_values"}  # pads with 0
            marked = _numpy_call(name, np.arange(1, f._size(shape) + 1).reshape(shape), unfilled)
            if 0 < f._size(marked.shape) <= f.MAX_SIZE:  # later kinds take no empty value
                break
        else:
            i, shape = b.leaf((2, 3)), (2, 3)
            p = {"axis": None} if name in ("flip", "roll") else choose(b.rng, shape)
            p = {"shift": 1, **p} if name == "roll" else p
            marked = _numpy_call(name, np.arange(1, 7).reshape(shape), p)
        p["_gather"] = np.maximum(marked - 1, 0)
        p["_kept"] = marked > 0
        return b.step(name, (i,), p, marked.shape, b.values[i].bound + abs(p.get("constant_values", 0)))
    return build


def _gg_selection(name):
    def apply(x, p):
        args = {k: v for k, v in p.items() if not k.startswith("_")}
        if name == "take_along_axis":
            return gg.take_along_axis(x[0], args["indices"], args["axis"])
        return getattr(gg, name)(x[0], **args)
    return apply


def _pt_selection(f):
    def apply(x, p):
        a = x[0]
        flat = a.reshape(-1)[f.torch.as_tensor(p["_gather"].reshape(-1))].reshape(p["_gather"].shape)
        fill = f.torch.as_tensor(float(p.get("constant_values", 0)), dtype=a.dtype)
        return f.torch.where(f.torch.as_tensor(p["_kept"]), flat, fill)
    return apply


def _flip_params(rng, shape):
    if not shape or rng.random() < 0.3:
        return {"axis": None}
    return {"axis": int(rng.integers(-len(shape), len(shape)))}


def _roll_params(rng, shape):
    if not shape or rng.random() < 0.3:
        return {"shift": int(rng.integers(-5, 6)), "axis": None}
    axes = sorted(set(int(a) for a in rng.integers(0, len(shape), size=int(rng.integers(1, 3)))))
    return {"shift": tuple(int(s) for s in rng.integers(-4, 5, size=len(axes))), "axis": tuple(axes)}


def _pad_params(rng, shape):
    if not shape:
        return None
    mode = str(rng.choice(["constant", "edge", "reflect", "symmetric", "wrap"]))
    widths = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in shape)
    if mode == "reflect":
        widths = tuple((min(w0, n - 1), min(w1, n - 1)) for (w0, w1), n in zip(widths, shape))
    p = {"pad_width": widths, "mode": mode}
    if mode == "constant" and rng.random() < 0.5:
        p["constant_values"] = 1.5
    return p


def _tri_params(rng, shape):
    return None if len(shape) < 2 else {"k": int(rng.integers(-1, 2))}


def _diagonal_params(rng, shape):
    if len(shape) < 2:
        return None
    a1, a2 = (int(a) for a in rng.choice(len(shape), size=2, replace=False))
    return {"offset": int(rng.integers(-1, 2)), "axis1": a1, "axis2": a2}


def _tile_params(rng, shape):
    reps = tuple(int(r) for r in rng.integers(1, 3, size=int(rng.integers(1, len(shape) + 2))))
    return {"reps": reps}


def _repeat_params(rng, shape):
    if not shape or rng.random() < 0.3:
        return {"repeats": int(rng.integers(1, 3)), "axis": None}
    axis = int(rng.integers(0, len(shape)))
    return {"repeats": [int(r) for r in rng.integers(0, 3, size=shape[axis])], "axis": axis}


def _along_params(rng, shape):
    if not shape:
        return None
    axis = int(rng.integers(0, len(shape)))
    ishape = list(shape)
    ishape[axis] = int(rng.integers(1, 4))
    ishape = [1 if rng.random() < 0.3 else n for n in ishape]
    return {"indices": rng.integers(-shape[axis], shape[axis], size=ishape), "axis": axis}


# built from the table's ops: products and joins -------------------------------------------


def _joins(f):
    f.kind("tensordot", ["einsum"], _tensordot_build(f),
           lambda x, p: gg.tensordot(x[0], x[1], axes=p["axes"]),
           lambda x, p: f.torch.tensordot(*f._pt_same(*x), dims=p["axes"]))
    f.kind("kron", ["einsum", "reshape"], _pair_build(f, "kron"), lambda x, p: gg.kron(x[0], x[1]),
           lambda x, p: f.torch.kron(*(t.contiguous() for t in f._pt_same(*x))))  # PyTorch 2.13: kron of a transposed view raises
    f.kind("split", ["getitem"], _split_build(f),
           lambda x, p: getattr(gg, p["fn"])(x[0], p["sections"], axis=p["axis"])[p["pick"]],
           lambda x, p: f.torch.tensor_split(x[0], p["sections"], dim=p["axis"])[p["pick"]])
    f.kind("stacks", ["concatenate", "reshape"], _stacks_build(f),
           lambda x, p: getattr(gg, p["fn"])(list(x)),
           lambda x, p: getattr(f.torch, p["fn"])(f._pt_same(*x)))


def _tensordot_build(f):
    def build(b):
        rng = b.rng
        i = b.operand(lambda v: 1 <= len(v.shape) <= 3, shape=lambda: b.shape(min_rank=1))
        shape = b.values[i].shape
        k = int(rng.integers(0, len(shape) + 1))
        shared = shape[len(shape) - k:]
        extra = tuple(int(n) for n in rng.integers(1, 3, size=int(rng.integers(0, 2))))
        j = b.exact(shared + extra)
        out = shape[: len(shape) - k] + extra
        if f._size(out) > f.MAX_SIZE:
            j, k, out = b.exact(shape), len(shape), ()
        axes = k if rng.random() < 0.5 else (list(range(len(shape) - k, len(shape))), list(range(k)))
        bound = b.values[i].bound * b.values[j].bound * max(f._size(shared), 1)
        return b.step("tensordot", (i, j), {"axes": axes}, out, bound)
    return build


def _pair_build(f, name):
    def build(b):
        i = b.operand(lambda v: f._size(v.shape) <= 6)
        j = b.leaf(b.shape(max_rank=2, max_size=4))
        shape = np.kron(f._dummy(b.values[i].shape), f._dummy(b.values[j].shape)).shape
        return b.step(name, (i, j), {}, shape, b.values[i].bound * b.values[j].bound)
    return build


def _split_build(f):
    def build(b):
        rng = b.rng
        i = b.operand(lambda v: len(v.shape) >= 1, shape=lambda: b.shape(min_rank=1))
        shape = b.values[i].shape
        axis = int(rng.integers(0, len(shape)))
        n = shape[axis]
        if rng.random() < 0.5:
            fn, sections = "array_split", int(rng.integers(1, n + 1))
        else:
            fn, sections = "split", sorted(int(s) for s in rng.integers(0, n + 1, size=2))
        pieces = np.array_split(np.empty(shape), sections, axis=axis)
        filled = [k for k, piece in enumerate(pieces) if piece.size]  # later kinds take no empty value
        pick = filled[int(rng.integers(len(filled)))]
        return b.step("split", (i,), {"fn": fn, "sections": sections, "axis": axis, "pick": pick},
                      pieces[pick].shape, b.values[i].bound)
    return build


def _stacks_build(f):
    def build(b):
        rng = b.rng
        fn = str(rng.choice(["hstack", "vstack", "dstack", "column_stack"]))
        i = b.operand(lambda v: 1 <= len(v.shape) <= 2, shape=lambda: b.shape(min_rank=1, max_rank=2))
        args = [i, b.exact(b.values[i].shape)]
        shape = getattr(np, fn)([f._dummy(b.values[a].shape) for a in args]).shape
        return b.step("stacks", args, {"fn": fn}, shape, max(b.values[a].bound for a in args))
    return build
