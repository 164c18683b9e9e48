// Activation checkpointing, declared once per (policy, block): one training step (forward and
// backward) of a chain of n identical blocks under the policy's schedule. Outputs: y, dx and every
// block's parameter gradient. Recorded beside time: the counted peak of activation memory and the
// number of block forward evaluations, each with the planner's analytic prediction.
//
// Points: n in {8, 16, 32, 64, 128, 256} (8 and 16 quick). uniform_segments uses segments of 4
// blocks; revolve has ceil(sqrt n) checkpoint slots (x_0 included), as many states as sqrt(n)
// segments keep, with one tape at a time instead of a segment's worth.
//
// Memory model (reference side, counting allocator over the whole call, minus what was live before
// the inputs): inputs (x, dy, params) + outputs (y, dx, dparams) + the executor's pool, whose bytes
// are schedule.h's near_bytes(), + reference/nn's own accumulators during a backward (chain.h). Offload's far memory is not counting-allocator memory; it is the
// far_memory_peak_bytes counter.
//
// Optimized side (optimized/checkpoint's ChainExecutor, built once per point by `prepare`, untimed):
// device pool = inputs + outputs + the executor's arena (exactly near_bytes()) + its layer scratch.
// The prediction is the first three. The scratch (ChainExecutor::layer_scratch_bytes()) is the
// cuBLASLt workspace the algorithm heuristic picks, known only once the linears are planned on a
// device (optimized/nn caps it at 32 MiB), plus column-sum and norm partials: the same for every
// policy of a block kind, so the measured peak exceeds the prediction by that constant and policies
// still compare by their differences. Offload's
// far memory is pinned host memory (cudaMallocHost), outside the pool and outside both peaks; the
// optimized side reports no counters (the harness measures them on the reference only), so offload's
// cost shows as its time and device peak beside store_all's rows in the same table.
//
// Tolerance: the CPU reference is deterministic and every policy reproduces store-all's bits, and so
// does the CUDA executor on one device; between the two, chain_tolerance (chain.h) derives an fp32
// accumulation rule from the chain's depth and the inputs' magnitudes.
#include <cmath>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/error.h"
#include "reference/checkpoint/schedule.h"
#include "suites/checkpoint/chain.h"
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include <memory>

#include "harness/gpu.h"
#include "optimized/checkpoint/executor.h"
#endif

