#include "reference/checkpoint/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "harness/error.h"

namespace gauge::checkpoint {

namespace {

constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // a schedule of n^2 actions must stay reasonable

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t ceil_sqrt(int64_t n) {
  int64_t k = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));
  while (k * k < n) ++k;
  while (k > 1 && (k - 1) * (k - 1) >= n) --k;
  return k;
}

void validate(int64_t blocks, const PolicySpec& spec) {
  if (blocks < 1 || blocks > kMaxBlocks) {
    throw UsageError("checkpoint: " + std::to_string(blocks) + " blocks; the chain needs 1.." +
                     std::to_string(kMaxBlocks));
  }
  if (spec.policy == Policy::uniform_segments && (spec.segment < 1 || spec.segment > blocks)) {
    throw UsageError("checkpoint: a segment of " + std::to_string(spec.segment) + " blocks for " +
                     std::to_string(blocks) + " blocks; it must be at least 1 and at most " + std::to_string(blocks));
  }
  if (spec.policy == Policy::revolve && (spec.slots < 1 || spec.slots > blocks)) {
    throw UsageError("checkpoint: " + std::to_string(spec.slots) + " checkpoint slots for " + std::to_string(blocks) +
                     " blocks; revolve needs at least 1 (the input) and at most " + std::to_string(blocks) +
                     " (one per block)");
  }
}

// Emits actions; the helpers below are the only way schedules are written.
struct Writer {
  int64_t n;
  std::vector<Action> actions;

  void forward(int64_t i, bool taped) { actions.push_back({ActionKind::forward, i, taped}); }
  void backward(int64_t i) { actions.push_back({ActionKind::backward, i, false}); }
  // x_j for 1 <= j <= n-1 is a buffer; x_0 and x_n are not.
  void release(int64_t j) {
    if (j >= 1 && j <= n - 1) actions.push_back({ActionKind::release, j, false});
  }
  void offload(int64_t i) { actions.push_back({ActionKind::offload, i, false}); }
  void prefetch(int64_t i) { actions.push_back({ActionKind::prefetch, i, false}); }

  // Untaped ("no grad") forwards from x_from to x_to with two ping-pong buffers: each intermediate is
  // released as soon as the next exists; x_from (a checkpoint) and x_to stay.
  void advance(int64_t from, int64_t to) {
    for (int64_t j = from; j < to; ++j) {
      forward(j, false);
      if (j != from) release(j);
    }
  }
  // Taped forward of block i immediately reversed: x_{i+1} is recomputed only because the block
  // makes it, and dropped at once.
  void reverse_one(int64_t i) {
    forward(i, true);
    release(i + 1);
    backward(i);
  }
};

// Segments of `k` blocks: an untaped first sweep keeps x_0, x_k, x_2k, ...; the last segment is taped
// in that sweep already; every other segment is recomputed taped right before its backward.
// k = n is store-all.
void plan_segments(Writer& w, int64_t k) {
  const int64_t n = w.n;
  const int64_t last_start = (ceil_div(n, k) - 1) * k;
  for (int64_t j = 0; j < last_start; ++j) {
    w.forward(j, false);
    if (j % k != 0) w.release(j);
  }
  for (int64_t j = last_start; j < n; ++j) w.forward(j, true);
  for (int64_t j = n - 1; j >= last_start; --j) {
    w.backward(j);
    w.release(j);
  }
  for (int64_t start = last_start - k; start >= 0; start -= k) {
    for (int64_t j = start; j < start + k; ++j) w.forward(j, true);
    w.release(start + k);  // the recomputed copy of a checkpoint already consumed
    for (int64_t j = start + k - 1; j >= start; --j) {
      w.backward(j);
      w.release(j);
    }
  }
}

// Binomial checkpointing. reverse(a, b, free_slots): x_a is stored (a checkpoint, or the input when
// a = 0), g_b is available, blocks a..b-1 are to be reversed, `free_slots` more states may be stored.
// With a free slot, advance j steps, store x_{a+j}, reverse the upper part with one slot fewer, drop
// x_{a+j} and reverse the lower part with the slot back; j minimizes the forwards
//     j + F(l - j, free - 1) + F(j, free),   F(l, free) = revolve_forwards(l, free + 1),
// the smallest such j when several tie (it stores a state as early as possible, holding fewer
// ping-pong intermediates). Without one, recompute each step from x_a (recompute-all on the part).
void plan_revolve(Writer& w, int64_t a, int64_t b, int64_t free_slots) {
  const int64_t length = b - a;
  if (length == 1) {
    w.reverse_one(a);
    return;
  }
  if (free_slots == 0) {
    for (int64_t i = b - 1; i >= a; --i) {
      w.advance(a, i);
      w.reverse_one(i);
      if (i != a) w.release(i);
    }
    return;
  }
  int64_t best_j = 1;
  int64_t best = std::numeric_limits<int64_t>::max();
  for (int64_t j = 1; j < length; ++j) {
    const int64_t cost = j + revolve_forwards(length - j, free_slots) + revolve_forwards(j, free_slots + 1);
    if (cost < best) {
      best = cost;
      best_j = j;
    }
  }
  const int64_t mid = a + best_j;
  w.advance(a, mid);
  plan_revolve(w, mid, b, free_slots - 1);
  w.release(mid);
  plan_revolve(w, a, mid, free_slots);
}

