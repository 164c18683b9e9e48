// Reference fp8 and tf32 conversions, written on real numbers like reference/precision/casts.cc: the
// magnitude is scaled by a power of two (exact) so that one ulp of the target format in its binade is
// 1.0, rounded to an integer with std::nearbyint under FE_TONEAREST (ties to even), and scaled back.
// Bits are touched only to encode the final fields and to carry NaN payloads. None of the optimized
// side's bit arithmetic is used (or copied) here.
#include "reference/precision/fp8.h"
#include "reference/precision/rounding_mode.h"

#include <algorithm>
#include <bit>
#include <cfenv>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace gauge::reference::precision {
namespace {

constexpr double pow2(int e) {
  double r = 1.0;
  for (; e > 0; --e) r *= 2.0;
  for (; e < 0; ++e) r /= 2.0;
  return r;
}

// The finite part of a small binary format: stored mantissa bits, the exponent of its smallest
// normal binade and of its largest finite binade, and its largest finite value (which for e4m3 is one
// ulp below the top of the binade, the top pattern being NaN).
struct Grid {
  int mantissa_bits;
  int bias;
  int min_exponent;
  double max_finite;
  double min_normal() const { return std::ldexp(1.0, min_exponent); }
};

constexpr Grid kE4m3{3, 7, -6, 448.0};
constexpr Grid kE5m2{2, 15, -14, 57344.0};
constexpr Grid kTf32{10, 127, -126, (2.0 - pow2(-10)) * pow2(127)};
static_assert(kE4m3.max_finite == 1.75 * pow2(8));   // S.1111.110
static_assert(kE5m2.max_finite == 1.75 * pow2(15));  // S.11110.11

const Grid& grid_of(Fp8Format format) { return format == Fp8Format::e4m3 ? kE4m3 : kE5m2; }

constexpr uint32_t kF32QuietBit = 0x00400000u;


// |x| rounded to the nearest value of `g`'s grid, ties to even, with the grid continued past the
// largest finite value at the same spacing (so the caller sees overflow as "rounded > max_finite").
// Requires a finite, non-negative a and FE_TONEAREST.
double round_to_grid(double a, const Grid& g) {
  if (a == 0.0) return 0.0;
  int e = 0;
  std::frexp(a, &e);                                 // a in [2^(e-1), 2^e)
  const int binade = std::max(e - 1, g.min_exponent);  // subnormals share the lowest normal quantum
  const int quantum_exponent = binade - g.mantissa_bits;
  // a counted in ulps (an exact power-of-two scaling), rounded to an integer count: an even count is
  // an even last mantissa bit, so nearbyint's ties-to-even is the format's.
  return std::ldexp(std::nearbyint(std::ldexp(a, -quantum_exponent)), quantum_exponent);
}

// Sign bit plus exponent and mantissa fields of an exactly representable finite magnitude.
uint32_t encode_fields(double rounded, const Grid& g) {
  if (rounded == 0.0) return 0;
  if (rounded < g.min_normal()) {
    // Subnormal: value = mantissa * 2^(min_exponent - m), exponent field 0.
    return static_cast<uint32_t>(std::ldexp(rounded, g.mantissa_bits - g.min_exponent));
  }
  int e = 0;
  std::frexp(rounded, &e);
  const int binade = e - 1;
  const double mantissa = std::ldexp(rounded, g.mantissa_bits - binade) - std::ldexp(1.0, g.mantissa_bits);
  return (static_cast<uint32_t>(binade + g.bias) << g.mantissa_bits) | static_cast<uint32_t>(mantissa);
}

uint8_t overflow_code(Fp8Format format, Fp8Overflow overflow) {
  if (overflow == Fp8Overflow::saturate) return format == Fp8Format::e4m3 ? uint8_t{0x7E} : uint8_t{0x7B};
  return format == Fp8Format::e4m3 ? uint8_t{0x7F} : uint8_t{0x7C};  // NaN (no Inf in e4m3) / Inf
}

uint8_t encode_fp8(float x, Fp8Format format, Fp8Overflow overflow) {
  const uint8_t sign = std::signbit(x) ? uint8_t{0x80} : uint8_t{0};
  if (std::isnan(x)) {
    if (format == Fp8Format::e4m3) return static_cast<uint8_t>(sign | 0x7Fu);
    const uint32_t payload_top = (std::bit_cast<uint32_t>(x) >> 21) & 1u;  // the payload bit below quiet
    return static_cast<uint8_t>(sign | 0x7Cu | 0x02u | payload_top);
  }
  if (std::isinf(x)) return static_cast<uint8_t>(sign | overflow_code(format, overflow));
  const Grid& g = grid_of(format);
  const double rounded = round_to_grid(std::fabs(static_cast<double>(x)), g);
  if (rounded > g.max_finite) return static_cast<uint8_t>(sign | overflow_code(format, overflow));
  return static_cast<uint8_t>(sign | encode_fields(rounded, g));
}

float decode_fp8(uint8_t bits, Fp8Format format) {
  const Grid& g = grid_of(format);
  const bool negative = (bits & 0x80u) != 0;
  const uint32_t exponent_field = (bits & 0x7Fu) >> g.mantissa_bits;
  const uint32_t mantissa = bits & ((1u << g.mantissa_bits) - 1u);
  const uint32_t sign32 = negative ? 0x80000000u : 0u;
  if (format == Fp8Format::e4m3 && (bits & 0x7Fu) == 0x7Fu) {
    return std::bit_cast<float>(sign32 | 0x7F800000u | kF32QuietBit | (mantissa << 20));
  }
  if (format == Fp8Format::e5m2 && exponent_field == 31) {
    if (mantissa == 0) return negative ? -HUGE_VALF : HUGE_VALF;
    return std::bit_cast<float>(sign32 | 0x7F800000u | kF32QuietBit | (mantissa << 21));
  }
  double magnitude = 0;
  if (exponent_field == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), g.min_exponent - g.mantissa_bits);
  } else {
    const int exponent = static_cast<int>(exponent_field) - g.bias;
    magnitude = std::ldexp(static_cast<double>((1u << g.mantissa_bits) | mantissa), exponent - g.mantissa_bits);
  }
  const auto value = static_cast<float>(magnitude);  // exact: 4 significant bits at most
  return negative ? -value : value;
}

