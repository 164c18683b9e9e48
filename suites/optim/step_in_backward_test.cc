// Step-in-backward on the reference MLP (reference/optim/step_in_backward.h): the two orders give
// bit-identical weights, the counting allocator's peak equals the ledger model, and fusing the step
// into backward lowers the peak by (nearly) all the gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "harness/error.h"
#include "harness/inputs.h"
#include "harness/memory.h"
#include "reference/optim/step_in_backward.h"

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
