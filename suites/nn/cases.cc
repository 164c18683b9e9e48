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
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/inputs.h"
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

const std::vector<ShapeSpec> kLinearShapes = {
    {{{"rows", 64}, {"in", 96}, {"out", 80}}, true},
    {{{"rows", 1}, {"in", 33}, {"out", 17}}, true},  // one row, odd sizes
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

[[maybe_unused]] const bool linear_forward_registered = register_case({
    .suite = "nn",
    .name = "linear_forward",
    .description = "y = x W^T + b (cuBLASLt, bias epilogue); fp32 in true fp32, bf16 on tensor cores with fp32 accumulation",
    .points = points(kLinearShapes, {DType::f32, DType::bf16}),
    .model =
        [](const Point& p) {
          const auto s = linear_shape(p);
          const double e = bytes_of(p.dtype);
          CostModel m;
          m.flops = 2.0 * static_cast<double>(s.rows * s.in * s.out);
          m.bytes = e * static_cast<double>(s.rows * s.in + s.out * s.in + s.out + s.rows * s.out);
          m.bound = Bound::compute;
          m.math_dtype = p.dtype;
          m.predicted_host_peak_bytes = static_cast<int64_t>(m.bytes) + 4 * (s.rows * s.out) * (p.dtype == DType::f32 ? 1 : 2);
          m.predicted_device_peak_bytes = static_cast<int64_t>(m.bytes) + (int64_t{32} << 20);
          return m;
        },
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
          const auto x = values(in[0]), w = values(in[1]), b = values(in[2]);
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

[[maybe_unused]] const bool linear_backward_registered = register_case({
    .suite = "nn",
    .name = "linear_backward",
    .description = "dx = dy W, dw = dy^T x (cuBLASLt), dbias = column sums of dy (deterministic two-stage)",
    .points = points(kLinearShapes, {DType::f32}),
    .model =
        [](const Point& p) {
          const auto s = linear_shape(p);
          CostModel m;
          m.flops = 4.0 * static_cast<double>(s.rows * s.in * s.out) + static_cast<double>(s.rows * s.out);
          m.bytes = 4.0 * static_cast<double>(2 * (s.rows * s.in + s.out * s.in) + s.rows * s.out + s.out);
          m.bound = Bound::compute;
          m.math_dtype = DType::f32;
          m.predicted_host_peak_bytes = static_cast<int64_t>(m.bytes) + 8 * std::max(s.in, s.rows);
          m.predicted_device_peak_bytes = static_cast<int64_t>(m.bytes) + (int64_t{32} << 20);
          return m;
        },
    .tolerance =
        [](const Point& p) {
          const int64_t depth = std::max(p.dim("rows"), p.dim("out"));
          return tolerance::accumulation(DType::f32, DType::f32, depth, static_cast<double>(depth));
        },
    .inputs =
        [](const Point& p, uint64_t seed) {
          const auto s = linear_shape(p);
          return std::vector<HostTensor>{uniform("x", {s.rows, s.in}, DType::f32, seed, 1, -1, 1),
                                         uniform("w", {s.out, s.in}, DType::f32, seed, 2, -1, 1),
                                         uniform("dy", {s.rows, s.out}, DType::f32, seed, 4, -1, 1)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = linear_shape(p);
          HostTensor dx("dx", DType::f32, {s.rows, s.in}), dw("dw", DType::f32, {s.out, s.in}), db("dbias", DType::f32, {s.out});
          ref::linear_backward(s, in[0].view<float>(), in[1].view<float>(), in[2].view<float>(), dx.view<float>(),
                               dw.view<float>(), db.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(dx));
          r.outputs.push_back(std::move(dw));
          r.outputs.push_back(std::move(db));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const auto& p = a.state<PreparedLinear>();
      p.plan->backward(a.inputs[0].ptr, a.inputs[1].ptr, a.inputs[2].ptr, a.outputs[0].ptr, a.out<float>(1),
                       a.out<float>(2), p.workspace, a.stream);
    }),
    .prepare = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) { return prepare_linear(a, DType::f32); }),
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
      .points = points(kPointwiseShapes, {DType::f32}),
      .model =
          [](const Point& p) {
            const int64_t n = p.dim("rows") * p.dim("cols");
            return memory_model(12.0 * static_cast<double>(n), 2.0 * static_cast<double>(n), 24 * n, 12 * n);
          },
      // relu: dy * 1 or dy * 0, one exact product on both sides. gelu/silu: the derivatives cross zero
      // (silu near x = -1.28, gelu near -0.75), where any fp32 evaluation has an absolute, not a relative,
      // error: judged against a plain fp32 evaluation of the reference's formula.
      .tolerance =
          [act](const Point&) {
            if (act == Activation::relu) return tolerance::exact_bits();
            return tolerance::faithful(2.0, 0.0,
                                       "the derivative has zeros where fp32 cancels: no worse than twice the reference's "
                                       "formula evaluated in fp32, against fp64");
          },
      .inputs =
          [](const Point& p, uint64_t seed) {
            const int64_t rows = p.dim("rows"), cols = p.dim("cols");
            return std::vector<HostTensor>{uniform("x", {rows, cols}, DType::f32, seed, 1, -4, 4),
                                           uniform("dy", {rows, cols}, DType::f32, seed, 4, -1, 1)};
          },
      .reference =
          [act](const Point& p, const std::vector<HostTensor>& in) {
            const int64_t rows = p.dim("rows"), cols = p.dim("cols");
            HostTensor dx("dx", DType::f32, {rows, cols});
            ref::activation_backward(act, in[0].view<float>(), in[1].view<float>(), dx.view<float>());
            ReferenceResult r;
            if (act != Activation::relu) {
              HostTensor faithful("dx", DType::f32, {rows, cols});
              const auto x = in[0].view<float>();
              const auto dy = in[1].view<float>();
              for (size_t i = 0; i < x.size(); ++i) faithful.view<float>()[i] = dy[i] * derivative_fp32(act, x[i]);
              r.faithful.push_back(std::move(faithful));
            }
            r.outputs.push_back(std::move(dx));
            return r;
          },
      .optimized = GAUGE_CUDA_ONLY([act](const OptimizedArgs& a) {
        optimized::nn::activation_backward(act, a.point.dim("rows") * a.point.dim("cols"), DType::f32, a.inputs[0].ptr,
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
// x uniform in [-1, 1): standard deviation 1/sqrt(3), so |xhat| <= sqrt(3); gamma in [0.5, 1.5), beta in
// [-0.5, 0.5): |y| <= 1.5 sqrt(3) + 0.5 < 4 = the forward magnitude. Depth: the two passes over a row
// (sum, then squares) and the few roundings after them: 2 cols + 8. Backward: dx sums over cols,
// dgamma / dbeta over rows, terms |dy xhat gamma| <= 1.5 sqrt(3) < 4 (dy in [-1, 1)): depth 2
// max(rows, cols) + 8, magnitude 4 max(rows, cols) (the dgamma sums bound it).

const std::vector<ShapeSpec> kNormShapes = {
    {{{"rows", 64}, {"cols", 768}}, true},
    {{{"rows", 1}, {"cols", 4096}}, true},   // one row, one block
    {{{"rows", 33}, {"cols", 771}}, true},   // ragged: scalar path
    {{{"rows", 8192}, {"cols", 4096}}, false},
};

ToleranceRule norm_forward_rule(const Point& p) {
  return tolerance::accumulation(DType::f32, DType::f32, 2 * p.dim("cols") + 8, 4.0);
}
ToleranceRule norm_backward_rule(const Point& p) {
  const int64_t wide = std::max(p.dim("rows"), p.dim("cols"));
  return tolerance::accumulation(DType::f32, DType::f32, 2 * wide + 8, 4.0 * static_cast<double>(wide));
}

std::vector<HostTensor> norm_inputs(const Point& p, uint64_t seed, bool layernorm, bool backward) {
  const auto s = norm_shape(p);
  std::vector<HostTensor> t{uniform("x", {s.rows, s.cols}, DType::f32, seed, 1, -1, 1),
                            uniform("gamma", {s.cols}, DType::f32, seed, 5, 0.5f, 1.5f)};
  if (layernorm) t.push_back(uniform("beta", {s.cols}, DType::f32, seed, 6, -0.5f, 0.5f));
  if (!backward) return t;
  // The saved statistics come from the reference forward: backward is checked on its own.
  HostTensor y("y", DType::f32, {s.rows, s.cols}), mean("mean", DType::f32, {s.rows}), rstd("rstd", DType::f32, {s.rows});
  if (layernorm) {
    ref::layernorm_forward(s, t[0].view<float>(), t[1].view<float>(), t[2].view<float>(), y.view<float>(),
                           mean.view<float>(), rstd.view<float>());
    t.pop_back();  // backward does not read beta
    t.push_back(std::move(mean));
  } else {
    ref::rmsnorm_forward(s, t[0].view<float>(), t[1].view<float>(), y.view<float>(), rstd.view<float>());
  }
  t.push_back(std::move(rstd));
  t.push_back(uniform("dy", {s.rows, s.cols}, DType::f32, seed, 4, -1, 1));
  return t;
}

CostModel norm_model(const Point& p, int arrays, int64_t stat_bytes_per_row) {
  const auto s = norm_shape(p);
  const double bytes = 4.0 * static_cast<double>(arrays * s.rows * s.cols + 3 * s.cols) +
                       static_cast<double>(stat_bytes_per_row * s.rows);
  return memory_model(bytes, 8.0 * static_cast<double>(s.rows * s.cols), static_cast<int64_t>(bytes) + 16 * s.cols,
                      static_cast<int64_t>(bytes) + 8 * 512 * s.cols);
}

[[maybe_unused]] const bool layernorm_forward_registered = register_case({
    .suite = "nn",
    .name = "layernorm_forward",
    .description = "LayerNorm over the last dimension, fp32 two-pass statistics from registers",
    .points = points(kNormShapes, {DType::f32}),
    .model = [](const Point& p) { return norm_model(p, 2, 8); },
    .tolerance = norm_forward_rule,
    .inputs = [](const Point& p, uint64_t seed) { return norm_inputs(p, seed, true, false); },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = norm_shape(p);
          HostTensor y("y", DType::f32, {s.rows, s.cols}), mean("mean", DType::f32, {s.rows}), rstd("rstd", DType::f32, {s.rows});
          ref::layernorm_forward(s, in[0].view<float>(), in[1].view<float>(), in[2].view<float>(), y.view<float>(),
                                 mean.view<float>(), rstd.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(y));
          r.outputs.push_back(std::move(mean));
          r.outputs.push_back(std::move(rstd));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::nn::layernorm_forward(norm_shape(a.point), DType::f32, a.inputs[0].ptr, a.inputs[1].ptr, a.inputs[2].ptr,
                                       a.outputs[0].ptr, a.out<float>(1), a.out<float>(2), a.stream);
    }),
});

[[maybe_unused]] const bool layernorm_backward_registered = register_case({
    .suite = "nn",
    .name = "layernorm_backward",
    .description = "LayerNorm backward: dx per row, dgamma / dbeta by per-block partials and a fixed-order column sum",
    .points = points(kNormShapes, {DType::f32}),
    .model = [](const Point& p) { return norm_model(p, 3, 8); },
    .tolerance = norm_backward_rule,
    .inputs = [](const Point& p, uint64_t seed) { return norm_inputs(p, seed, true, true); },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = norm_shape(p);
          HostTensor dx("dx", DType::f32, {s.rows, s.cols}), dg("dgamma", DType::f32, {s.cols}), db("dbeta", DType::f32, {s.cols});
          ref::layernorm_backward(s, in[0].view<float>(), in[1].view<float>(), in[2].view<float>(), in[3].view<float>(),
                                  in[4].view<float>(), dx.view<float>(), dg.view<float>(), db.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(dx));
          r.outputs.push_back(std::move(dg));
          r.outputs.push_back(std::move(db));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const auto s = norm_shape(a.point);
      optimized::nn::layernorm_backward(s, DType::f32, a.inputs[0].ptr, a.inputs[1].ptr, a.in<float>(2), a.in<float>(3),
                                        a.inputs[4].ptr, a.outputs[0].ptr, a.out<float>(1), a.out<float>(2),
                                        a.state<Scratch>().ptr, a.stream);
    }),
    .prepare = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      return prepare_scratch(a, optimized::nn::norm_backward_workspace_bytes(norm_shape(a.point)));
    }),
});

