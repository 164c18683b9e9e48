// nn layers, declared once per layer and direction: Linear (cuBLASLt), bias + activation, activation
// backward, LayerNorm, RMSNorm, softmax cross-entropy and dropout. Quick points are small and ragged
// (ctest); the full points are LLM-sized rows (8192 x 4096) for the benchmarks, except Linear, whose
// fp64-loop reference bounds its full point to 2048^3.
//
// Tolerances (harness/tolerance.h), derived per case below:
// - bit-exact where both sides round the same operations once (relu, dropout, bias add);
// - ULPs for gelu_tanh / silu forward, from expf's 2-ulp bound (CUDA Programming Guide, single-
//   precision mathematical functions table) and the roundings of optimized/nn/activation.cuh;
// - accumulation(out, acc, depth, magnitude) for everything that sums;
// - faithful (no worse than twice a plain fp32 / bf16 reference) where cancellation makes a relative
//   bound meaningless (activation derivatives near their zeros) or the output is bf16 after an fp32 sum.
//
// bf16 points (issue #3: the layers checked in the precision the GPU bf16 recipe runs them in) store
// activations, their gradients and the weights a layer reads in bf16; math, statistics and parameter
// gradients stay fp32. Outputs then differ in format, so those points judge each output by its own
// rule (CaseDecl::output_tolerance):
// - a bf16 output after fp32 math: faithful, factor 2, against the fp64 truth computed from the same
//   bf16 inputs; the faithful reference is a plain fp32 evaluation in index order from the bf16 inputs,
//   rounded once to bf16 where the kernel rounds (its store), written here and sharing nothing with
//   optimized/;
// - an fp32 output (statistics, dW, dbias, dgamma, dbeta, losses): the accumulation rule with the real
//   depth. bf16 values are exact fp32 values and bf16 x bf16 products are exact in fp32 (8 + 8
//   significand bits), so only the fp32 roundings count, as in the f32 points.
// Every bf16 point also carries a plain fp32 evaluation of its fp32 outputs in the faithful slot (not
// used by the accumulation rule): points_test.cc checks that it meets the rule, i.e. that the rule can
// be met by straightforward fp32 code and is not loose by construction of a wrong reference.
#include <algorithm>
#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/inputs.h"
#include "optimized/nn/launch.h"  // plain C++: the column-sum plan, for the device-memory model
#include "reference/nn/layers.h"
#include "reference/precision/casts.h"
#if GAUGE_HAS_CUDA
#include "harness/gpu.h"
#include "optimized/nn/layers.h"
#endif

namespace gauge::suites::nn {
namespace {

namespace ref = gauge::reference::nn;
namespace precision = gauge::reference::precision;
using ref::Activation;

constexpr float kDropoutP = 0.1f;
constexpr uint64_t kDropoutSeed = 0x5eed;
constexpr uint32_t kDropoutKey = 7;
constexpr float kLossScale = 1024.0f;

// ---- Tensors ------------------------------------------------------------------------------------------

// fp32 uniform values, stored as `dtype` (bf16: rounded to nearest even by the reference cast).
HostTensor uniform(const std::string& name, Shape shape, DType dtype, uint64_t seed, uint32_t id, float low, float high) {
  HostTensor f = inputs::uniform_f32(name, std::move(shape), seed, id, low, high);
  if (dtype == DType::f32) return f;
  HostTensor narrow(name, dtype, f.shape());
  precision::cast_f32_to_bf16(f.view<float>(), narrow.view<uint16_t>());
  return narrow;
}

// The values of an f32 or bf16 tensor as fp32 (counted buffer).
mem::HostVector<float> values(const HostTensor& t) {
  mem::HostVector<float> v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::f32) {
    std::copy(t.view<float>().begin(), t.view<float>().end(), v.begin());
  } else {
    precision::cast_bf16_to_f32(t.view<uint16_t>(), v);
  }
  return v;
}

// The same without a copy of f32 tensors: a view of an f32 tensor, a converted (counted) copy of a bf16
// one, so that f32 points measure no conversion buffer.
class Fp32Values {
 public:
  explicit Fp32Values(const HostTensor& t) {
    if (t.dtype() == DType::f32) {
      view_ = t.view<float>();
      return;
    }
    copy_.resize(static_cast<size_t>(t.numel()));
    precision::cast_bf16_to_f32(t.view<uint16_t>(), copy_);
    view_ = copy_;
  }
  Fp32Values(const Fp32Values&) = delete;
  Fp32Values& operator=(const Fp32Values&) = delete;

  operator std::span<const float>() const { return view_; }
  const float* data() const { return view_.data(); }
  size_t size() const { return view_.size(); }
  float operator[](size_t i) const { return view_[i]; }

 private:
  mem::HostVector<float> copy_;
  std::span<const float> view_;
};

// fp32 values stored as `dtype` (bf16: one round to nearest even).
HostTensor stored(const std::string& name, Shape shape, DType dtype, std::span<const float> v) {
  HostTensor t(name, dtype, std::move(shape));
  if (dtype == DType::f32) {
    std::copy(v.begin(), v.end(), t.view<float>().begin());
  } else {
    precision::cast_f32_to_bf16(v, t.view<uint16_t>());
  }
  return t;
}

HostTensor f32_tensor(const std::string& name, Shape shape, std::span<const float> v) {
  return stored(name, std::move(shape), DType::f32, v);
}

size_t at(int64_t i) { return static_cast<size_t>(i); }

// The rule of an fp32 output of a bf16 point, with why its depth and magnitude are what they are.
ToleranceRule fp32_output_rule(int64_t depth, double magnitude, const std::string& why) {
  ToleranceRule rule = tolerance::accumulation(DType::f32, DType::f32, depth, magnitude);
  rule.derivation += "; " + why;
  return rule;
}

ToleranceRule bf16_output_rule(const std::string& what) {
  return tolerance::faithful(2.0, 0.0,
                             "bf16 output of fp32 math: no worse than twice a plain fp32 evaluation in index order from "
                             "the bf16 inputs, rounded once to bf16 where the kernel stores, against the fp64 truth; " +
                                 what);
}

HostTensor labels_tensor(int64_t rows, int64_t classes, uint64_t seed) {
  const HostTensor words = inputs::philox_u32("labels", {rows}, seed, 9);
  HostTensor labels("labels", DType::i32, {rows});
  for (int64_t r = 0; r < rows; ++r) {
    labels.view<int32_t>()[r] = static_cast<int32_t>(words.view<uint32_t>()[r] % static_cast<uint32_t>(classes));
  }
  return labels;
}

ref::LinearShape linear_shape(const Point& p) { return {p.dim("rows"), p.dim("in"), p.dim("out")}; }
ref::NormShape norm_shape(const Point& p) { return {p.dim("rows"), p.dim("cols"), 1e-5f}; }

std::vector<Point> points(std::vector<ShapeSpec> shapes, std::vector<DType> dtypes) { return grid(shapes, dtypes); }

double bytes_of(DType t) { return static_cast<double>(dtype_size(t)); }

CostModel memory_model(double bytes, double flops, int64_t host_peak, int64_t device_peak) {
  CostModel m;
  m.bytes = bytes;
  m.flops = flops;
  m.bound = Bound::memory;
  m.predicted_host_peak_bytes = host_peak;
  m.predicted_device_peak_bytes = device_peak;
  return m;
}

#if GAUGE_HAS_CUDA
// Scratch taken once per point in `prepare` (untimed): the pool hands out a new block per request, so
// the timed calls must reuse this one.
struct Scratch {
  void* ptr = nullptr;
};
std::shared_ptr<void> prepare_scratch(const OptimizedArgs& a, size_t bytes) {
  auto s = std::make_shared<Scratch>();
  s->ptr = bytes == 0 ? nullptr : a.session.workspace(bytes);
  return s;
}

struct PreparedLinear {
  std::unique_ptr<optimized::nn::LinearPlan> plan;
  void* workspace = nullptr;
};
std::shared_ptr<void> prepare_linear(const OptimizedArgs& a, DType storage) {
  auto p = std::make_shared<PreparedLinear>();
  p->plan = std::make_unique<optimized::nn::LinearPlan>(a.session.blas_lt(), linear_shape(a.point), storage, true);
  const size_t bytes = p->plan->workspace_bytes();
  p->workspace = bytes == 0 ? nullptr : a.session.workspace(bytes);
  return p;
}
#endif

// ---- Linear -------------------------------------------------------------------------------------------
// Inputs uniform in [-1, 1): |x w| <= 1 per product, so sum_i |x_i w_i| + |b| <= in + 1 bounds every
// forward sum (magnitude), depth in + 1. Backward: dx sums `out` products, dw and dbias `rows`, each
// product <= 1 in magnitude.
// in == 0 is a Linear without input features: y = bias broadcast (an empty sum plus the bias), dx and
// dw have no elements, dbias = column sums of dy; the harness carries the zero-size tensors through.

const std::vector<ShapeSpec> kLinearShapes = {
    {{{"rows", 64}, {"in", 96}, {"out", 80}}, true},
    {{{"rows", 1}, {"in", 33}, {"out", 17}}, true},  // one row, odd sizes
    {{{"rows", 16}, {"in", 0}, {"out", 24}}, true},  // no input features: 16-byte bias broadcast
    {{{"rows", 3}, {"in", 0}, {"out", 17}}, true},   // no input features, ragged rows: scalar broadcast
    {{{"rows", 2048}, {"in", 2048}, {"out", 2048}}, false},
};

// The faithful low-precision forward for bf16: fp32 accumulation in index order, one bf16 rounding.
mem::HostVector<float> linear_forward_fp32_accumulation(const ref::LinearShape& s, std::span<const float> x,
                                                        std::span<const float> w, std::span<const float> b) {
  mem::HostVector<float> y(static_cast<size_t>(s.rows * s.out));
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int64_t o = 0; o < s.out; ++o) {
      float sum = 0.0f;
      for (int64_t i = 0; i < s.in; ++i) sum += x[static_cast<size_t>(r * s.in + i)] * w[static_cast<size_t>(o * s.in + i)];
      y[static_cast<size_t>(r * s.out + o)] = sum + b[static_cast<size_t>(o)];
    }
  }
  return y;
}

