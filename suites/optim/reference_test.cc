// The optimizer reference checked against hand-computable values: one or two steps of every algorithm
// on a 2-element tensor, the expected numbers written out here from the formulas (PyTorch's), so the
// reference's loops are compared with arithmetic it does not share. Also: the schedules in every
// phase, clipping by the global norm, the skip on a NaN/Inf gradient, gradient accumulation, the bf16
// storage rules, and the one-line errors for bad input.
#include "reference/optim/optimizers.h"

#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "harness/error.h"
#include "reference/optim/config.h"
#include "reference/optim/schedule.h"
#include "reference/precision/casts.h"
#include "reference/precision/stochastic_rounding.h"

namespace gauge::reference::optim {
namespace {

using gauge::optim::Schedule;
using gauge::optim::ScheduleShape;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- A two-element fp32 parameter tensor and its states -----------------------------------------------

struct Tiny {
  std::array<float, 2> p;
  std::array<float, 2> g;
  std::array<std::array<float, 2>, 3> states{};
  int state_count = 0;

  TensorList list() {
    TensorList l;
    l.params_f32 = {std::span<float>(p)};
    l.grads_f32 = {std::span<const float>(g)};
    for (int k = 0; k < state_count; ++k) l.states_f32.push_back({std::span<float>(states[static_cast<size_t>(k)])});
    return l;
  }
};

Tiny tiny(const Hyper& h, std::array<float, 2> p, std::array<float, 2> g) {
  Tiny t{p, g};
  t.state_count = gauge::optim::state_count(h);
  return t;
}

StepReport step_fp64(const Hyper& h, Tiny& t, int64_t step_number, double lr, const StepOptions& options = {}) {
  return step(h, Precision::fp32, Math::fp64, t.list(), step_number, lr, options);
}

// The reference rounds each stored value once from its double computation; the expected value here is
// the same formula evaluated in double (in a different order), so the two agree to the fp32 rounding.
void expect_stored(float actual, double expected, const std::string& what) {
  EXPECT_NEAR(static_cast<double>(actual), expected, std::fabs(expected) * 0x1p-24 + 1e-30)
      << what << ": expected " << expected << " (the formula in double), stored " << actual;
}

// The fp32 value a step stored: later steps start from it, not from the exact real.
double f32(double x) { return static_cast<double>(static_cast<float>(x)); }

Hyper with(Algorithm a) {
  Hyper h;
  h.algorithm = a;
  return h;
}

// ---- SGD ----------------------------------------------------------------------------------------------

TEST(Sgd, PlainStepIsParamMinusLrTimesGradient) {
  Hyper h = with(Algorithm::sgd);
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  ASSERT_TRUE(step_fp64(h, t, 1, 0.1).applied);
  expect_stored(t.p[0], 1.0 - 0.1 * 0.5, "p0");
  expect_stored(t.p[1], -2.0 - 0.1 * -0.25, "p1");
}

TEST(Sgd, CoupledWeightDecayIsAddedToTheGradient) {
  Hyper h = with(Algorithm::sgd);
  h.weight_decay = 0.01;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 0.1);
  expect_stored(t.p[0], 1.0 - 0.1 * (0.5 + 0.01 * 1.0), "p0");
  expect_stored(t.p[1], -2.0 - 0.1 * (-0.25 + 0.01 * -2.0), "p1");
}

TEST(Sgd, MomentumBufferStartsAsTheGradientThenDampens) {
  Hyper h = with(Algorithm::sgd);
  h.momentum = 0.9;
  h.dampening = 0.5;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 0.1);
  // Step 1: buf = g (no dampening on the first step), p = p - lr * buf.
  expect_stored(t.states[0][0], 0.5, "buf0 after step 1");
  expect_stored(t.p[0], 1.0 - 0.1 * 0.5, "p0 after step 1");
  t.g = {0.25f, 1.0f};
  step_fp64(h, t, 2, 0.1);
  // Step 2: buf = 0.9 * 0.5 + (1 - 0.5) * 0.25 = 0.575; p = 0.95 - 0.1 * 0.575.
  expect_stored(t.states[0][0], 0.9 * 0.5 + 0.5 * 0.25, "buf0 after step 2");
  expect_stored(t.states[0][1], 0.9 * -0.25 + 0.5 * 1.0, "buf1 after step 2");
  expect_stored(t.p[0], f32(1.0 - 0.05) - 0.1 * 0.575, "p0 after step 2");
}

