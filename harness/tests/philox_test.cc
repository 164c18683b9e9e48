#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "harness/inputs.h"
#include "harness/philox.h"

namespace gauge::rng {
namespace {

struct KnownAnswer {
  Philox4x32Counter counter;
  Philox4x32Key key;
  Philox4x32Counter expected;
};

// Random123's kat_vectors, "philox4x32 10" lines: counter, key, expected output.
TEST(Philox, RandomKnownAnswerVectors) {
  const KnownAnswer vectors[] = {
      {{{0, 0, 0, 0}}, {{0, 0}}, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       {{0xffffffff, 0xffffffff}},
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       {{0xa4093822, 0x299f31d0}},
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const KnownAnswer& v : vectors) {
    const Philox4x32Counter got = philox4x32_10(v.counter, v.key);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.w[i], v.expected.w[i]) << "word " << i;
  }
}

TEST(Philox, ElementValuesDependOnlyOnTheirKey) {
  const uint64_t seed = 42;
  // Element 5 of tensor 3 is the same whether generated alone, in a tensor, or in reverse order.
  const HostTensor forward = inputs::philox_u32("a", {16}, seed, 3);
  const uint32_t alone = bits_at(seed, 3, Stream::values, 5);
  EXPECT_EQ(forward.view<uint32_t>()[5], alone);
  // Different tensors, streams and seeds give different words.
  EXPECT_NE(bits_at(seed, 4, Stream::values, 5), alone);
  EXPECT_NE(bits_at(seed, 3, Stream::dropout, 5), alone);
  EXPECT_NE(bits_at(seed + 1, 3, Stream::values, 5), alone);
}

TEST(Philox, UniformIsInRangeAndUnbiased) {
  const HostTensor u = inputs::uniform_f32("u", {1 << 16}, 7, 0, -1.0f, 1.0f);
  double sum = 0;
  for (float v : u.view<float>()) {
    ASSERT_GE(v, -1.0f);
    ASSERT_LT(v, 1.0f);
    sum += v;
  }
  // Mean of 65536 U(-1,1) draws: standard error 1/sqrt(3*65536) = 0.00226; 5 sigma.
  EXPECT_NEAR(sum / 65536.0, 0.0, 5 * 0.00226);
}

TEST(Philox, NormalHasUnitMoments) {
  const int n = 1 << 16;
  const HostTensor x = inputs::normal_f32("x", {n}, 11, 2, 0.0f, 1.0f);
  double sum = 0, squares = 0;
  for (float v : x.view<float>()) {
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    squares += static_cast<double>(v) * v;
  }
  const double mean = sum / n, variance = squares / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 5.0 / std::sqrt(n));
  EXPECT_NEAR(variance, 1.0, 5.0 * std::sqrt(2.0 / n));
}

TEST(Philox, NoRepeatsInAMillionWords) {
  std::set<uint32_t> seen;
  int repeats = 0;
  for (uint64_t i = 0; i < (1u << 20); ++i) repeats += !seen.insert(bits_at(1, 0, Stream::values, i)).second;
  // Birthday bound: about n^2 / 2^33 = 128 collisions expected among 2^20 random 32-bit words.
  EXPECT_LT(repeats, 256);
}

}  // namespace
}  // namespace gauge::rng
