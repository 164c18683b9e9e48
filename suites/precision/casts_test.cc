// Conformance of the fp32 <-> bf16 / fp16 casts.
//
// The reference (reference/precision/casts.cc) is checked on the CPU against oracles written here
// independently of it: decoded values against the textbook formula sign * 2^(e - bias) * (1 + m/2^k),
// and fp32 -> narrow against a nearest-value search over the sorted list of every finite narrow
// value. The optimized CUDA casts are then bit-compared with the reference (skipped without a GPU).
// Every failure prints the input bits, the expected bits and the actual bits.
#include "suites/precision/bit_mismatches.h"
#include "reference/precision/casts.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cfenv>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "harness/gpu.h"
#include "harness/tests/splitmix64.h"
#include "harness/tensor.h"

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include "optimized/precision/casts.h"
#endif

namespace {

namespace ref = gauge::reference::precision;

// ---- Float bits (the test's own, shared with nobody) ---------------------------------------------

using gauge::test_support::bits_of;
using gauge::test_support::describe_f32;
using gauge::test_support::float_of;
using gauge::test_support::hex;
using gauge::test_support::Mismatches;

using gauge::test_support::SplitMix64;

// ---- The narrow formats as the test sees them ------------------------------------------------------

struct Format {
  const char* name;
  int exponent_bits;
  int mantissa_bits;
  uint16_t (*encode)(float);   // the reference under test
  float (*decode)(uint16_t);   // the reference under test
  // The header's NaN rule for fp32 -> narrow, written out literally per format.
  uint16_t (*nan_from_f32)(uint32_t);

  int bias() const { return (1 << (exponent_bits - 1)) - 1; }
  uint16_t inf_bits() const { return static_cast<uint16_t>(((1 << exponent_bits) - 1) << mantissa_bits); }
  uint16_t quiet_bit() const { return static_cast<uint16_t>(1 << (mantissa_bits - 1)); }
  uint32_t exponent_field(uint16_t bits) const { return (bits >> mantissa_bits) & ((1u << exponent_bits) - 1u); }
  uint32_t mantissa_field(uint16_t bits) const { return bits & ((1u << mantissa_bits) - 1u); }
  bool is_nan(uint16_t bits) const {
    return exponent_field(bits) == (1u << exponent_bits) - 1u && mantissa_field(bits) != 0;
  }
};

// "fp32 -> bf16: bits >> 16 | 0x0040"
uint16_t bf16_nan_rule(uint32_t bits) { return static_cast<uint16_t>((bits >> 16) | 0x0040u); }
// "fp32 -> fp16: sign | 0x7C00 | 0x0200 | (mantissa >> 13)"
uint16_t f16_nan_rule(uint32_t bits) {
  return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7C00u | 0x0200u | ((bits & 0x007FFFFFu) >> 13));
}

const Format kBf16{"bf16", 8, 7, ref::f32_to_bf16, ref::bf16_to_f32, bf16_nan_rule};
const Format kF16{"fp16", 5, 10, ref::f32_to_f16, ref::f16_to_f32, f16_nan_rule};

// Value of a finite narrow pattern by the textbook formula (std::pow, not ldexp as the reference):
// normal: sign * 2^(e - bias) * (1 + m / 2^k); subnormal: sign * 2^(1 - bias) * (m / 2^k).
double narrow_value(const Format& f, uint16_t bits) {
  const double e = f.exponent_field(bits);
  const double m = f.mantissa_field(bits);
  const double k = std::pow(2.0, f.mantissa_bits);
  const double magnitude =
      e == 0 ? std::pow(2.0, 1 - f.bias()) * (m / k) : std::pow(2.0, e - f.bias()) * (1.0 + m / k);
  return (bits & 0x8000u) != 0 ? -magnitude : magnitude;
}

// What decoding a narrow NaN must give: sign, payload at the top of fp32's mantissa, quiet bit set.
uint32_t expected_decoded_nan(const Format& f, uint16_t bits) {
  return (static_cast<uint32_t>(bits & 0x8000u) << 16) | 0x7F800000u | 0x00400000u |
         (f.mantissa_field(bits) << (23 - f.mantissa_bits));
}

// fp32 -> narrow by search: the sorted list of every finite non-negative narrow value (patterns
// 0 .. Inf-1 are ascending), the nearest found by binary search, ties to the even pattern, Inf from
// max + half an ulp up. Shares nothing with the reference's arithmetic.
class NearestOracle {
 public:
  explicit NearestOracle(const Format& f) : format_(f) {
    for (uint32_t p = 0; p < f.inf_bits(); ++p) values_.push_back(narrow_value(f, static_cast<uint16_t>(p)));
    const double max = values_.back();
    overflow_threshold_ = max + (max - values_[values_.size() - 2]) / 2;
  }

