// Mixed-precision training, declared once.
//
// unscale_check_update: one loss-scaling step of a training loop over a gradient list (the
// gradients of every parameter tensor, contiguous in one flat buffer with ragged sizes, so tensors
// start at every alignment phase): unscale every gradient by fp32(1 / scale), raise found_inf for any
// Inf/NaN, then update the scale and growth tracker (PyTorch GradScaler semantics,
// reference/precision/loss_scaler.h). The rule is bit-exactness for every output: unscaling is one
// correctly rounded fp32 multiply and one RNE cast, found_inf and the update are exact.
//   list=0 (ragged, ~2.4e5 gradients)        quick, clean (the scale grows: tracker = interval - 1) and
//                                            with 3 Inf/NaN planted at ragged positions (backoff, skip)
//   list=1 (transformer, ~1.0e8 gradients)   full: the benchmark (% of HBM bandwidth)
//
// mlp_recipe_training: N Adam steps of a small MLP (reference/precision/mlp_recipes.h) in one recipe
// (point dim `recipe`: 0 fp32, 1 bf16_master, 2 f16_scaled, 3 f16_unscaled, 4 bf16_pure; dtype is
// the compute format) on the teacher task with loss weight 2^loss_weight_log2 (0: ordinary
// gradients; -16: gradients mostly below fp16's range). The record carries, as counters beside their
// predictions: bytes per parameter of the stored state (counting allocator; predicted 16 / 16 / 16 /
// 16 / 8), the curve's worst 20-step-window deviation from the fp32 curve in standard errors (pass:
// <= 3), final losses, skipped steps and the final loss scale, and for fp16 the fraction of non-zero
// fp32 gradients the fp16 backward flushes to zero without and with loss scaling (2^16).
// Outputs: the fp32 curve (the truth of the faithful rule) and the recipe's curve (its faithful
// reference); the CUDA recipe (optimized/precision/mlp_recipes.h: optimized/nn, UnscalePlan and the
// optimizer's StepPlan) writes its curve. The rule has an absolute term (recipe_curve_atol): the fp32
// point's reference deviation is 0 by construction.
// The scale is 49152 = 3 * 2^14, not a power of two, so the fp32 multiply rounds (a user's init_scale
// may be anything), and the gradients span 2^-28 .. 2^12 so unscaled 16-bit results include
// subnormals and zeros.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <memory>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/error.h"
#include "harness/inputs.h"
#include "reference/precision/casts.h"
#include "reference/precision/loss_scaler.h"
#include "reference/precision/mlp_recipes.h"

#if GAUGE_HAS_CUDA
#include <cuda_runtime.h>

#include "harness/gpu.h"
#include "optimized/precision/loss_scale.h"
#include "optimized/precision/mlp_recipes.h"
#endif

