// Conformance of the fp8 (E4M3 "fn", E5M2) and tf32 conversions.
//
// The reference (reference/precision/fp8.cc) is checked on the CPU against oracles written here
// independently of it: every one of the 256 codes of each format decoded against the textbook formula
// (std::pow), and fp32 -> fp8 against a nearest-value search over the sorted list of every finite fp8
// value (ties to the even code, overflow when the nearest is the first value past the largest finite
// one), in both overflow modes, on several million structured and random fp32 inputs. tf32 likewise
// against a search between the two tf32 neighbours. The optimized side's host-callable bit code
// (optimized/precision/fp8.cuh) is then compared with the reference on the same inputs, and the CUDA
// kernels bit for bit with the reference on ragged sizes and misaligned pointers (skipped without a
// GPU). Every failure prints the input bits, the expected bits and the actual bits.
#include "suites/precision/bit_mismatches.h"
#include "reference/precision/fp8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cfenv>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "harness/dtype.h"
#include "harness/error.h"
#include "harness/gpu.h"
#include "harness/tensor.h"
#include "harness/tests/splitmix64.h"
#include "optimized/precision/fp8.cuh"

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include "optimized/precision/fp8_casts.h"
#endif

namespace {

namespace ref = gauge::reference::precision;
namespace opt = gauge::optimized::precision;
using gauge::precision::Fp8Format;
using gauge::precision::Fp8Overflow;
using gauge::test_support::SplitMix64;

using gauge::test_support::bits_of;
using gauge::test_support::describe_f32;
using gauge::test_support::float_of;
using gauge::test_support::hex;
using gauge::test_support::Mismatches;

// ---- The formats as this test sees them (its own facts, from the OCP spec) ---------------------------

struct Format {
  const char* name;
  Fp8Format format;
  int exponent_bits;
  int mantissa_bits;
  int bias;
  uint8_t max_code;      // largest finite magnitude code
  uint8_t nonsat_code;   // what non-saturating overflow gives: e4m3 NaN 0x7F, e5m2 Inf 0x7C
  bool has_inf;

  // Textbook value of a finite code: (-1)^s 2^(e - bias) (1 + m / 2^k), subnormal 2^(1 - bias) (m / 2^k).
  double value(uint8_t code) const {
    const double e = (code >> mantissa_bits) & ((1 << exponent_bits) - 1);
    const double m = code & ((1 << mantissa_bits) - 1);
    const double k = std::pow(2.0, mantissa_bits);
    const double magnitude = e == 0 ? std::pow(2.0, 1 - bias) * (m / k) : std::pow(2.0, e - bias) * (1.0 + m / k);
    return (code & 0x80u) != 0 ? -magnitude : magnitude;
  }
  bool is_nan(uint8_t code) const {
    const uint8_t magnitude = code & 0x7Fu;
    return has_inf ? magnitude > 0x7C : magnitude == 0x7F;
  }
};

const Format kE4m3{"e4m3", Fp8Format::e4m3, 4, 3, 7, 0x7E, 0x7F, false};
const Format kE5m2{"e5m2", Fp8Format::e5m2, 5, 2, 15, 0x7B, 0x7C, true};
const Format* const kFormats[] = {&kE4m3, &kE5m2};
constexpr Fp8Overflow kModes[] = {Fp8Overflow::saturate, Fp8Overflow::non_saturating};

const char* mode_name(Fp8Overflow o) { return o == Fp8Overflow::saturate ? "saturate" : "non_saturating"; }

// The header's NaN rules, written out literally.
uint8_t nan_rule(const Format& f, uint32_t x_bits) {
  const uint8_t sign = (x_bits & 0x80000000u) != 0 ? uint8_t{0x80} : uint8_t{0x00};
  if (f.format == Fp8Format::e4m3) return static_cast<uint8_t>(sign | 0x7F);
  return static_cast<uint8_t>(sign | 0x7C | 0x02 | ((x_bits >> 21) & 1u));
}
uint32_t decoded_nan_rule(const Format& f, uint8_t code) {
  const uint32_t sign = (code & 0x80u) != 0 ? 0x80000000u : 0u;
  const uint32_t mantissa = code & ((1u << f.mantissa_bits) - 1u);
  return sign | 0x7F800000u | 0x00400000u | (mantissa << (23 - f.mantissa_bits));
}

// fp32 -> fp8 by search: values_[c] is the value of magnitude code c for c = 0 .. max_code (ascending),
// plus one "virtual" entry, the next value of the grid past the largest finite one (e4m3 480, code
// 0x7F; e5m2 65536, code 0x7C). The nearest entry wins, ties go to the even code (the even last
// mantissa bit); picking the virtual entry, or lying beyond it, is an overflow.
class NearestOracle {
 public:
  explicit NearestOracle(const Format& f) : format_(f) {
    for (uint32_t c = 0; c <= f.max_code; ++c) values_.push_back(f.value(static_cast<uint8_t>(c)));
    const double ulp_at_top = values_.back() - values_[values_.size() - 2];
    values_.push_back(values_.back() + ulp_at_top);
  }
  const std::vector<double>& values() const { return values_; }