[[maybe_unused]] const bool rmsnorm_forward_registered = register_case({
    .suite = "nn",
    .name = "rmsnorm_forward",
    .description = "RMSNorm over the last dimension, fp32 statistics from registers",
    .points = points(kNormShapes, {DType::f32}),
    .model = [](const Point& p) { return norm_model(p, 2, 4); },
    .tolerance = norm_forward_rule,
    .inputs = [](const Point& p, uint64_t seed) { return norm_inputs(p, seed, false, false); },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = norm_shape(p);
          HostTensor y("y", DType::f32, {s.rows, s.cols}), rstd("rstd", DType::f32, {s.rows});
          ref::rmsnorm_forward(s, in[0].view<float>(), in[1].view<float>(), y.view<float>(), rstd.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(y));
          r.outputs.push_back(std::move(rstd));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::nn::rmsnorm_forward(norm_shape(a.point), DType::f32, a.inputs[0].ptr, a.inputs[1].ptr, a.outputs[0].ptr,
                                     a.out<float>(1), a.stream);
    }),
});

[[maybe_unused]] const bool rmsnorm_backward_registered = register_case({
    .suite = "nn",
    .name = "rmsnorm_backward",
    .description = "RMSNorm backward: dx per row, dgamma by per-block partials and a fixed-order column sum",
    .points = points(kNormShapes, {DType::f32}),
    .model = [](const Point& p) { return norm_model(p, 3, 4); },
    .tolerance = norm_backward_rule,
    .inputs = [](const Point& p, uint64_t seed) { return norm_inputs(p, seed, false, true); },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const auto s = norm_shape(p);
          HostTensor dx("dx", DType::f32, {s.rows, s.cols}), dg("dgamma", DType::f32, {s.cols});
          ref::rmsnorm_backward(s, in[0].view<float>(), in[1].view<float>(), in[2].view<float>(), in[3].view<float>(),
                                dx.view<float>(), dg.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(dx));
          r.outputs.push_back(std::move(dg));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const auto s = norm_shape(a.point);
      optimized::nn::rmsnorm_backward(s, DType::f32, a.inputs[0].ptr, a.inputs[1].ptr, a.in<float>(2), a.inputs[3].ptr,
                                      a.outputs[0].ptr, a.out<float>(1), a.state<Scratch>().ptr, a.stream);
    }),
    .prepare = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      return prepare_scratch(a, optimized::nn::norm_backward_workspace_bytes(norm_shape(a.point)));
    }),
});

