// Stochastic-rounding kernels: fp32 -> fp16 / fp8 with one Philox4x32-10 word per element.
//
// Napkin math (H100 SXM, ~3.35 TB/s): fp32 -> fp8 moves 5 bytes per element (~670 G elements/s at the
// HBM peak), fp32 -> fp16 6 bytes (~560 G elements/s). The Philox block (10 rounds of two 32x32->64
// multiplies, XORs and key bumps, ~60 integer operations) serves 4 elements, ~15 per element, and the
// rounding (optimized/precision/fp8.cuh) ~15 more: ~30 integer operations per element against the
// ~15 T/s the SMs issue gives ~500 G elements/s, so these kernels are about at the boundary between
// memory and integer-issue bound: expect ~70-90% of the HBM peak for fp8, closer to it for fp16.
//
// Shape: a vector step covers 16 (fp8) or 8 (fp16) consecutive elements starting at an index that is a
// multiple of 4, so it draws exactly 4 (or 2) Philox blocks and uses every word; loads and stores
// are 16 bytes on both sides (fp16: two float4 in, one uint4 out). The head and tail, where the
// buffers or the index cannot be aligned, draw one Philox block per element (at most 15 elements,
// or all of them when the two buffers can never be aligned together).
#include "optimized/precision/stochastic_round.h"

#include <cuda_runtime.h>

#include "harness/philox.h"
#include "optimized/precision/fp8.cuh"
#include "optimized/precision/launch_support.cuh"
#include "optimized/precision/fp8_launch.h"
#include "optimized/precision/stochastic_rounding.cuh"

namespace gauge::optimized::precision {
namespace {

using fp8_launch::kThreadsPerBlock;
using fp8_launch::Split;

constexpr int64_t kWordsPerBlock = 4;  // one Philox4x32 call: the words of elements 4q .. 4q+3
constexpr int64_t kFp8ElementsPerVector = 16;
constexpr int64_t kF16ElementsPerVector = 8;
constexpr uint64_t kIndexLimit = uint64_t{1} << 34;
constexpr uint64_t kStepLimit = uint64_t{1} << 30;

struct Keying {
  uint64_t seed;
  uint32_t tensor_id;
  uint64_t step;
};

template <Fp8Format F, bool Saturate>
__device__ __forceinline__ uint32_t round4_fp8(float4 v, rng::Philox4x32Counter words) {
  return static_cast<uint32_t>(f32_to_fp8_stochastic<F>(v.x, words.w[0], Saturate)) |
         (static_cast<uint32_t>(f32_to_fp8_stochastic<F>(v.y, words.w[1], Saturate)) << 8) |
         (static_cast<uint32_t>(f32_to_fp8_stochastic<F>(v.z, words.w[2], Saturate)) << 16) |
         (static_cast<uint32_t>(f32_to_fp8_stochastic<F>(v.w, words.w[3], Saturate)) << 24);
}

__device__ __forceinline__ uint32_t round2_f16(float low, float high, uint32_t low_word, uint32_t high_word) {
  return static_cast<uint32_t>(f32_to_f16_stochastic(low, low_word)) |
         (static_cast<uint32_t>(f32_to_f16_stochastic(high, high_word)) << 16);
}

template <Fp8Format F, bool Saturate>
__global__ void __launch_bounds__(kThreadsPerBlock)
    stochastic_fp8_kernel(const float* __restrict__ in, uint8_t* __restrict__ out, Split split, Keying key) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = first; v < split.vectors; v += stride) {
    const int64_t i = split.vector_first(v);  // a multiple of 4
    const auto quad = static_cast<uint64_t>(i / kWordsPerBlock);
    const float4* source = reinterpret_cast<const float4*>(in + i);
    const float4 a = __ldg(source);
    const float4 b = __ldg(source + 1);
    const float4 c = __ldg(source + 2);
    const float4 d = __ldg(source + 3);
    *reinterpret_cast<uint4*>(out + i) =
        make_uint4(round4_fp8<F, Saturate>(a, sr_block(key.seed, key.tensor_id, quad, key.step)),
                   round4_fp8<F, Saturate>(b, sr_block(key.seed, key.tensor_id, quad + 1, key.step)),
                   round4_fp8<F, Saturate>(c, sr_block(key.seed, key.tensor_id, quad + 2, key.step)),
                   round4_fp8<F, Saturate>(d, sr_block(key.seed, key.tensor_id, quad + 3, key.step)));
  }
  for (int64_t j = first; j < split.scalar_count(); j += stride) {
    const int64_t i = split.scalar_index(j);
    const uint32_t word = sr_word(key.seed, key.tensor_id, static_cast<uint64_t>(i), key.step);
    out[i] = f32_to_fp8_stochastic<F>(in[i], word, Saturate);
  }
}

