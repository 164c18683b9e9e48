// Optimizer steps, declared once: SGD, AdaGrad, RMSprop, Adam and AdamW in fp32, bf16 with fp32
// master weights and bf16 with stochastically rounded bf16 states, each replayed for 1 and 100 steps
// over ragged tensor lists (conformance) and over a transformer-shaped list (benchmark). How a point
// maps to a run is written down in run_spec.h; the tolerance rules are derived in tolerance_rules.h.
//
// Every case has these points ("list" names a tensor list of run_spec.h, "n" its parameters):
//   list=1 (ragged_small, ~5e3), 1 step        quick: conformance after one step
//   list=3 (ragged_tiny, ~1e3), 100 steps      quick: conformance after 100 steps, every schedule phase
//   list=0 (ragged, ~1.1e6), 1 step            quick for fp32: the 2^20 + 7 tensor; the quick benchmark
//   list=0, 100 steps                          full
//   list=2 (transformer, ~1.1e8), 1 step       full: the benchmark
// Variant cases (fp32) cover the remaining hyper-parameter branches with the quick points and a
// full 100-step point. grad_accumulation checks the mean of k micro-batch gradients.
#include <memory>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/error.h"
#include "reference/optim/schedule.h"
#include "suites/optim/replay.h"
#include "suites/optim/run_spec.h"
#include "suites/optim/tolerance_rules.h"

#if GAUGE_HAS_CUDA
#include <cuda_runtime.h>

#include "harness/cuda/rng_fill.h"
#include "harness/gpu.h"
#include "optimized/optim/multi_tensor.h"
#include "optimized/precision/casts.h"
#endif

namespace gauge::suites::optim {
namespace {

namespace ref = gauge::reference::optim;
using gauge::optim::ScheduleShape;

// ---- The optimized side: replay the same run on the device ------------------------------------------
// Untimed (CaseDecl::prepare): the outputs are set from the inputs (one device-to-device copy per
// stored tensor, whole flat buffers) and a StepPlan is built over pointers into them. Timed: steps 1..T run with the host-scheduled
// learning rates. With T > 1 each step's gradient is regenerated into the `grad` input buffer (a
// device copy this case owns) by the harness's Philox fill, through the `grad_staging` input and the
// CUDA RNE cast for bf16; a one-step point uses the uploaded gradient as it is. Nothing is read back
// and nothing synchronizes.
#if GAUGE_HAS_CUDA
void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RuntimeFailure(std::string("optim binding: ") + what + ": " + cudaGetErrorString(status));
}

void copy_device(const DeviceTensor& to, const DeviceTensor& from, StreamHandle stream) {
  check_cuda(cudaMemcpyAsync(to.ptr, from.ptr, from.bytes, cudaMemcpyDeviceToDevice, stream), "reset copy");
}

template <class T = unsigned char>
T* element(const DeviceTensor& flat, int64_t index) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(flat.ptr) + static_cast<size_t>(index) * dtype_size(flat.dtype));
}

void regenerate_gradient(const RunSpec& spec, const Layout& layout, const OptimizedArgs& a, int64_t step) {
  const InputIndex in = input_index(spec);
  const DeviceTensor& grad = a.inputs.at(in.grad);
  const DeviceTensor& fill_target = spec.precision == Precision::fp32 ? grad : a.inputs.at(*in.grad_staging);
  for (size_t i = 0; i < layout.sizes.size(); ++i) {
    gpu::fill_uniform(element<float>(fill_target, layout.offsets[i]), layout.sizes[i], kGradientSeed,
                      value_tensor_id(step, i), -spec.grad_scale, spec.grad_scale, a.stream);
  }
  if (spec.precision != Precision::fp32) {
    // The staging gaps are zero, so casting the whole buffer keeps the gradient's gaps zero.
    optimized::precision::cast_f32_to_bf16(element<float>(fill_target, 0), element<uint16_t>(grad, 0),
                                           layout.flat_length, a.stream);
  }
}

// Untimed, once per point: the outputs start as copies of the initial parameters, master weights
// and states (the step then updates them in place), and the StepPlan (chunk table, norm workspace)
// is built. The timed call is the step alone.
struct PreparedStep {
  std::unique_ptr<optimized::optim::StepPlan> plan;
};

