// GEMM in every precision: the reference against hand-computed products and independent format
// oracles, the faithful low-precision reference against the fp64 truth, the problem checks (bad input
// is one clear UsageError), the row-major -> cuBLASLt column-major mapping (emulated on the CPU), the
// declared cases, and on a GPU every dtype configuration end to end through the harness.
#include "reference/precision/gemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/compare.h"
#include "harness/device.h"
#include "harness/error.h"
#include "harness/gpu.h"
#include "harness/inputs.h"
#include "harness/memory.h"
#include "harness/runner.h"
#include "harness/tolerance.h"
#include "optimized/precision/gemm_problem.h"

namespace {

namespace ref = gauge::reference::precision;
using gauge::DType;
using gauge::HostTensor;
using gauge::optimized::precision::GemmMath;
using gauge::optimized::precision::GemmShape;
using gauge::optimized::precision::GemmTypes;

HostTensor f32_tensor(std::string name, gauge::Shape shape, const std::vector<float>& values) {
  HostTensor t(std::move(name), DType::f32, std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.numel()), values.size());
  std::copy(values.begin(), values.end(), t.view<float>().begin());
  return t;
}

// The error message of `f`'s UsageError; fails when it throws nothing or something else.
std::string usage_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const gauge::UsageError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << "one line expected: " << what;
    return what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a UsageError, got: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected a UsageError, nothing was thrown";
  return {};
}

// ---- Reference: hand-computed products ---------------------------------------------------------------

TEST(GemmReference, HandComputedProductF32) {
  // A [2,3], B [2,3] (N = 2): D = A Bᵀ.
  const HostTensor a = f32_tensor("a", {2, 3}, {1, 2, 3, 4, 5, 6});
  const HostTensor b = f32_tensor("b", {2, 3}, {7, 8, 9, -1, 0, 2});
  const double expected[] = {1 * 7 + 2 * 8 + 3 * 9, -1 + 0 + 6, 4 * 7 + 5 * 8 + 6 * 9, -4 + 0 + 12};
  const HostTensor truth = ref::gemm_truth(a, b);
  const HostTensor faithful = ref::gemm_faithful(a, b, DType::f32);
  ASSERT_EQ(truth.dtype(), DType::f64);
  ASSERT_EQ(truth.shape(), (gauge::Shape{2, 2}));
  ASSERT_EQ(faithful.shape(), (gauge::Shape{2, 2}));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(truth.view<double>()[i], expected[i]) << i;
    EXPECT_EQ(faithful.view<float>()[i], static_cast<float>(expected[i])) << i;
  }
}

TEST(GemmReference, ScalesMultiplyTheProduct) {
  const HostTensor a = f32_tensor("a", {1, 2}, {3, 5});
  const HostTensor b = f32_tensor("b", {3, 2}, {1, 1, 2, 0, 0, -4});
  const HostTensor truth = ref::gemm_truth(a, b, 0.5f, 0.25f);
  EXPECT_EQ(truth.view<double>()[0], 8 * 0.125);
  EXPECT_EQ(truth.view<double>()[1], 6 * 0.125);
  EXPECT_EQ(truth.view<double>()[2], -20 * 0.125);
}

TEST(GemmReference, FaithfulRoundsOnceToTheOutputFormat) {
  // 256 + 1 = 257 is exact in fp32 and a tie between the bf16 neighbours 256 and 258: even -> 256.
  // 2048 + 1 = 2049 is a tie between the fp16 neighbours 2048 and 2050: even -> 2048.
  const HostTensor a = f32_tensor("a", {2, 2}, {256, 1, 2048, 1});
  const HostTensor b = f32_tensor("b", {1, 2}, {1, 1});
  const HostTensor truth = ref::gemm_truth(a, b);
  EXPECT_EQ(truth.view<double>()[0], 257.0);
  EXPECT_EQ(truth.view<double>()[1], 2049.0);
  const HostTensor bf16 = ref::gemm_faithful(a, b, DType::bf16);
  const HostTensor f16 = ref::gemm_faithful(a, b, DType::f16);
  EXPECT_EQ(bf16.dtype(), DType::bf16);
  EXPECT_EQ(bf16.at_as_double(0), 256.0);
  EXPECT_EQ(f16.at_as_double(1), 2048.0);
}

