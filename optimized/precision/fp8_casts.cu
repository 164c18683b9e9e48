// fp32 <-> fp8 and fp32 -> tf32 cast kernels.
//
// Napkin math (H100 SXM, HBM3 ~3.35 TB/s): fp32 -> fp8 moves 4 + 1 = 5 bytes per element, fp8 -> fp32
// 5 bytes, fp32 -> tf32 8 bytes. 2^26 elements: 320 MiB (335 MB) for the fp8 casts, ~0.10 ms at peak
// (~670 G elements/s); 512 MiB (537 MB) for tf32, ~0.16 ms. A streaming kernel reaches ~90% of that.
// Compute: the integer rounding of optimized/precision/fp8.cuh is ~15 ALU operations per element;
// at 670 G elements/s that is ~10 T integer ops/s of the ~15 T/s the SMs issue (132 SMs x 64
// INT32 lanes x ~1.75 GHz), so fp32 -> fp8 is memory bound with less slack than the 16-bit casts;
// decoding is ~8 operations and tf32 ~5 per element. Arrays of a few MiB sit in L2 when timed warm,
// so the quick sizes may beat the HBM bound.
//
// Shape: one vector step converts 16 elements for fp8 (four float4 and one uint4: 16-byte accesses on
// both sides) and 8 for tf32 (two float4 each way); the unaligned head and the ragged tail are done
// one element at a time by the same launch; the grid is one wave of resident blocks and threads stride
// over the rest (optimized/precision/fp8_launch.h).
#include "optimized/precision/fp8_casts.h"

#include <cuda_runtime.h>

#include "optimized/precision/fp8.cuh"
#include "optimized/precision/launch_support.cuh"
#include "optimized/precision/fp8_launch.h"

namespace gauge::optimized::precision {
namespace {

using fp8_launch::kThreadsPerBlock;
using fp8_launch::Split;

constexpr int64_t kFp8ElementsPerVector = 16;
constexpr int64_t kTf32ElementsPerVector = 8;

__device__ __forceinline__ uint32_t pack4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return static_cast<uint32_t>(a) | (static_cast<uint32_t>(b) << 8) | (static_cast<uint32_t>(c) << 16) |
         (static_cast<uint32_t>(d) << 24);
}

template <Fp8Format F, bool Saturate>
__device__ __forceinline__ uint32_t encode4(float4 v) {
  return pack4(f32_to_fp8_rne<F>(v.x, Saturate), f32_to_fp8_rne<F>(v.y, Saturate), f32_to_fp8_rne<F>(v.z, Saturate),
               f32_to_fp8_rne<F>(v.w, Saturate));
}

template <Fp8Format F>
__device__ __forceinline__ float4 decode4(uint32_t packed) {
  return make_float4(fp8_to_f32<F>(static_cast<uint8_t>(packed)), fp8_to_f32<F>(static_cast<uint8_t>(packed >> 8)),
                     fp8_to_f32<F>(static_cast<uint8_t>(packed >> 16)),
                     fp8_to_f32<F>(static_cast<uint8_t>(packed >> 24)));
}

template <Fp8Format F, bool Saturate>
__global__ void __launch_bounds__(kThreadsPerBlock)
    f32_to_fp8_kernel(const float* __restrict__ in, uint8_t* __restrict__ out, Split split) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = first; v < split.vectors; v += stride) {
    const int64_t i = split.vector_first(v);
    const float4* source = reinterpret_cast<const float4*>(in + i);
    const float4 a = __ldg(source);
    const float4 b = __ldg(source + 1);
    const float4 c = __ldg(source + 2);
    const float4 d = __ldg(source + 3);
    *reinterpret_cast<uint4*>(out + i) =
        make_uint4(encode4<F, Saturate>(a), encode4<F, Saturate>(b), encode4<F, Saturate>(c), encode4<F, Saturate>(d));
  }
  for (int64_t j = first; j < split.scalar_count(); j += stride) {
    const int64_t i = split.scalar_index(j);
    out[i] = f32_to_fp8_rne<F>(in[i], Saturate);
  }
}

