// One SGD-momentum training step of the MLP of reference/optim/step_in_backward.h on the GPU, with the
// optimizer step after the backward pass or fused into it. Layers come from optimized/nn (cuBLASLt
// Linear, fused pointwise and loss kernels), the update from the fused multi-tensor StepPlan.
//
// What the fusion changes on the device: after_backward owns one flat fp32 gradient buffer for every
// parameter and runs one StepPlan over all 2L tensors at the end; in_backward owns one gradient buffer
// the size of the largest layer, and after layer l's backward (which still reads the old W_l) runs
// layer l's own StepPlan over that buffer, which layer l - 1 then reuses. The buffer is "freed" by
// reuse, so the plans stay fixed and nothing is allocated inside a step; the pool's high-water mark
// drops by every gradient but the largest layer's. Both orders give bit-identical parameters (one
// tensor's update reads only its own gradient).
//
// Napkin math (B rows, P parameters): the Linear layers do 6 B P flops (forward, dx, dW); the step
// reads p, g, buf and writes p, buf (20 B/param), plus the NaN/Inf pre-pass reading g (4 B/param).
// With B in the tens the step is bandwidth-bound GEMM-like work; the fusion changes memory, not time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "harness/stream.h"
#include "optimized/optim/multi_tensor.h"
#include "reference/optim/step_in_backward.h"  // the plain MlpShape layout and GradientRelease only

struct cublasLtContext;

namespace gauge::optimized::optim {

using gauge::reference::optim::GradientRelease;
using gauge::reference::optim::MlpShape;

class MlpSgdStep {
 public:
  // Builds the layer plans and step plans and takes every buffer it needs from `allocate` (the
  // harness pool). x [batch, features], labels [batch] (int32), params and momentum (flat, MlpShape
  // offsets) are device pointers that must stay valid. Throws gauge::UsageError for a bad shape, a
  // non-SGD optimizer, or features / hidden not multiples of 4 (cuBLASLt's 16-byte alignment of
  // every weight slice).
  MlpSgdStep(cublasLtContext* handle, const MlpShape& shape, const gauge::optim::Hyper& hyper,
             GradientRelease release, const float* x, const int32_t* labels, float* params, float* momentum,
             const Allocator& allocate, StreamHandle stream);
  ~MlpSgdStep();
  MlpSgdStep(const MlpSgdStep&) = delete;
  MlpSgdStep& operator=(const MlpSgdStep&) = delete;

  // Enqueues forward, loss, backward and the optimizer step number `step` with learning rate `lr`.
  void step(int64_t step, double lr, StreamHandle stream) const;
  // The mean loss of the last step()'s forward, on the device.
  const float* loss_device() const;
  // Skip flags of the last step() on the device, skip_flags() ints: after_backward one (1: the whole
  // step was skipped for a NaN/Inf gradient), in_backward one per layer (1: layer l was left
  // untouched), the semantics of reference::optim::MlpStepResult::skipped_layers.
  const int* skipped_device() const;
  int64_t skip_flags() const;

  // Device bytes the constructor allocates (activations, gradients, losses, workspaces, plan tables).
  static size_t device_bytes(const MlpShape& shape, GradientRelease release);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gauge::optimized::optim