  const std::vector<double>& values() const { return values_; }
  double overflow_threshold() const { return overflow_threshold_; }

  uint16_t operator()(uint32_t x_bits) const {
    const float x = float_of(x_bits);
    if (std::isnan(x)) return format_.nan_from_f32(x_bits);
    const uint16_t sign = (x_bits & 0x80000000u) != 0 ? uint16_t{0x8000} : uint16_t{0};
    const double a = std::fabs(static_cast<double>(x));
    if (a >= overflow_threshold_) return static_cast<uint16_t>(sign | format_.inf_bits());  // Inf too
    const auto it = std::lower_bound(values_.begin(), values_.end(), a);
    size_t pick = 0;
    if (it == values_.end()) {
      pick = values_.size() - 1;  // between max and the threshold: max is nearest
    } else if (*it == a) {
      pick = static_cast<size_t>(it - values_.begin());
    } else {
      const size_t hi = static_cast<size_t>(it - values_.begin());  // > 0: values_[0] is 0 and a > 0
      const size_t lo = hi - 1;
      const double below = a - values_[lo];  // exact: both are close multiples of 2^-149
      const double above = values_[hi] - a;
      if (below < above) {
        pick = lo;
      } else if (above < below) {
        pick = hi;
      } else {
        pick = (lo % 2 == 0) ? lo : hi;  // tie: the even mantissa pattern
      }
    }
    return static_cast<uint16_t>(sign | pick);
  }

 private:
  const Format& format_;
  std::vector<double> values_;
  double overflow_threshold_ = 0;
};

const NearestOracle& oracle(const Format& f) {
  static const NearestOracle bf16(kBf16);
  static const NearestOracle f16(kF16);
  return &f == &kBf16 ? bf16 : f16;
}

// ---- fp32 inputs: every special class, plus random bit patterns ------------------------------------

void push_both_signs(std::vector<uint32_t>& out, uint32_t bits) {
  out.push_back(bits & 0x7FFFFFFFu);
  out.push_back(bits | 0x80000000u);
}

float next_up(float x) { return std::nextafter(x, std::numeric_limits<float>::infinity()); }
float next_down(float x) { return std::nextafter(x, -std::numeric_limits<float>::infinity()); }

// For every finite narrow value v of `f` and its upper neighbour w (for the max: 2^(emax+1), where
// rounding goes to Inf): v, v +- 1 fp32 ulp, the midpoint (v + w) / 2 (an exact fp32 value: one bit
// more than the narrow format has), and the midpoint +- 1 fp32 ulp.
void push_neighbourhoods(std::vector<uint32_t>& out, const Format& f) {
  const std::vector<double>& values = oracle(f).values();
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    const double w = i + 1 < values.size() ? values[i + 1] : 2 * oracle(f).overflow_threshold() - v;
    const double mid = (v + w) / 2;
    const auto vf = static_cast<float>(v);
    const auto midf = static_cast<float>(mid);
    if (static_cast<double>(vf) != v || static_cast<double>(midf) != mid) {
      ADD_FAILURE() << f.name << " value " << v << " or midpoint " << mid << " is not an fp32 value";
      continue;
    }
    for (const float x : {vf, next_up(vf), next_down(vf), midf, next_up(midf), next_down(midf)}) {
      push_both_signs(out, bits_of(x));
    }
  }
}