// The faithful low-precision backward: every sum in fp32 in index order (dx over o, dw and dbias over
// r), from the same (bf16) values; the caller rounds dx to its storage, dw and dbias stay fp32.
struct LinearGradientsFp32 {
  mem::HostVector<float> dx, dw, dbias;
};
LinearGradientsFp32 linear_backward_fp32_accumulation(const ref::LinearShape& s, std::span<const float> x,
                                                      std::span<const float> w, std::span<const float> dy) {
  LinearGradientsFp32 g{mem::HostVector<float>(at(s.rows * s.in)), mem::HostVector<float>(at(s.out * s.in)),
                        mem::HostVector<float>(at(s.out))};
  // Row accumulators walk contiguous memory; each element's sum still runs in index order.
  for (int64_t r = 0; r < s.rows; ++r) {
    float* dxr = g.dx.data() + r * s.in;
    std::fill(dxr, dxr + s.in, 0.0f);
    for (int64_t o = 0; o < s.out; ++o) {
      const float d = dy[at(r * s.out + o)];
      const float* wo = w.data() + o * s.in;
      for (int64_t i = 0; i < s.in; ++i) dxr[i] += d * wo[i];
    }
  }
  std::fill(g.dw.begin(), g.dw.end(), 0.0f);
  std::fill(g.dbias.begin(), g.dbias.end(), 0.0f);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x.data() + r * s.in;
    for (int64_t o = 0; o < s.out; ++o) {
      const float d = dy[at(r * s.out + o)];
      float* dwo = g.dw.data() + o * s.in;
      for (int64_t i = 0; i < s.in; ++i) dwo[i] += d * xr[i];
      g.dbias[at(o)] += d;
    }
  }
  return g;
}

// The plan's device scratch (LinearPlan::workspace_bytes, one block for forward and backward):
// cuBLASLt's workspace, at most its 32 MiB cap, when there is a matmul, and the dbias column-sum
// partials.
int64_t linear_scratch(const ref::LinearShape& s) {
  if (s.rows == 0 || s.out == 0) return 0;
  const int64_t chunks = std::max(optimized::nn::launch::column_plan(s.rows, s.out, 4).chunks,
                                  optimized::nn::launch::column_plan(s.rows, s.out, 2).chunks);
  return (s.in > 0 ? (int64_t{32} << 20) : 0) + 4 * chunks * s.out;
}

CostModel linear_forward_model(const Point& p) {
  const auto s = linear_shape(p);
  const double e = bytes_of(p.dtype);
  CostModel m;
  m.flops = 2.0 * static_cast<double>(s.rows * s.in * s.out);
  m.bytes = e * static_cast<double>(s.rows * s.in + s.out * s.in + s.out + s.rows * s.out);
  // Without input features the layer is a broadcast of the bias: a store stream, no matmul.
  m.bound = s.in > 0 ? Bound::compute : Bound::memory;
  m.math_dtype = p.dtype;
  // Host: the inputs, the fp32 truth (a buffer and its tensor); for bf16 also the inputs' fp32 values,
  // the fp32 faithful sums and their bf16 rounding.
  const int64_t inputs = s.rows * s.in + s.out * s.in + s.out, outputs = s.rows * s.out;
  const auto element = static_cast<int64_t>(dtype_size(p.dtype));
  const int64_t narrow = p.dtype == DType::f32 ? 0 : 1;
  m.predicted_host_peak_bytes = element * inputs + 8 * outputs + narrow * (4 * inputs + 6 * outputs);
  m.predicted_device_peak_bytes = static_cast<int64_t>(m.bytes) + linear_scratch(s);
  return m;
}

[[maybe_unused]] const bool linear_forward_registered = register_case({
    .suite = "nn",
    .name = "linear_forward",
    .description = "y = x W^T + b (cuBLASLt, bias epilogue); fp32 in true fp32, bf16 on tensor cores with fp32 accumulation",
    .points = points(kLinearShapes, {DType::f32, DType::bf16}),
    .model = linear_forward_model,
    .tolerance =
        [](const Point& p) {
          const int64_t in = p.dim("in");
          if (p.dtype == DType::f32) return tolerance::accumulation(DType::f32, DType::f32, in + 1, static_cast<double>(in + 1));
          return tolerance::faithful(2.0, 0.0,
                                     "bf16 output of an fp32-accumulated sum: no worse than twice a plain fp32-accumulation "
                                     "reference rounded once to bf16, against the fp64 sum");
        },
    .inputs =
        [](const Point& p, uint64_t seed) {
          const auto s = linear_shape(p);
          return std::vector<HostTensor>{uniform("x", {s.rows, s.in}, p.dtype, seed, 1, -1, 1),
                                         uniform("w", {s.out, s.in}, p.dtype, seed, 2, -1, 1),
                                         uniform("bias", {s.out}, p.dtype, seed, 3, -1, 1)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = linear_shape(p);
          const Fp32Values x(in[0]), w(in[1]), b(in[2]);
          mem::HostVector<float> y(static_cast<size_t>(s.rows * s.out));
          ref::linear_forward(s, x, w, b, y);
          ReferenceResult r;
          r.outputs.push_back(f32_tensor("y", {s.rows, s.out}, y));
          if (p.dtype != DType::f32) {
            const auto faithful = linear_forward_fp32_accumulation(s, x, w, b);
            r.faithful.push_back(stored("y", {s.rows, s.out}, p.dtype, faithful));
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const auto& p = a.state<PreparedLinear>();
      p.plan->forward(a.inputs[0].ptr, a.inputs[1].ptr, a.inputs[2].ptr, a.outputs[0].ptr, p.workspace, a.stream);
    }),
    .prepare = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) { return prepare_linear(a, a.point.dtype); }),
});

// f32, each output at its own depth (cuBLASLt CUBLAS_COMPUTE_32F: true fp32 FMA, split-K only with fp32
// partials, alpha = 1 and beta = 0 exact; any summation tree over N products is within gamma_N of sum
// |terms|, over N plain values within gamma_{N-1}); inputs in [-1, 1), so each term is < 1 in magnitude:
// - dx [rows, in] sums `out` products dy w: depth out, magnitude out;
// - dw [out, in] sums `rows` products dy x: depth rows, magnitude rows; one row: one product rounded
//   once by the FMA (fma(dy, x, 0)), the fp64 product of two fp32 values rounded once by the reference:
//   bit-exact;
// - dbias sums `rows` values dy (columns.cu: per-lane chunk sums, warps in order, partials in order: a
//   tree of rows leaves and exact zeros): depth rows - 1, magnitude rows; one row: 0 + dy, exact.
// bf16 (x, w, dy, dx in bf16; dw, dbias fp32 from the fp32 accumulators): dx is a bf16 output (faithful);
// dw and dbias are fp32 sums of `rows` exact products (bf16 x bf16 fits fp32), each <= 1 in magnitude:
// depth rows, magnitude rows.
ToleranceRule exact_single_rounding(const std::string& why) {
  ToleranceRule rule = tolerance::exact_bits();
  rule.derivation += "; " + why;
  return rule;
}