TEST(Sgd, NesterovLooksAheadAlongTheBuffer) {
  Hyper h = with(Algorithm::sgd);
  h.momentum = 0.9;
  h.nesterov = true;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 0.1);
  // buf = g; d = g + 0.9 * buf = 1.9 g.
  expect_stored(t.p[0], 1.0 - 0.1 * 1.9 * 0.5, "p0 after step 1");
  t.g = {0.25f, 1.0f};
  step_fp64(h, t, 2, 0.1);
  const double buf = 0.9 * 0.5 + 0.25;  // dampening 0
  expect_stored(t.p[0], f32(1.0 - 0.095) - 0.1 * (0.25 + 0.9 * buf), "p0 after step 2");
}

// ---- AdaGrad ------------------------------------------------------------------------------------------

TEST(Adagrad, StepDividesByTheRootOfTheAccumulatedSquares) {
  Hyper h = with(Algorithm::adagrad);
  h.initial_accumulator_value = 0.75;
  h.eps = 1e-10;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  t.states[0] = {0.75f, 0.75f};
  step_fp64(h, t, 1, 0.1);
  // sum = 0.75 + 0.25 = 1, so p = 1 - 0.1 * 0.5 / (1 + 1e-10).
  expect_stored(t.states[0][0], 1.0, "sum0");
  expect_stored(t.p[0], 1.0 - 0.1 * 0.5 / (1.0 + 1e-10), "p0");
  expect_stored(t.states[0][1], 0.75 + 0.0625, "sum1");
  expect_stored(t.p[1], -2.0 - 0.1 * -0.25 / (std::sqrt(0.8125) + 1e-10), "p1");
}

TEST(Adagrad, LearningRateDecaysWithTheStepCount) {
  Hyper h = with(Algorithm::adagrad);
  h.lr_decay = 0.5;
  h.eps = 0.0;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 0.1);  // clr = 0.1; sum = 0.25; p0 = 1 - 0.1 * 0.5 / 0.5 = 0.9
  expect_stored(t.p[0], 0.9, "p0 after step 1");
  t.g = {0.5f, 0.0f};
  step_fp64(h, t, 2, 0.1);  // clr = 0.1 / 1.5; sum = 0.5
  expect_stored(t.p[0], f32(0.9) - (0.1 / 1.5) * 0.5 / std::sqrt(0.5), "p0 after step 2");
  expect_stored(t.p[1], f32(-2.0 - 0.1 * -0.25 / 0.25), "p1 unchanged by a zero gradient");
}

// ---- RMSprop ------------------------------------------------------------------------------------------

TEST(Rmsprop, FirstStepMovesByLrOverRootOfOneMinusAlpha) {
  Hyper h = with(Algorithm::rmsprop);
  h.alpha = 0.75;
  h.eps = 1e-8;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 0.01);
  // square_avg = 0.25 g^2, so g / (sqrt(0.25 g^2) + eps) = 2 sign(g) (less a hair for eps).
  expect_stored(t.states[0][0], 0.25 * 0.25, "square_avg0");
  expect_stored(t.p[0], 1.0 - 0.01 * 0.5 / (0.5 * 0.5 + 1e-8), "p0");
  expect_stored(t.p[1], -2.0 - 0.01 * -0.25 / (0.5 * 0.25 + 1e-8), "p1");
}

TEST(Rmsprop, CenteredSubtractsTheSquaredMeanGradient) {
  Hyper h = with(Algorithm::rmsprop);
  h.alpha = 0.75;
  h.eps = 0.0;
  h.centered = true;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 0.01);
  // square_avg = 0.25 g^2, grad_avg = 0.25 g: variance 0.25 g^2 - 0.0625 g^2 = 0.1875 g^2.
  expect_stored(t.states[1][0], 0.25 * 0.5, "grad_avg0");
  expect_stored(t.p[0], 1.0 - 0.01 * 0.5 / (std::sqrt(0.1875) * 0.5), "p0");
}

