// The scalar part of per-tensor fp8 scaling for the optimized side, GAUGE_HD so that a CPU test can
// compare it with reference/precision/scaling.h, and the kernels (scaled_cast.cu) call the same source.
//
// amax is reduced as the maximum of |x| bit patterns (sign cleared) compared as unsigned integers:
// for non-negative floats the integer order is the numeric order, and every NaN pattern is above
// +Inf, so a NaN anywhere wins and is then reported as the canonical quiet NaN 0x7FC00000, as the
// reference does. A maximum is exact and order-independent: the reduction is deterministic whatever
// the grid.
//
// scale = fl32(fl32(fp8_max / amax) * 2^-margin), the quotient clamped to FLT_MAX when it overflows,
// the scale raised to FLT_MIN when it underflows below it (reference/precision/scaling.h says why);
// amax == 0 -> 1. The reference refuses (UsageError) a NaN or Inf amax; a kernel cannot throw, so here
// such an amax gives scale = NaN (and scale_inv = NaN, and NaN fp8 codes), which the caller sees in
// the amax / scale outputs.
#pragma once

#include <cstdint>

#include "optimized/precision/stochastic_rounding.cuh"

namespace gauge::optimized::precision {

inline constexpr uint32_t kCanonicalNanBits = 0x7FC00000u;
inline constexpr uint32_t kF32InfBits = 0x7F800000u;
inline constexpr float kF32Max = 0x1.FFFFFEp127f;
inline constexpr float kF32MinNormal = 0x1p-126f;

GAUGE_HD uint32_t magnitude_bits(float x) { return f32_bits(x) & 0x7FFFFFFFu; }

GAUGE_HD float amax_from_magnitude_bits(uint32_t largest) {
  return f32_from_bits(largest > kF32InfBits ? kCanonicalNanBits : largest);
}

GAUGE_HD float divide_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;  // IEEE division, correctly rounded (SSE on x86-64, the FPU elsewhere)
#endif
}

GAUGE_HD float multiply_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);  // never contracted into an FMA
#else
  return a * b;
#endif
}

// margin_factor = 2^-margin, exact (the host computes it from a validated margin).
GAUGE_HD float scale_from_amax(float amax, float fp8_max, float margin_factor) {
  if (amax == 0.0f) return 1.0f;
  if (!(magnitude_bits(amax) < kF32InfBits)) return f32_from_bits(kCanonicalNanBits);  // NaN or Inf
  float quotient = divide_rn(fp8_max, amax);
  if (magnitude_bits(quotient) == kF32InfBits) quotient = kF32Max;
  const float scale = multiply_rn(quotient, margin_factor);
  return scale < kF32MinNormal ? kF32MinNormal : scale;
}

GAUGE_HD float scale_inverse(float scale) { return divide_rn(1.0f, scale); }

// x * scale in fp32; a NaN element is passed through unchanged (its sign and payload then follow the
// fp8 cast's NaN rule), as the reference defines.
GAUGE_HD float apply_scale(float x, float scale) {
  return (magnitude_bits(x) > kF32InfBits) ? x : multiply_rn(x, scale);
}

}  // namespace gauge::optimized::precision
