// Stochastic rounding fp32 -> fp16 / fp8 (reference/precision/stochastic_rounding.h).
//
// Checked on the CPU: the reference against this test's own neighbour search (lo / hi from the
// format's sorted values, frac in double, up iff r < frac); the exact round-up threshold (the count of
// the 2^24 values of word >> 8 that round up is frac * 2^24, counted exhaustively for a few inputs);
// unbiasedness over many Philox draws (statistical, confidence stated below); special values; the
// Philox keying of the whole-tensor entry points; and the optimized side's host-callable bit code
// (optimized/precision/fp8.cuh) bit for bit against the reference. The CUDA kernels are compared bit
// for bit with the reference for the same seed (skipped without a GPU).
#include "reference/precision/stochastic_rounding.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "harness/gpu.h"
#include "harness/philox.h"
#include "harness/tensor.h"
#include "harness/tests/splitmix64.h"
#include "optimized/precision/fp8.cuh"
#include "reference/precision/casts.h"
#include "reference/precision/fp8.h"

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include "optimized/precision/stochastic_round.h"
#endif

namespace {

namespace ref = gauge::reference::precision;
namespace opt = gauge::optimized::precision;
using gauge::precision::Fp8Format;
using gauge::precision::Fp8Overflow;
using gauge::test_support::SplitMix64;

uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
float float_of(uint32_t b) { return std::bit_cast<float>(b); }

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08" PRIX32, value);
  return text;
}

// One target: the reference under test, the bit code, the decoded value of a code, the sorted finite
// non-negative values (codes 0 .. max_code ascending) and what overflow becomes.
struct Target {
  const char* name;
  int code_bits;  // 16 or 8
  uint32_t max_code;
  uint32_t (*reference)(float, uint32_t);
  uint32_t (*bit_code)(float, uint32_t);
  double (*decode)(uint32_t);
  uint32_t overflow_code;  // magnitude code of an overflow
  uint32_t (*nan_code)(float);
};

double f16_value(uint32_t c) { return ref::f16_to_f32(static_cast<uint16_t>(c)); }
double e4m3_value(uint32_t c) { return ref::fp8_to_f32(static_cast<uint8_t>(c), Fp8Format::e4m3); }
double e5m2_value(uint32_t c) { return ref::fp8_to_f32(static_cast<uint8_t>(c), Fp8Format::e5m2); }

const Target kF16{"fp16", 16, 0x7BFF,
                  [](float x, uint32_t w) -> uint32_t { return ref::f32_to_f16_stochastic(x, w); },
                  [](float x, uint32_t w) -> uint32_t { return opt::f32_to_f16_stochastic(x, w); }, f16_value, 0x7C00,
                  [](float x) -> uint32_t { return ref::f32_to_f16(x); }};
const Target kE4m3Sat{"e4m3 saturate", 8, 0x7E,
                      [](float x, uint32_t w) -> uint32_t {
                        return ref::f32_to_fp8_stochastic(x, w, Fp8Format::e4m3, Fp8Overflow::saturate);
                      },
                      [](float x, uint32_t w) -> uint32_t {
                        return opt::f32_to_fp8_stochastic(x, w, Fp8Format::e4m3, true);
                      },
                      e4m3_value, 0x7E,
                      [](float x) -> uint32_t { return ref::f32_to_fp8(x, Fp8Format::e4m3, Fp8Overflow::saturate); }};
const Target kE4m3NoSat{"e4m3 non_saturating", 8, 0x7E,
                        [](float x, uint32_t w) -> uint32_t {
                          return ref::f32_to_fp8_stochastic(x, w, Fp8Format::e4m3, Fp8Overflow::non_saturating);
                        },
                        [](float x, uint32_t w) -> uint32_t {
                          return opt::f32_to_fp8_stochastic(x, w, Fp8Format::e4m3, false);
                        },
                        e4m3_value, 0x7F,
                        [](float x) -> uint32_t {
                          return ref::f32_to_fp8(x, Fp8Format::e4m3, Fp8Overflow::non_saturating);
                        }};
