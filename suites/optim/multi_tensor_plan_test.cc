// The launch arithmetic of the fused multi-tensor optimizer kernels (optimized/optim), checked on the
// CPU: for every tensor size and placement, the chunk table and each chunk's scalar head / vector
// body / scalar tail cover every element exactly once when walked the way the kernels walk them
// (256 threads, strided), every vector step is 16-byte aligned in every array, the update order is a
// permutation of the chunks, and the workspace parts are aligned and disjoint. Also the host-side
// pieces the kernels depend on: state order (against gauge::optim::state_names), per-step scalars
// (and their step-dependent part, which step_counted computes on the device with the same function),
// and the bf16 rounding of optimized/precision/stochastic_rounding.cuh, which the kernels compile from
// the same source: bit-identical to the reference's RNE cast and stochastic rounding (value and
// random word), plus an independent oracle for RNE and exact unbiasedness for stochastic rounding.
#include "optimized/optim/multi_tensor_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "harness/philox.h"
#include "harness/tests/splitmix64.h"
#include "optimized/optim/multi_tensor.h"
#include "optimized/optim/step_scalars.h"
#include "optimized/precision/stochastic_rounding.cuh"
#include "reference/optim/config.h"
#include "reference/precision/casts.h"
#include "reference/precision/stochastic_rounding.h"

