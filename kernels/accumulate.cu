// Gradient accumulation in place. Launched by gpugrad/devices/cuda/specs.py (add_scaled) for the rule of
// half_sum_squares (the L2 penalty), whose gradient s * p is added into the gradient a weight
// already has from its layer: one kernel where the composition launches a multiply and an add.
//
// add_scaled:  acc += s * x, s one value on the device (the 0-d incoming gradient: no host read)
//   reads acc and x, writes acc (3 * sizeof(T) per element); no temporary.
// The product and the sum are each rounded (no fused multiply-add), so acc equals the unfused
// composition's result to the bit, as the CPU path and create_graph=True compute it. In a 16-bit
// T each is computed in float and rounded to T, as NumPy and ml_dtypes compute T * T and T + T.
#include "precision.cuh"

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename T>
__global__ void add_scaled(T* __restrict__ acc, const T* __restrict__ s, const T* __restrict__ x,
                           long long n) {
  const compute_t<T> scale = widen(*s);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const T product = rounded<T>(mul_rn(scale, widen(x[i])));
    acc[i] = rounded<T>(add_rn(widen(acc[i]), widen(product)));
  }
}
