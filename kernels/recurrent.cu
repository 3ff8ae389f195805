// Fused recurrent cells: one thread per (row, unit) of the state, reading that unit's gate
// pre-activations from their blocks of the projections. Launched by
// gpugrad/devices/cuda/specs.py (lstm_cell_fwd/_bwd, gru_cell_fwd/_bwd); the math is
// recurrent.cuh. n counts the state's elements (rows times hidden); a 16-bit T is widened to
// float and rounded once on store (precision.cuh).
//   lstm_cell_fwd: c (n), gates (rows, 4 hidden) -> y (2, n): h' then c'
//   lstm_cell_bwd: c, gates, g (2, n) -> d (rows, 5 hidden): dgates, then dc
//   gru_cell_fwd:  h (n), gi, gh (rows, 3 hidden) -> y (n)
//   gru_cell_bwd:  h, gi, gh, g (n) -> d (rows, 7 hidden): dgi, dgh, then dh
#include "precision.cuh"
#include "recurrent.cuh"

#define GG_EACH_UNIT(k, n) \
  for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; \
       k += (long long)blockDim.x * gridDim.x)

template <typename T>
__global__ void lstm_cell_fwd(const T* __restrict__ c, const T* __restrict__ gates,
                              T* __restrict__ y, long long n, long long hidden) {
  using C = compute_t<T>;
  GG_EACH_UNIT(k, n) {
    const long long row = k / hidden;
    const T* a = gates + row * 3 * hidden + k;  // row * 4 hidden + (k - row * hidden)
    C h2, c2;
    gg::lstm_cell_fwd(widen(a[0]), widen(a[hidden]), widen(a[2 * hidden]), widen(a[3 * hidden]),
                      widen(c[k]), h2, c2);
    y[k] = rounded<T>(h2);
    y[n + k] = rounded<T>(c2);
  }
}

template <typename T>
__global__ void lstm_cell_bwd(const T* __restrict__ c, const T* __restrict__ gates,
                              const T* __restrict__ g, T* __restrict__ d, long long n,
                              long long hidden) {
  using C = compute_t<T>;
  GG_EACH_UNIT(k, n) {
    const long long row = k / hidden;
    const T* a = gates + row * 3 * hidden + k;
    C di, df, dg, d_o, dc;
    gg::lstm_cell_bwd(widen(a[0]), widen(a[hidden]), widen(a[2 * hidden]), widen(a[3 * hidden]),
                      widen(c[k]), widen(g[k]), widen(g[n + k]), di, df, dg, d_o, dc);
    T* out = d + row * 4 * hidden + k;  // row * 5 hidden + unit
    out[0] = rounded<T>(di);
    out[hidden] = rounded<T>(df);
    out[2 * hidden] = rounded<T>(dg);
    out[3 * hidden] = rounded<T>(d_o);
    out[4 * hidden] = rounded<T>(dc);
  }
}

template <typename T>
__global__ void gru_cell_fwd(const T* __restrict__ h, const T* __restrict__ gi,
                             const T* __restrict__ gh, T* __restrict__ y, long long n,
                             long long hidden) {
  GG_EACH_UNIT(k, n) {
    const long long at = k / hidden * 2 * hidden + k;  // row * 3 hidden + unit
    const T* a = gi + at;
    const T* b = gh + at;
    y[k] = rounded<T>(gg::gru_cell_fwd(widen(a[0]), widen(a[hidden]), widen(a[2 * hidden]),
                                       widen(b[0]), widen(b[hidden]), widen(b[2 * hidden]),
                                       widen(h[k])));
  }
}

template <typename T>
__global__ void gru_cell_bwd(const T* __restrict__ h, const T* __restrict__ gi,
                             const T* __restrict__ gh, const T* __restrict__ g,
                             T* __restrict__ d, long long n, long long hidden) {
  using C = compute_t<T>;
  GG_EACH_UNIT(k, n) {
    const long long row = k / hidden;
    const T* a = gi + row * 2 * hidden + k;  // row * 3 hidden + unit
    const T* b = gh + row * 2 * hidden + k;
    C dr, dz, din, dhn, dh;
    gg::gru_cell_bwd(widen(a[0]), widen(a[hidden]), widen(a[2 * hidden]), widen(b[0]),
                     widen(b[hidden]), widen(b[2 * hidden]), widen(h[k]), widen(g[k]), dr, dz,
                     din, dhn, dh);
    T* out = d + row * 6 * hidden + k;  // row * 7 hidden + unit
    const T r = rounded<T>(dr), z = rounded<T>(dz);
    out[0] = r;
    out[hidden] = z;
    out[2 * hidden] = rounded<T>(din);
    out[3 * hidden] = r;
    out[4 * hidden] = z;
    out[5 * hidden] = rounded<T>(dhn);
    out[6 * hidden] = rounded<T>(dh);
  }
}