  uint8_t operator()(uint32_t x_bits, Fp8Overflow overflow) const {
    const float x = float_of(x_bits);
    if (std::isnan(x)) return nan_rule(format_, x_bits);
    const uint8_t sign = (x_bits & 0x80000000u) != 0 ? uint8_t{0x80} : uint8_t{0x00};
    const uint8_t overflow_code = overflow == Fp8Overflow::saturate ? format_.max_code : format_.nonsat_code;
    const double a = std::fabs(static_cast<double>(x));
    const size_t virtual_index = values_.size() - 1;
    size_t pick = virtual_index;
    if (a < values_.back()) {
      const auto it = std::lower_bound(values_.begin(), values_.end(), a);
      const auto hi = static_cast<size_t>(it - values_.begin());
      if (values_[hi] == a) {
        pick = hi;
      } else {
        const size_t lo = hi - 1;  // a > 0 = values_[0]
        const double below = a - values_[lo];
        const double above = values_[hi] - a;
        pick = below < above ? lo : above < below ? hi : (lo % 2 == 0 ? lo : hi);
      }
    }
    if (pick == virtual_index) return static_cast<uint8_t>(sign | overflow_code);
    return static_cast<uint8_t>(sign | pick);
  }

 private:
  const Format& format_;
  std::vector<double> values_;
};

const NearestOracle& oracle(const Format& f) {
  static const NearestOracle e4m3(kE4m3);
  static const NearestOracle e5m2(kE5m2);
  return f.format == Fp8Format::e4m3 ? e4m3 : e5m2;
}

// ---- fp32 inputs ------------------------------------------------------------------------------------

void push_both_signs(std::vector<uint32_t>& out, uint32_t bits) {
  out.push_back(bits & 0x7FFFFFFFu);
  out.push_back(bits | 0x80000000u);
}

// For every grid value v of both formats (the virtual one included) and its upper neighbour w: every
// fp32 within 64 ulps of v and of the midpoint (v + w) / 2 (where ties are decided), plus a few
// hundred fp32 values spread evenly between v and w.
void push_neighbourhoods(std::vector<uint32_t>& out, const Format& f) {
  const std::vector<double>& values = oracle(f).values();
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    const double w = i + 1 < values.size() ? values[i + 1] : 2 * v - values[i - 1];
    for (const double centre : {v, (v + w) / 2}) {
      const auto c = static_cast<float>(centre);
      EXPECT_EQ(static_cast<double>(c), centre) << f.name << " grid point " << centre << " is not an fp32 value";
      const uint32_t cb = bits_of(c);
      for (uint32_t k = 0; k <= 64; ++k) {
        push_both_signs(out, cb + k);
        if (cb >= k) push_both_signs(out, cb - k);
      }
    }
    const uint32_t vb = bits_of(static_cast<float>(v));
    const uint32_t wb = bits_of(static_cast<float>(w));
    for (uint32_t step = 1; step < 256; ++step) push_both_signs(out, vb + static_cast<uint32_t>((uint64_t{wb - vb} * step) / 256));
  }
}

std::vector<uint32_t> special_inputs() {
  std::vector<uint32_t> out;
  const uint32_t fixed[] = {
      0x00000000u, 0x7F800000u, 0x7F7FFFFFu, 0x00800000u, 0x007FFFFFu, 0x00000001u,  // fp32 landmarks
      0x43E00000u, 0x43E80000u, 0x43F00000u, 0x43F80000u, 0x43E7FFFFu, 0x43E80001u,  // 448 / 464 / 480 / 496
      0x47600000u, 0x47700000u, 0x476FFFFFu, 0x47700001u, 0x47800000u, 0x477FFFFFu,  // 57344 / 61440 / 65536
      0x3B000000u, 0x3A800000u, 0x3A800001u, 0x3A7FFFFFu,                            // e4m3 2^-9, 2^-10
      0x37800000u, 0x37000000u, 0x37000001u, 0x36FFFFFFu,                            // e5m2 2^-16, 2^-17
      0x7FC00000u, 0x7FA00000u, 0x7FE00000u, 0x7F800001u, 0x7FBFFFFFu, 0x7FFFFFFFu,  // NaN payloads
      0x7F800001u, 0x7F9FFFFFu, 0x7FDFFFFFu,
  };
  for (const uint32_t bits : fixed) push_both_signs(out, bits);
  return out;
}

// Every fp32 exponent field with random mantissas, and fully random patterns.
void push_random(std::vector<uint32_t>& out, size_t per_exponent, size_t fully_random, uint64_t seed) {
  SplitMix64 rng(seed);
  for (uint32_t exponent = 0; exponent < 256; ++exponent) {
    for (size_t i = 0; i < per_exponent; ++i) {
      out.push_back((rng.next_u32() & 0x80000000u) | (exponent << 23) | (rng.next_u32() & 0x007FFFFFu));
    }
  }
  for (size_t i = 0; i < fully_random; ++i) out.push_back(rng.next_u32());
}