TEST(GemmReference, FaithfulAccumulatesInFp32) {
  // 2^24 + 1 - 2^24: fp32 loses the 1 (2^24 + 1 rounds to 2^24), fp64 keeps it.
  const HostTensor a = f32_tensor("a", {1, 3}, {16777216.0f, 1.0f, -16777216.0f});
  const HostTensor b = f32_tensor("b", {1, 3}, {1, 1, 1});
  EXPECT_EQ(ref::gemm_truth(a, b).view<double>()[0], 1.0);
  EXPECT_EQ(ref::gemm_faithful(a, b, DType::f32).view<float>()[0], 0.0f);
}

TEST(GemmReference, NarrowOperandsDecodeExactly) {
  // bf16 1.5 = 0x3FC0, fp16 -2.25 = 0xC080; e4m3 0x3C = 1.5, e5m2 0xC1 = -2.5.
  HostTensor a_bf16("a", DType::bf16, {1, 1});
  HostTensor b_f16("b", DType::f16, {1, 1});
  a_bf16.view<uint16_t>()[0] = 0x3FC0;
  b_f16.view<uint16_t>()[0] = 0xC080;
  EXPECT_EQ(ref::gemm_truth(a_bf16, b_f16).view<double>()[0], 1.5 * -2.25);
  HostTensor a8("a", DType::e4m3, {1, 1});
  HostTensor b8("b", DType::e5m2, {1, 1});
  a8.view<uint8_t>()[0] = 0x3C;
  b8.view<uint8_t>()[0] = 0xC1;
  EXPECT_EQ(ref::gemm_truth(a8, b8, 2.0f, 0.5f).view<double>()[0], 1.5 * -2.5);
  EXPECT_EQ(ref::gemm_faithful(a8, b8, DType::bf16, 2.0f, 0.5f).at_as_double(0), 1.5 * -2.5);
}

// ---- Input formats (the conversions themselves are tested with reference/precision/fp8.h) ---------

TEST(GemmFormats, PowerOfTwoFp8QuantizationIsExactToDequantize) {
  const HostTensor x = gauge::inputs::uniform_f32("x", {4096}, 7, 0, -0.75f, 0.75f);
  for (const DType format : {DType::e4m3, DType::e5m2}) {
    const ref::Fp8Quantized q = ref::quantize_fp8_pow2(x, format, "xq");
    EXPECT_EQ(q.values.dtype(), format);
    int exponent = 0;
    EXPECT_EQ(std::frexp(q.dequant_scale, &exponent), 0.5f) << "a power of two";
    // amax < 0.75: e4m3 448 / 0.75 = 597 -> 2^9; e5m2 57344 / 0.75 = 76458 -> 2^16.
    EXPECT_EQ(q.dequant_scale, format == DType::e4m3 ? std::ldexp(1.0f, -9) : std::ldexp(1.0f, -16));
    const double u = gauge::unit_roundoff(format);
    // Half the smallest subnormal (e4m3 2^-9, e5m2 2^-16), in dequantized units.
    const double half_subnormal = std::ldexp(static_cast<double>(q.dequant_scale), format == DType::e4m3 ? -10 : -17);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double original = x.view<float>()[i];
      const double dequantized = q.values.at_as_double(i) * q.dequant_scale;
      ASSERT_LE(std::fabs(dequantized - original), u * std::fabs(original) + half_subnormal) << i;
    }
  }
}

TEST(GemmFormats, Tf32InputsAreRoundedToNearestTf32) {
  const HostTensor x = gauge::inputs::uniform_f32("x", {64, 301}, 11, 0, -1.0f, 1.0f);
  const HostTensor t = ref::round_f32_tensor(x, DType::tf32, "t");
  EXPECT_EQ(t.dtype(), DType::tf32);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float original = x.view<float>()[i];
    const float rounded = t.view<float>()[i];
    uint32_t bits = 0;
    std::memcpy(&bits, &rounded, sizeof bits);
    ASSERT_EQ(bits & 0x1FFFu, 0u) << i;
    int e = 0;
    std::frexp(original, &e);  // |x| in [2^(e-1), 2^e): tf32 spacing 2^(e-1-10)
    ASSERT_LE(std::fabs(static_cast<double>(rounded) - original), std::ldexp(1.0, e - 1 - 11)) << i;
  }
}