// ---- Softmax cross-entropy ----------------------------------------------------------------------------------
// The row's sum of exp(x - max) is a sum of positive terms: whatever the order, each term carries at
// most its expf error (4 u) plus one rescaling by expf(old max - new max) and one multiply per element on
// its path (5 u) plus the additions: depth 6 classes + 16 bounds it (online or two-pass). The loss adds
// (max - x[label]) >= 0 and log(sum) >= 0 (no cancellation): its absolute error is the sum's relative
// error (magnitude 1) plus rtol |loss|; the mean adds `rows` more roundings. Backward: (p - onehot) has
// absolute error <= the sum's relative error, times scale / rows (the magnitude).

const std::vector<ShapeSpec> kSoftmaxShapes = {
    {{{"rows", 64}, {"classes", 1000}}, true},
    {{{"rows", 7}, {"classes", 1001}}, true},  // ragged
    {{{"rows", 8192}, {"classes", 32000}}, false},
};

[[maybe_unused]] const bool softmax_forward_registered = register_case({
    .suite = "nn",
    .name = "softmax_ce_forward",
    .description = "per-row softmax cross-entropy (online max / log-sum-exp) and the mean over rows",
    .points = points(kSoftmaxShapes, {DType::f32}),
    .model =
        [](const Point& p) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          return memory_model(4.0 * static_cast<double>(rows * classes + 2 * rows + 1),
                              3.0 * static_cast<double>(rows * classes), 4 * (rows * classes + 3 * rows),
                              4 * (rows * classes + 2 * rows + 1));
        },
    .tolerance =
        [](const Point& p) {
          return tolerance::accumulation(DType::f32, DType::f32, 6 * p.dim("classes") + p.dim("rows") + 16, 1.0);
        },
    .inputs =
        [](const Point& p, uint64_t seed) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          return std::vector<HostTensor>{uniform("logits", {rows, classes}, DType::f32, seed, 1, -4, 4),
                                         labels_tensor(rows, classes, seed)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          HostTensor losses("row_losses", DType::f32, {rows}), mean("mean_loss", DType::f32, {1});
          mean.view<float>()[0] = static_cast<float>(ref::softmax_cross_entropy_forward(
              rows, classes, in[0].view<float>(), in[1].view<int32_t>(), losses.view<float>()));
          ReferenceResult r;
          r.outputs.push_back(std::move(losses));
          r.outputs.push_back(std::move(mean));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::nn::softmax_cross_entropy_forward(a.point.dim("rows"), a.point.dim("classes"), DType::f32, a.inputs[0].ptr,
                                                   a.in<int32_t>(1), a.out<float>(0), a.out<float>(1), a.stream);
    }),
});