ToleranceRule linear_backward_f32_rule(const Point& p, const std::string& output) {
  const int64_t rows = p.dim("rows"), out = p.dim("out");
  if (output == "dx") {
    return fp32_output_rule(out, static_cast<double>(out),
                            "dx sums `out` products dy w, each < 1 in magnitude (fp32 FMA, any tree): depth and magnitude out");
  }
  if (output == "dw") {
    if (rows == 1) return exact_single_rounding("dw with one row: the product dy x, rounded once on both sides");
    return fp32_output_rule(rows, static_cast<double>(rows),
                            "dw sums `rows` products dy x, each < 1 in magnitude (fp32 FMA, any tree): depth and magnitude rows");
  }
  if (rows == 1) return exact_single_rounding("dbias with one row: dy itself (0 + dy on the device, exact)");
  return fp32_output_rule(std::max<int64_t>(rows - 1, 0), static_cast<double>(rows),
                          "dbias sums `rows` values |dy| < 1 (a fixed tree: rows - 1 additions on any path): depth rows - 1, "
                          "magnitude rows");
}

ToleranceRule linear_backward_rule(const Point& p, const std::string& output) {
  if (p.dtype == DType::f32) return linear_backward_f32_rule(p, output);
  if (output == "dx") return bf16_output_rule("dx sums `out` exact products in fp32, rounded once at the store");
  const int64_t rows = std::max<int64_t>(p.dim("rows"), 1);
  if (output == "dw") {
    return fp32_output_rule(rows, static_cast<double>(rows),
                            "dw sums `rows` products of bf16 values (exact in fp32), each <= 1 in magnitude, in the "
                            "fp32 cuBLASLt accumulators: depth and magnitude rows");
  }
  return fp32_output_rule(rows, static_cast<double>(rows),
                          "dbias sums `rows` bf16 values |dy| < 1 in fp32 (the column-sum tree): depth and magnitude rows");
}

[[maybe_unused]] const bool linear_backward_registered = register_case({
    .suite = "nn",
    .name = "linear_backward",
    .description = "dx = dy W, dw = dy^T x (cuBLASLt, fp32 dw), dbias = column sums of dy (deterministic two-stage, fp32)",
    .points = points(kLinearShapes, {DType::f32, DType::bf16}),
    .model =
        [](const Point& p) {
          const auto s = linear_shape(p);
          const double e = bytes_of(p.dtype);
          CostModel m;
          m.flops = 4.0 * static_cast<double>(s.rows * s.in * s.out) + static_cast<double>(s.rows * s.out);
          // Reads x, w, dy in the storage dtype; writes dx in it, dw and dbias in fp32.
          m.bytes = e * static_cast<double>(2 * s.rows * s.in + s.out * s.in + s.rows * s.out) +
                    4.0 * static_cast<double>(s.out * s.in + s.out);
          m.bound = s.in > 0 ? Bound::compute : Bound::memory;
          m.math_dtype = p.dtype;
          // Host, f32: inputs and outputs, + the reference's double row accumulator. bf16: the inputs, their
          // fp32 values, the fp32 truth, then (after the reference's accumulator is gone) the fp32 faithful
          // gradients and their tensors (dx rounded to bf16).
          const int64_t inputs = s.rows * s.in + s.out * s.in + s.rows * s.out;
          const int64_t gradients = s.rows * s.in + s.out * s.in + s.out;
          m.predicted_host_peak_bytes =
              p.dtype == DType::f32
                  ? static_cast<int64_t>(m.bytes) + 8 * std::max(s.in, s.rows)
                  : 6 * inputs + 8 * gradients + 2 * s.rows * s.in + 4 * (s.out * s.in + s.out);
          m.predicted_device_peak_bytes = static_cast<int64_t>(m.bytes) + linear_scratch(s);
          return m;
        },
    .tolerance = [](const Point& p) { return linear_backward_rule(p, "dx"); },
    .inputs =
        [](const Point& p, uint64_t seed) {
          const auto s = linear_shape(p);
          return std::vector<HostTensor>{uniform("x", {s.rows, s.in}, p.dtype, seed, 1, -1, 1),
                                         uniform("w", {s.out, s.in}, p.dtype, seed, 2, -1, 1),
                                         uniform("dy", {s.rows, s.out}, p.dtype, seed, 4, -1, 1)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = linear_shape(p);
          const Fp32Values x(in[0]), w(in[1]), dy(in[2]);
          HostTensor dx("dx", DType::f32, {s.rows, s.in}), dw("dw", DType::f32, {s.out, s.in}), db("dbias", DType::f32, {s.out});
          ref::linear_backward(s, x, w, dy, dx.view<float>(), dw.view<float>(), db.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(dx));
          r.outputs.push_back(std::move(dw));
          r.outputs.push_back(std::move(db));
          if (p.dtype != DType::f32) {
            const LinearGradientsFp32 g = linear_backward_fp32_accumulation(s, x, w, dy);
            r.faithful.push_back(stored("dx", {s.rows, s.in}, p.dtype, g.dx));
            r.faithful.push_back(f32_tensor("dw", {s.out, s.in}, g.dw));
            r.faithful.push_back(f32_tensor("dbias", {s.out}, g.dbias));
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const auto& p = a.state<PreparedLinear>();
      p.plan->backward(a.inputs[0].ptr, a.inputs[1].ptr, a.inputs[2].ptr, a.outputs[0].ptr, a.out<float>(1),
                       a.out<float>(2), p.workspace, a.stream);
    }),
    .prepare = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) { return prepare_linear(a, a.point.dtype); }),
    .output_tolerance = linear_backward_rule,
});

// ---- Pointwise ------------------------------------------------------------------------------------------

const std::vector<ShapeSpec> kPointwiseShapes = {
    {{{"rows", 64}, {"cols", 1024}}, true},
    {{{"rows", 33}, {"cols", 771}}, true},  // cols not a multiple of 4 or 8: the scalar path
    {{{"rows", 8192}, {"cols", 4096}}, false},
};

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::relu:
      return "relu";
    case Activation::gelu_tanh:
      return "gelu_tanh";
    case Activation::silu:
      return "silu";
  }
  return "?";
}

// Forward: z = x + b is one fp32 addition on both sides (identical); relu then copies or zeroes it:
// bit-exact. gelu_tanh / silu: the device error of optimized/nn/activation.cuh (62 u and 7 u relative,
// u = 2^-24, with |z| <= 4 here) plus the reference's one rounding (1 u); a relative error of k u is at
// most k ulps of the output. bf16 storage: two fp32 values that close round to bf16 values at most one
// bf16 ulp apart.
ToleranceRule bias_activation_rule(Activation a, DType dtype) {
  if (a == Activation::relu) return tolerance::exact_bits();
  if (dtype == DType::bf16) {
    return tolerance::ulps(1, "fp32 results within 64 fp32 ulps of each other round to bf16 values at most 1 bf16 ulp apart");
  }
  if (a == Activation::silu) {
    return tolerance::ulps(8, "silu = z sigmoid(z): expf 2 ulp (4 u, CUDA Programming Guide) + add, div, mul (1 u each) "
                              "+ the reference's rounding (1 u) = 8 u relative <= 8 ulps");
  }
  return tolerance::ulps(64, "gelu_tanh = z sigmoid(a), a = z (k2 + kc2 z^2): expf 4 u + 3 u roundings, plus 5 u relative "
                             "in a amplified by |a| <= 11 (|z| <= 4) through exp = 55 u, + the reference's 1 u: 63 u");
}

bool declare_bias_activation(Activation act) {
  return register_case({
      .suite = "nn",
      .name = std::string("bias_") + activation_name(act) + "_forward",
      .description = std::string("y = ") + activation_name(act) + "(x + bias), fused, 16-byte vectors",
      .points = points(kPointwiseShapes, {DType::f32, DType::bf16}),
      .model =
          [](const Point& p) {
            const int64_t n = p.dim("rows") * p.dim("cols");
            const double e = bytes_of(p.dtype);
            return memory_model(e * static_cast<double>(2 * n + p.dim("cols")), 2.0 * static_cast<double>(n),
                                static_cast<int64_t>(e) * (2 * n + p.dim("cols")) + 8 * n,
                                static_cast<int64_t>(e) * (2 * n + p.dim("cols")));
          },
      .tolerance = [act](const Point& p) { return bias_activation_rule(act, p.dtype); },
      .inputs =
          [](const Point& p, uint64_t seed) {
            const int64_t rows = p.dim("rows"), cols = p.dim("cols");
            return std::vector<HostTensor>{uniform("x", {rows, cols}, p.dtype, seed, 1, -3, 3),
                                           uniform("bias", {cols}, p.dtype, seed, 3, -1, 1)};
          },
      .reference =
          [act](const Point& p, const std::vector<HostTensor>& in) {
            const int64_t rows = p.dim("rows"), cols = p.dim("cols");
            auto z = values(in[0]);
            const auto b = values(in[1]);
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t c = 0; c < cols; ++c) z[static_cast<size_t>(r * cols + c)] += b[static_cast<size_t>(c)];
            }
            mem::HostVector<float> y(z.size());
            ref::activation_forward(act, z, y);
            ReferenceResult r;
            r.outputs.push_back(stored("y", {rows, cols}, p.dtype, y));
            return r;
          },
      .optimized = GAUGE_CUDA_ONLY([act](const OptimizedArgs& a) {
        optimized::nn::bias_activation_forward(act, {a.point.dim("rows"), a.point.dim("cols")}, a.point.dtype,
                                               a.inputs[0].ptr, a.inputs[1].ptr, a.outputs[0].ptr, a.stream);
      }),
      .params = [act](const Point&) { return Params{{"activation", std::string(activation_name(act))}}; },
  });
}

