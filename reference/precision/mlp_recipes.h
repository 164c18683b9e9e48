// Mixed-precision training recipes on a small MLP, on the CPU: the definition of what each recipe
// computes and stores, built on the reference nn layers (reference/nn/layers.h), the RNE casts
// (reference/precision/casts.h), stochastic rounding (reference/precision/stochastic_rounding.h) and
// the dynamic loss scaler (reference/precision/loss_scaler.h).
//
// The model: x [batch, inputs] -> Linear(inputs, hidden) -> GELU(tanh) -> Linear(hidden, hidden) ->
// GELU(tanh) -> Linear(hidden, classes) -> softmax cross-entropy (mean over the batch), times
// `loss_weight`. Six parameter tensors (W1, b1, W2, b2, W3, b3), PyTorch's default Linear init
// (uniform in +-1/sqrt(fan_in)) from Philox. The task: classify x ~ N(0, 1) (a fresh batch every step,
// Philox keyed by the step) by the argmax of a fixed random teacher MLP (inputs -> 64 -> tanh ->
// classes). Optimizer: Adam (PyTorch semantics, reference/optim/optimizers.h), fp32 arithmetic in the
// order written there; a skipped step does not advance Adam's step count.
//
// Recipes: what is stored, and where values are rounded ("q": the recipe's compute format, RNE).
//   fp32          weights, gradients, Adam m and v fp32; nothing is rounded.
//   bf16_master   weights bf16 (q of the fp32 master after every update), gradients bf16, fp32 master
//                 weights, fp32 m and v. Forward and backward: the input, every linear output (fp32
//                 accumulation, then q), every activation output, the logits, dlogits, every
//                 activation gradient and every weight / bias gradient are stored in bf16. The loss
//                 and its gradient are computed in fp32 from the bf16 logits (as autocast does).
//   f16_scaled    as bf16_master in fp16, with dynamic loss scaling: backward starts from
//                 scale * loss_weight * loss; found_inf = any stored fp16 gradient is Inf/NaN; a step
//                 with found_inf is skipped; the optimizer reads g = fp32(fp16 g) * fp32(1 / scale)
//                 (the unscale, fused into the update, so the unscaled value is never rounded to fp16);
//                 the scale is updated after every step (GradScaler).
//   f16_unscaled  as f16_scaled with the scale fixed at 1 and no skipping: plain fp16 training, whose
//                 small gradients underflow.
//   bf16_pure     weights, gradients, m and v all bf16 (no master): every stored value of the update
//                 is written with stochastic rounding (RNE would freeze v, since beta2 = 0.999 moves it
//                 by less than half a bf16 ulp), keyed by (seed, tensor, element, step).
// Bytes per parameter of the stored training state (weights + gradients + master + m + v), predicted:
//   fp32 4+4+0+4+4 = 16; bf16_master / f16_* 2+2+4+4+4 = 16; bf16_pure 2+2+0+2+2 = 8.
// Every stored buffer is a gauge::mem::HostVector, so the counting allocator measures them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "harness/tensor.h"
#include "reference/precision/loss_scaler.h"