std::vector<uint32_t> special_inputs() {
  std::vector<uint32_t> out;
  const uint32_t fixed[] = {
      0x00000000u, 0x7F800000u,                                            // 0, Inf
      0x7F7FFFFFu, 0x7F7FFFFEu,                                            // max finite fp32
      0x00800000u, 0x00800001u, 0x007FFFFFu,                               // fp32 min normal, max subnormal
      0x00000001u, 0x00000002u, 0x00000003u, 0x00007FFFu, 0x00008000u,     // fp32 subnormals (bf16 ties)
      0x00008001u, 0x00018000u, 0x00400000u, 0x007F8000u, 0x007FC000u,
      0x477FE000u, 0x477FE001u, 0x477FDFFFu, 0x477FEFFFu, 0x477FF000u,     // around fp16 max / threshold
      0x477FF001u, 0x47800000u, 0x47FFEFFFu, 0x501502F9u,
      0x7F7F0000u, 0x7F7EFFFFu, 0x7F7F0001u, 0x7F7F7FFFu, 0x7F7F8000u,     // around bf16 max / threshold
      0x7F7F8001u,
      0x7FC00000u, 0x7FC00001u, 0x7F800001u, 0x7F812345u, 0x7FBFFFFFu,     // NaNs: quiet, signaling,
      0x7FFFFFFFu, 0x7F801FFFu, 0x7F802000u, 0x7F80FFFFu, 0x7F810000u,     // payloads whose kept bits
      0x7FA00000u, 0x7FE00000u, 0x7F8000FFu, 0x7FDFFFFFu,                  // are all zero, ...
  };
  for (const uint32_t bits : fixed) push_both_signs(out, bits);
  // Every fp16 NaN payload (top 10 mantissa bits, which include bf16's 7) with low bits 0, 1, all ones.
  for (uint32_t top = 0; top < (1u << 10); ++top) {
    for (const uint32_t low : {0x0u, 0x1u, 0x1FFFu}) {
      const uint32_t mantissa = (top << 13) | low;
      if (mantissa != 0) push_both_signs(out, 0x7F800000u | mantissa);
    }
  }
  // fp32 subnormals on a coarse grid and their neighbours.
  for (uint32_t m = 0; m < (1u << 23); m += 0x1000u) {
    for (const uint32_t bits : {m, m + 1, m + 0x7FF, m + 0x800, m + 0x801}) push_both_signs(out, bits);
  }
  return out;
}

// `count` fully random bit patterns plus `count` with the exponent field in [96, 148] (2^-31 .. 2^21:
// fp16's whole range with its subnormals and overflow, where uniform bits rarely land).
void push_random(std::vector<uint32_t>& out, size_t count, uint64_t seed) {
  SplitMix64 rng(seed);
  for (size_t i = 0; i < count; ++i) out.push_back(rng.next_u32());
  for (size_t i = 0; i < count; ++i) {
    const uint32_t r = rng.next_u32();
    const uint32_t exponent = 96 + (r >> 9) % 53;
    out.push_back((r & 0x80000000u) | (exponent << 23) | (rng.next_u32() & 0x007FFFFFu));
  }
}

std::vector<uint32_t> conversion_inputs(size_t random_count) {
  std::vector<uint32_t> out = special_inputs();
  push_neighbourhoods(out, kBf16);
  push_neighbourhoods(out, kF16);
  push_random(out, random_count, 0x63617374ull /* "cast" */);
  return out;
}

// ---- Reference: exhaustive decode and round trip ---------------------------------------------------

void check_exhaustive_decode(const Format& f) {
  Mismatches decoded(std::string(f.name) + " -> fp32 against the formula");
  Mismatches round_trip(std::string(f.name) + " -> fp32 -> " + f.name);
  for (uint32_t p = 0; p <= 0xFFFFu; ++p) {
    const auto bits = static_cast<uint16_t>(p);
    const uint32_t exponent_max = (1u << f.exponent_bits) - 1u;
    uint32_t expected = 0;
    if (f.exponent_field(bits) == exponent_max) {
      expected = f.mantissa_field(bits) == 0 ? ((bits & 0x8000u) != 0 ? 0xFF800000u : 0x7F800000u)
                                             : expected_decoded_nan(f, bits);
    } else {
      const double value = narrow_value(f, bits);
      const auto as_float = static_cast<float>(value);
      if (static_cast<double>(as_float) != value) ADD_FAILURE() << f.name << " " << hex(p, 4) << " is not exact in fp32";
      expected = bits_of(as_float);  // keeps -0.0
    }
    const float actual = f.decode(bits);
    if (bits_of(actual) != expected) decoded.add(hex(p, 4), expected, bits_of(actual), 8);

    // Encoding the decoded value gives the pattern back; a NaN comes back quieted.
    const uint16_t back = f.encode(actual);
    const uint16_t want = f.is_nan(bits) ? static_cast<uint16_t>(bits | f.quiet_bit()) : bits;
    if (back != want) round_trip.add(hex(p, 4), want, back, 4);
  }
  EXPECT_NO_MISMATCHES(decoded);
  EXPECT_NO_MISMATCHES(round_trip);
}

TEST(ReferenceCasts, Bf16ExhaustiveDecodeAndRoundTrip) { check_exhaustive_decode(kBf16); }
TEST(ReferenceCasts, F16ExhaustiveDecodeAndRoundTrip) { check_exhaustive_decode(kF16); }

// ---- Reference: fp32 -> narrow against the nearest-value search ------------------------------------

