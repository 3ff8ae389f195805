// Row-wise softmax cross-entropy, one block of 256 threads per row of logits (N, C).
// Forward: loss[r] = log(sum(exp(x[r] - m))) - (x[r, label[r]] - m), m = max(x[r]): exp never
// overflows and nothing cancels at large |x|.
// Backward: dx[r, j] = (softmax(x[r])_j - [j == label[r]]) * g[r]; a mean over N is folded
// into g by the caller. Reads the row twice (max, then sum) and writes once; saves nothing but
// the logits and labels. Labels outside [0, C) give NaN (the Python side checks them first).
// Launched by gpugrad/devices/cuda/specs.py (softmax_xent_fwd / softmax_xent_bwd); its NumPy
// reference is gpugrad/devices/cuda/references.py.
#include "activations.cuh"

// NVRTC has no math.h, so infinity and NaN come from their bit patterns
template <typename T> __device__ T inf_();
template <> __device__ float inf_<float>() { return __int_as_float(0x7f800000); }
template <> __device__ double inf_<double>() { return __longlong_as_double(0x7ff0000000000000LL); }
template <typename T> __device__ T nan_() { return inf_<T>() - inf_<T>(); }

template <typename T> struct MaxOp {
  __device__ T operator()(T a, T b) const { return a > b || b != b ? a : b; }
};
template <typename T> struct SumOp {
  __device__ T operator()(T a, T b) const { return a + b; }
};

// Reduce v over the block (blockDim.x a power of two); every thread gets the result.
template <typename T, typename Op> __device__ T block_reduce(T v, T* buf, Op op) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] = op(buf[threadIdx.x], buf[threadIdx.x + s]);
    __syncthreads();
  }
  T out = buf[0];
  __syncthreads();  // buf is reused by the next reduction
  return out;
}

template <typename T>
__device__ void row_max_and_sum(const T* row, long long c, T* buf, T& m, T& s) {
  T local = -inf_<T>();
  for (long long j = threadIdx.x; j < c; j += blockDim.x) local = MaxOp<T>()(local, row[j]);
  m = block_reduce(local, buf, MaxOp<T>());
  const T shift = (m == -inf_<T>() || m == inf_<T>()) ? T(0) : m;
  T acc = T(0);
  for (long long j = threadIdx.x; j < c; j += blockDim.x) acc += gg::exp_(row[j] - shift);
  s = block_reduce(acc, buf, SumOp<T>());
  m = shift;
}

template <typename T, typename L>
__global__ void softmax_xent_fwd(const T* __restrict__ logits, const L* __restrict__ labels,
                                 T* __restrict__ loss, long long n, long long c) {
  __shared__ T buf[256];
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const T* row = logits + r * c;
    T m, s;
    row_max_and_sum(row, c, buf, m, s);
    if (threadIdx.x == 0) {
      const L label = labels[r];
      // log(s) - (x[label] - m), not log(s) + m - x[label]: adding m back first cancels
      // catastrophically when |m| is large (1e8 in float32 would give 0, not log 2)
      loss[r] = (label < 0 || label >= c) ? nan_<T>() : gg::log_(s) - (row[label] - m);
    }
  }
}

template <typename T, typename L>
__global__ void softmax_xent_bwd(const T* __restrict__ logits, const L* __restrict__ labels,
                                 const T* __restrict__ g, T* __restrict__ dx, long long n,
                                 long long c, long long g_stride) {
  __shared__ T buf[256];
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const T* row = logits + r * c;
    T m, s;
    row_max_and_sum(row, c, buf, m, s);
    const L label = labels[r];
    const T gr = g[r * g_stride], inv = T(1) / s;
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
      const T p = gg::exp_(row[j] - m) * inv;
      dx[r * c + j] = (label < 0 || label >= c) ? nan_<T>() : (p - T(j == label)) * gr;
    }
  }
}