[[maybe_unused]] const bool bias_relu_registered = declare_bias_activation(Activation::relu);
[[maybe_unused]] const bool bias_gelu_registered = declare_bias_activation(Activation::gelu_tanh);
[[maybe_unused]] const bool bias_silu_registered = declare_bias_activation(Activation::silu);

// The faithful fp32 derivative: the reference's formulas evaluated in float.
float derivative_fp32(Activation a, float x) {
  switch (a) {
    case Activation::relu:
      return x > 0.0f ? 1.0f : 0.0f;
    case Activation::gelu_tanh: {
      const float k = 0.7978845608f, c = 0.044715f;
      const float t = std::tanh(k * (x + c * x * x * x));
      return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
    }
    case Activation::silu: {
      const float s = 1.0f / (1.0f + std::exp(-x));
      return s * (1.0f + x * (1.0f - s));
    }
  }
  return 0.0f;
}

bool declare_activation_backward(Activation act) {
  return register_case({
      .suite = "nn",
      .name = std::string(activation_name(act)) + "_backward",
      .description = std::string("dx = dy * ") + activation_name(act) + "'(x)",
      .points = points(kPointwiseShapes, {DType::f32, DType::bf16}),
      .model =
          [act](const Point& p) {
            const int64_t n = p.dim("rows") * p.dim("cols");
            const auto e = static_cast<int64_t>(dtype_size(p.dtype));
            // Reads x, dy, writes dx, all in the storage dtype. Host: x, dy, the fp32 truth, the fp32
            // faithful output (gelu/silu); for bf16 also the fp32 values of x and dy and the output in bf16.
            const int64_t faithful = act == Activation::relu ? 0 : 4 * n;
            const int64_t narrow = p.dtype == DType::f32 ? 0 : 1;
            return memory_model(3.0 * static_cast<double>(e * n), 2.0 * static_cast<double>(n),
                                2 * e * n + 4 * n + faithful + narrow * (8 * n + 2 * n), 3 * e * n);
          },
      // relu: dy * 1 or dy * 0, one exact product on both sides, and dy is already a value of the
      // storage format: bit-exact in f32 and bf16. gelu/silu: the derivatives cross zero (silu near
      // x = -1.28, gelu near -0.75), where any fp32 evaluation has an absolute, not a relative, error:
      // judged against a plain fp32 evaluation of the reference's formula (rounded once to bf16 for bf16
      // storage, as the kernel's store does).
      .tolerance =
          [act](const Point& p) {
            if (act == Activation::relu) return tolerance::exact_bits();
            if (p.dtype != DType::f32) {
              return bf16_output_rule("dx = dy * a'(x) in fp32 (the derivative has zeros where fp32 cancels), "
                                      "rounded once at the store");
            }
            return tolerance::faithful(2.0, 0.0,
                                       "the derivative has zeros where fp32 cancels: no worse than twice the reference's "
                                       "formula evaluated in fp32, against fp64");
          },
      .inputs =
          [](const Point& p, uint64_t seed) {
            const int64_t rows = p.dim("rows"), cols = p.dim("cols");
            return std::vector<HostTensor>{uniform("x", {rows, cols}, p.dtype, seed, 1, -4, 4),
                                           uniform("dy", {rows, cols}, p.dtype, seed, 4, -1, 1)};
          },
      .reference =
          [act](const Point& p, const std::vector<HostTensor>& in) {
            const int64_t rows = p.dim("rows"), cols = p.dim("cols");
            const Fp32Values x(in[0]), dy(in[1]);
            HostTensor dx("dx", DType::f32, {rows, cols});
            ref::activation_backward(act, x, dy, dx.view<float>());
            ReferenceResult r;
            if (act == Activation::relu) {
              // Bit-exact: the truth in the storage format (dy or a signed zero: exact in bf16 too).
              r.outputs.push_back(p.dtype == DType::f32 ? std::move(dx) : stored("dx", {rows, cols}, p.dtype, dx.view<float>()));
              return r;
            }
            HostTensor faithful("dx", DType::f32, {rows, cols});
            const auto f = faithful.view<float>();
            for (size_t i = 0; i < x.size(); ++i) f[i] = dy[i] * derivative_fp32(act, x[i]);
            r.outputs.push_back(std::move(dx));
            r.faithful.push_back(p.dtype == DType::f32 ? std::move(faithful) : stored("dx", {rows, cols}, p.dtype, f));
            return r;
          },
      .optimized = GAUGE_CUDA_ONLY([act](const OptimizedArgs& a) {
        optimized::nn::activation_backward(act, a.point.dim("rows") * a.point.dim("cols"), a.point.dtype, a.inputs[0].ptr,
                                           a.inputs[1].ptr, a.outputs[0].ptr, a.stream);
      }),
      .params = [act](const Point&) { return Params{{"activation", std::string(activation_name(act))}}; },
  });
}

[[maybe_unused]] const bool relu_backward_registered = declare_activation_backward(Activation::relu);
[[maybe_unused]] const bool gelu_backward_registered = declare_activation_backward(Activation::gelu_tanh);
[[maybe_unused]] const bool silu_backward_registered = declare_activation_backward(Activation::silu);

// ---- Dropout ----------------------------------------------------------------------------------------------
// Identical mask (the same Philox words and fp32 compare), one fp32 multiply (then one bf16 rounding):
// bit-exact.

const std::vector<ShapeSpec> kDropoutShapes = {
    {{{"n", (1 << 20) + 3}}, true},
    {{{"n", 8192 * 4096}}, false},
};

bool declare_dropout(bool forward) {
  return register_case({
      .suite = "nn",
      .name = forward ? "dropout_forward" : "dropout_backward",
      .description = "inverted dropout, Philox mask keyed by (seed, layer key, element), p = 0.1",
      .points = points(kDropoutShapes, {DType::f32, DType::bf16}),
      .model =
          [](const Point& p) {
            const int64_t n = p.dim("n");
            const double e = bytes_of(p.dtype);
            return memory_model(2.0 * e * static_cast<double>(n), static_cast<double>(n),
                                2 * static_cast<int64_t>(e) * n + 8 * n, 2 * static_cast<int64_t>(e) * n);
          },
      .tolerance = [](const Point&) { return tolerance::exact_bits(); },
      .inputs = [](const Point& p,
                   uint64_t seed) { return std::vector<HostTensor>{uniform("x", {p.dim("n")}, p.dtype, seed, 1, -2, 2)}; },
      .reference =
          [forward](const Point& p, const std::vector<HostTensor>& in) {
            const auto x = values(in[0]);
            mem::HostVector<float> y(x.size());
            if (forward) {
              ref::dropout_forward(kDropoutP, kDropoutSeed, kDropoutKey, x, y);
            } else {
              ref::dropout_backward(kDropoutP, kDropoutSeed, kDropoutKey, x, y);
            }
            ReferenceResult r;
            r.outputs.push_back(stored("y", {p.dim("n")}, p.dtype, y));
            return r;
          },
      .optimized = GAUGE_CUDA_ONLY([forward](const OptimizedArgs& a) {
        (forward ? optimized::nn::dropout_forward : optimized::nn::dropout_backward)(
            kDropoutP, kDropoutSeed, kDropoutKey, a.point.dim("n"), a.point.dtype, a.inputs[0].ptr, a.outputs[0].ptr,
            a.stream);
      }),
      .params =
          [](const Point&) {
            return Params{{"p", static_cast<double>(kDropoutP)},
                          {"seed", static_cast<int64_t>(kDropoutSeed)},
                          {"key", static_cast<int64_t>(kDropoutKey)}};
          },
  });
}

