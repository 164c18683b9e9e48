#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "harness/compare.h"

namespace gauge {
namespace {

HostTensor f32(const std::vector<float>& values, Shape shape = {}) {
  if (shape.empty()) shape = {static_cast<int64_t>(values.size())};
  HostTensor t("y", DType::f32, shape);
  for (size_t i = 0; i < values.size(); ++i) t.view<float>()[i] = values[i];
  return t;
}

HostTensor f64(const std::vector<double>& values) {
  HostTensor t("y", DType::f64, {static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) t.view<double>()[i] = values[i];
  return t;
}

HostTensor bf16_bits(const std::vector<uint16_t>& bits) {
  HostTensor t("y", DType::bf16, {static_cast<int64_t>(bits.size())});
  for (size_t i = 0; i < bits.size(); ++i) t.view<uint16_t>()[i] = bits[i];
  return t;
}

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Compare, IdenticalTensorsAgreeWithZeroMetrics) {
  const HostTensor a = f32({1, -2, 3.5f, 0, kInf, kNaN});
  const Agreement r = compare(a, a, tolerance::exact_bits());
  EXPECT_TRUE(r.pass()) << r.report();
  EXPECT_EQ(r.max_abs_error, 0.0);
  EXPECT_EQ(r.max_ulp_distance, 0.0);
  EXPECT_EQ(r.nonfinite_mismatches, 0);
}

TEST(Compare, MetricsOnCraftedErrors) {
  const HostTensor expected = f32({1.0f, 2.0f, 4.0f, -8.0f});
  const HostTensor actual = f32({1.0f, 2.5f, 4.0f, -7.0f});
  ToleranceRule rule;
  rule.kind = ToleranceRule::Kind::abs_rel;
  rule.atol = 0.0;
  rule.rtol = 0.2;
  const Agreement r = compare(actual, expected, rule);
  EXPECT_DOUBLE_EQ(r.max_abs_error, 1.0);
  EXPECT_DOUBLE_EQ(r.max_rel_error, 0.25);
  EXPECT_DOUBLE_EQ(r.mean_abs_error, 1.5 / 4);
  EXPECT_DOUBLE_EQ(r.rms_error, std::sqrt((0.25 + 1.0) / 4));
  EXPECT_EQ(r.violations, 1);  // 0.5/2 = 0.25 > 0.2; 1/8 = 0.125 passes
  ASSERT_FALSE(r.worst.empty());
  EXPECT_EQ(r.worst.front().flat_index, 1);
  EXPECT_FALSE(r.pass());
}

TEST(Compare, UlpDistanceCountsRepresentableSteps) {
  const float one = 1.0f;
  const float three_up = std::bit_cast<float>(std::bit_cast<uint32_t>(one) + 3);
  const Agreement r = compare(f32({three_up}), f32({one}), tolerance::ulps(2, "test"));
  EXPECT_EQ(r.max_ulp_distance, 3.0);
  EXPECT_EQ(r.violations, 1);
  EXPECT_TRUE(compare(f32({three_up}), f32({one}), tolerance::ulps(3, "test")).pass());
  // Across zero: the smallest positive and negative subnormals are 2 ulp apart.
  const float tiny = std::numeric_limits<float>::denorm_min();
  EXPECT_EQ(compare(f32({-tiny}), f32({tiny}), tolerance::ulps(9, "t")).max_ulp_distance, 2.0);
}

TEST(Compare, NaNAndInfMustMatchPositionForPosition) {
  const Agreement nan_vs_number = compare(f32({kNaN, 1}), f32({1, 1}), tolerance::ulps(1000, "t"));
  EXPECT_EQ(nan_vs_number.nonfinite_mismatches, 1);
  EXPECT_EQ(nan_vs_number.violations, 1);
  EXPECT_TRUE(std::isinf(nan_vs_number.max_ulp_distance));
  const Agreement inf_signs = compare(f32({kInf}), f32({-kInf}), tolerance::ulps(1000, "t"));
  EXPECT_EQ(inf_signs.nonfinite_mismatches, 1);
  const Agreement inf_vs_max = compare(f32({kInf}), f32({std::numeric_limits<float>::max()}), tolerance::ulps(5, "t"));
  EXPECT_FALSE(inf_vs_max.pass());
  // NaN against NaN agrees under a tolerance, but a bit-exact rule also checks the payload.
  EXPECT_TRUE(compare(f32({kNaN}), f32({kNaN}), tolerance::ulps(1, "t")).pass());
  EXPECT_FALSE(compare(bf16_bits({0x7FC1}), bf16_bits({0x7FC0}), tolerance::exact_bits()).pass());
}

TEST(Compare, NegativeZero) {
  const Agreement exact = compare(f32({-0.0f}), f32({0.0f}), tolerance::exact_bits());
  EXPECT_EQ(exact.signed_zero_mismatches, 1);
  EXPECT_FALSE(exact.pass());
  const Agreement loose = compare(f32({-0.0f}), f32({0.0f}), tolerance::ulps(1, "t"));
  EXPECT_TRUE(loose.pass());
  EXPECT_EQ(loose.max_ulp_distance, 0.0);
}

TEST(Compare, SubnormalsAreOrdinaryValues) {
  const float tiny = std::numeric_limits<float>::denorm_min();
  const Agreement r = compare(f32({2 * tiny}), f32({tiny}), tolerance::ulps(1, "t"));
  EXPECT_TRUE(r.pass());
  EXPECT_EQ(r.max_ulp_distance, 1.0);
  EXPECT_DOUBLE_EQ(r.max_abs_error, static_cast<double>(tiny));
}

TEST(Compare, NarrowFormatsDecodeForMetrics) {
  // bf16 1.0 = 0x3F80, next = 0x3F81 (1.0078125).
  const Agreement r = compare(bf16_bits({0x3F81}), bf16_bits({0x3F80}), tolerance::ulps(1, "t"));
  EXPECT_TRUE(r.pass());
  EXPECT_DOUBLE_EQ(r.max_abs_error, 0.0078125);
}

TEST(Compare, FailureReportNamesWorstCoordinates) {
  std::vector<float> expected(12, 1.0f), actual(12, 1.0f);
  actual[7] = 5.0f;  // row 1, column 3 of a 3x4 tensor
  actual[2] = 1.5f;
  const Agreement r = compare(f32(actual, {3, 4}), f32(expected, {3, 4}), tolerance::ulps(4, "t"));
  ASSERT_FALSE(r.pass());
  ASSERT_GE(r.worst.size(), 2u);
  EXPECT_EQ(r.worst[0].coordinates, "[1, 3]");
  EXPECT_EQ(r.worst[1].coordinates, "[0, 2]");
  const std::string report = r.report();
  EXPECT_NE(report.find("[1, 3]"), std::string::npos) << report;
  EXPECT_NE(report.find("DISAGREES"), std::string::npos) << report;
}

TEST(Compare, ShapeMismatchIsReportedNotCompared) {
  const Agreement r = compare(f32({1, 2, 3}), f32({1, 2}), tolerance::exact_bits());
  EXPECT_FALSE(r.pass());
  EXPECT_NE(r.shape_error.find("shape"), std::string::npos);
}

TEST(Compare, FaithfulRuleAllowsTwiceTheFaithfulError) {
  const HostTensor truth = f64({1.0, 2.0, 3.0});
  const HostTensor faithful = f32({1.001f, 2.0f, 3.0f});  // max error ~0.001
  const HostTensor good = f32({1.0f, 2.0019f, 2.9985f});
  const HostTensor bad = f32({1.0f, 2.0f, 3.0025f});
  const ToleranceRule rule = tolerance::faithful(2.0, 0.0, "test");
  const Agreement ok = compare(good, truth, rule, &faithful);
  EXPECT_TRUE(ok.pass()) << ok.report();
  EXPECT_NEAR(ok.faithful_max_abs_error, 0.001, 1e-6);
  const Agreement fail = compare(bad, truth, rule, &faithful);
  EXPECT_FALSE(fail.pass());
  EXPECT_EQ(fail.worst.front().flat_index, 2);
  EXPECT_FALSE(compare(good, truth, rule, nullptr).pass()) << "the faithful rule needs its faithful output";
}

}  // namespace
}  // namespace gauge
