// Activation kernels: y = act(x), dx = act'(g, saved), relu/leaky_relu with a 1-bit mask.
// Bytes per element: forward reads x and writes y (2 * sizeof(T)); backward reads g and the
// saved array, writes dx (3 * sizeof(T));
// the mask backward reads g and 1 bit, writes dx. Math and stability: activations.cuh.
// T is the stored type: float, double, float16_bits or bfloat16_bits; the math runs in
// compute_t<T> (float for the 16-bit types, rounded once on store: precision.cuh), and the
// functors are instantiated for it.
// Launched by gpugrad/devices/cuda/specs.py for the ops of gpugrad/ops/activation.py.
#include "activations.cuh"
#include "precision.cuh"

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

// 16-byte vectors: 4 floats, 2 doubles or 8 16-bit floats per load and store, so each thread moves whole
// 128-bit words as PyTorch's elementwise kernels do. The vector loop runs when every pointer is
// 16-byte aligned (CuPy allocates at 256 bytes; a view with an offset may not be), then the
// scalar loop takes the tail (and, unaligned, everything). The launcher sizes the grid to the
// device, so a thread loops over several vectors.
template <typename T> struct Vec;
template <> struct Vec<float> { using type = float4; };
template <> struct Vec<double> { using type = double2; };
template <> struct Vec<float16_bits> { using type = uint4; };
template <> struct Vec<bfloat16_bits> { using type = uint4; };

template <typename T, typename V> __device__ __forceinline__ T& lane(V& v, int k) {
  return reinterpret_cast<T*>(&v)[k];
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

template <typename T, typename Op>
__global__ void act_fwd(const T* __restrict__ x, T* __restrict__ y, long long n, compute_t<T> p0,
                        compute_t<T> p1) {
  using V = typename Vec<T>::type;
  constexpr int W = 16 / sizeof(T);
  Op op;
  long long done = 0;
  if (aligned16(x) && aligned16(y)) {
    const long long nv = n / W;
    GRID_STRIDE(v, nv) {
      V xv = reinterpret_cast<const V*>(x)[v], yv;
#pragma unroll
      for (int k = 0; k < W; ++k) lane<T>(yv, k) = rounded<T>(op(widen(lane<T>(xv, k)), p0, p1));
      reinterpret_cast<V*>(y)[v] = yv;
    }
    done = nv * W;
  }
  GRID_STRIDE(j, n - done) { y[done + j] = rounded<T>(op(widen(x[done + j]), p0, p1)); }
}

template <typename T, typename Op>
__global__ void act_bwd(const T* __restrict__ g, const T* __restrict__ saved, T* __restrict__ dx,
                        long long n, compute_t<T> p0, compute_t<T> p1) {
  using V = typename Vec<T>::type;
  constexpr int W = 16 / sizeof(T);
  Op op;
  long long done = 0;
  if (aligned16(g) && aligned16(saved) && aligned16(dx)) {
    const long long nv = n / W;
    GRID_STRIDE(v, nv) {
      V gv = reinterpret_cast<const V*>(g)[v], sv = reinterpret_cast<const V*>(saved)[v], dv;
#pragma unroll
      for (int k = 0; k < W; ++k) lane<T>(dv, k) = rounded<T>(op(widen(lane<T>(gv, k)), widen(lane<T>(sv, k)), p0, p1));
      reinterpret_cast<V*>(dx)[v] = dv;
    }
    done = nv * W;
  }
  GRID_STRIDE(j, n - done) {
    dx[done + j] = rounded<T>(op(widen(g[done + j]), widen(saved[done + j]), p0, p1));
  }
}

// relu (slope == 0) or leaky_relu forward that also writes bit i % 32 of mask[i / 32]: the
// header's relu_mask_bit or leaky_relu_mask_bit of x.
// A warp covers 32 consecutive elements (blockDim and the stride are multiples of 32), so one
// ballot yields a whole word; the loop runs while the warp's first element is in range so all
// 32 lanes take part in every ballot. (Scalar: the masks' backward is the hot path.)
template <typename T>
__global__ void relu_fwd_mask(const T* __restrict__ x, T* __restrict__ y,
                              unsigned int* __restrict__ mask, long long n, compute_t<T> slope) {
  using C = compute_t<T>;
  const long long stride = (long long)blockDim.x * gridDim.x;
  const unsigned lane = threadIdx.x & 31u;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i - lane < n; i += stride) {
    const bool in = i < n;
    const C v = in ? widen(x[i]) : C(0);
    const bool bit = in && (slope == C(0) ? gg::relu_mask_bit(v) : gg::leaky_relu_mask_bit(v));
    if (in) y[i] = rounded<T>(slope == C(0) ? gg::relu_fwd(v) : gg::leaky_relu_fwd(v, slope));
    const unsigned word = __ballot_sync(0xffffffffu, bit);
    if (lane == 0) mask[i >> 5] = word;
  }
}

