"""gg.gradcheck: reverse and forward mode against central finite differences, in float64."""

import numpy as np

from gpugrad import autograd
from gpugrad import devices
from gpugrad.engine import transforms as functional
from gpugrad import ops
from gpugrad import tensors


class GradcheckError(AssertionError):
    """An analytic derivative disagrees with the finite-difference one."""


def _vjp_as_function(f, cotangent):
    """x -> vjp of f at x with a fixed cotangent, flattened: its gradient is f's second order."""
    def first_derivative(*xs):
        _, vjp_fn = functional.vjp(f, *xs)
        return ops.concatenate([ops.reshape(g, (-1,)) for g in vjp_fn(cotangent)])
    return first_derivative


def _float64_inputs(inputs):
    xs = []
    for i, x in enumerate(inputs):
        x = x if isinstance(x, tensors.Tensor) else tensors.tensor(x, dtype="float64")
        if not devices.is_float(x.dtype):
            raise TypeError(f"gradcheck: input {i} has dtype {x.dtype}; inputs must be floating")
        xs.append(tensors.tensor(x, dtype="float64"))  # a copy, so perturbing it is safe
    return xs


def _numeric_vjp(f, xs, u, eps):
    """Central differences of <u, f(x)> with respect to every element of every input."""
    grads = []
    with autograd.pause():
        for x in xs:
            flat = x.data.reshape(-1)
            g = np.empty(x.size)
            for j in range(x.size):
                orig = flat[j].item()
                flat[j] = orig + eps
                plus = float((f(*xs) * u).sum().item())
                flat[j] = orig - eps
                minus = float((f(*xs) * u).sum().item())
                flat[j] = orig
                g[j] = (plus - minus) / (2 * eps)
            grads.append(g.reshape(x.shape))
    return grads


def _compare(what, analytic, numeric, atol, rtol):
    bad = np.abs(analytic - numeric) > atol + rtol * np.abs(numeric)
    if bad.any() or not np.isfinite(analytic).all() and np.isfinite(numeric).all():
        err = np.where(np.isfinite(analytic), np.abs(analytic - numeric), np.inf)
        worst = np.unravel_index(np.argmax(err), np.shape(err)) if np.ndim(err) else ()
        raise GradcheckError(
            f"{what}: worst element {worst}: analytic {np.asarray(analytic)[worst]!r} vs "
            f"numeric {np.asarray(numeric)[worst]!r} (atol={atol}, rtol={rtol}); "
            f"{int(bad.sum())} of {np.size(bad)} elements differ")


def gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, order=1, forward=True, seed=0,
              dtype=None, roundings=16):
    """Check f's derivatives against central finite differences, in float64.

    Reverse mode: the vjp with a random cotangent u, element by element against the numeric
    gradient of <u, f(x)>. Forward mode (order 1): <u, J v> from gg.jvp against the reverse
    result <vjp, v> for random tangents v. order=2 checks the derivative of the vjp (through
    create_graph) in the same way. With dtype (say "bfloat16"), f's value, vjp and jvp
    computed in that dtype are then held to the float64 ones from the same rounded inputs,
    each element within `roundings` times the dtype's epsilon of them (relative to the
    array's largest). Raises GradcheckError naming the worst element; returns True when
    everything agrees.
    """
    if order not in (1, 2):
        raise ValueError(f"gradcheck: order must be 1 or 2, got {order}")
    if dtype is not None:
        return _precision_check(f, inputs, devices.as_dtype(dtype), roundings, order, forward,
                                seed, (eps, atol, rtol))
    rng = np.random.default_rng(seed)
    xs = _float64_inputs(inputs)
    if order == 2:
        with autograd.pause():
            y0 = f(*xs)
        u1 = tensors.tensor(rng.standard_normal(y0.shape), dtype="float64", device=y0.device)
        return gradcheck(_vjp_as_function(f, u1), xs, eps, atol, rtol, order=1, forward=False,
                         seed=seed + 1)
    y, vjp_fn = functional.vjp(f, *xs)
    if not isinstance(y, tensors.Tensor):
        raise TypeError(f"gradcheck: f must return a Tensor, got {type(y).__name__}")
    u = tensors.tensor(rng.standard_normal(y.shape), dtype=y.dtype, device=y.device)
    analytic = [g.numpy() for g in vjp_fn(u)]
    numeric = _numeric_vjp(f, xs, u, eps)
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        _compare(f"reverse mode, input {i}", a, n, atol, rtol)
    if forward:
        vs = [tensors.tensor(rng.standard_normal(x.shape), dtype="float64", device=x.device)
              for x in xs]
        _, t = functional.jvp(f, xs, vs)
        fwd = float((t * u).sum().item())
        rev = float(sum((a * v.numpy()).sum() for a, v in zip(analytic, vs)))
        _compare("forward mode <u, J v> vs reverse <J^T u, v>", np.float64(fwd), np.float64(rev),
                 atol * max(1, len(analytic)), rtol)
    return True


def _precision_check(f, inputs, dtype, roundings, order, forward, seed, tolerances):
    """gradcheck in float64 from the inputs rounded to `dtype`, then f's value, vjp and jvp in
    `dtype` against the float64 ones, within `roundings` epsilons of the dtype."""
    if not devices.is_float(dtype):
        raise TypeError(f"gradcheck: dtype {dtype} is not a floating dtype")
    low = [tensors.tensor(x, dtype=dtype) if not isinstance(x, tensors.Tensor) else x.astype(dtype)
           for x in inputs]
    wide = [x.astype("float64") for x in low]
    gradcheck(f, wide, *tolerances, order=order, forward=forward, seed=seed)
    rng = np.random.default_rng(seed)
    y, vjp_low = functional.vjp(f, *low)
    y64, vjp_wide = functional.vjp(f, *wide)
    u = rng.standard_normal(y64.shape)
    tol = roundings * devices.epsilon(dtype)
    pairs = [("value", y, y64)] + [
        (f"reverse mode, input {i}", a, b) for i, (a, b) in enumerate(zip(
            vjp_low(tensors.tensor(u, dtype=y.dtype, device=y.device)),
            vjp_wide(tensors.tensor(u, dtype="float64", device=y64.device))))]
    if forward:
        vs = [rng.standard_normal(x.shape) for x in low]
        t = functional.jvp(f, low, [tensors.tensor(v, dtype=x.dtype, device=x.device) for v, x in zip(vs, low)])[1]
        t64 = functional.jvp(f, wide, [tensors.tensor(v, dtype="float64", device=x.device) for v, x in zip(vs, wide)])[1]
        pairs.append(("forward mode", t, t64))
    for what, a, b in pairs:
        ref = b.numpy()
        scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-3)
        _compare(f"{what} in {dtype}", a.numpy().astype(np.float64), ref, tol * scale, tol)
    return True