TEST(Rmsprop, MomentumAccumulatesTheNormalizedGradient) {
  Hyper h = with(Algorithm::rmsprop);
  h.alpha = 0.75;
  h.eps = 0.0;
  h.momentum = 0.5;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 0.01);
  expect_stored(t.states[1][0], 2.0, "buf0 = g / sqrt(0.25 g^2)");
  t.g = {0.5f, -0.25f};
  step_fp64(h, t, 2, 0.01);
  // square_avg = 0.75 * 0.0625 + 0.25 * 0.25 = 0.109375; buf = 0.5 * 2 + 0.5 / sqrt(0.109375).
  const double buf = 1.0 + 0.5 / std::sqrt(0.109375);
  expect_stored(t.states[1][0], buf, "buf0 after step 2");
  expect_stored(t.p[0], f32(1.0 - 0.02) - 0.01 * buf, "p0 after step 2");
}

// ---- Adam and AdamW -----------------------------------------------------------------------------------

TEST(Adam, FirstStepMovesEachParameterByLrTimesTheSignOfItsGradient) {
  Hyper h = with(Algorithm::adam);
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 1e-3);
  // m_hat = g, v_hat = g^2: p - lr * g / (|g| + eps), ~ p - lr * sign(g).
  expect_stored(t.p[0], 1.0 - 1e-3 * 0.5 / (0.5 + 1e-8), "p0");
  expect_stored(t.p[1], -2.0 + 1e-3 * 0.25 / (0.25 + 1e-8), "p1");
  expect_stored(t.states[0][0], 0.1 * 0.5, "exp_avg0");
  expect_stored(t.states[1][0], 0.001 * 0.25, "exp_avg_sq0");
}

TEST(Adam, SecondStepUsesBiasCorrectedMoments) {
  Hyper h = with(Algorithm::adam);
  h.beta1 = 0.5;
  h.beta2 = 0.75;
  h.eps = 0.0;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 0.01);
  t.g = {-0.5f, -0.25f};
  step_fp64(h, t, 2, 0.01);
  // Element 0: m = 0.5 * 0.25 + 0.5 * -0.5 = -0.125, m_hat = -0.125 / 0.75;
  // v = 0.75 * 0.0625 + 0.25 * 0.25 = 0.109375, v_hat = 0.109375 / 0.4375 = 0.25.
  expect_stored(t.states[0][0], -0.125, "exp_avg0");
  expect_stored(t.states[1][0], 0.109375, "exp_avg_sq0");
  expect_stored(t.p[0], f32(1.0 - 0.01) - 0.01 * (-0.125 / 0.75) / std::sqrt(0.25), "p0");
  // Element 1: the same gradient twice: m_hat = g, v_hat = g^2, another step of lr * sign(g).
  expect_stored(t.p[1], f32(-2.0 + 0.01) + 0.01, "p1");
}

TEST(Adam, CoupledWeightDecayEntersTheMoments) {
  Hyper h = with(Algorithm::adam);
  h.weight_decay = 0.5;
  h.eps = 0.0;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 1e-3);
  // d = g + 0.5 p = (1, -1.25): the step is lr * sign(d).
  expect_stored(t.states[0][0], 0.1 * 1.0, "exp_avg0 from d");
  expect_stored(t.p[0], 1.0 - 1e-3, "p0");
  expect_stored(t.p[1], -2.0 + 1e-3, "p1");
}

TEST(Adam, AmsgradDividesByTheLargestSecondMomentSeen) {
  Hyper h = with(Algorithm::adam);
  h.beta1 = 0.0;
  h.beta2 = 0.5;
  h.eps = 0.0;
  h.amsgrad = true;
  Tiny t = tiny(h, {1.0f, -2.0f}, {1.0f, -0.25f});
  step_fp64(h, t, 1, 0.01);  // v = 0.5, v_max = 0.5
  t.g = {0.25f, -0.25f};
  step_fp64(h, t, 2, 0.01);  // v = 0.5 * 0.5 + 0.5 * 0.0625 = 0.28125; v_max stays 0.5
  expect_stored(t.states[1][0], 0.28125, "exp_avg_sq0");
  expect_stored(t.states[2][0], 0.5, "max_exp_avg_sq0");
  // beta1 = 0: m = g. denom = sqrt(0.5) / sqrt(1 - 0.25).
  expect_stored(t.p[0], f32(1.0 - 0.01) - 0.01 * 0.25 / (std::sqrt(0.5) / std::sqrt(0.75)), "p0");
}

