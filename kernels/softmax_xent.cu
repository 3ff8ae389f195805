// Row-wise softmax cross-entropy, one block of 256 threads per row of logits (N, C).
// Forward: loss[r] = log(sum(exp(x[r] - m))) - (x[r, label[r]] - m), m = max(x[r]): exp never
// overflows and nothing cancels at large |x|.
// Backward: dx[r, j] = (softmax(x[r])_j - [j == label[r]]) * g[r]; a mean over N is folded
// into g by the caller. Reads the row twice (max, then sum) and writes once; saves nothing but
// the logits and labels. Labels outside [0, C) give NaN (the Python side checks them first).
// Launched by gpugrad/devices/cuda/specs.py (softmax_xent_fwd / softmax_xent_bwd); its NumPy
// reference is gpugrad/devices/cuda/references.py. A 16-bit T is read into float and the row
// reduced in float; the loss and dx are rounded once on store (precision.cuh).
#include "activations.cuh"
#include "precision.cuh"

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

// m and s in C = compute_t<T>, the row's maximum (the shift) and its sum of exponentials
template <typename T, typename C>
__device__ void row_max_and_sum(const T* row, long long c, C* buf, C& m, C& s) {
  C local = -inf_<C>();
  for (long long j = threadIdx.x; j < c; j += blockDim.x) local = MaxOp<C>()(local, widen(row[j]));
  m = block_reduce(local, buf, MaxOp<C>());
  const C shift = (m == -inf_<C>() || m == inf_<C>()) ? C(0) : m;
  C acc = C(0);
  for (long long j = threadIdx.x; j < c; j += blockDim.x) acc += gg::exp_(widen(row[j]) - shift);
  s = block_reduce(acc, buf, SumOp<C>());
  m = shift;
}

template <typename T, typename L>
__global__ void softmax_xent_fwd(const T* __restrict__ logits, const L* __restrict__ labels,
                                 T* __restrict__ loss, long long n, long long c) {
  using C = compute_t<T>;
  __shared__ C buf[256];
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const T* row = logits + r * c;
    C m, s;
    row_max_and_sum(row, c, buf, m, s);
    if (threadIdx.x == 0) {
      const L label = labels[r];
      // log(s) - (x[label] - m), not log(s) + m - x[label]: adding m back first cancels
      // catastrophically when |m| is large (1e8 in float32 would give 0, not log 2)
      loss[r] = rounded<T>((label < 0 || label >= c) ? nan_<C>()
                                                     : gg::log_(s) - (widen(row[label]) - m));
    }
  }
}

template <typename T, typename L>
__global__ void softmax_xent_bwd(const T* __restrict__ logits, const L* __restrict__ labels,
                                 const T* __restrict__ g, T* __restrict__ dx, long long n,
                                 long long c, long long g_stride) {
  using C = compute_t<T>;
  __shared__ C buf[256];
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const T* row = logits + r * c;
    C m, s;
    row_max_and_sum(row, c, buf, m, s);
    const L label = labels[r];
    const C gr = widen(g[r * g_stride]), inv = C(1) / s;
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
      const C p = gg::exp_(widen(row[j]) - m) * inv;
      dx[r * c + j] = rounded<T>((label < 0 || label >= c) ? nan_<C>() : (p - C(j == label)) * gr);
    }
  }
}
