"""Function transforms: grad, value_and_grad, vjp, jvp (true forward mode), jacobian, hvp.

They compose (gg.grad(gg.grad(f))): a transform called while recording builds a differentiable
result (create_graph), so an outer transform can differentiate through it.
"""

import numbers

from gpugrad import autograd
from gpugrad import ops
from gpugrad import tensors


def _track(x):
    """A tensor whose node autograd.grad can target: x itself if it is in the graph already."""
    x = x if isinstance(x, tensors.Tensor) else tensors.tensor(x)
    if x._node is not None:
        return x
    if x.dtype.kind != "f":
        raise TypeError(f"cannot differentiate with respect to a tensor of dtype {x.dtype}")
    t = tensors.wrap(x.data, x.device)
    t._node = autograd.Leaf(t, "write")
    return t


def _argnums(argnums, n):
    single = isinstance(argnums, numbers.Integral)
    nums = (argnums,) if single else tuple(argnums)
    for i in nums:
        if not -n <= i < n:
            raise ValueError(f"argnums {i} is out of range for {n} argument(s)")
    return single, tuple(i % n for i in nums)


def value_and_grad(f, argnums=0):
    """A function returning (f(*args), gradient of scalar f w.r.t. args[argnums])."""
    def value_and_grad_f(*args):
        single, nums = _argnums(argnums, len(args))
        create = autograd.is_recording()
        args = list(args)
        for i in nums:
            args[i] = _track(args[i])
        with autograd.record(train_mode=autograd.is_training()):
            y = f(*args)
        if not isinstance(y, tensors.Tensor) or y.size != 1:
            shape = getattr(y, "shape", type(y).__name__)
            raise ValueError(f"grad needs f to return a tensor with one element, got {shape}")
        if y._node is None:
            grads = [tensors.zeros_like(args[i]) for i in nums]
        else:
            grads = autograd.grad(y, [args[i] for i in nums], create_graph=create)
        return y, grads[0] if single else tuple(grads)
    return value_and_grad_f


def grad(f, argnums=0):
    """A function returning the gradient of scalar-valued f with respect to args[argnums]."""
    vg = value_and_grad(f, argnums)

    def grad_f(*args):
        return vg(*args)[1]
    return grad_f


def vjp(f, *primals):
    """(f(*primals), vjp_fn) where vjp_fn(cotangent) returns one gradient per primal."""
    xs = [_track(p) for p in primals]
    with autograd.record(train_mode=autograd.is_training()):
        y = f(*xs)

    def vjp_fn(cotangent):
        if y._node is None:
            return tuple(tensors.zeros_like(x) for x in xs)
        return tuple(autograd.grad(y, xs, head_grads=cotangent, retain_graph=True,
                                   create_graph=autograd.is_recording()))
    return y, vjp_fn


def jvp(f, primals, tangents):
    """(f(*primals), J @ tangents), computed in forward mode alongside f."""
    primals = [p if isinstance(p, tensors.Tensor) else tensors.tensor(p) for p in primals]
    if len(tangents) != len(primals):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    xs = []
    for p, t in zip(primals, tangents):
        t = t if isinstance(t, tensors.Tensor) else tensors.tensor(t, dtype=p.dtype, device=p.device)
        if t.shape != p.shape:
            raise autograd.ShapeError(f"jvp: tangent of shape {t.shape} for a primal of shape "
                                      f"{p.shape}")
        x = tensors.wrap(p.data, p.device, p._node)
        x._tangent = t
        xs.append(x)
    with autograd.forward_mode():
        y = f(*xs)
    t = y._tangent if y._tangent is not None else tensors.zeros_like(y)
    y._tangent = None
    return y, t


def jacobian(f, mode="rev"):
    """A function x -> the Jacobian of f at x, of shape f(x).shape + x.shape."""
    if mode not in ("rev", "fwd"):
        raise ValueError(f"mode must be 'rev' or 'fwd', got {mode!r}")

    def jacobian_f(x):
        x = x if isinstance(x, tensors.Tensor) else tensors.tensor(x)
        if mode == "rev":
            y, vjp_fn = vjp(f, x)
            rows = []
            for i in range(y.size):
                e = tensors.zeros(y.size, dtype=y.dtype, device=y.device)
                e.data[i] = 1
                rows.append(vjp_fn(ops.reshape(e, y.shape))[0])
            return ops.reshape(ops.stack(rows), y.shape + x.shape)
        cols = []
        for j in range(x.size):
            e = tensors.zeros(x.size, dtype=x.dtype, device=x.device)
            e.data[j] = 1
            y, t = jvp(f, (x,), (ops.reshape(e, x.shape),))
            cols.append(t)
        return ops.reshape(ops.stack(cols, axis=-1), y.shape + x.shape)
    return jacobian_f


def hvp(f, x, v):
    """The Hessian of scalar f at x times v (reverse over reverse)."""
    v = v if isinstance(v, tensors.Tensor) else tensors.tensor(v)
    return grad(lambda x: ops.sum(grad(f)(x) * v))(x)