namespace gauge::optimized::optim::plan {
namespace {

// ---- Compile-time evaluation (the kernels call these through --expt-relaxed-constexpr) -------------

static_assert(vector_width(4) == 4 && vector_width(2) == 8);
static_assert(chunks_of_tensor(0, -1) == 0);
static_assert(chunks_of_tensor(1, -1) == 1);
static_assert(chunks_of_tensor(kChunkElements, 0) == 1);
static_assert(chunks_of_tensor(kChunkElements + 1, 0) == 2);
static_assert(chunks_of_tensor(kChunkElements + 3, 3) == 1);  // chunk 0 carries the head: [0, 3 + C)
static_assert(chunk_of_tensor(0, 100, 3, 0).begin == 0 && chunk_of_tensor(0, 100, 3, 0).count == 100);
static_assert(split_chunk(0, 100, 3, 8).head == 3 && split_chunk(0, 100, 3, 8).vectors == 12 &&
              split_chunk(0, 100, 3, 8).tail == 1);
static_assert(split_chunk(0, 100, -1, 8).head == 100 && split_chunk(0, 100, -1, 8).vectors == 0);
static_assert(grid_blocks(0) == 1 && grid_blocks(5) == 5);
static_assert(update_chunk_of_block(0, 10) == 9 && update_chunk_of_block(9, 10) == 0);

using gauge::test_support::SplitMix64;

// ---- Vector starts -------------------------------------------------------------------------------

int64_t brute_force_start(const std::vector<ArrayRef>& arrays) {
  for (int64_t h = 0; h < 1024; ++h) {
    bool all = true;
    for (const ArrayRef& a : arrays) all = all && (a.address + static_cast<uintptr_t>(h * a.element_bytes)) % 16 == 0;
    if (all) return h;
  }
  return -1;
}

std::vector<ArrayRef> random_arrays(SplitMix64& rng, bool with_bf16) {
  std::vector<ArrayRef> arrays(1 + rng.below(6));
  for (ArrayRef& a : arrays) {
    a.element_bytes = (with_bf16 && rng.below(2) == 0) ? 2 : 4;
    // Element-aligned, in any phase modulo 16 bytes; often all in phase 0 (the common case).
    const uintptr_t phase = rng.below(3) == 0 ? 0 : rng.below(16 / static_cast<uint32_t>(a.element_bytes));
    a.address = 0x7F0000000000ull + 256 * static_cast<uintptr_t>(rng.below(1000)) + phase * static_cast<uintptr_t>(a.element_bytes);
  }
  return arrays;
}

TEST(MultiTensorPlan, CommonVectorStartMatchesBruteForce) {
  SplitMix64 rng(1);
  int found = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const std::vector<ArrayRef> arrays = random_arrays(rng, trial % 2 == 0);
    const int64_t want = brute_force_start(arrays);
    ASSERT_EQ(common_vector_start(arrays), want) << "trial " << trial;
    if (want >= 0) {
      ++found;
      ASSERT_LT(want, 8);  // at most 8 elements of head for 2- or 4-byte arrays
    }
  }
  EXPECT_GT(found, 1000);
  EXPECT_LT(found, 20000);
}

TEST(MultiTensorPlan, TensorVectorStartIsScalarWhenTooSmall) {
  const std::vector<ArrayRef> arrays = {{0x1004, 4}, {0x2004, 4}};  // common start 3
  EXPECT_EQ(tensor_vector_start(3, arrays), -1);
  EXPECT_EQ(tensor_vector_start(4, arrays), 3);
  const std::vector<ArrayRef> apart = {{0x1004, 4}, {0x2008, 4}};  // phases 4 and 8: never together
  EXPECT_EQ(tensor_vector_start(1 << 20, apart), -1);
  EXPECT_FALSE(naturally_aligned(ArrayRef{0x1002, 4}));
  EXPECT_TRUE(naturally_aligned(ArrayRef{0x1002, 2}));
}

// ---- Chunks: coverage exactly as the kernels walk them ---------------------------------------------

struct Walk {
  std::vector<uint8_t> visits;
  int64_t vector_elements = 0;
};

// Walks chunk `c` with kThreadsPerBlock threads, as update_kernel / norm_kernel do, marking elements.
void walk_chunk(const Chunk& c, int64_t vector_start, int width, Walk& walk) {
  const ChunkSplit split = split_chunk(c.begin, c.count, vector_start, width);
  ASSERT_EQ(split.width, width);
  ASSERT_GE(split.head, 0);
  ASSERT_GE(split.vectors, 0);
  ASSERT_GE(split.tail, 0);
  ASSERT_EQ(split.head + split.vectors * width + split.tail, static_cast<int64_t>(c.count));
  for (int t = 0; t < kThreadsPerBlock; ++t) {
    for (int64_t v = t; v < split.vectors; v += kThreadsPerBlock) {
      const int64_t first = split.vector_first(v);
      ASSERT_GE(vector_start, 0);
      ASSERT_EQ((first - vector_start) % width, 0) << "vector step off the tensor's grid";
      for (int k = 0; k < width; ++k) ++walk.visits.at(static_cast<size_t>(first + k));
      walk.vector_elements += width;
    }
    for (int64_t j = t; j < split.scalar_count(); j += kThreadsPerBlock) {
      ++walk.visits.at(static_cast<size_t>(split.scalar_index(j)));
    }
  }
}

void check_tensor(int64_t n, int64_t vector_start, int width) {
  SCOPED_TRACE("n=" + std::to_string(n) + " vector_start=" + std::to_string(vector_start) + " width=" + std::to_string(width));
  const int64_t chunks = chunks_of_tensor(n, vector_start);
  ASSERT_LE(chunks, max_chunks_of_tensor(n));
  ASSERT_GE(chunks, (n + kChunkElements + 14) / (kChunkElements + 15));  // chunk 0 may hold C + head
  Walk walk;
  walk.visits.assign(static_cast<size_t>(n), 0);
  int64_t expected_begin = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    const Chunk c = chunk_of_tensor(7, n, vector_start, k);
    ASSERT_EQ(c.tensor, 7u);
    ASSERT_EQ(c.begin, expected_begin) << "chunk " << k;
    ASSERT_GT(c.count, 0u);
    ASSERT_LE(c.count, static_cast<uint32_t>(kChunkElements + 15));
    expected_begin += c.count;
    const ChunkSplit split = split_chunk(c.begin, c.count, vector_start, width);
    if (vector_start >= 0) {
      // Scalar edges only at the tensor's ends, each shorter than one vector step.
      if (k > 0) {
        ASSERT_EQ(split.head, 0) << "chunk " << k;
      }
      if (k + 1 < chunks) {
        ASSERT_EQ(split.tail, 0) << "chunk " << k;
      }
      if (split.vectors > 0) {
        ASSERT_LT(split.head, width);
        ASSERT_LT(split.tail, width);
      }
    }
    walk_chunk(c, vector_start, width, walk);
    if (testing::Test::HasFatalFailure()) return;
  }
  ASSERT_EQ(expected_begin, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(walk.visits[static_cast<size_t>(i)], 1) << "element " << i;
  if (vector_start >= 0) {
    // Everything but < width elements at each end takes the vector path.
    EXPECT_GE(walk.vector_elements, n - vector_start - (width - 1));
  } else {
    EXPECT_EQ(walk.vector_elements, 0);
  }
}

TEST(MultiTensorPlan, ChunksCoverEveryElementOnce) {
  const int64_t c = kChunkElements;
  const std::vector<int64_t> sizes = {1,     2,         3,         7,         8,         9,         15,
                                      16,    17,        1000,      c - 1,     c,         c + 1,     c + 7,
                                      c + 8, 2 * c + 3, 3 * c,     3 * c + 9, (1 << 20) + 7};
  for (const int width : {4, 8}) {
    for (const int64_t n : sizes) {
      // tensor_vector_start returns -1 or a start below both n and the width (checked below).
      for (int64_t vector_start = -1; vector_start < width; ++vector_start) {
        if (vector_start >= n) continue;
        if (n > 100000 && vector_start > 1 && vector_start != 7) continue;  // keep the big size quick
        check_tensor(n, vector_start, width);
        if (HasFatalFailure()) return;
      }
    }
  }
}

// Real placements: the vector grid derived from addresses keeps every array 16-byte aligned.
TEST(MultiTensorPlan, VectorStepsAreAlignedInEveryArray) {
  SplitMix64 rng(2);
  for (int trial = 0; trial < 3000; ++trial) {
    const bool bf16 = trial % 2 == 0;
    std::vector<ArrayRef> arrays = random_arrays(rng, bf16);
    int narrowest = 4;
    for (const ArrayRef& a : arrays) narrowest = std::min(narrowest, a.element_bytes);
    const int width = vector_width(narrowest);
    const int64_t n = 1 + rng.below(3 * static_cast<uint32_t>(kChunkElements));
    const int64_t vector_start = tensor_vector_start(n, arrays);
    ASSERT_LT(vector_start, width);  // so a chunk's scalar head is always shorter than one vector step
    for (int64_t k = 0; k < chunks_of_tensor(n, vector_start); ++k) {
      const Chunk c = chunk_of_tensor(0, n, vector_start, k);
      const ChunkSplit split = split_chunk(c.begin, c.count, vector_start, width);
      for (const int64_t v : {int64_t{0}, split.vectors / 2, split.vectors - 1}) {
        if (v < 0 || v >= split.vectors) continue;
        const int64_t first = split.vector_first(v);
        ASSERT_LE(first + width, n);
        for (const ArrayRef& a : arrays) {
          ASSERT_EQ((a.address + static_cast<uintptr_t>(first * a.element_bytes)) % 16, 0u)
              << "trial " << trial << " chunk " << k << " vector " << v;
          ASSERT_EQ((width * a.element_bytes) % 16, 0);  // a step is whole 16-byte words
        }
      }
    }
  }
}

TEST(MultiTensorPlan, ChunkTableForARaggedList) {
  const int64_t c = kChunkElements;
  const std::vector<int64_t> sizes = {0, 1, 3, 1000, (1 << 20) + 7, 0, c, c + 1, 5};
  const std::vector<int64_t> starts = {-1, -1, 1, 0, 7, -1, 0, 3, -1};
  const std::vector<Chunk> table = build_chunk_table(sizes, starts);
  int64_t expected = 0;
  for (size_t t = 0; t < sizes.size(); ++t) expected += chunks_of_tensor(sizes[t], starts[t]);
  ASSERT_EQ(static_cast<int64_t>(table.size()), expected);
  // Tensor by tensor, each tensor's chunks contiguous and in order, every element once.
  std::vector<int64_t> next(sizes.size(), 0);
  uint32_t last_tensor = 0;
  for (const Chunk& chunk : table) {
    ASSERT_GE(chunk.tensor, last_tensor);
    last_tensor = chunk.tensor;
    ASSERT_NE(sizes[chunk.tensor], 0);
    ASSERT_EQ(chunk.begin, next[chunk.tensor]);
    next[chunk.tensor] += chunk.count;
  }
  for (size_t t = 0; t < sizes.size(); ++t) EXPECT_EQ(next[t], sizes[t]) << "tensor " << t;
  EXPECT_THROW(build_chunk_table(sizes, std::vector<int64_t>(2, 0)), std::invalid_argument);
  EXPECT_TRUE(build_chunk_table(std::vector<int64_t>{}, std::vector<int64_t>{}).empty());
}

TEST(MultiTensorPlan, UpdateOrderIsAPermutation) {
  for (const int64_t chunks : {1, 2, 7, 1000}) {
    std::vector<int> seen(static_cast<size_t>(chunks), 0);
    for (int64_t b = 0; b < grid_blocks(chunks); ++b) ++seen.at(static_cast<size_t>(update_chunk_of_block(b, chunks)));
    for (const int s : seen) ASSERT_EQ(s, 1);
  }
}

// ---- Workspace -----------------------------------------------------------------------------------

TEST(MultiTensorPlan, WorkspacePartsAreAlignedAndDisjoint) {
  for (const int64_t tensors : {0, 1, 3, 1000}) {
    for (const int64_t chunks : {0, 1, 7, 6104}) {
      const WorkspaceLayout w = workspace_layout(tensors, chunks, kStepDescriptorBytes);
      for (const size_t offset : {w.control, w.counted, w.descriptors, w.chunks, w.partials, w.flags, w.total}) {
        EXPECT_EQ(offset % kWorkspaceAlignment, 0u);
      }
      EXPECT_GE(w.counted - w.control, sizeof(Control));
      EXPECT_GE(w.descriptors - w.counted, sizeof(CountedStep));
      EXPECT_EQ(w.counted % alignof(CountedStep), 0u);
      EXPECT_GE(w.chunks - w.descriptors, static_cast<size_t>(tensors) * kStepDescriptorBytes);
      EXPECT_GE(w.partials - w.chunks, static_cast<size_t>(chunks) * sizeof(Chunk));
      EXPECT_GE(w.flags - w.partials, static_cast<size_t>(chunks) * sizeof(float));
      EXPECT_GE(w.total - w.flags, static_cast<size_t>(chunks) * sizeof(uint32_t));
      const AccumulateLayout a = accumulate_layout(tensors, 3, chunks);
      EXPECT_EQ(a.descriptors, 0u);
      EXPECT_GE(a.grad_table, static_cast<size_t>(tensors) * kAccumulateDescriptorBytes);
      EXPECT_GE(a.chunks - a.grad_table, static_cast<size_t>(3 * tensors) * sizeof(void*));
      EXPECT_GE(a.total - a.chunks, static_cast<size_t>(chunks) * sizeof(Chunk));
    }
  }
}

TEST(MultiTensorPlan, WorkspaceBoundHoldsForEveryPlacement) {
  const int64_t c = kChunkElements;
  const std::vector<int64_t> sizes = {1, 3, 1000, (1 << 20) + 7, c, c + 1, 2 * c + 5};
  const size_t bound = step_workspace_bound(sizes);
  for (int64_t start = -1; start < 8; ++start) {
    std::vector<int64_t> starts(sizes.size());
    for (size_t t = 0; t < sizes.size(); ++t) starts[t] = start < sizes[t] ? start : -1;
    const auto chunks = static_cast<int64_t>(build_chunk_table(sizes, starts).size());
    EXPECT_LE(workspace_layout(static_cast<int64_t>(sizes.size()), chunks, kStepDescriptorBytes).total, bound);
  }
}

// ---- State order and per-step scalars ------------------------------------------------------------

using gauge::optim::Algorithm;
using gauge::optim::Hyper;

Hyper hyper(Algorithm a) {
  Hyper h;
  h.algorithm = a;
  return h;
}

// state_index's slots must be gauge::optim::state_names's order (the reference's).
void check_slots(const Hyper& h) {
  const std::vector<std::string> names = gauge::optim::state_names(h);
  const StateIndex s = state_index(h);
  ASSERT_EQ(s.count, static_cast<int>(names.size()));
  ASSERT_EQ(s.count, gauge::optim::state_count(h));
  const auto slot_of = [&](const char* name) {
    const auto it = std::find(names.begin(), names.end(), std::string(name));
    return it == names.end() ? -1 : static_cast<int>(it - names.begin());
  };
  EXPECT_EQ(s.momentum_buffer, slot_of("momentum_buffer"));
  EXPECT_EQ(s.sum, slot_of("sum"));
  EXPECT_EQ(s.square_avg, slot_of("square_avg"));
  EXPECT_EQ(s.grad_avg, slot_of("grad_avg"));
  EXPECT_EQ(s.exp_avg, slot_of("exp_avg"));
  EXPECT_EQ(s.exp_avg_sq, slot_of("exp_avg_sq"));
  EXPECT_EQ(s.max_exp_avg_sq, slot_of("max_exp_avg_sq"));
}

TEST(MultiTensorPlan, StateOrderIsTheReferences) {
  Hyper sgd = hyper(Algorithm::sgd);
  EXPECT_EQ(state_index(sgd).count, 0);
  check_slots(sgd);
  sgd.momentum = 0.9;
  EXPECT_EQ(state_index(sgd).momentum_buffer, 0);
  check_slots(sgd);
  EXPECT_EQ(state_index(hyper(Algorithm::adagrad)).sum, 0);
  check_slots(hyper(Algorithm::adagrad));
  for (const bool centered : {false, true}) {
    for (const double momentum : {0.0, 0.5}) {
      Hyper rms = hyper(Algorithm::rmsprop);
      rms.centered = centered;
      rms.momentum = momentum;
      check_slots(rms);
    }
  }
  Hyper rms = hyper(Algorithm::rmsprop);
  rms.centered = true;
  rms.momentum = 0.5;
  EXPECT_EQ(state_index(rms).square_avg, 0);
  EXPECT_EQ(state_index(rms).momentum_buffer, 1);
  EXPECT_EQ(state_index(rms).grad_avg, 2);
  for (const Algorithm a : {Algorithm::adam, Algorithm::adamw}) {
    for (const bool amsgrad : {false, true}) {
      Hyper adam = hyper(a);
      adam.amsgrad = amsgrad;
      check_slots(adam);
      EXPECT_EQ(state_index(adam).exp_avg, 0);
      EXPECT_EQ(state_index(adam).exp_avg_sq, 1);
      EXPECT_EQ(state_index(adam).max_exp_avg_sq, amsgrad ? 2 : -1);
    }
  }
}

TEST(MultiTensorPlan, StepScalars) {
  Hyper adam = hyper(Algorithm::adam);
  adam.beta1 = 0.9;
  adam.beta2 = 0.999;
  adam.weight_decay = 0.01;
  for (const int64_t t : {1, 2, 10, 1000}) {
    const StepScalars s = step_scalars(adam, t, 1e-3);
    EXPECT_EQ(s.step_size, static_cast<float>(1e-3 / (1.0 - std::pow(0.9, static_cast<double>(t)))));
    EXPECT_EQ(s.bc2_sqrt, static_cast<float>(std::sqrt(1.0 - std::pow(0.999, static_cast<double>(t)))));
    EXPECT_EQ(s.one_minus_beta2, static_cast<float>(1.0 - 0.999));
    EXPECT_EQ(s.decoupled, 0);
    EXPECT_EQ(s.use_weight_decay, 1);
  }
  Hyper adamw = hyper(Algorithm::adamw);
  adamw.weight_decay = 0.1;
  EXPECT_EQ(step_scalars(adamw, 1, 0.01).decay_factor, static_cast<float>(1.0 - 0.01 * 0.1));
  EXPECT_EQ(step_scalars(adamw, 1, 0.01).decoupled, 1);
  Hyper sgd = hyper(Algorithm::sgd);
  EXPECT_EQ(step_scalars(sgd, 1, 0.1).use_momentum, 0);
  EXPECT_EQ(step_scalars(sgd, 1, 0.1).use_weight_decay, 0);
  sgd.momentum = 0.9;
  sgd.dampening = 0.25;
  EXPECT_EQ(step_scalars(sgd, 1, 0.1).first_step, 1);
  EXPECT_EQ(step_scalars(sgd, 2, 0.1).first_step, 0);
  EXPECT_EQ(step_scalars(sgd, 2, 0.1).dampening_complement, 0.75f);
  Hyper adagrad = hyper(Algorithm::adagrad);
  adagrad.lr_decay = 0.5;
  EXPECT_EQ(step_scalars(adagrad, 1, 0.1).clr, 0.1f);
  EXPECT_EQ(step_scalars(adagrad, 3, 0.1).clr, static_cast<float>(0.1 / 2.0));
  Hyper rms = hyper(Algorithm::rmsprop);
  rms.centered = true;
  EXPECT_EQ(step_scalars(rms, 1, 0.1).grad_avg_slot, 1);
  EXPECT_EQ(step_scalars(rms, 1, 0.1).momentum_slot, -1);
  EXPECT_EQ(accumulation_scale(4), 0.25f);
  EXPECT_EQ(accumulation_scale(1), 1.0f);
  EXPECT_EQ(accumulation_scale(3), 1.0f / 3.0f);
}

// ---- The step-dependent scalars shared by the host step and the counted (device) step --------------

// step_scalars as it was written before its step-dependent part moved into step_dependent_scalars:
// the expressions the host step has always used.
StepScalars legacy_step_scalars(const Hyper& h, int64_t step, double lr) {
  StepScalars s;
  const auto f = [](double x) { return static_cast<float>(x); };
  const double t = static_cast<double>(step);
  s.lr = f(lr);
  s.weight_decay = f(h.weight_decay);
  s.use_weight_decay = h.weight_decay != 0.0 ? 1 : 0;
  s.eps = f(h.eps);
  const StateIndex slots = state_index(h);
  switch (h.algorithm) {
    case Algorithm::sgd:
      s.momentum = f(h.momentum);
      s.dampening_complement = f(1.0 - h.dampening);
      s.use_momentum = h.momentum != 0.0 ? 1 : 0;
      s.nesterov = h.nesterov ? 1 : 0;
      s.first_step = step == 1 ? 1 : 0;
      break;
    case Algorithm::adagrad:
      s.clr = f(lr / (1.0 + (t - 1.0) * h.lr_decay));
      break;
    case Algorithm::rmsprop:
      s.alpha = f(h.alpha);
      s.one_minus_alpha = f(1.0 - h.alpha);
      s.momentum = f(h.momentum);
      s.use_momentum = h.momentum > 0.0 ? 1 : 0;
      s.centered = h.centered ? 1 : 0;
      s.momentum_slot = slots.momentum_buffer;
      s.grad_avg_slot = slots.grad_avg;
      break;
    case Algorithm::adam:
    case Algorithm::adamw: {
      const double bc1 = 1.0 - std::pow(h.beta1, t);
      const double bc2 = 1.0 - std::pow(h.beta2, t);
      s.beta1 = f(h.beta1);
      s.one_minus_beta1 = f(1.0 - h.beta1);
      s.beta2 = f(h.beta2);
      s.one_minus_beta2 = f(1.0 - h.beta2);
      s.step_size = f(lr / bc1);
      s.bc2_sqrt = f(std::sqrt(bc2));
      s.amsgrad = h.amsgrad ? 1 : 0;
      s.decoupled = h.algorithm == Algorithm::adamw ? 1 : 0;
      s.decay_factor = f(1.0 - lr * h.weight_decay);
      break;
    }
  }
  return s;
}

// Every field, floats by their bits.
void expect_same_scalars(const StepScalars& want, const StepScalars& got, const std::string& what) {
  const auto b = [](float x) { return std::bit_cast<uint32_t>(x); };
  const std::pair<float, float> floats[] = {
      {want.lr, got.lr},
      {want.weight_decay, got.weight_decay},
      {want.eps, got.eps},
      {want.momentum, got.momentum},
      {want.dampening_complement, got.dampening_complement},
      {want.clr, got.clr},
      {want.alpha, got.alpha},
      {want.one_minus_alpha, got.one_minus_alpha},
      {want.beta1, got.beta1},
      {want.one_minus_beta1, got.one_minus_beta1},
      {want.beta2, got.beta2},
      {want.one_minus_beta2, got.one_minus_beta2},
      {want.step_size, got.step_size},
      {want.bc2_sqrt, got.bc2_sqrt},
      {want.decay_factor, got.decay_factor}};
  for (size_t k = 0; k < std::size(floats); ++k) {
    EXPECT_EQ(b(floats[k].first), b(floats[k].second)) << what << ": float field " << k << " " << floats[k].first << " vs "
                                                       << floats[k].second;
  }
  const std::pair<int, int> ints[] = {{want.use_weight_decay, got.use_weight_decay},
                                      {want.use_momentum, got.use_momentum},
                                      {want.nesterov, got.nesterov},
                                      {want.first_step, got.first_step},
                                      {want.centered, got.centered},
                                      {want.amsgrad, got.amsgrad},
                                      {want.decoupled, got.decoupled},
                                      {want.momentum_slot, got.momentum_slot},
                                      {want.grad_avg_slot, got.grad_avg_slot}};
  for (size_t k = 0; k < std::size(ints); ++k) EXPECT_EQ(ints[k].first, ints[k].second) << what << ": int field " << k;
}

std::vector<std::pair<std::string, Hyper>> every_algorithm() {
  std::vector<std::pair<std::string, Hyper>> c;
  Hyper h = hyper(Algorithm::sgd);
  c.emplace_back("sgd", h);
  h.momentum = 0.9;
  h.dampening = 0.1;
  h.weight_decay = 0.01;
  h.nesterov = false;
  c.emplace_back("sgd_momentum", h);
  h = hyper(Algorithm::adagrad);
  c.emplace_back("adagrad", h);
  h.lr_decay = 0.01;
  h.weight_decay = 0.01;
  c.emplace_back("adagrad_decay", h);
  h.lr_decay = 0.37;
  c.emplace_back("adagrad_decay_0.37", h);
  h = hyper(Algorithm::rmsprop);
  h.centered = true;
  h.momentum = 0.9;
  c.emplace_back("rmsprop_centered_momentum", h);
  h = hyper(Algorithm::adam);
  h.beta1 = 0.9;
  h.beta2 = 0.999;
  h.weight_decay = 0.01;
  c.emplace_back("adam", h);
  h.beta1 = 0.8;
  h.beta2 = 0.95;
  h.amsgrad = true;
  c.emplace_back("adam_0.8_0.95_amsgrad", h);
  h = hyper(Algorithm::adamw);
  h.beta1 = 0.9;
  h.beta2 = 0.999;
  h.weight_decay = 0.1;
  c.emplace_back("adamw", h);
  h.beta1 = 0.0;
  h.beta2 = 0.5;
  c.emplace_back("adamw_0_0.5", h);
  return c;
}

// The host step's scalars are what they always were, the shared function gives exactly their
// step-dependent part, and the step-independent part does not depend on t (step_counted takes it from
// step_scalars(h, 1, lr) and the rest from the device).
TEST(MultiTensorPlan, StepDependentScalarsAreTheHostSteps) {
  for (const auto& [name, h] : every_algorithm()) {
    for (const double lr : {1e-3, 0.1, 0.0, 3.0}) {
      for (const int64_t t : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{1000}, int64_t{1} << 29}) {
        const std::string what = name + " lr " + std::to_string(lr) + " t " + std::to_string(t);
        const StepScalars legacy = legacy_step_scalars(h, t, lr);
        expect_same_scalars(legacy, step_scalars(h, t, lr), what + " step_scalars");

        const StepDependentScalars d = step_dependent_scalars(step_dependence(h, lr), t);
        StepScalars counted = step_scalars(h, 1, lr);
        set_step_dependent(counted, d);
        expect_same_scalars(legacy, counted, what + " step_scalars(t = 1) + step_dependent_scalars(t)");
      }
    }
  }
  // A few values worked out by hand.
  Hyper adam = hyper(Algorithm::adam);
  adam.beta1 = 0.5;
  adam.beta2 = 0.75;
  const StepDependentScalars a2 = step_dependent_scalars(step_dependence(adam, 0.75), 2);
  EXPECT_EQ(a2.step_size, 1.0f);                                       // 0.75 / (1 - 0.25)
  EXPECT_EQ(a2.bc2_sqrt, static_cast<float>(std::sqrt(1.0 - 0.5625)));  // sqrt(0.4375)
  EXPECT_EQ(a2.first_step, 0);
  EXPECT_EQ(a2.clr, 0.0f);
  Hyper sgd = hyper(Algorithm::sgd);
  EXPECT_EQ(step_dependent_scalars(step_dependence(sgd, 0.1), 1).first_step, 1);
  EXPECT_EQ(step_dependent_scalars(step_dependence(sgd, 0.1), 2).first_step, 0);
  EXPECT_EQ(step_dependent_scalars(step_dependence(sgd, 0.1), 2).bc2_sqrt, 1.0f);
  Hyper adagrad = hyper(Algorithm::adagrad);
  adagrad.lr_decay = 0.5;
  EXPECT_EQ(step_dependent_scalars(step_dependence(adagrad, 0.1), 3).clr, static_cast<float>(0.1 / 2.0));
}