const Target kE5m2Sat{"e5m2 saturate", 8, 0x7B,
                      [](float x, uint32_t w) -> uint32_t {
                        return ref::f32_to_fp8_stochastic(x, w, Fp8Format::e5m2, Fp8Overflow::saturate);
                      },
                      [](float x, uint32_t w) -> uint32_t {
                        return opt::f32_to_fp8_stochastic(x, w, Fp8Format::e5m2, true);
                      },
                      e5m2_value, 0x7B,
                      [](float x) -> uint32_t { return ref::f32_to_fp8(x, Fp8Format::e5m2, Fp8Overflow::saturate); }};
const Target kE5m2NoSat{"e5m2 non_saturating", 8, 0x7B,
                        [](float x, uint32_t w) -> uint32_t {
                          return ref::f32_to_fp8_stochastic(x, w, Fp8Format::e5m2, Fp8Overflow::non_saturating);
                        },
                        [](float x, uint32_t w) -> uint32_t {
                          return opt::f32_to_fp8_stochastic(x, w, Fp8Format::e5m2, false);
                        },
                        e5m2_value, 0x7C,
                        [](float x) -> uint32_t {
                          return ref::f32_to_fp8(x, Fp8Format::e5m2, Fp8Overflow::non_saturating);
                        }};
const Target* const kTargets[] = {&kF16, &kE4m3Sat, &kE4m3NoSat, &kE5m2Sat, &kE5m2NoSat};

uint32_t sign_bit(const Target& t) { return t.code_bits == 16 ? 0x8000u : 0x80u; }

// The rule by search: lo = the largest grid value <= |x| (the grid continued one step past max), hi
// the next; frac = (|x| - lo) / (hi - lo) in double (exact enough: the comparison below is with a
// multiple of 2^-24 and frac's rounding error is far below that); up iff (word >> 8) * 2^-24 < frac.
class NeighbourOracle {
 public:
  explicit NeighbourOracle(const Target& t) : target_(t) {
    for (uint32_t c = 0; c <= t.max_code; ++c) values_.push_back(t.decode(c));
    values_.push_back(2 * values_.back() - values_[values_.size() - 2]);  // one step past max
  }
  uint32_t operator()(uint32_t x_bits, uint32_t word) const {
    const float x = float_of(x_bits);
    if (std::isnan(x) || std::isinf(x)) return target_.nan_code(x);  // the RNE cast's answer
    const uint32_t sign = (x_bits & 0x80000000u) != 0 ? sign_bit(target_) : 0u;
    const double a = std::fabs(static_cast<double>(x));
    if (a >= values_.back()) return sign | target_.overflow_code;
    const auto it = std::upper_bound(values_.begin(), values_.end(), a);
    const auto hi = static_cast<uint32_t>(it - values_.begin());
    const uint32_t lo = hi - 1;
    const double frac = (a - values_[lo]) / (values_[hi] - values_[lo]);
    const double r = std::ldexp(static_cast<double>(word >> 8), -24);
    const uint32_t pick = r < frac ? hi : lo;
    return sign | (pick > target_.max_code ? target_.overflow_code : pick);
  }

 private:
  const Target& target_;
  std::vector<double> values_;
};