namespace gauge::reference::precision {

enum class Recipe : uint8_t { fp32, bf16_master, f16_scaled, f16_unscaled, bf16_pure };
std::string recipe_name(Recipe r);
// The format a recipe computes and stores weights, activations and gradients in (both sides use it:
// the case's point dtype, the CUDA runner's buffers), and whether it is one of the fp16 recipes.
inline DType compute_dtype(Recipe r) {
  switch (r) {
    case Recipe::fp32: return DType::f32;
    case Recipe::f16_scaled:
    case Recipe::f16_unscaled: return DType::f16;
    case Recipe::bf16_master:
    case Recipe::bf16_pure: return DType::bf16;
  }
  return DType::f32;
}
inline bool is_f16(Recipe r) { return r == Recipe::f16_scaled || r == Recipe::f16_unscaled; }
double predicted_state_bytes_per_parameter(Recipe r);

struct MlpTask {
  int64_t inputs = 32;
  int64_t hidden = 64;
  int64_t classes = 10;
  int64_t teacher_hidden = 64;
  int64_t batch = 32;
  int64_t steps = 200;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  // The trained loss is loss_weight * mean cross-entropy (a loss summed with small per-token weights);
  // small weights make every gradient small, which is where fp16 underflows.
  double loss_weight = 1.0;
  uint64_t seed = 0x6d6c70;  // "mlp"
  LossScalerConfig scaler;   // f16_scaled only
};

// Throws gauge::UsageError for non-positive sizes or steps, a non-finite or non-positive lr or
// loss_weight, betas outside [0, 1), a negative eps, or a bad scaler configuration.
void validate(const MlpTask& task);

int64_t parameter_count(const MlpTask& task);

struct RecipeRun {
  Recipe recipe = Recipe::fp32;
  std::vector<double> losses;  // unweighted mean cross-entropy of each step's batch, from the recipe's logits
  std::vector<float> scales;   // the loss scale used at each step (1 without loss scaling)
  std::vector<uint8_t> skipped;  // 1 where the step's update was skipped (Inf/NaN gradient)
  int64_t skipped_steps = 0;
  int64_t parameters = 0;
  int64_t state_bytes = 0;       // counted: weights, gradients, master, m, v
  int64_t step_peak_bytes = 0;   // counted peak over the run above the state (activations, scratch)
  double state_bytes_per_parameter() const {
    return parameters > 0 ? static_cast<double>(state_bytes) / static_cast<double>(parameters) : 0.0;
  }
};

// The task's data, drawn once from Philox keyed by task.seed; a case declares it as its inputs, and
// the CUDA recipes train on the very same tensors:
//   batches [steps, batch, inputs] f32: x ~ N(0, 1), a fresh batch per step;
//   labels  [steps, batch] i32: the teacher MLP's argmax class of each row;
//   initial [parameters] f32: W1, b1, W2, b2, W3, b3 back to back (PyTorch's default Linear init).
struct MlpTaskData {
  HostTensor batches;
  HostTensor labels;
  HostTensor initial;
};
MlpTaskData draw_task_data(const MlpTask& task);

// The same data, read in place (e.g. a case's input tensors).
struct MlpTaskView {
  std::span<const float> batches;
  std::span<const int32_t> labels;
  std::span<const float> initial;
};
inline MlpTaskView view_of(const MlpTaskData& d) {
  return {d.batches.view<float>(), d.labels.view<int32_t>(), d.initial.view<float>()};
}

// Trains on `data` (UsageError when its sizes do not fit the task or a label is not a class); the
// second form draws it.
RecipeRun train(const MlpTask& task, Recipe recipe, const MlpTaskView& data);
RecipeRun train(const MlpTask& task, Recipe recipe);

// How many weight / bias gradient elements of one backward (initial weights, step 0's batch) are
// non-zero in fp32 but stored as zero by the fp16 backward, without loss scaling and with `scale`.
struct Underflow {
  int64_t gradients = 0;            // all gradient elements
  int64_t nonzero_fp32 = 0;         // non-zero in the fp32 backward
  int64_t flushed_unscaled = 0;     // ... of those, zero in the fp16 backward at scale 1
  int64_t flushed_scaled = 0;       // ... of those, zero in the fp16 backward at `scale`
  int64_t cast_flushed_unscaled = 0;  // fp16(g32) == 0: the cast alone, without fp16 backward
  int64_t cast_flushed_scaled = 0;    // fp16(scale * g32) == 0
  float scale = 1.0f;
  double fraction_unscaled() const { return fraction(flushed_unscaled); }
  double fraction_scaled() const { return fraction(flushed_scaled); }
  double cast_fraction_unscaled() const { return fraction(cast_flushed_unscaled); }
  double cast_fraction_scaled() const { return fraction(cast_flushed_scaled); }

 private:
  double fraction(int64_t n) const {
    return nonzero_fp32 > 0 ? static_cast<double>(n) / static_cast<double>(nonzero_fp32) : 0.0;
  }
};
// On step 0's batch and the initial weights of `data` (the second form draws it).
Underflow measure_underflow(const MlpTask& task, float scale, const MlpTaskView& data);
Underflow measure_underflow(const MlpTask& task, float scale);

// ---- Comparing a loss curve with the fp32 curve ---------------------------------------------------
// A statistical criterion, not a rounding-error bound: a training trajectory is a chaotic function of
// every rounding, so no bound of harness/tolerance.h's kind exists for it. Instead a recipe's curve
// must be indistinguishable from the fp32 curve at the resolution of the fp32 curve's own batch-to-
// batch noise. The curves are cut into consecutive windows of `window` steps; in each window
//   difference = mean(candidate) - mean(baseline),
//   noise      = the von Neumann estimate of the baseline's per-step standard deviation,
//                sqrt(sum_t (L_t - L_{t-1})^2 / (2 (window - 1))) (successive differences cancel the
//                slow downward trend of a training curve, leaving the batch-to-batch scatter),
//   standard_error = noise / sqrt(window),
// and the window's deviation is |difference| / standard_error. A recipe passes at k standard errors
// when every window's deviation is <= k (gauge uses k = 3: a window mean that differs by more than
// 3 standard errors of 20 fresh batches' mean is a visible change of the training curve).
struct CurveComparison {
  int64_t window = 0;
  int64_t windows = 0;
  double max_deviation = 0;          // in standard errors, over the windows
  int64_t worst_window_start = 0;    // step where the worst window begins
  double worst_difference = 0;       // mean(candidate) - mean(baseline) there
  double worst_standard_error = 0;
  bool within(double standard_errors) const { return max_deviation <= standard_errors; }
};
// UsageError for curves of different lengths, a window < 2, or a curve shorter than one window.
CurveComparison compare_loss_curves(const std::vector<double>& candidate, const std::vector<double>& baseline,
                                    int64_t window);
inline constexpr double kCurveStandardErrors = 3.0;
inline constexpr int64_t kCurveWindow = 20;

}  // namespace gauge::reference::precision
