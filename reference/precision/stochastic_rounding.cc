// Reference stochastic rounding to bf16, written on real numbers (like casts.cc): |x| is measured in
// units of the bf16 quantum of its binade by an exact power-of-two scaling, the integer part is the
// truncated value and the rest is the fractional position, both exact in double. Bits are touched
// only to encode the result, a value already on the bf16 grid (the top half of its fp32 pattern), and
// for NaN, which goes through the reference RNE cast's payload rule.
#include "reference/precision/stochastic_rounding.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "harness/philox.h"
#include "reference/precision/casts.h"
#include "reference/precision/fp8.h"

namespace gauge::reference::precision {
namespace {

constexpr int kBf16MantissaBits = 7;
constexpr int kBf16MinNormalExponent = -126;  // bf16 has fp32's exponent range
constexpr uint64_t kIndexLimit = uint64_t{1} << 34;
constexpr uint64_t kStepLimit = uint64_t{1} << 30;  // (step << 34) | index must fit 64 bits

// r of the header: the top 24 bits of the word scaled by 2^-24, exact in double.
double uniform_from_word(uint32_t word) { return std::ldexp(static_cast<double>(word >> 8), -24); }

}  // namespace

uint32_t stochastic_rounding_word(uint64_t seed, uint32_t tensor_id, uint64_t index, uint64_t step) {
  if (index >= kIndexLimit) {
    throw std::out_of_range("stochastic rounding: element index " + std::to_string(index) + " is not below 2^34");
  }
  if (step >= kStepLimit) {
    throw std::out_of_range("stochastic rounding: step " + std::to_string(step) + " is not below 2^30");
  }
  return rng::bits_at(seed, tensor_id, rng::Stream::stochastic_rounding, (step << 34) | index);
}

uint16_t f64_to_bf16_stochastic(double x, uint32_t word) {
  // NaN has no value to round and Inf is on the grid: the RNE cast's encoding is the answer.
  if (std::isnan(x) || std::isinf(x)) return f32_to_bf16(static_cast<float>(x));
  const double magnitude = std::fabs(x);
  if (magnitude == 0.0) return f32_to_bf16(static_cast<float>(x));  // keeps the sign of zero

  // |x| = f * 2^e with f in [0.5, 1); below the smallest normal the quantum stops shrinking, so the
  // binade exponent is clamped there (bf16 subnormals are spaced like the lowest normal binade).
  int e = 0;
  std::frexp(magnitude, &e);
  const int binade = std::max(e - 1, kBf16MinNormalExponent);
  const int quantum_exponent = binade - kBf16MantissaBits;
  const double quanta = std::ldexp(magnitude, -quantum_exponent);  // |x| in bf16 ulps, exact
  const double truncated = std::floor(quanta);                      // lo, in ulps
  const double frac = quanta - truncated;                           // exact: both are close doubles
  const double chosen = truncated + (uniform_from_word(word) < frac ? 1.0 : 0.0);

  // On the bf16 grid now, so the float conversion is exact and its bits end in 16 zeros: the top half
  // is the bf16 pattern. One step past the largest finite bf16 is 2^128, beyond fp32's range: Inf.
  const double rounded = std::ldexp(chosen, quantum_exponent);
  const float on_grid = rounded > static_cast<double>(std::numeric_limits<float>::max())
                            ? std::numeric_limits<float>::infinity()
                            : static_cast<float>(rounded);
  const uint32_t bits = std::bit_cast<uint32_t>(x < 0.0 ? -on_grid : on_grid);
  if ((bits & 0xFFFFu) != 0) throw std::logic_error("stochastic rounding: a result off the bf16 grid");
  return static_cast<uint16_t>(bits >> 16);
}

namespace {

// |x| (finite, non-negative, not zero) rounded stochastically on the grid with `mantissa_bits` stored
// bits whose lowest normal binade is 2^min_exponent, continued without bound above: lo + 1 ulp with
// probability frac, exactly as for bf16 above. The result is on the grid, maybe beyond the format's
// largest finite value (the caller decides what overflow becomes).
double stochastic_magnitude(double magnitude, int mantissa_bits, int min_exponent, uint32_t word) {
  int e = 0;
  std::frexp(magnitude, &e);
  const int binade = std::max(e - 1, min_exponent);
  const int quantum_exponent = binade - mantissa_bits;
  const double quanta = std::ldexp(magnitude, -quantum_exponent);  // exact
  const double truncated = std::floor(quanta);
  const double frac = quanta - truncated;  // exact
  return std::ldexp(truncated + (uniform_from_word(word) < frac ? 1.0 : 0.0), quantum_exponent);
}

void check_sizes(const char* what, size_t in, size_t out) {
  if (in != out) {
    throw std::invalid_argument(std::string(what) + ": input has " + std::to_string(in) + " elements, output " +
                                std::to_string(out));
  }
}

}  // namespace

uint16_t f32_to_f16_stochastic(float x, uint32_t word) {
  // NaN (payload rule), Inf and zeros (on the grid, sign kept): the RNE cast's answer.
  if (std::isnan(x) || std::isinf(x) || x == 0.0f) return f32_to_f16(x);
  constexpr int kF16MantissaBits = 10;
  constexpr int kF16MinNormalExponent = -14;
  constexpr double kF16MaxFinite = 65504.0;
  const double chosen =
      stochastic_magnitude(std::fabs(static_cast<double>(x)), kF16MantissaBits, kF16MinNormalExponent, word);
  // Beyond 65504 the next grid value is 2^16: overflow, Inf. Otherwise the value is on the fp16 grid
  // and inside fp32, so the RNE cast encodes it without rounding.
  const float on_grid = chosen > kF16MaxFinite ? HUGE_VALF : static_cast<float>(chosen);
  return f32_to_f16(std::signbit(x) ? -on_grid : on_grid);
}

uint8_t f32_to_fp8_stochastic(float x, uint32_t word, gauge::precision::Fp8Format format,
                              gauge::precision::Fp8Overflow overflow) {
  if (std::isnan(x) || std::isinf(x) || x == 0.0f) return f32_to_fp8(x, format, overflow);
  const bool e4m3 = format == gauge::precision::Fp8Format::e4m3;
  const int mantissa_bits = e4m3 ? 3 : 2;
  const int min_exponent = e4m3 ? -6 : -14;
  const double chosen = stochastic_magnitude(std::fabs(static_cast<double>(x)), mantissa_bits, min_exponent, word);
  // Overflow is whatever the RNE cast makes of an infinite input in this mode (max, NaN or Inf);
  // an in-range grid value is encoded by the RNE cast exactly.
  const float on_grid = chosen > fp8_max_finite(format) ? HUGE_VALF : static_cast<float>(chosen);
  return f32_to_fp8(std::signbit(x) ? -on_grid : on_grid, format, overflow);
}

void stochastic_round_f32_to_f16(std::span<const float> in, std::span<uint16_t> out, uint64_t seed,
                                 uint32_t tensor_id, uint64_t step) {
  check_sizes("stochastic_round_f32_to_f16", in.size(), out.size());
  for (size_t i = 0; i < in.size(); ++i) {
    out[i] = f32_to_f16_stochastic(in[i], stochastic_rounding_word(seed, tensor_id, i, step));
  }
}

void stochastic_round_f32_to_fp8(std::span<const float> in, std::span<uint8_t> out, gauge::precision::Fp8Format format,
                                 gauge::precision::Fp8Overflow overflow, uint64_t seed, uint32_t tensor_id,
                                 uint64_t step) {
  check_sizes("stochastic_round_f32_to_fp8", in.size(), out.size());
  for (size_t i = 0; i < in.size(); ++i) {
    out[i] = f32_to_fp8_stochastic(in[i], stochastic_rounding_word(seed, tensor_id, i, step), format, overflow);
  }
}

uint16_t f32_to_bf16_stochastic(float x, uint32_t word) {
  if (std::isnan(x)) return f32_to_bf16(x);  // the payload rule works on the fp32 bits
  return f64_to_bf16_stochastic(static_cast<double>(x), word);  // every float is exactly a double
}

}  // namespace gauge::reference::precision