std::shared_ptr<void> optimized_prepare(const CaseConfig& config, const OptimizedArgs& a) {
  const RunSpec spec = run_spec(config, a.point);
  const Layout layout = make_layout(spec.sizes);
  const InputIndex in = input_index(spec);
  const OutputIndex out = output_index(spec);

  copy_device(a.outputs.at(out.params), a.inputs.at(in.params), a.stream);
  if (out.master) copy_device(a.outputs.at(*out.master), a.inputs.at(*in.master), a.stream);
  for (int k = 0; k < out.states; ++k) {
    copy_device(a.outputs.at(out.first_state + static_cast<size_t>(k)),
                a.inputs.at(in.first_state + static_cast<size_t>(k)), a.stream);
  }

  optimized::optim::TensorList list;
  list.states.resize(static_cast<size_t>(out.states));
  for (size_t i = 0; i < layout.sizes.size(); ++i) {
    const int64_t offset = layout.offsets[i];
    list.params.push_back(element(a.outputs.at(out.params), offset));
    list.grads.push_back(element(a.inputs.at(in.grad), offset));
    if (out.master) list.master.push_back(element<float>(a.outputs.at(*out.master), offset));
    for (int k = 0; k < out.states; ++k) {
      list.states[static_cast<size_t>(k)].push_back(element(a.outputs.at(out.first_state + static_cast<size_t>(k)), offset));
    }
    list.sizes.push_back(layout.sizes[i]);
  }
  auto prepared = std::make_shared<PreparedStep>();
  prepared->plan = std::make_unique<optimized::optim::StepPlan>(
      list, spec.precision, spec.hyper, [&a](size_t bytes) { return a.session.workspace(bytes); }, a.stream);
  return prepared;
}

// The timed part: `steps` optimizer steps (with the gradient of each step regenerated on the device
// when there is more than one).
void optimized_run(const CaseConfig& config, const OptimizedArgs& a) {
  const RunSpec spec = run_spec(config, a.point);
  const Layout layout = make_layout(spec.sizes);
  const optimized::optim::StepPlan& plan = *a.state<PreparedStep>().plan;
  for (int64_t t = 1; t <= spec.steps; ++t) {
    if (spec.steps > 1) regenerate_gradient(spec, layout, a, t);
    plan.step(t, ref::scheduled_lr(spec.hyper.lr, spec.schedule, t), spec.options, nullptr, nullptr, a.stream);
  }
}

// Gradient accumulation: the output zeroed (gaps included), then one accumulate() per micro-batch
// in order, the output doubling as the fp32 accumulator. The plan is built once, untimed.
struct PreparedAccumulation {
  std::unique_ptr<optimized::optim::AccumulatePlan> plan;
};

std::shared_ptr<void> accumulation_prepare(const OptimizedArgs& a) {
  const AccumulationSpec spec = accumulation_spec(a.point);
  const Layout layout = make_layout(spec.sizes);
  const DeviceTensor& mean = a.outputs.at(0);
  optimized::optim::AccumulateList list;
  list.micro_grads.resize(static_cast<size_t>(spec.micro_batches));
  for (size_t i = 0; i < layout.sizes.size(); ++i) {
    for (int j = 0; j < spec.micro_batches; ++j) {
      list.micro_grads[static_cast<size_t>(j)].push_back(element(a.inputs.at(static_cast<size_t>(j)), layout.offsets[i]));
    }
    list.accumulators.push_back(element<float>(mean, layout.offsets[i]));
    list.outputs.push_back(element(mean, layout.offsets[i]));
    list.sizes.push_back(layout.sizes[i]);
  }
  const auto micro = spec.micro_dtype == DType::f32 ? optimized::optim::GradFormat::f32 : optimized::optim::GradFormat::bf16;
  auto prepared = std::make_shared<PreparedAccumulation>();
  prepared->plan = std::make_unique<optimized::optim::AccumulatePlan>(
      list, micro, optimized::optim::GradFormat::f32, [&a](size_t bytes) { return a.session.workspace(bytes); },
      a.stream);
  return prepared;
}

void accumulation_run(const OptimizedArgs& a) {
  const AccumulationSpec spec = accumulation_spec(a.point);
  const DeviceTensor& mean = a.outputs.at(0);
  check_cuda(cudaMemsetAsync(mean.ptr, 0, mean.bytes, a.stream), "zeroing the mean");
  const optimized::optim::AccumulatePlan& plan = *a.state<PreparedAccumulation>().plan;
  for (int j = 0; j < spec.micro_batches; ++j) plan.accumulate(j, a.stream);
}

