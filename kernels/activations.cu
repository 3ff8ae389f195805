// Activation kernels: y = act(x), dx = act'(g, saved), relu/leaky_relu with a 1-bit mask.
// Bytes per element: forward reads x and writes y (2 * sizeof(T)); backward reads g and the
// saved array, writes dx (3 * sizeof(T));
// the mask backward reads g and 1 bit, writes dx. Math and stability: activations.cuh.
// Called from gpugrad/ops/activation.py through backend.fused() and gpugrad/kernels.py.
#include "activations.cuh"

#define GRID_STRIDE(i, n)                                                            \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n);      \
       i += (long long)blockDim.x * gridDim.x)

// Functors, from the header's rows: forward takes (x, p0, p1); backward takes (g, s, p0, p1),
// s being the saved input or output.
#define GG_FORWARD_FUNCTOR(Functor, name, forward)                               \
  template <typename T> struct Functor##Fwd {                                    \
    __device__ T operator()(T x, T p0, T p1) const {                             \
      (void)p0;                                                                  \
      (void)p1;                                                                  \
      return forward;                                                            \
    }                                                                            \
  };
#define GG_FUNCTORS(Functor, name, forward, Saved, backward)                     \
  GG_FORWARD_FUNCTOR(Functor, name, forward)                                     \
  template <typename T> struct Functor##BwdFrom##Saved {                         \
    __device__ T operator()(T g, T s, T p0, T p1) const {                        \
      (void)p0;                                                                  \
      (void)p1;                                                                  \
      return backward;                                                           \
    }                                                                            \
  };
GG_ACTIVATIONS(GG_FUNCTORS, GG_FORWARD_FUNCTOR)

template <typename T, typename Op>
__global__ void act_fwd(const T* __restrict__ x, T* __restrict__ y, long long n, T p0, T p1) {
  Op op;
  GRID_STRIDE(i, n) { y[i] = op(x[i], p0, p1); }
}

template <typename T, typename Op>
__global__ void act_bwd(const T* __restrict__ g, const T* __restrict__ saved, T* __restrict__ dx,
                        long long n, T p0, T p1) {
  Op op;
  GRID_STRIDE(i, n) { dx[i] = op(g[i], saved[i], p0, p1); }
}

// relu (slope == 0) or leaky_relu forward that also writes bit i % 32 of mask[i / 32]: the
// header's relu_mask_bit or leaky_relu_mask_bit of x.
// A warp covers 32 consecutive elements (blockDim and the stride are multiples of 32), so one
// ballot yields a whole word; the loop runs while the warp's first element is in range so all
// 32 lanes take part in every ballot.
template <typename T>
__global__ void relu_fwd_mask(const T* __restrict__ x, T* __restrict__ y,
                              unsigned int* __restrict__ mask, long long n, T slope) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  const unsigned lane = threadIdx.x & 31u;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i - lane < n; i += stride) {
    const bool in = i < n;
    const T v = in ? x[i] : T(0);
    const bool bit = in && (slope == T(0) ? gg::relu_mask_bit(v) : gg::leaky_relu_mask_bit(v));
    if (in) y[i] = slope == T(0) ? gg::relu_fwd(v) : gg::leaky_relu_fwd(v, slope);
    const unsigned word = __ballot_sync(0xffffffffu, bit);
    if (lane == 0) mask[i >> 5] = word;
  }
}

template <typename T>
__global__ void relu_bwd_mask(const T* __restrict__ g, const unsigned int* __restrict__ mask,
                              T* __restrict__ dx, long long n, T slope) {
  GRID_STRIDE(i, n) {
    const bool bit = (mask[i >> 5] >> (i & 31)) & 1u;
    dx[i] = slope == T(0) ? gg::relu_bwd_from_mask(g[i], bit)
                          : gg::leaky_relu_bwd_from_mask(g[i], bit, slope);
  }
}