std::vector<uint32_t> structured_inputs(const Target& t) {
  std::vector<uint32_t> out;
  SplitMix64 rng(0x7372ull + t.max_code);
  // Around every grid value: the value, +-1..8 fp32 ulps, the midpoint, random points in between.
  for (uint32_t c = 0; c <= t.max_code; ++c) {
    const auto v = static_cast<float>(t.decode(c));
    const auto w = c < t.max_code ? static_cast<float>(t.decode(c + 1)) : 2 * v - static_cast<float>(t.decode(c - 1));
    const uint32_t vb = bits_of(v);
    const uint32_t wb = bits_of(w);
    for (uint32_t k = 0; k <= 8; ++k) {
      out.push_back(vb + k);
      if (vb >= k) out.push_back(vb - k);
    }
    for (int k = 0; k < 8; ++k) out.push_back(vb + rng.next_u32() % (wb - vb + 1));
  }
  // Every fp32 exponent, random mantissas; random patterns (NaN, Inf, subnormals among them).
  for (uint32_t e = 0; e < 256; ++e) {
    for (int k = 0; k < 64; ++k) out.push_back((e << 23) | (rng.next_u32() & 0x7FFFFFu));
  }
  for (int k = 0; k < 20000; ++k) out.push_back(rng.next_u32());
  const size_t half = out.size();
  for (size_t i = 0; i < half; ++i) out.push_back(out[i] ^ 0x80000000u);
  return out;
}

TEST(StochasticRoundingFormats, ReferenceMatchesNeighbourSearch) {
  for (const Target* t : kTargets) {
    const NeighbourOracle oracle(*t);
    SplitMix64 words(0x776F7264ull);
    int64_t mismatches = 0;
    for (const uint32_t x : structured_inputs(*t)) {
      // A random word, and the two words around this input's threshold where the decision flips.
      for (int k = 0; k < 3; ++k) {
        const uint32_t word = words.next_u32();
        const uint32_t expected = oracle(x, word);
        const uint32_t actual = t->reference(float_of(x), word);
        if (expected != actual && ++mismatches <= 10) {
          ADD_FAILURE() << t->name << " x=" << hex(x) << " word=" << hex(word) << " expected " << hex(expected)
                        << " got " << hex(actual);
        }
      }
    }
    EXPECT_EQ(mismatches, 0) << t->name;
  }
}

TEST(StochasticRoundingFormats, BitCodeEqualsReference) {
  for (const Target* t : kTargets) {
    SplitMix64 words(0x62697473ull);
    int64_t mismatches = 0;
    std::vector<uint32_t> inputs = structured_inputs(*t);
    SplitMix64 more(99);
    for (int k = 0; k < 200000; ++k) inputs.push_back(more.next_u32());
    for (const uint32_t x : inputs) {
      for (int k = 0; k < 4; ++k) {
        // Words with the low byte varied too (it must be ignored), and extreme words.
        const uint32_t word = k == 0 ? 0u : k == 1 ? 0xFFFFFFFFu : words.next_u32();
        const uint32_t expected = t->reference(float_of(x), word);
        const uint32_t actual = t->bit_code(float_of(x), word);
        if (expected != actual && ++mismatches <= 10) {
          ADD_FAILURE() << t->name << " x=" << hex(x) << " word=" << hex(word) << " reference " << hex(expected)
                        << " bit code " << hex(actual);
        }
      }
    }
    EXPECT_EQ(mismatches, 0) << t->name;
  }
}

// The number of the 2^24 values of word >> 8 that round |x| up is frac * 2^24 exactly (fp32 inputs
// make frac a multiple of 2^-24 whenever at most 24 bits are dropped), counted exhaustively with the
// bit code (which BitCodeEqualsReference ties to the reference), and the reference is checked at the
// two words where the decision flips.
TEST(StochasticRoundingFormats, RoundUpCountIsExactlyTheFraction) {
  struct Case {
    const Target* target;
    float x;
    double frac;  // worked out by hand
  };
  const Case cases[] = {
      {&kE4m3Sat, 10.75f, 0.75},     // e4m3 spacing 1 in [8, 16): 10 / 11
      {&kE5m2Sat, 2.75f, 0.5},       // e5m2 spacing 0.5 in [2, 4): 2.5 / 3
      {&kF16, 1.0f + 0x1p-11f, 0.5},    // fp16 ulp at 1 is 2^-10
      {&kE4m3NoSat, 0x1.8p-10f, 0.75},  // e4m3 subnormal quantum 2^-9: 0.75 of it
      {&kE5m2NoSat, 60000.0f, (60000.0 - 57344.0) / 8192.0},  // past max: overflow with that probability
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.target->name) + " x=" + std::to_string(c.x));
    const uint32_t up_code = c.target->bit_code(c.x, 0u);           // r = 0 always rounds up
    const uint32_t down_code = c.target->bit_code(c.x, 0xFFFFFFFFu);  // r = 1 - 2^-24 never does
    ASSERT_NE(up_code, down_code);
    int64_t ups = 0;
    for (uint32_t r = 0; r < (1u << 24); ++r) ups += c.target->bit_code(c.x, r << 8) == up_code ? 1 : 0;
    EXPECT_EQ(ups, static_cast<int64_t>(std::ldexp(c.frac, 24)));
    EXPECT_EQ(c.target->reference(c.x, static_cast<uint32_t>(ups - 1) << 8), up_code);
    EXPECT_EQ(c.target->reference(c.x, static_cast<uint32_t>(ups) << 8), down_code);
  }
}

