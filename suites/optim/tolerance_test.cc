// The fp32 tolerance rule (tolerance_rules.h) checked on the CPU: plain fp32 math (the faithful
// reference: what a straightforward fp32 kernel computes) must stay inside the derived bound against
// the fp64-math truth on every quick fp32 point, and runs with real mistakes in them must not. The
// first test prints how much of the bound fp32 math used.
#include "suites/optim/tolerance_rules.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "harness/compare.h"
#include "harness/inputs.h"
#include "suites/optim/replay.h"

namespace gauge::suites::optim {
namespace {

using gauge::reference::optim::Math;

struct Verdict {
  bool pass = true;
  double used = 0.0;  // largest |error| / allowed over every output element
  std::string report;
};

// Each output under its own rule (tolerance_rule(spec, name), as the cases judge them).
Verdict judge(const std::vector<HostTensor>& actual, const std::vector<HostTensor>& truth, const RunSpec& spec) {
  Verdict v;
  // A run with other options may keep fewer states; the outputs they share come first (params, ...).
  for (size_t i = 0; i < std::min(truth.size(), actual.size()); ++i) {
    if (actual[i].name() != truth[i].name()) break;
    const Agreement a = compare(actual[i], truth[i], tolerance_rule(spec, truth[i].name()));
    v.pass = v.pass && a.pass();
    if (!a.worst.empty()) v.used = std::max(v.used, a.worst.front().excess);
    if (!a.pass()) v.report += a.report();
  }
  return v;
}

std::vector<HostTensor> run(const RunSpec& spec, const std::vector<HostTensor>& inputs, Math math) {
  std::optional<HostTensor> buffer;
  if (spec.steps > 1) buffer.emplace("grad", param_dtype(spec.precision), Shape{make_layout(spec.sizes).flat_length});
  return replay(spec, inputs, math, buffer ? &*buffer : nullptr);
}

const Point& quick_point(const CaseConfig& config, int64_t steps) {
  const CaseDecl* decl = find_case("optim/" + config.name);
  for (const Point& p : decl->points) {
    if (p.quick && p.dim("steps") == steps) return p;
  }
  throw std::logic_error("no quick point with " + std::to_string(steps) + " steps in " + config.name);
}

TEST(Fp32Rule, PlainFp32MathStaysInsideTheBoundForEveryCase) {
  int checked = 0;
  for (const CaseConfig& config : case_configs()) {
    if (config.precision != Precision::fp32) continue;
    for (const Point& point : find_case("optim/" + config.name)->points) {
      // The small quick points: every case, one step and 100 (the 2^20 + 7 list is the same per-element
      // arithmetic, and would make this test the slowest of the suite under the sanitizers).
      if (!point.quick || point.dim("n") >= 100'000) continue;
      const RunSpec spec = run_spec(config, point);
      const std::vector<HostTensor> inputs = make_inputs(spec, inputs::kDefaultSeed);
      const std::vector<HostTensor> fp32 = run(spec, inputs, Math::fp32), truth = run(spec, inputs, Math::fp64);
      const Verdict v = judge(fp32, truth, spec);
      EXPECT_TRUE(v.pass) << config.name << " " << point.label() << "\n" << v.report;
      for (size_t i = 0; i < truth.size(); ++i) {
        const ErrorBudget budget = fp32_error_budget(spec, truth[i].name());
        const Agreement a = compare(fp32[i], truth[i], tolerance_rule(spec, truth[i].name()));
        std::printf("[  bound   ] %-24s %-9s %-15s D = %6lld u at M = %-7.3g: fp32 math used %5.1f%%\n",
                    config.name.c_str(), spec.steps == 1 ? "1 step" : "100 steps", truth[i].name().c_str(),
                    static_cast<long long>(budget.roundings), budget.magnitude,
                    100.0 * (a.worst.empty() ? 0.0 : a.worst.front().excess));
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 2 * 12);
}

// A mistake an implementation could make, applied to the truth's own spec: the result must fall
// outside the rule of the correct run.
void expect_rejected(const std::string& case_name, int64_t steps, const std::string& mistake,
                     const std::function<void(RunSpec&)>& make_mistake) {
  const CaseConfig& config = case_config(case_name);
  const RunSpec spec = run_spec(config, quick_point(config, steps));
  RunSpec wrong = spec;
  make_mistake(wrong);
  const std::vector<HostTensor> inputs = make_inputs(spec, inputs::kDefaultSeed);
  const std::vector<HostTensor> wrong_inputs = make_inputs(wrong, inputs::kDefaultSeed);  // same values
  const Verdict v = judge(run(wrong, wrong_inputs, Math::fp32), run(spec, inputs, Math::fp64), spec);
  EXPECT_FALSE(v.pass) << case_name << ": " << mistake << " passed the rule (used " << 100.0 * v.used << "%)";
  std::printf("[ rejects  ] %-24s %-44s at %8.3g x the bound\n", case_name.c_str(), mistake.c_str(), v.used);
}

TEST(Fp32Rule, RejectsRunsWithMistakes) {
  expect_rejected("adamw_fp32", 100, "decoupled weight decay forgotten", [](RunSpec& s) { s.hyper.weight_decay = 0.0; });
  expect_rejected("adamw_fp32", 100, "weight decay coupled (Adam) instead", [](RunSpec& s) { s.hyper.algorithm = Algorithm::adam; });
  expect_rejected("adam_fp32", 100, "beta2 0.99 for 0.999", [](RunSpec& s) { s.hyper.beta2 = 0.99; });
  expect_rejected("adam_fp32", 100, "lr 1% too large", [](RunSpec& s) { s.hyper.lr *= 1.01; });
  expect_rejected("adam_amsgrad_l2_fp32", 100, "amsgrad off", [](RunSpec& s) { s.hyper.amsgrad = false; });
  expect_rejected("sgd_fp32", 100, "Nesterov off", [](RunSpec& s) { s.hyper.nesterov = false; });
  expect_rejected("sgd_dampened_fp32", 100, "no dampening", [](RunSpec& s) { s.hyper.dampening = 0.0; });
  expect_rejected("sgd_clipped_fp32", 100, "clipping off", [](RunSpec& s) { s.options.max_grad_norm = 0.0; });
  expect_rejected("rmsprop_fp32", 100, "not centered", [](RunSpec& s) { s.hyper.centered = false; });
  expect_rejected("adagrad_fp32", 100, "lr_decay ignored", [](RunSpec& s) { s.hyper.lr_decay = 0.0; });
  expect_rejected("adamw_fp32", 100, "warm-up one step shorter", [](RunSpec& s) { s.schedule.warmup_steps -= 1; });
}

// Per-output rules are at each quantity's own scale: Adam's second moment (of size g^2) is held to a
// smaller absolute error than the parameters, and no output's rule is looser than the point's.
TEST(Fp32Rule, EachOutputHasItsOwnScale) {
  for (const char* name : {"adamw_fp32", "adam_amsgrad_l2_fp32", "rmsprop_fp32", "sgd_fp32", "adagrad_fp32"}) {
    const CaseConfig& config = case_config(name);
    const RunSpec spec = run_spec(config, quick_point(config, 100));
    const ToleranceRule whole = tolerance_rule(spec);
    std::vector<std::string> outputs = {"params"};
    for (const std::string& s : gauge::optim::state_names(spec.hyper)) outputs.push_back(s);
    for (const std::string& output : outputs) {
      const ToleranceRule own = tolerance_rule(spec, output);
      EXPECT_LE(own.atol, whole.atol * (1 + 1e-12)) << name << " " << output;
      EXPECT_NE(own.describe().find(output), std::string::npos) << own.describe();
    }
  }
  const CaseConfig& adamw = case_config("adamw_fp32");
  const RunSpec spec = run_spec(adamw, quick_point(adamw, 100));
  EXPECT_LT(tolerance_rule(spec, "exp_avg_sq").atol, tolerance_rule(spec, "params").atol);
  EXPECT_THROW(tolerance_rule(spec, "momentum_buffer"), std::logic_error) << "AdamW keeps no momentum buffer";
}

// An error only the second moment carries (Adam's v off by 0.01 % after one step, as from a
// mis-rounded 1 - beta2): its own rule, at v's scale (1 - beta2) g^2 <= 1e-3, rejects it; the point's
// single rule, at the parameters' scale 1, could not see it.
TEST(Fp32Rule, ASecondMomentErrorIsCaughtAtItsOwnScale) {
  const CaseConfig& config = case_config("adamw_fp32");
  const RunSpec spec = run_spec(config, quick_point(config, 1));
  const std::vector<HostTensor> inputs = make_inputs(spec, inputs::kDefaultSeed);
  std::vector<HostTensor> fp32 = run(spec, inputs, Math::fp32);
  const std::vector<HostTensor> truth = run(spec, inputs, Math::fp64);
  size_t v = 0;
  while (truth[v].name() != "exp_avg_sq") ++v;
  for (float& x : fp32[v].view<float>()) x *= 1.0001f;
  const Agreement own = compare(fp32[v], truth[v], tolerance_rule(spec, "exp_avg_sq"));
  const Agreement whole = compare(fp32[v], truth[v], tolerance_rule(spec));
  EXPECT_FALSE(own.pass()) << own.report();
  EXPECT_TRUE(whole.pass()) << "the single rule was expected to be too loose to see it: " << whole.report();
  std::printf("[ v +0.01%% ] own rule: %.3g x the bound; the point's single rule: %.3g x\n",
              own.worst.empty() ? 0.0 : own.worst.front().excess, whole.worst.empty() ? 0.0 : whole.worst.front().excess);
}

TEST(Fp32Rule, DerivationIsRecorded) {
  const CaseConfig& config = case_config("adamw_fp32");
  const ToleranceRule rule = tolerance_rule(run_spec(config, quick_point(config, 100)));
  EXPECT_EQ(rule.kind, ToleranceRule::Kind::abs_rel);
  EXPECT_NE(rule.describe().find("first-order propagation"), std::string::npos) << rule.describe();
  EXPECT_GT(rule.atol, 0.0);
}

// The optimized accumulation's documented arithmetic (optimized/optim/multi_tensor.h: an fp32 sum in
// micro-batch order, then one multiply by fp32(1 / k)), emulated here in plain fp32, stays inside the
// rule; the mean of one micro-batch fewer is rejected.
TEST(AccumulationRule, Fp32SumThenScaleStaysInsideAndAMissingMicroBatchDoesNot) {
  const CaseDecl* decl = find_case("optim/grad_accumulation");
  ASSERT_NE(decl, nullptr);
  for (const Point& point : decl->points) {
    if (!point.quick) continue;
    const AccumulationSpec spec = accumulation_spec(point);
    const std::vector<HostTensor> inputs = decl->inputs(point, inputs::kDefaultSeed);
    const ReferenceResult truth = decl->reference(point, inputs);
    const ToleranceRule rule = decl->tolerance(point);
    const auto fp32_mean = [&](int micro_batches) {
      HostTensor mean("mean", DType::f32, inputs.front().shape());
      const float scale = 1.0f / static_cast<float>(micro_batches);
      for (int64_t e = 0; e < mean.numel(); ++e) {
        float sum = 0.0f;
        for (int j = 0; j < micro_batches; ++j) sum += static_cast<float>(inputs[static_cast<size_t>(j)].at_as_double(e));
        mean.view<float>()[static_cast<size_t>(e)] = sum * scale;
      }
      return mean;
    };
    const Agreement good = compare(fp32_mean(spec.micro_batches), truth.outputs[0], rule);
    EXPECT_TRUE(good.pass()) << point.label() << "\n" << good.report();
    const Agreement bad = compare(fp32_mean(spec.micro_batches - 1), truth.outputs[0], rule);
    EXPECT_FALSE(bad.pass()) << point.label();
  }
}

TEST(Bf16Rule, IsTheFaithfulRuleWithOneBf16UlpFloor) {
  const CaseConfig& config = case_config("adamw_bf16_stochastic");
  const RunSpec spec = run_spec(config, quick_point(config, 100));
  const ToleranceRule rule = tolerance_rule(spec);
  EXPECT_EQ(rule.kind, ToleranceRule::Kind::faithful);
  EXPECT_EQ(rule.factor, 2.0);
  EXPECT_GT(rule.atol, 0.0);
  EXPECT_LT(rule.atol, 0.05);  // one bf16 ulp at an order-one magnitude
}

}  // namespace
}  // namespace gauge::suites::optim
