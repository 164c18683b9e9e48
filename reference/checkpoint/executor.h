// The reference executor: runs a checkpointing schedule (schedule.h) over a chain of blocks
// (block_layout.h) with the plain CPU layers of reference/nn, i.e. one training step with explicit
// forward and backward:
//     y = x_n = F_{n-1}(... F_0(x)),  given dy = dL/dy:  dx = dL/dx and every block's parameter gradient.
//
// Memory: every activation, tape and workspace buffer comes from a pool with one free list per class
// (schedule.h), each buffer a gauge::mem::HostVector, so the counting allocator sees exactly the
// pool's holdings: a mem::PeakScope around run_step measures sum(class high-water x class size),
// which schedule.h's near_bytes() predicts. Offloaded tapes go to a "far memory" pool with the same
// bookkeeping whose buffers are NOT counting-allocator memory (they stand for pinned host memory, off
// the device); its high-water mark is reported on its own.
//
// The result does not depend on the schedule: recomputation draws the same dropout masks from
// (seed, block, element), every block's parameter gradient is computed once by the same code, so
// every policy's gradients are bit-identical to store-all's.
#pragma once

#include <cstdint>
#include <span>

#include "reference/checkpoint/block_layout.h"
#include "reference/checkpoint/schedule.h"

namespace gauge::reference::checkpoint {

using gauge::checkpoint::BlockLayout;
using gauge::checkpoint::Cost;
using gauge::checkpoint::Schedule;

// Block i (its parameters `params` of layout.param_count()): x -> y, keeping the tape in `tape` and
// using `workspace` (layout.forward_workspace_count()); for an untaped forward pass the workspace's
// own tape region as `tape`.
void block_forward(const BlockLayout& layout, int64_t block, std::span<const float> params, std::span<const float> x,
                   std::span<float> tape, std::span<float> workspace, std::span<float> y);
// g_out -> g_in and the block's parameter gradients (overwritten).
void block_backward(const BlockLayout& layout, int64_t block, std::span<const float> params,
                    std::span<const float> x, std::span<const float> tape, std::span<const float> g_out,
                    std::span<float> workspace, std::span<float> g_in, std::span<float> dparams);

struct StepStats {
  Cost measured;             // forwards counted as they run, buffer high-water counts of the pools
  int64_t near_bytes = 0;    // bytes the near pool held at the end (= its peak: it never returns any)
  int64_t far_bytes = 0;     // the far pool's
};

// x, dy: [rows, width]; params, dparams: [blocks, param_count]; y, dx: [rows, width].
// Throws UsageError for sizes that do not match the layout and schedule.
StepStats run_step(const BlockLayout& layout, const Schedule& schedule, std::span<const float> x,
                   std::span<const float> dy, std::span<const float> params, std::span<float> y,
                   std::span<float> dx, std::span<float> dparams);

}  // namespace gauge::reference::checkpoint
