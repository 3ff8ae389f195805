// Activation math, forward and backward, shared by the CUDA kernels (activations.cu) and by
// the host tests, which compile this header with g++ and compare it with NumPy.
// Each backward is named for what it consumes: the saved output y, the input x, or a mask bit.
// Stability: no intermediate overflows where the true value is finite, and products like
// x * cdf(x) are guarded so that -inf * 0 never turns a finite limit into NaN.
#pragma once

#if !defined(__CUDACC__)
#include <cmath>
#define __host__
#define __device__
#elif !defined(__CUDACC_RTC__)
#include <cmath>
#endif

#define GG_FN __host__ __device__ inline

namespace gg {

// float and double overloads, spelled out so neither host nor device silently promotes to double
GG_FN float exp_(float x) { return expf(x); }
GG_FN double exp_(double x) { return exp(x); }
GG_FN float log_(float x) { return logf(x); }
GG_FN double log_(double x) { return log(x); }
GG_FN float expm1_(float x) { return expm1f(x); }
GG_FN double expm1_(double x) { return expm1(x); }
GG_FN float log1p_(float x) { return log1pf(x); }
GG_FN double log1p_(double x) { return log1p(x); }
GG_FN float tanh_(float x) { return tanhf(x); }
GG_FN double tanh_(double x) { return tanh(x); }
GG_FN float erf_(float x) { return erff(x); }
GG_FN double erf_(double x) { return erf(x); }
GG_FN float abs_(float x) { return fabsf(x); }
GG_FN double abs_(double x) { return fabs(x); }

constexpr double kInvSqrt2 = 0.70710678118654752440;    // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)
constexpr double kSqrt2OverPi = 0.79788456080286535588; // sqrt(2 / pi)
constexpr double kGeluC = 0.044715;

// relu: y = max(x, 0) (NaN stays NaN); backward from a 1-bit mask of !(x <= 0): a NaN input
// passes its gradient on, as in PyTorch (whose relu backward tests the output y <= 0)
template <typename T> GG_FN T relu_fwd(T x) { return x < T(0) ? T(0) : x; }
template <typename T> GG_FN bool relu_mask_bit(T x) { return !(x <= T(0)); }
template <typename T> GG_FN T relu_bwd_from_mask(T g, bool bit) { return bit ? g : T(0); }

// leaky_relu(slope): mask x > 0, so a NaN input takes the slope, as in PyTorch (whose
// leaky_relu backward tests the input x > 0)
template <typename T> GG_FN T leaky_relu_fwd(T x, T slope) { return x > T(0) ? x : x * slope; }
template <typename T> GG_FN bool leaky_relu_mask_bit(T x) { return x > T(0); }
template <typename T> GG_FN T leaky_relu_bwd_from_mask(T g, bool bit, T slope) {
  return bit ? g : g * slope;
}

// elu(alpha >= 0): for x <= 0, dy/dx = alpha e^x = y + alpha
template <typename T> GG_FN T elu_fwd(T x, T alpha) { return x > T(0) ? x : alpha * expm1_(x); }
template <typename T> GG_FN T elu_bwd_from_y(T g, T y, T alpha) {
  return y <= T(0) ? g * (y + alpha) : g;  // NaN y: the positive branch, as in PyTorch
}

// sigmoid: exp of a non-positive number only
template <typename T> GG_FN T sigmoid_fwd(T x) {
  T e = exp_(-abs_(x));
  return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}
template <typename T> GG_FN T sigmoid_bwd_from_y(T g, T y) { return g * y * (T(1) - y); }

template <typename T> GG_FN T tanh_fwd(T x) { return tanh_(x); }
template <typename T> GG_FN T tanh_bwd_from_y(T g, T y) { return g * (T(1) - y * y); }

// gelu, exact: y = x Phi(x); dy/dx = Phi(x) + x phi(x)
template <typename T> GG_FN T gelu_fwd(T x) {
  T cdf = T(0.5) * (T(1) + erf_(x * T(kInvSqrt2)));
  return cdf == T(0) ? T(0) : x * cdf;
}
template <typename T> GG_FN T gelu_bwd_from_x(T g, T x) {
  T cdf = T(0.5) * (T(1) + erf_(x * T(kInvSqrt2)));
  T pdf = T(kInvSqrt2Pi) * exp_(T(-0.5) * x * x);
  return g * (cdf + (pdf == T(0) ? T(0) : x * pdf));
}

// gelu, tanh approximation: y = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + c x^3)
template <typename T> GG_FN T gelu_tanh_fwd(T x) {
  T s = T(1) + tanh_(T(kSqrt2OverPi) * (x + T(kGeluC) * x * x * x));
  return s == T(0) ? T(0) : T(0.5) * x * s;
}
template <typename T> GG_FN T gelu_tanh_bwd_from_x(T g, T x) {
  T t = tanh_(T(kSqrt2OverPi) * (x + T(kGeluC) * x * x * x));
  T sech2 = T(1) - t * t;
  T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluC) * x * x);
  return g * (T(0.5) * (T(1) + t) + (sech2 == T(0) ? T(0) : T(0.5) * x * sech2 * du));
}