// Store-all whose tapes wait in far memory: block i's tape (and x_i) leave once block i+1 has run,
// and come back (prefetch) while block i+1 is reversed. The last block is reversed at once.
void plan_offload(Writer& w) {
  const int64_t n = w.n;
  w.forward(0, true);
  for (int64_t i = 1; i < n; ++i) {
    w.forward(i, true);
    w.offload(i - 1);
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    if (i >= 1) w.prefetch(i - 1);
    w.backward(i);
    w.release(i);
  }
}

}  // namespace

const char* policy_name(Policy p) {
  switch (p) {
    case Policy::store_all: return "store_all";
    case Policy::recompute_all: return "recompute_all";
    case Policy::uniform_segments: return "uniform_segments";
    case Policy::sqrt_segments: return "sqrt_segments";
    case Policy::revolve: return "revolve";
    case Policy::offload: return "offload";
  }
  return "unknown";
}

std::string describe(const Action& a) {
  std::ostringstream s;
  switch (a.kind) {
    case ActionKind::forward: s << (a.taped ? "forward_taped(" : "forward(") << a.block << ")"; break;
    case ActionKind::backward: s << "backward(" << a.block << ")"; break;
    case ActionKind::release: s << "release(x_" << a.block << ")"; break;
    case ActionKind::offload: s << "offload(" << a.block << ")"; break;
    case ActionKind::prefetch: s << "prefetch(" << a.block << ")"; break;
  }
  return s.str();
}

// ---- Binomial formulas -------------------------------------------------------------------------------
int64_t binomial(int64_t n, int64_t k) {
  if (k < 0 || k > n) return 0;
  k = std::min(k, n - k);
  // C(n, k) built as C(n-k+i, i) = C(n-k+i-1, i-1) (n-k+i) / i, i = 1..k: every partial value is an
  // exact binomial. Dividing by gcd first keeps the product from overflowing before the division.
  int64_t value = 1;
  for (int64_t i = 1; i <= k; ++i) {
    const int64_t g = std::gcd(value, i);
    const int64_t factor = (n - k + i) / (i / g);  // i/g divides it: gcd(value/g, i/g) = 1
    if (__builtin_mul_overflow(value / g, factor, &value)) return std::numeric_limits<int64_t>::max();
  }
  return value;
}

int64_t revolve_repetitions(int64_t steps, int64_t slots) {
  if (steps < 1 || slots < 1) throw std::invalid_argument("revolve_repetitions: steps and slots must be >= 1");
  int64_t r = 0;
  while (binomial(slots + r, slots) < steps) ++r;  // smallest r with steps <= beta(slots, r)
  return r;
}

int64_t revolve_advances(int64_t steps, int64_t slots) {
  const int64_t r = revolve_repetitions(steps, slots);
  if (r == 0) return 0;  // one step: nothing to advance
  return r * steps - binomial(slots + 1 + r - 1, slots + 1);
}

int64_t revolve_forwards(int64_t steps, int64_t slots) { return steps + revolve_advances(steps, slots); }

