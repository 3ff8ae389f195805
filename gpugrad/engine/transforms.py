"""Function transforms: grad, value_and_grad, vjp, jvp (true forward mode), jacrev, jacfwd,
jacobian, hessian, hvp.

They compose in any order. A transform called while recording builds a differentiable result
(create_graph), so an outer gg.grad can differentiate through it; one called inside gg.jvp runs
its backward as Tensor ops that carry the outer tangents (forward over reverse); gg.jvp inside
gg.jvp keeps one tangent per level (recording.forward_mode). Arguments and results may be Tensors
or tuples, lists and dicts of them (nested); a transform never writes into its caller's arrays.
"""

import numbers

from gpugrad import recording
from gpugrad.engine import backward
from gpugrad import devices
from gpugrad import ops
from gpugrad import tensors

# ---------------------------------------------------------------------------- pytrees


def _is_tree(x):
    """A tuple, list or dict holding a Tensor somewhere: a structure of arguments. Anything
    else (a Tensor, an array, a list of numbers) is one argument."""
    if isinstance(x, dict):
        return any(isinstance(v, tensors.Tensor) or _is_tree(v) for v in x.values())
    if isinstance(x, (tuple, list)):
        return any(isinstance(v, tensors.Tensor) or _is_tree(v) for v in x)
    return False


def _leaves(tree):
    """The leaves of a structure, depth first, in order."""
    if _is_tree(tree):
        items = tree.values() if isinstance(tree, dict) else tree
        return [leaf for item in items for leaf in _leaves(item)]
    return [tree]


def _rebuild(tree, leaves):
    """A structure like `tree` with `leaves` (an iterator) in place of its leaves."""
    if not _is_tree(tree):
        return next(leaves)
    if isinstance(tree, dict):
        return {k: _rebuild(v, leaves) for k, v in tree.items()}
    return type(tree)(_rebuild(v, leaves) for v in tree)


def _map(f, tree):
    return _rebuild(tree, iter([f(x) for x in _leaves(tree)]))


# ---------------------------------------------------------------------------- helpers


def _as_tensor(x, like=None):
    if isinstance(x, tensors.Tensor):
        return x
    if like is None:
        return tensors.tensor(x)
    return tensors.tensor(x, dtype=like.dtype, device=like.device)


def _track(x):
    """x as a tensor whose node backward.grad can target: x itself if it is in the graph
    already, else a new tensor over x's data (with x's tangents under gg.jvp) that is a leaf.
    Item assignment into it is refused while recording (methods.setitem), so the caller's
    array is never written."""
    x = _as_tensor(x)
    if x._node is not None and x._node is not recording.CONSTANT:
        return x
    if not devices.is_float(x.dtype):
        raise TypeError(f"cannot differentiate with respect to a tensor of dtype {x.dtype}")
    t = tensors.wrap(x.data, x.device)
    t._tangent = x._tangent
    t._node = recording.Leaf(t, "write")
    return t


def _detached(y):
    """y without its graph (which a backward without create_graph has freed), keeping the
    tangents an outer gg.jvp gave it."""
    t = tensors.wrap(y.data, y.device)
    t._tangent = y._tangent
    return t


def _argnums(argnums, n):
    single = isinstance(argnums, numbers.Integral)
    nums = (argnums,) if single else tuple(argnums)
    if not nums:
        raise ValueError("argnums names no argument")
    for i in nums:
        if not isinstance(i, numbers.Integral) or not -n <= i < n:
            raise ValueError(f"argnums {i!r} is out of range for {n} argument(s)")
    return single, tuple(int(i) % n for i in nums)


def _outputs(out, who):
    leaves = _leaves(out)
    for o in leaves:
        if not isinstance(o, tensors.Tensor):
            raise TypeError(f"{who}: f must return a Tensor or a tuple, list or dict of Tensors, "
                            f"got {type(o).__name__}")
    return leaves


def _gradients(heads, head_grads, variables, retain_graph):
    """d(heads)/d(variables) times head_grads, zeros where a variable is not reached; recorded
    while an outer transform records (create_graph), so that it can differentiate them."""
    pairs = [(h, g) for h, g in zip(heads, head_grads) if h._node is not None]
    if not pairs:
        return [tensors.zeros_like(v) for v in variables]
    hs, gs = zip(*pairs)
    create = recording.is_recording()
    return list(backward.grad(list(hs), list(variables), head_grads=list(gs),
                              retain_graph=retain_graph or create, create_graph=create))


# ---------------------------------------------------------------------------- reverse mode