// silu: y = x sigmoid(x); dy/dx = s + x s (1 - s)
template <typename T> GG_FN T silu_fwd(T x) {
  T s = sigmoid_fwd(x);
  return s == T(0) ? T(0) : x * s;
}
template <typename T> GG_FN T silu_bwd_from_x(T g, T x) {
  T s = sigmoid_fwd(x);
  T p = s * (T(1) - s);
  return g * (s + (p == T(0) ? T(0) : x * p));
}

// softplus(beta, threshold): log(1 + e^(beta x)) / beta, linear where beta x > threshold
// (PyTorch); dy/dx = sigmoid(beta x) on the forward's branch, which only x tells (just above
// the threshold both branches give outputs above it, so the output cannot)
template <typename T> GG_FN T softplus_fwd(T x, T beta, T threshold) {
  T bx = beta * x;
  if (bx > threshold) return x;
  return ((bx > T(0) ? bx : T(0)) + log1p_(exp_(-abs_(bx)))) / beta;
}
template <typename T> GG_FN T softplus_bwd_from_x(T g, T x, T beta, T threshold) {
  T bx = beta * x;
  return bx > threshold ? g : g * sigmoid_fwd(bx);
}

// softsign: y = x / (1 + |x|); dy/dx = 1 / (1 + |x|)^2. Above |x| = 1 as 1 - 1 / (1 + |x|),
// so that +-inf gives +-1 (x / (1 + |x|) would be inf / inf) and the gradient there 0
template <typename T> GG_FN T softsign_fwd(T x) {
  T a = abs_(x);
  T r = a > T(1) ? T(1) - T(1) / (T(1) + a) : a / (T(1) + a);
  return x < T(0) ? -r : r;
}
template <typename T> GG_FN T softsign_bwd_from_x(T g, T x) {
  T d = T(1) + abs_(x);
  return g / (d * d);
}

// hardswish: y = x * clamp(x + 3, 0, 6) / 6, computed on x clamped to [-3, 3] (x itself from 3
// on), so that -inf gives its limit 0 and no product overflows; dy/dx = 0 up to -3, 1 from 3
// on, x / 3 + 1/2 strictly between (PyTorch's branches); a NaN input passes g on
template <typename T> GG_FN T hardswish_fwd(T x) {
  T c = x < T(-3) ? T(-3) : (x > T(3) ? T(3) : x);
  return x >= T(3) ? x : c * (c + T(3)) / T(6);
}
template <typename T> GG_FN T hardswish_bwd_from_x(T g, T x) {
  return x <= T(-3) ? T(0) : (x < T(3) ? g * (x / T(3) + T(0.5)) : g);
}

}  // namespace gg

// Every activation, one row each, in the order of gpugrad/ops/activation.py's declarations:
//   ACT(Functor, name, forward expression, X or Y: what backward reads, backward expression)
//   ACT_MASK(Functor, name, forward expression): relu and leaky_relu, whose backward reads a
//   1-bit mask (relu_fwd_mask / relu_bwd_mask)
// Expressions read x (the input), g (the incoming gradient), s (the saved x or y) and the
// activation's parameters p0, p1. activations.cu makes the kernels' functors from these rows
// (<Functor>Fwd, <Functor>BwdFrom<X|Y>), and tests/cuda/host_shim.cpp the host library.
#define GG_ACTIVATIONS(ACT, ACT_MASK)                                                            \
  ACT_MASK(Relu, relu, gg::relu_fwd(x))                                                          \
  ACT_MASK(LeakyRelu, leaky_relu, gg::leaky_relu_fwd(x, p0))                                     \
  ACT(Elu, elu, gg::elu_fwd(x, p0), Y, gg::elu_bwd_from_y(g, s, p0))                            \
  ACT(Gelu, gelu, gg::gelu_fwd(x), X, gg::gelu_bwd_from_x(g, s))                                \
  ACT(GeluTanh, gelu_tanh, gg::gelu_tanh_fwd(x), X, gg::gelu_tanh_bwd_from_x(g, s))             \
  ACT(Silu, silu, gg::silu_fwd(x), X, gg::silu_bwd_from_x(g, s))                                \
  ACT(Softplus, softplus, gg::softplus_fwd(x, p0, p1), X, gg::softplus_bwd_from_x(g, s, p0, p1)) \
  ACT(Sigmoid, sigmoid, gg::sigmoid_fwd(x), Y, gg::sigmoid_bwd_from_y(g, s))                    \
  ACT(Tanh, tanh, gg::tanh_fwd(x), Y, gg::tanh_bwd_from_y(g, s))                                \
  ACT(Softsign, softsign, gg::softsign_fwd(x), X, gg::softsign_bwd_from_x(g, s))                \
  ACT(Hardswish, hardswish, gg::hardswish_fwd(x), X, gg::hardswish_bwd_from_x(g, s))