[[maybe_unused]] const bool dropout_forward_registered = declare_dropout(true);
[[maybe_unused]] const bool dropout_backward_registered = declare_dropout(false);

// ---- Normalizations ---------------------------------------------------------------------------------------
// x uniform in [-1, 1), gamma in [0.5, 1.5), beta in [-0.5, 0.5), dy in [-1, 1). f32 points: one rule per
// output, derived below (norm_f32_output_rule). norm_forward_rule, the former f32 rule of every forward
// output (the two passes over a row and the few roundings after them: depth 2 cols + 8; |y| <= 1.5 sqrt(3)
// + 0.5 < 4 = the magnitude), remains the bf16 LayerNorm rstd's rule.
//
// bf16 points: x, gamma, beta, dy, y and dx in bf16; mean, rstd, dgamma, dbeta in fp32. The fp32
// outputs get their own depths: the mean sums cols values and divides (depth cols + 1, magnitude
// sum |x| / cols <= 1); rstd keeps the f32 points' two-pass derivation (RMSNorm: one pass of exact
// squares, then /n, + eps, sqrt, 1/x: depth cols + 4); dgamma sums `rows` terms dy xhat, each exact
// in the fma but for xhat's two roundings (x - mean, * rstd): depth rows + 2, terms < 4 as above;
// dbeta sums `rows` bf16 values: depth and magnitude rows.

const std::vector<ShapeSpec> kNormShapes = {
    {{{"rows", 64}, {"cols", 768}}, true},
    {{{"rows", 1}, {"cols", 4096}}, true},   // one row, one block
    {{{"rows", 33}, {"cols", 771}}, true},   // ragged: scalar path
    {{{"rows", 8192}, {"cols", 4096}}, false},
};

ToleranceRule norm_forward_rule(const Point& p) {
  return tolerance::accumulation(DType::f32, DType::f32, 2 * p.dim("cols") + 8, 4.0);
}

// ---- f32 norm rules, one per output -------------------------------------------------------------------
// u = 2^-24; any tree over N terms is within gamma_{N-1} sum |terms| (gamma_N when the leaves are rounded
// products, Higham 3.1); a relative error e in v becomes e / 2 + e^2 in 1 / sqrt(v). No fast math:
// IEEE division and sqrtf. The declared rows (cols >= 768 values uniform in [-1, 1), so mean ~ 0 +- 0.02,
// variance ~ 1/3 +- 0.011) have |mean| < 0.1 and variance (or mean square) > 1/4, hence rstd < 2 and
// |xhat| < 1.1 x 2 = 2.2 (RMSNorm: |x| rstd < 2); points_test.cc checks this on the quick points.
// gamma in [0.5, 1.5), dy in [-1, 1).
//
// LayerNorm forward (norms.cu: mean = tree(x) / n; squares = tree of fma(x - mean, x - mean, .)):
// - mean: cols values, S / n = sum |x| / cols < 1: the tree's gamma_{cols-1} and the division: depth
//   cols, magnitude 1;
// - rstd: squares: 2 u per term (the difference, squared exactly in the fma) + gamma_cols (the fma tree),
//   positive terms, so relative; / n and + eps: gamma_{cols+4}; the fp32 mean's error dm (<= gamma_cols)
//   adds n dm^2, i.e. dm^2 / var <= 4 gamma_cols^2 relative; halved by the square root, + 2 roundings
//   (sqrtf, 1 / x) and the second-order terms (< 4 (cols + 4)^2 u^2): relative, magnitude 0, depth
//   ceil((cols + 4) / 2) + 4 + ceil(4 (cols + 4)^2 u);
// - y = fma((x - mean) rstd, gamma, beta): |gamma xhat| (rstd's error + 2 roundings) <= 3.3
//   gamma_{D_rstd + 2}, |gamma| rstd |dm| <= 1.5 x 2 x gamma_cols; the store's rounding is relative:
//   depth cols + D_rstd + 2, magnitude 3.3.
// RMSNorm forward: rstd as above without the mean (fma(x, x, .) exact products): ceil((cols + 2) / 2) + 4 +
// ceil((cols + 2)^2 u), relative; y = (x rstd) gamma: two roundings and rstd's error, all relative:
// depth D_rstd + 2, magnitude 0.
// Backward (mean and rstd are inputs, used as given on both sides; xhat = (x - mean) rstd: 2 roundings,
// RMSNorm 1 (x - 0 is exact); g = dy gamma: 1 rounding, |g| < 1.5):
// - LayerNorm dx = rstd (g - mean(g) - xhat mean(g xhat)): mean(g) within 1.5 gamma_{cols+1}, mean(g xhat)
//   (|.| <= 1.5 x 2.2 = 3.3) within 3.3 gamma_{cols+4}; the product xhat mean(g xhat) (<= 7.26) adds 7.26
//   (2 + 1) u, g 1.5 u, the two subtractions 3 u + 10.26 u: 8.76 gamma_{cols+4} + 36.6 u; times rstd < 2:
//   17.52 gamma_{cols+4} + 73.2 u <= 17.6 gamma_{cols+9}; depth cols + 9, magnitude 17.6;
// - RMSNorm dx = rstd (g - xhat mean(g xhat)): mean(g xhat) (<= 1.5 x 2 = 3) within 3 gamma_{cols+3}; the
//   product (<= 6) adds 6 (1 + 1) u, g 1.5 u, the subtraction 7.5 u: 6 gamma_{cols+3} + 21 u; times
//   rstd < 2: <= 12 gamma_{cols+7}; depth cols + 7, magnitude 12;
// - dgamma sums `rows` terms fma(dy, xhat, .) (per-thread chunks, row groups in order, partials in a fixed
//   order: one tree), |dy xhat| < 2.2 (RMSNorm 2), xhat's roundings on each leaf: depth rows + 2 (RMSNorm
//   rows + 1), magnitude 2.2 rows (RMSNorm 2 rows);
// - dbeta sums `rows` values |dy| < 1: depth rows - 1, magnitude rows; one row: 0 + dy, exact.
int64_t second_order_depth(double factor, int64_t n) {
  return static_cast<int64_t>(std::ceil(factor * static_cast<double>(n) * static_cast<double>(n) * unit_roundoff(DType::f32)));
}
int64_t norm_rstd_depth(int64_t cols, bool layernorm) {
  return layernorm ? (cols + 4 + 1) / 2 + 4 + second_order_depth(4.0, cols + 4)
                   : (cols + 2 + 1) / 2 + 4 + second_order_depth(1.0, cols + 2);
}

ToleranceRule norm_f32_output_rule(const Point& p, const std::string& output, bool layernorm, bool backward) {
  const int64_t rows = p.dim("rows"), cols = p.dim("cols");
  const int64_t rstd_depth = norm_rstd_depth(cols, layernorm);
  if (!backward) {
    if (output == "mean") {
      return fp32_output_rule(cols, 1.0, "mean: cols values |x| < 1 in a tree, then / cols: depth cols, magnitude 1");
    }
    if (output == "rstd") {
      return fp32_output_rule(rstd_depth, 0.0,
                              layernorm ? "rstd, relative: squares of (x - fp32 mean) gamma_{cols+2}, / n, + eps, the mean's "
                                          "error (4 gamma_cols^2 with variance > 1/4), halved by the square root, + sqrtf, "
                                          "1 / x and second-order terms: ceil((cols + 4) / 2) + 4 + ceil(4 (cols + 4)^2 u)"
                                        : "rstd, relative: fma tree of exact squares gamma_cols, / n, + eps, halved by the "
                                          "square root, + sqrtf, 1 / x and second-order terms: ceil((cols + 2) / 2) + 4 + "
                                          "ceil((cols + 2)^2 u)");
    }
    if (layernorm) {
      return fp32_output_rule(cols + rstd_depth + 2, 3.3,
                              "y = fma((x - mean) rstd, gamma, beta): |gamma xhat| < 3.3 times rstd's error + 2 roundings, "
                              "|gamma| rstd < 3 times the mean's gamma_cols: depth cols + D_rstd + 2, magnitude 3.3");
    }
    return fp32_output_rule(rstd_depth + 2, 0.0, "y = (x rstd) gamma: rstd's relative error + 2 roundings, relative");
  }
  if (output == "dx") {
    if (layernorm) {
      return fp32_output_rule(cols + 9, 17.6,
                              "dx = rstd (g - mean(g) - xhat mean(g xhat)): rstd < 2 times (1.5 gamma_{cols+1} + 7.26 "
                              "gamma_{cols+4} + 36.6 u) <= 17.6 gamma_{cols+9}");
    }
    return fp32_output_rule(cols + 7, 12.0,
                            "dx = rstd (g - xhat mean(g xhat)): rstd < 2 times (6 gamma_{cols+3} + 21 u) <= 12 gamma_{cols+7}");
  }
  if (output == "dgamma") {
    if (layernorm) {
      return fp32_output_rule(rows + 2, 2.2 * static_cast<double>(rows),
                              "dgamma: a tree of `rows` fma terms dy xhat, |dy xhat| < 2.2, xhat's 2 roundings: depth rows + "
                              "2, magnitude 2.2 rows");
    }
    return fp32_output_rule(rows + 1, 2.0 * static_cast<double>(rows),
                            "dgamma: a tree of `rows` fma terms dy xhat, |dy xhat| < 2, xhat's 1 rounding: depth rows + 1, "
                            "magnitude 2 rows");
  }
  if (rows == 1) return exact_single_rounding("dbeta with one row: dy itself (0 + dy on the device, exact)");
  return fp32_output_rule(rows - 1, static_cast<double>(rows),
                          "dbeta: a tree of `rows` values |dy| < 1: depth rows - 1, magnitude rows");
}