TEST(AdamW, DecaysTheParameterBeforeTheAdamStep) {
  Hyper h = with(Algorithm::adamw);
  h.weight_decay = 0.1;
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  step_fp64(h, t, 1, 1e-2);
  // p * (1 - lr wd) - lr g / (|g| + eps); the moments see the raw gradient.
  expect_stored(t.p[0], 1.0 * (1.0 - 1e-3) - 1e-2 * 0.5 / (0.5 + 1e-8), "p0");
  expect_stored(t.p[1], -2.0 * (1.0 - 1e-3) + 1e-2 * 0.25 / (0.25 + 1e-8), "p1");
  expect_stored(t.states[0][0], 0.1 * 0.5, "exp_avg0 from g alone");
}

// ---- fp32 math: the faithful reference follows the same formulas ---------------------------------------

TEST(Fp32Math, AdamFirstStepAgreesWithTheFormulaInFloat) {
  Hyper h = with(Algorithm::adam);
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, -0.25f});
  ASSERT_TRUE(step(h, Precision::fp32, Math::fp32, t.list(), 1, 1e-3, {}).applied);
  // The formulas in float, in the order optimizers.h writes them; scalars formed in double first.
  const float m = 0.9f * 0.0f + static_cast<float>(1.0 - 0.9) * 0.5f;
  const float v = 0.999f * 0.0f + static_cast<float>(1.0 - 0.999) * 0.5f * 0.5f;
  const float denom = std::sqrt(v) / static_cast<float>(std::sqrt(1.0 - 0.999)) + static_cast<float>(1e-8);
  EXPECT_EQ(t.p[0], 1.0f - static_cast<float>(1e-3 / (1.0 - 0.9)) * (m / denom));
}

// ---- Schedules ----------------------------------------------------------------------------------------

TEST(Schedule, WarmupRisesLinearlyFromTheFirstStep) {
  const Schedule s{.warmup_steps = 4, .after_warmup = ScheduleShape::constant};
  EXPECT_DOUBLE_EQ(scheduled_lr(0.1, s, 1), 0.025);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.1, s, 2), 0.05);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.1, s, 4), 0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.1, s, 5), 0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.1, s, 1000), 0.1);
}

TEST(Schedule, LinearDecayReachesTheFloorAtTheTotal) {
  const Schedule s{.warmup_steps = 10, .after_warmup = ScheduleShape::linear, .total_steps = 30, .floor_lr = 0.01};
  EXPECT_DOUBLE_EQ(scheduled_lr(0.11, s, 10), 0.11);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.11, s, 15), 0.01 + 0.1 * 0.75);  // a quarter of the way
  EXPECT_DOUBLE_EQ(scheduled_lr(0.11, s, 20), 0.01 + 0.1 * 0.5);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.11, s, 30), 0.01);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.11, s, 31), 0.01);
}

TEST(Schedule, CosineDecayFollowsHalfACosine) {
  const Schedule s{.warmup_steps = 0, .after_warmup = ScheduleShape::cosine, .total_steps = 12, .floor_lr = 0.0};
  EXPECT_NEAR(scheduled_lr(1.0, s, 3), (1.0 + std::cos(std::numbers::pi / 4.0)) / 2.0, 1e-15);
  EXPECT_NEAR(scheduled_lr(1.0, s, 6), 0.5, 1e-15);
  EXPECT_NEAR(scheduled_lr(1.0, s, 9), (1.0 + std::cos(3.0 * std::numbers::pi / 4.0)) / 2.0, 1e-15);
  EXPECT_DOUBLE_EQ(scheduled_lr(1.0, s, 12), 0.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(1.0, s, 50), 0.0);
}

TEST(Schedule, WarmupEqualToTotalGoesStraightToTheFloor) {
  const Schedule s{.warmup_steps = 5, .after_warmup = ScheduleShape::cosine, .total_steps = 5, .floor_lr = 0.125};
  EXPECT_DOUBLE_EQ(scheduled_lr(1.0, s, 5), 1.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(1.0, s, 6), 0.125);
}

