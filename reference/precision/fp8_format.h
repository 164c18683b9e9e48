// Plain configuration shared by the reference and optimized fp8 code: which fp8 format, what an
// out-of-range value becomes, and how delayed scaling reads its amax history. No arithmetic lives
// here (each side has its own conversion code); only names that both sides and the cases agree on.
#pragma once

#include <cstdint>

namespace gauge::precision {

// OCP 8-bit floating point (OFP8, v1.0).
//   e4m3: the "fn" variant: 1 sign, 4 exponent (bias 7), 3 mantissa bits; max 448 (S.1111.110);
//         no Inf; the only NaNs are S.1111.111; min normal 2^-6, min subnormal 2^-9.
//   e5m2: 1 sign, 5 exponent (bias 15), 2 mantissa bits; max 57344 (S.11110.11); Inf S.11111.00;
//         NaN S.11111.{01,10,11}; min normal 2^-14, min subnormal 2^-16.
enum class Fp8Format : uint8_t { e4m3, e5m2 };

// What a finite value beyond the largest finite fp8 value (after rounding), or an Inf, becomes.
//   saturate:       +-max finite (448 / 57344), Inf included, like CUDA's __NV_SATFINITE.
//   non_saturating: e4m3 (no Inf) -> NaN with the input's sign (S.1111.111), as PyTorch's
//                   float8_e4m3fn cast and CUDA's __NV_NOSAT do; e5m2 -> +-Inf (IEEE overflow).
enum class Fp8Overflow : uint8_t { saturate, non_saturating };

// Delayed scaling: which amax of the history window sets the scale.
//   max:         the largest amax in the window (Transformer Engine's default "max").
//   most_recent: the newest entry (history[0]).
enum class AmaxAlgorithm : uint8_t { max, most_recent };

inline constexpr const char* fp8_format_name(Fp8Format f) { return f == Fp8Format::e4m3 ? "e4m3" : "e5m2"; }
inline constexpr const char* fp8_overflow_name(Fp8Overflow o) {
  return o == Fp8Overflow::saturate ? "saturate" : "non_saturating";
}
inline constexpr const char* amax_algorithm_name(AmaxAlgorithm a) {
  return a == AmaxAlgorithm::max ? "max" : "most_recent";
}

}  // namespace gauge::precision
