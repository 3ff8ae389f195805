"""Matrix products with NumPy's matmul semantics (1-D operands and batch broadcasting)."""

from gpugrad import recording
from gpugrad import devices
from gpugrad.ops.registry import defop


def _matmul(xp, a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise recording.ShapeError(f"matmul: operands must be at least 1-D, got shapes "
                                  f"{a.shape} and {b.shape} (use multiply for scalars)")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise recording.ShapeError(
            f"matmul: shapes {a.shape} and {b.shape} are not aligned: {k_a} (last dim of a) "
            f"!= {k_b} ({'dim 0' if b.ndim == 1 else 'second-to-last dim'} of b)")
    return devices.matmul(xp, a, b)


def _swap(ops, x):
    axes = list(range(x.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return ops.transpose(x, axes=tuple(axes))


def _matmul_grad_a(ops, g, a, b, y):
    if b.ndim == 1:  # y = a @ b sums over b's only axis: da = g[..., None] * b
        if a.ndim == 1:
            return g * b
        return ops.reshape(g, g.shape + (1,)) * b
    if a.ndim == 1:  # a acts as a row vector (1, k): da = (g[..., None, :] @ b^T)[..., 0, :]
        row = ops.matmul(ops.reshape(g, g.shape[:-1] + (1, g.shape[-1])), _swap(ops, b))
        return ops.reshape(row, row.shape[:-2] + (row.shape[-1],))
    return ops.matmul(g, _swap(ops, b))


def _matmul_grad_b(ops, g, a, b, y):
    if a.ndim == 1:  # y = a @ b: db = a[:, None] * g[..., None, :]
        if b.ndim == 1:
            return g * a
        return ops.reshape(a, (a.shape[0], 1)) * ops.reshape(g, g.shape[:-1] + (1, g.shape[-1]))
    if b.ndim == 1:  # b acts as a column (k, 1): db = (a^T @ g[..., None])[..., 0]
        col = ops.matmul(_swap(ops, a), ops.reshape(g, g.shape + (1,)))
        return ops.reshape(col, col.shape[:-1])
    return ops.matmul(_swap(ops, a), g)


def _matmul_jvp(ops, ts, a, b, y):
    ta, tb = ts
    out = None if ta is None else ops.matmul(ta, b)
    if tb is not None:
        out = ops.matmul(a, tb) if out is None else out + ops.matmul(a, tb)
    return out


# fmt: off
matmul = defop("matmul", _matmul, save={"a": "b", "b": "a"},
               vjp=(_matmul_grad_a, _matmul_grad_b), jvp=_matmul_jvp)
# fmt: on


def _linear(xp, x, w, b):
    if x.shape[-1] != w.shape[1]:
        raise recording.ShapeError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) "
                                  f"but the weight expects {w.shape[1]} (shape {w.shape})")
    y = devices.matmul(xp, x, w.T)
    if b is not None:
        y += b  # in place: y is new
    return y


def _linear_grad_x(ops, g, x, w, b, y):
    return ops.matmul(g, w)


def _linear_grad_w(ops, g, x, w, b, y):
    # g^T @ x in W's own (out, in) layout, contiguous; batch dims are summed over (flattened
    # first; a 2-D input, the common case, needs no reshape ops)
    g2 = g if g.ndim == 2 else ops.reshape(g, (-1, g.shape[-1]))
    x2 = x if x.ndim == 2 else ops.reshape(x, (-1, x.shape[-1]))
    return ops.matmul(ops.transpose(g2), x2)


# fmt: off
linear_ = defop("linear", _linear, save={"x": "w", "w": "x", "b": ""}, optional=("b",),
                vjp=(_linear_grad_x, _linear_grad_w, lambda ops, g, x, w, b, y: g),
                jvp=lambda ops, ts, x, w, b, y: _linear_jvp(ops, ts, x, w, b))
# fmt: on


def _linear_jvp(ops, ts, x, w, b):
    tx, tw, tb = ts
    out = None
    for t in (None if tx is None else ops.matmul(tx, ops.transpose(w)),
              None if tw is None else ops.matmul(x, ops.transpose(tw)), tb):
        if t is not None:
            out = t if out is None else out + t
    return out


def linear(x, w, b=None):
    """x @ w.T + b for w of shape (out, in), as PyTorch's linear; the weight's gradient is
    computed in its own layout (no transposed copy)."""
    return linear_(x, w, b)

