// The planner: every policy's schedule is executable, costs what its closed forms say, and revolve's
// forward count is the binomial optimum.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness/error.h"
#include "reference/checkpoint/schedule.h"

namespace gauge::checkpoint {
namespace {

std::vector<PolicySpec> every_spec(int64_t n) {
  std::vector<PolicySpec> specs = {{Policy::store_all, 0, 0},
                                   {Policy::recompute_all, 0, 0},
                                   {Policy::sqrt_segments, 0, 0},
                                   {Policy::offload, 0, 0}};
  for (int64_t k = 1; k <= n; ++k) specs.push_back({Policy::uniform_segments, k, 0});
  for (int64_t s = 1; s <= n; ++s) specs.push_back({Policy::revolve, 0, s});
  return specs;
}

std::string label(int64_t n, const PolicySpec& s) {
  return std::string(policy_name(s.policy)) + " n=" + std::to_string(n) + " segment=" + std::to_string(s.segment) +
         " slots=" + std::to_string(s.slots);
}

void expect_replay_matches(int64_t n, const PolicySpec& spec) {
  const Schedule s = plan(n, spec);
  const Cost replayed = replay(s);  // throws if any action is not executable
  EXPECT_EQ(replayed.forwards, s.predicted.forwards) << label(n, spec);
  EXPECT_EQ(replayed.activation_buffers, s.predicted.activation_buffers) << label(n, spec);
  EXPECT_EQ(replayed.tape_buffers, s.predicted.tape_buffers) << label(n, spec);
  EXPECT_EQ(replayed.workspace_buffers, s.predicted.workspace_buffers) << label(n, spec);
  EXPECT_EQ(replayed.far_activation_buffers, s.predicted.far_activation_buffers) << label(n, spec);
  EXPECT_EQ(replayed.far_tape_buffers, s.predicted.far_tape_buffers) << label(n, spec);
}

TEST(Schedule, EveryPolicyIsExecutableAndCostsItsClosedFormUpTo64Blocks) {
  for (int64_t n = 1; n <= 64; ++n) {
    for (const PolicySpec& spec : every_spec(n)) expect_replay_matches(n, spec);
  }
}

TEST(Schedule, ClosedFormsHoldForTheMeasuredChainLengths) {
  for (int64_t n : {128, 200, 256, 257}) {
    for (const PolicySpec& spec : std::vector<PolicySpec>{{Policy::store_all, 0, 0},
                                                         {Policy::recompute_all, 0, 0},
                                                         {Policy::sqrt_segments, 0, 0},
                                                         {Policy::offload, 0, 0},
                                                         {Policy::uniform_segments, 4, 0},
                                                         {Policy::uniform_segments, 7, 0},
                                                         {Policy::revolve, 0, 2},
                                                         {Policy::revolve, 0, 5},
                                                         {Policy::revolve, 0, 16},
                                                         {Policy::revolve, 0, n - 2},
                                                         {Policy::revolve, 0, n}}) {
      expect_replay_matches(n, spec);
    }
  }
}

TEST(Schedule, TextbookCounts) {
  for (int64_t n : {1, 2, 8, 33, 256}) {
    EXPECT_EQ(predict(n, {Policy::store_all}).forwards, n);
    EXPECT_EQ(predict(n, {Policy::store_all}).tape_buffers, n);
    EXPECT_EQ(predict(n, {Policy::recompute_all}).forwards, n * (n + 1) / 2);
    EXPECT_EQ(predict(n, {Policy::recompute_all}).tape_buffers, 1);
    EXPECT_EQ(predict(n, {Policy::offload}).forwards, n);
  }
  // sqrt(n) segments on perfect squares: one extra forward of all but the last segment, 2n - sqrt(n),
  // and O(sqrt n) memory: 2 sqrt(n) - 1 activations and sqrt(n) tapes.
  for (int64_t k : {2, 4, 8, 16}) {
    const int64_t n = k * k;
    const Cost c = predict(n, {Policy::sqrt_segments});
    EXPECT_EQ(c.forwards, 2 * n - k);
    EXPECT_EQ(c.activation_buffers, 2 * k - 1);
    EXPECT_EQ(c.tape_buffers, k);
  }
  // Ragged segments: n = 33, k = 4 -> 9 segments, the last of 1 block.
  EXPECT_EQ(predict(33, {Policy::uniform_segments, 4, 0}).forwards, 65);
}

TEST(Schedule, BinomialFormula) {
  EXPECT_EQ(binomial(5, 2), 10);
  EXPECT_EQ(binomial(64, 32), 1832624140942590534);
  EXPECT_EQ(binomial(200, 100), std::numeric_limits<int64_t>::max());  // saturates
  // l = 10 steps, s = 3 states: beta(3, 1) = 4 < 10 <= beta(3, 2) = 10, so r = 2 and
  // t = 2 * 10 - beta(4, 1) = 20 - 5 = 15 advances; 25 forwards with the 10 taped ones.
  EXPECT_EQ(revolve_repetitions(10, 3), 2);
  EXPECT_EQ(revolve_advances(10, 3), 15);
  EXPECT_EQ(revolve_forwards(10, 3), 25);
  // s = 1 is recompute-all; s >= n - 1 advances every step once (n - 1 advances).
  for (int64_t n = 1; n <= 50; ++n) {
    EXPECT_EQ(revolve_forwards(n, 1), n * (n + 1) / 2);
    if (n >= 2) {
      EXPECT_EQ(revolve_forwards(n, n - 1), 2 * n - 1);
    }
  }
}

// F(l, c): fewest forwards reversing l steps from a stored state with c more slots, by exhaustive
// dynamic programming over every strategy (advance j steps and store, or never store again), with
// no use of the binomial formula.
std::vector<std::vector<int64_t>> brute_force_forwards(int64_t max_steps, int64_t max_free) {
  std::vector<std::vector<int64_t>> F(static_cast<size_t>(max_steps + 1),
                                      std::vector<int64_t>(static_cast<size_t>(max_free + 1), 0));
  for (int64_t c = 0; c <= max_free; ++c) {
    for (int64_t l = 1; l <= max_steps; ++l) {
      auto& f = F[static_cast<size_t>(l)][static_cast<size_t>(c)];
      if (l == 1) {
        f = 1;
        continue;
      }
      // Without storing: advance to the last step, reverse it, and the rest is l - 1 steps.
      f = (l - 1) + 1 + F[static_cast<size_t>(l - 1)][static_cast<size_t>(c)];
      if (c == 0) continue;
      f = std::min(f, F[static_cast<size_t>(l)][static_cast<size_t>(c - 1)]);
      for (int64_t j = 1; j < l; ++j) {
        f = std::min(f, j + F[static_cast<size_t>(l - j)][static_cast<size_t>(c - 1)] + F[static_cast<size_t>(j)][static_cast<size_t>(c)]);
      }
    }
  }
  return F;
}

TEST(Schedule, RevolveIsOptimalByExhaustiveSearch) {
  const int64_t max_steps = 120, max_free = 12;
  const auto F = brute_force_forwards(max_steps, max_free);
  for (int64_t l = 1; l <= max_steps; ++l) {
    for (int64_t c = 0; c <= max_free; ++c) {
      ASSERT_EQ(revolve_forwards(l, c + 1), F[static_cast<size_t>(l)][static_cast<size_t>(c)])
          << "l=" << l << " slots=" << c + 1;
    }
  }
  // And the planner's schedules achieve it (counted by replaying them).
  for (int64_t l = 1; l <= 60; ++l) {
    for (int64_t s = 1; s <= std::min<int64_t>(l, max_free + 1); ++s) {
      EXPECT_EQ(replay(plan(l, {Policy::revolve, 0, s})).forwards, F[static_cast<size_t>(l)][static_cast<size_t>(s - 1)])
          << "l=" << l << " slots=" << s;
    }
  }
}

TEST(Schedule, ReplayRejectsSchedulesThatCannotRun) {
  Schedule s = plan(4, {Policy::store_all});
  Schedule missing_input = s;
  missing_input.actions.erase(missing_input.actions.begin());  // forward(1) without x_1
  EXPECT_THROW(replay(missing_input), std::logic_error);
  Schedule out_of_order = s;
  std::swap(out_of_order.actions[4], out_of_order.actions[6]);  // backward(2) before backward(3)
  EXPECT_THROW(replay(out_of_order), std::logic_error);
  Schedule leaks = s;
  leaks.actions.pop_back();  // backward(0) never runs
  EXPECT_THROW(replay(leaks), std::logic_error);
}

template <class F>
std::string usage_error_of(F&& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "(no UsageError)";
}

TEST(Schedule, BadInputNamesTheBound) {
  EXPECT_NE(usage_error_of([] { plan(8, {Policy::uniform_segments, 0, 0}); }).find("at least 1"), std::string::npos);
  EXPECT_NE(usage_error_of([] { plan(8, {Policy::uniform_segments, 9, 0}); }).find("at most 8"), std::string::npos);
  EXPECT_NE(usage_error_of([] { plan(8, {Policy::revolve, 0, 9}); }).find("at most 8"), std::string::npos);
  EXPECT_NE(usage_error_of([] { plan(8, {Policy::revolve, 0, 0}); }).find("at least 1"), std::string::npos);
  EXPECT_NE(usage_error_of([] { plan(0, {Policy::store_all}); }).find("1.."), std::string::npos);
  const BufferSizes sizes{1000, 3000, 500};
  const int64_t minimum = near_bytes(predict(16, {Policy::recompute_all}), sizes);
  EXPECT_EQ(minimum, 3 * 1000 + 3000 + 500);
  const std::string message = usage_error_of([&] { policy_for_budget(16, sizes, minimum - 1); });
  EXPECT_NE(message.find("the minimum is " + std::to_string(minimum) + " bytes"), std::string::npos) << message;
}

TEST(Schedule, BudgetPicksTheFewestForwardsThatFit) {
  const BufferSizes sizes{1000, 3000, 500};
  const int64_t n = 32;
  const int64_t everything = near_bytes(predict(n, {Policy::store_all}), sizes);
  EXPECT_EQ(policy_for_budget(n, sizes, everything).policy, Policy::store_all);
  const int64_t minimum = near_bytes(predict(n, {Policy::recompute_all}), sizes);
  const PolicySpec tight = policy_for_budget(n, sizes, minimum);
  EXPECT_EQ(tight.policy, Policy::revolve);
  EXPECT_EQ(tight.slots, 1);
  // Room for five states besides x_0 and the working set: six slots.
  const PolicySpec six = policy_for_budget(n, sizes, minimum + 5 * 1000);
  EXPECT_EQ(six.slots, 6);
  EXPECT_LE(near_bytes(predict(n, six), sizes), minimum + 5 * 1000);
}

}  // namespace
}  // namespace gauge::checkpoint
