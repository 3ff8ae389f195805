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

// the recurrent cells (recurrent.cuh), laid out as recurrent.cu lays them out: the state's n
// elements, the projections (rows, blocks * hidden), the results as the kernels write them
#include "recurrent.cuh"
#define RECURRENT(T, S)                                                                         \
  extern "C" void lstm_cell_fwd_##S(const T* c, const T* gates, T* y, long n, long hidden) {    \
    for (long k = 0; k < n; ++k) {                                                              \
      const T* a = gates + k / hidden * 3 * hidden + k;                                         \
      gg::lstm_cell_fwd(a[0], a[hidden], a[2 * hidden], a[3 * hidden], c[k], y[k], y[n + k]);   \
    }                                                                                           \
  }                                                                                             \
  extern "C" void lstm_cell_bwd_##S(const T* c, const T* gates, const T* g, T* d, long n,      \
                                    long hidden) {                                              \
    for (long k = 0; k < n; ++k) {                                                              \
      const T* a = gates + k / hidden * 3 * hidden + k;                                         \
      T* o = d + k / hidden * 4 * hidden + k;                                                   \
      gg::lstm_cell_bwd(a[0], a[hidden], a[2 * hidden], a[3 * hidden], c[k], g[k], g[n + k],    \
                        o[0], o[hidden], o[2 * hidden], o[3 * hidden], o[4 * hidden]);          \
    }                                                                                           \
  }                                                                                             \
  extern "C" void gru_cell_fwd_##S(const T* h, const T* gi, const T* gh, T* y, long n,         \
                                   long hidden) {                                               \
    for (long k = 0; k < n; ++k) {                                                              \
      const T* a = gi + k / hidden * 2 * hidden + k;                                            \
      const T* b = gh + k / hidden * 2 * hidden + k;                                            \
      y[k] = gg::gru_cell_fwd(a[0], a[hidden], a[2 * hidden], b[0], b[hidden], b[2 * hidden],  \
                              h[k]);                                                            \
    }                                                                                           \
  }                                                                                             \
  extern "C" void gru_cell_bwd_##S(const T* h, const T* gi, const T* gh, const T* g, T* d,     \
                                   long n, long hidden) {                                       \
    for (long k = 0; k < n; ++k) {                                                              \
      const T* a = gi + k / hidden * 2 * hidden + k;                                            \
      const T* b = gh + k / hidden * 2 * hidden + k;                                            \
      T* o = d + k / hidden * 6 * hidden + k;                                                   \
      gg::gru_cell_bwd(a[0], a[hidden], a[2 * hidden], b[0], b[hidden], b[2 * hidden], h[k],    \
                       g[k], o[0], o[hidden], o[2 * hidden], o[5 * hidden], o[6 * hidden]);     \
      o[3 * hidden] = o[0];                                                                     \
      o[4 * hidden] = o[hidden];                                                                \
    }                                                                                           \
  }
RECURRENT(float, f32)
RECURRENT(double, f64)