// ---- bf16 rounding helpers -----------------------------------------------------------------------

namespace sr = gauge::optimized::precision;

float f32(uint32_t bits) { return std::bit_cast<float>(bits); }

// Independent oracle for round-to-nearest-even: pick the nearer of the two bf16 neighbours in double
// (exact for fp32 inputs), ties to the even one; past the largest finite bf16 by half an ulp: Inf.
uint16_t oracle_rne(uint32_t bits) {
  const uint32_t sign = bits & 0x80000000u;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  const uint32_t low = magnitude >> 16;  // truncated bf16 magnitude
  const double x = static_cast<double>(f32(magnitude));
  const double below = static_cast<double>(f32(low << 16));
  const double above = low == 0x7F7Fu ? 0x1.0p128 : static_cast<double>(f32((low + 1) << 16));
  uint32_t pick = low;
  if (x - below > above - x || (x - below == above - x && (low & 1u) != 0)) pick = low + 1;
  return static_cast<uint16_t>((sign >> 16) | pick);
}

namespace ref = gauge::reference::precision;

std::vector<uint32_t> special_f32_bits() {
  return {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x00008000u, 0x00018000u, 0x007FFFFFu, 0x00800000u,
          0x3F800000u, 0x3F800001u, 0x3F808000u, 0x3F818000u, 0x3F80FFFFu, 0xBF80FFFFu, 0x7F7F7FFFu, 0x7F7F8000u,
          0x7F7FFFFFu, 0xFF7F8000u, 0xFF7FFFFFu, 0x7F800000u, 0xFF800000u, 0x7F800001u, 0x7FC00000u, 0xFFA12345u,
          0x7FFFFFFFu};
}