// ---- The faithful reference against the truth --------------------------------------------------------

const gauge::CaseDecl& gemm_case(const std::string& name) {
  const gauge::CaseDecl* decl = gauge::find_case("precision/" + name);
  if (decl == nullptr) throw std::runtime_error("case precision/" + name + " is not registered");
  return *decl;
}

const char* const kGemmCases[] = {"gemm_f32",           "gemm_tf32",           "gemm_f16",          "gemm_bf16",
                                  "gemm_e4m3_e4m3_bf16", "gemm_e4m3_e5m2_bf16", "gemm_e4m3_e4m3_f32",
                                  "gemm_e4m3_e4m3_bf16_fast_accum"};

// The faithful reference is an fp32-accumulated sum rounded once: within u(out) + gamma_K(u(fp32))
// of the truth, at magnitude E sum|a b| = K/4 (tolerance::accumulation).
TEST(GemmFaithful, WithinTheAccumulationBoundOfTheTruth) {
  for (const char* name : kGemmCases) {
    const gauge::CaseDecl& decl = gemm_case(name);
    for (const gauge::Point& point : decl.points) {
      if (!point.quick) continue;
      SCOPED_TRACE(std::string(name) + " " + point.label());
      const auto in = decl.inputs(point, gauge::inputs::kDefaultSeed);
      const gauge::ReferenceResult r = decl.reference(point, in);
      ASSERT_EQ(r.outputs.size(), 1u);
      ASSERT_EQ(r.faithful.size(), 1u);
      const int64_t k = point.dim("k");
      const auto rule = gauge::tolerance::accumulation(r.faithful[0].dtype(), DType::f32, k, static_cast<double>(k) / 4);
      const gauge::Agreement agreement = gauge::compare(r.faithful[0], r.outputs[0], rule);
      EXPECT_TRUE(agreement.pass()) << agreement.report();
      // And the case's own rule accepts the faithful reference itself.
      const gauge::Agreement self = gauge::compare(r.faithful[0], r.outputs[0], decl.tolerance(point), &r.faithful[0]);
      EXPECT_TRUE(self.pass()) << self.report();
      // The narrow outputs' error comes from the final rounding: it must show (not exact by accident).
      if (r.faithful[0].dtype() != DType::f32) {
        EXPECT_GT(agreement.max_abs_error, 0.0);
      }
    }
  }
}

TEST(GemmFaithful, OutputRoundingDominatesForNarrowOutputs) {
  // bf16 output: |faithful - truth| <= half a bf16 ulp of the truth, plus fp32 accumulation noise.
  const gauge::CaseDecl& decl = gemm_case("gemm_bf16");
  const gauge::Point& point = decl.points.front();
  const auto in = decl.inputs(point, gauge::inputs::kDefaultSeed);
  const gauge::ReferenceResult r = decl.reference(point, in);
  const int64_t k = point.dim("k");
  for (int64_t i = 0; i < r.outputs[0].numel(); ++i) {
    const double t = r.outputs[0].view<double>()[i];
    const double f = r.faithful[0].at_as_double(i);
    int e = 0;
    std::frexp(t, &e);
    const double half_ulp = std::ldexp(1.0, e - 1 - 8);
    ASSERT_LE(std::fabs(f - t), half_ulp + gauge::tolerance::gamma(k, 0x1.0p-24) * static_cast<double>(k)) << i;
  }
}

// ---- Problem checks: bad input is one UsageError line ------------------------------------------------

TEST(GemmProblem, SupportedCombinations) {
  using gauge::optimized::precision::validate_gemm;
  const GemmShape s{32, 48, 64};
  EXPECT_EQ(validate_gemm(s, {DType::f32, DType::f32, DType::f32}), GemmMath::f32_fma);
  EXPECT_EQ(validate_gemm(s, {DType::tf32, DType::tf32, DType::f32}), GemmMath::tf32_tensor);
  EXPECT_EQ(validate_gemm(s, {DType::f16, DType::f16, DType::f16}), GemmMath::f16_tensor);
  EXPECT_EQ(validate_gemm(s, {DType::bf16, DType::bf16, DType::f32}), GemmMath::bf16_tensor);
  EXPECT_EQ(validate_gemm(s, {DType::e4m3, DType::e5m2, DType::bf16}), GemmMath::fp8_tensor);
  EXPECT_EQ(validate_gemm(s, {DType::e5m2, DType::e4m3, DType::f32}), GemmMath::fp8_tensor);
  EXPECT_EQ(validate_gemm({3, 5, 7}, {DType::bf16, DType::bf16, DType::bf16}), GemmMath::bf16_tensor);
}