namespace gauge::suites::precision {
namespace {

namespace ref = gauge::reference::precision;
using gauge::precision::LossScalerConfig;

// ---- Gradient lists ---------------------------------------------------------------------------------

enum class GradientList : int64_t { ragged = 0, transformer = 1 };

std::vector<int64_t> gradient_sizes(GradientList list) {
  if (list == GradientList::ragged) {
    return {1, 3, 17, 255, 1000, 4099, 16384, 16385, 65537, 7, (1 << 17) + 3, 31, 12345};
  }
  // A GPT-style stack: 8 layers of width 1024, MLP 4096, with biases and LayerNorms (~1.0e8).
  std::vector<int64_t> sizes;
  constexpr int64_t d = 1024, ffn = 4096;
  for (int layer = 0; layer < 8; ++layer) {
    for (int64_t n : {d, d, 3 * d * d, 3 * d, d * d, d, d, d, ffn * d, ffn, d * ffn, d}) sizes.push_back(n);
  }
  return sizes;
}

int64_t total(const std::vector<int64_t>& sizes) {
  int64_t n = 0;
  for (int64_t s : sizes) n += s;
  return n;
}

constexpr float kCaseScale = 49152.0f;  // 3 * 2^14
LossScalerConfig case_config() { return LossScalerConfig{}; }  // PyTorch's defaults

// Flat positions of the planted non-finite values: the first element of tensor 0, the last element
// of the middle tensor, and the middle of the largest tensor: +Inf, NaN, -Inf.
std::vector<int64_t> planted_positions(const std::vector<int64_t>& sizes, int64_t planted) {
  std::vector<int64_t> offsets;
  int64_t at = 0;
  for (int64_t s : sizes) {
    offsets.push_back(at);
    at += s;
  }
  size_t largest = 0;
  for (size_t t = 1; t < sizes.size(); ++t) {
    if (sizes[t] > sizes[largest]) largest = t;
  }
  const size_t middle = sizes.size() / 2;
  const std::vector<int64_t> all = {offsets[0], offsets[middle] + sizes[middle] - 1,
                                    offsets[largest] + sizes[largest] / 2};
  return std::vector<int64_t>(all.begin(), all.begin() + std::min<int64_t>(planted, 3));
}

// Scaled gradients: sign, a 23-bit mantissa and an exponent in [-28, 11] from one Philox word each.
HostTensor scaled_gradients(DType dtype, const std::vector<int64_t>& sizes, int64_t planted, uint64_t seed) {
  const int64_t n = total(sizes);
  const HostTensor words = inputs::philox_u32("words", {n}, seed, /*tensor_id=*/0);
  HostTensor grads("grads", dtype, {n});
  const auto w = words.view<uint32_t>();
  const auto value = [](uint32_t word) {
    const float mantissa = 1.0f + static_cast<float>(word & 0x7FFFFFu) * 0x1p-23f;
    const float magnitude = std::ldexp(mantissa, static_cast<int>((word >> 24) % 40u) - 28);
    return (word >> 23) & 1u ? -magnitude : magnitude;
  };
  if (dtype == DType::f32) {
    auto g = grads.view<float>();
    for (int64_t i = 0; i < n; ++i) g[i] = value(w[i]);
    const float specials[] = {INFINITY, NAN, -INFINITY};
    const auto positions = planted_positions(sizes, planted);
    for (size_t k = 0; k < positions.size(); ++k) g[positions[k]] = specials[k];
  } else {
    auto g = grads.view<uint16_t>();
    const auto narrow = dtype == DType::bf16 ? ref::f32_to_bf16 : ref::f32_to_f16;
    for (int64_t i = 0; i < n; ++i) g[i] = narrow(value(w[i]));
    const uint16_t bf16_specials[] = {0x7F80u, 0x7FC0u, 0xFF80u};
    const uint16_t f16_specials[] = {0x7C00u, 0x7E00u, 0xFC00u};
    const auto positions = planted_positions(sizes, planted);
    for (size_t k = 0; k < positions.size(); ++k) {
      g[positions[k]] = dtype == DType::bf16 ? bf16_specials[k] : f16_specials[k];
    }
  }
  return grads;
}

ShapeSpec unscale_point(GradientList list, int64_t planted, bool quick) {
  const auto sizes = gradient_sizes(list);
  return ShapeSpec{{{"list", static_cast<int64_t>(list)},
                    {"tensors", static_cast<int64_t>(sizes.size())},
                    {"n", total(sizes)},
                    {"planted", planted}},
                   quick};
}

#if GAUGE_HAS_CUDA
void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RuntimeFailure(std::string("unscale binding: ") + what + ": " + cudaGetErrorString(status));
}

struct PreparedUnscale {
  std::unique_ptr<optimized::precision::UnscalePlan> plan;
};

// Untimed: the plan over the flat input (scaled gradients) and output (unscaled) buffers, cut at the
// tensor boundaries.
std::shared_ptr<void> unscale_prepare(const OptimizedArgs& a) {
  const auto sizes = gradient_sizes(static_cast<GradientList>(a.point.dim("list")));
  const DeviceTensor& in = a.inputs.at(0);
  const DeviceTensor& out = a.outputs.at(0);
  const size_t element = dtype_size(in.dtype);
  optimized::precision::UnscaleList list;
  list.dtype = in.dtype;
  int64_t at = 0;
  for (int64_t n : sizes) {
    list.in.push_back(static_cast<const unsigned char*>(in.ptr) + static_cast<size_t>(at) * element);
    list.out.push_back(static_cast<unsigned char*>(out.ptr) + static_cast<size_t>(at) * element);
    list.sizes.push_back(n);
    at += n;
  }
  auto prepared = std::make_shared<PreparedUnscale>();
  prepared->plan = std::make_unique<optimized::precision::UnscalePlan>(
      list, [&a](size_t bytes) { return a.session.workspace(bytes); }, a.stream);
  return prepared;
}

// Timed: what a training step does between backward and the optimizer: clear found_inf (4 bytes),
// unscale + check (one launch), update the scale (one single-thread launch). No host synchronization.
void unscale_run(const OptimizedArgs& a) {
  float* found_inf = a.out<float>(1);
  check_cuda(cudaMemsetAsync(found_inf, 0, sizeof(float), a.stream), "clearing found_inf");
  a.state<PreparedUnscale>().plan->unscale_and_check(a.in<float>(1), found_inf, a.stream);
  optimized::precision::update_scale(a.in<float>(1), a.in<int32_t>(2), a.out<float>(2), a.out<int32_t>(3), found_inf,
                                     case_config(), a.stream);
}

int64_t unscale_workspace_bound(const std::vector<int64_t>& sizes) {
  return static_cast<int64_t>(optimized::precision::UnscalePlan::workspace_bytes_bound(sizes));
}
#else
int64_t unscale_workspace_bound(const std::vector<int64_t>&) { return 0; }
#endif

[[maybe_unused]] const bool unscale_registered = register_case({
    .suite = "precision",
    .name = "unscale_check_update",
    .description = "loss scaling: unscale a gradient list by fp32(1/scale) with the Inf/NaN check fused, then "
                   "the GradScaler scale update (growth after 2000 clean steps, backoff 0.5 and skip on Inf/NaN)",
    .points = grid({unscale_point(GradientList::ragged, 0, true), unscale_point(GradientList::ragged, 3, true),
                    unscale_point(GradientList::transformer, 0, false)},
                   {DType::f32, DType::bf16, DType::f16}),
    .model =
        [](const Point& p) {
          const int64_t n = p.dim("n");
          const auto element = static_cast<int64_t>(dtype_size(p.dtype));
          CostModel m;
          m.flops = static_cast<double>(n);  // one multiply per gradient
          // Each gradient read once and written once; the scale, tracker and flag are noise.
          m.bytes = 2.0 * static_cast<double>(n * element);
          m.bound = Bound::memory;
          // Inputs (gradients, scale, tracker) and outputs (gradients, found_inf, scale, tracker).
          m.predicted_host_peak_bytes = 2 * n * element + 7 * 4;
          m.predicted_device_peak_bytes =
              m.predicted_host_peak_bytes +
              unscale_workspace_bound(gradient_sizes(static_cast<GradientList>(p.dim("list"))));
          m.predicted_counters = {{"skipped_steps", p.dim("planted") > 0 ? 1.0 : 0.0}};
          return m;
        },
    .tolerance = [](const Point&) { return tolerance::exact_bits(); },
    .inputs =
        [](const Point& p, uint64_t seed) {
          const auto sizes = gradient_sizes(static_cast<GradientList>(p.dim("list")));
          std::vector<HostTensor> in;
          in.push_back(scaled_gradients(p.dtype, sizes, p.dim("planted"), seed));
          HostTensor scale("scale", DType::f32, {1});
          scale.view<float>()[0] = kCaseScale;
          in.push_back(std::move(scale));
          // One clean step from growing: a clean list grows the scale, a planted one backs off.
          HostTensor tracker("growth_tracker", DType::i32, {1});
          tracker.view<int32_t>()[0] = static_cast<int32_t>(case_config().growth_interval - 1);
          in.push_back(std::move(tracker));
          return in;
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const float scale = in[1].view<float>()[0];
          ref::DynamicLossScaler scaler(case_config(), scale, in[2].view<int32_t>()[0]);
          HostTensor grads("grads", p.dtype, in[0].shape());
          bool found_inf = false;
          // Elementwise, so the whole flat buffer at once is every tensor of the list.
          if (p.dtype == DType::f32) {
            found_inf = ref::unscale_and_check_f32(in[0].view<float>(), grads.view<float>(), scaler.inv_scale());
          } else if (p.dtype == DType::bf16) {
            found_inf = ref::unscale_and_check_bf16(in[0].view<uint16_t>(), grads.view<uint16_t>(), scaler.inv_scale());
          } else {
            found_inf = ref::unscale_and_check_f16(in[0].view<uint16_t>(), grads.view<uint16_t>(), scaler.inv_scale());
          }
          const bool applied = scaler.update(found_inf);
          ReferenceResult r;
          r.outputs.push_back(std::move(grads));
          HostTensor flag("found_inf", DType::f32, {1});
          flag.view<float>()[0] = found_inf ? 1.0f : 0.0f;
          r.outputs.push_back(std::move(flag));
          HostTensor new_scale("scale", DType::f32, {1});
          new_scale.view<float>()[0] = scaler.scale();
          r.outputs.push_back(std::move(new_scale));
          HostTensor tracker("growth_tracker", DType::i32, {1});
          tracker.view<int32_t>()[0] = static_cast<int32_t>(scaler.growth_tracker());
          r.outputs.push_back(std::move(tracker));
          r.counters.push_back({"skipped_steps", applied ? 0.0 : 1.0});
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY(unscale_run),
    .params =
        [](const Point&) {
          const LossScalerConfig c = case_config();
          return Params{{"growth_factor", c.growth_factor},
                        {"backoff_factor", c.backoff_factor},
                        {"growth_interval", c.growth_interval}};
        },
    .prepare = GAUGE_CUDA_ONLY(unscale_prepare),
});

// ---- MLP recipes --------------------------------------------------------------------------------------

using ref::Recipe;

struct RecipePoint {
  Recipe recipe;
  int64_t loss_weight_log2;
  int64_t steps;
  bool quick;
};

using ref::compute_dtype;
using ref::is_f16;

ref::MlpTask recipe_task(const Point& p, uint64_t seed) {
  ref::MlpTask task;
  task.steps = p.dim("steps");
  task.loss_weight = std::ldexp(1.0, static_cast<int>(p.dim("loss_weight_log2")));
  task.seed = seed;
  return task;
}

std::vector<Point> recipe_points() {
  std::vector<RecipePoint> list;
  // Quick points (40 steps, ~1 s of reference on this CPU) for ctest; 200-step curves for `gauge run`.
  for (const auto& [steps, quick] : {std::pair<int64_t, bool>{40, true}, std::pair<int64_t, bool>{200, false}}) {
    for (Recipe r : {Recipe::fp32, Recipe::bf16_master, Recipe::f16_scaled, Recipe::bf16_pure}) {
      list.push_back({r, 0, steps, quick});
    }
    for (Recipe r : {Recipe::fp32, Recipe::f16_scaled, Recipe::f16_unscaled}) list.push_back({r, -16, steps, quick});
  }
  std::vector<Point> points;
  const int64_t parameters = ref::parameter_count(ref::MlpTask{});
  for (const RecipePoint& rp : list) {
    const ShapeSpec spec{{{"recipe", static_cast<int64_t>(rp.recipe)},
                          {"loss_weight_log2", rp.loss_weight_log2},
                          {"steps", rp.steps},
                          {"params", parameters}},
                         rp.quick};
    for (Point& p : grid({spec}, {compute_dtype(rp.recipe)})) points.push_back(std::move(p));
  }
  return points;
}

double mean_of_last(const std::vector<double>& curve, size_t count) {
  double sum = 0.0;
  const size_t n = std::min(count, curve.size());
  for (size_t t = curve.size() - n; t < curve.size(); ++t) sum += curve[t];
  return n > 0 ? sum / static_cast<double>(n) : 0.0;
}

HostTensor curve_tensor(const char* name, const std::vector<double>& curve) {
  HostTensor t(name, DType::f64, {static_cast<int64_t>(curve.size())});
  std::memcpy(t.data(), curve.data(), curve.size() * sizeof(double));
  return t;
}

// Host bytes of one training run: the stored state plus the per-step scratch (fp32 weights for
// compute and fp32 gradients, 8 B/param; the activations and their gradients). The task data (the
// batches, labels and initial weights) are the case's inputs, live before the measurement starts.
int64_t run_peak_model(const ref::MlpTask& t, double state_bytes_per_parameter) {
  const int64_t p = ref::parameter_count(t);
  const int64_t activations = 4 * (t.batch * t.inputs + 8 * t.batch * t.hidden + 2 * t.batch * t.classes);
  return static_cast<int64_t>(state_bytes_per_parameter * static_cast<double>(p)) + 8 * p + activations;
}

// The task of a point with the seed input, and its data (the inputs after the seed).
ref::MlpTask task_of(const Point& p, const std::vector<HostTensor>& in) {
  return recipe_task(p, static_cast<uint64_t>(in.at(0).view<int64_t>()[0]));
}
ref::MlpTaskView data_of(const std::vector<HostTensor>& in) {
  return {in.at(1).view<float>(), in.at(2).view<int32_t>(), in.at(3).view<float>()};
}

// The faithful rule's absolute term. The curves are compared step by step, but a training curve is
// a chaotic function of every rounding (mlp_recipes.h), so a correct fp32 implementation with another
// summation order does not reproduce the reference fp32 curve, and the fp32 point's reference
// deviation is 0 by construction. The reference's own acceptance criterion is statistical: a curve
// passes when its 20-step window means stay within kCurveStandardErrors = 3 standard errors
// noise / sqrt(kCurveWindow) of the fp32 curve. The per-step noise of a batch-mean cross-entropy is
// bounded here by ln(classes) / sqrt(batch): a per-sample spread no larger than the chance-level loss
// ln(classes), the loss the reference test asserts the curves start at and fall from (to < 1.2).
double recipe_curve_atol(const Point& p) {
  const ref::MlpTask t = recipe_task(p, inputs::kDefaultSeed);
  const double noise = std::log(static_cast<double>(t.classes)) / std::sqrt(static_cast<double>(t.batch));
  return ref::kCurveStandardErrors * noise / std::sqrt(static_cast<double>(ref::kCurveWindow));
}

#if GAUGE_HAS_CUDA
struct PreparedRecipe {
  std::unique_ptr<optimized::precision::MlpRecipeRunner> runner;
};

// Untimed: reads the task seed (one 8-byte copy), builds the plans and lays the task data (inputs
// 1..3, on the device already) out per step.
std::shared_ptr<void> recipe_prepare(const OptimizedArgs& a) {
  int64_t seed = 0;
  check_cuda(cudaMemcpyAsync(&seed, a.inputs.at(0).ptr, sizeof seed, cudaMemcpyDeviceToHost, a.stream), "reading the seed");
  check_cuda(cudaStreamSynchronize(a.stream), "reading the seed");
  const ref::MlpTask task = recipe_task(a.point, static_cast<uint64_t>(seed));
  auto prepared = std::make_shared<PreparedRecipe>();
  prepared->runner = std::make_unique<optimized::precision::MlpRecipeRunner>(
      a.session.blas_lt(), task, static_cast<Recipe>(a.point.dim("recipe")),
      optimized::precision::MlpTaskDevice{static_cast<const float*>(a.inputs.at(1).ptr),
                                          static_cast<const int32_t*>(a.inputs.at(2).ptr),
                                          static_cast<const float*>(a.inputs.at(3).ptr)},
      [&a](size_t bytes) { return a.session.workspace(bytes); }, a.stream);
  return prepared;
}

// Timed: the whole run (reset + N steps + the loss copy), enqueued without host synchronization.
void recipe_run(const OptimizedArgs& a) {
  const DeviceTensor& curve = a.outputs.at(0);
  if (curve.dtype != DType::f64 || curve.numel() != a.point.dim("steps")) {
    throw UsageError("mlp_recipe_training: the output must be an f64 curve of `steps` losses");
  }
  a.state<PreparedRecipe>().runner->run(a.out<double>(0), a.stream);
}
#endif

[[maybe_unused]] const bool recipes_registered = register_case({
    .suite = "precision",
    .name = "mlp_recipe_training",
    .description = "N Adam steps of a 3-layer GELU MLP in one mixed-precision recipe: loss curve against fp32, "
                   "bytes per parameter of the stored state, fp16 gradient underflow with and without loss scaling",
    .points = recipe_points(),
    .model =
        [](const Point& p) {
          const ref::MlpTask t = recipe_task(p, inputs::kDefaultSeed);
          const auto recipe = static_cast<Recipe>(p.dim("recipe"));
          const double weights = static_cast<double>(t.inputs * t.hidden + t.hidden * t.hidden + t.hidden * t.classes);
          const double parameters = static_cast<double>(ref::parameter_count(t));
          CostModel m;
          // Forward 2 B W flops, backward 4 B W (dx and dW), per step; Adam's ~15 per parameter.
          m.flops = static_cast<double>(t.steps) * (6.0 * static_cast<double>(t.batch) * weights + 15.0 * parameters);
          // Each step reads and writes the stored state once.
          m.bytes = static_cast<double>(t.steps) * 2.0 * ref::predicted_state_bytes_per_parameter(recipe) * parameters;
          m.bound = Bound::compute;
          m.math_dtype = p.dtype;
          // The inputs (seed, batches, labels, initial weights), the two f64 curves, then the fp32
          // baseline run (16 B/param) and the recipe's run, one at a time. fp16 points then measure the
          // underflow: the third backward's state and scratch (a run's, with its fp32 gradients) while
          // the first two backward passes' fp32 gradients are kept, 8 B/param more.
          const int64_t inputs = 8 + 4 * (t.steps * t.batch * t.inputs + t.steps * t.batch + ref::parameter_count(t));
          int64_t peak = std::max(run_peak_model(t, 16.0), run_peak_model(t, ref::predicted_state_bytes_per_parameter(recipe)));
          if (is_f16(recipe)) peak += 8 * static_cast<int64_t>(parameters);
          m.predicted_host_peak_bytes = inputs + 2 * 8 * t.steps + peak;
          m.predicted_counters = {{"state_bytes_per_param", ref::predicted_state_bytes_per_parameter(recipe)}};
          return m;
        },
    .tolerance =
        [](const Point& p) {
          return tolerance::faithful(
              2.0, recipe_curve_atol(p),
              "loss curve step by step against the fp32 recipe's curve (the truth): an implementation of the recipe may "
              "deviate from fp32 by at most twice what the reference recipe does, plus the curve's statistical "
              "resolution atol = kCurveStandardErrors (3) * ln(classes) / sqrt(batch) / sqrt(kCurveWindow (20)), the "
              "reference's window criterion with the per-step noise bounded by the chance-level loss (a trajectory is "
              "chaotic in every rounding, so two correct fp32 implementations differ by more than 0)");
        },
    .inputs =
        [](const Point& p, uint64_t seed) {
          // The seed (it also keys the pure-bf16 recipe's stochastic rounding), then the task data
          // drawn from Philox keyed by it: every step's batch and teacher labels, the initial weights.
          HostTensor s("seed", DType::i64, {1});
          s.view<int64_t>()[0] = static_cast<int64_t>(seed);
          ref::MlpTaskData data = ref::draw_task_data(recipe_task(p, seed));
          return std::vector<HostTensor>{std::move(s), std::move(data.batches), std::move(data.labels),
                                         std::move(data.initial)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const ref::MlpTask task = task_of(p, in);
          const ref::MlpTaskView data = data_of(in);
          const auto recipe = static_cast<Recipe>(p.dim("recipe"));
          const ref::RecipeRun fp32 = ref::train(task, Recipe::fp32, data);
          const ref::RecipeRun run = recipe == Recipe::fp32 ? fp32 : ref::train(task, recipe, data);
          const ref::CurveComparison c = ref::compare_loss_curves(run.losses, fp32.losses, ref::kCurveWindow);
          ReferenceResult r;
          r.outputs.push_back(curve_tensor("loss", fp32.losses));
          r.faithful.push_back(curve_tensor("loss", run.losses));
          r.counters = {{"state_bytes_per_param", run.state_bytes_per_parameter()},
                        {"curve_dev_se_vs_fp32", c.max_deviation},
                        {"final_loss", mean_of_last(run.losses, ref::kCurveWindow)},
                        {"fp32_final_loss", mean_of_last(fp32.losses, ref::kCurveWindow)},
                        {"skipped_steps", static_cast<double>(run.skipped_steps)},
                        {"final_scale", static_cast<double>(run.scales.back())}};
          if (is_f16(recipe)) {
            const ref::Underflow u = ref::measure_underflow(task, 65536.0f, data);
            r.counters.push_back({"flushed_frac_unscaled", u.fraction_unscaled()});
            r.counters.push_back({"flushed_frac_scaled", u.fraction_scaled()});
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY(recipe_run),
    .params =
        [](const Point& p) {
          const ref::MlpTask t = recipe_task(p, inputs::kDefaultSeed);
          return Params{{"recipe", ref::recipe_name(static_cast<Recipe>(p.dim("recipe")))},
                        {"inputs", t.inputs},
                        {"hidden", t.hidden},
                        {"classes", t.classes},
                        {"batch", t.batch},
                        {"lr", t.lr},
                        {"loss_weight", t.loss_weight},
                        {"init_scale", t.scaler.init_scale},
                        {"growth_interval", t.scaler.growth_interval}};
        },
    .prepare = GAUGE_CUDA_ONLY(recipe_prepare),
});

}  // namespace
}  // namespace gauge::suites::precision