TEST(Bf16Rounding, NearestEvenIsTheReferenceCast) {
  SplitMix64 rng(3);
  std::vector<uint32_t> inputs = special_f32_bits();
  for (int i = 0; i < 2000000; ++i) inputs.push_back(static_cast<uint32_t>(rng.next()));
  for (const uint32_t bits : inputs) {
    const uint16_t got = sr::f32_to_bf16_rne(f32(bits));
    ASSERT_EQ(got, ref::f32_to_bf16(f32(bits))) << std::hex << bits;
    if (!std::isnan(f32(bits))) {
      ASSERT_EQ(got, oracle_rne(bits)) << std::hex << bits;
    }
  }
}

TEST(Bf16Rounding, StochasticIsTheReferenceRounding) {
  SplitMix64 rng(4);
  std::vector<uint32_t> inputs = special_f32_bits();
  for (int i = 0; i < 4000; ++i) inputs.push_back(static_cast<uint32_t>(rng.next()));
  for (const uint32_t bits : inputs) {
    const uint32_t frac24 = (bits & 0xFFFFu) << 8;
    // Words on both sides of the decision boundary, the extremes, and random ones.
    std::vector<uint32_t> words = {0u, 0xFFFFFFFFu, 0x000000FFu, 0xFFFFFF00u};
    for (const uint32_t top : {frac24, frac24 - 1, frac24 + 1}) {
      words.push_back((top & 0xFFFFFFu) << 8);
      words.push_back(((top & 0xFFFFFFu) << 8) | 0xFFu);
    }
    for (int w = 0; w < 64; ++w) words.push_back(static_cast<uint32_t>(rng.next()));
    for (const uint32_t word : words) {
      ASSERT_EQ(sr::f32_to_bf16_stochastic(f32(bits), word), ref::f32_to_bf16_stochastic(f32(bits), word))
          << std::hex << "x=" << bits << " word=" << word;
    }
  }
}

