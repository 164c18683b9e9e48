// Dynamic loss scaling on the GPU, with no host synchronization anywhere in a training step: the scale
// and the growth tracker live on the device, one fused multi-tensor kernel unscales every gradient and
// raises a device found_inf flag, and a one-thread kernel updates the scale from that flag (PyTorch's
// _amp_foreach_non_finite_check_and_unscale_ and _amp_update_scale_). The semantics, which both
// sides reproduce bit for bit, are written out in reference/precision/loss_scaler.h:
//   inv_scale = fp32(1 / scale) (correctly rounded); found_inf |= any gradient read is NaN / +-Inf;
//   g = cast_to_own_format(fp32(g * inv_scale)), a NaN result written as the canonical quiet NaN
//   (fp32 0x7FFFFFFF, bf16 / fp16 0x7FFF);
//   update: found_inf -> scale = fp32(scale * backoff), tracker = 0; else tracker + 1, and at
//   growth_interval scale = fp32(scale * growth) when finite, tracker = 0.
// Napkin math and kernel shape: optimized/precision/loss_scale.cu.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "harness/dtype.h"
#include "harness/stream.h"
#include "reference/precision/loss_scaler_config.h"

namespace gauge::optimized::precision {

// Device memory for a plan's workspace; in gauge: [&](size_t bytes) { return session.workspace(bytes); }.
// Never called with 0 bytes; the memory must stay valid and unused by anything else while the plan is used.
using WorkspaceAllocator = std::function<void*(size_t bytes)>;

// A gradient list: device pointers, one entry per tensor, all of `dtype` (f32, bf16 or f16; 16-bit
// formats as raw bits). out[i] may equal in[i] (in place, PyTorch's form) or be a separate array of
// the same size that does not overlap any input; pointers must be aligned to their element, and
// tensors whose input and output can be 16-byte aligned together take the vector path. A tensor of
// size 0 may have null pointers.
struct UnscaleList {
  DType dtype = DType::f32;
  std::vector<const void*> in;
  std::vector<void*> out;
  std::vector<int64_t> sizes;
};

// Unscale + Inf/NaN check over one gradient list. Building the plan validates the list (UsageError
// naming the bad entry: an unsupported dtype, counts that differ, a negative size, a null or
// misaligned pointer), takes one allocation from `allocate` and enqueues the upload of its descriptors
// and chunk table on `stream` as kernel launches whose parameters carry the bytes, so building never
// synchronizes the host either. Build once and reuse: the plan owns nothing and keeps raw pointers;
// its uses must be ordered on one stream.
class UnscalePlan {
 public:
  UnscalePlan(const UnscaleList& list, const WorkspaceAllocator& allocate, StreamHandle stream);

  // One launch: every gradient is unscaled with inv_scale = fp32(1 / *scale_device), and
  // *found_inf_device (fp32) is set to 1.0f when any gradient element read is NaN or +-Inf; it is
  // never cleared, so the caller zeroes it once per step (e.g. cudaMemsetAsync, 4 bytes) before the
  // first list of the step, and several lists may share one flag.
  void unscale_and_check(const float* scale_device, float* found_inf_device, StreamHandle stream) const;

  DType dtype() const { return dtype_; }
  int64_t tensor_count() const { return tensor_count_; }
  int64_t chunk_count() const { return chunk_count_; }
  int64_t scalar_tensor_count() const { return scalar_tensor_count_; }
  int64_t element_count() const { return element_count_; }
  size_t workspace_bytes() const { return workspace_bytes_; }
  // An upper bound of workspace_bytes() for any placement of tensors of these sizes.
  static size_t workspace_bytes_bound(std::span<const int64_t> sizes);

 private:
  DType dtype_ = DType::f32;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  int64_t tensor_count_ = 0;
  int64_t chunk_count_ = 0;
  int64_t scalar_tensor_count_ = 0;
  int64_t element_count_ = 0;
};

// The scale update (one single-thread kernel, no host synchronization) of the device scale (fp32)
// and growth tracker (int32) from the step's found_inf (fp32, 0 or 1). Throws UsageError for a bad
// configuration (gauge::precision::validate; init_scale is not used here) or a null pointer.
void update_scale(float* scale_device, int32_t* growth_tracker_device, const float* found_inf_device,
                  const gauge::precision::LossScalerConfig& config, StreamHandle stream);
// The same, reading the state from (scale_in, tracker_in) and writing it to (scale_out, tracker_out);
// the pairs may be the same pointers.
void update_scale(const float* scale_in, const int32_t* growth_tracker_in, float* scale_out,
                  int32_t* growth_tracker_out, const float* found_inf_device,
                  const gauge::precision::LossScalerConfig& config, StreamHandle stream);

}  // namespace gauge::optimized::precision
