// Reference fp32 <-> bf16 / fp16 conversions, written arithmetically on purpose.
//
// The optimized side uses the hardware cvt instructions; if the reference did the usual bit trick
// (add 0x7FFF + lsb, shift) the two could share a misunderstanding. Here rounding is done on real
// numbers instead: the input is scaled so that one unit in the last place of the narrow format is
// 1.0, rounded to an integer with std::nearbyint (ties to even), and scaled back. Every scaling is by
// a power of two inside double's range, hence exact, so the only rounding that happens is the one we
// ask for. Bits are touched only to encode the final fields and to carry NaN payloads (which have no
// numeric value to compute with).
#include "reference/precision/casts.h"
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

// 2^e, exactly (multiplying or dividing by 2 is exact while in range); for compile-time constants.
constexpr double pow2(int e) {
  double r = 1.0;
  for (; e > 0; --e) r *= 2.0;
  for (; e < 0; ++e) r /= 2.0;
  return r;
}

// An IEEE-style binary format with `mantissa_bits` stored fraction bits, `exponent_bits` exponent
// bits, bias 2^(exponent_bits-1) - 1, subnormals, and Inf/NaN at the all-ones exponent.
struct NarrowFormat {
  constexpr NarrowFormat(int exponent_bits_, int mantissa_bits_)
      : exponent_bits(exponent_bits_),
        mantissa_bits(mantissa_bits_),
        bias((1 << (exponent_bits - 1)) - 1),
        min_exponent(1 - bias),
        max_exponent(bias),
        min_normal(pow2(min_exponent)),
        max_finite((2.0 - pow2(-mantissa_bits)) * pow2(max_exponent)) {}

  int exponent_bits;
  int mantissa_bits;
  int bias;
  int min_exponent;   // exponent of the smallest normal
  int max_exponent;   // exponent of the largest finite binade
  double min_normal;  // 2^min_exponent
  double max_finite;  // (2 - 2^-m) * 2^max_exponent

  constexpr uint16_t exponent_all_ones() const {
    return static_cast<uint16_t>(((1u << exponent_bits) - 1u) << mantissa_bits);
  }
  constexpr uint16_t quiet_bit() const { return static_cast<uint16_t>(1u << (mantissa_bits - 1)); }
};

constexpr NarrowFormat kBf16{8, 7};  // same exponent range as fp32, 8 significant bits
constexpr NarrowFormat kF16{5, 10};  // IEEE binary16, 11 significant bits
static_assert(kF16.max_finite == 0x1.FFCp15 && kF16.min_normal == 0x1p-14);  // 65504, 2^-14
static_assert(kBf16.max_finite == 0x1.FEp127 && kBf16.min_normal == 0x1p-126);

constexpr int kF32MantissaBits = 23;
constexpr uint32_t kF32SignBit = 0x80000000u;
constexpr uint32_t kF32ExponentAllOnes = 0x7F800000u;
constexpr uint32_t kF32QuietBit = 0x00400000u;
constexpr uint32_t kF32MantissaMask = 0x007FFFFFu;


// fp32 -> narrow; the caller guarantees FE_TONEAREST.
uint16_t encode(float x, const NarrowFormat& f) {
  const uint16_t sign = std::signbit(x) ? uint16_t{0x8000} : uint16_t{0};

  if (std::isnan(x)) {
    // No value to round: keep the sign and the top payload bits, set the quiet bit (so a payload
    // whose kept bits are all zero cannot turn into Inf). Exactly the header's formula.
    const uint32_t mantissa = std::bit_cast<uint32_t>(x) & kF32MantissaMask;
    const auto kept = static_cast<uint16_t>(mantissa >> (kF32MantissaBits - f.mantissa_bits));
    return static_cast<uint16_t>(sign | f.exponent_all_ones() | f.quiet_bit() | kept);
  }
  if (std::isinf(x)) return static_cast<uint16_t>(sign | f.exponent_all_ones());

  // Every float is exactly a double, and double has room for all the scalings below.
  const double a = std::fabs(static_cast<double>(x));
  if (a == 0.0) return sign;

  // Binade of a: a = frac * 2^e with frac in [0.5, 1), so a is in [2^(e-1), 2^e).
  int e = 0;
  std::frexp(a, &e);
  // Below the smallest normal the spacing stops shrinking: subnormals share the quantum of the
  // lowest normal binade. Clamping the binade exponent does exactly that.
  const int binade = std::max(e - 1, f.min_exponent);
  // One ulp of the narrow format in this binade is 2^(binade - m). Dividing by it is a power-of-two
  // scaling, exact, and gives a counted in ulps; rounding that count to an integer is rounding a to
  // the nearest representable value. nearbyint breaks ties to the even integer, and an even count of
  // ulps is an even (zero) last mantissa bit, which is the IEEE tie rule. The count is below 2^(m+1),
  // far inside the range where doubles hold integers exactly.
  const int quantum_exponent = binade - f.mantissa_bits;
  const double ulps = std::nearbyint(std::ldexp(a, -quantum_exponent));
  const double rounded = std::ldexp(ulps, quantum_exponent);  // exact again

  // Rounding may carry into the next binade (even past the largest finite value: that is how values
  // at or beyond max + half an ulp, e.g. >= 65520 for fp16, become Inf; at exactly max + half ulp
  // the tie goes to the "even" neighbour 2^(emax+1), i.e. to Inf, as IEEE says).
  if (rounded > f.max_finite) return static_cast<uint16_t>(sign | f.exponent_all_ones());
  if (rounded == 0.0) return sign;  // underflow (|x| <= half the smallest subnormal): zero, x's sign

  // Encode the now exactly representable value from scratch, so the carry cases need no special
  // handling.
  uint32_t exponent_field = 0;
  double mantissa_field = 0;
  if (rounded < f.min_normal) {
    // Subnormal: value = mantissa * 2^(emin - m), exponent field 0.
    mantissa_field = std::ldexp(rounded, f.mantissa_bits - f.min_exponent);
  } else {
    int r_e = 0;
    std::frexp(rounded, &r_e);
    const int r_binade = r_e - 1;
    // Normal: value = (2^m + mantissa) * 2^(binade - m), exponent field binade + bias.
    exponent_field = static_cast<uint32_t>(r_binade + f.bias);
    mantissa_field = std::ldexp(rounded, f.mantissa_bits - r_binade) - std::ldexp(1.0, f.mantissa_bits);
  }
  const auto mantissa = static_cast<uint32_t>(mantissa_field);  // an exact small integer
  return static_cast<uint16_t>(sign | (exponent_field << f.mantissa_bits) | mantissa);
}

