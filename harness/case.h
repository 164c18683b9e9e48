// A case is declared once: its shape grid, its FLOP and byte model, its tolerance rule, its inputs
// (from the counter-based RNG) and its two implementations. The same declaration drives the ctest
// conformance check, the benchmark and the result record. Registering is one call:
//
//   GAUGE_REGISTER_CASE({.suite = "precision", .name = "cast_f32_to_bf16", ...});
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "harness/dtype.h"
#include "harness/stream.h"
#include "harness/tensor.h"
#include "harness/tolerance.h"

namespace gauge {

struct Point {
  std::string shape;  // label, e.g. "n=67108864"
  std::vector<std::pair<std::string, int64_t>> dims;
  DType dtype = DType::f32;
  bool quick = true;  // part of ctest's conformance run and of `--quick` benchmark runs

  int64_t dim(std::string_view name) const;  // throws when absent
  std::string label() const;                 // "n=67108864 bf16"
};

// The shape grid crossed with dtypes: one Point per (shape, dtype).
struct ShapeSpec {
  std::vector<std::pair<std::string, int64_t>> dims;
  bool quick = true;
};
std::vector<Point> grid(const std::vector<ShapeSpec>& shapes, const std::vector<DType>& dtypes);

enum class Bound : uint8_t { memory, compute };

// A quantity a case measures besides time and memory (block forward evaluations, skipped steps,
// bytes copied to host memory, ...), recorded beside the model's prediction of it.
struct Counter {
  std::string name;
  double value = 0;
};

struct CostModel {
  double flops = 0;  // useful floating-point operations of one call
  double bytes = 0;  // fewest device-memory bytes one call must move: inputs read once, outputs written once
  Bound bound = Bound::memory;
  DType math_dtype = DType::f32;  // whose dense peak MFU is measured against (compute-bound cases)
  int64_t predicted_host_peak_bytes = 0;    // reference side, counting allocator
  int64_t predicted_device_peak_bytes = 0;  // optimized side, harness pool
  std::vector<Counter> predicted_counters;  // matched by name with the measured counters
};

struct ReferenceResult {
  // What the optimized side must reproduce, in order (for the faithful rule: the fp64 truth).
  std::vector<HostTensor> outputs;
  // Faithful low-precision reference outputs, same order; needed for outputs judged by the faithful
  // rule (an output under another rule may leave its slot default-constructed).
  std::vector<HostTensor> faithful;
  // Quantities the reference measured while it ran (taken from the first call, not the timed ones).
  std::vector<Counter> counters;
};

struct DeviceTensor {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  void* ptr = nullptr;
  size_t bytes = 0;
  int64_t numel() const { return element_count(shape); }
};

namespace gpu {
class Session;
}

struct OptimizedArgs {
  const Point& point;
  const std::vector<DeviceTensor>& inputs;
  const std::vector<DeviceTensor>& outputs;
  StreamHandle stream;
  gpu::Session& session;  // workspaces come from the harness pool
  void* prepared = nullptr;  // what CaseDecl::prepare returned for this point, if the case has one

  template <class T>
  T& state() const {
    return *static_cast<T*>(prepared);
  }

  template <class T>
  const T* in(size_t i) const {
    return static_cast<const T*>(inputs.at(i).ptr);
  }
  template <class T>
  T* out(size_t i) const {
    return static_cast<T*>(outputs.at(i).ptr);
  }
};

// Hyper-parameters of one point (lr, betas, eps, scale, block size, ...), exported with the
// conformance vectors so that another implementation can reproduce the call.
using ParamValue = std::variant<int64_t, double, bool, std::string>;
using Params = std::vector<std::pair<std::string, ParamValue>>;
using ParamsFn = std::function<Params(const Point&)>;

using InputFn = std::function<std::vector<HostTensor>(const Point&, uint64_t seed)>;
using ReferenceFn = std::function<ReferenceResult(const Point&, const std::vector<HostTensor>&)>;
using ModelFn = std::function<CostModel(const Point&)>;
using ToleranceFn = std::function<ToleranceRule(const Point&)>;
// The rule of one output, by its name (outputs of one call can differ in accumulation depth and in
// magnitude: dx, dW and dbias of a Linear backward; parameters and second moments of an optimizer).
using OutputToleranceFn = std::function<ToleranceRule(const Point&, const std::string& output)>;
// Enqueues the optimized computation on args.stream; must not synchronize (it is timed with events).
using OptimizedFn = std::function<void(const OptimizedArgs&)>;
// Untimed device setup of one point, run once after the inputs are uploaded and the outputs
// allocated, before the conformance check and the timing: plans, library descriptors and algorithm
// choices, one-time copies. It may enqueue work on args.stream and allocate from the pool (counted
// in the measured peak). What it returns lives until the point is done and reaches every
// `optimized` call as args.prepared.
using PrepareFn = std::function<std::shared_ptr<void>(const OptimizedArgs&)>;

struct CaseDecl {
  std::string suite;
  std::string name;
  std::string description;
  std::vector<Point> points;
  ModelFn model;
  ToleranceFn tolerance;  // the point's rule: every output's, unless output_tolerance is given
  InputFn inputs;
  ReferenceFn reference;
  OptimizedFn optimized;  // empty in builds without CUDA: wrap it in GAUGE_CUDA_ONLY(...)
  ParamsFn params;        // optional: hyper-parameters beyond the point's dims and dtype
  PrepareFn prepare;      // optional: untimed per-point device setup (GAUGE_CUDA_ONLY as well)
  OutputToleranceFn output_tolerance;  // optional: a rule per output, replacing `tolerance` for each

  std::string full_name() const { return suite + "/" + name; }
};

// The rule that judges output `output` (its name) of a point: output_tolerance when the case has one,
// else the point's rule.
ToleranceRule output_rule(const CaseDecl& decl, const Point& point, const std::string& output);
// One rule per reference output, in order. Throws std::logic_error when an output under the faithful
// rule has no faithful reference output of its shape (a declaration bug, not bad input).
std::vector<ToleranceRule> output_rules(const CaseDecl& decl, const Point& point, const ReferenceResult& reference);

// Validates and stores the declaration; returns true so it can initialize a static.
bool register_case(CaseDecl decl);
const std::vector<CaseDecl>& all_cases();
std::vector<std::string> suite_names();
const CaseDecl* find_case(std::string_view full_name);

// Cases of `suite` (all when empty) whose "suite/name point-label" matches `filter` (ECMAScript regex,
// searched). Unknown suite, bad regex or nothing selected: UsageError.
struct Selection {
  const CaseDecl* decl;
  std::vector<const Point*> points;
};
std::vector<Selection> select_cases(const std::string& suite, const std::string& filter, bool quick_only);

std::string record_name(const CaseDecl& decl, const Point& point);  // "precision/cast_f32_to_bf16/n=1024/bf16"

}  // namespace gauge

#define GAUGE_CONCAT_INNER(a, b) a##b
#define GAUGE_CONCAT(a, b) GAUGE_CONCAT_INNER(a, b)
#define GAUGE_REGISTER_CASE(...) \
  [[maybe_unused]] static const bool GAUGE_CONCAT(gauge_registered_case_, __LINE__) = ::gauge::register_case(::gauge::CaseDecl __VA_ARGS__)

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#define GAUGE_CUDA_ONLY(...) __VA_ARGS__
#else
#define GAUGE_CUDA_ONLY(...) nullptr
#endif