const std::vector<uint32_t>& conversion_inputs() {
  static const std::vector<uint32_t> inputs = [] {
    std::vector<uint32_t> out = special_inputs();
    push_neighbourhoods(out, kE4m3);
    push_neighbourhoods(out, kE5m2);
    push_random(out, 4096, size_t{1} << 20, 0x66703870ull /* "fp8p" */);
    return out;
  }();
  return inputs;
}

// ---- Reference: decoding every code ------------------------------------------------------------------

TEST(ReferenceFp8, DecodeAll256CodesAgainstTheFormula) {
  for (const Format* f : kFormats) {
    Mismatches m(std::string(f->name) + " -> fp32 against the formula");
    for (uint32_t c = 0; c < 256; ++c) {
      const auto code = static_cast<uint8_t>(c);
      uint32_t expected = 0;
      if (f->is_nan(code)) {
        expected = decoded_nan_rule(*f, code);
      } else if (f->has_inf && (code & 0x7Fu) == 0x7C) {
        expected = (code & 0x80u) != 0 ? 0xFF800000u : 0x7F800000u;
      } else {
        expected = bits_of(static_cast<float>(f->value(code)));  // exact: at most 4 significant bits
      }
      const uint32_t actual = bits_of(ref::fp8_to_f32(code, f->format));
      if (actual != expected) m.add(hex(c, 2), expected, actual, 8);
    }
    EXPECT_NO_MISMATCHES(m);
  }
}

TEST(ReferenceFp8, DecodeFactsFromTheSpec) {
  struct Fact {
    Fp8Format format;
    uint8_t code;
    double value;
  };
  const Fact facts[] = {
      {Fp8Format::e4m3, 0x7E, 448.0},   {Fp8Format::e4m3, 0x08, 0x1p-6},     {Fp8Format::e4m3, 0x01, 0x1p-9},
      {Fp8Format::e4m3, 0x07, 0x1.Cp-7}, {Fp8Format::e4m3, 0x38, 1.0},       {Fp8Format::e4m3, 0xC0, -2.0},
      {Fp8Format::e4m3, 0x78, 256.0},   {Fp8Format::e4m3, 0x80, -0.0},       {Fp8Format::e5m2, 0x7B, 57344.0},
      {Fp8Format::e5m2, 0x04, 0x1p-14}, {Fp8Format::e5m2, 0x01, 0x1p-16},    {Fp8Format::e5m2, 0x03, 0x1.8p-15},
      {Fp8Format::e5m2, 0x3C, 1.0},     {Fp8Format::e5m2, 0x7C, HUGE_VAL},   {Fp8Format::e5m2, 0xFC, -HUGE_VAL},
  };
  for (const Fact& fact : facts) {
    const float decoded = ref::fp8_to_f32(fact.code, fact.format);
    EXPECT_EQ(bits_of(decoded), bits_of(static_cast<float>(fact.value))) << hex(fact.code, 2);
  }
  // The only e4m3 NaNs are S.1111.111; 0x7E and 0xFE are finite. The harness decodes the same way.
  EXPECT_TRUE(std::isnan(ref::fp8_to_f32(0x7F, Fp8Format::e4m3)));
  EXPECT_TRUE(std::isnan(ref::fp8_to_f32(0xFF, Fp8Format::e4m3)));
  for (uint32_t c = 0; c < 256; ++c) {
    for (const Format* f : kFormats) {
      const gauge::DType dtype = f->format == Fp8Format::e4m3 ? gauge::DType::e4m3 : gauge::DType::e5m2;
      const auto code = static_cast<uint8_t>(c);
      const double harness = gauge::load_as_double(dtype, &code, 0);
      const double reference = ref::fp8_to_f32(code, f->format);
      if (std::isnan(reference)) {
        EXPECT_TRUE(std::isnan(harness)) << f->name << " " << hex(c, 2);
      } else {
        EXPECT_EQ(harness, reference) << f->name << " " << hex(c, 2);
      }
    }
  }
}

// ---- Reference: encoding against the nearest-value search -------------------------------------------

TEST(ReferenceFp8, OracleSanity) {
  EXPECT_EQ(oracle(kE4m3).values().size(), 0x7Fu + 1);
  EXPECT_EQ(oracle(kE4m3).values()[0x7E], 448.0);
  EXPECT_EQ(oracle(kE4m3).values().back(), 480.0);
  EXPECT_EQ(oracle(kE4m3).values()[1], 0x1p-9);
  EXPECT_EQ(oracle(kE5m2).values()[0x7B], 57344.0);
  EXPECT_EQ(oracle(kE5m2).values().back(), 65536.0);
  EXPECT_EQ(oracle(kE5m2).values()[1], 0x1p-16);
  for (const Format* f : kFormats) {
    const std::vector<double>& v = oracle(*f).values();
    EXPECT_TRUE(std::adjacent_find(v.begin(), v.end(), std::greater_equal<>()) == v.end()) << f->name;
  }
  EXPECT_GT(conversion_inputs().size(), size_t{2'000'000});
}