TEST(GemmProblem, BadDtypesAndShapesAreUsageErrors) {
  using gauge::optimized::precision::gemm_shape_of;
  using gauge::optimized::precision::validate_gemm;
  const GemmShape s{32, 48, 64};
  EXPECT_NE(usage_error([&] { validate_gemm(s, {DType::e5m2, DType::e5m2, DType::bf16}); }).find("e5m2 x e5m2"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { validate_gemm({40, 48, 64}, {DType::e4m3, DType::e4m3, DType::bf16}); })
                .find("multiples of 16"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { validate_gemm(s, {DType::f16, DType::bf16, DType::f16}); }).find("unsupported GEMM dtypes"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { validate_gemm(s, {DType::f32, DType::f32, DType::bf16}); }).find("f32 x f32 -> bf16"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { validate_gemm(s, {DType::e4m3, DType::e4m3, DType::e4m3}); }).find("unsupported"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { validate_gemm(s, {DType::i32, DType::i32, DType::i32}); }).find("unsupported"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { validate_gemm({0, 48, 64}, {DType::f32, DType::f32, DType::f32}); }).find("positive"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { validate_gemm(s, {DType::bf16, DType::bf16, DType::bf16, true}); })
                .find("fast accumulation applies to fp8 GEMMs only"),
            std::string::npos);
  EXPECT_EQ(validate_gemm(s, {DType::e4m3, DType::e4m3, DType::bf16, true}), GemmMath::fp8_tensor);
  EXPECT_NE(usage_error([&] { gemm_shape_of({4, 8}, {5, 9}, {4, 5}); }).find("inner dimensions differ"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { gemm_shape_of({4, 8}, {5, 8}, {5, 4}); }).find("must be [M,N] = [4, 5]"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { gemm_shape_of({4, 8, 1}, {5, 8}, {4, 5}); }).find("2-D"), std::string::npos);
  const GemmShape ok = gemm_shape_of({4, 8}, {5, 8}, {4, 5});
  EXPECT_EQ(ok.m, 4);
  EXPECT_EQ(ok.n, 5);
  EXPECT_EQ(ok.k, 8);
}

TEST(GemmProblem, ReferenceRejectsBadOperands) {
  const HostTensor a = f32_tensor("a", {2, 3}, {1, 2, 3, 4, 5, 6});
  const HostTensor b_wrong_k = f32_tensor("b", {2, 2}, {1, 2, 3, 4});
  EXPECT_NE(usage_error([&] { ref::gemm_truth(a, b_wrong_k); }).find("inner dimensions differ"), std::string::npos);
  EXPECT_NE(usage_error([&] { ref::gemm_faithful(a, b_wrong_k, DType::f32); }).find("inner dimensions differ"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { ref::gemm_truth(a, a, NAN, 1.0f); }).find("scale_a"), std::string::npos);
  EXPECT_NE(usage_error([&] { ref::gemm_truth(a, a, 1.0f, -2.0f); }).find("scale_b"), std::string::npos);
  EXPECT_NE(usage_error([&] { ref::gemm_faithful(a, a, DType::e4m3); }).find("output dtype"), std::string::npos);
  HostTensor ints("i", DType::i32, {2, 3});
  EXPECT_NE(usage_error([&] { ref::gemm_truth(ints, a); }).find("unsupported dtype"), std::string::npos);
  HostTensor not_tf32 = f32_tensor("t", {2, 3}, {1, 2, 3, 4, 5, 1.0f + std::ldexp(1.0f, -20)});
  HostTensor tf32("t", DType::tf32, {2, 3});
  std::copy(not_tf32.view<float>().begin(), not_tf32.view<float>().end(), tf32.view<float>().begin());
  EXPECT_NE(usage_error([&] { ref::gemm_truth(tf32, a); }).find("low mantissa bits"), std::string::npos);
  HostTensor vector = f32_tensor("v", {3}, {1, 2, 3});
  EXPECT_NE(usage_error([&] { ref::gemm_truth(vector, a); }).find("2-D"), std::string::npos);
}

