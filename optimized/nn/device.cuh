// Internal to optimized/nn: element conversions, 16-byte vector loads and stores, warp/block sums, the
// dtype dispatch and the launch check shared by the translation units (linear.cu, pointwise.cu,
// norms.cu, softmax_ce.cu). Nothing here is part of the API.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "harness/dtype.h"
#include "harness/error.h"
#include "optimized/nn/launch.h"

namespace gauge::optimized::nn::detail {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RuntimeFailure(std::string("nn: ") + what + ": " + cudaGetErrorString(status));
}
inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

inline void require_aligned(const char* function, const char* operand, const void* p) {
  if (p != nullptr && !launch::aligned16(p)) {
    throw RuntimeFailure(std::string(function) + ": " + operand + " is not 16-byte aligned");
  }
}

inline void require_storage(const char* function, DType storage) {
  if (storage != DType::f32 && storage != DType::bf16 && storage != DType::f16) {
    throw UsageError(std::string(function) + ": storage dtype " + std::string(dtype_name(storage)) +
                     " is not f32, bf16 or f16");
  }
}

inline void require_non_negative(const char* function, const char* what, int64_t v) {
  if (v < 0) throw UsageError(std::string(function) + ": " + what + " is " + std::to_string(v) + ", must be >= 0");
}

// Calls f(T{}) with T the storage element type.
template <class F>
void dispatch_storage(DType storage, F&& f) {
  switch (storage) {
    case DType::f32:
      f(float{});
      return;
    case DType::bf16:
      f(__nv_bfloat16{});
      return;
    case DType::f16:
      f(__half{});
      return;
    default:
      throw UsageError("nn: storage dtype " + std::string(dtype_name(storage)) + " is not f32, bf16 or f16");
  }
}

// Stage 2 of the deterministic column sums (columns.cu): out[c] = sum over p < count of
// partials[p, c] in a fixed order; count == 0 writes zeros.
void reduce_partials(const float* partials, int64_t count, int64_t cols, float* out, cudaStream_t stream);

// ---- Elements --------------------------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// V elements of T through one 16-byte access (V = 16 / sizeof(T)), or V scalar accesses when V is
// smaller (the unaligned path: V = 1).
template <class T, int V>
__device__ __forceinline__ void load_vector(const T* p, float (&out)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = to_float(e[k]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = to_float(p[k]);
  }
}

template <class T, int V>
__device__ __forceinline__ void store_vector(T* p, const float (&in)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int k = 0; k < V; ++k) e[k] = from_float<T>(in[k]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[k] = from_float<T>(in[k]);
  }
}

// ---- Sums in a fixed order ------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xFFFFFFFFu, x, offset);
  return x;
}

// Sum over the `threads_per_row` threads (a power of two >= 32) that share a row, every thread
// receiving the result. `scratch` holds one float per warp of the block; the row's warps are
// consecutive. Contains __syncthreads() when threads_per_row > 32: every thread of the block must call.
__device__ __forceinline__ float row_sum(float x, int threads_per_row, float* scratch) {
  x = warp_sum(x);
  if (threads_per_row == 32) return x;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warps = threads_per_row / 32;
  const int first = warp - warp % warps;
  __syncthreads();  // the previous use of scratch is finished
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += scratch[first + w];  // same order in every thread
  return total;
}

}  // namespace gauge::optimized::nn::detail