TEST(ReferenceFp8, EncodeMatchesNearestSearchInBothModes) {
  const std::vector<uint32_t>& inputs = conversion_inputs();
  for (const Format* f : kFormats) {
    for (const Fp8Overflow mode : kModes) {
      Mismatches m(std::string("fp32 -> ") + f->name + " " + mode_name(mode) + " against the nearest-value search");
      for (const uint32_t x : inputs) {
        const uint8_t expected = oracle(*f)(x, mode);
        const uint8_t actual = ref::f32_to_fp8(float_of(x), f->format, mode);
        if (actual != expected) m.add(describe_f32(x), expected, actual, 2);
      }
      EXPECT_NO_MISMATCHES(m);
    }
  }
}

struct EncodeFact {
  uint32_t f32;
  uint8_t e4m3_sat, e4m3_nonsat, e5m2_sat, e5m2_nonsat;
  const char* why;
};

// clang-format off
const EncodeFact kEncodeFacts[] = {
    {0x3F800000u, 0x38, 0x38, 0x3C, 0x3C, "1"},
    {0x43E00000u, 0x7E, 0x7E, 0x5F, 0x5F, "448: e4m3 max; exact in e5m2 too (1.75 * 2^8)"},
    {0x43E80000u, 0x7E, 0x7E, 0x5F, 0x5F, "464 = 448 + half ulp: e4m3 tie -> even 448 (0x7E) in both modes; e5m2 448 nearest"},
    {0x43E80001u, 0x7E, 0x7F, 0x5F, 0x5F, "just above 464: e4m3 rounds to 480, past max: sat 448, nonsat NaN"},
    {0x43F00000u, 0x7E, 0x7F, 0x60, 0x60, "480: e4m3 overflow; e5m2 tie between 448 (odd) and 512 (even, 0x60)"},
    {0x47600000u, 0x7E, 0x7F, 0x7B, 0x7B, "57344: e5m2 max"},
    {0x476FFFFFu, 0x7E, 0x7F, 0x7B, 0x7B, "just below 61440: e5m2 max"},
    {0x47700000u, 0x7E, 0x7F, 0x7B, 0x7C, "61440 = e5m2 max + half ulp: tie -> 2^16 (even), overflow: sat max, nonsat Inf"},
    {0x7F800000u, 0x7E, 0x7F, 0x7B, 0x7C, "+Inf: sat max; e4m3 nonsat NaN; e5m2 nonsat Inf"},
    {0xFF800000u, 0xFE, 0xFF, 0xFB, 0xFC, "-Inf keeps its sign"},
    {0xC3F00000u, 0xFE, 0xFF, 0xE0, 0xE0, "-480"},
    {0x3B000000u, 0x01, 0x01, 0x18, 0x18, "2^-9: smallest e4m3 subnormal; e5m2 normal (exponent field 6)"},
    {0x3A800000u, 0x00, 0x00, 0x14, 0x14, "2^-10: e4m3 tie between 0 and 2^-9 -> +0"},
    {0xBA800000u, 0x80, 0x80, 0x94, 0x94, "-2^-10 -> -0 in e4m3"},
    {0x3A800001u, 0x01, 0x01, 0x14, 0x14, "just above 2^-10 -> smallest e4m3 subnormal"},
    {0x3B400000u, 0x02, 0x02, 0x1A, 0x1A, "3 * 2^-10: e4m3 tie between 0x01 and 0x02 -> 0x02"},
    {0x37000000u, 0x00, 0x00, 0x00, 0x00, "2^-17: e5m2 tie between 0 and 2^-16 -> 0"},
    {0x37800000u, 0x00, 0x00, 0x01, 0x01, "2^-16: smallest e5m2 subnormal; e4m3 underflows"},
    {0x3C780000u, 0x08, 0x08, 0x24, 0x24, "1.9375 * 2^-7: e4m3 7.75 subnormal quanta -> 8 = min normal 2^-6; e5m2 -> 2^-6"},
    {0x41300000u, 0x53, 0x53, 0x4A, 0x4A, "11: exact in e4m3; e5m2 tie between 10 (odd) and 12 (even, 0x4A)"},
    {0x00000001u, 0x00, 0x00, 0x00, 0x00, "smallest fp32 subnormal"},
    {0x80000000u, 0x80, 0x80, 0x80, 0x80, "-0"},
    {0x7FC00000u, 0x7F, 0x7F, 0x7E, 0x7E, "quiet NaN"},
    {0xFFA00000u, 0xFF, 0xFF, 0xFF, 0xFF, "negative signaling NaN with payload bit 21: e5m2 keeps it"},
    {0x7F800001u, 0x7F, 0x7F, 0x7E, 0x7E, "signaling NaN, low payload: quiet NaN, never Inf"},
};
// clang-format on