TEST(Schedule, RejectsBadInputWithOneLine) {
  auto expect_usage_error = [](auto&& call, const std::string& mentions) {
    try {
      call();
      ADD_FAILURE() << "no error; expected one mentioning " << mentions;
    } catch (const UsageError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(mentions), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  };
  expect_usage_error([] { scheduled_lr(0.1, Schedule{.warmup_steps = 20, .after_warmup = ScheduleShape::linear, .total_steps = 10}, 1); },
                     "exceeds total_steps");
  expect_usage_error([] { scheduled_lr(0.1, Schedule{.warmup_steps = -1}, 1); }, "warmup_steps");
  expect_usage_error([] { scheduled_lr(0.1, Schedule{.floor_lr = -1.0}, 1); }, "floor_lr");
  expect_usage_error([] { scheduled_lr(0.1, Schedule{}, 0); }, "below 1");
  expect_usage_error([] { scheduled_lr(kNaN, Schedule{}, 1); }, "base lr");
}

// ---- Clipping -----------------------------------------------------------------------------------------

TEST(Clipping, ScalesEveryTensorByTheGlobalNormCoefficient) {
  Hyper h = with(Algorithm::sgd);
  // Two tensors: gradients (3, 0) and (0, 4): global norm 5.
  std::array<float, 2> p0{0.0f, 0.0f}, p1{0.0f, 0.0f};
  const std::array<float, 2> g0{3.0f, 0.0f}, g1{0.0f, 4.0f};
  TensorList l;
  l.params_f32 = {std::span<float>(p0), std::span<float>(p1)};
  l.grads_f32 = {std::span<const float>(g0), std::span<const float>(g1)};
  StepOptions options;
  options.max_grad_norm = 1.0;
  const StepReport r = step(h, Precision::fp32, Math::fp64, l, 1, 1.0, options);
  EXPECT_DOUBLE_EQ(r.grad_norm, 5.0);
  const double coefficient = 1.0 / (5.0 + 1e-6);
  EXPECT_DOUBLE_EQ(r.clip_coefficient, coefficient);
  expect_stored(p0[0], -3.0 * coefficient, "p0[0]");
  expect_stored(p1[1], -4.0 * coefficient, "p1[1]");
}

TEST(Clipping, LeavesGradientsBelowTheMaximumAlone) {
  Hyper h = with(Algorithm::sgd);
  Tiny t = tiny(h, {0.0f, 0.0f}, {3.0f, 4.0f});
  StepOptions options;
  options.max_grad_norm = 5.0;  // coefficient 5 / (5 + 1e-6) < 1: PyTorch clips by a hair
  StepReport r = step_fp64(h, t, 1, 1.0, options);
  EXPECT_LT(r.clip_coefficient, 1.0);
  t = tiny(h, {0.0f, 0.0f}, {3.0f, 4.0f});
  options.max_grad_norm = 6.0;
  r = step_fp64(h, t, 1, 1.0, options);
  EXPECT_EQ(r.clip_coefficient, 1.0);
  EXPECT_EQ(t.p[0], -3.0f);
  EXPECT_EQ(t.p[1], -4.0f);
}

// ---- Non-finite gradients -----------------------------------------------------------------------------

TEST(NonFinite, NaNGradientSkipsTheStepAndChangesNothing) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    Hyper h = with(Algorithm::adam);
    Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, bad});
    t.states[0] = {0.125f, 0.25f};
    t.states[1] = {0.5f, 0.75f};
    const Tiny before = t;
    const StepReport r = step_fp64(h, t, 3, 1e-3);
    EXPECT_FALSE(r.applied);
    EXPECT_NE(r.skipped_because.find("tensor 0 element 1"), std::string::npos) << r.skipped_because;
    EXPECT_EQ(r.skipped_because.find('\n'), std::string::npos);
    for (size_t j = 0; j < 2; ++j) {
      EXPECT_EQ(std::bit_cast<uint32_t>(t.p[j]), std::bit_cast<uint32_t>(before.p[j]));
      for (size_t k = 0; k < 2; ++k) {
        EXPECT_EQ(std::bit_cast<uint32_t>(t.states[k][j]), std::bit_cast<uint32_t>(before.states[k][j]));
      }
    }
  }
}

TEST(NonFinite, AllowedNonFiniteGradientPropagates) {
  Hyper h = with(Algorithm::sgd);
  Tiny t = tiny(h, {1.0f, -2.0f}, {0.5f, std::numeric_limits<float>::quiet_NaN()});
  StepOptions options;
  options.allow_nonfinite = true;
  const StepReport r = step_fp64(h, t, 1, 0.1, options);
  EXPECT_TRUE(r.applied);
  EXPECT_TRUE(std::isnan(t.p[1]));
  expect_stored(t.p[0], 1.0 - 0.05, "the finite element still steps");
}

// ---- Gradient accumulation ----------------------------------------------------------------------------

