// fp32 -> bf16 rounding for the optimized side: round to nearest even (bit-identical to
// reference/precision/casts.h) and stochastic rounding keyed by the counter-based RNG (bit-identical
// to reference/precision/stochastic_rounding.h).
//
// Everything here is GAUGE_HD (host and device) on purpose: the CPU test can compare these very
// functions with the reference on any machine, and the kernels call the same source.
//
// Stochastic rounding (reference/precision/stochastic_rounding.h): with b the fp32 bits of x and a
// 32-bit random word w, the magnitude moves one bf16 step away from zero exactly when
//     (w >> 8) < ((b & 0xFFFF) << 8)
// (the top 24 bits of w as a uniform number below the 16 dropped bits as a fraction of a bf16 ulp), so
// E[result] = x; a carry walks into the exponent, and from the largest finite bf16 to Inf. Values on
// the bf16 grid (zeros, Inf) never move; NaN -> the reference cast's quiet NaN (bits >> 16 | 0x0040).
//
// The word of element `index` of stored tensor `tensor_id` at optimizer step `step`:
//     rng::bits_at(seed, tensor_id, rng::Stream::stochastic_rounding, (step << 34) | index)
// i.e. Philox4x32-10 with counter {index >> 2, step, tensor_id, 2}, word index & 3 (index < 2^34,
// step < 2^30); tensor ids from gauge::optim::stochastic_rounding_tensor_id (reference/optim/config.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "harness/philox.h"

namespace gauge::optimized::precision {

GAUGE_HD uint32_t f32_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

GAUGE_HD float f32_from_bits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

// bf16 is the top half of an fp32: widening is exact.
GAUGE_HD float bf16_bits_to_f32(uint16_t bits) { return f32_from_bits(static_cast<uint32_t>(bits) << 16); }

GAUGE_HD bool f32_bits_is_nan(uint32_t bits) { return (bits & 0x7FFFFFFFu) > 0x7F800000u; }

// The reference cast's NaN rule: sign and top payload bits kept, quiet bit set.
GAUGE_HD uint16_t bf16_nan_from_f32_bits(uint32_t bits) { return static_cast<uint16_t>((bits >> 16) | 0x0040u); }

// Round to nearest, ties to even; subnormals kept; overflow to +-Inf (the carry walks into the
// exponent); bit-identical to reference::precision::f32_to_bf16 (checked exhaustively-by-sample on
// the CPU in suites/optim/multi_tensor_plan_test.cc).
GAUGE_HD uint16_t f32_to_bf16_rne(float x) {
  const uint32_t bits = f32_bits(x);
  if (f32_bits_is_nan(bits)) return bf16_nan_from_f32_bits(bits);
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

GAUGE_HD uint16_t f32_to_bf16_stochastic(float x, uint32_t word) {
  const uint32_t bits = f32_bits(x);
  if (f32_bits_is_nan(bits)) return bf16_nan_from_f32_bits(bits);
  const uint32_t up = (word >> 8) < ((bits & 0xFFFFu) << 8) ? 1u : 0u;
  return static_cast<uint16_t>((bits >> 16) + up);
}

// ---- Keying ---------------------------------------------------------------------------------------

// The Philox block holding the words of elements 4 q .. 4 q + 3 (q = index >> 2) at `step`.
GAUGE_HD rng::Philox4x32Counter sr_block(uint64_t seed, uint32_t tensor_id, uint64_t quad, uint64_t step) {
  // The reference's counter ((step << 34) | index) >> 2, for step < 2^30 and index < 2^34.
  return rng::draw_block(seed, tensor_id, rng::Stream::stochastic_rounding, (step << 32) | quad);
}

// The word of element `index` (same argument order as reference::precision::stochastic_rounding_word).
GAUGE_HD uint32_t sr_word(uint64_t seed, uint32_t tensor_id, uint64_t index, uint64_t step) {
  return rng::bits_at(seed, tensor_id, rng::Stream::stochastic_rounding, (step << 34) | index);
}

}  // namespace gauge::optimized::precision