// Unbiasedness: E[round(x)] = x. With N Philox draws the sample mean of the decoded results has
// standard deviation sigma = (hi - lo) sqrt(frac (1 - frac) / N); the test demands |mean - x| <= 5
// sigma (two-sided, a false alarm has probability 5.7e-7 for a fair rounding; the words are a fixed
// Philox stream, so the outcome is deterministic). E.g. 2.8 in a grid of spacing 1 (e4m3 has spacing
// 0.25 there, so 11.2 and 2.8 * 4 = 11.2 in [8, 16) stands in): rounds up with probability 0.2.
TEST(StochasticRoundingFormats, UnbiasedOverManyDraws) {
  struct Case {
    const Target* target;
    float x;
    double lo, hi;
  };
  const Case cases[] = {
      {&kE4m3Sat, 2.8f * 4.0f, 11.0, 12.0},     // 11.2: up with probability ~0.2
      {&kE4m3Sat, 10.8f, 10.0, 11.0},           // up with probability ~0.8 ("2.8 -> 3 w.p. 0.8", scaled)
      {&kE5m2Sat, 2.8f, 2.5, 3.0},              // 2.8 -> 3 with probability 0.6
      {&kE5m2Sat, -2.8f, -3.0, -2.5},
      {&kF16, 0.1f, 0.0999755859375, 0.10003662109375},
      {&kE4m3Sat, 0x1.3p-9f, 0x1p-9, 0x2p-9},  // subnormal
      {&kE5m2Sat, 0x1.4p-16f, 0x1p-16, 0x2p-16},
      {&kE4m3Sat, 300.0f, 288.0, 320.0},
  };
  constexpr int64_t kDraws = int64_t{1} << 20;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.target->name) + " x=" + std::to_string(c.x));
    double sum = 0;
    int64_t ups = 0;
    for (int64_t i = 0; i < kDraws; ++i) {
      const uint32_t word = ref::stochastic_rounding_word(0x5EEDull, 3, static_cast<uint64_t>(i), 0);
      const double value = c.target->decode(c.target->reference(c.x, word));
      ASSERT_TRUE(value == c.lo || value == c.hi) << value;
      sum += value;
      ups += value == c.hi ? 1 : 0;
    }
    const double frac = (static_cast<double>(c.x) - c.lo) / (c.hi - c.lo);
    const double sigma = (c.hi - c.lo) * std::sqrt(frac * (1 - frac) / static_cast<double>(kDraws));
    EXPECT_LE(std::fabs(sum / static_cast<double>(kDraws) - static_cast<double>(c.x)), 5 * sigma)
        << "mean " << sum / static_cast<double>(kDraws) << " frac " << frac << " ups " << ups;
  }
}