// The StepPlan's workspace, for the predicted device peak.
int64_t plan_workspace_bound(const std::vector<int64_t>& sizes) {
  return static_cast<int64_t>(optimized::optim::StepPlan::workspace_bytes_bound(sizes));
}
#else
int64_t plan_workspace_bound(const std::vector<int64_t>&) { return 0; }  // no device side to predict
#endif

// ---- The cases ---------------------------------------------------------------------------------------

ShapeSpec point_of(TensorListId list, int64_t steps, bool quick) {
  const Layout layout = make_layout(tensor_sizes(list));
  return ShapeSpec{{{"list", static_cast<int64_t>(list)},
                    {"tensors", static_cast<int64_t>(layout.sizes.size())},
                    {"n", layout.parameters},
                    {"steps", steps}},
                   quick};
}

// Quick points stay small, so that ctest (also under the sanitizers) takes seconds: the reference
// of a bf16 point replays twice (truth and faithful) with a Philox draw per stored value, about a
// second per run of the 1.1e6-parameter list on the CPU. That list (with its 2^20 + 7 tensor) is
// quick for fp32 only; every point is checked on a GPU machine by `gauge run` without --quick.
std::vector<ShapeSpec> main_points(Precision precision) {
  return {
      point_of(TensorListId::ragged_small, 1, true),
      point_of(TensorListId::ragged_tiny, 100, true),
      point_of(TensorListId::ragged, 1, precision == Precision::fp32),
      point_of(TensorListId::ragged, 100, false),
      point_of(TensorListId::transformer, 1, false),
  };
}

std::vector<ShapeSpec> variant_points() {
  return {
      point_of(TensorListId::ragged_small, 1, true),
      point_of(TensorListId::ragged_tiny, 100, true),
      point_of(TensorListId::ragged, 100, false),
  };
}

// Warm-up for 10 steps, then decay until step 80 and the floor from there: a 100-step point visits
// every phase.
Schedule warmup_then(ScheduleShape shape, double floor_lr) {
  return Schedule{.warmup_steps = 10, .after_warmup = shape, .total_steps = 80, .floor_lr = floor_lr};
}

Hyper sgd_hyper() {
  Hyper h;
  h.algorithm = Algorithm::sgd;
  h.lr = 0.01;
  h.momentum = 0.9;
  h.nesterov = true;
  h.weight_decay = 5e-4;
  return h;
}
Hyper adagrad_hyper() {
  Hyper h;
  h.algorithm = Algorithm::adagrad;
  h.lr = 0.01;
  h.lr_decay = 1e-3;
  h.initial_accumulator_value = 0.1;
  h.eps = 1e-10;
  return h;
}
Hyper rmsprop_hyper() {
  Hyper h;
  h.algorithm = Algorithm::rmsprop;
  h.lr = 1e-3;
  h.alpha = 0.99;
  h.eps = 1e-8;
  h.momentum = 0.9;
  h.centered = true;
  return h;
}
Hyper adam_hyper(Algorithm algorithm) {
  Hyper h;
  h.algorithm = algorithm;
  h.lr = 1e-3;
  h.beta1 = 0.9;
  h.beta2 = 0.999;
  h.eps = 1e-8;
  h.weight_decay = algorithm == Algorithm::adamw ? 0.01 : 0.0;
  return h;
}

struct Family {
  std::string name;
  std::string description;
  Hyper hyper;
  Schedule schedule;
  StepOptions options;
  float grad_scale;
};

// Gradient scales keep every stored quantity of order one over 100 steps (SGD's momentum buffer
// grows to grad_scale / (1 - momentum), AdaGrad's sum to 100 grad_scale^2), so that the single
// magnitude bound of a point's fp32 rule fits all of its outputs.
std::vector<Family> main_families() {
  return {
      {"sgd", "SGD, momentum 0.9, Nesterov, coupled weight decay 5e-4; warm-up, linear decay", sgd_hyper(),
       warmup_then(ScheduleShape::linear, 1e-4), {}, 0.1f},
      {"adagrad", "AdaGrad, lr_decay 1e-3, initial accumulator 0.1, eps 1e-10; constant lr", adagrad_hyper(), {}, {},
       0.1f},
      {"rmsprop", "RMSprop centered, momentum 0.9, alpha 0.99; warm-up, constant", rmsprop_hyper(),
       warmup_then(ScheduleShape::constant, 0.0), {}, 1.0f},
      {"adam", "Adam, betas (0.9, 0.999), eps 1e-8; warm-up, cosine decay", adam_hyper(Algorithm::adam),
       warmup_then(ScheduleShape::cosine, 1e-5), {}, 1.0f},
      {"adamw", "AdamW, decoupled weight decay 0.01; warm-up, cosine decay", adam_hyper(Algorithm::adamw),
       warmup_then(ScheduleShape::cosine, 1e-5), {}, 1.0f},
  };
}