def value_and_grad(f, argnums=0, has_aux=False):
    """A function returning (f(*args), gradient of scalar f w.r.t. args[argnums]); with
    has_aux, f returns (value, aux) and the result is ((value, aux), gradient). The value
    comes back detached from the graph the gradient was taken through."""
    def value_and_grad_f(*args):
        single, nums = _argnums(argnums, len(args))
        args = list(args)
        for i in nums:
            args[i] = _map(_track, args[i])
        with recording.record(train_mode=recording.is_training()):
            out = f(*args)
        y, aux = _split_aux(out, has_aux)
        if not isinstance(y, tensors.Tensor) or y.size != 1:
            shape = getattr(y, "shape", type(y).__name__)
            raise ValueError(f"grad needs f to return a tensor with one element, got {shape}")
        variables = [leaf for i in nums for leaf in _leaves(args[i])]
        flat = iter(_gradients([y], [None], variables, retain_graph=False))
        grads = tuple(_rebuild(args[i], flat) for i in nums)
        if not recording.is_recording():
            y = _detached(y)
        value = (y, aux) if has_aux else y
        return value, grads[0] if single else grads
    return value_and_grad_f


def _split_aux(out, has_aux):
    if not has_aux:
        return out, None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError("has_aux=True: f must return a pair (value, aux)")
    return out[0], out[1]


def grad(f, argnums=0, has_aux=False):
    """A function returning the gradient of scalar-valued f with respect to args[argnums]
    (a tuple of gradients for a tuple of argnums; each shaped like its argument, structures
    included); with has_aux, (gradient, aux)."""
    vg = value_and_grad(f, argnums, has_aux)

    def grad_f(*args):
        value, g = vg(*args)
        return (g, value[1]) if has_aux else g
    return grad_f


def vjp(f, *primals):
    """(f(*primals), vjp_fn): vjp_fn(cotangents) returns one gradient per primal, each shaped
    like it. f may return a Tensor or a structure of them; the cotangents have that structure."""
    xs = [_map(_track, p) for p in primals]
    with recording.record(train_mode=recording.is_training()):
        out = f(*xs)
    outs = _outputs(out, "vjp")

    def vjp_fn(cotangents):
        cts = _leaves(cotangents) if _is_tree(out) else [cotangents]
        if len(cts) != len(outs):
            raise ValueError(f"vjp: f returned {len(outs)} output(s) but {len(cts)} "
                             f"cotangent(s) were given")
        cts = [_as_tensor(c, o) for c, o in zip(cts, outs)]
        for c, o in zip(cts, outs):
            if c.shape != o.shape:
                raise recording.ShapeError(f"vjp: cotangent of shape {c.shape} for an output of "
                                          f"shape {o.shape}")
        variables = [leaf for x in xs for leaf in _leaves(x)]
        flat = iter(_gradients(outs, cts, variables, retain_graph=True))
        return tuple(_rebuild(x, flat) for x in xs)
    return out, vjp_fn


# ---------------------------------------------------------------------------- forward mode


def jvp(f, primals, tangents):
    """(f(*primals), J @ tangents), computed in forward mode alongside f. primals and tangents
    are sequences of the same length (each tangent shaped like its primal, structures
    included); f may return a Tensor or a structure of them, and the tangent out has that
    structure."""
    primals, tangents = list(primals), list(tangents)
    if len(tangents) != len(primals):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    level = recording.new_level()
    xs = []
    for p, t in zip(primals, tangents):
        p_leaves = _leaves(p)
        t_leaves = _leaves(t) if _is_tree(p) else [t]
        if len(t_leaves) != len(p_leaves):
            raise ValueError(f"jvp: a primal with {len(p_leaves)} tensor(s) was given a tangent "
                             f"with {len(t_leaves)}")
        xs.append(_rebuild(p, iter([_dual(a, b, level) for a, b in zip(p_leaves, t_leaves)])))
    with recording.forward_mode(level):
        out = f(*xs)
    outs = _outputs(out, "jvp")
    primal_out, tangent_out = [], []
    for o in outs:
        rest = dict(o._tangent) if o._tangent else {}
        t = rest.pop(level, None)
        y = tensors.wrap(o.data, o.device, o._node)
        y._tangent = rest or None
        primal_out.append(y)
        tangent_out.append(t if t is not None else tensors.zeros_like(o))
    return _rebuild(out, iter(primal_out)), _rebuild(out, iter(tangent_out))


def _dual(p, t, level):
    """p with tangent t at `level`, keeping the tangents p has at outer levels."""
    p = _as_tensor(p)
    t = _as_tensor(t, p)
    if t.shape != p.shape:
        raise recording.ShapeError(f"jvp: tangent of shape {t.shape} for a primal of shape "
                                  f"{p.shape}")
    if t.device != p.device:
        raise devices.DeviceError(f"jvp: tangent on {t.device!r} for a primal on {p.device!r}")
    x = tensors.wrap(p.data, p.device, p._node)
    x._tangent = {**(p._tangent or {}), level: t if t.dtype == p.dtype else t.astype(p.dtype)}
    return x