namespace gauge::suites::checkpoint {
namespace {

using gauge::checkpoint::Policy;
using gauge::checkpoint::PolicySpec;

constexpr int64_t kUniformSegment = 4;

int64_t ceil_sqrt(int64_t n) {
  int64_t k = 1;
  while (k * k < n) ++k;
  return k;
}

std::vector<Point> chain_points(Policy policy) {
  std::vector<ShapeSpec> shapes;
  for (int64_t n : {8, 16, 32, 64, 128, 256}) {
    ShapeSpec s{{{"n", n}}, n <= 16};
    if (policy == Policy::uniform_segments) s.dims.push_back({"segment", kUniformSegment});
    if (policy == Policy::revolve) s.dims.push_back({"slots", ceil_sqrt(n)});
    shapes.push_back(s);
  }
  return grid(shapes, {DType::f32});
}

PolicySpec spec_of(Policy policy, const Point& p) {
  PolicySpec s{policy, 0, 0};
  if (policy == Policy::uniform_segments) s.segment = p.dim("segment");
  if (policy == Policy::revolve) s.slots = p.dim("slots");
  return s;
}

int64_t tensor_bytes(const BlockLayout& L, int64_t n) {
  // x, dy, y, dx: [rows, width]; params and dparams: [n, param_count]; all fp32.
  return 4 * (4 * L.activation_count() + 2 * n * L.param_count());
}

const char* block_name(BlockKind kind) { return kind == BlockKind::linear ? "linear" : "residual_mlp"; }

bool declare(Policy policy, BlockKind kind) {
  const std::string name = std::string(gauge::checkpoint::policy_name(policy)) + "_" + block_name(kind);
  CaseDecl decl;
  decl.suite = "checkpoint";
  decl.name = name;
  decl.description = std::string("one training step of n ") + block_name(kind) + " blocks under " +
                     gauge::checkpoint::policy_name(policy) + ": peak activation memory and block forwards vs theory";
  decl.points = chain_points(policy);
  decl.model = [policy, kind](const Point& p) {
    const BlockLayout L = case_layout(kind);
    const int64_t n = p.dim("n");
    const auto cost = gauge::checkpoint::predict(n, spec_of(policy, p));
    const auto sizes = L.buffer_sizes();
    CostModel m;
    m.flops = static_cast<double>(cost.forwards) * L.forward_flops() + static_cast<double>(n) * L.backward_flops();
    m.bytes = static_cast<double>(tensor_bytes(L, n));
    m.bound = Bound::compute;
    m.math_dtype = DType::f32;
    const int64_t near = gauge::checkpoint::near_bytes(cost, sizes);
    m.predicted_host_peak_bytes = tensor_bytes(L, n) + near + reference_layer_scratch_bytes(L);
    m.predicted_device_peak_bytes = tensor_bytes(L, n) + near;  // + layer scratch, see the header
    m.predicted_counters = {{"forward_evaluations", static_cast<double>(cost.forwards)},
                            {"activation_peak_bytes", static_cast<double>(near)}};
    if (policy == Policy::offload) {
      m.predicted_counters.push_back({"far_memory_peak_bytes", static_cast<double>(gauge::checkpoint::far_bytes(cost, sizes))});
    }
    return m;
  };
  decl.tolerance = [kind](const Point& p) { return chain_tolerance(case_layout(kind), p.dim("n")); };
  decl.inputs = [kind](const Point& p, uint64_t seed) { return chain_inputs(case_layout(kind), p.dim("n"), seed); };
  decl.reference = [policy, kind](const Point& p, const std::vector<HostTensor>& in) {
    const BlockLayout L = case_layout(kind);
    const auto schedule = gauge::checkpoint::plan(p.dim("n"), spec_of(policy, p));
    StepResult step = reference_step(L, schedule, in);
    ReferenceResult r;
    r.outputs.push_back(std::move(step.y));
    r.outputs.push_back(std::move(step.dx));
    r.outputs.push_back(std::move(step.dparams));
    r.counters = {{"forward_evaluations", static_cast<double>(step.stats.measured.forwards)},
                  {"activation_peak_bytes", static_cast<double>(step.stats.near_bytes)}};
    if (policy == Policy::offload) r.counters.push_back({"far_memory_peak_bytes", static_cast<double>(step.stats.far_bytes)});
    return r;
  };
  decl.prepare = GAUGE_CUDA_ONLY([policy, kind](const OptimizedArgs& a) -> std::shared_ptr<void> {
    const auto schedule = gauge::checkpoint::plan(a.point.dim("n"), spec_of(policy, a.point));
    return std::make_shared<optimized::checkpoint::ChainExecutor>(
        a.session.blas_lt(), case_layout(kind), schedule, [&a](size_t bytes) { return a.session.workspace(bytes); });
  });
  decl.optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
    a.state<optimized::checkpoint::ChainExecutor>().run(a.in<float>(0), a.in<float>(1), a.in<float>(2), a.out<float>(0),
                                                        a.out<float>(1), a.out<float>(2), a.stream);
  });
  decl.params = [policy, kind](const Point& p) {
    const BlockLayout L = case_layout(kind);
    const auto spec = spec_of(policy, p);
    Params params = {{"policy", std::string(gauge::checkpoint::policy_name(policy))},
                     {"block", std::string(block_name(kind))},
                     {"rows", L.rows},
                     {"width", L.width},
                     {"hidden", L.hidden},
                     {"activation", std::string(L.activation == 0 ? "relu" : "gelu_tanh")},
                     {"dropout", static_cast<double>(L.dropout)},
                     {"dropout_seed", static_cast<int64_t>(L.seed)},
                     {"rmsnorm_eps", static_cast<double>(L.eps)},
                     {"param_count", L.param_count()},
                     {"planned_forwards", gauge::checkpoint::predict(p.dim("n"), spec).forwards}};
    return params;
  };
  return register_case(std::move(decl));
}

[[maybe_unused]] const bool registered = [] {
  for (BlockKind kind : {BlockKind::linear, BlockKind::residual_mlp}) {
    for (Policy policy : {Policy::store_all, Policy::recompute_all, Policy::uniform_segments, Policy::sqrt_segments,
                          Policy::revolve, Policy::offload}) {
      declare(policy, kind);
    }
  }
  return true;
}();

}  // namespace
}  // namespace gauge::suites::checkpoint
