// Reference fp32 <-> fp8 (OCP E4M3 "fn", E5M2) conversions and fp32 -> tf32 rounding: the definition
// of correct for gauge. The optimized side must reproduce them bit for bit.
//
// fp32 -> fp8 (both formats, both overflow modes; formats in reference/precision/fp8_format.h):
// - Finite x: round to nearest, ties to even, on the fp8 grid extended past its largest binade with
//   the same spacing; subnormal results are produced (no flush to zero); a result that underflows is
//   a zero with x's sign.
// - Overflow: when the rounded magnitude exceeds the largest finite value (e4m3: 448, i.e. |x| > 464
//   = 448 + half an ulp; |x| == 464 is a tie that goes to the even 448. e5m2: 57344, i.e.
//   |x| >= 61440, where the tie at exactly 61440 goes to the "even" 2^16, i.e. overflows):
//     saturate:       +-max finite.        non_saturating: e4m3 -> S.1111.111 (NaN), e5m2 -> +-Inf.
// - +-Inf: saturate -> +-max finite (like __NV_SATFINITE); non_saturating: e4m3 -> S.1111.111 (NaN,
//   the format has no Inf), e5m2 -> +-Inf.
// - NaN (any payload): e4m3 -> sign | 0x7F (its only NaN). e5m2 -> quiet NaN keeping the sign and the
//   top payload bit: sign | 0x7C | 0x02 | (fp32 mantissa bit 21), i.e. 0x7E or 0x7F with the sign;
//   the same rule as the bf16 / fp16 casts of reference/precision/casts.h (top payload bits kept,
//   quiet bit set), so a NaN never becomes Inf.
// fp8 -> fp32: exact (every fp8 value is an fp32 value); -0 stays -0; e5m2 +-Inf -> +-Inf. A NaN
//   keeps its sign and its payload at the top of fp32's mantissa, with the quiet bit set:
//   e4m3 S.1111.111 -> sign | 0x7FF00000; e5m2 S.11111.mm -> sign | 0x7F800000 | 0x00400000 | mm << 21.
//
// fp32 -> tf32 (10 stored mantissa bits, fp32's exponent range), stored as fp32 bits whose low 13
// bits are zero: round to nearest, ties to EVEN (not the ties-away of the cvt.rna.tf32.f32
// instruction); fp32 subnormals round on the tf32 grid (spacing 2^-136); values at or beyond the
// largest tf32 (0x7F7FE000) + half an ulp become +-Inf; +-0, +-Inf unchanged. NaN: sign and the top
// 10 payload bits kept, quiet bit set: (bits & 0xFFFFE000) | 0x00400000.
//
// fp8 values travel as their raw bits in uint8_t; tf32 values as fp32.
#pragma once

#include <cstdint>
#include <span>

#include "reference/precision/fp8_format.h"

namespace gauge::reference::precision {

using gauge::precision::Fp8Format;
using gauge::precision::Fp8Overflow;

// Largest finite value: 448 (e4m3), 57344 (e5m2).
double fp8_max_finite(Fp8Format format);

uint8_t f32_to_fp8(float x, Fp8Format format, Fp8Overflow overflow);
float fp8_to_f32(uint8_t bits, Fp8Format format);
float f32_to_tf32(float x);

// Elementwise over spans of equal length (std::invalid_argument otherwise).
void cast_f32_to_fp8(std::span<const float> in, std::span<uint8_t> out, Fp8Format format, Fp8Overflow overflow);
void cast_fp8_to_f32(std::span<const uint8_t> in, std::span<float> out, Fp8Format format);
void cast_f32_to_tf32(std::span<const float> in, std::span<float> out);

}  // namespace gauge::reference::precision