TEST(Bf16Rounding, StochasticIsExactlyUnbiased) {
  SplitMix64 rng(5);
  std::vector<uint32_t> inputs = {0x3F800000u, 0x3F800001u, 0x3F80FFFFu, 0x00000001u, 0x807FFFFFu, 0x7F7FFFFFu,
                                  0x7F7F0001u, 0xC2C80123u, 0x00000000u, 0x80000000u};
  for (int i = 0; i < 100; ++i) {
    uint32_t bits = 0;
    do {
      bits = static_cast<uint32_t>(rng.next());
    } while (std::isnan(f32(bits)) || std::isinf(f32(bits)));
    inputs.push_back(bits);
  }
  for (const uint32_t bits : inputs) {
    const uint16_t down = static_cast<uint16_t>(bits >> 16);
    // The decision reads the top 24 bits of the word and compares with (low 16 bits) << 8, so over
    // the 2^16 values of the word's top 16 bits (low bits arbitrary) exactly `low 16 bits` round up.
    uint32_t ups = 0;
    for (uint32_t top = 0; top < 65536; ++top) {
      const uint32_t word = (top << 16) | (static_cast<uint32_t>(rng.next()) & 0xFFFFu);
      const uint16_t got = sr::f32_to_bf16_stochastic(f32(bits), word);
      ASSERT_TRUE(got == down || got == static_cast<uint16_t>(down + 1)) << std::hex << bits << " word=" << word;
      ups += got != down ? 1u : 0u;
    }
    ASSERT_EQ(ups, bits & 0xFFFFu) << std::hex << bits;  // E[result] = x
  }
  // On-grid values never move; NaN and Inf follow the cast's rules; past max finite is Inf.
  EXPECT_EQ(sr::f32_to_bf16_stochastic(1.0f, 0u), 0x3F80u);
  EXPECT_EQ(sr::f32_to_bf16_stochastic(f32(0x7F800000u), 0u), 0x7F80u);
  EXPECT_EQ(sr::f32_to_bf16_stochastic(f32(0xFF800000u), 0u), 0xFF80u);
  EXPECT_EQ(sr::f32_to_bf16_stochastic(f32(0x7F800001u), 0u), 0x7FC0u);
  EXPECT_EQ(sr::f32_to_bf16_stochastic(f32(0xFFA12345u), 0u), 0xFFE1u);
  EXPECT_EQ(sr::f32_to_bf16_stochastic(f32(0x7F7FFFFFu), 0u), 0x7F80u);
  EXPECT_EQ(sr::bf16_bits_to_f32(0x3F80u), 1.0f);
}

