// The rule binding the CUDA executor to the reference (chain_tolerance, chain.h), checked on the CPU:
// the magnitude it assumes bounds the reference's outputs at every chain length of the cases, and it is
// tight enough to reject small planted errors in the reference's own outputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "harness/compare.h"
#include "suites/checkpoint/chain.h"

namespace gauge::suites::checkpoint {
namespace {

using gauge::checkpoint::Policy;

StepResult store_all_step(const BlockLayout& L, int64_t n) {
  return reference_step(L, gauge::checkpoint::plan(n, {Policy::store_all, 0, 0}), chain_inputs(L, n, 11));
}

double rms(const HostTensor& t) {
  double sum = 0;
  for (float v : t.view<float>()) sum += static_cast<double>(v) * static_cast<double>(v);
  return std::sqrt(sum / static_cast<double>(t.view<float>().size()));
}

double max_abs(const HostTensor& t) {
  double m = 0;
  for (float v : t.view<float>()) m = std::max(m, std::abs(static_cast<double>(v)));
  return m;
}

int64_t violations(const HostTensor& actual, const HostTensor& expected, const ToleranceRule& rule) {
  const Agreement a = compare(actual, expected, rule, nullptr, {});
  EXPECT_TRUE(a.shape_error.empty()) << a.shape_error;
  return a.violations;
}

class ChainRule : public testing::TestWithParam<BlockKind> {};

// The magnitude is the typical size of sum |terms| (tolerance.h), not a bound on every element: it must
// be at least the outputs' RMS at every chain length of the cases (the elements above it are judged by
// rtol |expected|).
TEST_P(ChainRule, MagnitudeCoversTheOutputsRms) {
  const BlockLayout L = case_layout(GetParam());
  for (int64_t n : {8, 16, 32, 64, 128, 256}) {
    const StepResult r = store_all_step(L, n);
    const double magnitude = chain_magnitude(L, n);
    const ToleranceRule rule = chain_tolerance(L, n);
    std::printf("n=%3lld rms (max) |y| %.3g (%.3g) |dx| %.3g (%.3g) |dparams| %.3g (%.3g); magnitude %.3g, rtol %.3g, "
                "atol %.3g\n",
                static_cast<long long>(n), rms(r.y), max_abs(r.y), rms(r.dx), max_abs(r.dx), rms(r.dparams),
                max_abs(r.dparams), magnitude, rule.rtol, rule.atol);
    EXPECT_LE(rms(r.y), magnitude) << "n=" << n;
    EXPECT_LE(rms(r.dx), magnitude) << "n=" << n;
    EXPECT_LE(rms(r.dparams), magnitude) << "n=" << n;
  }
}

TEST_P(ChainRule, AcceptsTheReferenceAndRejectsPlantedErrors) {
  const BlockLayout L = case_layout(GetParam());
  for (int64_t n : {8, 16}) {
    const StepResult r = store_all_step(L, n);
    const ToleranceRule rule = chain_tolerance(L, n);
    const std::string where = "n=" + std::to_string(n) + " under " + rule.describe();
    EXPECT_EQ(violations(r.y, r.y, rule), 0) << where;
    EXPECT_EQ(violations(r.dparams, r.dparams, rule), 0) << where;

    // One block's parameter gradient off by 1% (e.g. a gradient scaled by a stale loss scale).
    HostTensor scaled = r.dparams;
    auto g = scaled.view<float>();
    const int64_t block = n / 2, P = L.param_count();
    for (int64_t j = 0; j < P; ++j) g[static_cast<size_t>(block * P + j)] *= 1.01f;
    EXPECT_GT(violations(scaled, r.dparams, rule), 0) << "block " << block << "'s gradient x 1.01, " << where;

    // dx off by 1% in one element of moderate size.
    HostTensor nudged = r.dx;
    auto dx = nudged.view<float>();
    const auto big = std::max_element(dx.begin(), dx.end(), [](float a, float b) { return std::abs(a) < std::abs(b); });
    *big *= 1.01f;
    EXPECT_EQ(violations(nudged, r.dx, rule), 1) << "the largest dx element x 1.01, " << where;

    // The last linear block's dropout mask off by one element: one kept output dropped (y is the
    // dropout's output only in the linear block).
    if (L.kind != BlockKind::linear) continue;
    HostTensor dropped = r.y;
    auto y = dropped.view<float>();
    const auto kept = std::find_if(y.begin(), y.end(), [](float v) { return std::abs(v) > 0.1f; });
    ASSERT_NE(kept, y.end());
    *kept = 0.0f;
    EXPECT_EQ(violations(dropped, r.y, rule), 1) << "one dropped element of y, " << where;
  }
}

// The rule's resolution shrinks with the depth it allows: at n = 256 it still rejects one block's
// parameter gradient off by 10% (the last block's: in the linear chain the gradient vanishes towards the
// first blocks, below atol).
TEST_P(ChainRule, RejectsATenPercentGradientErrorAt256Blocks) {
  const BlockLayout L = case_layout(GetParam());
  const int64_t n = 256, P = L.param_count();
  const StepResult r = store_all_step(L, n);
  const ToleranceRule rule = chain_tolerance(L, n);
  HostTensor scaled = r.dparams;
  auto g = scaled.view<float>();
  for (int64_t j = 0; j < P; ++j) g[static_cast<size_t>((n - 1) * P + j)] *= 1.1f;
  EXPECT_GT(violations(scaled, r.dparams, rule), 0) << rule.describe();
}

INSTANTIATE_TEST_SUITE_P(Blocks, ChainRule, testing::Values(BlockKind::linear, BlockKind::residual_mlp),
                         [](const testing::TestParamInfo<BlockKind>& param_info) {
                           return param_info.param == BlockKind::linear ? std::string("linear")
                                                                         : std::string("residual_mlp");
                         });

}  // namespace
}  // namespace gauge::suites::checkpoint
