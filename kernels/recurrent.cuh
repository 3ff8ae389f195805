// The recurrent cells' math at one (row, unit), forward and backward, shared by the CUDA kernels
// (recurrent.cu) and by the host tests, which compile this header with g++ and compare it with
// the NumPy references (gpugrad/devices/cuda/references.py). C is the type computed in.
// LSTM (PyTorch's gate order i, f, g, o): c' = f c + i g, h' = o tanh(c'), with i, f, o the
//   sigmoids and g the tanh of the gates' pre-activations.
// GRU (PyTorch's r, z, n from the input's and the hidden state's projections, biases included):
//   r = sigmoid(ir + hr), z = sigmoid(iz + hz), n = tanh(in + r hn), h' = n + z (h - n).
// The backward passes recompute the gates from the pre-activations (nothing else is saved).
#pragma once

#include "activations.cuh"

namespace gg {

template <typename C> GG_FN C sigmoid_(C x) { return sigmoid_fwd(x); }
template <typename C> GG_FN C sigmoid_slope(C s) { return s * (C(1) - s); }  // from the output
template <typename C> GG_FN C tanh_slope(C t) { return C(1) - t * t; }

template <typename C>
GG_FN void lstm_cell_fwd(C ai, C af, C ag, C ao, C c, C& h_out, C& c_out) {
  const C i = sigmoid_(ai), f = sigmoid_(af), g = tanh_(ag), o = sigmoid_(ao);
  c_out = f * c + i * g;
  h_out = o * tanh_(c_out);
}

// gh, gc: the gradients of h' and c'; out: the gradients of the four pre-activations and of c
template <typename C>
GG_FN void lstm_cell_bwd(C ai, C af, C ag, C ao, C c, C gh, C gc, C& di, C& df, C& dg, C& d_o,
                         C& dc) {
  const C i = sigmoid_(ai), f = sigmoid_(af), g = tanh_(ag), o = sigmoid_(ao);
  const C t = tanh_(f * c + i * g);
  const C dct = gc + gh * o * tanh_slope(t);  // c' reaches the loss directly and through h'
  d_o = gh * t * sigmoid_slope(o);
  di = dct * g * sigmoid_slope(i);
  df = dct * c * sigmoid_slope(f);
  dg = dct * i * tanh_slope(g);
  dc = dct * f;
}

template <typename C> GG_FN C gru_cell_fwd(C ir, C iz, C in, C hr, C hz, C hn, C h) {
  const C r = sigmoid_(ir + hr), z = sigmoid_(iz + hz), n = tanh_(in + r * hn);
  return n + z * (h - n);
}

// gy: the gradient of h'; out: those of r's and z's pre-activations (the same for the input's
// and the hidden state's projections), of in, of hn, and of h
template <typename C>
GG_FN void gru_cell_bwd(C ir, C iz, C in, C hr, C hz, C hn, C h, C gy, C& dr, C& dz, C& din,
                        C& dhn, C& dh) {
  const C r = sigmoid_(ir + hr), z = sigmoid_(iz + hz), n = tanh_(in + r * hn);
  din = gy * (C(1) - z) * tanh_slope(n);
  dhn = din * r;
  dr = din * hn * sigmoid_slope(r);
  dz = gy * (h - n) * sigmoid_slope(z);
  dh = gy * z;
}

}  // namespace gg
