// Fused SGD step over a flat parameter buffer, in place:
//   v = momentum * v + grad + weight_decay * param;  param -= lr * v
// Reads param, grad and v, writes param and v (5 * sizeof(T) per element) in one pass instead
// of the four passes and two temporaries of the unfused composition. Called from
// gpugrad/kernels.py (sgd_step).
template <typename T>
__global__ void sgd_step(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ v,
                         long long n, T lr, T momentum, T weight_decay) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const T p = param[i];
    const T vi = momentum * v[i] + grad[i] + weight_decay * p;
    v[i] = vi;
    param[i] = p - lr * vi;
  }
}