// The rule of one output of a norm point.
ToleranceRule norm_output_rule(const Point& p, const std::string& output, bool layernorm, bool backward) {
  if (p.dtype == DType::f32) return norm_f32_output_rule(p, output, layernorm, backward);
  const int64_t rows = p.dim("rows"), cols = p.dim("cols");
  if (output == "y") return bf16_output_rule("y = xhat gamma (+ beta) from fp32 statistics, rounded once at the store");
  if (output == "dx") {
    return bf16_output_rule("dx = rstd (g - mean(g) - xhat mean(g xhat)) from fp32 row sums, rounded once at the store");
  }
  if (output == "mean") return fp32_output_rule(cols + 1, 1.0, "mean: cols values |x| <= 1 summed, then / cols");
  if (output == "rstd") {
    if (layernorm) {
      ToleranceRule rule = norm_forward_rule(p);
      rule.derivation += "; rstd: the f32 points' two-pass derivation, on bf16 values that are exact fp32 values";
      return rule;
    }
    return fp32_output_rule(cols + 4, 4.0, "rstd: cols exact squares summed, then / cols, + eps, sqrt, 1/x; |rstd| < 4");
  }
  if (output == "dgamma") {
    return fp32_output_rule(rows + 2, 4.0 * static_cast<double>(rows),
                            "dgamma: rows terms dy xhat < 4, exact in the fma but for xhat's roundings (x - mean, * rstd: at most 2)");
  }
  return fp32_output_rule(rows, static_cast<double>(rows), output + ": rows bf16 values |dy| < 1 summed in fp32");
}

std::vector<HostTensor> norm_inputs(const Point& p, uint64_t seed, bool layernorm, bool backward) {
  const auto s = norm_shape(p);
  std::vector<HostTensor> t{uniform("x", {s.rows, s.cols}, p.dtype, seed, 1, -1, 1),
                            uniform("gamma", {s.cols}, p.dtype, seed, 5, 0.5f, 1.5f)};
  if (layernorm) t.push_back(uniform("beta", {s.cols}, p.dtype, seed, 6, -0.5f, 0.5f));
  if (!backward) return t;
  // The saved statistics come from the reference forward on the stored values: backward is checked on
  // its own.
  const Fp32Values x(t[0]), gamma(t[1]);
  mem::HostVector<float> y(at(s.rows * s.cols));
  HostTensor mean("mean", DType::f32, {s.rows}), rstd("rstd", DType::f32, {s.rows});
  if (layernorm) {
    ref::layernorm_forward(s, x, gamma, Fp32Values(t[2]), y, mean.view<float>(), rstd.view<float>());
    t.pop_back();  // backward does not read beta
    t.push_back(std::move(mean));
  } else {
    ref::rmsnorm_forward(s, x, gamma, y, rstd.view<float>());
  }
  t.push_back(std::move(rstd));
  t.push_back(uniform("dy", {s.rows, s.cols}, p.dtype, seed, 4, -1, 1));
  return t;
}

// Minimal traffic: `in_arrays` row-sized inputs (x; x and dy) and one row-sized output (y; dx) in the
// storage dtype, `params` cols-sized storage inputs (gamma, beta), `f32_params` cols-sized fp32 outputs
// (dgamma, dbeta), `stats` fp32 values per row (mean, rstd: written by the forward, read by the backward).
// Host, f32: those, + the backward's double column sums. bf16: the inputs, their fp32 values, the fp32
// truth, then the fp32 faithful evaluation (every statistic or column sum it keeps) and its tensors (the
// row-sized one in bf16). Device: those, + the backward's partials (norm_backward_workspace_bytes:
// dgamma and dbeta rows for each of the plan's blocks, at most 512).
CostModel norm_model(const Point& p, bool backward, int in_arrays, int params, int f32_params, int stats) {
  const auto s = norm_shape(p);
  const auto e = static_cast<int64_t>(dtype_size(p.dtype));
  const int64_t rc = s.rows * s.cols;
  const int64_t bytes = e * ((in_arrays + 1) * rc + params * s.cols) + 4 * f32_params * s.cols + 4 * stats * s.rows;
  int64_t host = bytes + (backward ? 8 * f32_params * s.cols : 0);
  if (p.dtype != DType::f32) {
    const int64_t stored_inputs = in_arrays * rc + params * s.cols;
    const int64_t truth = 4 * rc + 4 * f32_params * s.cols + (backward ? 0 : 4 * stats * s.rows);
    const int64_t evaluation = 4 * rc + (backward ? 8 * s.cols : 8 * s.rows);
    host = e * stored_inputs + (backward ? 4 * stats * s.rows : 0) + 4 * stored_inputs + truth + evaluation +
           (truth - 2 * rc);
  }
  namespace launch = optimized::nn::launch;
  const int64_t blocks = std::max(launch::norm_backward_plan(s.rows, s.cols, 4).blocks,
                                  launch::norm_backward_plan(s.rows, s.cols, 2).blocks);
  return memory_model(static_cast<double>(bytes), 8.0 * static_cast<double>(rc), host,
                      bytes + (backward ? 8 * blocks * s.cols : 0));
}

// ---- fp32 evaluations in index order from the stored values (faithful references) -------------------------

struct NormForwardFp32 {
  mem::HostVector<float> y, mean, rstd;
};
NormForwardFp32 norm_forward_fp32(const ref::NormShape& s, bool layernorm, std::span<const float> x,
                                  std::span<const float> gamma, std::span<const float> beta) {
  NormForwardFp32 f{mem::HostVector<float>(at(s.rows * s.cols)), mem::HostVector<float>(at(s.rows)),
                    mem::HostVector<float>(at(s.rows))};
  const auto n = static_cast<float>(s.cols);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x.data() + r * s.cols;
    float mu = 0.0f;
    if (layernorm) {
      float sum = 0.0f;
      for (int64_t c = 0; c < s.cols; ++c) sum += xr[c];
      mu = sum / n;
    }
    float squares = 0.0f;
    for (int64_t c = 0; c < s.cols; ++c) squares += (xr[c] - mu) * (xr[c] - mu);
    const float inv = 1.0f / std::sqrt(squares / n + s.eps);
    for (int64_t c = 0; c < s.cols; ++c) {
      f.y[at(r * s.cols + c)] = layernorm ? (xr[c] - mu) * inv * gamma[at(c)] + beta[at(c)] : xr[c] * inv * gamma[at(c)];
    }
    f.mean[at(r)] = mu;
    f.rstd[at(r)] = inv;
  }
  return f;
}

struct NormBackwardFp32 {
  mem::HostVector<float> dx, dgamma, dbeta;
};
NormBackwardFp32 norm_backward_fp32(const ref::NormShape& s, bool layernorm, std::span<const float> x,
                                    std::span<const float> gamma, std::span<const float> mean,
                                    std::span<const float> rstd, std::span<const float> dy) {
  NormBackwardFp32 b{mem::HostVector<float>(at(s.rows * s.cols)), mem::HostVector<float>(at(s.cols)),
                     mem::HostVector<float>(at(s.cols))};
  std::fill(b.dgamma.begin(), b.dgamma.end(), 0.0f);
  std::fill(b.dbeta.begin(), b.dbeta.end(), 0.0f);
  const auto n = static_cast<float>(s.cols);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x.data() + r * s.cols;
    const float* dyr = dy.data() + r * s.cols;
    const float mu = layernorm ? mean[at(r)] : 0.0f;
    const float inv = rstd[at(r)];
    float g_sum = 0.0f, gx_sum = 0.0f;
    for (int64_t c = 0; c < s.cols; ++c) {
      const float xhat = (xr[c] - mu) * inv;
      const float g = dyr[c] * gamma[at(c)];
      g_sum += g;
      gx_sum += g * xhat;
      b.dgamma[at(c)] += dyr[c] * xhat;
      b.dbeta[at(c)] += dyr[c];
    }
    const float g_mean = layernorm ? g_sum / n : 0.0f;
    const float gx_mean = gx_sum / n;
    for (int64_t c = 0; c < s.cols; ++c) {
      const float xhat = (xr[c] - mu) * inv;
      const float g = dyr[c] * gamma[at(c)];
      b.dx[at(r * s.cols + c)] = inv * (g - g_mean - xhat * gx_mean);
    }
  }
  return b;
}

