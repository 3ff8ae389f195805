"""Activations, each declared once; their backward passes as ops of their own; softmax and
log_softmax.

ACTIVATIONS holds one Activation row per activation: its name, its kernels (rows of
activations.cuh's GG_ACTIVATIONS), what its backward reads, its parameters, its gg.nn module
and its math on arrays, which is both the CPU path and the reference the strict test device
computes in place of the kernels. The ops are made from the rows below; so are the kernels'
specs, the gg.nn modules, the memory formula, the CLI's choices, the benchmark list and the
tests' cases. Each forward and backward asks devices.fused() for the CUDA kernel, on the CPU
activation_numba.kernel() for a numba one, and falls back to the xp formula. The backward of each activation is itself an op (Chainer's ReLUGrad2
pattern) whose rules come from the row's `backward_derivative`, so create_graph=True
differentiates through the fused path too.
"""

from typing import Callable, NamedTuple

import numpy as np

from gpugrad import devices
from gpugrad.devices.cuda import kernels, specs
from gpugrad.devices.cuda import references as ref
from gpugrad.devices.cuda.references import leaky_relu_mask, relu_mask
from gpugrad.ops import activation_formulas as formula
from gpugrad.ops import activation_numba
from gpugrad.ops import reduce
from gpugrad.ops.registry import defelementwise, defop, jvp_of_two, no_gradient



class Activation(NamedTuple):
    """One activation, declared once."""

    name: str            # gg.<name>, gg.<name>_backward, and its kernels' <kernel>_fwd/_bwd
    kernels: dict        # variant -> (kernel name, Functor of its GG_ACTIVATIONS row)
    saves: str           # what backward reads: "x" (the input), "y" (the output), "mask" (1 bit)
    params: tuple        # ((name, default), ...): its keyword parameters; numbers go to kernels
    module: str          # its gg.nn module class (PyTorch's name for it)
    forward: Callable    # (xp, x, **params) -> y, on arrays
    backward: Callable = None  # (xp, g, s, **params) -> dx on arrays, s the saved x or y
    backward_derivative: Callable = None  # (ops, g, s, **params): g times d(backward)/ds, in `ops`
    variant: str = None  # the parameter that picks the kernel (gelu's approximate)
    check: Callable = None     # (params) -> None, raising for bad parameters
    saves_if: Callable = None  # (params) -> "x" or "y" where that depends on them (elu)
    forward_partial: Callable = None  # (ops, g, x, y, **params) -> dx where the backward op is not it
    kinks: tuple = ()    # inputs where its derivative jumps (finite differences keep away)

    def kernel(self, params):
        """The kernel name for these parameters."""
        key = params[self.variant] if self.variant else None
        if key not in self.kernels:
            raise ValueError(f"{self.variant} must be {' or '.join(map(repr, self.kernels))}, "
                             f"got {key!r}")
        return self.kernels[key][0]

    def kernel_scalars(self, params):
        """The numeric parameters in order: the kernels' p0, p1."""
        return tuple(params[p] for p, _ in self.params if p != self.variant)

    def saved(self, params):
        return self.saves_if(params) if self.saves_if else self.saves


# ---------------------------------------------------------------------------- second derivatives
# In the op namespace `ops`: the rule of each backward op with respect to what it saved, times g.


def _gelu_second_derivative(ops, g, x, approximate):
    if approximate == "tanh":
        t = ops.tanh(formula.SQRT_2_OVER_PI * (x + formula.GELU_C * x * x * x))
        du = formula.SQRT_2_OVER_PI * (1 + 3 * formula.GELU_C * x * x)
        d2u = 6 * formula.SQRT_2_OVER_PI * formula.GELU_C * x
        return g * ((1 - t * t) * (du - x * t * du * du + 0.5 * x * d2u))
    return g * (formula.INV_SQRT_2PI * ops.exp(-0.5 * (x * x)) * (2 - x * x))


def _silu_second_derivative(ops, g, x):
    s = ops.sigmoid(x)
    return g * (s * (1 - s) * (2 + x * (1 - 2 * s)))


def _softplus_second_derivative(ops, g, x, beta, threshold):
    s = ops.sigmoid(x * beta)
    return ops.where(x * beta > threshold, 0.0, g * beta * s * (1 - s))


def _softsign_second_derivative(ops, g, x):
    d = 1 + ops.abs(x)
    return -2 * g * ops.sign(x) / (d * d * d)


def _elu_grad(ops, g, x, y, alpha):
    if alpha >= 0:
        return ops.elu_backward(g, y, alpha=alpha)
    return ops.where(x <= 0, g * alpha * ops.exp(x), g)  # a negative alpha needs x, not y


