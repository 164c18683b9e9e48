// The mixed-precision MLP recipes of reference/precision/mlp_recipes.h on the GPU, built from the
// optimized building blocks: cuBLASLt linears and fused pointwise / loss kernels (optimized/nn), the
// casts that make compute copies of fp32 master weights (casts.h), the fused unscale + Inf/NaN check
// and device-side scale update (loss_scale.h) and the fused multi-tensor Adam (optimized/optim). A
// whole training run is enqueued on one stream with no host synchronization: every step's loss,
// the loss scale and the skip decision stay on the device.
//
// Per step (D = the recipe's compute format; fp32 for the fp32 recipe):
//   x -> D; z1 = fc1(x) (D), a1 = gelu(z1) (D), z2, a2, logits likewise; loss[t] = mean CE (fp32);
//   dlogits = (softmax - onehot) * loss_weight * scale / batch stored in D; backward through the
//   layers (dx in D, dW / db fp32 from cuBLASLt and the column sums), then the gradients are stored
//   in D (the recipe's stored gradients, where fp16 underflows or overflows).
//   fp32          Adam fp32 on the weights.
//   bf16_master   Adam bf16_master (fp32 master, bf16 copy rewritten by the step).
//   f16_scaled    fp16 gradients widened (exact) to fp32, unscaled there (UnscalePlan: fp32(g / scale)
//                 is never rounded to fp16, as the reference's fused read), found_inf raised; Adam fp32
//                 on the master skips the step on Inf/NaN; fp16 weights = RNE(master); scale update.
//   f16_unscaled  as f16_scaled with scale 1, no unscale and non-finite gradients not skipped.
//   bf16_pure     Adam bf16_stochastic on bf16 weights and states (stochastic rounding keyed by the
//                 task seed; the key layout is the optimizer's, not the reference recipe's, so the
//                 curves agree statistically, not bit for bit).
// Adam's step number t counts applied steps only, as the reference's adam_steps and GradScaler (which
// never calls optimizer.step() for a skipped step): it lives on the device (StepPlan::step_counted,
// a counter zeroed by run()), because the host cannot see found_inf without a sync. So a skipped fp16
// step leaves the bias corrections where they were. The recipes that never skip have t = step + 1.
//
// The task data (every step's batch and teacher labels, the initial weights) is the case's input,
// drawn once by reference::precision::draw_task_data: the runner copies it from the device into its
// per-step layout when it is built; run() only enqueues device work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "harness/stream.h"
#include "reference/precision/mlp_recipes.h"  // the plain MlpTask and Recipe types only

struct cublasLtContext;

namespace gauge::optimized::precision {

// The task data on the device, in reference::precision::MlpTaskData's layout: batches [steps, batch,
// inputs] f32, labels [steps, batch] i32, initial [parameters] f32 (W1, b1, W2, b2, W3, b3).
struct MlpTaskDevice {
  const float* batches = nullptr;
  const int32_t* labels = nullptr;
  const float* initial = nullptr;
};

class MlpRecipeRunner {
 public:
  using Allocator = std::function<void*(size_t bytes)>;

  // Validates the task (UsageError), builds the plans and takes every buffer from `allocate` (a few
  // hundred KB plus the per-step data: steps * (round4(batch * inputs) + round4(batch) + 1) * 4 bytes),
  // and enqueues the copies of the task data into the runner's own per-step layout on `stream`: `data`
  // must stay valid until they have run (stream order), not beyond.
  MlpRecipeRunner(cublasLtContext* blas, const gauge::reference::precision::MlpTask& task,
                  gauge::reference::precision::Recipe recipe, const MlpTaskDevice& data, const Allocator& allocate,
                  StreamHandle stream);
  ~MlpRecipeRunner();
  MlpRecipeRunner(const MlpRecipeRunner&) = delete;
  MlpRecipeRunner& operator=(const MlpRecipeRunner&) = delete;

  // Resets the training state to the initial weights and runs task.steps steps; losses_f64 (device,
  // task.steps doubles) receives each step's unweighted mean cross-entropy. Enqueue only.
  void run(double* losses_f64, StreamHandle stream) const;

  // The per-step fp32 losses of the last run (device, task.steps floats).
  const float* losses_f32() const;
  // Of the last run, on the device: task.steps ints, 1 where the step's update was skipped for an
  // Inf/NaN gradient (only f16_scaled skips); and Adam's step count (the applied steps).
  const int* skipped_device() const;
  const int64_t* adam_steps_device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gauge::optimized::precision