TEST(Accumulation, MeanOfMicroBatchesEqualsOneStepOnTheMean) {
  const std::array<float, 2> a{1.0f, -3.0f}, b{0.5f, 1.0f}, c{-0.25f, 0.5f};
  std::array<float, 2> mean{};
  accumulate_mean({std::span<const float>(a), std::span<const float>(b), std::span<const float>(c)}, mean);
  expect_stored(mean[0], 1.25 / 3.0, "mean0");
  expect_stored(mean[1], -1.5 / 3.0, "mean1");

  // Stepping on the accumulated mean is stepping on (a + b + c) / 3.
  Hyper h = with(Algorithm::sgd);
  Tiny t = tiny(h, {1.0f, -2.0f}, mean);
  step_fp64(h, t, 1, 0.5);
  expect_stored(t.p[0], 1.0 - 0.5 * static_cast<double>(mean[0]), "p0");

  std::array<float, 3> wrong{};
  try {
    accumulate_mean({std::span<const float>(a)}, wrong);
    ADD_FAILURE() << "a micro-batch of another length was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("micro-batch 0"), std::string::npos) << e.what();
  }
}

// ---- bf16 storage -------------------------------------------------------------------------------------

TEST(Bf16Master, ParameterIsTheRneCastOfTheStoredMaster) {
  Hyper h = with(Algorithm::adamw);
  h.weight_decay = 0.01;
  std::array<float, 2> master{1.0f, -2.0f};
  std::array<uint16_t, 2> params{precision::f32_to_bf16(1.0f), precision::f32_to_bf16(-2.0f)};
  const std::array<uint16_t, 2> grads{precision::f32_to_bf16(0.5f), precision::f32_to_bf16(-0.25f)};
  std::array<float, 2> m{}, v{};
  TensorList l;
  l.params_bf16 = {std::span<uint16_t>(params)};
  l.grads_bf16 = {std::span<const uint16_t>(grads)};
  l.master = {std::span<float>(master)};
  l.states_f32 = {{std::span<float>(m)}, {std::span<float>(v)}};
  for (int64_t t = 1; t <= 3; ++t) ASSERT_TRUE(step(h, Precision::bf16_master, Math::fp64, l, t, 1e-3, {}).applied);
  for (size_t j = 0; j < 2; ++j) EXPECT_EQ(params[j], precision::f32_to_bf16(master[j])) << "element " << j;
  // The master kept the small steps a bf16 parameter alone would round away.
  EXPECT_NE(master[0], precision::bf16_to_f32(params[0]));
}

TEST(Bf16Stochastic, EveryStoredValueUsesItsOwnKeyedWord) {
  Hyper h = with(Algorithm::sgd);
  h.momentum = 0.5;
  const float p0 = 1.0f, g0 = 0.0078125f * 1.5f;  // p moves by lr g: a fraction of a bf16 ulp at 1
  std::array<uint16_t, 1> params{precision::f32_to_bf16(p0)};
  const std::array<uint16_t, 1> grads{precision::f32_to_bf16(g0)};
  std::array<uint16_t, 1> buf{};
  TensorList l;
  l.params_bf16 = {std::span<uint16_t>(params)};
  l.grads_bf16 = {std::span<const uint16_t>(grads)};
  l.states_bf16 = {{std::span<uint16_t>(buf)}};
  StepOptions options;
  options.seed = 1234;
  ASSERT_TRUE(step(h, Precision::bf16_stochastic, Math::fp64, l, 1, 0.25, options).applied);
  // The documented rule, recomputed: parameter slot 0, the buffer slot 1, element 0, step 1.
  const double exact_p = 1.0 - 0.25 * static_cast<double>(precision::bf16_to_f32(grads[0]));
  const uint32_t word_p = precision::stochastic_rounding_word(1234, gauge::optim::stochastic_rounding_tensor_id(0, 0), 0, 1);
  EXPECT_EQ(params[0], precision::f64_to_bf16_stochastic(exact_p, word_p));
  const uint32_t word_b = precision::stochastic_rounding_word(1234, gauge::optim::stochastic_rounding_tensor_id(0, 1), 0, 1);
  EXPECT_EQ(buf[0], precision::f64_to_bf16_stochastic(precision::bf16_to_f32(grads[0]), word_b));
}

// ---- Bad input ----------------------------------------------------------------------------------------

void expect_rejected(const Hyper& h, const TensorList& l, double lr, const std::string& mentions,
                     const StepOptions& options = {}, Precision precision = Precision::fp32) {
  try {
    step(h, precision, Math::fp64, l, 1, lr, options);
    ADD_FAILURE() << "accepted; expected an error mentioning '" << mentions << "'";
  } catch (const UsageError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(mentions), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "not one line: " << what;
  }
}

