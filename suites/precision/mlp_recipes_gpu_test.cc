// The GPU mixed-precision MLP recipes (optimized/precision/mlp_recipes.h) against the reference: the
// fp32 recipe's 40-step device curve within the case's tolerance rule of the reference fp32 curve, and
// the loss falling in the fp32 and bf16_master recipes; fp16 loss scaling from 2^30: the skipped steps,
// Adam's device-side step count and the curve against the reference. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/gpu.h"
#include "harness/inputs.h"
#include "reference/precision/mlp_recipes.h"

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include <cuda_runtime.h>

#include "harness/tensor.h"
#include "optimized/precision/mlp_recipes.h"
#endif

namespace gauge::suites::precision {
namespace {

namespace ref = gauge::reference::precision;
using ref::Recipe;

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
struct DeviceRun {
  std::vector<double> losses;
  std::vector<int> skipped;
  int64_t adam_steps = 0;
};

DeviceRun device_run(gpu::Session& session, const ref::MlpTask& task, Recipe recipe) {
  const ref::MlpTaskData data = ref::draw_task_data(task);
  const DeviceTensor batches = session.upload(data.batches), labels = session.upload(data.labels),
                     initial = session.upload(data.initial);
  optimized::precision::MlpRecipeRunner runner(
      session.blas_lt(), task, recipe,
      optimized::precision::MlpTaskDevice{static_cast<const float*>(batches.ptr), static_cast<const int32_t*>(labels.ptr),
                                          static_cast<const float*>(initial.ptr)},
      [&session](size_t bytes) { return session.workspace(bytes); }, session.stream());
  const DeviceTensor curve = session.allocate_poisoned("loss", DType::f64, {task.steps});
  runner.run(static_cast<double*>(curve.ptr), session.stream());
  session.synchronize();
  DeviceRun run;
  const HostTensor host = session.download(curve);
  const auto values = host.view<double>();
  run.losses.assign(values.begin(), values.end());
  run.skipped.resize(static_cast<size_t>(task.steps));
  EXPECT_EQ(cudaMemcpy(run.skipped.data(), runner.skipped_device(), run.skipped.size() * sizeof(int), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(cudaMemcpy(&run.adam_steps, runner.adam_steps_device(), sizeof(int64_t), cudaMemcpyDeviceToHost), cudaSuccess);
  return run;
}

std::vector<double> device_curve(gpu::Session& session, const ref::MlpTask& task, Recipe recipe) {
  return device_run(session, task, recipe).losses;
}

double window_mean(const std::vector<double>& curve, size_t first, size_t count) {
  double sum = 0.0;
  for (size_t t = first; t < first + count; ++t) sum += curve[t];
  return sum / static_cast<double>(count);
}
#endif

TEST(MlpRecipesGpu, Fp32CurveWithinTheCaseRuleAndLossesFall) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const CaseDecl* decl = find_case("precision/mlp_recipe_training");
  ASSERT_NE(decl, nullptr);
  const Point* fp32_point = nullptr;
  for (const Point& p : decl->points) {
    if (p.dim("recipe") == static_cast<int64_t>(Recipe::fp32) && p.dim("loss_weight_log2") == 0 && p.dim("steps") == 40) {
      fp32_point = &p;
    }
  }
  ASSERT_NE(fp32_point, nullptr);
  const ToleranceRule rule = decl->tolerance(*fp32_point);
  ASSERT_EQ(rule.kind, ToleranceRule::Kind::faithful);

  ref::MlpTask task;
  task.steps = 40;
  task.seed = inputs::kDefaultSeed;
  const ref::RecipeRun reference = ref::train(task, Recipe::fp32);

  std::unique_ptr<gpu::Session> session = gpu::Session::open();
  session->begin_case();
  const std::vector<double> fp32 = device_curve(*session, task, Recipe::fp32);
  ASSERT_EQ(fp32.size(), reference.losses.size());
  // The fp32 point's faithful reference is the truth itself, so the rule is |gpu - truth| <= atol.
  for (size_t t = 0; t < fp32.size(); ++t) {
    EXPECT_LE(std::abs(fp32[t] - reference.losses[t]), rule.atol) << "step " << t;
  }
  EXPECT_LT(window_mean(fp32, 20, 20), window_mean(fp32, 0, 20)) << "fp32: the loss does not fall";

  const std::vector<double> bf16 = device_curve(*session, task, Recipe::bf16_master);
  ASSERT_EQ(bf16.size(), reference.losses.size());
  EXPECT_LT(window_mean(bf16, 20, 20), window_mean(bf16, 0, 20)) << "bf16_master: the loss does not fall";
  for (double loss : bf16) EXPECT_TRUE(std::isfinite(loss));
#endif
}

// Loss scaling from a scale far too large (2^30): the device must skip the overflowing steps and back
// off as the reference does, and Adam's step count must be the applied steps only (the device-side
// counter, StepPlan::step_counted). The leading run of skipped steps is decided by gross overflow and
// must match exactly; later isolated skips sit at fp16's edge, where a different summation order may
// tip one gradient over 65504, so their total may differ by a few.
TEST(MlpRecipesGpu, LossScalingSkipsAndBacksOffAsTheReference) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  ref::MlpTask task;
  task.seed = inputs::kDefaultSeed;
  task.scaler.init_scale = 0x1p30;
  task.scaler.growth_interval = 50;
  const ref::RecipeRun reference = ref::train(task, Recipe::f16_scaled);
  std::unique_ptr<gpu::Session> session = gpu::Session::open();
  session->begin_case();
  const DeviceRun device = device_run(*session, task, Recipe::f16_scaled);
  ASSERT_EQ(device.skipped.size(), reference.skipped.size());
  size_t leading = 0;
  while (leading < reference.skipped.size() && reference.skipped[leading] != 0) ++leading;
  ASSERT_GE(leading, 5u) << "2^30 times these gradients overflows fp16";
  for (size_t t = 0; t <= leading && t < device.skipped.size(); ++t) {
    EXPECT_EQ(device.skipped[t], reference.skipped[t]) << "step " << t;
  }
  int64_t device_skips = 0;
  for (int s : device.skipped) device_skips += s;
  EXPECT_NEAR(static_cast<double>(device_skips), static_cast<double>(reference.skipped_steps), 3.0);
  EXPECT_EQ(device.adam_steps, task.steps - device_skips) << "Adam's t must count applied steps only";
  // The curve, as the case's rule judges a recipe: no worse than twice the reference recipe's distance
  // from the fp32 curve, plus the curve's statistical resolution.
  const ref::RecipeRun fp32 = ref::train(task, Recipe::fp32);
  double reference_distance = 0.0;
  for (size_t t = 0; t < fp32.losses.size(); ++t) {
    reference_distance = std::max(reference_distance, std::abs(reference.losses[t] - fp32.losses[t]));
  }
  const CaseDecl* decl = find_case("precision/mlp_recipe_training");
  ASSERT_NE(decl, nullptr);
  const double atol = decl->tolerance(decl->points.front()).atol;  // depends on the task's batch and classes only
  for (size_t t = 0; t < fp32.losses.size(); ++t) {
    EXPECT_LE(std::abs(device.losses[t] - fp32.losses[t]), 2.0 * reference_distance + atol) << "step " << t;
  }
#endif
}

}  // namespace
}  // namespace gauge::suites::precision
