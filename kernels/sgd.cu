// Fused SGD updates over a flat parameter buffer, in place. Launched by gpugrad/devices/cuda/specs.py.
//
// sgd_step, with momentum:  v = momentum * v + grad + weight_decay * param;  param -= lr * v
//   reads param, grad and v, writes param and v (5 * sizeof(T) per element) in one pass
//   instead of the four passes and two temporaries of the unfused composition.
// sgd_update, without:      param -= lr * (grad + weight_decay * param)
//   reads param and grad, writes param (3 * sizeof(T)): one kernel where the composition
//   launches two or three.
// Without weight decay the term is left out, not multiplied by 0: an infinite parameter stays
// infinite, as in the composition (0 * inf would make it NaN).
// A 16-bit parameter and gradient are widened to float, the velocity is kept in float, and the
// parameter is rounded once on store (precision.cuh): lr * v would round away in bfloat16.
#include "precision.cuh"

template <typename C>
__device__ __forceinline__ C decayed(C grad, C weight_decay, C param) {
  return weight_decay == C(0) ? grad : grad + weight_decay * param;
}

template <typename T>
__global__ void sgd_step(T* __restrict__ param, const T* __restrict__ grad,
                         compute_t<T>* __restrict__ v, long long n, compute_t<T> lr,
                         compute_t<T> momentum, compute_t<T> weight_decay) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const compute_t<T> p = widen(param[i]);
    const compute_t<T> vi = momentum * v[i] + decayed(widen(grad[i]), weight_decay, p);
    v[i] = vi;
    param[i] = rounded<T>(p - lr * vi);
  }
}

template <typename T>
__global__ void sgd_update(T* __restrict__ param, const T* __restrict__ grad, long long n,
                           compute_t<T> lr, compute_t<T> weight_decay) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const compute_t<T> p = widen(param[i]);
    param[i] = rounded<T>(p - lr * decayed(widen(grad[i]), weight_decay, p));
  }
}