[[maybe_unused]] const bool layernorm_forward_registered = register_case({
    .suite = "nn",
    .name = "layernorm_forward",
    .description = "LayerNorm over the last dimension, fp32 two-pass statistics from registers",
    .points = points(kNormShapes, {DType::f32, DType::bf16}),
    .model = [](const Point& p) { return norm_model(p, false, 1, 2, 0, 2); },
    .tolerance = [](const Point& p) { return norm_output_rule(p, "y", true, false); },
    .inputs = [](const Point& p, uint64_t seed) { return norm_inputs(p, seed, true, false); },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = norm_shape(p);
          const Fp32Values x(in[0]), gamma(in[1]), beta(in[2]);
          HostTensor y("y", DType::f32, {s.rows, s.cols}), mean("mean", DType::f32, {s.rows}), rstd("rstd", DType::f32, {s.rows});
          ref::layernorm_forward(s, x, gamma, beta, y.view<float>(), mean.view<float>(), rstd.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(y));
          r.outputs.push_back(std::move(mean));
          r.outputs.push_back(std::move(rstd));
          if (p.dtype != DType::f32) {
            const NormForwardFp32 f = norm_forward_fp32(s, true, x, gamma, beta);
            r.faithful.push_back(stored("y", {s.rows, s.cols}, p.dtype, f.y));
            r.faithful.push_back(f32_tensor("mean", {s.rows}, f.mean));
            r.faithful.push_back(f32_tensor("rstd", {s.rows}, f.rstd));
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::nn::layernorm_forward(norm_shape(a.point), a.point.dtype, a.inputs[0].ptr, a.inputs[1].ptr,
                                       a.inputs[2].ptr, a.outputs[0].ptr, a.out<float>(1), a.out<float>(2), a.stream);
    }),
    .output_tolerance = [](const Point& p, const std::string& output) { return norm_output_rule(p, output, true, false); },
});

[[maybe_unused]] const bool layernorm_backward_registered = register_case({
    .suite = "nn",
    .name = "layernorm_backward",
    .description = "LayerNorm backward: dx per row, dgamma / dbeta by per-block partials and a fixed-order column sum",
    .points = points(kNormShapes, {DType::f32, DType::bf16}),
    .model = [](const Point& p) { return norm_model(p, true, 2, 1, 2, 2); },
    .tolerance = [](const Point& p) { return norm_output_rule(p, "dx", true, true); },
    .inputs = [](const Point& p, uint64_t seed) { return norm_inputs(p, seed, true, true); },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = norm_shape(p);
          const Fp32Values x(in[0]), gamma(in[1]), dy(in[4]);
          const auto mean = in[2].view<float>(), rstd = in[3].view<float>();
          HostTensor dx("dx", DType::f32, {s.rows, s.cols}), dg("dgamma", DType::f32, {s.cols}), db("dbeta", DType::f32, {s.cols});
          ref::layernorm_backward(s, x, gamma, mean, rstd, dy, dx.view<float>(), dg.view<float>(), db.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(dx));
          r.outputs.push_back(std::move(dg));
          r.outputs.push_back(std::move(db));
          if (p.dtype != DType::f32) {
            const NormBackwardFp32 b = norm_backward_fp32(s, true, x, gamma, mean, rstd, dy);
            r.faithful.push_back(stored("dx", {s.rows, s.cols}, p.dtype, b.dx));
            r.faithful.push_back(f32_tensor("dgamma", {s.cols}, b.dgamma));
            r.faithful.push_back(f32_tensor("dbeta", {s.cols}, b.dbeta));
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const auto s = norm_shape(a.point);
      optimized::nn::layernorm_backward(s, a.point.dtype, a.inputs[0].ptr, a.inputs[1].ptr, a.in<float>(2),
                                        a.in<float>(3), a.inputs[4].ptr, a.outputs[0].ptr, a.out<float>(1),
                                        a.out<float>(2), a.state<Scratch>().ptr, a.stream);
    }),
    .prepare = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      return prepare_scratch(a, optimized::nn::norm_backward_workspace_bytes(norm_shape(a.point)));
    }),
    .output_tolerance = [](const Point& p, const std::string& output) { return norm_output_rule(p, output, true, true); },
});

[[maybe_unused]] const bool rmsnorm_forward_registered = register_case({
    .suite = "nn",
    .name = "rmsnorm_forward",
    .description = "RMSNorm over the last dimension, fp32 statistics from registers",
    .points = points(kNormShapes, {DType::f32, DType::bf16}),
    .model = [](const Point& p) { return norm_model(p, false, 1, 1, 0, 1); },
    .tolerance = [](const Point& p) { return norm_output_rule(p, "y", false, false); },
    .inputs = [](const Point& p, uint64_t seed) { return norm_inputs(p, seed, false, false); },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = norm_shape(p);
          const Fp32Values x(in[0]), gamma(in[1]);
          HostTensor y("y", DType::f32, {s.rows, s.cols}), rstd("rstd", DType::f32, {s.rows});
          ref::rmsnorm_forward(s, x, gamma, y.view<float>(), rstd.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(y));
          r.outputs.push_back(std::move(rstd));
          if (p.dtype != DType::f32) {
            const NormForwardFp32 f = norm_forward_fp32(s, false, x, gamma, {});
            r.faithful.push_back(stored("y", {s.rows, s.cols}, p.dtype, f.y));
            r.faithful.push_back(f32_tensor("rstd", {s.rows}, f.rstd));
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::nn::rmsnorm_forward(norm_shape(a.point), a.point.dtype, a.inputs[0].ptr, a.inputs[1].ptr,
                                     a.outputs[0].ptr, a.out<float>(1), a.stream);
    }),
    .output_tolerance = [](const Point& p, const std::string& output) { return norm_output_rule(p, output, false, false); },
});

[[maybe_unused]] const bool rmsnorm_backward_registered = register_case({
    .suite = "nn",
    .name = "rmsnorm_backward",
    .description = "RMSNorm backward: dx per row, dgamma by per-block partials and a fixed-order column sum",
    .points = points(kNormShapes, {DType::f32, DType::bf16}),
    .model = [](const Point& p) { return norm_model(p, true, 2, 1, 1, 1); },
    .tolerance = [](const Point& p) { return norm_output_rule(p, "dx", false, true); },
    .inputs = [](const Point& p, uint64_t seed) { return norm_inputs(p, seed, false, true); },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = norm_shape(p);
          const Fp32Values x(in[0]), gamma(in[1]), dy(in[3]);
          const auto rstd = in[2].view<float>();
          HostTensor dx("dx", DType::f32, {s.rows, s.cols}), dg("dgamma", DType::f32, {s.cols});
          ref::rmsnorm_backward(s, x, gamma, rstd, dy, dx.view<float>(), dg.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(dx));
          r.outputs.push_back(std::move(dg));
          if (p.dtype != DType::f32) {
            const NormBackwardFp32 b = norm_backward_fp32(s, false, x, gamma, {}, rstd, dy);
            r.faithful.push_back(stored("dx", {s.rows, s.cols}, p.dtype, b.dx));
            r.faithful.push_back(f32_tensor("dgamma", {s.cols}, b.dgamma));
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const auto s = norm_shape(a.point);
      optimized::nn::rmsnorm_backward(s, a.point.dtype, a.inputs[0].ptr, a.inputs[1].ptr, a.in<float>(2),
                                      a.inputs[3].ptr, a.outputs[0].ptr, a.out<float>(1), a.state<Scratch>().ptr,
                                      a.stream);
    }),
    .prepare = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      return prepare_scratch(a, optimized::nn::norm_backward_workspace_bytes(norm_shape(a.point)));
    }),
    .output_tolerance = [](const Point& p, const std::string& output) { return norm_output_rule(p, output, false, true); },
});