// ---- Closed forms ------------------------------------------------------------------------------------
// Notation: n blocks; activation buffers count x_j and g_j for 1 <= j <= n-1 (see schedule.h).
Cost predict(int64_t n, const PolicySpec& spec) {
  validate(n, spec);
  Cost c;
  c.workspace_buffers = 1;
  // Segments of k (store-all: k = n; sqrt: k = ceil(sqrt n)), m = ceil(n/k) segments, the last one of
  // L = n - (m-1)k blocks.
  //   forwards: (m-1)k untaped in the first sweep, L taped, (m-1)k taped again in backward = 2n - L.
  //   tapes: a whole segment at once, k (L for m = 1).
  //   activations: recomputing segment q (q <= m-2) holds its q checkpoints x_k..x_qk, g_{(q+1)k}, and
  //     x_{qk+1}..x_{(q+1)k} (k, the last one the dropped recomputed checkpoint): q + 1 + k, largest at
  //     q = m-2: m + k - 1. The last segment's backward holds (m-1) + (L-1) + 2 (two gradients) at
  //     block n-2, i.e. m + L - 1 <= m + k - 1. With n = 1 nothing is a buffer.
  const auto segments = [&](int64_t k) {
    const int64_t m = ceil_div(n, k);
    const int64_t last = n - (m - 1) * k;
    c.forwards = 2 * n - last;
    c.tape_buffers = m == 1 ? n : k;
    c.activation_buffers = n == 1 ? 0 : (m == 1 ? n : m + k - 1);
  };
  switch (spec.policy) {
    case Policy::store_all:
      segments(n);
      break;
    case Policy::uniform_segments:
      segments(spec.segment);
      break;
    case Policy::sqrt_segments:
      segments(ceil_sqrt(n));
      break;
    case Policy::recompute_all:
    case Policy::revolve: {
      const int64_t s = spec.policy == Policy::revolve ? spec.slots : 1;
      c.forwards = revolve_forwards(n, s);
      c.tape_buffers = 1;  // every block is taped right before its backward, one at a time
      // The s - 1 stored states besides x_0, plus a working set of three: while reversing with every
      // slot taken, two ping-pong intermediates (or x_i and its dropped recomputed output x_{i+1})
      // and the gradient g_b. A chain never holds more than n activation buffers (store-all's
      // count), which caps it once s >= n - 2; with n = 1 nothing is a buffer.
      c.activation_buffers = n == 1 ? 0 : std::min(s + 2, n);
      break;
    }
    case Policy::offload:
      c.forwards = n;
      // Forward of block i holds x_{i-1} (its offload waits for block i), x_i, x_{i+1}, and tapes i-1
      // and i. Backward of block i holds x_i, tape_i, the prefetched x_{i-1} and tape_{i-1}, g_{i+1}
      // and g_i: four activations, two tapes. Far memory ends the forward with x_1..x_{n-2} and
      // tapes 0..n-2.
      c.tape_buffers = n == 1 ? 1 : 2;
      c.activation_buffers = n == 1 ? 0 : (n == 2 ? 2 : (n == 3 ? 3 : 4));
      c.far_activation_buffers = std::max<int64_t>(n - 2, 0);
      c.far_tape_buffers = n - 1;
      break;
  }
  return c;
}

Schedule plan(int64_t blocks, const PolicySpec& spec) {
  validate(blocks, spec);
  Writer w{blocks, {}};
  switch (spec.policy) {
    case Policy::store_all: plan_segments(w, blocks); break;
    case Policy::uniform_segments: plan_segments(w, spec.segment); break;
    case Policy::sqrt_segments: plan_segments(w, ceil_sqrt(blocks)); break;
    case Policy::recompute_all: plan_revolve(w, 0, blocks, 0); break;
    case Policy::revolve: plan_revolve(w, 0, blocks, spec.slots - 1); break;
    case Policy::offload: plan_offload(w); break;
  }
  Schedule s;
  s.blocks = blocks;
  s.spec = spec;
  s.actions = std::move(w.actions);
  s.predicted = predict(blocks, spec);
  return s;
}