TEST(StochasticRoundingFormats, SpecialValuesAndGridValues) {
  SplitMix64 rng(11);
  for (const Target* t : kTargets) {
    for (uint32_t c = 0; c < (1u << t->code_bits); ++c) {
      const double v = t->decode(c);
      if (std::isnan(v)) continue;
      const uint32_t word = rng.next_u32();
      const uint32_t expected = std::isinf(v) ? t->nan_code(static_cast<float>(v)) : c;  // Inf: the RNE cast's answer
      EXPECT_EQ(t->reference(static_cast<float>(v), word), expected) << t->name << " code " << c;
    }
    for (const uint32_t nan : {0x7FC00000u, 0xFFA00001u, 0x7F800001u}) {
      EXPECT_EQ(t->reference(float_of(nan), 0u), t->nan_code(float_of(nan))) << t->name;
    }
  }
  // Beyond max: saturate clamps whatever the word; non-saturating overflows when rounding up.
  EXPECT_EQ(ref::f32_to_fp8_stochastic(470.0f, 0u, Fp8Format::e4m3, Fp8Overflow::saturate), 0x7E);
  EXPECT_EQ(ref::f32_to_fp8_stochastic(470.0f, 0u, Fp8Format::e4m3, Fp8Overflow::non_saturating), 0x7F);
  EXPECT_EQ(ref::f32_to_fp8_stochastic(-470.0f, 0xFFFFFFFFu, Fp8Format::e4m3, Fp8Overflow::non_saturating), 0xFE);
  EXPECT_EQ(ref::f32_to_fp8_stochastic(1e9f, 0xFFFFFFFFu, Fp8Format::e5m2, Fp8Overflow::non_saturating), 0x7C);
  EXPECT_EQ(ref::f32_to_f16_stochastic(65519.0f, 0u), 0x7C00);
  EXPECT_EQ(ref::f32_to_f16_stochastic(65519.0f, 0xFFFFFFFFu), 0x7BFF);
  EXPECT_EQ(ref::f32_to_f16_stochastic(-0.0f, 0u), 0x8000);
}

TEST(StochasticRoundingFormats, TensorEntryPointsUseThePhiloxWordOfEachElement) {
  std::vector<float> x(1037);
  SplitMix64 rng(5);
  for (float& v : x) v = rng.uniform(-500.0f, 500.0f);
  std::vector<uint16_t> f16(x.size());
  std::vector<uint8_t> e4m3(x.size());
  ref::stochastic_round_f32_to_f16(x, f16, 77, 4, 9);
  ref::stochastic_round_f32_to_fp8(x, e4m3, Fp8Format::e4m3, Fp8Overflow::saturate, 77, 4, 9);
  for (size_t i = 0; i < x.size(); ++i) {
    const uint32_t word = gauge::rng::bits_at(77, 4, gauge::rng::Stream::stochastic_rounding, (uint64_t{9} << 34) | i);
    ASSERT_EQ(f16[i], ref::f32_to_f16_stochastic(x[i], word)) << i;
    ASSERT_EQ(e4m3[i], ref::f32_to_fp8_stochastic(x[i], word, Fp8Format::e4m3, Fp8Overflow::saturate)) << i;
    // The bit code's keying helpers give the same word.
    ASSERT_EQ(opt::sr_word(77, 4, i, 9), word);
    ASSERT_EQ(opt::sr_block(77, 4, i / 4, 9).w[i % 4], word);
  }
  std::vector<uint16_t> short_out(3);
  EXPECT_THROW(ref::stochastic_round_f32_to_f16(x, short_out, 1, 0, 0), std::invalid_argument);
}

// ---- CUDA --------------------------------------------------------------------------------------------

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA

std::vector<float> sr_inputs(size_t n, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t r = rng.next_u32();
    out[i] = i % 3 == 0 ? float_of(r) : float_of((r & 0x80000000u) | ((100u + (r >> 8) % 50u) << 23) | (rng.next_u32() & 0x7FFFFFu));
  }
  return out;
}

