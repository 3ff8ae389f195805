// GradScaler's unscale and inf check in one pass over a gradient, in place: g = g * inv (in
// compute_t<T>, rounded once) and *found = 1 where any unscaled element is inf or NaN. found
// is only ever set to 1, never read, so threads need no atomics, and no host read happens
// until GradScaler.step reads the flag once for the whole step. Reads and writes g
// (2 * sizeof(T) per element). Launched by gpugrad/devices/cuda/specs.py for gpugrad/amp.py.
#include "precision.cuh"

template <typename T>
__global__ void unscale_and_check(T* __restrict__ g, float* __restrict__ found, long long n,
                                  compute_t<T> inv) {
  bool bad = false;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const T v = rounded<T>(widen(g[i]) * inv);
    g[i] = v;
    const compute_t<T> w = widen(v);
    bad = bad || !(w - w == compute_t<T>(0));  // inf - inf and NaN - NaN are NaN
  }
  if (bad) *found = 1.0f;
}
