#include <gtest/gtest.h>

#include <cmath>

#include "harness/error.h"
#include "harness/tolerance.h"

namespace gauge {
namespace {

TEST(Tolerance, UnitRoundoffOfEachFormat) {
  EXPECT_EQ(unit_roundoff(DType::f64), std::ldexp(1.0, -53));
  EXPECT_EQ(unit_roundoff(DType::f32), std::ldexp(1.0, -24));
  EXPECT_EQ(unit_roundoff(DType::tf32), std::ldexp(1.0, -11));
  EXPECT_EQ(unit_roundoff(DType::f16), std::ldexp(1.0, -11));
  EXPECT_EQ(unit_roundoff(DType::bf16), std::ldexp(1.0, -8));
  EXPECT_EQ(unit_roundoff(DType::e4m3), std::ldexp(1.0, -4));
  EXPECT_EQ(unit_roundoff(DType::e5m2), std::ldexp(1.0, -3));
  EXPECT_EQ(unit_roundoff(DType::i32), 0.0);
}

TEST(Tolerance, AccumulationBoundFollowsGamma) {
  // A dot product of depth 4096 accumulated in fp32 and rounded to bf16.
  const ToleranceRule rule = tolerance::accumulation(DType::bf16, DType::f32, 4096, 2.0);
  const double u32 = std::ldexp(1.0, -24);
  const double expected_rtol = std::ldexp(1.0, -8) + 4096 * u32 / (1 - 4096 * u32);
  EXPECT_DOUBLE_EQ(rule.rtol, expected_rtol);
  EXPECT_DOUBLE_EQ(rule.atol, expected_rtol * 2.0);
  EXPECT_EQ(rule.kind, ToleranceRule::Kind::abs_rel);
  EXPECT_NE(rule.derivation.find("gamma_4096"), std::string::npos);
}

TEST(Tolerance, GammaRejectsImpossibleDepths) {
  EXPECT_THROW(tolerance::gamma(1 << 12, 1.0 / 1024), UsageError);
  EXPECT_DOUBLE_EQ(tolerance::gamma(1, 0.5), 1.0);
}

TEST(Tolerance, DescriptionsNameTheRule) {
  EXPECT_NE(tolerance::exact_bits().describe().find("bit-exact"), std::string::npos);
  EXPECT_NE(tolerance::ulps(2, "why").describe().find("2 ulp"), std::string::npos);
  EXPECT_NE(tolerance::faithful(2.0, 1e-6, "x").describe().find("faithful"), std::string::npos);
}

}  // namespace
}  // namespace gauge
