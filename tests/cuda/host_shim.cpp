// Host build of kernels/activations.cuh for tests/cuda/test_kernels.py: each header function over an
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

// per activation row of the header: <name>_fwd_<S> and <name>_bwd_<S>, for T and S defined
// below (CAT3 expands S before pasting)
#define CAT3_(a, b, c) a##b##c
#define CAT3(a, b, c) CAT3_(a, b, c)
#define SHIM_FWD(Functor, name, forward)                                                        \
  extern "C" void CAT3(name, _fwd_, S)(const T* x_, T* o, long n, double p0_, double p1_) {    \
    map1(x_, o, n, [=](T x) { T p0 = T(p0_), p1 = T(p1_); (void)p0; (void)p1; return forward; }); \
  }
#define SHIM_ACT(Functor, name, forward, Saved, backward)                                       \
  SHIM_FWD(Functor, name, forward)                                                              \
  extern "C" void CAT3(name, _bwd_, S)(const T* g_, const T* s_, T* o, long n, double p0_,     \
                                       double p1_) {                                           \
    map2(g_, s_, o, n, [=](T g, T s) { T p0 = T(p0_), p1 = T(p1_); (void)p0; (void)p1; return backward; }); \
  }

// the mask machinery of relu and leaky_relu
#define MASKS(T, S)                                                                     \
  FWD(relu_mask_bit, T, S, T(gg::relu_mask_bit(v)))                                     \
  FWD(leaky_relu_mask_bit, T, S, T(gg::leaky_relu_mask_bit(v)))                         \
  BWD(relu_bwd_from_mask, T, S, gg::relu_bwd_from_mask(gi, si != T(0)))                 \
  BWD(leaky_relu_bwd_from_mask, T, S, gg::leaky_relu_bwd_from_mask(gi, si != T(0), T(p0)))

MASKS(float, f32)
MASKS(double, f64)
#define T float
#define S f32
GG_ACTIVATIONS(SHIM_ACT, SHIM_FWD)
#undef T
#undef S
#define T double
#define S f64
GG_ACTIVATIONS(SHIM_ACT, SHIM_FWD)
#undef T
#undef S

// bfloat16's rounding and widening (precision.cuh), which the kernels store 16-bit results with
#include "precision.cuh"
extern "C" void bfloat16_round(const float* x, unsigned short* out, long n) {
  for (long i = 0; i < n; ++i) out[i] = rounded<bfloat16_bits>(x[i]).bits;
}
extern "C" void bfloat16_widen(const unsigned short* x, float* out, long n) {
  for (long i = 0; i < n; ++i) out[i] = widen(bfloat16_bits{x[i]});
}