// ---- Softmax cross-entropy ----------------------------------------------------------------------------------
// The row's sum of exp(x - max) is a sum of positive terms: whatever the order, each term carries at
// most its expf error (4 u) plus one rescaling by expf(old max - new max) and one multiply per element on
// its path (5 u) plus the additions: depth 6 classes + 16 bounds it (online or two-pass). The loss adds
// (max - x[label]) >= 0 and log(sum) >= 0 (no cancellation): its absolute error is the sum's relative
// error (magnitude 1) plus rtol |loss|; the mean adds `rows` more roundings. Backward: (p - onehot) has
// absolute error <= the sum's relative error, times scale / rows (the magnitude).
//
// bf16 points (bf16 logits, as the recipe's forward; dlogits in bf16): the losses are fp32 outputs of
// the same fp32 math on bf16 values, which are exact fp32 values: the f32 derivation holds unchanged.
// dlogits is a bf16 output: faithful against the fp64 truth, with a plain two-pass fp32 evaluation
// (max, sum of expf in index order, (expf(x - max) / sum - onehot) * fp32(scale / rows)) rounded once
// to bf16 as the kernel's store does.

const std::vector<ShapeSpec> kSoftmaxShapes = {
    {{{"rows", 64}, {"classes", 1000}}, true},
    {{{"rows", 7}, {"classes", 1001}}, true},  // ragged
    {{{"rows", 8192}, {"classes", 32000}}, false},
};

// Per row: max and the fp32 sum of expf(x - max) in index order.
struct RowSumFp32 {
  float max;
  float sum;
};
RowSumFp32 row_sum_fp32(const float* row, int64_t classes) {
  float m = row[0];
  for (int64_t c = 1; c < classes; ++c) m = std::max(m, row[c]);
  float sum = 0.0f;
  for (int64_t c = 0; c < classes; ++c) sum += std::exp(row[c] - m);
  return {m, sum};
}

ToleranceRule softmax_forward_rule(const Point& p) {
  ToleranceRule rule = tolerance::accumulation(DType::f32, DType::f32, 6 * p.dim("classes") + p.dim("rows") + 16, 1.0);
  if (p.dtype != DType::f32) rule.derivation += "; bf16 logits are exact fp32 values: the f32 derivation holds";
  return rule;
}

// f32 points, per output: a row loss does not see the mean's `rows` roundings (depth 6 classes + 16,
// magnitude 1); the mean keeps the point's rule.
ToleranceRule softmax_forward_output_rule(const Point& p, const std::string& output) {
  if (p.dtype == DType::f32 && output == "row_losses") {
    return fp32_output_rule(6 * p.dim("classes") + 16, 1.0,
                            "a row loss: expf (4 u), one rescaling and one multiply (5 u) per element and the additions "
                            "of the positive sum, relative, plus log and the two non-negative terms: depth 6 classes + 16; "
                            "absolute error = the sum's relative error: magnitude 1");
  }
  return softmax_forward_rule(p);
}

[[maybe_unused]] const bool softmax_forward_registered = register_case({
    .suite = "nn",
    .name = "softmax_ce_forward",
    .description = "per-row softmax cross-entropy (online max / log-sum-exp) and the mean over rows",
    .points = points(kSoftmaxShapes, {DType::f32, DType::bf16}),
    .model =
        [](const Point& p) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          const auto e = static_cast<int64_t>(dtype_size(p.dtype));
          // Reads the logits (storage dtype) and the int32 labels, writes fp32 row losses and the mean.
          // Host: those, for bf16 also the fp32 values of the logits and the fp32 evaluation's losses.
          const int64_t bytes = e * rows * classes + 4 * (2 * rows + 1);
          const int64_t narrow = p.dtype == DType::f32 ? 0 : 1;
          return memory_model(static_cast<double>(bytes), 3.0 * static_cast<double>(rows * classes),
                              bytes + narrow * (4 * rows * classes + 4 * (rows + 1)), bytes);
        },
    .tolerance = softmax_forward_rule,
    .inputs =
        [](const Point& p, uint64_t seed) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          return std::vector<HostTensor>{uniform("logits", {rows, classes}, p.dtype, seed, 1, -4, 4),
                                         labels_tensor(rows, classes, seed)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          const Fp32Values logits(in[0]);
          const auto labels = in[1].view<int32_t>();
          HostTensor losses("row_losses", DType::f32, {rows}), mean("mean_loss", DType::f32, {1});
          mean.view<float>()[0] =
              static_cast<float>(ref::softmax_cross_entropy_forward(rows, classes, logits, labels, losses.view<float>()));
          ReferenceResult r;
          r.outputs.push_back(std::move(losses));
          r.outputs.push_back(std::move(mean));
          if (p.dtype != DType::f32) {
            HostTensor f_losses("row_losses", DType::f32, {rows}), f_mean("mean_loss", DType::f32, {1});
            float total = 0.0f;
            for (int64_t row = 0; row < rows; ++row) {
              const float* x = logits.data() + row * classes;
              const RowSumFp32 t = row_sum_fp32(x, classes);
              const float loss = (t.max - x[labels[at(row)]]) + std::log(t.sum);
              f_losses.view<float>()[at(row)] = loss;
              total += loss;
            }
            f_mean.view<float>()[0] = total / static_cast<float>(rows);
            r.faithful.push_back(std::move(f_losses));
            r.faithful.push_back(std::move(f_mean));
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::nn::softmax_cross_entropy_forward(a.point.dim("rows"), a.point.dim("classes"), a.point.dtype,
                                                   a.inputs[0].ptr, a.in<int32_t>(1), a.out<float>(0), a.out<float>(1),
                                                   a.stream);
    }),
    .output_tolerance = softmax_forward_output_rule,
});

[[maybe_unused]] const bool softmax_backward_registered = register_case({
    .suite = "nn",
    .name = "softmax_ce_backward",
    .description = "dlogits = (softmax - onehot) * loss scale / rows, fused",
    .points = points(kSoftmaxShapes, {DType::f32, DType::bf16}),
    .model =
        [](const Point& p) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          const auto e = static_cast<int64_t>(dtype_size(p.dtype));
          // Reads the logits and labels, writes dlogits (storage dtype). Host: those and the fp32 truth;
          // for bf16 also the fp32 values of the logits and the faithful output (fp32, then bf16).
          const int64_t bytes = 2 * e * rows * classes + 4 * rows;
          const int64_t narrow = p.dtype == DType::f32 ? 0 : 1;
          return memory_model(static_cast<double>(bytes), 4.0 * static_cast<double>(rows * classes),
                              e * rows * classes + 4 * rows * classes + 4 * rows + narrow * 10 * rows * classes, bytes);
        },
    .tolerance =
        [](const Point& p) {
          if (p.dtype != DType::f32) {
            return bf16_output_rule("dlogits = (expf(x - max) / sum - onehot) * scale / rows in fp32, rounded once at "
                                    "the store");
          }
          return tolerance::accumulation(DType::f32, DType::f32, 6 * p.dim("classes") + 16,
                                         static_cast<double>(kLossScale) / static_cast<double>(p.dim("rows")));
        },
    .inputs =
        [](const Point& p, uint64_t seed) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          return std::vector<HostTensor>{uniform("logits", {rows, classes}, p.dtype, seed, 1, -4, 4),
                                         labels_tensor(rows, classes, seed)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          const Fp32Values logits(in[0]);
          const auto labels = in[1].view<int32_t>();
          HostTensor d("dlogits", DType::f32, {rows, classes});
          ref::softmax_cross_entropy_backward(rows, classes, logits, labels, kLossScale, d.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(d));
          if (p.dtype != DType::f32) {
            // The loss-scale factor as the recipe forms it: scale / rows in double, rounded once to fp32.
            const auto factor = static_cast<float>(static_cast<double>(kLossScale) / static_cast<double>(rows));
            mem::HostVector<float> f(at(rows * classes));
            for (int64_t row = 0; row < rows; ++row) {
              const float* x = logits.data() + row * classes;
              const RowSumFp32 t = row_sum_fp32(x, classes);
              const float inv_sum = 1.0f / t.sum;
              for (int64_t c = 0; c < classes; ++c) {
                const float onehot = c == labels[at(row)] ? 1.0f : 0.0f;
                f[at(row * classes + c)] = (std::exp(x[c] - t.max) * inv_sum - onehot) * factor;
              }
            }
            r.faithful.push_back(stored("dlogits", {rows, classes}, p.dtype, f));
          }
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::nn::softmax_cross_entropy_backward(a.point.dim("rows"), a.point.dim("classes"), a.point.dtype,
                                                    a.inputs[0].ptr, a.in<int32_t>(1), kLossScale, a.outputs[0].ptr,
                                                    a.stream);
    }),
    .params = [](const Point&) { return Params{{"scale", static_cast<double>(kLossScale)}}; },
});

}  // namespace
}  // namespace gauge::suites::nn