def _check_softplus(params):
    if params["beta"] <= 0:
        raise ValueError(f"softplus: beta must be positive, got {params['beta']}")


# ---------------------------------------------------------------------------- the declarations
# Adding an activation: its math in activations.cuh with a GG_ACTIVATIONS row, a row here, and
# its gradient case in tests/ops/test_ops.py.

# fmt: off
ACTIVATIONS = {a.name: a for a in (
    Activation("relu", {None: ("relu", "Relu")}, "mask", (), "ReLU",
               forward=ref.relu),
    Activation("leaky_relu", {None: ("leaky_relu", "LeakyRelu")}, "mask", (("negative_slope", 0.01),), "LeakyReLU",
               forward=ref.leaky_relu),
    Activation("elu", {None: ("elu", "Elu")}, "y", (("alpha", 1.0),), "ELU",
               forward=formula.elu, backward=formula.elu_backward,
               backward_derivative=lambda ops, g, out, alpha: ops.where(out > 0, 0.0, g),
               saves_if=lambda p: "y" if p["alpha"] >= 0 else "x", forward_partial=_elu_grad),
    Activation("gelu", {"none": ("gelu", "Gelu"), "tanh": ("gelu_tanh", "GeluTanh")}, "x",
               (("approximate", "none"),), "GELU", variant="approximate",
               forward=formula.gelu, backward=formula.gelu_backward, backward_derivative=_gelu_second_derivative),
    Activation("silu", {None: ("silu", "Silu")}, "x", (), "SiLU",
               forward=formula.silu, backward=formula.silu_backward, backward_derivative=_silu_second_derivative),
    Activation("softplus", {None: ("softplus", "Softplus")}, "x", (("beta", 1.0), ("threshold", 20.0)), "Softplus",
               forward=formula.softplus, check=_check_softplus, backward=formula.softplus_backward, backward_derivative=_softplus_second_derivative),
    Activation("sigmoid", {None: ("sigmoid", "Sigmoid")}, "y", (), "Sigmoid",
               forward=formula.sigmoid, backward=formula.sigmoid_backward,
               backward_derivative=lambda ops, g, out: g * (1 - 2 * out)),
    Activation("tanh", {None: ("tanh", "Tanh")}, "y", (), "Tanh",
               forward=lambda xp, x: xp.tanh(x), backward=formula.tanh_backward,
               backward_derivative=lambda ops, g, out: -2 * g * out),
    Activation("softsign", {None: ("softsign", "Softsign")}, "x", (), "Softsign",
               forward=formula.softsign, backward=formula.softsign_backward,
               backward_derivative=_softsign_second_derivative),
    # backward: PyTorch's branches, 0 up to -3 and 1 from 3 on; a NaN input passes g on
    Activation("hardswish", {None: ("hardswish", "Hardswish")}, "x", (), "Hardswish",
               forward=formula.hardswish, backward=formula.hardswish_backward,
               backward_derivative=lambda ops, g, x: ops.where(x <= -3, 0.0, ops.where(x < 3, g / 3, 0.0)),
               kinks=(-3.0, 3.0)),
)}
# fmt: on


# ---------------------------------------------------------------------------- the ops they make


def _mask_backward(xp, g, mask, *, negative_slope=0.0):
    if mask.ndim != 1 or mask.dtype != np.uint32 or mask.size * 32 < g.size:
        raise ValueError(f"relu_backward: the mask must be packed uint32 words for {g.size} "
                         f"elements ({(g.size + 31) // 32} words), got {mask.dtype} of shape "
                         f"{mask.shape}")
    k = devices.fused("relu_bwd_mask", xp, g) or activation_numba.kernel("relu_bwd_mask", xp, g, mask)
    if k:
        return k(g, mask, negative_slope)
    if g.dtype.itemsize != 2:
        return specs.RELU_BWD_MASK.reference(xp, g, mask, negative_slope)
    return devices.carried(lambda g: specs.RELU_BWD_MASK.reference(xp, g, mask, negative_slope), g)


def _output_backward(xp, g, out, *, negative_slope=0.0, leaky=False):
    k = devices.fused("relu_bwd_out", xp, g, out) or activation_numba.kernel("relu_bwd_out", xp, g, out)
    if k:
        return k(g, out, negative_slope, leaky)
    if g.dtype.itemsize != 2 and out.dtype.itemsize != 2:
        return specs.RELU_BWD_OUT.reference(xp, g, out, negative_slope, leaky)
    return devices.carried(lambda g, out: specs.RELU_BWD_OUT.reference(
        xp, g, out, negative_slope, leaky), g, out)


