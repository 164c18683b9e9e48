// Mixed-precision MLP training recipes on the CPU: each low-precision recipe's loss curve against the
// fp32 curve (the statistical criterion of reference/precision/mlp_recipes.h: every 20-step window
// mean within 3 standard errors of fp32's), fp16 gradient underflow without and with loss scaling,
// the loss scaler backing off inside a real training run, and bytes per parameter of each recipe's
// stored state measured by the counting allocator against the prediction (16 / 16 / 16 / 8).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "harness/error.h"
#include "reference/precision/mlp_recipes.h"

namespace {

namespace ref = gauge::reference::precision;
using ref::Recipe;

void print_comparison(const char* task, const ref::RecipeRun& run, const ref::RecipeRun& fp32,
                      const ref::CurveComparison& c) {
  const size_t n = run.losses.size();
  std::printf("[%s] %-12s final loss %.5f (fp32 %.5f), worst window at step %lld: difference %+.5f = %.2f standard "
              "errors (bound %.1f), skipped %lld\n",
              task, ref::recipe_name(run.recipe).c_str(), run.losses[n - 1], fp32.losses[n - 1],
              static_cast<long long>(c.worst_window_start), c.worst_difference, c.max_deviation,
              ref::kCurveStandardErrors, static_cast<long long>(run.skipped_steps));
}

TEST(MlpRecipes, LowPrecisionCurvesStayWithinThreeStandardErrorsOfFp32) {
  const ref::MlpTask task;  // 200 steps, loss weight 1
  const ref::RecipeRun fp32 = ref::train(task, Recipe::fp32);
  // The task is learnable: the fp32 loss falls well below ln(10) = 2.30 (chance).
  double last = 0;
  for (size_t t = fp32.losses.size() - 20; t < fp32.losses.size(); ++t) last += fp32.losses[t] / 20.0;
  EXPECT_LT(last, 1.2) << "the fp32 run did not learn the task";
  for (Recipe r : {Recipe::bf16_master, Recipe::f16_scaled, Recipe::bf16_pure}) {
    const ref::RecipeRun run = ref::train(task, r);
    const ref::CurveComparison c = ref::compare_loss_curves(run.losses, fp32.losses, ref::kCurveWindow);
    print_comparison("loss weight 1", run, fp32, c);
    EXPECT_TRUE(c.within(ref::kCurveStandardErrors))
        << ref::recipe_name(r) << ": window at step " << c.worst_window_start << " differs by " << c.worst_difference
        << " = " << c.max_deviation << " standard errors";
    EXPECT_EQ(run.skipped_steps, 0) << ref::recipe_name(r);
  }
}

// Gradients of a loss with weight 2^-16 (a per-token loss summed over 2^16 tokens with weights 2^-16)
// sit mostly below fp16's smallest subnormal 2^-24.
TEST(MlpRecipes, LossScalingRecoversTheSmallGradientsFp16Flushes) {
  ref::MlpTask task;
  task.loss_weight = 0x1p-16;
  const ref::Underflow u = ref::measure_underflow(task, 65536.0f);
  std::printf("[underflow] %lld gradient elements, %lld non-zero in fp32; flushed to zero by the fp16 backward: "
              "%.4f without loss scaling, %.4f with scale %.0f (cast of the fp32 gradient alone: %.4f / %.4f)\n",
              static_cast<long long>(u.gradients), static_cast<long long>(u.nonzero_fp32), u.fraction_unscaled(),
              u.fraction_scaled(), static_cast<double>(u.scale), u.cast_fraction_unscaled(), u.cast_fraction_scaled());
  EXPECT_GT(u.nonzero_fp32, 0);
  EXPECT_GT(u.fraction_unscaled(), 0.1) << "the task should put many gradients below fp16's range";
  EXPECT_LT(u.fraction_scaled(), u.fraction_unscaled()) << "loss scaling must reduce the flushed fraction";
  EXPECT_LT(u.cast_fraction_scaled(), u.cast_fraction_unscaled());

  // The training curves: with loss scaling fp16 tracks fp32; without it the flushed gradients slow
  // training visibly, and the same criterion reports it.
  const ref::RecipeRun fp32 = ref::train(task, Recipe::fp32);
  const ref::RecipeRun scaled = ref::train(task, Recipe::f16_scaled);
  const ref::RecipeRun unscaled = ref::train(task, Recipe::f16_unscaled);
  const ref::CurveComparison with = ref::compare_loss_curves(scaled.losses, fp32.losses, ref::kCurveWindow);
  const ref::CurveComparison without = ref::compare_loss_curves(unscaled.losses, fp32.losses, ref::kCurveWindow);
  print_comparison("loss weight 2^-16", scaled, fp32, with);
  print_comparison("loss weight 2^-16", unscaled, fp32, without);
  EXPECT_TRUE(with.within(ref::kCurveStandardErrors)) << with.max_deviation;
  EXPECT_FALSE(without.within(ref::kCurveStandardErrors))
      << "fp16 without loss scaling should fall visibly behind fp32 here (" << without.max_deviation << ")";
  EXPECT_GT(without.worst_difference, 0.0) << "behind means a higher loss";
}

// A scale far too large for fp16 overflows the backward: those steps are skipped and the scale halves
// each time until the gradients fit; after growth_interval clean steps it doubles again. The curve is
// not compared with fp32's here: every skipped step is a step of training lost, so the run lags fp32
// by about skipped_steps steps early on (printed, as the cost of a bad initial scale).
TEST(MlpRecipes, TheScalerBacksOffFromATooLargeScaleInsideTraining) {
  ref::MlpTask task;
  task.scaler.init_scale = 0x1p30;
  task.scaler.growth_interval = 50;
  const ref::RecipeRun fp32 = ref::train(task, Recipe::fp32);
  const ref::RecipeRun run = ref::train(task, Recipe::f16_scaled);
  for (size_t t = 0; t < 20; ++t) {
    if (run.skipped[t] != 0) std::printf("[init scale 2^30] step %zu skipped at scale 2^%d\n", t, std::ilogb(run.scales[t]));
  }
  ASSERT_EQ(run.scales.size(), run.skipped.size());
  EXPECT_GE(run.skipped_steps, 5) << "2^30 times these gradients overflows fp16 (65504)";
  EXPECT_EQ(run.skipped[0], 1);
  int64_t clean_run = 0;
  int64_t growths = 0;
  for (size_t t = 0; t + 1 < run.scales.size(); ++t) {
    if (run.skipped[t] != 0) {
      EXPECT_EQ(run.scales[t + 1], run.scales[t] * 0.5f) << "backoff after skipped step " << t;
      clean_run = 0;
    } else if (++clean_run == task.scaler.growth_interval) {
      EXPECT_EQ(run.scales[t + 1], run.scales[t] * 2.0f) << "growth after " << clean_run << " clean steps at " << t;
      clean_run = 0;
      ++growths;
    } else {
      EXPECT_EQ(run.scales[t + 1], run.scales[t]) << "step " << t;
    }
  }
  EXPECT_GE(growths, 1);
  const ref::CurveComparison c = ref::compare_loss_curves(run.losses, fp32.losses, ref::kCurveWindow);
  print_comparison("init scale 2^30", run, fp32, c);
  std::printf("[init scale 2^30] scale after the run %.0f, %lld growths\n", static_cast<double>(run.scales.back()),
              static_cast<long long>(growths));
  int64_t late_skips = 0;
  for (size_t t = 40; t < run.skipped.size(); ++t) late_skips += run.skipped[t];
  std::printf("[init scale 2^30] steps skipped after step 40: %lld\n", static_cast<long long>(late_skips));
}

TEST(MlpRecipes, StateBytesPerParameterMatchThePrediction) {
  ref::MlpTask task;
  task.steps = 2;
  for (Recipe r : {Recipe::fp32, Recipe::bf16_master, Recipe::f16_scaled, Recipe::f16_unscaled, Recipe::bf16_pure}) {
    const ref::RecipeRun run = ref::train(task, r);
    std::printf("[memory] %-12s %lld parameters, %lld state bytes counted = %.2f bytes/parameter (predicted %.0f); "
                "step scratch peak %lld bytes\n",
                ref::recipe_name(r).c_str(), static_cast<long long>(run.parameters),
                static_cast<long long>(run.state_bytes), run.state_bytes_per_parameter(),
                ref::predicted_state_bytes_per_parameter(r), static_cast<long long>(run.step_peak_bytes));
    EXPECT_EQ(run.parameters, ref::parameter_count(task));
    EXPECT_EQ(run.state_bytes_per_parameter(), ref::predicted_state_bytes_per_parameter(r)) << ref::recipe_name(r);
  }
}

TEST(MlpRecipes, BadTasksAreUsageErrors) {
  const auto expect_error = [](ref::MlpTask task) { EXPECT_THROW(ref::train(task, Recipe::fp32), gauge::UsageError); };
  ref::MlpTask t;
  t.hidden = 0;
  expect_error(t);
  t = {};
  t.lr = std::nan("");
  expect_error(t);
  t = {};
  t.loss_weight = 0.0;
  expect_error(t);
  t = {};
  t.beta2 = 1.0;
  expect_error(t);
  t = {};
  t.scaler.init_scale = std::nan("");
  expect_error(t);
  EXPECT_THROW(ref::measure_underflow(ref::MlpTask{}, std::nanf("")), gauge::UsageError);
}

TEST(MlpRecipes, CurveComparisonArithmetic) {
  // Baseline alternating 1, 1.2 (successive differences 0.2: noise 0.2 / sqrt(2)); the candidate is
  // the baseline plus 0.05 in the second window only.
  std::vector<double> baseline, candidate;
  for (int t = 0; t < 40; ++t) {
    baseline.push_back(t % 2 == 0 ? 1.0 : 1.2);
    candidate.push_back(baseline.back() + (t >= 20 ? 0.05 : 0.0));
  }
  const ref::CurveComparison c = ref::compare_loss_curves(candidate, baseline, 20);
  EXPECT_EQ(c.windows, 2);
  EXPECT_EQ(c.worst_window_start, 20);
  const double standard_error = (0.2 / std::sqrt(2.0)) / std::sqrt(20.0);
  EXPECT_NEAR(c.worst_standard_error, standard_error, 1e-12);
  EXPECT_NEAR(c.max_deviation, 0.05 / standard_error, 1e-9);
  EXPECT_TRUE(ref::compare_loss_curves(baseline, baseline, 20).within(0.0));
  EXPECT_THROW(ref::compare_loss_curves(candidate, std::vector<double>(39, 1.0), 20), gauge::UsageError);
  EXPECT_THROW(ref::compare_loss_curves(candidate, baseline, 1), gauge::UsageError);
}

}  // namespace