TEST(ReferenceFp8, EncodeFacts) {
  for (const EncodeFact& fact : kEncodeFacts) {
    const float x = float_of(fact.f32);
    const std::string why = describe_f32(fact.f32) + ": " + fact.why;
    const uint8_t expected[] = {fact.e4m3_sat, fact.e4m3_nonsat, fact.e5m2_sat, fact.e5m2_nonsat};
    int k = 0;
    for (const Format* f : kFormats) {
      for (const Fp8Overflow mode : kModes) {
        // The oracle is the judge of the table's own arithmetic; the reference must agree with both.
        EXPECT_EQ(hex(oracle(*f)(fact.f32, mode), 2), hex(expected[k], 2)) << "table vs oracle, " << f->name << " " << mode_name(mode) << " " << why;
        EXPECT_EQ(hex(ref::f32_to_fp8(x, f->format, mode), 2), hex(expected[k], 2)) << f->name << " " << mode_name(mode) << " " << why;
        ++k;
      }
    }
  }
}

TEST(ReferenceFp8, EveryCodeRoundTrips) {
  for (const Format* f : kFormats) {
    for (const Fp8Overflow mode : kModes) {
      for (uint32_t c = 0; c < 256; ++c) {
        const auto code = static_cast<uint8_t>(c);
        const uint8_t back = ref::f32_to_fp8(ref::fp8_to_f32(code, f->format), f->format, mode);
        uint8_t want = code;
        if (f->is_nan(code)) want = nan_rule(*f, bits_of(ref::fp8_to_f32(code, f->format)));
        if (f->has_inf && (code & 0x7Fu) == 0x7C && mode == Fp8Overflow::saturate) want = (code & 0x80u) | f->max_code;
        EXPECT_EQ(hex(back, 2), hex(want, 2)) << f->name << " " << mode_name(mode) << " code " << hex(c, 2);
      }
    }
  }
}

// ---- Reference: tf32 ----------------------------------------------------------------------------------

// The two tf32 neighbours of |x| are its pattern truncated to 10 mantissa bits and the next tf32 up
// (2^128 past the largest); the nearer wins, a tie goes to the one whose last kept bit is 0.
uint32_t tf32_oracle(uint32_t x_bits) {
  const float x = float_of(x_bits);
  if (std::isnan(x)) return (x_bits & 0xFFFFE000u) | 0x00400000u;
  if (std::isinf(x)) return x_bits;
  const uint32_t sign = x_bits & 0x80000000u;
  const uint32_t lo = x_bits & 0x7FFFE000u;
  const uint32_t hi = lo + 0x2000u;
  const double a = std::fabs(static_cast<double>(x));
  const double lo_value = static_cast<double>(float_of(lo));
  const double hi_value = hi == 0x7F800000u ? std::ldexp(1.0, 128) : static_cast<double>(float_of(hi));
  const double below = a - lo_value;
  const double above = hi_value - a;
  const uint32_t pick = below < above ? lo : above < below ? hi : ((lo & 0x2000u) == 0 ? lo : hi);
  return sign | pick;  // hi == Inf when rounding past the largest tf32
}

TEST(ReferenceTf32, MatchesNearestSearch) {
  std::vector<uint32_t> inputs = conversion_inputs();
  // Ties and their neighbours in every binade: low 13 bits 0x1000 (tie), 0x0FFF, 0x1001, with odd and
  // even kept bits.
  SplitMix64 rng(0x74663332ull);
  for (uint32_t exponent = 0; exponent < 256; ++exponent) {
    for (int i = 0; i < 64; ++i) {
      const uint32_t kept = (rng.next_u32() & 0x007FE000u) | (static_cast<uint32_t>(i & 1) << 13);
      for (const uint32_t low : {0x0FFFu, 0x1000u, 0x1001u, 0x0000u, 0x1FFFu}) {
        push_both_signs(inputs, (exponent << 23) | kept | low);
      }
    }
  }
  for (const uint32_t bits : {0x7F7FF000u, 0x7F7FEFFFu, 0x7F7FE000u, 0x7F7FFFFFu, 0x00001000u, 0x00003000u}) {
    push_both_signs(inputs, bits);
  }
  Mismatches m("fp32 -> tf32 against the nearest-value search");
  for (const uint32_t x : inputs) {
    const uint32_t expected = tf32_oracle(x);
    const uint32_t actual = bits_of(ref::f32_to_tf32(float_of(x)));
    if (actual != expected) m.add(describe_f32(x), expected, actual, 8);
  }
  EXPECT_NO_MISMATCHES(m);
  EXPECT_EQ(bits_of(ref::f32_to_tf32(float_of(0x3F801000u))), 0x3F800000u);  // tie -> even (rna would go up)
  EXPECT_EQ(bits_of(ref::f32_to_tf32(float_of(0x3F803000u))), 0x3F804000u);  // tie -> even, up
  EXPECT_EQ(bits_of(ref::f32_to_tf32(float_of(0x7F7FF000u))), 0x7F800000u);  // max + half ulp -> Inf
  EXPECT_EQ(bits_of(ref::f32_to_tf32(float_of(0x00001000u))), 0x00000000u);  // subnormal tie -> 0
}