std::vector<Family> variant_families() {
  Hyper sgd_plain = sgd_hyper();
  sgd_plain.momentum = 0.0;
  sgd_plain.nesterov = false;
  sgd_plain.weight_decay = 0.0;

  Hyper sgd_dampened = sgd_hyper();
  sgd_dampened.nesterov = false;
  sgd_dampened.dampening = 0.5;
  sgd_dampened.weight_decay = 0.0;

  Hyper adagrad_l2 = adagrad_hyper();
  adagrad_l2.lr_decay = 0.0;
  adagrad_l2.weight_decay = 5e-4;

  // Coupled decay makes the adaptive updates divide an absolute error by their denominator, at least
  // eps (tolerance_rules.h); eps 1e-3 keeps that factor, and so the honest bound, small.
  Hyper rmsprop_l2 = rmsprop_hyper();
  rmsprop_l2.momentum = 0.0;
  rmsprop_l2.centered = false;
  rmsprop_l2.weight_decay = 5e-4;
  rmsprop_l2.eps = 1e-3;

  // AMSGrad differs from Adam only where v decreases; with beta2 = 0.999 the raw v of 100 steps of
  // similar gradients only grows, so the AMSGrad cases use beta2 = 0.95.
  Hyper adam_l2 = adam_hyper(Algorithm::adam);
  adam_l2.amsgrad = true;
  adam_l2.beta2 = 0.95;
  adam_l2.weight_decay = 5e-4;
  adam_l2.eps = 1e-3;

  Hyper adamw_amsgrad = adam_hyper(Algorithm::adamw);
  adamw_amsgrad.amsgrad = true;
  adamw_amsgrad.beta2 = 0.95;

  StepOptions clipped;
  clipped.max_grad_norm = 1.0;

  return {
      {"sgd_plain", "SGD without momentum or weight decay; constant lr", sgd_plain, {}, {}, 1.0f},
      {"sgd_dampened", "SGD, momentum 0.9, dampening 0.5, no Nesterov; warm-up, cosine decay", sgd_dampened,
       warmup_then(ScheduleShape::cosine, 0.0), {}, 0.1f},
      {"sgd_clipped", "Nesterov SGD with gradients clipped to global norm 1; warm-up, linear decay", sgd_hyper(),
       warmup_then(ScheduleShape::linear, 1e-4), clipped, 0.1f},
      {"adagrad_l2", "AdaGrad with coupled weight decay 5e-4; warm-up, constant", adagrad_l2,
       warmup_then(ScheduleShape::constant, 0.0), {}, 0.1f},
      {"rmsprop_l2", "RMSprop, no momentum, not centered, coupled weight decay 5e-4, eps 1e-3; constant lr",
       rmsprop_l2, {}, {}, 1.0f},
      {"adam_amsgrad_l2", "Adam, AMSGrad, beta2 0.95, coupled weight decay 5e-4, eps 1e-3; warm-up, linear decay", adam_l2,
       warmup_then(ScheduleShape::linear, 0.0), {}, 1.0f},
      {"adamw_amsgrad_clipped", "AdamW, AMSGrad, beta2 0.95, gradients clipped to global norm 1; warm-up, cosine decay",
       adamw_amsgrad, warmup_then(ScheduleShape::cosine, 1e-5), clipped, 1.0f},
  };
}

CaseConfig configure(const Family& family, Precision precision, const std::vector<ShapeSpec>& shapes) {
  CaseConfig config;
  config.name = family.name + "_" + gauge::optim::precision_name(precision);
  config.description = family.description + "; " + gauge::optim::precision_name(precision);
  config.precision = precision;
  config.hyper = family.hyper;
  config.schedule = family.schedule;
  config.options = family.options;
  if (precision == Precision::bf16_stochastic) config.options.seed = 0x5352;  // "SR"
  config.grad_scale = family.grad_scale;
  config.shapes = shapes;
  return config;
}

