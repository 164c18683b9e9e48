// Fused multi-tensor optimizer steps on the GPU: one launch updates every tensor of a parameter list,
// whatever their sizes (a chunk table in device memory maps blocks to (tensor, offset) pairs), with
// 16-byte vector loads and fp32 math in registers. The global gradient norm (for clipping) and the
// NaN/Inf check come from one deterministic two-stage reduction whose result stays on the device, so
// a step needs no host synchronization.
#pragma once

#include <cstdint>
#include <vector>

#include "harness/stream.h"
#include "reference/optim/config.h"

namespace gauge::optimized::optim {

// Device pointers, one entry per tensor; `states[k][i]` is state k of tensor i (the order is the
// reference's: see reference/optim/optimizers.h). Element types follow the precision: fp32 mode
// -> float everywhere; bf16_master -> params/grads bf16 (uint16_t bits), master and states float;
// bf16_stochastic -> params, grads and states bf16.
struct TensorList {
  std::vector<void*> params;
  std::vector<const void*> grads;
  std::vector<float*> master;               // bf16_master only
  std::vector<std::vector<void*>> states;   // [state_count(hyper)][tensor]
  std::vector<int64_t> sizes;
};

// Reusable device-side plan for one tensor list: the chunk table and the reduction scratch. Building
// it allocates (through `allocate`, the harness pool in gauge) and copies the table once; steps reuse it.
class StepPlan {
 public:
  using Allocate = void* (*)(void* context, size_t bytes);
  StepPlan(const TensorList& list, gauge::optim::Precision precision, const gauge::optim::Hyper& hyper,
           Allocate allocate, void* allocate_context, StreamHandle stream);

  // One step number `step` (1-based) with learning rate `lr` (the schedule already applied).
  // Writes the step's outcome to `status_device` (an int on the device: 0 applied, 1 skipped for a
  // NaN/Inf gradient) unless it is null; `norm_device` (a float on the device) receives the global
  // gradient norm before clipping when it is not null.
  void step(int64_t step, double lr, const gauge::optim::StepOptions& options, int* status_device,
            float* norm_device, StreamHandle stream) const;

 private:
  // Owned by the caller's allocator: the chunk table, per-chunk partial sums, the norm, the status.
  struct Device;
  const Device* device_ = nullptr;
  TensorList list_;
  gauge::optim::Precision precision_;
  gauge::optim::Hyper hyper_;
  int64_t chunks_ = 0;
};

}  // namespace gauge::optimized::optim