TEST(Bf16Rounding, StochasticWordIsTheReferences) {
  SplitMix64 rng(6);
  for (int trial = 0; trial < 20000; ++trial) {
    const uint64_t seed = rng.next();
    const auto tensor_id = static_cast<uint32_t>(rng.next());
    const uint64_t index = rng.next() & ((uint64_t{1} << 34) - 1) & (trial % 3 == 0 ? 0xFFFull : ~0ull);
    const uint64_t step = trial % 2 == 0 ? 1 + rng.below(10) : (rng.next() & ((uint64_t{1} << 30) - 1));
    ASSERT_EQ(sr::sr_word(seed, tensor_id, index, step), ref::stochastic_rounding_word(seed, tensor_id, index, step))
        << "trial " << trial;
    // The kernels' fast path: one block serves the four elements of a quad.
    const uint64_t quad = index >> 2;
    const rng::Philox4x32Counter block = sr::sr_block(seed, tensor_id, quad, step);
    for (uint32_t w = 0; w < 4; ++w) {
      ASSERT_EQ(block.w[w], ref::stochastic_rounding_word(seed, tensor_id, 4 * quad + w, step)) << "trial " << trial;
    }
  }
  EXPECT_EQ(gauge::optim::stochastic_rounding_tensor_id(5, 0), 20u);
  EXPECT_EQ(gauge::optim::stochastic_rounding_tensor_id(5, 3), 23u);
}

}  // namespace
}  // namespace gauge::optimized::optim::plan