// ---- Replay ------------------------------------------------------------------------------------------
Cost replay(const Schedule& schedule) {
  const int64_t n = schedule.blocks;
  enum class Where : uint8_t { absent, near, far };
  std::vector<Where> x(static_cast<size_t>(n + 1), Where::absent);
  std::vector<Where> tape(static_cast<size_t>(n), Where::absent);
  x[0] = Where::near;  // the input
  int64_t next_backward = n - 1;
  struct Count {
    int64_t now = 0, high = 0;
    void take() { high = std::max(high, ++now); }
    void give() { --now; }
  } act, tapes, work, far_act, far_tapes;
  Cost cost;
  const auto fail = [&](size_t index, const std::string& why) {
    throw std::logic_error("schedule action " + std::to_string(index) + " " + describe(schedule.actions[index]) +
                           ": " + why);
  };
  for (size_t k = 0; k < schedule.actions.size(); ++k) {
    const Action& a = schedule.actions[k];
    const int64_t i = a.block;
    const bool in_range = a.kind == ActionKind::release ? (i >= 1 && i <= n - 1) : (i >= 0 && i < n);
    if (!in_range) fail(k, "index out of range");
    const auto ui = static_cast<size_t>(i);
    switch (a.kind) {
      case ActionKind::forward:
        if (x[ui] != Where::near) fail(k, "its input x_" + std::to_string(i) + " is not resident");
        if (i + 1 <= n - 1 && x[ui + 1] != Where::absent) fail(k, "its output x_" + std::to_string(i + 1) + " exists");
        if (a.taped && tape[ui] != Where::absent) fail(k, "the block is taped already");
        ++cost.forwards;
        work.take();
        if (a.taped) {
          tapes.take();
          tape[ui] = Where::near;
        }
        if (i + 1 <= n - 1) {
          act.take();
          x[ui + 1] = Where::near;
        }
        work.give();
        break;
      case ActionKind::backward:
        if (i != next_backward) fail(k, "blocks are reversed from n-1 down to 0, expected " + std::to_string(next_backward));
        if (x[ui] != Where::near) fail(k, "its input x_" + std::to_string(i) + " is not resident");
        if (tape[ui] != Where::near) fail(k, "its tape is not resident");
        work.take();
        if (i >= 1) act.take();  // g_i
        work.give();
        tapes.give();
        tape[ui] = Where::absent;
        if (i + 1 <= n - 1) act.give();  // g_{i+1}
        --next_backward;
        break;
      case ActionKind::release:
        if (x[ui] != Where::near) fail(k, "x_" + std::to_string(i) + " is not resident");
        act.give();
        x[ui] = Where::absent;
        break;
      case ActionKind::offload:
        if (tape[ui] != Where::near) fail(k, "its tape is not resident");
        if (i >= 1 && x[ui] != Where::near) fail(k, "x_" + std::to_string(i) + " is not resident");
        far_tapes.take();
        tape[ui] = Where::far;
        tapes.give();
        if (i >= 1) {
          far_act.take();
          x[ui] = Where::far;
          act.give();
        }
        break;
      case ActionKind::prefetch:
        if (tape[ui] != Where::far) fail(k, "its tape is not in far memory");
        tapes.take();
        tape[ui] = Where::near;
        far_tapes.give();
        if (i >= 1) {
          if (x[ui] != Where::far) fail(k, "x_" + std::to_string(i) + " is not in far memory");
          act.take();
          x[ui] = Where::near;
          far_act.give();
        }
        break;
    }
  }
  if (next_backward != -1) throw std::logic_error("schedule ends before block " + std::to_string(next_backward) + " is reversed");
  for (int64_t j = 1; j <= n - 1; ++j) {
    if (x[static_cast<size_t>(j)] != Where::absent) throw std::logic_error("schedule ends with x_" + std::to_string(j) + " held");
  }
  if (act.now != 0 || tapes.now != 0 || far_act.now != 0 || far_tapes.now != 0) {
    throw std::logic_error("schedule ends with buffers held");
  }
  cost.activation_buffers = act.high;
  cost.tape_buffers = tapes.high;
  cost.workspace_buffers = work.high;
  cost.far_activation_buffers = far_act.high;
  cost.far_tape_buffers = far_tapes.high;
  return cost;
}

// ---- Bytes and budgets ---------------------------------------------------------------------------------
int64_t near_bytes(const Cost& c, const BufferSizes& s) {
  return c.activation_buffers * s.activation_bytes + c.tape_buffers * s.tape_bytes + c.workspace_buffers * s.workspace_bytes;
}

int64_t far_bytes(const Cost& c, const BufferSizes& s) {
  return c.far_activation_buffers * s.activation_bytes + c.far_tape_buffers * s.tape_bytes;
}

PolicySpec policy_for_budget(int64_t blocks, const BufferSizes& sizes, int64_t budget_bytes) {
  const PolicySpec store_all{Policy::store_all, 0, 0};
  if (near_bytes(predict(blocks, store_all), sizes) <= budget_bytes) return store_all;
  // More slots never cost more forwards; the near bytes grow with the slots.
  for (int64_t slots = blocks; slots >= 1; --slots) {
    const PolicySpec spec{Policy::revolve, 0, slots};
    if (near_bytes(predict(blocks, spec), sizes) <= budget_bytes) return spec;
  }
  const int64_t minimum = near_bytes(predict(blocks, PolicySpec{Policy::recompute_all, 0, 0}), sizes);
  throw UsageError("checkpoint: a budget of " + std::to_string(budget_bytes) + " bytes fits no schedule of " +
                   std::to_string(blocks) + " blocks; the minimum is " + std::to_string(minimum) +
                   " bytes (recompute-all)");
}

}  // namespace gauge::checkpoint