// ---- Reference: spans, sizes, rounding mode --------------------------------------------------------------

TEST(ReferenceFp8, SpansMatchScalarsAndRefuseMismatchedSizes) {
  std::vector<float> in;
  for (const uint32_t b : special_inputs()) in.push_back(float_of(b));
  for (const Format* f : kFormats) {
    for (const Fp8Overflow mode : kModes) {
      std::vector<uint8_t> out(in.size());
      ref::cast_f32_to_fp8(in, out, f->format, mode);
      for (size_t i = 0; i < in.size(); ++i) EXPECT_EQ(out[i], ref::f32_to_fp8(in[i], f->format, mode));
    }
    std::vector<uint8_t> codes(256);
    for (size_t i = 0; i < 256; ++i) codes[i] = static_cast<uint8_t>(i);
    std::vector<float> decoded(256);
    ref::cast_fp8_to_f32(codes, decoded, f->format);
    for (size_t i = 0; i < 256; ++i) EXPECT_EQ(bits_of(decoded[i]), bits_of(ref::fp8_to_f32(codes[i], f->format)));
  }
  std::vector<float> tf32(in.size());
  ref::cast_f32_to_tf32(in, tf32);
  for (size_t i = 0; i < in.size(); ++i) EXPECT_EQ(bits_of(tf32[i]), bits_of(ref::f32_to_tf32(in[i])));
  std::vector<uint8_t> two(2);
  std::vector<float> three(3);
  EXPECT_THROW(ref::cast_f32_to_fp8(three, two, Fp8Format::e4m3, Fp8Overflow::saturate), std::invalid_argument);
  EXPECT_THROW(ref::cast_fp8_to_f32(two, three, Fp8Format::e5m2), std::invalid_argument);
  EXPECT_THROW(ref::cast_f32_to_tf32(three, std::span<float>(three).first(2)), std::invalid_argument);
}

TEST(ReferenceFp8, IndependentOfTheCallersRoundingMode) {
  for (const int mode : {FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO}) {
    ASSERT_EQ(std::fesetround(mode), 0);
    const uint8_t tie = ref::f32_to_fp8(464.0f, Fp8Format::e4m3, Fp8Overflow::non_saturating);
    const uint8_t below = ref::f32_to_fp8(-1.0625f, Fp8Format::e4m3, Fp8Overflow::saturate);
    const uint32_t tf32 = bits_of(ref::f32_to_tf32(float_of(0x3F803000u)));
    const int after = std::fegetround();
    std::fesetround(FE_TONEAREST);
    EXPECT_EQ(tie, 0x7E) << mode;
    EXPECT_EQ(below, 0xB8) << mode;  // -1.0625: tie between -1 and -1.125 -> -1 (even)
    EXPECT_EQ(tf32, 0x3F804000u) << mode;
    EXPECT_EQ(after, mode);
  }
}

// ---- The optimized side's host-callable bit code equals the reference --------------------------------

TEST(Fp8BitCode, DecodeEqualsReferenceForAllCodes) {
  for (const Format* f : kFormats) {
    Mismatches m(std::string("fp8.cuh ") + f->name + " -> fp32");
    for (uint32_t c = 0; c < 256; ++c) {
      const auto code = static_cast<uint8_t>(c);
      const uint32_t expected = bits_of(ref::fp8_to_f32(code, f->format));
      const uint32_t actual = bits_of(opt::fp8_to_f32(code, f->format));
      if (actual != expected) m.add(hex(c, 2), expected, actual, 8);
    }
    EXPECT_NO_MISMATCHES(m);
  }
}

TEST(Fp8BitCode, EncodeEqualsReferenceInBothModes) {
  const std::vector<uint32_t>& inputs = conversion_inputs();
  for (const Format* f : kFormats) {
    for (const Fp8Overflow mode : kModes) {
      Mismatches m(std::string("fp8.cuh fp32 -> ") + f->name + " " + mode_name(mode));
      for (const uint32_t x : inputs) {
        const uint8_t expected = ref::f32_to_fp8(float_of(x), f->format, mode);
        const uint8_t actual = opt::f32_to_fp8_rne(float_of(x), f->format, mode == Fp8Overflow::saturate);
        if (actual != expected) m.add(describe_f32(x), expected, actual, 2);
      }
      EXPECT_NO_MISMATCHES(m);
    }
  }
}