template <typename T>
__device__ __forceinline__ T relu_bwd_bit(T g, bool bit, compute_t<T> slope) {
  using C = compute_t<T>;
  const C gc = widen(g);
  return rounded<T>(slope == C(0) ? gg::relu_bwd_from_mask(gc, bit)
                                  : gg::leaky_relu_bwd_from_mask(gc, bit, slope));
}

// A vector's W elements start at a multiple of W, and W divides 32: their bits share one word.
template <typename T>
__global__ void relu_bwd_mask(const T* __restrict__ g, const unsigned int* __restrict__ mask,
                              T* __restrict__ dx, long long n, compute_t<T> slope) {
  using V = typename Vec<T>::type;
  constexpr int W = 16 / sizeof(T);
  long long done = 0;
  if (aligned16(g) && aligned16(dx)) {
    const long long nv = n / W;
    GRID_STRIDE(v, nv) {
      const long long i = v * W;
      const unsigned word = mask[i >> 5] >> (i & 31);
      V gv = reinterpret_cast<const V*>(g)[v], dv;
#pragma unroll
      for (int k = 0; k < W; ++k) lane<T>(dv, k) = relu_bwd_bit(lane<T>(gv, k), (word >> k) & 1u, slope);
      reinterpret_cast<V*>(dx)[v] = dv;
    }
    done = nv * W;
  }
  GRID_STRIDE(j, n - done) {
    const long long i = done + j;
    dx[i] = relu_bwd_bit(g[i], (mask[i >> 5] >> (i & 31)) & 1u, slope);
  }
}

// relu or leaky_relu backward read from the output y instead of a mask, for when the next op
// keeps y anyway and the mask was never kept: the bit is the mask's own test applied to y
// (relu: !(y <= 0); leaky_relu, `leaky` != 0: y > 0), equal to x's for y = relu(x) and for
// leaky_relu with a slope >= 0. Reads g and y, writes dx (3 * sizeof(T)).
// Past the bit, as relu_bwd_mask: a zero slope gives +0, even for an infinite g.
template <typename T>
__device__ __forceinline__ T relu_bwd_from_output(T g, T y, compute_t<T> slope, int leaky) {
  const compute_t<T> yc = widen(y);
  return relu_bwd_bit(g, leaky ? gg::leaky_relu_mask_bit(yc) : gg::relu_mask_bit(yc), slope);
}

template <typename T>
__global__ void relu_bwd_out(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx,
                             long long n, compute_t<T> slope, int leaky) {
  using V = typename Vec<T>::type;
  constexpr int W = 16 / sizeof(T);
  long long done = 0;
  if (aligned16(g) && aligned16(y) && aligned16(dx)) {
    const long long nv = n / W;
    GRID_STRIDE(v, nv) {
      V gv = reinterpret_cast<const V*>(g)[v], yv = reinterpret_cast<const V*>(y)[v], dv;
#pragma unroll
      for (int k = 0; k < W; ++k)
        lane<T>(dv, k) = relu_bwd_from_output(lane<T>(gv, k), lane<T>(yv, k), slope, leaky);
      reinterpret_cast<V*>(dx)[v] = dv;
    }
    done = nv * W;
  }
  GRID_STRIDE(j, n - done) {
    dx[done + j] = relu_bwd_from_output(g[done + j], y[done + j], slope, leaky);
  }
}
