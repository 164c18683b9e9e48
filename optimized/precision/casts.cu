// fp32 <-> bf16 / fp16 cast kernels.
//
// Napkin math: every direction reads and writes 4 + 2 = 6 bytes per element and does a handful of
// integer/convert instructions, so the bound is device memory bandwidth. H100 SXM (HBM3, ~3.35 TB/s):
// 256 MiB of fp32 -> bf16 is 64 Mi elements, 256 MiB read + 128 MiB written = 384 MiB (403 MB) moved,
// ~0.12 ms at peak; a good streaming kernel reaches ~90% of that. Compute is far from a limit: at
// ~560 G elements/s the SMs have ~50 instruction issues per element to spend, and these kernels use ~10.
// Arrays of a few MiB sit in the 50 MB L2 when timed warm, so small sizes may beat the HBM bound.
//
// Shape of the kernels: the aligned body moves 8 elements per step with 16-byte accesses (two float4
// and one uint4), converting pairs with the packed cvt instructions; the unaligned head and ragged
// tail (at most 15 elements) are done one element at a time by the same launch, so there is one
// kernel launch per call. The grid is one wave of resident blocks and threads stride over the rest.
//
// Semantics (reference/precision/casts.h): round to nearest even, subnormals kept, overflow to +-Inf.
// The packed cvt instructions do all of that without .ftz, but they return a canonical NaN, so NaNs
// are rebuilt explicitly with the reference's sign and payload rules. Input and output must not overlap.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "harness/error.h"
#include "optimized/precision/cast_launch.h"
#include "optimized/precision/casts.h"
#include "optimized/precision/launch_support.cuh"

namespace gauge::optimized::precision {
namespace {

using cast_launch::kThreadsPerBlock;
using cast_launch::Split;

// ---- NaN rules of the reference ------------------------------------------------------------------

__device__ __forceinline__ uint16_t bf16_nan_from_f32(uint32_t bits) {
  return static_cast<uint16_t>((bits >> 16) | 0x0040u);
}
__device__ __forceinline__ uint16_t f16_nan_from_f32(uint32_t bits) {
  return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7E00u | ((bits >> 13) & 0x03FFu));
}
__device__ __forceinline__ bool is_bf16_nan(uint32_t bits) { return (bits & 0x7FFFu) > 0x7F80u; }
__device__ __forceinline__ bool is_f16_nan(uint32_t bits) { return (bits & 0x7FFFu) > 0x7C00u; }

__device__ __forceinline__ uint32_t pack_pair(uint16_t low, uint16_t high) {
  return static_cast<uint32_t>(low) | (static_cast<uint32_t>(high) << 16);
}

// ---- The four conversions: one element, and a pair packed in (or unpacked from) 32 bits -----------

struct F32ToBf16 {
  using In = float;
  using Out = uint16_t;
  static __device__ __forceinline__ uint16_t fix_nan(float x, uint16_t converted) {
    return isnan(x) ? bf16_nan_from_f32(__float_as_uint(x)) : converted;
  }
  static __device__ __forceinline__ uint16_t one(float x) {
    return fix_nan(x, __bfloat16_as_ushort(__float2bfloat16_rn(x)));
  }
  static __device__ __forceinline__ uint32_t pair(float low, float high) {
    const __nv_bfloat162 converted = __float22bfloat162_rn(make_float2(low, high));
    return pack_pair(fix_nan(low, __bfloat16_as_ushort(converted.x)),
                     fix_nan(high, __bfloat16_as_ushort(converted.y)));
  }
};

struct F32ToF16 {
  using In = float;
  using Out = uint16_t;
  static __device__ __forceinline__ uint16_t fix_nan(float x, uint16_t converted) {
    return isnan(x) ? f16_nan_from_f32(__float_as_uint(x)) : converted;
  }
  static __device__ __forceinline__ uint16_t one(float x) { return fix_nan(x, __half_as_ushort(__float2half_rn(x))); }
  static __device__ __forceinline__ uint32_t pair(float low, float high) {
    const __half2 converted = __float22half2_rn(make_float2(low, high));
    return pack_pair(fix_nan(low, __half_as_ushort(converted.x)), fix_nan(high, __half_as_ushort(converted.y)));
  }
};

// bf16 is the top half of an fp32, so widening is a shift; only a NaN needs its quiet bit set.
struct Bf16ToF32 {
  using In = uint16_t;
  using Out = float;
  static __device__ __forceinline__ float widen(uint32_t bf16_bits, uint32_t f32_bits) {
    return __uint_as_float(is_bf16_nan(bf16_bits) ? (f32_bits | 0x00400000u) : f32_bits);
  }
  static __device__ __forceinline__ float one(uint16_t bits) { return widen(bits, static_cast<uint32_t>(bits) << 16); }
  static __device__ __forceinline__ float2 pair(uint32_t packed) {
    return make_float2(widen(packed & 0xFFFFu, packed << 16), widen(packed >> 16, packed & 0xFFFF0000u));
  }
};

struct F16ToF32 {
  using In = uint16_t;
  using Out = float;
  static __device__ __forceinline__ float fix_nan(uint32_t bits, float converted) {
    const uint32_t nan = ((bits & 0x8000u) << 16) | 0x7FC00000u | ((bits & 0x03FFu) << 13);
    return is_f16_nan(bits) ? __uint_as_float(nan) : converted;
  }
  static __device__ __forceinline__ float one(uint16_t bits) {
    return fix_nan(bits, __half2float(__ushort_as_half(bits)));
  }
  static __device__ __forceinline__ float2 pair(uint32_t packed) {
    const uint32_t low = packed & 0xFFFFu;
    const uint32_t high = packed >> 16;
    const float2 converted = __half22float2(__halves2half2(__ushort_as_half(static_cast<unsigned short>(low)),
                                                           __ushort_as_half(static_cast<unsigned short>(high))));
    return make_float2(fix_nan(low, converted.x), fix_nan(high, converted.y));
  }
};

// ---- One vector step: 8 elements, 16-byte accesses -----------------------------------------------

template <class Cast>
__device__ __forceinline__ void narrow_step(const float* __restrict__ in, uint16_t* __restrict__ out) {
  const float4 first = reinterpret_cast<const float4*>(in)[0];
  const float4 second = reinterpret_cast<const float4*>(in)[1];
  *reinterpret_cast<uint4*>(out) = make_uint4(Cast::pair(first.x, first.y), Cast::pair(first.z, first.w),
                                              Cast::pair(second.x, second.y), Cast::pair(second.z, second.w));
}

template <class Cast>
__device__ __forceinline__ void widen_step(const uint16_t* __restrict__ in, float* __restrict__ out) {
  const uint4 packed = *reinterpret_cast<const uint4*>(in);
  const float2 a = Cast::pair(packed.x);
  const float2 b = Cast::pair(packed.y);
  const float2 c = Cast::pair(packed.z);
  const float2 d = Cast::pair(packed.w);
  reinterpret_cast<float4*>(out)[0] = make_float4(a.x, a.y, b.x, b.y);
  reinterpret_cast<float4*>(out)[1] = make_float4(c.x, c.y, d.x, d.y);
}

template <class Cast>
__device__ __forceinline__ void vector_step(const typename Cast::In* __restrict__ in,
                                            typename Cast::Out* __restrict__ out) {
  if constexpr (sizeof(typename Cast::In) == 4) {
    narrow_step<Cast>(in, out);
  } else {
    widen_step<Cast>(in, out);
  }
}

template <class Cast>
__global__ void __launch_bounds__(kThreadsPerBlock)
    cast_kernel(const typename Cast::In* __restrict__ in, typename Cast::Out* __restrict__ out, Split split) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = first; v < split.vectors; v += stride) {
    const int64_t i = split.vector_first(v);
    vector_step<Cast>(in + i, out + i);
  }
  // The head and tail: at most 15 elements, or every element when the buffers cannot both be aligned.
  const int64_t scalar_count = split.scalar_count();
  for (int64_t j = first; j < scalar_count; j += stride) {
    const int64_t i = split.scalar_index(j);
    out[i] = Cast::one(in[i]);
  }
}

