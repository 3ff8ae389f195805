"""Einstein summation and the products NumPy builds on it: einsum, tensordot, inner, outer,
kron, and dot beyond two dimensions.

The table's op is einsum of one or two operands whose subscripts are explicit, without an
ellipsis and without a label repeated within an operand. Its gradient for one operand is
einsum again (the output's gradient with the other operand), broadcast along the labels only
that operand had. gg.einsum reduces any subscripts NumPy takes to that op: the ellipsis
becomes unused labels, a label repeated within an operand takes that operand's diagonal
first, and three or more operands are contracted two at a time in the order NumPy's
einsum_path chooses (each intermediate is an op of the graph and saves its operands).
"""

import functools
import string

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad.ops import rearrange
from gpugrad.ops import registry
from gpugrad.ops.registry import defop, jvp_of_two


def _terms(subscripts):
    """'ab,bc->ac' -> (['ab', 'bc'], 'ac'); explicit subscripts only (the op's own)."""
    inputs, output = subscripts.split("->")
    return inputs.split(","), output


def _forward(xp, a, b, *, subscripts):
    if b is None:
        return devices.over(lambda a: xp.einsum(subscripts, a), a)
    # a pair: tensordot, so BLAS; 16-bit operands in float32, the product rounded once
    if a.dtype.itemsize != 2 and b.dtype.itemsize != 2:
        return xp.einsum(subscripts, a, b, optimize=True)
    return devices.carried(lambda a, b: xp.einsum(subscripts, a, b, optimize=True), a, b)


def _grad(ops, g, mine, other, subscripts, which):
    """The gradient of operand `which` (shape of `mine`), given the other operand or None."""
    terms, output = _terms(subscripts)
    term = terms[which]
    rest = terms[1 - which] if other is not None else ""
    if g.ndim != len(output):  # a uniform gradient handed back as 0-d by sum
        sizes = _sizes((term, rest), (mine.shape, () if other is None else other.shape))
        g = ops.broadcast_to(g, tuple(sizes[c] for c in output))
    kept = "".join(c for c in term if c in output or c in rest)
    if other is None:
        h = g if kept == output else ops.einsum(g, None, subscripts=f"{output}->{kept}")
    else:
        h = ops.einsum(g, other, subscripts=f"{output},{rest}->{kept}")
    if kept == term:
        return h
    # labels only this operand had were summed over: its gradient is the same along them
    fitted = tuple(h.shape[kept.index(c)] if c in kept else 1 for c in term)
    return ops.broadcast_to(ops.reshape(h, fitted),
                            tuple(n if c in kept else mine.shape[i] for i, (c, n) in
                                  enumerate(zip(term, fitted))))


def _sizes(terms, shapes):
    """label -> its size over these operands (the larger where one broadcasts)."""
    sizes = {}
    for term, shape in zip(terms, shapes):
        for c, n in zip(term, shape):
            sizes[c] = max(n, sizes.get(c, 1))
    return sizes


def _jvp(ops, ts, a, b, y, subscripts):
    if b is None:
        return ops.einsum(ts[0], None, subscripts=subscripts)
    return jvp_of_two(ts, lambda t: ops.einsum(t, b, subscripts=subscripts),
                      lambda t: ops.einsum(a, t, subscripts=subscripts))


# fmt: off
_einsum = defop("einsum", _forward, save={"a": "b", "b": "a"}, optional=("b",),
                vjp=(lambda ops, g, a, b, y, subscripts: _grad(ops, g, a, b, subscripts, 0),
                     lambda ops, g, a, b, y, subscripts: _grad(ops, g, b, a, subscripts, 1)),
                jvp=_jvp)
# fmt: on


# ---------------------------------------------------------------------------- gg.einsum


