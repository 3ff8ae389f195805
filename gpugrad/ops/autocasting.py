"""gg.autocast's one table: per op, the dtype its floating inputs are computed in while
autocast is on (recording.autocasting), as PyTorch's autocast op lists are.

- "low": the products, which tensor cores run in the 16-bit dtype (float32 inputs are cast
  down; float64 stays). Their sums are carried in float32 (devices.carried). A whole recurrent
  layer (lstm_layer, gru_layer, rnn_layer) too, as PyTorch's autocast lists its RNNs: its state
  is then 16-bit.
- "float32": what loses accuracy in 16 bits: exponentials and logarithms, powers, sums and
  means, products, norms and moments, softmax and its losses, the running ops (16-bit inputs
  are cast up).
- every other op follows its inputs, by NumPy's promotion (bfloat16 with float32 gives float32).

A cast is the table's astype op, recorded like any other, so gradients flow back through it
and arrive in the parameter's own dtype. Backward rules and tangents are computed with
autocast off: in the dtypes the forward kept.
"""

from gpugrad import devices
from gpugrad import tensors
from gpugrad.ops.op import OPS

LOW, FLOAT32 = "low", "float32"

POLICY = {
    **dict.fromkeys(("matmul", "linear", "einsum", "lstm_layer", "gru_layer", "rnn_layer"), LOW),
    **dict.fromkeys((
        "exp", "expm1", "exp2", "log", "log1p", "log2", "log10", "power", "reciprocal", "rsqrt",
        "sinh", "cosh", "tan", "arcsin", "arccos", "arccosh", "arctanh", "softplus",
        "sum", "mean", "prod", "var", "std", "norm", "logsumexp", "half_sum_squares",
        "cumsum", "cumprod", "linear_recurrence",
        "softmax", "log_softmax", "softmax_cross_entropy",
    ), FLOAT32),
}


def cast_inputs(op, inputs, dtype):
    """The op's inputs, its floating tensors cast as POLICY says under autocast to `dtype`."""
    policy = POLICY.get(op.name)
    if policy is None:
        return inputs
    if policy == LOW:
        return tuple(_cast(x, dtype) if _is(x, devices.FLOAT32) else x for x in inputs)
    return tuple(_cast(x, devices.FLOAT32) if _is(x, *devices.LOW_PRECISION) else x
                 for x in inputs)


def _is(x, *dtypes):
    return isinstance(x, tensors.Tensor) and x.dtype in dtypes


def _cast(x, dtype):
    return OPS["astype"].function(x, dtype=dtype)
