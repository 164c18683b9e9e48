// Step-in-backward on the reference MLP (reference/optim/step_in_backward.h): the two orders give
// bit-identical weights, the counting allocator's peak equals the ledger model, and fusing the step
// into backward lowers the peak by (nearly) all the gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "harness/error.h"
#include "harness/gpu.h"
#include "harness/inputs.h"
#include "harness/memory.h"
#include "reference/optim/step_in_backward.h"
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include <cuda_runtime.h>

#include "optimized/optim/step_in_backward.h"
#endif

namespace gauge::reference::optim {
namespace {

struct Problem {
  MlpShape shape;
  std::vector<float> x;
  std::vector<int32_t> labels;
  std::vector<float> params;
  std::vector<float> momentum;
};

Problem make_problem(const MlpShape& shape, uint64_t seed) {
  Problem p{shape, {}, {}, {}, {}};
  const HostTensor x = inputs::uniform_f32("x", {shape.batch * shape.features}, seed, 0, -1, 1);
  p.x.assign(x.view<float>().begin(), x.view<float>().end());
  const HostTensor words = inputs::philox_u32("labels", {shape.batch}, seed, 1);
  for (uint32_t w : words.view<uint32_t>()) p.labels.push_back(static_cast<int32_t>(w % static_cast<uint32_t>(shape.classes)));
  const HostTensor params = inputs::uniform_f32("params", {shape.parameter_count()}, seed, 2, -0.2f, 0.2f);
  p.params.assign(params.view<float>().begin(), params.view<float>().end());
  p.momentum.assign(p.params.size(), 0.0f);
  return p;
}

Hyper sgd() {
  Hyper h;
  h.algorithm = Algorithm::sgd;
  h.lr = 0.1;
  h.momentum = 0.9;
  h.weight_decay = 1e-4;
  return h;
}

TEST(StepInBackward, BothOrdersGiveBitIdenticalWeightsOverSteps) {
  const MlpShape shape{.batch = 8, .features = 12, .hidden = 20, .classes = 5, .layers = 4};
  Problem after = make_problem(shape, 7), fused = make_problem(shape, 7);
  for (int64_t t = 1; t <= 3; ++t) {
    const double loss_after = mlp_sgd_step(shape, sgd(), t, 0.1, GradientRelease::after_backward, after.x,
                                           after.labels, after.params, after.momentum).loss;
    const double loss_fused = mlp_sgd_step(shape, sgd(), t, 0.1, GradientRelease::in_backward, fused.x,
                                           fused.labels, fused.params, fused.momentum).loss;
    EXPECT_EQ(loss_after, loss_fused) << "step " << t;
  }
  EXPECT_EQ(0, std::memcmp(after.params.data(), fused.params.data(), after.params.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(after.momentum.data(), fused.momentum.data(), after.momentum.size() * sizeof(float)));
}

TEST(StepInBackward, TrainingLowersTheLoss) {
  const MlpShape shape{.batch = 16, .features = 8, .hidden = 32, .classes = 4, .layers = 3};
  Problem p = make_problem(shape, 11);
  const double first = mlp_sgd_step(shape, sgd(), 1, 0.1, GradientRelease::in_backward, p.x, p.labels, p.params,
                                    p.momentum).loss;
  double last = first;
  for (int64_t t = 2; t <= 30; ++t) {
    last = mlp_sgd_step(shape, sgd(), t, 0.1, GradientRelease::in_backward, p.x, p.labels, p.params, p.momentum).loss;
  }
  EXPECT_LT(last, 0.8 * first) << "the step must follow the gradient (first " << first << ", last " << last << ")";
}

TEST(StepInBackward, MeasuredPeakEqualsTheLedgerAndDropsByTheGradients) {
  for (const MlpShape shape : {MlpShape{.batch = 8, .features = 12, .hidden = 20, .classes = 5, .layers = 4},
                               MlpShape{.batch = 16, .features = 64, .hidden = 128, .classes = 10, .layers = 6},
                               MlpShape{.batch = 64, .features = 32, .hidden = 48, .classes = 3, .layers = 2}}) {
    int64_t measured[2] = {0, 0};
    for (GradientRelease release : {GradientRelease::after_backward, GradientRelease::in_backward}) {
      Problem p = make_problem(shape, 3);
      const mem::PeakScope scope;
      mlp_sgd_step(shape, sgd(), 1, 0.1, release, p.x, p.labels, p.params, p.momentum);
      const int64_t peak = scope.peak_above_baseline();
      EXPECT_EQ(peak, predicted_peak_bytes(shape, release)) << "hidden " << shape.hidden;
      measured[release == GradientRelease::in_backward ? 1 : 0] = peak;
    }
    EXPECT_LT(measured[1], measured[0]);
    if (shape.hidden >= 8 * shape.batch) {
      // Weights dominate: the drop is at least every gradient but the largest one, less the activations.
      int64_t largest = 0;
      for (int64_t l = 0; l < shape.layers; ++l) largest = std::max(largest, 4 * (shape.out_of(l) * shape.in_of(l) + shape.out_of(l)));
      EXPECT_GE(measured[0] - measured[1], shape.gradient_bytes() - largest - 4 * shape.batch * shape.hidden * shape.layers);
    }
  }
}

// A NaN weight poisons the forward pass, so every gradient holds NaN: both orders report every layer
// skipped and leave parameters and momenta bit for bit as they were (no exception: a skipped step is
// a report, as the optimizer's own).
TEST(StepInBackward, ANonFiniteGradientSkipsLayersAndIsReported) {
  const MlpShape shape{.batch = 8, .features = 6, .hidden = 12, .classes = 4, .layers = 3};
  for (GradientRelease release : {GradientRelease::after_backward, GradientRelease::in_backward}) {
    Problem p = make_problem(shape, 5);
    mlp_sgd_step(shape, sgd(), 1, 0.1, release, p.x, p.labels, p.params, p.momentum);  // momentum non-zero
    p.params[static_cast<size_t>(shape.weight_offset(0))] = std::nanf("");
    const std::vector<float> params_before = p.params, momentum_before = p.momentum;
    const MlpStepResult r = mlp_sgd_step(shape, sgd(), 2, 0.1, release, p.x, p.labels, p.params, p.momentum);
    EXPECT_TRUE(std::isnan(r.loss));
    EXPECT_EQ(r.skipped_layers, (std::vector<int64_t>{0, 1, 2}));
    EXPECT_EQ(0, std::memcmp(params_before.data(), p.params.data(), p.params.size() * 4));
    EXPECT_EQ(0, std::memcmp(momentum_before.data(), p.momentum.data(), p.momentum.size() * 4));
  }
  Problem clean = make_problem(shape, 5);
  EXPECT_TRUE(mlp_sgd_step(shape, sgd(), 1, 0.1, GradientRelease::in_backward, clean.x, clean.labels, clean.params,
                           clean.momentum)
                  .skipped_layers.empty());
}

TEST(StepInBackward, BadInputIsRejected) {
  const MlpShape shape{.batch = 4, .features = 3, .hidden = 5, .classes = 2, .layers = 2};
  Problem p = make_problem(shape, 1);
  MlpShape one_layer = shape;
  one_layer.layers = 1;
  EXPECT_THROW(validate(one_layer), UsageError);
  Hyper adam = sgd();
  adam.algorithm = Algorithm::adam;
  EXPECT_THROW(mlp_sgd_step(shape, adam, 1, 0.1, GradientRelease::in_backward, p.x, p.labels, p.params, p.momentum),
               UsageError);
  std::vector<float> short_params(p.params.size() - 1);
  EXPECT_THROW(mlp_sgd_step(shape, sgd(), 1, 0.1, GradientRelease::in_backward, p.x, p.labels, short_params, p.momentum),
               UsageError);
}

}  // namespace
}  // namespace gauge::reference::optim

// ---- On the GPU ------------------------------------------------------------------------------------

namespace gauge::reference::optim {
namespace {

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
// A problem's x, labels, params and momentum copied into pool memory on the session's stream.
struct DeviceProblem {
  MlpShape shape;
  const float* x = nullptr;
  const int32_t* labels = nullptr;
  float* params = nullptr;
  float* momentum = nullptr;
  gauge::optimized::optim::MlpSgdStep step(gpu::Session& session, GradientRelease release) const {
    return gauge::optimized::optim::MlpSgdStep(session.blas_lt(), shape, sgd(), release, x, labels, params, momentum,
                                               [&session](size_t bytes) { return session.workspace(bytes); },
                                               session.stream());
  }
};

DeviceProblem upload(gpu::Session& session, const Problem& p) {
  const auto copy = [&](const void* data, size_t bytes) {
    void* d = session.workspace(bytes);
    EXPECT_EQ(cudaMemcpyAsync(d, data, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(session.stream())),
              cudaSuccess);
    return d;
  };
  return DeviceProblem{p.shape, static_cast<const float*>(copy(p.x.data(), p.x.size() * 4)),
                       static_cast<const int32_t*>(copy(p.labels.data(), p.labels.size() * 4)),
                       static_cast<float*>(copy(p.params.data(), p.params.size() * 4)),
                       static_cast<float*>(copy(p.momentum.data(), p.momentum.size() * 4))};
}
#endif

TEST(StepInBackwardGpu, BothOrdersBitIdenticalAndThePoolPeakDrops) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const MlpShape shape{.batch = 16, .features = 64, .hidden = 256, .classes = 10, .layers = 5};
  const std::unique_ptr<gpu::Session> session = gpu::Session::open();
  std::vector<float> params_out[2], momentum_out[2];
  int64_t peaks[2] = {0, 0};
  for (GradientRelease release : {GradientRelease::after_backward, GradientRelease::in_backward}) {
    const int which = release == GradientRelease::in_backward ? 1 : 0;
    Problem p = make_problem(shape, 9);
    session->begin_case();
    const DeviceProblem d = upload(*session, p);
    float* const params = d.params;
    float* const momentum = d.momentum;
    const gauge::optimized::optim::MlpSgdStep step = d.step(*session, release);
    for (int64_t t = 1; t <= 3; ++t) step.step(t, 0.1, session->stream());
    session->synchronize();
    peaks[which] = session->peaks().used_high_bytes;
    params_out[which].resize(p.params.size());
    momentum_out[which].resize(p.params.size());
    ASSERT_EQ(cudaMemcpy(params_out[which].data(), params, p.params.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(momentum_out[which].data(), momentum, p.params.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    // A coarse agreement check with the CPU reference over the same three steps; the case's
    // conformance test applies the derived tolerance rule to one step.
    for (int64_t t = 1; t <= 3; ++t) mlp_sgd_step(shape, sgd(), t, 0.1, release, p.x, p.labels, p.params, p.momentum);
    double worst = 0;
    for (size_t i = 0; i < p.params.size(); ++i) worst = std::max(worst, std::abs(double(p.params[i]) - params_out[which][i]));
    EXPECT_LT(worst, 1e-4);
  }
  EXPECT_EQ(0, std::memcmp(params_out[0].data(), params_out[1].data(), params_out[0].size() * 4));
  EXPECT_EQ(0, std::memcmp(momentum_out[0].data(), momentum_out[1].data(), momentum_out[0].size() * 4));
  int64_t largest = 0;
  for (int64_t l = 0; l < shape.layers; ++l) largest = std::max(largest, 4 * (shape.out_of(l) * shape.in_of(l) + shape.out_of(l)));
  EXPECT_GE(peaks[0] - peaks[1], shape.gradient_bytes() - largest - 4096 * shape.layers)
      << "the fused step must not hold every gradient (pool peaks " << peaks[0] << " vs " << peaks[1] << ")";
#endif
}

// The device reports skips as the reference does: a NaN weight makes every gradient NaN, every flag
// is 1 and parameters and momenta are untouched; a clean step after it reports no skip.
TEST(StepInBackwardGpu, ANonFiniteGradientSkipsLayersAndIsReported) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const MlpShape shape{.batch = 8, .features = 8, .hidden = 16, .classes = 4, .layers = 3};
  const std::unique_ptr<gpu::Session> session = gpu::Session::open();
  const auto stream = static_cast<cudaStream_t>(session->stream());
  for (GradientRelease release : {GradientRelease::after_backward, GradientRelease::in_backward}) {
    Problem p = make_problem(shape, 5);
    session->begin_case();
    const DeviceProblem d = upload(*session, p);
    float* const params = d.params;
    float* const momentum = d.momentum;
    const gauge::optimized::optim::MlpSgdStep step = d.step(*session, release);
    const auto flags = [&] {
      std::vector<int> f(static_cast<size_t>(step.skip_flags()));
      EXPECT_EQ(cudaMemcpyAsync(f.data(), step.skipped_device(), f.size() * sizeof(int), cudaMemcpyDeviceToHost, stream),
                cudaSuccess);
      session->synchronize();
      return f;
    };
    EXPECT_EQ(step.skip_flags(), release == GradientRelease::in_backward ? shape.layers : 1);
    step.step(1, 0.1, session->stream());
    for (int f : flags()) EXPECT_EQ(f, 0);
    const float nan = std::nanf("");
    ASSERT_EQ(cudaMemcpyAsync(params + shape.weight_offset(0), &nan, 4, cudaMemcpyHostToDevice, stream), cudaSuccess);
    std::vector<float> params_before(p.params.size()), momentum_before(p.params.size());
    ASSERT_EQ(cudaMemcpyAsync(params_before.data(), params, p.params.size() * 4, cudaMemcpyDeviceToHost, stream), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(momentum_before.data(), momentum, p.params.size() * 4, cudaMemcpyDeviceToHost, stream),
              cudaSuccess);
    step.step(2, 0.1, session->stream());
    for (int f : flags()) EXPECT_EQ(f, 1);
    std::vector<float> params_after(p.params.size()), momentum_after(p.params.size());
    ASSERT_EQ(cudaMemcpy(params_after.data(), params, p.params.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(momentum_after.data(), momentum, p.params.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(0, std::memcmp(params_before.data(), params_after.data(), params_after.size() * 4));
    EXPECT_EQ(0, std::memcmp(momentum_before.data(), momentum_after.data(), momentum_after.size() * 4));
  }
#endif
}

}  // namespace
}  // namespace gauge::reference::optim
