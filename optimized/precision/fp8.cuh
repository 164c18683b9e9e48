// fp8 (OCP E4M3 "fn" / E5M2) and tf32 conversions for the optimized side, in integer arithmetic on the
// fp32 bit pattern, bit-identical to reference/precision/fp8.h (round to nearest even, subnormals
// kept, saturating or non-saturating overflow, the reference's NaN rules), plus stochastic rounding to
// fp8 and fp16 bit-identical to reference/precision/stochastic_rounding.h (bf16's is in
// stochastic_rounding.cuh, used by the optimizer; the Philox keying helpers sr_word / sr_block there
// serve every format).
//
// Everything is GAUGE_HD: the CPU tests compare these very functions with the reference on every
// machine (exhaustively over the fp8 codes, over millions of structured fp32 inputs), and the kernels
// (fp8_casts.cu, stochastic_round.cu, scaled_cast.cu) call the same source.
//
// Why not cuda_fp8.h's __nv_cvt_float2_to_fp8x2: on sm_90 it is the cvt.rn.satfinite.e4m3x2.f32
// instruction (f32 -> f8 has no non-saturating form in PTX), on sm_80 a software path; either way its
// NaN result is one canonical pattern and non-saturating mode is software. The integer rounding below
// is ~15 ALU operations per element and has one definition for both architectures that a CPU test
// can verify; at the HBM rate of a 5-byte/element cast (H100: ~670 G elements/s) that is ~70% of the
// SMs' integer issue rate, so the casts stay memory bound (see the napkin math in fp8_casts.cu).
//
// tf32: the cvt.rna.tf32.f32 instruction rounds ties AWAY from zero; gauge's tf32 is ties-to-even
// (like cuBLAS's internal fp32 -> tf32 conversion for the math mode), so it is done in integers here:
//     tf32 = (b + 0x0FFF + ((b >> 13) & 1)) & 0xFFFFE000
// (adding just under half an ulp plus the kept lsb rounds to nearest, ties to even; the carry walks
// into the exponent, and past the largest tf32 into Inf), NaN -> (b & 0xFFFFE000) | 0x00400000.
#pragma once

#include <cstdint>

#include "optimized/precision/stochastic_rounding.cuh"
#include "reference/precision/fp8_format.h"