// ---- Row-major gauge -> column-major cuBLASLt, emulated --------------------------------------------

// A column-major GEMM as cuBLASLt defines it: D (m x n) = op(A) op(B), element (i, j) at i + j * ld.
std::vector<double> column_major_gemm(const gauge::optimized::precision::LtGemm& g, const std::vector<double>& a,
                                      const std::vector<double>& b) {
  const auto at = [](const std::vector<double>& x, int64_t ld, bool transpose, uint64_t i, uint64_t j) {
    return transpose ? x[j + i * ld] : x[i + j * ld];  // op(X)(i, j)
  };
  std::vector<double> d(static_cast<size_t>(g.d.ld) * g.d.cols);
  for (uint64_t i = 0; i < g.m; ++i) {
    for (uint64_t j = 0; j < g.n; ++j) {
      double sum = 0;
      for (uint64_t l = 0; l < g.k; ++l) sum += at(a, g.a.ld, g.transpose_a, i, l) * at(b, g.b.ld, g.transpose_b, l, j);
      d[i + j * static_cast<uint64_t>(g.d.ld)] = sum;
    }
  }
  return d;
}

TEST(GemmProblem, ColumnMajorMappingReproducesTheRowMajorProduct) {
  const GemmShape s{5, 3, 7};
  const GemmTypes t{DType::e4m3, DType::e5m2, DType::bf16};
  const auto g = gauge::optimized::precision::lt_gemm(s, t);
  // "TN": cuBLASLt's A is gauge's B (op T), its B is gauge's A (op N); D is N x M column-major.
  EXPECT_TRUE(g.transpose_a);
  EXPECT_FALSE(g.transpose_b);
  EXPECT_EQ(g.a.dtype, DType::e5m2);
  EXPECT_EQ(g.b.dtype, DType::e4m3);
  EXPECT_EQ(g.d.dtype, DType::bf16);
  EXPECT_EQ(g.m, 3u);
  EXPECT_EQ(g.n, 5u);
  EXPECT_EQ(g.k, 7u);
  EXPECT_EQ(g.a.rows, 7u);
  EXPECT_EQ(g.a.cols, 3u);
  EXPECT_EQ(g.b.rows, 7u);
  EXPECT_EQ(g.b.cols, 5u);
  EXPECT_EQ(g.d.rows, 3u);
  EXPECT_EQ(g.d.cols, 5u);
  // The K-major leading dimensions fp8 needs.
  EXPECT_EQ(g.a.ld, 7);
  EXPECT_EQ(g.b.ld, 7);
  EXPECT_EQ(g.d.ld, 3);
  std::vector<double> a(static_cast<size_t>(s.m * s.k)), b(static_cast<size_t>(s.n * s.k));
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<double>((i * 7) % 11) - 5;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<double>((i * 5) % 13) - 6;
  // gauge's buffers, handed over as they are: cuBLASLt's A operand is gauge's b.
  const std::vector<double> d = column_major_gemm(g, b, a);
  for (int64_t m = 0; m < s.m; ++m) {
    for (int64_t n = 0; n < s.n; ++n) {
      double expected = 0;
      for (int64_t k = 0; k < s.k; ++k) expected += a[m * s.k + k] * b[n * s.k + k];
      EXPECT_EQ(d[m * s.n + n], expected) << m << "," << n;  // row-major D [M, N]
    }
  }
}

TEST(GemmProblem, DeviceRequirements) {
  using gauge::optimized::precision::gemm_device_unsupported_reason;
  EXPECT_EQ(gemm_device_unsupported_reason(GemmMath::fp8_tensor, 8, 0),
            "fp8 GEMM needs compute capability 8.9+ (this device is 8.0)");
  EXPECT_TRUE(gemm_device_unsupported_reason(GemmMath::fp8_tensor, 8, 9).empty());
  EXPECT_TRUE(gemm_device_unsupported_reason(GemmMath::fp8_tensor, 9, 0).empty());
  EXPECT_TRUE(gemm_device_unsupported_reason(GemmMath::bf16_tensor, 8, 0).empty());
  EXPECT_FALSE(gemm_device_unsupported_reason(GemmMath::bf16_tensor, 7, 5).empty());
  EXPECT_TRUE(gemm_device_unsupported_reason(GemmMath::f32_fma, 7, 0).empty());
}