[[maybe_unused]] const bool softmax_backward_registered = register_case({
    .suite = "nn",
    .name = "softmax_ce_backward",
    .description = "dlogits = (softmax - onehot) * loss scale / rows, fused",
    .points = points(kSoftmaxShapes, {DType::f32}),
    .model =
        [](const Point& p) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          return memory_model(4.0 * static_cast<double>(2 * rows * classes + rows), 4.0 * static_cast<double>(rows * classes),
                              4 * (2 * rows * classes + rows), 4 * (2 * rows * classes + rows));
        },
    .tolerance =
        [](const Point& p) {
          return tolerance::accumulation(DType::f32, DType::f32, 6 * p.dim("classes") + 16,
                                         static_cast<double>(kLossScale) / static_cast<double>(p.dim("rows")));
        },
    .inputs =
        [](const Point& p, uint64_t seed) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          return std::vector<HostTensor>{uniform("logits", {rows, classes}, DType::f32, seed, 1, -4, 4),
                                         labels_tensor(rows, classes, seed)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          const int64_t rows = p.dim("rows"), classes = p.dim("classes");
          HostTensor d("dlogits", DType::f32, {rows, classes});
          ref::softmax_cross_entropy_backward(rows, classes, in[0].view<float>(), in[1].view<int32_t>(), kLossScale,
                                              d.view<float>());
          ReferenceResult r;
          r.outputs.push_back(std::move(d));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::nn::softmax_cross_entropy_backward(a.point.dim("rows"), a.point.dim("classes"), DType::f32,
                                                    a.inputs[0].ptr, a.in<int32_t>(1), kLossScale, a.outputs[0].ptr,
                                                    a.stream);
    }),
    .params = [](const Point&) { return Params{{"scale", static_cast<double>(kLossScale)}}; },
});

}  // namespace
}  // namespace gauge::suites::nn