# The backward of relu and leaky_relu from the mask: linear in g, nothing to differentiate in
# the (integer) mask.
# fmt: off
relu_backward = defop("relu_backward", _mask_backward, save="mask",
                      vjp=(lambda ops, h, g, mask, y, negative_slope: ops.relu_backward(h, mask, negative_slope=negative_slope), no_gradient),
                      jvp=lambda ops, ts, g, mask, y, negative_slope: None if ts[0] is None else ops.relu_backward(ts[0], mask, negative_slope=negative_slope))
# The same from the output, where the next op keeps it and no mask was kept (relu_backward's
# twin, so that no mask has to be made again for a backward)
relu_backward_from_output = defop(
    "relu_backward_from_output", _output_backward, save="out",
    vjp=(lambda ops, h, g, out, y, negative_slope, leaky: ops.relu_backward_from_output(h, out, negative_slope=negative_slope, leaky=leaky), no_gradient),
    jvp=lambda ops, ts, g, out, y, negative_slope, leaky: None if ts[0] is None else ops.relu_backward_from_output(ts[0], out, negative_slope=negative_slope, leaky=leaky))
# fmt: on


def _forward_of(a):
    def forward(xp, x, **params):
        if a.check:
            a.check(params)
        name = a.kernel(params) + "_fwd"
        k = devices.fused(name, xp, x) or activation_numba.kernel(name, xp, x)
        if k:
            return k(x, *a.kernel_scalars(params))
        if x.dtype.itemsize != 2:
            return a.forward(xp, x, **params)
        # a 16-bit x in float32, rounded once, as the kernel computes it
        return devices.carried(lambda x: a.forward(xp, x, **params), x)
    return forward


def _relu_fwd_mask(xp, x):
    return devices.fused("relu_fwd_mask", xp, x) or activation_numba.kernel("relu_fwd_mask", xp, x)


def _mask_saving_of(a, forward):
    """The forward that also writes the 1-bit mask: one kernel on a GPU. relu's mask is
    !(x <= 0), leaky_relu's x > 0; a zero slope takes the CPU formula with leaky_relu's mask."""
    def forward_saving(xp, x, **params):
        slope = params.get("negative_slope")
        k = _relu_fwd_mask(xp, x) if slope != 0 else None
        if k:
            y, mask = k(x, slope or 0.0)
        else:  # relu_fwd_mask's reference, with a zero slope's mask leaky_relu's x > 0
            bits = relu_mask if slope is None else leaky_relu_mask
            y, mask = forward(xp, x, **params), kernels.pack_mask(xp, bits(xp, x))
        return y, {"mask": mask}
    return forward_saving


def _mask_from_output(a):
    """relu's mask from its output, for when the next op keeps that output anyway: !(y <= 0)
    equals !(x <= 0) for y = max(x, 0), NaN included; leaky_relu's x > 0 equals y > 0 for a
    slope >= 0 (a negative slope flips the sign of y, so its mask stays)."""
    def remade(xp, y, slope, bits):
        # one kernel, where packing takes several; its slope-0 branch is relu's !(y <= 0), so
        # leaky_relu with a zero slope (its mask is y > 0: NaN gives 0) packs on arrays
        k = _relu_fwd_mask(xp, y) if slope != 0 or bits is relu_mask else None
        if k:
            return {"mask": k(y, slope)[1]}
        return {"mask": kernels.pack_mask(xp, bits(xp, y))}

    if "negative_slope" not in dict(a.params):
        return (lambda p: True, lambda xp, y: remade(xp, y, 0.0, relu_mask))
    return (lambda p: p["negative_slope"] >= 0,
            lambda xp, y, negative_slope: remade(xp, y, negative_slope, leaky_relu_mask))


def _backward_op(a):
    """<name>_backward(g, x or out): linear in g; in the saved array, the row's
    `backward_derivative`."""
    def run(xp, g, s, params):
        name = a.kernel(params) + "_bwd"
        k = devices.fused(name, xp, g, s) or activation_numba.kernel(name, xp, g, s)
        if k:
            return k(g, s, *a.kernel_scalars(params))
        if g.dtype.itemsize != 2 and s.dtype.itemsize != 2:
            return a.backward(xp, g, s, **params)
        return devices.carried(lambda g, s: a.backward(xp, g, s, **params), g, s)

    if a.saves == "x":
        def backward(xp, g, x, **params):
            return run(xp, g, x, params)
    else:
        def backward(xp, g, out, **params):
            return run(xp, g, out, params)
    s = "x" if a.saves == "x" else "out"
    name = f"{a.name}_backward"

    def along_g(ops, t, saved, p):  # the op itself: linear in g
        return getattr(ops, name)(t, saved, **p)

    return defop(name, backward, save={"g": s, s: f"g {s}"}, params=dict(a.params),
                 vjp=(lambda ops, h, g, saved, y, **p: along_g(ops, h, saved, p),
                      lambda ops, h, g, saved, y, **p: a.backward_derivative(ops, h * g, saved, **p)),
                 jvp=lambda ops, ts, g, saved, y, **p: jvp_of_two(
                     ts, lambda t: along_g(ops, t, saved, p), lambda t: a.backward_derivative(ops, t * g, saved, **p)))