namespace gauge::optimized::precision {

using gauge::precision::Fp8Format;
using gauge::precision::Fp8Overflow;

// The facts of one fp8 format as the bit code needs them.
template <Fp8Format F>
struct Fp8Traits;

template <>
struct Fp8Traits<Fp8Format::e4m3> {
  static constexpr int kMantissaBits = 3;
  static constexpr int kBias = 7;
  static constexpr uint32_t kMaxCode = 0x7E;          // 448 = 1.75 * 2^8
  static constexpr uint32_t kOverflowNoSat = 0x7F;    // NaN: e4m3 has no Inf
  static constexpr float kSubnormalQuantum = 0x1p-9f;  // 2^(1 - bias - mantissa bits)
  static constexpr float kMaxFinite = 448.0f;
};

template <>
struct Fp8Traits<Fp8Format::e5m2> {
  static constexpr int kMantissaBits = 2;
  static constexpr int kBias = 15;
  static constexpr uint32_t kMaxCode = 0x7B;  // 57344 = 1.75 * 2^15
  static constexpr uint32_t kOverflowNoSat = 0x7C;  // Inf
  static constexpr float kSubnormalQuantum = 0x1p-16f;
  static constexpr float kMaxFinite = 57344.0f;
};

// The fp32 pattern of the smallest normal of a format with `bias` (exponent field 1): every fp32
// magnitude at or above it keeps a normal exponent in the narrow format (or overflows).
GAUGE_HD constexpr uint32_t f32_bits_of_min_normal(int bias) { return static_cast<uint32_t>(127 + 1 - bias) << 23; }

// Round-to-nearest-even of the magnitude pattern `a` (fp32 bits without the sign, finite or Inf) to a
// format with M stored mantissa bits and `bias`, as the magnitude code of that format; a code beyond
// the largest finite one means overflow (the caller maps it). Inf gives a huge code.
template <int M, int Bias>
GAUGE_HD uint32_t rne_magnitude_code(uint32_t a) {
  if (a >= f32_bits_of_min_normal(Bias)) {
    // Normal: drop 23 - M mantissa bits; adding (half ulp - 1) + lsb and truncating rounds to nearest,
    // ties to even, and a carry moves into the exponent. Re-biasing the exponent field is a subtraction.
    constexpr int kDrop = 23 - M;
    const uint32_t rounded = a + ((1u << (kDrop - 1)) - 1u) + ((a >> kDrop) & 1u);
    return (rounded >> kDrop) - (static_cast<uint32_t>(127 - Bias) << M);
  }
  // Subnormal (or zero) in the narrow format: the significand (implicit bit made explicit) shifted
  // right so that one unit is the subnormal quantum 2^(1 - bias - M), rounded to nearest even. A
  // rounded-up largest subnormal becomes the smallest normal code by itself.
  const uint32_t exponent_field = a >> 23;
  const uint32_t significand = exponent_field != 0 ? ((a & 0x007FFFFFu) | 0x00800000u) : a;
  const int shift = (1 - Bias - M) - (static_cast<int>(exponent_field != 0 ? exponent_field : 1u) - 150);
  if (shift > 24) return 0;  // below half the smallest subnormal (the significand is < 2^24)
  return (significand + ((1u << (shift - 1)) - 1u) + ((significand >> shift) & 1u)) >> shift;
}

// The reference's NaN rule: e4m3 -> sign | 0x7F; e5m2 -> sign | 0x7E | fp32 mantissa bit 21.
template <Fp8Format F>
GAUGE_HD uint8_t fp8_nan_from_f32_bits(uint32_t bits) {
  const uint32_t sign = (bits >> 24) & 0x80u;
  if constexpr (F == Fp8Format::e4m3) {
    return static_cast<uint8_t>(sign | 0x7Fu);
  } else {
    return static_cast<uint8_t>(sign | 0x7Eu | ((bits >> 21) & 1u));
  }
}

template <Fp8Format F>
GAUGE_HD uint8_t fp8_from_magnitude_code(uint32_t bits, uint32_t code, bool saturate) {
  using T = Fp8Traits<F>;
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t overflow = saturate ? T::kMaxCode : T::kOverflowNoSat;
  return static_cast<uint8_t>(sign | (code > T::kMaxCode ? overflow : code));
}

template <Fp8Format F>
GAUGE_HD uint8_t f32_to_fp8_rne(float x, bool saturate) {
  using T = Fp8Traits<F>;
  const uint32_t bits = f32_bits(x);
  if (f32_bits_is_nan(bits)) return fp8_nan_from_f32_bits<F>(bits);
  return fp8_from_magnitude_code<F>(bits, rne_magnitude_code<T::kMantissaBits, T::kBias>(bits & 0x7FFFFFFFu),
                                    saturate);
}

// fp8 -> fp32, exact. NaN keeps its sign and payload (at the top of fp32's mantissa), quiet bit set.
template <Fp8Format F>
GAUGE_HD float fp8_to_f32(uint8_t code) {
  using T = Fp8Traits<F>;
  constexpr int M = T::kMantissaBits;
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t magnitude = code & 0x7Fu;
  if constexpr (F == Fp8Format::e4m3) {
    if (magnitude == 0x7Fu) return f32_from_bits(sign | 0x7FF00000u);
  } else {
    if (magnitude >= 0x7Cu) {
      const uint32_t payload = magnitude & 0x3u;
      return f32_from_bits(sign | 0x7F800000u | (payload != 0 ? (0x00400000u | (payload << 21)) : 0u));
    }
  }
  const uint32_t exponent_field = magnitude >> M;
  if (exponent_field != 0) {
    return f32_from_bits(sign | ((exponent_field + 127u - T::kBias) << 23) | ((magnitude & ((1u << M) - 1u)) << (23 - M)));
  }
  // Subnormal: mantissa * quantum, an exact product (a small integer times a power of two).
  const float value = static_cast<float>(magnitude) * T::kSubnormalQuantum;
  return f32_from_bits(sign | f32_bits(value));
}

GAUGE_HD uint8_t f32_to_fp8_rne(float x, Fp8Format format, bool saturate) {
  return format == Fp8Format::e4m3 ? f32_to_fp8_rne<Fp8Format::e4m3>(x, saturate)
                                   : f32_to_fp8_rne<Fp8Format::e5m2>(x, saturate);
}
GAUGE_HD float fp8_to_f32(uint8_t code, Fp8Format format) {
  return format == Fp8Format::e4m3 ? fp8_to_f32<Fp8Format::e4m3>(code) : fp8_to_f32<Fp8Format::e5m2>(code);
}

GAUGE_HD float f32_to_tf32_rne(float x) {
  const uint32_t bits = f32_bits(x);
  if (f32_bits_is_nan(bits)) return f32_from_bits((bits & 0xFFFFE000u) | 0x00400000u);
  return f32_from_bits((bits + 0x0FFFu + ((bits >> 13) & 1u)) & 0xFFFFE000u);
}

// ---- Stochastic rounding ---------------------------------------------------------------------------

// The magnitude code of |x| (pattern `a`, finite or Inf) stochastically rounded with `word` on the grid
// of a format with M mantissa bits and `bias`, continued past its largest value (overflow is the
// caller's): truncate, then add one unit when (word >> 8) < frac * 2^24, frac being the dropped part
// as a fraction of the unit. frac * 2^24 is an integer when at most 24 bits are dropped; below that
// (tiny subnormal inputs) r < frac <=> r < ceil(frac * 2^24) for the integer r.
template <int M, int Bias>
GAUGE_HD uint32_t stochastic_magnitude_code(uint32_t a, uint32_t word) {
  const uint32_t r = word >> 8;
  if (a >= f32_bits_of_min_normal(Bias)) {
    constexpr int kDrop = 23 - M;
    const uint32_t dropped = a & ((1u << kDrop) - 1u);
    const uint32_t up = r < (dropped << (24 - kDrop)) ? 1u : 0u;
    return (a >> kDrop) - (static_cast<uint32_t>(127 - Bias) << M) + up;
  }
  const uint32_t exponent_field = a >> 23;
  const uint32_t significand = exponent_field != 0 ? ((a & 0x007FFFFFu) | 0x00800000u) : a;
  const int shift = (1 - Bias - M) - (static_cast<int>(exponent_field != 0 ? exponent_field : 1u) - 150);
  if (shift <= 24) {
    const uint32_t dropped = significand & ((1u << shift) - 1u);
    return (significand >> shift) + (r < (dropped << (24 - shift)) ? 1u : 0u);
  }
  // Everything is dropped: frac * 2^24 = significand / 2^extra, at most one unit up.
  const int extra = shift - 24;
  const uint32_t threshold =
      extra >= 25 ? (significand != 0 ? 1u : 0u) : (significand + ((1u << extra) - 1u)) >> extra;
  return r < threshold ? 1u : 0u;
}

template <Fp8Format F>
GAUGE_HD uint8_t f32_to_fp8_stochastic(float x, uint32_t word, bool saturate) {
  using T = Fp8Traits<F>;
  const uint32_t bits = f32_bits(x);
  if (f32_bits_is_nan(bits)) return fp8_nan_from_f32_bits<F>(bits);
  return fp8_from_magnitude_code<F>(
      bits, stochastic_magnitude_code<T::kMantissaBits, T::kBias>(bits & 0x7FFFFFFFu, word), saturate);
}

GAUGE_HD uint8_t f32_to_fp8_stochastic(float x, uint32_t word, Fp8Format format, bool saturate) {
  return format == Fp8Format::e4m3 ? f32_to_fp8_stochastic<Fp8Format::e4m3>(x, word, saturate)
                                   : f32_to_fp8_stochastic<Fp8Format::e5m2>(x, word, saturate);
}

// fp16 (IEEE binary16): the same grid code with M = 10, bias 15; one step past 65504 is Inf.
GAUGE_HD uint16_t f16_nan_from_f32_bits(uint32_t bits) {
  return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7E00u | ((bits >> 13) & 0x03FFu));
}

GAUGE_HD uint16_t f32_to_f16_stochastic(float x, uint32_t word) {
  const uint32_t bits = f32_bits(x);
  if (f32_bits_is_nan(bits)) return f16_nan_from_f32_bits(bits);
  const uint32_t code = stochastic_magnitude_code<10, 15>(bits & 0x7FFFFFFFu, word);
  return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | (code > 0x7BFFu ? 0x7C00u : code));
}

}  // namespace gauge::optimized::precision
