// The run description of the optim suite: layouts, the keyed inputs and gradients the CUDA binding
// regenerates, the cost model's per-parameter numbers against the table, the reference's
// measured peak against the prediction for every declared case, and the coverage of every
// hyper-parameter branch by a declared case.
#include "suites/optim/run_spec.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <variant>

#include "harness/case.h"
#include "harness/error.h"
#include "harness/memory.h"
#include "harness/philox.h"
#include "reference/precision/casts.h"
#include "suites/optim/replay.h"

namespace gauge::suites::optim {
namespace {

namespace casts = gauge::reference::precision;

// The optimizer-step cases built from RunSpecs (the MLP step-in-backward cases have their own tests
// in step_in_backward_test.cc).
std::vector<const CaseDecl*> optim_cases() {
  std::vector<const CaseDecl*> cases;
  for (const CaseDecl& c : all_cases()) {
    if (c.suite == "optim" && !c.name.starts_with("mlp_")) cases.push_back(&c);
  }
  return cases;
}

Point custom_point(TensorListId list, int64_t steps, DType dtype) {
  return Point{"custom", {{"list", static_cast<int64_t>(list)}, {"steps", steps}}, dtype, true};
}

RunSpec spec_of(Algorithm algorithm, Precision precision, int64_t steps = 1) {
  RunSpec s;
  s.precision = precision;
  s.hyper.algorithm = algorithm;
  s.sizes = tensor_sizes(TensorListId::ragged_small);
  s.steps = steps;
  return s;
}

TEST(Layout, TensorsStartAlignedAndDoNotOverlap) {
  for (TensorListId id : {TensorListId::ragged, TensorListId::ragged_small, TensorListId::transformer}) {
    const Layout l = make_layout(tensor_sizes(id));
    int64_t end = 0, total = 0;
    for (size_t i = 0; i < l.sizes.size(); ++i) {
      EXPECT_EQ(l.offsets[i] % kAlignElements, 0) << tensor_list_name(id) << " tensor " << i;
      EXPECT_GE(l.offsets[i], end);
      end = l.offsets[i] + l.sizes[i];
      total += l.sizes[i];
    }
    EXPECT_EQ(l.flat_length, end);
    EXPECT_EQ(l.parameters, total);
  }
  EXPECT_EQ(make_layout(tensor_sizes(TensorListId::ragged)).parameters, 1 + 3 + 1000 + (1 << 20) + 7 + 4097 + 65535 + 17);
  EXPECT_EQ(make_layout(tensor_sizes(TensorListId::transformer)).parameters, 108'672'000);
  // 32000 x 4096 + 4 x (2 x 4096 + 4 x 4096^2 + 3 x 11008 x 4096) + 4096: about 10^9.
  EXPECT_EQ(make_layout(tensor_sizes(TensorListId::llama7b_slice)).parameters, 940'609'536);
}

TEST(Inputs, InitialValuesAndGradientsAreTheDocumentedPhiloxDraws) {
  for (Precision p : {Precision::fp32, Precision::bf16_master, Precision::bf16_stochastic}) {
    RunSpec s = spec_of(Algorithm::adagrad, p, 3);
    s.hyper.initial_accumulator_value = 0.5;
    s.grad_scale = 0.25f;
    const uint64_t seed = 1234;
    const std::vector<HostTensor> in = make_inputs(s, seed);
    const InputIndex index = input_index(s);
    ASSERT_EQ(in.size(), index.count);
    const Layout l = make_layout(s.sizes);
    const size_t i = 3;  // the 4097-element tensor
    for (int64_t j : {int64_t{0}, int64_t{1}, int64_t{4096}}) {
      const size_t at = static_cast<size_t>(l.offsets[i] + j);
      const float v = rng::uniform_at(seed, value_tensor_id(0, i), static_cast<uint64_t>(j), -1.0f, 1.0f);
      const float g = rng::uniform_at(kGradientSeed, value_tensor_id(1, i), static_cast<uint64_t>(j), -0.25f, 0.25f);
      if (p == Precision::fp32) {
        EXPECT_EQ(in[index.params].view<float>()[at], v);
        EXPECT_EQ(in[index.grad].view<float>()[at], g);
        EXPECT_EQ(in[index.first_state].view<float>()[at], 0.5f);
      } else {
        EXPECT_EQ(in[index.params].view<uint16_t>()[at], casts::f32_to_bf16(v));
        EXPECT_EQ(in[index.grad].view<uint16_t>()[at], casts::f32_to_bf16(g));
      }
      if (index.master) {
        EXPECT_EQ(in[*index.master].view<float>()[at], v);
      }
    }
    // The gaps between tensors are zero in every input.
    const size_t gap = static_cast<size_t>(l.offsets[1] + l.sizes[1]);
    for (const HostTensor& t : in) EXPECT_EQ(t.at_as_double(static_cast<int64_t>(gap)), 0.0) << t.name();
    EXPECT_EQ(index.grad_staging.has_value(), p != Precision::fp32);
    // Step 2's gradient differs from step 1's: the step is in the key.
    HostTensor next("grad", param_dtype(p), {l.flat_length});
    fill_gradient(s, l, 2, next);
    EXPECT_NE(next.at_as_double(l.offsets[i]), in[index.grad].at_as_double(l.offsets[i]));
  }
}

TEST(CostModel, StateBytesPerParameterMatchTheTable) {
  Hyper h;
  h.algorithm = Algorithm::sgd;
  h.momentum = 0.9;
  EXPECT_EQ(state_bytes_per_parameter(h, Precision::fp32), 4);
  h.algorithm = Algorithm::adam;
  EXPECT_EQ(state_bytes_per_parameter(h, Precision::fp32), 8);
  h.algorithm = Algorithm::adamw;
  EXPECT_EQ(state_bytes_per_parameter(h, Precision::fp32), 8);
  EXPECT_EQ(state_bytes_per_parameter(h, Precision::bf16_master), 12);      // + 4 fp32 master
  EXPECT_EQ(state_bytes_per_parameter(h, Precision::bf16_stochastic), 4);   // bf16 states
  h.algorithm = Algorithm::adagrad;
  EXPECT_EQ(state_bytes_per_parameter(h, Precision::fp32), 4);
  h.algorithm = Algorithm::rmsprop;
  h.momentum = 0.0;
  EXPECT_EQ(state_bytes_per_parameter(h, Precision::fp32), 4);
  h.centered = true;
  EXPECT_EQ(state_bytes_per_parameter(h, Precision::fp32), 8);
}

TEST(CostModel, AdamWFp32MovesTwentyEightBytesPerParameterPlusTheGradientPass) {
  RunSpec s = spec_of(Algorithm::adamw, Precision::fp32);
  // read p, g, m, v; write p, m, v = 28; the NaN/Inf check reads g once more before anything is written.
  EXPECT_EQ(step_bytes_per_parameter(s), 28.0 + 4.0);
  s.options.allow_nonfinite = true;
  EXPECT_EQ(step_bytes_per_parameter(s), 28.0);
  s.precision = Precision::bf16_master;  // read master 4, g 2, m 4, v 4; write p 2, master 4, m 4, v 4
  EXPECT_EQ(step_bytes_per_parameter(s), 28.0);
  s.precision = Precision::bf16_stochastic;
  EXPECT_EQ(step_bytes_per_parameter(s), 14.0);
  RunSpec sgd = spec_of(Algorithm::sgd, Precision::fp32);
  sgd.options.allow_nonfinite = true;
  EXPECT_EQ(step_bytes_per_parameter(sgd), 12.0);  // read p, g; write p

  // One timed call of a one-step point: the step alone (the outputs were set by the untimed prepare).
  s = spec_of(Algorithm::adamw, Precision::fp32);
  const Layout l = make_layout(s.sizes);
  const CostModel m = cost_model(s);
  EXPECT_EQ(m.bytes, 32.0 * static_cast<double>(l.parameters));
  EXPECT_EQ(m.flops, static_cast<double>(l.parameters) * step_flops_per_parameter(s));
}

// The runner's measurement: the window opens with the inputs live; measured = peak - bytes live
// before the inputs were made. Every declared case, on its quick points below 10^5 parameters (one
// step, 100 steps, the accumulation's k micro-batches).
TEST(Memory, ReferencePeakMatchesThePrediction) {
  const auto cases = optim_cases();
  ASSERT_FALSE(cases.empty());
  int checked = 0;
  for (const CaseDecl* c : cases) {
    for (const Point& point : c->points) {
      if (!point.quick || point.dim("n") >= 100'000) continue;
      const CostModel model = c->model(point);
      const int64_t baseline = mem::host_current_bytes();
      int64_t measured = 0;
      {
        const std::vector<HostTensor> inputs = c->inputs(point, 5);
        mem::reset_host_peak();
        const ReferenceResult result = c->reference(point, inputs);
        measured = mem::host_peak_bytes() - baseline;
      }
      EXPECT_EQ(measured, model.predicted_host_peak_bytes) << c->name << " " << point.label();
      ++checked;
    }
  }
  EXPECT_GE(checked, 2 * 22 + 4);
}

TEST(Memory, DeclaredPointsPredictStateBytesAsModelled) {
  // A 1e8-parameter AdamW fp32 point: inputs p, m, v, g and outputs p, m, v: 28 bytes per element.
  for (const CaseDecl* c : optim_cases()) {
    if (c->name != "adamw_fp32") continue;
    for (const Point& p : c->points) {
      if (p.dim("list") != static_cast<int64_t>(TensorListId::transformer)) continue;
      const int64_t flat = make_layout(tensor_sizes(TensorListId::transformer)).flat_length;
      EXPECT_EQ(c->model(p).predicted_host_peak_bytes, 28 * flat);
      // The device adds the StepPlan's workspace (CUDA builds; StepPlan::workspace_bytes_bound).
      EXPECT_GE(c->model(p).predicted_device_peak_bytes, 28 * flat);
      EXPECT_LT(c->model(p).predicted_device_peak_bytes, 28 * flat + flat / 100);
    }
  }
}

// Every hyper-parameter branch has a declared case with a quick (ctest) point.
TEST(Coverage, EveryBranchHasAQuickCase) {
  std::set<std::string> seen;
  for (const CaseDecl* c : optim_cases()) {
    for (const Point& point : c->points) {
      if (!point.quick) continue;
      std::map<std::string, ParamValue> p;
      for (const auto& [k, v] : c->params(point)) p[k] = v;
      if (!p.count("algorithm")) {  // grad_accumulation
        seen.insert("accumulation " + std::string(dtype_name(point.dtype)));
        continue;
      }
      const std::string algorithm = std::get<std::string>(p.at("algorithm"));
      const std::string precision = std::get<std::string>(p.at("precision"));
      seen.insert(algorithm + " " + precision);
      seen.insert(algorithm + (std::get<double>(p.at("weight_decay")) != 0.0 ? " wd" : " no wd"));
      if (algorithm == "sgd") {
        const bool momentum = std::get<double>(p.at("momentum")) != 0.0;
        seen.insert(std::string("sgd ") + (momentum ? "momentum" : "no momentum"));
        if (momentum) seen.insert(std::string("sgd ") + (std::get<bool>(p.at("nesterov")) ? "nesterov" : "no nesterov"));
        if (std::get<double>(p.at("dampening")) != 0.0) seen.insert("sgd dampening");
      }
      if (algorithm == "rmsprop") {
        seen.insert(std::string("rmsprop ") + (std::get<bool>(p.at("centered")) ? "centered" : "not centered"));
        seen.insert(std::string("rmsprop ") + (std::get<double>(p.at("momentum")) > 0.0 ? "momentum" : "no momentum"));
      }
      if (algorithm == "adagrad" && std::get<double>(p.at("lr_decay")) != 0.0) seen.insert("adagrad lr_decay");
      if (algorithm == "adam" || algorithm == "adamw") {
        seen.insert(algorithm + (std::get<bool>(p.at("amsgrad")) ? " amsgrad" : " no amsgrad"));
      }
      if (std::get<double>(p.at("max_grad_norm")) > 0.0) seen.insert("clipping");
      const int64_t steps = std::get<int64_t>(p.at("steps"));
      seen.insert("steps " + std::to_string(steps));
      const int64_t warmup = std::get<int64_t>(p.at("warmup_steps"));
      const int64_t total = std::get<int64_t>(p.at("schedule_total_steps"));
      const std::string shape = std::get<std::string>(p.at("schedule_after_warmup"));
      if (warmup > 0) seen.insert("schedule warmup");
      if (steps > warmup) seen.insert("schedule " + shape);
      if (shape != "constant" && steps > total) seen.insert("schedule floor");
    }
  }
  const std::vector<std::string> required = {
      "sgd fp32", "sgd bf16_master", "sgd bf16_stochastic", "adagrad fp32", "adagrad bf16_master",
      "adagrad bf16_stochastic", "rmsprop fp32", "rmsprop bf16_master", "rmsprop bf16_stochastic", "adam fp32",
      "adam bf16_master", "adam bf16_stochastic", "adamw fp32", "adamw bf16_master", "adamw bf16_stochastic",
      "sgd wd", "sgd no wd", "adagrad wd", "adagrad no wd", "rmsprop wd", "rmsprop no wd", "adam wd", "adam no wd",
      "adamw wd", "sgd momentum", "sgd no momentum", "sgd nesterov", "sgd no nesterov", "sgd dampening",
      "rmsprop centered", "rmsprop not centered", "rmsprop momentum", "rmsprop no momentum", "adagrad lr_decay",
      "adam amsgrad", "adam no amsgrad", "adamw amsgrad", "adamw no amsgrad", "clipping", "steps 1", "steps 100",
      "schedule warmup", "schedule constant", "schedule linear", "schedule cosine", "schedule floor",
      "accumulation f32", "accumulation bf16"};
  for (const std::string& branch : required) EXPECT_TRUE(seen.count(branch)) << "no quick case covers: " << branch;
}

TEST(Params, ExposeTheHyperParameters) {
  for (const CaseDecl* c : optim_cases()) {
    ASSERT_TRUE(static_cast<bool>(c->params)) << c->name;
    if (c->name == "grad_accumulation") continue;
    std::set<std::string> keys;
    for (const auto& [k, v] : c->params(c->points.front())) keys.insert(k);
    for (const char* k : {"algorithm", "precision", "lr", "weight_decay", "steps", "tensor_sizes", "warmup_steps",
                          "max_grad_norm", "gradient_seed", "step_bytes_per_parameter", "state_bytes_per_parameter"}) {
      EXPECT_TRUE(keys.count(k)) << c->name << " lacks " << k;
    }
  }
}

TEST(RunSpec, RejectsAPointOfTheWrongDtype) {
  CaseConfig config;
  config.name = "x";
  config.precision = Precision::bf16_master;
  EXPECT_THROW(run_spec(config, custom_point(TensorListId::ragged_small, 1, DType::f32)), UsageError);
}

}  // namespace
}  // namespace gauge::suites::optim