// Every fp32 whose magnitude lies in the fp8 formats' whole range (2^-18 .. 2^17), mantissas on a
// stride of 31 (coprime with every power of two, so all low-bit phases occur), against the oracle.
TEST(Fp8BitCode, EncodeDenseSweepAgainstTheOracle) {
  for (const Format* f : kFormats) {
    Mismatches m(std::string("fp8.cuh dense sweep ") + f->name);
    for (uint32_t bits = 0x36800000u; bits < 0x48000000u; bits += 31) {
      for (const Fp8Overflow mode : kModes) {
        const uint8_t expected = oracle(*f)(bits, mode);
        const uint8_t actual = opt::f32_to_fp8_rne(float_of(bits), f->format, mode == Fp8Overflow::saturate);
        if (actual != expected) m.add(describe_f32(bits), expected, actual, 2);
      }
    }
    EXPECT_NO_MISMATCHES(m);
  }
}

TEST(Fp8BitCode, Tf32EqualsReference) {
  Mismatches m("fp8.cuh fp32 -> tf32");
  for (const uint32_t x : conversion_inputs()) {
    const uint32_t expected = bits_of(ref::f32_to_tf32(float_of(x)));
    const uint32_t actual = bits_of(opt::f32_to_tf32_rne(float_of(x)));
    if (actual != expected) m.add(describe_f32(x), expected, actual, 8);
  }
  EXPECT_NO_MISMATCHES(m);
  // A dense sweep of the bit code against the oracle: every 13th pattern of the whole fp32 range.
  Mismatches dense("fp8.cuh tf32 dense sweep");
  for (uint64_t bits = 0; bits <= 0xFFFFFFFFull; bits += 13 * 4099) {
    const auto b = static_cast<uint32_t>(bits);
    if (bits_of(opt::f32_to_tf32_rne(float_of(b))) != tf32_oracle(b)) {
      dense.add(describe_f32(b), tf32_oracle(b), bits_of(opt::f32_to_tf32_rne(float_of(b))), 8);
    }
  }
  EXPECT_NO_MISMATCHES(dense);
}

// ---- CUDA kernels, bit-compared with the reference ------------------------------------------------------

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA

using gauge::DType;
using gauge::gpu::Session;

constexpr int64_t kGuard = 32;

std::unique_ptr<Session> open_session() {
  auto session = Session::open();
  session->begin_case();
  return session;
}

// Runs `launch(in, out, n)` on `input` placed `in_offset` elements into a device buffer, writing
// `out_offset` elements into a poisoned one; compares the written range with `expected` (raw bits)
// and checks that nothing outside it changed.
template <class In, class Out, class Launch>
void check_on_device(Session& session, DType in_dtype, DType out_dtype, const std::vector<In>& input,
                     const std::vector<Out>& expected, int64_t in_offset, int64_t out_offset, const std::string& name,
                     Launch launch) {
  const auto n = static_cast<int64_t>(input.size());
  const std::string what = name + " n=" + std::to_string(n) + " in_offset=" + std::to_string(in_offset) +
                           " out_offset=" + std::to_string(out_offset);
  SCOPED_TRACE(what);
  gauge::HostTensor host_in("in", in_dtype, {in_offset + n + kGuard});
  std::copy(input.begin(), input.end(), host_in.view<In>().begin() + in_offset);
  const gauge::DeviceTensor device_in = session.upload(host_in);
  const gauge::DeviceTensor device_out = session.allocate_poisoned("out", out_dtype, {out_offset + n + kGuard});
  launch(static_cast<const In*>(device_in.ptr) + in_offset, static_cast<Out*>(device_out.ptr) + out_offset, n,
         session.stream());
  session.synchronize();
  const gauge::HostTensor host_out = session.download(device_out);
  const std::span<const Out> out = host_out.view<Out>();
  Mismatches values(what);
  for (int64_t i = 0; i < n; ++i) {
    Out got = out[static_cast<size_t>(out_offset + i)];
    Out want = expected[static_cast<size_t>(i)];
    uint32_t got_bits = 0, want_bits = 0, in_bits = 0;
    std::memcpy(&got_bits, &got, sizeof(Out));
    std::memcpy(&want_bits, &want, sizeof(Out));
    std::memcpy(&in_bits, &input[static_cast<size_t>(i)], sizeof(In));
    if (got_bits != want_bits) values.add(hex(in_bits, 2 * sizeof(In)) + " at " + std::to_string(i), want_bits, got_bits, 2 * sizeof(Out));
  }
  EXPECT_NO_MISMATCHES(values);
  Mismatches poison(what + ": written outside the range");
  const std::span<const unsigned char> bytes = host_out.view<unsigned char>();
  for (size_t b = 0; b < bytes.size(); ++b) {
    const bool written = b >= static_cast<size_t>(out_offset) * sizeof(Out) && b < static_cast<size_t>(out_offset + n) * sizeof(Out);
    if (!written && bytes[b] != 0xFF) poison.add("byte " + std::to_string(b), 0xFF, bytes[b], 2);
  }
  EXPECT_NO_MISMATCHES(poison);
}

std::vector<std::pair<int64_t, int64_t>> offsets() {
  std::vector<std::pair<int64_t, int64_t>> out = {{0, 0}};
  for (int64_t k = 1; k <= 15; k += 2) {
    out.emplace_back(k, 0);
    out.emplace_back(0, k);
    out.emplace_back(k, k);
  }
  out.emplace_back(4, 0);
  out.emplace_back(0, 4);
  return out;
}