// narrow -> fp32, exact: every bf16 / fp16 value is an fp32 value.
float decode(uint16_t bits, const NarrowFormat& f) {
  const bool negative = (bits & 0x8000u) != 0;
  const uint32_t exponent_field = (bits >> f.mantissa_bits) & ((1u << f.exponent_bits) - 1u);
  const uint32_t mantissa = bits & ((1u << f.mantissa_bits) - 1u);
  const uint32_t exponent_max = (1u << f.exponent_bits) - 1u;

  if (exponent_field == exponent_max) {
    if (mantissa == 0) return negative ? -HUGE_VALF : HUGE_VALF;
    // NaN: keep sign and payload (placed at the top of fp32's mantissa), set the quiet bit. Built
    // from bits because a payload is not a number.
    const uint32_t out = (negative ? kF32SignBit : 0u) | kF32ExponentAllOnes | kF32QuietBit |
                         (mantissa << (kF32MantissaBits - f.mantissa_bits));
    return std::bit_cast<float>(out);
  }

  double magnitude = 0;
  if (exponent_field == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), f.min_exponent - f.mantissa_bits);
  } else {
    const int exponent = static_cast<int>(exponent_field) - f.bias;
    magnitude = std::ldexp(static_cast<double>((1u << f.mantissa_bits) | mantissa), exponent - f.mantissa_bits);
  }
  // Exact: at most 11 significant bits, exponent within fp32's range. -0.0 comes out of the negation.
  const auto value = static_cast<float>(magnitude);
  return negative ? -value : value;
}

void check_sizes(const char* what, size_t in, size_t out) {
  if (in != out) {
    throw std::invalid_argument(std::string(what) + ": input has " + std::to_string(in) + " elements, output " +
                                std::to_string(out));
  }
}

}  // namespace

uint16_t f32_to_bf16(float x) {
  const RoundToNearestScope nearest("reference casts");
  return encode(x, kBf16);
}

uint16_t f32_to_f16(float x) {
  const RoundToNearestScope nearest("reference casts");
  return encode(x, kF16);
}

float bf16_to_f32(uint16_t bits) { return decode(bits, kBf16); }
float f16_to_f32(uint16_t bits) { return decode(bits, kF16); }

void cast_f32_to_bf16(std::span<const float> in, std::span<uint16_t> out) {
  check_sizes("cast_f32_to_bf16", in.size(), out.size());
  const RoundToNearestScope nearest("reference casts");
  for (size_t i = 0; i < in.size(); ++i) out[i] = encode(in[i], kBf16);
}

void cast_f32_to_f16(std::span<const float> in, std::span<uint16_t> out) {
  check_sizes("cast_f32_to_f16", in.size(), out.size());
  const RoundToNearestScope nearest("reference casts");
  for (size_t i = 0; i < in.size(); ++i) out[i] = encode(in[i], kF16);
}

void cast_bf16_to_f32(std::span<const uint16_t> in, std::span<float> out) {
  check_sizes("cast_bf16_to_f32", in.size(), out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = decode(in[i], kBf16);
}

void cast_f16_to_f32(std::span<const uint16_t> in, std::span<float> out) {
  check_sizes("cast_f16_to_f32", in.size(), out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = decode(in[i], kF16);
}

}  // namespace gauge::reference::precision