def _declare(a):
    """Register the row's op (and its backward op): {name: function}."""
    forward = _forward_of(a)
    params = dict(a.params)
    if a.saves == "mask":
        leaky = "negative_slope" in params

        def partial(ops, g, x, y, mask, **p):  # mask None: dropped for the output, read that
            slope = p.get("negative_slope", 0.0)
            if mask is None:
                return ops.relu_backward_from_output(g, y, negative_slope=slope, leaky=leaky)
            return ops.relu_backward(g, mask, negative_slope=slope)
        op = defelementwise(a.name, forward, save="mask", aux=("mask",), params=params,
                            forward_saving=_mask_saving_of(a, forward), partials=(partial,),
                            aux_from_output=_mask_from_output(a))
        return {a.name: op}
    backward = _backward_op(a)
    name = backward.op.name
    if a.forward_partial is not None:
        partial = a.forward_partial
    elif a.saves == "x":
        def partial(ops, g, x, y, **p):
            return getattr(ops, name)(g, x, **p)
    else:
        def partial(ops, g, x, y, **p):
            return getattr(ops, name)(g, y, **p)
    save = (lambda p: a.saved(p)) if a.saves_if else a.saves
    op = defelementwise(a.name, forward, save=save, params=params, partials=(partial,))
    return {a.name: op, f"{a.name}_backward": backward}


def _kernel_specs(a):
    """The row's kernels, declared to the loader with the row's math as their reference, the
    kernels' scalars p0, p1 standing for its numeric parameters."""
    numeric = [p for p, _ in a.params if p != a.variant]
    out = []
    for key, (kernel, functor) in a.kernels.items():
        fixed = {} if a.variant is None else {a.variant: key}

        def params(p0, p1, fixed=fixed):
            return {**fixed, **dict(zip(numeric, (p0, p1)))}

        def forward(xp, x, p0=0.0, p1=0.0, params=params):
            return a.forward(xp, x, **params(p0, p1))

        def backward(xp, g, s, p0=0.0, p1=0.0, params=params):
            return a.backward(xp, g, s, **params(p0, p1))
        out += specs.activation_specs(kernel, functor, a.saves, forward,
                                      None if a.backward is None else backward)
    return out


DECLARED = {"relu_backward": relu_backward, "relu_backward_from_output": relu_backward_from_output}  # every op the rows made, by name
for _a in ACTIVATIONS.values():
    DECLARED.update(_declare(_a))
    for _spec in _kernel_specs(_a):
        kernels.declare(_spec)
del _a, _spec


def variant_params(a):
    """[(kernel name, the params that select it)]: one per kernel of the row."""
    if a.variant is None:
        return [(a.kernels[None][0], {})]
    return [(kernel, {a.variant: key}) for key, (kernel, _) in a.kernels.items()]


def _softmax(xp, x, *, axis=-1):
    e = xp.exp(x - reduce.kept_reduction(xp, "max", x, axis))
    return e / reduce.kept_reduction(xp, "sum", e, axis)


def _log_softmax(xp, x, *, axis=-1):
    shifted, _, log_sum = reduce.shifted_log_sum_exp(xp, x, axis)
    return shifted - log_sum


# fmt: off
softmax     = defop("softmax",     _softmax,     save="y",
                    vjp=(lambda ops, g, x, y, axis: y * (g - ops.sum(g * y, axis=axis, keepdims=True)),),
                    jvp=lambda ops, ts, x, y, axis: y * (ts[0] - ops.sum(ts[0] * y, axis=axis, keepdims=True)))
log_softmax = defop("log_softmax", _log_softmax, save="y",
                    vjp=(lambda ops, g, x, y, axis: g - ops.exp(y) * ops.sum(g, axis=axis, keepdims=True),),
                    jvp=lambda ops, ts, x, y, axis: ts[0] - ops.sum(ops.exp(y) * ts[0], axis=axis, keepdims=True))
# fmt: on