__global__ void __launch_bounds__(kThreadsPerBlock)
    stochastic_f16_kernel(const float* __restrict__ in, uint16_t* __restrict__ out, Split split, Keying key) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = first; v < split.vectors; v += stride) {
    const int64_t i = split.vector_first(v);
    const auto quad = static_cast<uint64_t>(i / kWordsPerBlock);
    const float4* source = reinterpret_cast<const float4*>(in + i);
    const float4 a = __ldg(source);
    const float4 b = __ldg(source + 1);
    const rng::Philox4x32Counter wa = sr_block(key.seed, key.tensor_id, quad, key.step);
    const rng::Philox4x32Counter wb = sr_block(key.seed, key.tensor_id, quad + 1, key.step);
    *reinterpret_cast<uint4*>(out + i) =
        make_uint4(round2_f16(a.x, a.y, wa.w[0], wa.w[1]), round2_f16(a.z, a.w, wa.w[2], wa.w[3]),
                   round2_f16(b.x, b.y, wb.w[0], wb.w[1]), round2_f16(b.z, b.w, wb.w[2], wb.w[3]));
  }
  for (int64_t j = first; j < split.scalar_count(); j += stride) {
    const int64_t i = split.scalar_index(j);
    out[i] = f32_to_f16_stochastic(in[i], sr_word(key.seed, key.tensor_id, static_cast<uint64_t>(i), key.step));
  }
}

Keying checked_keying(const char* what, int64_t n, uint64_t seed, uint32_t tensor_id, uint64_t step) {
  if (n >= 0 && static_cast<uint64_t>(n) > kIndexLimit) {
    launch_support::refuse(what, "more than 2^34 elements (the Philox counter holds 34 index bits)");
  }
  if (step >= kStepLimit) launch_support::refuse(what, "step " + std::to_string(step) + " is not below 2^30");
  return Keying{seed, tensor_id, step};
}

template <class Kernel, class Out>
void launch(Kernel kernel, const float* in, Out* out, const Split& split, const Keying& key, const char* what,
            StreamHandle stream) {
  if (split.scalar_count() + split.vectors == 0) return;
  const int blocks = fp8_launch::grid_blocks(split, launch_support::sm_count_of_current_device(what));
  kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(in, out, split, key);
  launch_support::check(cudaGetLastError(), what);
}

}  // namespace

void stochastic_round_f32_to_f16(const float* in, uint16_t* out, int64_t n, uint64_t seed, uint32_t tensor_id,
                                 uint64_t step, StreamHandle stream) {
  constexpr const char* what = "stochastic_round_f32_to_f16";
  const Keying key = checked_keying(what, n, seed, tensor_id, step);
  const Split split = launch_support::checked_split(what, in, 4, out, 2, n, kF16ElementsPerVector, kWordsPerBlock);
  launch(stochastic_f16_kernel, in, out, split, key, what, stream);
}

void stochastic_round_f32_to_fp8(const float* in, uint8_t* out, int64_t n, Fp8Format format, Fp8Overflow overflow,
                                 uint64_t seed, uint32_t tensor_id, uint64_t step, StreamHandle stream) {
  constexpr const char* what = "stochastic_round_f32_to_fp8";
  const Keying key = checked_keying(what, n, seed, tensor_id, step);
  const Split split = launch_support::checked_split(what, in, 4, out, 1, n, kFp8ElementsPerVector, kWordsPerBlock);
  const bool saturate = overflow == Fp8Overflow::saturate;
  if (format == Fp8Format::e4m3) {
    launch(saturate ? stochastic_fp8_kernel<Fp8Format::e4m3, true> : stochastic_fp8_kernel<Fp8Format::e4m3, false>, in,
           out, split, key, what, stream);
  } else {
    launch(saturate ? stochastic_fp8_kernel<Fp8Format::e5m2, true> : stochastic_fp8_kernel<Fp8Format::e5m2, false>, in,
           out, split, key, what, stream);
  }
}

}  // namespace gauge::optimized::precision