def _parse(subscripts, shapes):
    """NumPy's subscripts for operands of these shapes -> (terms, output), explicit, with
    the ellipsis spelled out in labels the subscripts do not use."""
    if not isinstance(subscripts, str):
        raise TypeError("einsum: subscripts are a string such as 'ij,jk->ik' (NumPy's "
                        "interleaved sublist form is not supported)")
    spec = subscripts.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: subscripts {subscripts!r} name {len(terms)} operand(s), "
                         f"got {len(shapes)}")
    bad = set(spec.replace("->", "").replace(",", "").replace("...", "")) - set(string.ascii_letters)
    if bad:
        raise ValueError(f"einsum: subscripts {subscripts!r} hold {''.join(sorted(bad))!r}; "
                         f"labels are letters, with at most one '...' per operand")
    free = [c for c in string.ascii_letters if c not in spec]
    widths = [len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes)]
    ellipsis = "".join(free[: max([w for t, w in zip(terms, widths) if "..." in t], default=0)])
    out_terms = []
    for k, (t, shape, width) in enumerate(zip(terms, shapes, widths)):
        named = t.replace("...", ellipsis[len(ellipsis) - width:] if width >= 0 else "")
        if len(named) != len(shape) or t.count("...") > 1 or (width and "..." not in t):
            raise recording.ShapeError(f"einsum: operand {k} has shape {tuple(shape)} but its "
                                       f"subscripts {t!r} name {len(t.replace('...', ''))} axes")
        out_terms.append(named)
    if arrow:
        output = output.replace("...", ellipsis)
    else:
        once = sorted(c for c in set(inputs) if c.isalpha() and inputs.count(c) == 1)
        output = ellipsis + "".join(once)
    _check_output(subscripts, output, out_terms)
    return out_terms, output


def _check_output(subscripts, output, terms):
    for c in output:
        if output.count(c) > 1 or not any(c in t for t in terms):
            raise ValueError(f"einsum: output label {c!r} of {subscripts!r} appears "
                             f"{'twice' if output.count(c) > 1 else 'in no operand'}")


def _distinct_labels(x, term):
    """The operand and its term with every repeated label taken once (its diagonal)."""
    for c in term:
        if term.count(c) > 1:
            first = term.index(c)
            second = term.index(c, first + 1)
            x = rearrange.diagonal(x, 0, first, second)  # the diagonal's axis goes last
            rest = [d for i, d in enumerate(term) if i not in (first, second)]
            return _distinct_labels(x, "".join(rest) + c)
    return x, term


def _contract(x, tx, y, ty, keep, last):
    out = keep if last else "".join(dict.fromkeys(c for c in tx + (ty or "") if c in keep))
    spec = f"{tx},{ty}->{out}" if y is not None else f"{tx}->{out}"
    return _einsum(x, y, subscripts=spec), out


@functools.lru_cache(maxsize=256)
def _path(spec, shapes):
    """The pairs NumPy's einsum_path (greedy) contracts, in order, for operands of these
    shapes (kept: a model calls one contraction with one set of shapes again and again)."""
    stand_ins = [np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), s, (0,) * len(s))
                 for s in shapes]
    return tuple(np.einsum_path(spec, *stand_ins, optimize="greedy")[0][1:])


def einsum(subscripts, *operands):
    """NumPy's einsum on tensors: any subscripts NumPy takes (ellipsis, repeated labels,
    implicit output), differentiable in every operand, to any order."""
    if not operands:
        raise ValueError("einsum: needs at least one operand")
    devices.forbid_in_graph_step("einsum", "CuPy's einsum calls cuBLAS, which a stream capture "
                                 "refuses; write the contraction with gg.matmul (capturable) or "
                                 "run einsum outside the step")
    xs = rearrange.on_one_device(operands)
    terms, output = _parse(subscripts, [x.shape for x in xs])
    pairs = [_distinct_labels(x, t) for x, t in zip(xs, terms)]
    xs, terms = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(xs) == 1:
        return xs[0] if terms[0] == output else _einsum(xs[0], None, subscripts=f"{terms[0]}->{output}")
    order = [(0, 1)]
    if len(xs) > 2:
        order = _path(",".join(terms) + "->" + output, tuple(x.shape for x in xs))
    for step in order:
        picked = [(xs[i], terms[i]) for i in step]
        for i in sorted(step, reverse=True):
            del xs[i], terms[i]
        x, tx = picked[0]
        for k, (y, ty) in enumerate(picked[1:] or [(None, None)]):
            last = not xs and k == max(len(picked) - 2, 0)
            later = "".join(t for _, t in picked[k + 2:])
            keep = output if last else output + "".join(terms) + later
            x, tx = _contract(x, tx, y, ty, keep, last)
        xs.append(x)
        terms.append(tx)
    return xs[0]