TEST(BadInput, HyperParametersOutOfRangeAreNamed) {
  Hyper adam = with(Algorithm::adam);
  Tiny t = tiny(adam, {1.0f, 2.0f}, {0.5f, 0.5f});
  expect_rejected(adam, t.list(), -0.1, "lr");
  expect_rejected(adam, t.list(), kNaN, "lr");
  Hyper h = adam;
  h.eps = -1e-8;
  expect_rejected(h, t.list(), 0.1, "eps = -1e-08 is negative");
  h = adam;
  h.eps = kNaN;
  expect_rejected(h, t.list(), 0.1, "eps");
  h = adam;
  h.beta1 = 1.0;
  expect_rejected(h, t.list(), 0.1, "beta1 = 1 is outside [0, 1)");
  h = adam;
  h.beta2 = -0.5;
  expect_rejected(h, t.list(), 0.1, "beta2");
  h = adam;
  h.weight_decay = -1.0;
  expect_rejected(h, t.list(), 0.1, "weight_decay");

  Hyper rms = with(Algorithm::rmsprop);
  rms.alpha = 1.0;
  Tiny r = tiny(rms, {1.0f, 2.0f}, {0.5f, 0.5f});
  expect_rejected(rms, r.list(), 0.1, "alpha");

  Hyper sgd = with(Algorithm::sgd);
  sgd.nesterov = true;
  Tiny s = tiny(sgd, {1.0f, 2.0f}, {0.5f, 0.5f});
  expect_rejected(sgd, s.list(), 0.1, "nesterov");

  Hyper ada = with(Algorithm::adagrad);
  ada.lr_decay = -1.0;
  Tiny a = tiny(ada, {1.0f, 2.0f}, {0.5f, 0.5f});
  expect_rejected(ada, a.list(), 0.1, "lr_decay");

  StepOptions options;
  options.max_grad_norm = -1.0;
  expect_rejected(adam, t.list(), 0.1, "max_grad_norm", options);
}

TEST(BadInput, MismatchedTensorListsAreNamed) {
  Hyper adam = with(Algorithm::adam);
  Tiny t = tiny(adam, {1.0f, 2.0f}, {0.5f, 0.5f});

  TensorList l = t.list();
  l.params_f32.push_back(l.params_f32[0]);
  expect_rejected(adam, l, 0.1, "params_f32 lists 2 tensors, the gradients 1");

  l = t.list();
  l.states_f32.pop_back();
  expect_rejected(adam, l, 0.1, "states_f32 has 1 states");

  std::array<float, 3> longer{};
  l = t.list();
  l.params_f32[0] = std::span<float>(longer);
  expect_rejected(adam, l, 0.1, "tensor 0: the parameter has 3 elements, its gradient 2");

  l = t.list();
  expect_rejected(adam, l, 0.1, "must be empty for precision bf16_master", {}, Precision::bf16_master);
}

TEST(BadInput, StepNumbersCountFromOne) {
  Hyper h = with(Algorithm::sgd);
  Tiny t = tiny(h, {1.0f, 2.0f}, {0.5f, 0.5f});
  try {
    step(h, Precision::fp32, Math::fp64, t.list(), 0, 0.1, {});
    ADD_FAILURE() << "step 0 accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("below 1"), std::string::npos) << e.what();
  }
}

TEST(Config, StateCountsFollowTheOptions) {
  Hyper h = with(Algorithm::sgd);
  EXPECT_EQ(gauge::optim::state_count(h), 0);
  h.momentum = 0.9;
  EXPECT_EQ(gauge::optim::state_names(h), std::vector<std::string>{"momentum_buffer"});
  h = with(Algorithm::rmsprop);
  h.momentum = 0.9;
  h.centered = true;
  EXPECT_EQ(gauge::optim::state_names(h), (std::vector<std::string>{"square_avg", "momentum_buffer", "grad_avg"}));
  h = with(Algorithm::adamw);
  h.amsgrad = true;
  EXPECT_EQ(gauge::optim::state_names(h), (std::vector<std::string>{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}));
  EXPECT_EQ(gauge::optim::state_count(with(Algorithm::adagrad)), 1);
}

}  // namespace
}  // namespace gauge::reference::optim