template <Fp8Format F>
__global__ void __launch_bounds__(kThreadsPerBlock)
    fp8_to_f32_kernel(const uint8_t* __restrict__ in, float* __restrict__ out, Split split) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = first; v < split.vectors; v += stride) {
    const int64_t i = split.vector_first(v);
    const uint4 packed = __ldg(reinterpret_cast<const uint4*>(in + i));
    float4* target = reinterpret_cast<float4*>(out + i);
    target[0] = decode4<F>(packed.x);
    target[1] = decode4<F>(packed.y);
    target[2] = decode4<F>(packed.z);
    target[3] = decode4<F>(packed.w);
  }
  for (int64_t j = first; j < split.scalar_count(); j += stride) {
    const int64_t i = split.scalar_index(j);
    out[i] = fp8_to_f32<F>(in[i]);
  }
}

__device__ __forceinline__ float4 tf32_4(float4 v) {
  return make_float4(f32_to_tf32_rne(v.x), f32_to_tf32_rne(v.y), f32_to_tf32_rne(v.z), f32_to_tf32_rne(v.w));
}

__global__ void __launch_bounds__(kThreadsPerBlock)
    f32_to_tf32_kernel(const float* __restrict__ in, float* __restrict__ out, Split split) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = first; v < split.vectors; v += stride) {
    const int64_t i = split.vector_first(v);
    const float4* source = reinterpret_cast<const float4*>(in + i);
    const float4 a = __ldg(source);
    const float4 b = __ldg(source + 1);
    float4* target = reinterpret_cast<float4*>(out + i);
    target[0] = tf32_4(a);
    target[1] = tf32_4(b);
  }
  for (int64_t j = first; j < split.scalar_count(); j += stride) {
    const int64_t i = split.scalar_index(j);
    out[i] = f32_to_tf32_rne(in[i]);
  }
}

template <class Kernel, class In, class Out>
void launch(Kernel kernel, const In* in, Out* out, const Split& split, StreamHandle stream, const char* what) {
  if (split.scalar_count() + split.vectors == 0) return;
  const int blocks = fp8_launch::grid_blocks(split, launch_support::sm_count_of_current_device(what));
  kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(in, out, split);
  launch_support::check(cudaGetLastError(), what);
}

}  // namespace

void cast_f32_to_fp8(const float* in, uint8_t* out, int64_t n, Fp8Format format, Fp8Overflow overflow,
                     StreamHandle stream) {
  constexpr const char* what = "cast_f32_to_fp8";
  const Split split = launch_support::checked_split(what, in, 4, out, 1, n, kFp8ElementsPerVector);
  const bool saturate = overflow == Fp8Overflow::saturate;
  if (format == Fp8Format::e4m3) {
    launch(saturate ? f32_to_fp8_kernel<Fp8Format::e4m3, true> : f32_to_fp8_kernel<Fp8Format::e4m3, false>, in, out,
           split, stream, what);
  } else {
    launch(saturate ? f32_to_fp8_kernel<Fp8Format::e5m2, true> : f32_to_fp8_kernel<Fp8Format::e5m2, false>, in, out,
           split, stream, what);
  }
}

void cast_fp8_to_f32(const uint8_t* in, float* out, int64_t n, Fp8Format format, StreamHandle stream) {
  constexpr const char* what = "cast_fp8_to_f32";
  const Split split = launch_support::checked_split(what, in, 1, out, 4, n, kFp8ElementsPerVector);
  launch(format == Fp8Format::e4m3 ? fp8_to_f32_kernel<Fp8Format::e4m3> : fp8_to_f32_kernel<Fp8Format::e5m2>, in, out,
         split, stream, what);
}

void cast_f32_to_tf32(const float* in, float* out, int64_t n, StreamHandle stream) {
  constexpr const char* what = "cast_f32_to_tf32";
  const Split split = launch_support::checked_split(what, in, 4, out, 4, n, kTf32ElementsPerVector);
  launch(f32_to_tf32_kernel, in, out, split, stream, what);
}

}  // namespace gauge::optimized::precision