// ---- Launch ---------------------------------------------------------------------------------------

using launch_support::check;
using launch_support::fail;
using launch_support::sm_count_of_current_device;

template <class Cast>
void launch_cast(const typename Cast::In* in, typename Cast::Out* out, int64_t n, StreamHandle stream,
                 const char* what) {
  if (n < 0) fail(what, "negative element count " + std::to_string(n));
  if (n == 0) return;
  const auto in_address = reinterpret_cast<uintptr_t>(in);
  const auto out_address = reinterpret_cast<uintptr_t>(out);
  constexpr int in_bytes = sizeof(typename Cast::In);
  constexpr int out_bytes = sizeof(typename Cast::Out);
  // Even the scalar path needs element alignment; a misaligned access would poison the context.
  if (!cast_launch::naturally_aligned(in_address, in_bytes) || !cast_launch::naturally_aligned(out_address, out_bytes)) {
    fail(what, "pointer not aligned to its element size");
  }
  // The kernels read through the non-coherent path and write in place of nothing: overlapping
  // buffers would give silently wrong results, so refuse them.
  const uintptr_t in_end = in_address + static_cast<uintptr_t>(n) * in_bytes;
  const uintptr_t out_end = out_address + static_cast<uintptr_t>(n) * out_bytes;
  if (in_address < out_end && out_address < in_end) fail(what, "input and output overlap");
  const Split split = cast_launch::split_cast(n, in_address, in_bytes, out_address, out_bytes);
  const int blocks = cast_launch::grid_blocks(split, sm_count_of_current_device(what));
  cast_kernel<Cast><<<blocks, kThreadsPerBlock, 0, stream>>>(in, out, split);
  check(cudaGetLastError(), what);
}

}  // namespace

void cast_f32_to_bf16(const float* in, uint16_t* out, int64_t n, StreamHandle stream) {
  launch_cast<F32ToBf16>(in, out, n, stream, "cast_f32_to_bf16");
}
void cast_f32_to_f16(const float* in, uint16_t* out, int64_t n, StreamHandle stream) {
  launch_cast<F32ToF16>(in, out, n, stream, "cast_f32_to_f16");
}
void cast_bf16_to_f32(const uint16_t* in, float* out, int64_t n, StreamHandle stream) {
  launch_cast<Bf16ToF32>(in, out, n, stream, "cast_bf16_to_f32");
}
void cast_f16_to_f32(const uint16_t* in, float* out, int64_t n, StreamHandle stream) {
  launch_cast<F16ToF32>(in, out, n, stream, "cast_f16_to_f32");
}

}  // namespace gauge::optimized::precision
