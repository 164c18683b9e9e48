// Activation-checkpointing schedules: WHAT to keep, recompute, offload and free while training a
// chain of n blocks x_{i+1} = F_i(x_i), i = 0..n-1, with one backward pass. A schedule is plain data
// (a list of actions) produced by a planner per policy together with its analytic cost: block forward
// evaluations and peak buffer counts. Executing it (reference/checkpoint/executor.h on the CPU,
// optimized/checkpoint on the GPU) is a separate matter, so both sides share the planner: it does no
// arithmetic on tensors.
//
// Buffers and their classes (sizes come from the block; see BufferSizes):
//   activation  x_j for 1 <= j <= n-1 (x_0 is the step's input, x_n its output y: neither is a
//               buffer of the schedule) and the gradients g_j = dL/dx_j for 1 <= j <= n-1 (g_n is the
//               input dy, g_0 the output dx). Same size, same class.
//   tape        what backward(i) needs of block i besides x_i ("saved tensors"), kept by a taped
//               forward until backward(i) consumes it.
//   workspace   a block's scratch during one forward or one backward; never two at once.
// The executors take every buffer from a pool with one free list per class (buffers are reused, never
// returned), so the memory a step holds is sum over classes of (high-water count x class size), and
// that is what the planner predicts. Offload adds a "far" pool (pinned host memory on the GPU) with
// the same classes and bookkeeping.
//
// Actions, executed in order:
//   forward(i, taped)   x_i must be resident; makes x_{i+1} resident (written to y when i = n-1).
//                       taped: keeps tape_i resident; untaped ("no grad"): nothing but x_{i+1} stays.
//   backward(i)         needs x_i, tape_i and g_{i+1}; makes g_i; releases tape_i and g_{i+1}.
//                       Blocks are reversed in order n-1, ..., 0, each exactly once.
//   release(j)          x_j is no longer needed.
//   offload(i)          tape_i (and x_i when i >= 1) move to far memory; their near buffers are released.
//   prefetch(i)         brings tape_i and x_i back into near buffers; far buffers are released.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gauge::checkpoint {

enum class Policy : uint8_t {
  store_all,         // vanilla backprop: every block taped in one forward sweep
  recompute_all,     // "memory-poor": only x_0 is kept; every x_i recomputed from x_0 (n(n+1)/2 forwards)
  uniform_segments,  // a checkpoint every `segment` blocks; each segment is recomputed taped in backward
  sqrt_segments,     // uniform segments of ceil(sqrt(n)) blocks (Chen et al. 2016)
  revolve,           // optimal binomial checkpointing with `slots` stored states (Griewank & Walther 2000)
  offload,           // store-all with the tapes parked in far memory between forward and backward
};
const char* policy_name(Policy p);

struct PolicySpec {
  Policy policy = Policy::store_all;
  int64_t segment = 0;  // uniform_segments: blocks per segment, 1..n
  int64_t slots = 0;    // revolve: stored states, x_0 included (1 = recompute-all), 1..n
};

enum class ActionKind : uint8_t { forward, backward, release, offload, prefetch };

struct Action {
  ActionKind kind = ActionKind::forward;
  int64_t block = 0;   // forward/backward/offload/prefetch: the block i; release: the activation index j
  bool taped = false;  // forward only
  bool operator==(const Action&) const = default;
};

// High-water counts of one schedule: of forwards, and of buffers per class.
struct Cost {
  int64_t forwards = 0;           // block forward evaluations (taped and untaped)
  int64_t activation_buffers = 0;  // near activation-class buffers (x_j and g_j) at once
  int64_t tape_buffers = 0;        // near tapes at once
  int64_t workspace_buffers = 0;   // 1 when the schedule does anything
  int64_t far_activation_buffers = 0;
  int64_t far_tape_buffers = 0;
  bool operator==(const Cost&) const = default;
};

struct Schedule {
  int64_t blocks = 0;
  PolicySpec spec;
  std::vector<Action> actions;
  Cost predicted;  // closed forms (see predict()), not a replay of `actions`
};

// Validates (UsageError, one line naming the bound) and plans. n >= 1.
Schedule plan(int64_t blocks, const PolicySpec& spec);

// The analytic cost of a policy: the formulas of schedule.cc, derived by hand, never by replaying.
Cost predict(int64_t blocks, const PolicySpec& spec);

// Replays a schedule with the executors' bookkeeping and returns what it costs; throws
// std::logic_error naming the first action that is not executable (an input not resident, a block
// reversed twice or out of order, a buffer leaked at the end).
Cost replay(const Schedule& schedule);

// ---- Binomial checkpointing (Griewank 1992; Griewank & Walther, ACM TOMS 26(1), 2000) -------------
// beta(s, r) = C(s + r, s): the most steps that s stored states can reverse when no step is advanced
// more than r times. For l steps and s >= 1 states let r be the repetition number,
// beta(s, r - 1) < l <= beta(s, r). The fewest untaped forward steps ("advances") is then
//     t(l, s) = r l - beta(s + 1, r - 1),
// and every step is also run once taped right before its backward, so a revolve schedule evaluates
// l + t(l, s) block forwards. (s = 1: r = l - 1, t = l(l-1)/2, l + t = l(l+1)/2, recompute-all.)
int64_t binomial(int64_t n, int64_t k);  // saturates at INT64_MAX
int64_t revolve_repetitions(int64_t steps, int64_t slots);
int64_t revolve_advances(int64_t steps, int64_t slots);
int64_t revolve_forwards(int64_t steps, int64_t slots);  // steps + revolve_advances

// ---- Sizes and the memory a schedule holds ---------------------------------------------------------
struct BufferSizes {
  int64_t activation_bytes = 0;
  int64_t tape_bytes = 0;
  int64_t workspace_bytes = 0;
};
// Near (device-equivalent) bytes: sum over classes of high-water count x size.
int64_t near_bytes(const Cost& cost, const BufferSizes& sizes);
int64_t far_bytes(const Cost& cost, const BufferSizes& sizes);

// The policy with the fewest forwards whose near bytes fit `budget_bytes`: store-all if it fits, else
// revolve with the most slots that fit. UsageError naming the minimum (recompute-all's bytes) when
// nothing fits.
PolicySpec policy_for_budget(int64_t blocks, const BufferSizes& sizes, int64_t budget_bytes);

std::string describe(const Action& a);

}  // namespace gauge::checkpoint