CaseDecl declare(const CaseConfig& config) {
  CaseDecl decl;
  decl.suite = "optim";
  decl.name = config.name;
  decl.description = config.description;
  decl.points = grid(config.shapes, {point_dtype(config.precision)});
  decl.model = [config](const Point& p) {
    const RunSpec spec = run_spec(config, p);
    CostModel model = cost_model(spec);
    model.predicted_device_peak_bytes += plan_workspace_bound(spec.sizes);
    return model;
  };
  decl.tolerance = [config](const Point& p) { return tolerance_rule(run_spec(config, p)); };
  decl.output_tolerance = [config](const Point& p, const std::string& output) {
    return tolerance_rule(run_spec(config, p), output);
  };
  decl.inputs = [config](const Point& p, uint64_t seed) { return make_inputs(run_spec(config, p), seed); };
  decl.reference = [config](const Point& p, const std::vector<HostTensor>& in) { return reference_run(run_spec(config, p), in); };
  decl.prepare = GAUGE_CUDA_ONLY([config](const OptimizedArgs& a) { return optimized_prepare(config, a); });
  decl.optimized = GAUGE_CUDA_ONLY([config](const OptimizedArgs& a) { optimized_run(config, a); });
  decl.params = [config](const Point& p) { return run_params(run_spec(config, p)); };
  return decl;
}

CaseDecl declare_accumulation() {
  const auto point = [](TensorListId list, int64_t micro_batches, bool quick) {
    const Layout layout = make_layout(tensor_sizes(list));
    return ShapeSpec{{{"list", static_cast<int64_t>(list)},
                      {"tensors", static_cast<int64_t>(layout.sizes.size())},
                      {"n", layout.parameters},
                      {"micro_batches", micro_batches}},
                     quick};
  };
  CaseDecl decl;
  decl.suite = "optim";
  decl.name = "grad_accumulation";
  decl.description = "mean of k micro-batch gradients (fp32 or bf16) into fp32, one micro-batch at a time";
  decl.points = grid({point(TensorListId::ragged_small, 4, true), point(TensorListId::ragged_small, 3, true),
                      point(TensorListId::ragged, 8, false), point(TensorListId::transformer, 4, false)},
                     {DType::f32, DType::bf16});
  decl.model = [](const Point& p) { return accumulation_cost_model(accumulation_spec(p)); };
  decl.tolerance = [](const Point& p) { return accumulation_tolerance_rule(accumulation_spec(p)); };
  decl.inputs = [](const Point& p, uint64_t seed) { return make_accumulation_inputs(accumulation_spec(p), seed); };
  decl.reference = [](const Point& p, const std::vector<HostTensor>& in) {
    return accumulation_reference(accumulation_spec(p), in);
  };
  decl.prepare = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) { return accumulation_prepare(a); });
  decl.optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) { accumulation_run(a); });
  decl.params = [](const Point& p) {
    const AccumulationSpec spec = accumulation_spec(p);
    return Params{{"micro_batches", static_cast<int64_t>(spec.micro_batches)},
                  {"micro_dtype", std::string(dtype_name(spec.micro_dtype))},
                  {"values", std::string("uniform_at(harness seed, (micro + 1) * 4096 + tensor, element, -1, 1)")},
                  {"mean", std::string("(sum of micro-batches) / k, fp32")}};
  };
  return decl;
}

[[maybe_unused]] const bool registered = [] {
  for (const CaseConfig& config : case_configs()) register_case(declare(config));
  register_case(declare_accumulation());
  return true;
}();

}  // namespace

const std::vector<CaseConfig>& case_configs() {
  static const std::vector<CaseConfig> configs = [] {
    std::vector<CaseConfig> all;
    for (const Family& family : main_families()) {
      for (Precision precision : {Precision::fp32, Precision::bf16_master, Precision::bf16_stochastic}) {
        std::vector<ShapeSpec> shapes = main_points(precision);
        // The top of the range, 10^9 parameters, for AdamW (the >= 85 % HBM target is fp32
        // AdamW at >= 10^8) in fp32 and with fp32 master weights: ~26 / ~45 GB of host memory for the
        // reference, ~15 / ~17 GB on the device, so only where `gauge run` is asked for full points.
        if (family.name == "adamw" && precision != Precision::bf16_stochastic) {
          shapes.push_back(point_of(TensorListId::llama7b_slice, 1, false));
        }
        all.push_back(configure(family, precision, shapes));
      }
    }
    for (const Family& family : variant_families()) all.push_back(configure(family, Precision::fp32, variant_points()));
    return all;
  }();
  return configs;
}

const CaseConfig& case_config(const std::string& name) {
  for (const CaseConfig& config : case_configs()) {
    if (config.name == name) return config;
  }
  throw UsageError("no optim case named '" + name + "'");
}

}  // namespace gauge::suites::optim
