// The CUDA executor of a checkpointing schedule (reference/checkpoint/schedule.h): the same chain of
// blocks (reference/checkpoint/block_layout.h) as the reference executor, on optimized/nn's cuBLASLt
// linears and fused pointwise/norm kernels, fp32 storage. Plain C++ header: no CUDA types.
//
// Memory: one arena from the caller's allocator (the harness pool) holds exactly the schedule's
// predicted buffers (high-water count x class size per class, schedule.h), carved into buffers with the
// reference's free lists, plus the layers' scratch (cuBLASLt workspace, column-sum partials, norm
// partials). Nothing is allocated while a step runs. Offload's far memory is pinned host memory
// (cudaMallocHost), outside the device pool.
//
// Streams: everything computes on the caller's stream. Offload copies run on a second stream: block i's
// tape leaves (D2H) as soon as its forward is done, overlapping the next forwards; in backward, block
// i-1's tape comes back (H2D) while block i is reversed. Events order them: a copy waits for the
// forward that wrote its source, a backward for the prefetch of its tape, and a near buffer whose
// contents are still being copied out is not reused before the copy finishes. The step ends with the
// caller's stream waiting on the copy stream, so timing it with events on that stream covers the copies.
//
// Determinism: the same kernels with the same launch shapes run whatever the policy (no float atomics in
// optimized/nn), so every policy's gradients are bit-identical to store-all's on one device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "harness/stream.h"
#include "reference/checkpoint/block_layout.h"
#include "reference/checkpoint/schedule.h"

struct cublasLtContext;

namespace gauge::optimized::checkpoint {

using gauge::checkpoint::BlockLayout;
using gauge::checkpoint::Schedule;

class ChainExecutor {
 public:
  // Plans the linears (host only), takes the arena from `allocate_device` once, pins far memory for
  // offload, creates the copy stream and events. UsageError for a layout the layers do not support.
  ChainExecutor(cublasLtContext* lt, const BlockLayout& layout, const Schedule& schedule,
                const std::function<void*(size_t)>& allocate_device);
  ~ChainExecutor();
  ChainExecutor(const ChainExecutor&) = delete;
  ChainExecutor& operator=(const ChainExecutor&) = delete;

  size_t arena_bytes() const;        // the schedule's buffers: near_bytes() of its predicted cost
  size_t layer_scratch_bytes() const;
  size_t far_bytes() const;          // pinned host memory (offload)

  // Enqueues one step: x, dy [rows, width]; params, dparams [blocks, param_count] (dparams' padding is
  // zeroed); y, dx [rows, width]. All device pointers, 16-byte aligned.
  void run(const float* x, const float* dy, const float* params, float* y, float* dx, float* dparams,
           StreamHandle stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// out[j] = a[j] + b[j] (one fp32 addition, as the reference's residual); out may alias a or b.
void residual_add(int64_t n, const float* a, const float* b, float* out, StreamHandle stream);

}  // namespace gauge::optimized::checkpoint