// ---- The declared cases -------------------------------------------------------------------------------

TEST(GemmCases, EveryConfigurationIsDeclaredWithValidPoints) {
  for (const char* name : kGemmCases) {
    const gauge::CaseDecl& decl = gemm_case(name);
    SCOPED_TRACE(name);
    bool has_quick = false, has_8192 = false;
    for (const gauge::Point& p : decl.points) {
      const gauge::CostModel model = decl.model(p);
      const double m = static_cast<double>(p.dim("m")), n = static_cast<double>(p.dim("n")),
                   k = static_cast<double>(p.dim("k"));
      EXPECT_EQ(model.flops, 2 * m * n * k);
      EXPECT_EQ(model.bound, gauge::Bound::compute);
      EXPECT_GT(model.predicted_device_peak_bytes, static_cast<int64_t>(model.bytes));
      const gauge::ToleranceRule rule = decl.tolerance(p);
      EXPECT_EQ(rule.kind, gauge::ToleranceRule::Kind::faithful);
      EXPECT_EQ(rule.factor, 2.0);
      EXPECT_FALSE(rule.derivation.empty());
      has_quick = has_quick || p.quick;
      has_8192 = has_8192 || (p.dim("m") == 8192 && p.dim("n") == 8192 && p.dim("k") == 8192 && !p.quick);
      if (p.quick) {
        // Ragged: not multiples of 64 (fp8 must keep multiples of 16).
        EXPECT_NE(p.dim("m") % 64, 0);
        EXPECT_NE(p.dim("n") % 64, 0);
        EXPECT_NE(p.dim("k") % 64, 0);
      }
    }
    EXPECT_TRUE(has_quick);
    EXPECT_TRUE(has_8192);
  }
  EXPECT_EQ(gemm_case("gemm_tf32").model(gemm_case("gemm_tf32").points.front()).math_dtype, DType::tf32);
  EXPECT_EQ(gemm_case("gemm_e4m3_e5m2_bf16").model(gemm_case("gemm_e4m3_e5m2_bf16").points.front()).math_dtype,
            DType::e4m3);
}

TEST(GemmCases, ReferenceHostPeakMatchesTheModel) {
  for (const char* name : kGemmCases) {
    const gauge::CaseDecl& decl = gemm_case(name);
    const gauge::Point& point = decl.points.front();
    SCOPED_TRACE(std::string(name) + " " + point.label());
    const int64_t baseline = gauge::mem::host_current_bytes();
    const auto in = decl.inputs(point, gauge::inputs::kDefaultSeed);
    gauge::mem::reset_host_peak();
    { const gauge::ReferenceResult r = decl.reference(point, in); }
    const int64_t measured = gauge::mem::host_peak_bytes() - baseline;
    EXPECT_EQ(measured, decl.model(point).predicted_host_peak_bytes);
  }
}

TEST(GemmCases, Fp8InputsCarryPowerOfTwoScales) {
  const gauge::CaseDecl& decl = gemm_case("gemm_e4m3_e5m2_bf16");
  const auto in = decl.inputs(decl.points.front(), gauge::inputs::kDefaultSeed);
  ASSERT_EQ(in.size(), 4u);
  EXPECT_EQ(in[0].dtype(), DType::e4m3);
  EXPECT_EQ(in[1].dtype(), DType::e5m2);
  EXPECT_EQ(in[2].name(), "a_scale");
  // uniform(-1, 1): amax just under 1, so 2^8 for e4m3 (448) and 2^15 for e5m2 (57344).
  EXPECT_EQ(in[2].view<float>()[0], std::ldexp(1.0f, -8));
  EXPECT_EQ(in[3].view<float>()[0], std::ldexp(1.0f, -15));
}