# ---------------------------------------------------------------------------- built on einsum


def _as_tensors(a, b):
    return rearrange.on_one_device((a, b))


def _tensordot_axes(a, b, axes):
    """NumPy's axes (N, or a pair of axis lists) -> two lists of non-negative axes."""
    if isinstance(axes, (int, np.integer)):
        if not 0 <= axes <= min(a.ndim, b.ndim):
            raise ValueError(f"tensordot: axes={axes} for operands of {a.ndim} and {b.ndim} "
                             f"dimensions")
        return list(range(a.ndim - axes, a.ndim)), list(range(axes))
    try:
        first, second = axes
    except (TypeError, ValueError):
        raise TypeError(f"tensordot: axes is an integer or a pair of axis lists, got {axes!r}") from None
    first = [first] if isinstance(first, (int, np.integer)) else list(first)
    second = [second] if isinstance(second, (int, np.integer)) else list(second)
    if len(first) != len(second):
        raise ValueError(f"tensordot: {len(first)} axes of a but {len(second)} of b")
    for ax, x in [(i, a) for i in first] + [(i, b) for i in second]:
        if not -x.ndim <= ax < x.ndim:
            raise ValueError(f"tensordot: axis {ax} is out of range for shape {x.shape}")
    return [i % a.ndim for i in first], [i % b.ndim for i in second]


def tensordot(a, b, axes=2):
    """NumPy's tensordot: the sum over the named axes of a and b, a's other axes then b's."""
    a, b = _as_tensors(a, b)
    first, second = _tensordot_axes(a, b, axes)
    letters = iter(string.ascii_letters)
    ta = [next(letters) for _ in range(a.ndim)]
    tb = [next(letters) for _ in range(b.ndim)]
    for i, j in zip(first, second):
        if a.shape[i] != b.shape[j]:
            raise recording.ShapeError(f"tensordot: axis {i} of a (shape {a.shape}) and axis "
                                       f"{j} of b (shape {b.shape}) differ in length")
        tb[j] = ta[i]
    out = [c for k, c in enumerate(ta) if k not in first] + \
          [c for k, c in enumerate(tb) if k not in second]
    return einsum(f"{''.join(ta)},{''.join(tb)}->{''.join(out)}", a, b)


def inner(a, b):
    """NumPy's inner: the sum over the last axes (a product where either is 0-d)."""
    a, b = _as_tensors(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    return tensordot(a, b, ([-1], [-1]))


def outer(a, b):
    """NumPy's outer: every element of a (flattened) times every element of b."""
    a, b = _as_tensors(a, b)
    return einsum("i,j->ij", a.reshape(-1), b.reshape(-1))


def kron(a, b):
    """NumPy's kron: the Kronecker product, blocks of b scaled by the elements of a."""
    a, b = _as_tensors(a, b)
    nd = max(a.ndim, b.ndim)
    a = a.reshape((1,) * (nd - a.ndim) + a.shape)
    b = b.reshape((1,) * (nd - b.ndim) + b.shape)
    ta, tb = string.ascii_lowercase[:nd], string.ascii_uppercase[:nd]
    blocks = einsum(f"{ta},{tb}->{''.join(x + y for x, y in zip(ta, tb))}", a, b)
    return blocks.reshape(tuple(m * n for m, n in zip(a.shape, b.shape)))


def dot(a, b):
    """NumPy's dot: a product for 0-d operands, matmul up to 2-D, and beyond that the sum
    over a's last axis and b's second to last."""
    a, b = _as_tensors(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if b.ndim <= 2:
        return registry.OPS["matmul"].function(a, b)
    return tensordot(a, b, ([-1], [-2]))


BUILT = ("tensordot", "inner", "outer", "kron", "dot")  # gg functions built on the table's ops