// fp32 inputs for the kernels: special values, random patterns; NaNs whose fp8 result would be 0xFF
// (indistinguishable from the poison) are kept: every written byte is checked against the reference,
// and the poison check only looks outside the written range.
std::vector<float> device_inputs(size_t n, uint64_t seed) {
  SplitMix64 rng(seed);
  const std::vector<uint32_t> specials = special_inputs();
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t r = rng.next_u32();
    out[i] = float_of(i % 7 == 0 ? specials[r % specials.size()]
                                 : i % 2 == 0 ? ((r & 0x80000000u) | ((100u + (r >> 8) % 50u) << 23) | (rng.next_u32() & 0x7FFFFFu))
                                              : r);
  }
  return out;
}

const size_t kSizes[] = {0, 1, 3, 15, 16, 17, 33, 1000, (size_t{1} << 20) + 3};

TEST(CudaFp8, F32ToFp8RaggedAndMisaligned) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  const auto session = open_session();
  for (const size_t n : kSizes) {
    const std::vector<float> input = device_inputs(n, 0x1000 + n);
    session->begin_case();
    for (const Format* f : kFormats) {
      for (const Fp8Overflow mode : kModes) {
        std::vector<uint8_t> expected(n);
        ref::cast_f32_to_fp8(input, expected, f->format, mode);
        for (const auto& [in_offset, out_offset] : offsets()) {
          check_on_device(*session, DType::f32, f->format == Fp8Format::e4m3 ? DType::e4m3 : DType::e5m2, input,
                          expected, in_offset, out_offset, std::string("cast_f32_to_fp8 ") + f->name + " " + mode_name(mode),
                          [&](const float* in, uint8_t* out, int64_t count, gauge::StreamHandle stream) {
                            gauge::optimized::precision::cast_f32_to_fp8(in, out, count, f->format, mode, stream);
                          });
        }
      }
    }
  }
}

TEST(CudaFp8, Fp8ToF32AllCodesRaggedAndMisaligned) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  const auto session = open_session();
  for (const size_t n : kSizes) {
    std::vector<uint8_t> input(n);
    for (size_t i = 0; i < n; ++i) input[i] = static_cast<uint8_t>((i * 37u + n) & 0xFFu);  // every code
    session->begin_case();
    for (const Format* f : kFormats) {
      std::vector<float> expected(n);
      ref::cast_fp8_to_f32(input, expected, f->format);
      for (const auto& [in_offset, out_offset] : offsets()) {
        check_on_device(*session, f->format == Fp8Format::e4m3 ? DType::e4m3 : DType::e5m2, DType::f32, input, expected,
                        in_offset, out_offset, std::string("cast_fp8_to_f32 ") + f->name,
                        [&](const uint8_t* in, float* out, int64_t count, gauge::StreamHandle stream) {
                          gauge::optimized::precision::cast_fp8_to_f32(in, out, count, f->format, stream);
                        });
      }
    }
  }
}

TEST(CudaFp8, F32ToTf32RaggedAndMisaligned) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  const auto session = open_session();
  for (const size_t n : kSizes) {
    const std::vector<float> input = device_inputs(n, 0x2000 + n);
    std::vector<float> expected(n);
    ref::cast_f32_to_tf32(input, expected);
    session->begin_case();
    for (const auto& [in_offset, out_offset] : offsets()) {
      check_on_device(*session, DType::f32, DType::f32, input, expected, in_offset, out_offset, "cast_f32_to_tf32",
                      [](const float* in, float* out, int64_t count, gauge::StreamHandle stream) {
                        gauge::optimized::precision::cast_f32_to_tf32(in, out, count, stream);
                      });
    }
  }
}

TEST(CudaFp8, BadArgumentsAreUsageErrors) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  const auto session = open_session();
  const gauge::DeviceTensor buffer = session->allocate_poisoned("b", DType::f32, {64});
  auto* base = static_cast<unsigned char*>(buffer.ptr);
  EXPECT_THROW(gauge::optimized::precision::cast_f32_to_fp8(reinterpret_cast<const float*>(base), base + 4, -1,
                                                           Fp8Format::e4m3, Fp8Overflow::saturate, session->stream()),
               gauge::UsageError);
  EXPECT_THROW(gauge::optimized::precision::cast_f32_to_fp8(reinterpret_cast<const float*>(base + 2), base + 128, 4,
                                                           Fp8Format::e4m3, Fp8Overflow::saturate, session->stream()),
               gauge::UsageError);
  EXPECT_THROW(gauge::optimized::precision::cast_f32_to_fp8(reinterpret_cast<const float*>(base), base + 8, 16,
                                                           Fp8Format::e4m3, Fp8Overflow::saturate, session->stream()),
               gauge::UsageError);  // overlap
}

#else

TEST(CudaFp8, KernelsBitIdenticalToReference) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
}

#endif  // GAUGE_HAS_CUDA

}  // namespace