float round_tf32(float x) {
  if (std::isnan(x)) return std::bit_cast<float>((std::bit_cast<uint32_t>(x) & 0xFFFFE000u) | kF32QuietBit);
  if (std::isinf(x)) return x;
  const double rounded = round_to_grid(std::fabs(static_cast<double>(x)), kTf32);
  // Past the largest tf32 the next grid value is 2^128: IEEE overflow, Inf.
  const float magnitude = rounded > kTf32.max_finite ? HUGE_VALF : static_cast<float>(rounded);  // exact
  return std::signbit(x) ? -magnitude : magnitude;
}

void check_sizes(const char* what, size_t in, size_t out) {
  if (in != out) {
    throw std::invalid_argument(std::string(what) + ": input has " + std::to_string(in) + " elements, output " +
                                std::to_string(out));
  }
}

}  // namespace

double fp8_max_finite(Fp8Format format) { return grid_of(format).max_finite; }

uint8_t f32_to_fp8(float x, Fp8Format format, Fp8Overflow overflow) {
  const RoundToNearestScope nearest("reference fp8 casts");
  return encode_fp8(x, format, overflow);
}

float fp8_to_f32(uint8_t bits, Fp8Format format) { return decode_fp8(bits, format); }

float f32_to_tf32(float x) {
  const RoundToNearestScope nearest("reference fp8 casts");
  return round_tf32(x);
}

void cast_f32_to_fp8(std::span<const float> in, std::span<uint8_t> out, Fp8Format format, Fp8Overflow overflow) {
  check_sizes("cast_f32_to_fp8", in.size(), out.size());
  const RoundToNearestScope nearest("reference fp8 casts");
  for (size_t i = 0; i < in.size(); ++i) out[i] = encode_fp8(in[i], format, overflow);
}

void cast_fp8_to_f32(std::span<const uint8_t> in, std::span<float> out, Fp8Format format) {
  check_sizes("cast_fp8_to_f32", in.size(), out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = decode_fp8(in[i], format);
}

void cast_f32_to_tf32(std::span<const float> in, std::span<float> out) {
  check_sizes("cast_f32_to_tf32", in.size(), out.size());
  const RoundToNearestScope nearest("reference fp8 casts");
  for (size_t i = 0; i < in.size(); ++i) out[i] = round_tf32(in[i]);
}

}  // namespace gauge::reference::precision