TEST(GemmCases, TensorCoreAtolIsDerivedFromTheDepth) {
  // bf16, K = 301: ceil(301 / 16) = 19 MMA steps, gamma_19(2^-23) * 301 / 4.
  const gauge::CaseDecl& decl = gemm_case("gemm_bf16");
  const gauge::ToleranceRule rule = decl.tolerance(decl.points.front());
  EXPECT_DOUBLE_EQ(rule.atol, gauge::tolerance::gamma(19, 0x1.0p-23) * 301.0 / 4.0);
  EXPECT_EQ(gemm_case("gemm_f32").tolerance(gemm_case("gemm_f32").points.front()).atol, 0.0);
  const gauge::CaseDecl& fp8 = gemm_case("gemm_e4m3_e4m3_f32");
  EXPECT_DOUBLE_EQ(fp8.tolerance(fp8.points.front()).atol,
                   (gauge::tolerance::gamma(4, 0x1.0p-13) + gauge::tolerance::gamma(3, 0x1.0p-24)) * 272.0 / 4.0);
  // Fast accumulation: ceil(272 / 32) = 9 MMA steps truncated to ~14 bits, no fp32 promotion: looser.
  const gauge::CaseDecl& fast = gemm_case("gemm_e4m3_e4m3_bf16_fast_accum");
  EXPECT_DOUBLE_EQ(fast.tolerance(fast.points.front()).atol, gauge::tolerance::gamma(9, 0x1.0p-13) * 272.0 / 4.0);
  EXPECT_GT(fast.tolerance(fast.points.front()).atol, fp8.tolerance(fp8.points.front()).atol);
}

// ---- GPU: every configuration end to end, through the harness --------------------------------------

// Shapes beyond the declared quick points: ragged (no dimension a multiple of 64) and one more.
std::vector<gauge::Point> gpu_points(const gauge::CaseDecl& decl) {
  const bool fp8 = decl.points.front().dtype == DType::e4m3;
  const std::vector<gauge::ShapeSpec> shapes =
      fp8 ? std::vector<gauge::ShapeSpec>{{{{"m", 144}, {"n", 80}, {"k", 272}}},
                                          {{{"m", 48}, {"n", 208}, {"k", 1040}}},
                                          {{{"m", 256}, {"n", 512}, {"k", 128}}}}
          : std::vector<gauge::ShapeSpec>{{{{"m", 123}, {"n", 77}, {"k", 301}}},
                                          {{{"m", 1}, {"n", 200}, {"k", 1000}}},
                                          {{{"m", 257}, {"n", 130}, {"k", 64}}},
                                          {{{"m", 256}, {"n", 512}, {"k", 128}}}};
  return gauge::grid(shapes, {decl.points.front().dtype});
}

TEST(CudaGemm, EveryConfigurationAgreesOnRaggedShapes) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  gauge::RunOptions options;
  options.time = false;
  gauge::Runner runner(gauge::probe_machine({}), options);
  const gauge::gpu::DeviceInfo device = gauge::gpu::device_info();
  std::string skipped;
  for (const char* name : kGemmCases) {
    const gauge::CaseDecl& decl = gemm_case(name);
    ASSERT_TRUE(static_cast<bool>(decl.optimized)) << name;
    ASSERT_TRUE(static_cast<bool>(decl.prepare)) << name;
    for (const gauge::Point& point : gpu_points(decl)) {
      SCOPED_TRACE(std::string(name) + " " + point.label());
      const gauge::PointOutcome outcome = runner.evaluate_point(decl, point);
      ASSERT_TRUE(outcome.optimized.has_value());
      const gauge::Record& r = *outcome.optimized;
      const GemmMath math =
          gauge::optimized::precision::is_fp8(point.dtype) ? GemmMath::fp8_tensor : GemmMath::bf16_tensor;
      const std::string unsupported =
          gauge::optimized::precision::gemm_device_unsupported_reason(math, device.cc_major, device.cc_minor);
      if (!unsupported.empty()) {
        // The optimized side must say why, in one line.
        EXPECT_EQ(r.status, gauge::RecordStatus::unsupported_device);
        EXPECT_NE(r.note.find(unsupported), std::string::npos) << r.note;
        skipped = unsupported;
        continue;
      }
      ASSERT_EQ(r.status, gauge::RecordStatus::ok) << r.note;
      for (const gauge::Agreement& a : r.agreement) EXPECT_TRUE(a.pass()) << a.report();
    }
  }
  if (!skipped.empty()) GTEST_SKIP() << skipped;
}

}  // namespace