TEST(ReferenceCasts, OracleSanity) {
  for (const Format* f : {&kBf16, &kF16}) {
    const std::vector<double>& v = oracle(*f).values();
    EXPECT_TRUE(std::adjacent_find(v.begin(), v.end(), std::greater_equal<>()) == v.end()) << f->name;
    EXPECT_EQ(v.front(), 0.0) << f->name;
  }
  EXPECT_EQ(oracle(kF16).values().back(), 65504.0);
  EXPECT_EQ(oracle(kF16).overflow_threshold(), 65520.0);
  EXPECT_EQ(oracle(kF16).values()[1], std::pow(2.0, -24));
  EXPECT_EQ(oracle(kBf16).values().back(), static_cast<double>(float_of(0x7F7F0000u)));
  EXPECT_EQ(oracle(kBf16).overflow_threshold(), static_cast<double>(float_of(0x7F7F8000u)));
  EXPECT_EQ(oracle(kBf16).values()[1], std::pow(2.0, -133));
}

void check_against_oracle(const Format& f, const std::vector<uint32_t>& inputs) {
  Mismatches m(std::string("fp32 -> ") + f.name + " against the nearest-value search");
  const NearestOracle& nearest = oracle(f);
  for (const uint32_t x : inputs) {
    const uint16_t expected = nearest(x);
    const uint16_t actual = f.encode(float_of(x));
    if (actual != expected) m.add(describe_f32(x), expected, actual, 4);
  }
  EXPECT_NO_MISMATCHES(m);
}

const std::vector<uint32_t>& reference_inputs() {
  static const std::vector<uint32_t> inputs = conversion_inputs(size_t{1} << 20);
  return inputs;
}

TEST(ReferenceCasts, F32ToBf16MatchesNearestSearch) { check_against_oracle(kBf16, reference_inputs()); }
TEST(ReferenceCasts, F32ToF16MatchesNearestSearch) { check_against_oracle(kF16, reference_inputs()); }

// ---- Reference: facts worked out by hand from the header's rules -----------------------------------

struct EncodeFact {
  uint32_t f32;
  uint16_t bf16;
  uint16_t f16;
  const char* why;
};

// clang-format off
const EncodeFact kEncodeFacts[] = {
    {0x3F800000u, 0x3F80, 0x3C00, "1"},
    {0x3F808000u, 0x3F80, 0x3C04, "1.00390625 = 1 + 2^-8: bf16 tie between 0x3F80 and 0x3F81 -> even; exact in fp16"},
    {0x3F808001u, 0x3F81, 0x3C04, "just above the bf16 tie rounds up"},
    {0x3F818000u, 0x3F82, 0x3C0C, "1 + 2^-7 + 2^-8: bf16 tie between 0x3F81 and 0x3F82 -> even 0x3F82"},
    {0x3FFF8000u, 0x4000, 0x3FFC, "2 - 2^-8: bf16 tie rounds to even 0x4000, carrying into the next binade"},
    {0x3F801000u, 0x3F80, 0x3C00, "1 + 2^-11: fp16 tie -> even 0x3C00"},
    {0x3F803000u, 0x3F80, 0x3C02, "1 + 3*2^-11: fp16 tie between 0x3C01 and 0x3C02 -> 0x3C02"},
    {0x3DCCCCCDu, 0x3DCD, 0x2E66, "0.1f"},
    {0x477FE000u, 0x4780, 0x7BFF, "65504, fp16 max; bf16 neighbours 65280 / 65536"},
    {0x477FE001u, 0x4780, 0x7BFF, "65504 + 1 fp32 ulp"},
    {0x477FEFFFu, 0x4780, 0x7BFF, "65519.996, just below fp16 max + half ulp"},
    {0x477FF000u, 0x4780, 0x7C00, "65520 = fp16 max + half ulp: tie with 2^16 -> Inf"},
    {0xC77FF000u, 0xC780, 0xFC00, "-65520 -> -Inf"},
    {0x47800000u, 0x4780, 0x7C00, "65536"},
    {0x7F7F7FFFu, 0x7F7F, 0x7C00, "just below bf16 max + half ulp"},
    {0x7F7F8000u, 0x7F80, 0x7C00, "bf16 max + half ulp: tie -> Inf"},
    {0x7F7FFFFFu, 0x7F80, 0x7C00, "fp32 max"},
    {0x33800000u, 0x3380, 0x0001, "2^-24, smallest fp16 subnormal"},
    {0x33000000u, 0x3300, 0x0000, "2^-25: fp16 tie between 0 and 0x0001 -> +0"},
    {0xB3000000u, 0xB300, 0x8000, "-2^-25 -> -0"},
    {0x33000001u, 0x3300, 0x0001, "2^-25 * 1.0000001 -> 0x0001"},
    {0x33C00000u, 0x33C0, 0x0002, "3 * 2^-25: fp16 tie between 0x0001 and 0x0002 -> 0x0002"},
    {0x387FC000u, 0x3880, 0x03FF, "largest fp16 subnormal; bf16 rounds up into 2^-14"},
    {0x387FE000u, 0x3880, 0x0400, "fp16 tie between 0x03FF and 0x0400 -> min normal"},
    {0x38800000u, 0x3880, 0x0400, "2^-14, smallest fp16 normal"},
    {0x00800000u, 0x0080, 0x0000, "fp32 min normal"},
    {0x00008000u, 0x0000, 0x0000, "2^-134: bf16 tie between 0 and 0x0001 -> 0"},
    {0x00008001u, 0x0001, 0x0000, "just above: bf16 smallest subnormal"},
    {0x00018000u, 0x0002, 0x0000, "1.5 * 2^-133: bf16 tie -> 0x0002"},
    {0x80008001u, 0x8001, 0x8000, "negative fp32 subnormal"},
    {0x00000001u, 0x0000, 0x0000, "smallest fp32 subnormal"},
    {0x80000000u, 0x8000, 0x8000, "-0"},
    {0x7F800000u, 0x7F80, 0x7C00, "Inf"},
    {0xFF800000u, 0xFF80, 0xFC00, "-Inf"},
    {0x7FC00001u, 0x7FC0, 0x7E00, "quiet NaN with a low payload bit: dropped"},
    {0x7F800001u, 0x7FC0, 0x7E00, "signaling NaN: quiet bit set, payload truncated, never Inf"},
    {0x7F80FFFFu, 0x7FC0, 0x7E07, "signaling NaN whose bf16 kept bits are all zero"},
    {0x7F801FFFu, 0x7FC0, 0x7E00, "signaling NaN whose fp16 kept bits are all zero"},
    {0xFF812345u, 0xFFC1, 0xFE09, "negative signaling NaN: sign and top payload bits kept"},
    {0x7FBFFFFFu, 0x7FFF, 0x7FFF, "signaling NaN, full payload"},
    {0xFFFFFFFFu, 0xFFFF, 0xFFFF, "all ones"},
};
// clang-format on