template <class Out, class Launch>
void check_sr_on_device(gauge::gpu::Session& session, gauge::DType out_dtype, const std::vector<float>& input,
                        const std::vector<Out>& expected, int64_t in_offset, int64_t out_offset, Launch launch) {
  const auto n = static_cast<int64_t>(input.size());
  SCOPED_TRACE("n=" + std::to_string(n) + " in_offset=" + std::to_string(in_offset) + " out_offset=" + std::to_string(out_offset));
  gauge::HostTensor host_in("in", gauge::DType::f32, {in_offset + n + 16});
  std::copy(input.begin(), input.end(), host_in.view<float>().begin() + in_offset);
  const gauge::DeviceTensor device_in = session.upload(host_in);
  const gauge::DeviceTensor device_out = session.allocate_poisoned("out", out_dtype, {out_offset + n + 16});
  // The kernel sees element 0 at device_in + in_offset; its Philox index is its position in the
  // tensor, 0 .. n-1, whatever the buffer placement.
  launch(static_cast<const float*>(device_in.ptr) + in_offset, static_cast<Out*>(device_out.ptr) + out_offset, n,
         session.stream());
  session.synchronize();
  const gauge::HostTensor host_out = session.download(device_out);
  const std::span<const Out> out = host_out.view<Out>();
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (out[static_cast<size_t>(out_offset + i)] != expected[static_cast<size_t>(i)] && ++mismatches <= 10) {
      ADD_FAILURE() << "element " << i << " x=" << hex(bits_of(input[static_cast<size_t>(i)])) << " expected "
                    << hex(expected[static_cast<size_t>(i)]) << " got " << hex(out[static_cast<size_t>(out_offset + i)]);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

#endif

TEST(CudaStochasticRounding, BitIdenticalToReferenceForTheSameSeed) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  auto session = gauge::gpu::Session::open();
  constexpr uint64_t kSeed = 0x5EED5EEDull;
  constexpr uint32_t kTensor = 7;
  constexpr uint64_t kStep = 12;
  for (const size_t n : {size_t{0}, size_t{1}, size_t{5}, size_t{17}, size_t{1000}, (size_t{1} << 20) + 3}) {
    const std::vector<float> input = sr_inputs(n, n);
    session->begin_case();
    std::vector<uint16_t> f16(n);
    ref::stochastic_round_f32_to_f16(input, f16, kSeed, kTensor, kStep);
    for (const auto& [in_offset, out_offset] : {std::pair<int64_t, int64_t>{0, 0}, {1, 0}, {0, 3}, {4, 4}, {5, 2}, {3, 3}}) {
      check_sr_on_device(*session, gauge::DType::f16, input, f16, in_offset, out_offset,
                         [&](const float* in, uint16_t* out, int64_t count, gauge::StreamHandle stream) {
                           opt::stochastic_round_f32_to_f16(in, out, count, kSeed, kTensor, kStep, stream);
                         });
    }
    for (const Fp8Format format : {Fp8Format::e4m3, Fp8Format::e5m2}) {
      for (const Fp8Overflow overflow : {Fp8Overflow::saturate, Fp8Overflow::non_saturating}) {
        std::vector<uint8_t> fp8(n);
        ref::stochastic_round_f32_to_fp8(input, fp8, format, overflow, kSeed, kTensor, kStep);
        for (const auto& [in_offset, out_offset] : {std::pair<int64_t, int64_t>{0, 0}, {1, 0}, {0, 3}, {4, 4}, {12, 12}, {3, 3}}) {
          check_sr_on_device(*session, format == Fp8Format::e4m3 ? gauge::DType::e4m3 : gauge::DType::e5m2, input, fp8,
                             in_offset, out_offset,
                             [&](const float* in, uint8_t* out, int64_t count, gauge::StreamHandle stream) {
                               opt::stochastic_round_f32_to_fp8(in, out, count, format, overflow, kSeed, kTensor, kStep,
                                                                stream);
                             });
        }
      }
    }
  }
#endif
}

}  // namespace
