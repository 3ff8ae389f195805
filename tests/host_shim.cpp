// Host build of kernels/activations.cuh for tests/test_kernels.py: each header function over an
// array, for float and double, with C linkage so ctypes can call it.
#include "activations.cuh"

template <typename T, typename F> static void map1(const T* x, T* out, long n, F f) {
  for (long i = 0; i < n; ++i) out[i] = f(x[i]);
}
template <typename T, typename F> static void map2(const T* a, const T* b, T* out, long n, F f) {
  for (long i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
}

#define FWD(name, T, S, expr) \
  extern "C" void name##_##S(const T* x, T* o, long n, double p0, double p1) { \
    (void)p0; (void)p1; map1(x, o, n, [=](T v) { return expr; }); }
#define BWD(name, T, S, expr) \
  extern "C" void name##_##S(const T* g, const T* s, T* o, long n, double p0, double p1) { \
    (void)p0; (void)p1; map2(g, s, o, n, [=](T gi, T si) { return expr; }); }

#define ALL(T, S)                                                                       \
  FWD(relu_fwd, T, S, gg::relu_fwd(v))                                                  \
  FWD(relu_mask_bit, T, S, T(gg::relu_mask_bit(v)))                                     \
  FWD(leaky_relu_mask_bit, T, S, T(gg::leaky_relu_mask_bit(v)))                         \
  FWD(leaky_relu_fwd, T, S, gg::leaky_relu_fwd(v, T(p0)))                               \
  FWD(elu_fwd, T, S, gg::elu_fwd(v, T(p0)))                                             \
  FWD(sigmoid_fwd, T, S, gg::sigmoid_fwd(v))                                            \
  FWD(tanh_fwd, T, S, gg::tanh_fwd(v))                                                  \
  FWD(gelu_fwd, T, S, gg::gelu_fwd(v))                                                  \
  FWD(gelu_tanh_fwd, T, S, gg::gelu_tanh_fwd(v))                                        \
  FWD(silu_fwd, T, S, gg::silu_fwd(v))                                                  \
  FWD(softplus_fwd, T, S, gg::softplus_fwd(v, T(p0), T(p1)))                            \
  BWD(relu_bwd_from_mask, T, S, gg::relu_bwd_from_mask(gi, si != T(0)))                 \
  BWD(leaky_relu_bwd_from_mask, T, S, gg::leaky_relu_bwd_from_mask(gi, si != T(0), T(p0))) \
  BWD(elu_bwd_from_y, T, S, gg::elu_bwd_from_y(gi, si, T(p0)))                          \
  BWD(sigmoid_bwd_from_y, T, S, gg::sigmoid_bwd_from_y(gi, si))                         \
  BWD(tanh_bwd_from_y, T, S, gg::tanh_bwd_from_y(gi, si))                               \
  BWD(gelu_bwd_from_x, T, S, gg::gelu_bwd_from_x(gi, si))                               \
  BWD(gelu_tanh_bwd_from_x, T, S, gg::gelu_tanh_bwd_from_x(gi, si))                     \
  BWD(silu_bwd_from_x, T, S, gg::silu_bwd_from_x(gi, si))                               \
  BWD(softplus_bwd_from_y, T, S, gg::softplus_bwd_from_y(gi, si, T(p0), T(p1)))

ALL(float, f32)
ALL(double, f64)
