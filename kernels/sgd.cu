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
template <typename T>
__device__ __forceinline__ T decayed(T grad, T weight_decay, T param) {
  return weight_decay == T(0) ? grad : grad + weight_decay * param;
}

template <typename T>
__global__ void sgd_step(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ v,
                         long long n, T lr, T momentum, T weight_decay) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const T p = param[i];
    const T vi = momentum * v[i] + decayed(grad[i], weight_decay, p);
    v[i] = vi;
    param[i] = p - lr * vi;
  }
}

template <typename T>
__global__ void sgd_update(T* __restrict__ param, const T* __restrict__ grad, long long n, T lr,
                           T weight_decay) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const T p = param[i];
    param[i] = p - lr * decayed(grad[i], weight_decay, p);
  }
}
