// Stochastic rounding to bf16 (reference/precision/stochastic_rounding.h), checked against the
// header's integer form on fp32 bits (which the reference, working on real numbers, does not use),
// the exact round-up threshold, unbiasedness, the special values, and the Philox word it is keyed by.
#include "reference/precision/stochastic_rounding.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "harness/philox.h"
#include "reference/precision/casts.h"

namespace gauge::reference::precision {
namespace {

uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
float float_of(uint32_t b) { return std::bit_cast<float>(b); }

// The header's integer rule for an fp32 input, written out literally.
uint16_t integer_rule(uint32_t b, uint32_t word) {
  if (std::isnan(float_of(b))) return static_cast<uint16_t>((b >> 16) | 0x0040u);
  const bool up = (word >> 8) < ((b & 0xFFFFu) << 8);
  return static_cast<uint16_t>((b >> 16) + (up ? 1u : 0u));
}

// splitmix64: test inputs of its own.
uint64_t mix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

TEST(StochasticRounding, MatchesTheIntegerRuleOnRandomBitPatterns) {
  uint64_t state = 42;
  int mismatches = 0;
  for (int i = 0; i < 2'000'000; ++i) {
    const uint64_t r = mix(state);
    const auto b = static_cast<uint32_t>(r);
    const auto word = static_cast<uint32_t>(r >> 32);
    const uint16_t expected = integer_rule(b, word);
    const uint16_t actual = f32_to_bf16_stochastic(float_of(b), word);
    if (expected != actual && ++mismatches <= 10) {
      ADD_FAILURE() << std::hex << "x bits 0x" << b << " word 0x" << word << ": expected 0x" << expected << ", got 0x"
                    << actual;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(StochasticRounding, RoundsUpExactlyBelowTheFractionalThreshold) {
  // For fp32 x, |x| rounds away from zero iff (word >> 8) < frac * 2^24 = (bits & 0xFFFF) << 8: the
  // count of the 2^24 values of word >> 8 that round up is the fraction, exactly.
  for (uint32_t low : {1u, 0x0001u, 0x00FFu, 0x4000u, 0x8000u, 0xC001u, 0xFFFFu}) {
    for (uint32_t high : {0x3F80u, 0xBF80u, 0x0001u, 0x7F7Fu, 0x0080u}) {
      const uint32_t b = (high << 16) | low;
      const uint32_t threshold = low << 8;
      SCOPED_TRACE("x bits " + std::to_string(b));
      EXPECT_EQ(f32_to_bf16_stochastic(float_of(b), (threshold - 1) << 8), high + 1);  // last value rounding up
      EXPECT_EQ(f32_to_bf16_stochastic(float_of(b), threshold << 8), high);            // first value not
      EXPECT_EQ(f32_to_bf16_stochastic(float_of(b), 0u), high + 1);
      EXPECT_EQ(f32_to_bf16_stochastic(float_of(b), 0xFFFFFFFFu), high);
    }
  }
}

TEST(StochasticRounding, EveryBf16ValueComesBackExactly) {
  uint64_t state = 7;
  for (uint32_t pattern = 0; pattern < 0x10000u; ++pattern) {
    const float x = bf16_to_f32(static_cast<uint16_t>(pattern));
    const auto word = static_cast<uint32_t>(mix(state));
    const uint16_t rounded = f32_to_bf16_stochastic(x, word);
    if (std::isnan(x)) {
      EXPECT_EQ(rounded, f32_to_bf16(x));
    } else {
      ASSERT_EQ(rounded, pattern) << "pattern " << pattern << " word " << word;
    }
  }
}

TEST(StochasticRounding, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f32_to_bf16_stochastic(inf, 0), 0x7F80);
  EXPECT_EQ(f32_to_bf16_stochastic(-inf, 0), 0xFF80);
  EXPECT_EQ(f32_to_bf16_stochastic(0.0f, 0), 0x0000);
  EXPECT_EQ(f32_to_bf16_stochastic(-0.0f, 0), 0x8000);
  EXPECT_EQ(f32_to_bf16_stochastic(float_of(0x7FA01234u), 0), 0x7FE0);  // signalling NaN: quieted, payload kept
  EXPECT_EQ(f64_to_bf16_stochastic(std::numeric_limits<double>::quiet_NaN(), 0) & 0x7FC0, 0x7FC0);
  // Past the largest finite bf16 the neighbour away from zero is Inf.
  EXPECT_EQ(f32_to_bf16_stochastic(std::numeric_limits<float>::max(), 0), 0x7F80);
  EXPECT_EQ(f32_to_bf16_stochastic(std::numeric_limits<float>::max(), 0xFFFFFFFFu), 0x7F7F);
  EXPECT_EQ(f32_to_bf16_stochastic(-std::numeric_limits<float>::max(), 0), 0xFF80);
  EXPECT_EQ(f64_to_bf16_stochastic(1e39, 0xFFFFFFFFu), 0x7F80);
  // Subnormals round between subnormal neighbours; the smallest fp32 subnormal reaches the smallest bf16 one.
  EXPECT_EQ(f32_to_bf16_stochastic(float_of(0x00000001u), 0), 0x0001);
  EXPECT_EQ(f32_to_bf16_stochastic(float_of(0x00000001u), 0xFFFFFFFFu), 0x0000);
  EXPECT_EQ(f32_to_bf16_stochastic(float_of(0x8000FFFFu), 0), 0x8001);
}

TEST(StochasticRounding, NegativeValuesMirrorPositiveOnes) {
  uint64_t state = 11;
  for (int i = 0; i < 100000; ++i) {
    const auto b = static_cast<uint32_t>(mix(state)) & 0x7FFFFFFFu;
    const auto word = static_cast<uint32_t>(mix(state));
    if (std::isnan(float_of(b))) continue;
    ASSERT_EQ(f32_to_bf16_stochastic(-float_of(b), word), f32_to_bf16_stochastic(float_of(b), word) | 0x8000u);
  }
}

TEST(StochasticRounding, DoubleInputRoundsItsExactFraction) {
  // 1 + 2^-9 + 2^-40: between bf16 1 (0x3F80) and 1 + 2^-7 (0x3F81) at fraction 1/4 + 2^-33; the top 24
  // bits of the word are compared with it, so r = 2^22 - 1 rounds up, 2^22 (r = 1/4 exactly) too
  // (1/4 < 1/4 + 2^-33), and 2^22 + 1 does not.
  const double x = 1.0 + std::ldexp(1.0, -9) + std::ldexp(1.0, -40);
  EXPECT_EQ(f64_to_bf16_stochastic(x, (0x400000u - 1) << 8), 0x3F81);
  EXPECT_EQ(f64_to_bf16_stochastic(x, 0x400000u << 8), 0x3F81);
  EXPECT_EQ(f64_to_bf16_stochastic(x, (0x400000u + 1) << 8), 0x3F80);
  EXPECT_EQ(f64_to_bf16_stochastic(-x, 0), 0xBF81);
}

TEST(StochasticRounding, IsUnbiased) {
  // The mean of many roundings of x tends to x: with n draws the error of the mean has standard
  // deviation <= ulp / (2 sqrt(n)); allow six of them.
  const int n = 1 << 16;
  for (const float x : {1.0f + 0x1p-9f, 0.3f, -1234.567f, 3e-39f}) {
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      const uint32_t word = stochastic_rounding_word(99, 5, static_cast<uint64_t>(i), 1);
      sum += bf16_to_f32(f32_to_bf16_stochastic(x, word));
    }
    const uint16_t lo = static_cast<uint16_t>(bits_of(x) >> 16);
    const double ulp = std::fabs(static_cast<double>(bf16_to_f32(static_cast<uint16_t>(lo + 1))) - bf16_to_f32(lo));
    EXPECT_NEAR(sum / n, static_cast<double>(x), 6.0 * ulp / (2.0 * std::sqrt(static_cast<double>(n)))) << x;
  }
}

TEST(StochasticRounding, WordIsTheDocumentedPhiloxOutput) {
  const uint64_t seed = 0x0123456789ABCDEFull;
  for (uint64_t index : {uint64_t{0}, uint64_t{1}, uint64_t{6}, uint64_t{1} << 33, (uint64_t{1} << 34) - 1}) {
    for (uint64_t step : {uint64_t{1}, uint64_t{100}, (uint64_t{1} << 30) - 1}) {
      // key {seed low, seed high}; counter {index >> 2, step, tensor id, 2}; word index & 3.
      const rng::Philox4x32Counter block = rng::philox4x32_10(
          rng::Philox4x32Counter{{static_cast<uint32_t>(index >> 2), static_cast<uint32_t>(step), 77u, 2u}},
          rng::Philox4x32Key{{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)}});
      EXPECT_EQ(stochastic_rounding_word(seed, 77, index, step), block.w[index & 3]) << index << " " << step;
    }
  }
  EXPECT_THROW(stochastic_rounding_word(seed, 0, uint64_t{1} << 34, 1), std::out_of_range);
  EXPECT_THROW(stochastic_rounding_word(seed, 0, 0, uint64_t{1} << 30), std::out_of_range);
  EXPECT_NE(stochastic_rounding_word(seed, 0, 0, 1), stochastic_rounding_word(seed, 0, 0, 2));
}

}  // namespace
}  // namespace gauge::reference::precision
