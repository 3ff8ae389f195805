"""Recurrent layers over (T, batch, features): RNN (tanh or relu), LSTM, GRU.

Truncated backpropagation through time, both ways:

- `bptt_truncate=k` stops the gradient k steps back inside a sequence, as the BPTT article's
  code does: the error of the output at step t reaches steps t, t-1, ..., t-k and no further.
  Output t is computed from the state k+1 steps back, detached, through k+1 recorded steps;
  the values are those of the plain recurrence, at (k+1) times the forward cost.
- Between chunks of a long sequence, pass the carried state on detached:
  `out, h = rnn(chunk, h.detach())`.
"""

import math

from gpugrad import devices
from gpugrad import ops
from gpugrad import tensors
from gpugrad.nn import functional as F
from gpugrad.nn.modules import Module, Parameter


def _uniform(shape, bound, dtype, device):
    return (tensors.rand(*shape, dtype=dtype, device=device) * 2 - 1) * bound


def _detach(state):
    return tuple(s.detach() for s in state)


class _Recurrent(Module):
    """Shared stepping over time with optional in-sequence truncation."""

    n_gates = 1
    state_size = 1  # tensors in the carried state (LSTM: h and c)

    def __init__(self, input_size, hidden_size, bias=True, bptt_truncate=None, dtype=None,
                 device=None):
        super().__init__()
        if bptt_truncate is not None and bptt_truncate < 0:
            raise ValueError(f"bptt_truncate must be None or >= 0, got {bptt_truncate}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.bptt_truncate = bptt_truncate
        bound = 1 / math.sqrt(hidden_size)  # PyTorch's initialisation
        g = self.n_gates * hidden_size
        self.weight_ih = Parameter(_uniform((g, input_size), bound, dtype, device))
        self.weight_hh = Parameter(_uniform((g, hidden_size), bound, dtype, device))
        self.bias_ih = Parameter(_uniform((g,), bound, dtype, device)) if bias else None
        self.bias_hh = Parameter(_uniform((g,), bound, dtype, device)) if bias else None

    def _gates(self, x, h):
        return F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)

    def initial_state(self, batch, like):
        # like: the input, a tensor or a device array (whose .device is CuPy's own object)
        device = (like.device if isinstance(like, tensors.Tensor)
                  else devices.device_of_array(like))
        zeros = tensors.zeros((batch, self.hidden_size), dtype=like.dtype, device=device)
        return (zeros,) * self.state_size

    def _check(self, x, state):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input must be (T, batch, {self.input_size}), "
                             f"got shape {x.shape}")
        if state is None:
            return self.initial_state(x.shape[1], x)
        state = state if isinstance(state, tuple) else (state,)
        want = (x.shape[1], self.hidden_size)
        if len(state) != self.state_size or any(s.shape != want for s in state):
            raise ValueError(f"{type(self).__name__}: initial state must be {self.state_size} "
                             f"tensor(s) of shape {want}, got {[s.shape for s in state]}")
        return state

    def steps(self, x, state=None):
        """The state after every step: a list of T state tuples (graph per bptt_truncate)."""
        state = self._check(x, state)
        k = self.bptt_truncate
        out = []
        if k is None:
            for t in range(x.shape[0]):
                state = self.cell(x[t], state)
                out.append(state)
            return out
        values = [state]  # values[j]: the state after j steps, detached past the first
        for t in range(x.shape[0]):
            start = max(0, t - k)
            s = values[0] if start == 0 else _detach(values[start])
            for j in range(start, t + 1):
                s = self.cell(x[j], s)
            out.append(s)
            values.append(_detach(s))
        return out

    def forward(self, x, state=None):
        """(outputs (T, batch, hidden), final state) for x of shape (T, batch, input_size)."""
        states = self.steps(x, state)
        outputs = ops.stack([s[0] for s in states])
        final = states[-1] if states else self._check(x, state)
        return outputs, final if self.state_size > 1 else final[0]

    def extra_repr(self):
        trunc = f", bptt_truncate={self.bptt_truncate}" if self.bptt_truncate is not None else ""
        return f"{self.input_size}, {self.hidden_size}{trunc}"


class RNN(_Recurrent):
    """s_t = tanh(U x_t + W s_{t-1} + b) (nonlinearity='relu' for a ReLU RNN); U is weight_ih
    and W is weight_hh. An output layer o_t = softmax(V s_t) is a Linear and cross_entropy."""

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", bias=True,
                 bptt_truncate=None, dtype=None, device=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, bptt_truncate, dtype, device)
        self.nonlinearity = nonlinearity

    def forward(self, x, state=None):
        """A whole sequence is one gg.rnn_layer op; with bptt_truncate, a step per `cell`."""
        if self.bptt_truncate is not None or not x.shape[0]:
            return super().forward(x, state)
        (h0,) = self._check(x, state)
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        y = ops.rnn_layer(x, self.weight_ih, self.weight_hh, bias, h0,
                          nonlinearity=self.nonlinearity)
        return y, y[-1]

    def cell(self, x, state):
        z = self._gates(x, state[0])
        return (ops.tanh(z) if self.nonlinearity == "tanh" else ops.relu(z),)


class LSTM(_Recurrent):
    """PyTorch's LSTM: gates i, f, g, o; c' = f c + i g; h' = o tanh(c'). State (h, c).

    A whole sequence is one gg.lstm_layer op (the input's projections in one product, the
    weights' gradients in one product each); with bptt_truncate, and in `cell`, each step is one
    product for the input's gates, one for the state's, and gg.lstm_cell."""

    n_gates, state_size = 4, 2

    def forward(self, x, state=None):
        if self.bptt_truncate is not None or not x.shape[0]:
            return super().forward(x, state)
        h0, c0 = self._check(x, state)
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        y = ops.lstm_layer(x, self.weight_ih, self.weight_hh, bias, h0, c0)
        return y[0], (y[0, -1], y[1, -1])

    def cell(self, x, state):
        h, c = state
        hc = ops.lstm_cell(self._gates(x, h), c)
        return hc[0], hc[1]


class GRU(_Recurrent):
    """PyTorch's GRU: r, z gates; n = tanh(W_in x + b_in + r (W_hn h + b_hn));
    h' = (1 - z) n + z h. A whole sequence is one gg.gru_layer op; with bptt_truncate, and in
    `cell`, each step is one product for the input's three gates, one for the state's, and
    gg.gru_cell (one op, fused on CUDA) for the rest."""

    n_gates = 3

    def forward(self, x, state=None):
        """A whole sequence is one gg.gru_layer op; with bptt_truncate, a step per `cell`."""
        if self.bptt_truncate is not None or not x.shape[0]:
            return super().forward(x, state)
        (h0,) = self._check(x, state)
        y = ops.gru_layer(x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, h0)
        return y, y[-1]

    def cell(self, x, state):
        (h,) = state
        gi = F.linear(x, self.weight_ih, self.bias_ih)
        gh = F.linear(h, self.weight_hh, self.bias_hh)
        return (ops.gru_cell(gi, gh, h),)
