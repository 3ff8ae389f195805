// The kernels' float types. float and double compute in themselves. The two 16-bit floats are
// stored as their bits (float16_bits, bfloat16_bits), widened to float on load, computed in
// float, and rounded to nearest (ties to even) once on store, as ml_dtypes and NumPy round them
// on the CPU. The conversions are written here (bit operations for bfloat16, PTX's cvt
// instructions for float16) rather than taken from cuda_fp16.h and cuda_bf16.h, which NVRTC under
// CuPy may not find, or may find from another CUDA release than its own.
// Kernels take their scalars in compute_t<T>: float for the 16-bit types.
#pragma once

#if !defined(__CUDACC_RTC__)
#include <cstring>
#endif
#if !defined(__CUDACC__)
#define __host__
#define __device__
#define __forceinline__ inline
#endif

struct float16_bits {
  unsigned short bits;
};
struct bfloat16_bits {
  unsigned short bits;
};

__host__ __device__ __forceinline__ float float_from_bits(unsigned u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

__host__ __device__ __forceinline__ unsigned bits_of_float(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

template <typename T> struct Float {  // float, double
  using compute = T;
  static __host__ __device__ __forceinline__ T widen(T v) { return v; }
  static __host__ __device__ __forceinline__ T round(T v) { return v; }
};

template <> struct Float<bfloat16_bits> {
  using compute = float;
  // bfloat16 is the upper half of a float: widening is exact
  static __host__ __device__ __forceinline__ float widen(bfloat16_bits v) {
    return float_from_bits(static_cast<unsigned>(v.bits) << 16);
  }
  // adding 0x7fff plus the kept half's lowest bit rounds to nearest, ties to even; the carry
  // runs into the exponent where it should (up to infinity); NaN stays a quiet NaN of its sign
  static __host__ __device__ __forceinline__ bfloat16_bits round(float f) {
    const unsigned u = bits_of_float(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<unsigned short>((u >> 16) | 0x0040u)};
    return {static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
  }
};

#if defined(__CUDACC__)
template <> struct Float<float16_bits> {
  using compute = float;
  static __device__ __forceinline__ float widen(float16_bits v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
  }
  static __device__ __forceinline__ float16_bits round(float f) {
    float16_bits r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
    return r;
  }
};
#endif

template <typename T> using compute_t = typename Float<T>::compute;

template <typename T> __host__ __device__ __forceinline__ compute_t<T> widen(T v) {
  return Float<T>::widen(v);
}
template <typename T> __host__ __device__ __forceinline__ T rounded(compute_t<T> v) {
  return Float<T>::round(v);
}