# ---------------------------------------------------------------------------- Jacobians


def _with_args(f, args, nums):
    """f as a function of args[nums] alone, the other arguments fixed."""
    def partial(*diff):
        full = list(args)
        for i, d in zip(nums, diff):
            full[i] = d
        return f(*full)
    return partial


def _basis(like, k):
    """The k-th unit tensor shaped like `like` (a constant)."""
    with recording.pause():
        e = tensors.zeros(like.size, dtype=like.dtype, device=like.device)
        e.data[k] = 1
    return ops.reshape(e, like.shape)


def _stacked(parts, shape, axis):
    """parts (one per element) stacked along `axis` and reshaped to `shape`."""
    if not parts:
        return None
    return ops.reshape(ops.stack(parts, axis=axis), shape)


def jacrev(f, argnums=0):
    """A function returning the Jacobian of f at its arguments, by reverse mode (one vjp per
    output element): of shape out.shape + arg.shape, a tuple over argnums for a tuple, inside
    the structure f returns."""
    def jacobian_f(*args):
        single, nums = _argnums(argnums, len(args))
        primals = [_as_tensor(args[i]) for i in nums]
        out, vjp_fn = vjp(_with_args(f, args, nums), *primals)
        outs = _outputs(out, "jacrev")
        jac = []
        for k, o in enumerate(outs):
            rows = [[] for _ in primals]
            for e in range(o.size):
                cts = [_basis(o, e) if j == k else tensors.zeros_like(u) for j, u in
                       enumerate(outs)]
                for r, g in zip(rows, vjp_fn(_rebuild(out, iter(cts)))):
                    r.append(g)
            per_arg = [_empty_jacobian(o, p) if not r else _stacked(r, o.shape + p.shape, 0)
                       for r, p in zip(rows, primals)]
            jac.append(per_arg[0] if single else tuple(per_arg))
        return _rebuild(out, iter(jac))
    return jacobian_f


def jacfwd(f, argnums=0):
    """A function returning the Jacobian of f at its arguments, by forward mode (one jvp per
    input element): of shape out.shape + arg.shape, like jacrev's."""
    def jacobian_f(*args):
        single, nums = _argnums(argnums, len(args))
        primals = [_as_tensor(args[i]) for i in nums]
        partial = _with_args(f, args, nums)
        cols = None
        out = None
        for j, p in enumerate(primals):
            for e in range(p.size):
                ts = [_basis(p, e) if i == j else tensors.zeros_like(q) for i, q in
                      enumerate(primals)]
                out, t = jvp(partial, primals, ts)
                t_leaves = _outputs(t, "jacfwd")
                if cols is None:
                    cols = [[[] for _ in primals] for _ in t_leaves]
                for k, tk in enumerate(t_leaves):
                    cols[k][j].append(tk)
        if out is None:  # every argument is empty: no jvp ran; evaluate f once for its shape
            out = partial(*primals)
            cols = [[[] for _ in primals] for _ in _outputs(out, "jacfwd")]
        outs = _outputs(out, "jacfwd")
        jac = []
        for k, o in enumerate(outs):
            per_arg = [_empty_jacobian(o, p) if not c else _stacked(c, o.shape + p.shape, -1)
                       for c, p in zip(cols[k], primals)]
            jac.append(per_arg[0] if single else tuple(per_arg))
        return _rebuild(out, iter(jac))
    return jacobian_f


def _empty_jacobian(o, p):
    return tensors.zeros(o.shape + p.shape, dtype=o.dtype, device=o.device)


def jacobian(f, mode="rev"):
    """A function x -> the Jacobian of f at x, of shape f(x).shape + x.shape: jacrev(f)
    (mode="rev") or jacfwd(f) (mode="fwd")."""
    if mode not in ("rev", "fwd"):
        raise ValueError(f"mode must be 'rev' or 'fwd', got {mode!r}")
    return jacrev(f) if mode == "rev" else jacfwd(f)


def hessian(f, argnums=0):
    """A function returning the Hessian of scalar f: forward over reverse, jacfwd(jacrev(f)),
    of shape arg.shape + arg.shape (nested tuples for a tuple of argnums)."""
    return jacfwd(jacrev(f, argnums), argnums)


def hvp(f, x, v):
    """The Hessian of scalar f at x times v (reverse over reverse)."""
    v = v if isinstance(v, tensors.Tensor) else tensors.tensor(v)
    return grad(lambda x: ops.sum(grad(f)(x) * v))(x)