TEST(ReferenceCasts, EncodeFacts) {
  for (const EncodeFact& fact : kEncodeFacts) {
    const float x = float_of(fact.f32);
    EXPECT_EQ(hex(ref::f32_to_bf16(x), 4), hex(fact.bf16, 4)) << "bf16 of " << describe_f32(fact.f32) << ": " << fact.why;
    EXPECT_EQ(hex(ref::f32_to_f16(x), 4), hex(fact.f16, 4)) << "fp16 of " << describe_f32(fact.f32) << ": " << fact.why;
  }
  // The literals the facts stand for.
  EXPECT_EQ(ref::f32_to_bf16(1.00390625f), 0x3F80);
  EXPECT_EQ(ref::f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(ref::f32_to_f16(65519.996f), 0x7BFF);
  EXPECT_EQ(ref::f32_to_f16(65520.0f), 0x7C00);
  EXPECT_EQ(ref::f32_to_f16(0x1p-24f), 0x0001);
  EXPECT_EQ(ref::f32_to_f16(0x1p-25f), 0x0000);
  EXPECT_EQ(ref::f32_to_f16(0x1p-25f * 1.0000001f), 0x0001);
  EXPECT_EQ(ref::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(ref::f32_to_bf16(-0.0f), 0x8000);
}

struct DecodeFact {
  uint16_t bits;
  uint32_t f32;
};

TEST(ReferenceCasts, DecodeFacts) {
  const DecodeFact bf16[] = {
      {0x0001, 0x00010000u}, {0x007F, 0x007F0000u}, {0x0080, 0x00800000u}, {0x3F80, 0x3F800000u},
      {0xC000, 0xC0000000u}, {0x7F7F, 0x7F7F0000u}, {0x7F80, 0x7F800000u}, {0xFF80, 0xFF800000u},
      {0x7F81, 0x7FC10000u}, {0xFF81, 0xFFC10000u}, {0x7FC0, 0x7FC00000u}, {0x8000, 0x80000000u},
  };
  const DecodeFact f16[] = {
      {0x0001, 0x33800000u}, {0x03FF, 0x387FC000u}, {0x0400, 0x38800000u}, {0x3C00, 0x3F800000u},
      {0x3555, 0x3EAAA000u}, {0x7BFF, 0x477FE000u}, {0x7C00, 0x7F800000u}, {0xFC00, 0xFF800000u},
      {0x7C01, 0x7FC02000u}, {0xFC01, 0xFFC02000u}, {0x7E00, 0x7FC00000u}, {0x7FFF, 0x7FFFE000u},
      {0x8000, 0x80000000u}, {0x8001, 0xB3800000u},
  };
  for (const DecodeFact& fact : bf16) {
    EXPECT_EQ(hex(bits_of(ref::bf16_to_f32(fact.bits)), 8), hex(fact.f32, 8)) << "bf16 " << hex(fact.bits, 4);
  }
  for (const DecodeFact& fact : f16) {
    EXPECT_EQ(hex(bits_of(ref::f16_to_f32(fact.bits)), 8), hex(fact.f32, 8)) << "fp16 " << hex(fact.bits, 4);
  }
}

// ---- Reference: the span entry points --------------------------------------------------------------

TEST(ReferenceCasts, SpansMatchScalars) {
  std::vector<uint32_t> bits = special_inputs();
  push_random(bits, 4096, 7);
  std::vector<float> in;
  for (const uint32_t b : bits) in.push_back(float_of(b));
  std::vector<uint16_t> bf16(in.size()), f16(in.size());
  ref::cast_f32_to_bf16(in, bf16);
  ref::cast_f32_to_f16(in, f16);
  Mismatches to_bf16("cast_f32_to_bf16 vs f32_to_bf16"), to_f16("cast_f32_to_f16 vs f32_to_f16");
  for (size_t i = 0; i < in.size(); ++i) {
    if (bf16[i] != ref::f32_to_bf16(in[i])) to_bf16.add(describe_f32(bits[i]), ref::f32_to_bf16(in[i]), bf16[i], 4);
    if (f16[i] != ref::f32_to_f16(in[i])) to_f16.add(describe_f32(bits[i]), ref::f32_to_f16(in[i]), f16[i], 4);
  }
  EXPECT_NO_MISMATCHES(to_bf16);
  EXPECT_NO_MISMATCHES(to_f16);

  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> from_bf16(all.size()), from_f16(all.size());
  ref::cast_bf16_to_f32(all, from_bf16);
  ref::cast_f16_to_f32(all, from_f16);
  Mismatches bf16_back("cast_bf16_to_f32 vs bf16_to_f32"), f16_back("cast_f16_to_f32 vs f16_to_f32");
  for (size_t i = 0; i < all.size(); ++i) {
    const uint32_t want_bf16 = bits_of(ref::bf16_to_f32(all[i]));
    const uint32_t want_f16 = bits_of(ref::f16_to_f32(all[i]));
    if (bits_of(from_bf16[i]) != want_bf16) bf16_back.add(hex(all[i], 4), want_bf16, bits_of(from_bf16[i]), 8);
    if (bits_of(from_f16[i]) != want_f16) f16_back.add(hex(all[i], 4), want_f16, bits_of(from_f16[i]), 8);
  }
  EXPECT_NO_MISMATCHES(bf16_back);
  EXPECT_NO_MISMATCHES(f16_back);

  // Empty spans are fine; mismatched lengths are refused.
  ref::cast_f32_to_bf16({}, {});
  EXPECT_THROW(ref::cast_f32_to_bf16(std::span<const float>(in).first(3), std::span<uint16_t>(bf16).first(2)),
               std::invalid_argument);
  EXPECT_THROW(ref::cast_f32_to_f16(std::span<const float>(in).first(1), std::span<uint16_t>(f16).first(2)),
               std::invalid_argument);
  EXPECT_THROW(ref::cast_bf16_to_f32(std::span<const uint16_t>(all).first(2), std::span<float>(from_bf16).first(3)),
               std::invalid_argument);
  EXPECT_THROW(ref::cast_f16_to_f32(std::span<const uint16_t>(all).first(0), std::span<float>(from_f16).first(1)),
               std::invalid_argument);
}

// The contract is ties-to-even whatever the caller's rounding mode; the caller's mode is restored.
TEST(ReferenceCasts, IndependentOfTheCallersRoundingMode) {
  for (const int mode : {FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO}) {
    ASSERT_EQ(std::fesetround(mode), 0);
    const uint16_t bf16_tie_down = ref::f32_to_bf16(float_of(0x3F808000u));
    const uint16_t bf16_tie_up = ref::f32_to_bf16(float_of(0x3F818000u));
    const uint16_t f16_tie = ref::f32_to_f16(float_of(0x33000000u));
    const uint16_t f16_below = ref::f32_to_f16(float_of(0xBF801001u));
    const int after = std::fegetround();
    std::vector<float> in = {float_of(0x3F808000u), float_of(0xC77FF000u)};
    std::vector<uint16_t> out(2);
    ref::cast_f32_to_f16(in, out);
    const int after_span = std::fegetround();
    std::fesetround(FE_TONEAREST);
    EXPECT_EQ(bf16_tie_down, 0x3F80) << mode;
    EXPECT_EQ(bf16_tie_up, 0x3F82) << mode;
    EXPECT_EQ(f16_tie, 0x0000) << mode;
    EXPECT_EQ(f16_below, 0xBC01) << mode;
    EXPECT_EQ(out[0], 0x3C04) << mode;
    EXPECT_EQ(out[1], 0xFC00) << mode;
    EXPECT_EQ(after, mode);
    EXPECT_EQ(after_span, mode);
  }
}

// ---- CUDA: bit-compared with the reference ---------------------------------------------------------

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA

namespace opt = gauge::optimized::precision;
using gauge::DType;
using gauge::gpu::Session;

template <class T>
uint32_t raw_bits(T value) {
  if constexpr (std::is_same_v<T, float>) {
    return bits_of(value);
  } else {
    return value;
  }
}
template <class T>
constexpr int hex_digits = 2 * static_cast<int>(sizeof(T));

// One cast, both sides: the device entry point and the reference it must reproduce bit for bit.
template <class In, class Out>
struct DeviceCast {
  const char* name;
  DType in_dtype;
  DType out_dtype;
  void (*optimized)(const In*, Out*, int64_t, gauge::StreamHandle);
  void (*reference)(std::span<const In>, std::span<Out>);

  std::vector<Out> expected(const std::vector<In>& input) const {
    std::vector<Out> out(input.size());
    reference(input, out);
    return out;
  }
};

const DeviceCast<float, uint16_t> kToBf16{"cast_f32_to_bf16", DType::f32, DType::bf16, opt::cast_f32_to_bf16,
                                          ref::cast_f32_to_bf16};
const DeviceCast<float, uint16_t> kToF16{"cast_f32_to_f16", DType::f32, DType::f16, opt::cast_f32_to_f16,
                                         ref::cast_f32_to_f16};
const DeviceCast<uint16_t, float> kFromBf16{"cast_bf16_to_f32", DType::bf16, DType::f32, opt::cast_bf16_to_f32,
                                            ref::cast_bf16_to_f32};
const DeviceCast<uint16_t, float> kFromF16{"cast_f16_to_f32", DType::f16, DType::f32, opt::cast_f16_to_f32,
                                           ref::cast_f16_to_f32};

// Extra elements after the written range (poisoned output) and after the read range (input).
constexpr int64_t kGuard = 16;

// Runs `cast` on `input` placed `in_offset` elements into a larger device buffer, writing
// `out_offset` elements into a buffer poisoned with 0xFF bytes; then checks every written element
// against `expected` and that every element outside the written range is still poison.
template <class In, class Out>
void check_on_device(Session& session, const DeviceCast<In, Out>& cast, const std::vector<In>& input,
                     const std::vector<Out>& expected, int64_t in_offset, int64_t out_offset) {
  const auto n = static_cast<int64_t>(input.size());
  const std::string what = std::string(cast.name) + " n=" + std::to_string(n) +
                           " in_offset=" + std::to_string(in_offset) + " out_offset=" + std::to_string(out_offset);
  SCOPED_TRACE(what);

  gauge::HostTensor host_in("in", cast.in_dtype, {in_offset + n + kGuard});
  std::copy(input.begin(), input.end(), host_in.view<In>().begin() + in_offset);
  const gauge::DeviceTensor device_in = session.upload(host_in);
  const gauge::DeviceTensor device_out = session.allocate_poisoned("out", cast.out_dtype, {out_offset + n + kGuard});

  cast.optimized(static_cast<const In*>(device_in.ptr) + in_offset, static_cast<Out*>(device_out.ptr) + out_offset, n,
                 session.stream());
  session.synchronize();
  const gauge::HostTensor host_out = session.download(device_out);
  const std::span<const Out> out = host_out.view<Out>();
  ASSERT_EQ(static_cast<int64_t>(out.size()), out_offset + n + kGuard);

  Mismatches values(what);
  for (int64_t i = 0; i < n; ++i) {
    const Out got = out[static_cast<size_t>(out_offset + i)];
    const Out want = expected[static_cast<size_t>(i)];
    if (raw_bits(got) != raw_bits(want)) {
      values.add(hex(raw_bits(input[static_cast<size_t>(i)]), hex_digits<In>) + " at " + std::to_string(i),
                 raw_bits(want), raw_bits(got), hex_digits<Out>);
    }
  }
  EXPECT_NO_MISMATCHES(values);

  Mismatches poison(what + ": written outside [out_offset, out_offset + n)");
  const std::span<const unsigned char> bytes = host_out.view<unsigned char>();
  const auto first_written = static_cast<size_t>(out_offset) * sizeof(Out);
  const auto end_written = static_cast<size_t>(out_offset + n) * sizeof(Out);
  for (size_t b = 0; b < bytes.size(); ++b) {
    if ((b < first_written || b >= end_written) && bytes[b] != 0xFF) {
      poison.add("byte " + std::to_string(b), 0xFF, bytes[b], 2);
    }
  }
  EXPECT_NO_MISMATCHES(poison);
}

std::unique_ptr<Session> open_session() {
  auto session = Session::open();
  session->begin_case();
  return session;
}

// With 16-byte aligned buffers, input offset 1 puts them in phases never aligned together (see
// cast_launch_test.cc), so every element takes the scalar path; offset 0 takes the vector path.
template <class In, class Out>
void check_exhaustive_narrow_input(Session& session, const DeviceCast<In, Out>& cast) {
  std::vector<In> input(65536);
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<In>(i);
  const std::vector<Out> expected = cast.expected(input);
  check_on_device(session, cast, input, expected, 0, 0);
  check_on_device(session, cast, input, expected, 1, 0);
}

// Random inputs for the ragged sweep. The few fp32 NaNs whose bf16 or fp16 result is all ones are
// left out: such a result could not be told from an unwritten (poisoned) output. No bf16 / fp16
// pattern decodes to 0xFFFFFFFF, so narrow inputs need no such care.
template <class In>
std::vector<In> ragged_input(size_t n, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<In> out(n);
  for (In& x : out) {
    if constexpr (std::is_same_v<In, float>) {
      uint32_t bits = 0;
      do {
        bits = rng.next_u32();
      } while (std::isnan(float_of(bits)) && (bf16_nan_rule(bits) == 0xFFFF || f16_nan_rule(bits) == 0xFFFF));
      x = float_of(bits);
    } else {
      x = static_cast<In>(rng.next_u32() >> 16);
    }
  }
  return out;
}

template <class In, class Out>
void ragged_sweep(const DeviceCast<In, Out>& cast) {
  const auto session = open_session();
  const size_t sizes[] = {0, 1, 3, 7, 8, 9, 1000, (size_t{1} << 20) | 3};
  // Both aligned; input misaligned by 1..7 elements; output misaligned by 1..7; both, differently;
  // both by the same k, which gives every scalar head length 1..7 (the others give only 0, 2, 4, 6).
  std::vector<std::pair<int64_t, int64_t>> offsets = {{0, 0}};
  for (int64_t k = 1; k <= 7; ++k) {
    offsets.emplace_back(k, 0);
    offsets.emplace_back(0, k);
    offsets.emplace_back(k, 8 - k);
    offsets.emplace_back(k, k);
  }
  for (const size_t n : sizes) {
    const std::vector<In> input = ragged_input<In>(n, 0x7261676765ull + n);
    const std::vector<Out> expected = cast.expected(input);
    session->begin_case();  // frees the previous size's buffers
    for (const auto& [in_offset, out_offset] : offsets) {
      check_on_device(*session, cast, input, expected, in_offset, out_offset);
    }
  }
}

#endif  // GAUGE_HAS_CUDA

// The CUDA tests exist in every build and skip, with the reason, where no GPU can be used (always so
// in builds without CUDA, where their bodies are compiled out).
TEST(CudaCasts, NarrowToF32AllPatterns) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  check_exhaustive_narrow_input(*session, kFromBf16);
  check_exhaustive_narrow_input(*session, kFromF16);
#endif
}

TEST(CudaCasts, F32ToNarrowSpecialsAndRandom) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  // ~4.8 million inputs: every special class, every narrow neighbourhood, random bit patterns.
  std::vector<float> input;
  for (const uint32_t bits : conversion_inputs(size_t{2} << 20)) input.push_back(float_of(bits));
  // Offset (0, 0): the vector path (packed cvt); (1, 0): every element on the scalar path.
  for (const auto* cast : {&kToBf16, &kToF16}) {
    const std::vector<uint16_t> expected = cast->expected(input);
    check_on_device(*session, *cast, input, expected, 0, 0);
    check_on_device(*session, *cast, input, expected, 1, 0);
  }
#endif
}

TEST(CudaCasts, RaggedSizesAndMisalignedPointersF32ToBf16) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  ragged_sweep(kToBf16);
#endif
}

TEST(CudaCasts, RaggedSizesAndMisalignedPointersF32ToF16) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  ragged_sweep(kToF16);
#endif
}

TEST(CudaCasts, RaggedSizesAndMisalignedPointersBf16ToF32) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  ragged_sweep(kFromBf16);
#endif
}

TEST(CudaCasts, RaggedSizesAndMisalignedPointersF16ToF32) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  ragged_sweep(kFromF16);
#endif
}

}  // namespace

