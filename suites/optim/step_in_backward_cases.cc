// Step-in-backward, declared once: one SGD-momentum training step of an MLP with the optimizer step
// after the backward pass, and fused into it. The records show the measured peak of each beside the
// ledger model's prediction; the gap between the two cases is the gradients that never coexist.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/inputs.h"
#include "reference/optim/step_in_backward.h"
#if GAUGE_HAS_CUDA
#include <cuda_runtime.h>

#include "harness/error.h"
#include "harness/gpu.h"
#include "optimized/optim/step_in_backward.h"
#endif

namespace gauge::suites::optim {
namespace {

namespace ref = gauge::reference::optim;
using ref::GradientRelease;
using ref::MlpShape;

constexpr double kLearningRate = 0.05;

gauge::optim::Hyper sgd_momentum() {
  gauge::optim::Hyper h;
  h.algorithm = gauge::optim::Algorithm::sgd;
  h.lr = kLearningRate;
  h.momentum = 0.9;
  h.weight_decay = 1e-4;
  return h;
}

MlpShape shape_of(const Point& p) {
  return MlpShape{.batch = p.dim("batch"), .features = p.dim("features"), .hidden = p.dim("hidden"),
                  .classes = p.dim("classes"), .layers = p.dim("layers")};
}

ShapeSpec mlp(int64_t batch, int64_t features, int64_t hidden, int64_t classes, int64_t layers, bool quick) {
  return {{{"batch", batch}, {"features", features}, {"hidden", hidden}, {"classes", classes}, {"layers", layers}},
          quick};
}

// Inputs: x uniform in [-1, 1); labels uniform over the classes; parameters PyTorch-style uniform in
// +-1/sqrt(fan_in) (one bound per layer); momentum zero (step 1: the buffer becomes the gradient).
std::vector<HostTensor> make_inputs(const Point& p, uint64_t seed) {
  const MlpShape s = shape_of(p);
  std::vector<HostTensor> in;
  in.push_back(inputs::uniform_f32("x", {s.batch, s.features}, seed, 0, -1.0f, 1.0f));
  const HostTensor words = inputs::philox_u32("label_words", {s.batch}, seed, 1);
  HostTensor labels("labels", DType::i32, {s.batch});
  for (int64_t r = 0; r < s.batch; ++r) {
    labels.view<int32_t>()[static_cast<size_t>(r)] =
        static_cast<int32_t>(words.view<uint32_t>()[static_cast<size_t>(r)] % static_cast<uint32_t>(s.classes));
  }
  in.push_back(std::move(labels));
  HostTensor params("params", DType::f32, {s.parameter_count()});
  for (int64_t l = 0; l < s.layers; ++l) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(s.in_of(l)));
    const int64_t count = s.out_of(l) * s.in_of(l) + s.out_of(l);
    const HostTensor values = inputs::uniform_f32("layer", {count}, seed, static_cast<uint32_t>(2 + l), -bound, bound);
    std::copy(values.view<float>().begin(), values.view<float>().end(),
              params.view<float>().begin() + s.weight_offset(l));
  }
  in.push_back(std::move(params));
  HostTensor momentum("momentum", DType::f32, {s.parameter_count()});
  std::fill(momentum.view<float>().begin(), momentum.view<float>().end(), 0.0f);
  in.push_back(std::move(momentum));
  return in;
}

#if GAUGE_HAS_CUDA
// Untimed: the outputs start as the input parameters and momentum, and the step's layer plans, step
// plans and buffers are built (from the harness pool, so the measured peak includes them).
std::shared_ptr<void> prepare_step(GradientRelease release, const OptimizedArgs& a) {
  for (size_t i = 0; i < 2; ++i) {
    const cudaError_t status = cudaMemcpyAsync(a.outputs.at(i).ptr, a.inputs.at(2 + i).ptr, a.inputs.at(2 + i).bytes,
                                               cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(a.stream));
    if (status != cudaSuccess) throw RuntimeFailure(std::string("mlp step: copying the initial state: ") + cudaGetErrorString(status));
  }
  return std::make_shared<optimized::optim::MlpSgdStep>(
      a.session.blas_lt(), shape_of(a.point), sgd_momentum(), release, a.in<float>(0), a.in<int32_t>(1), a.out<float>(0),
      a.out<float>(1), [&a](size_t bytes) { return a.session.workspace(bytes); }, a.stream);
}
#endif

CaseDecl declare(GradientRelease release) {
  const bool fused = release == GradientRelease::in_backward;
  CaseDecl decl;
  decl.suite = "optim";
  decl.name = fused ? "mlp_step_in_backward" : "mlp_step_after_backward";
  decl.description = fused ? "MLP training step, SGD-momentum fused into backward: each layer stepped and its "
                             "gradient freed as soon as it is complete"
                           : "MLP training step, SGD-momentum after the whole backward pass (every gradient live)";
  decl.points = grid({mlp(16, 64, 128, 10, 4, true), mlp(32, 512, 2048, 16, 6, false)}, {DType::f32});
  decl.model = [release](const Point& p) {
    const MlpShape s = shape_of(p);
    const auto params = static_cast<double>(s.parameter_count());
    const auto batch = static_cast<double>(s.batch);
    CostModel m;
    m.bound = Bound::compute;
    m.math_dtype = DType::f32;
    // Forward 2 B P, backward 4 B P (dx and dW) for the Linear layers; the step ~4 flops per parameter.
    m.flops = 6.0 * batch * params + 4.0 * params;
    // Weights read three times (forward, dx, update) and written once; momentum read and written.
    m.bytes = 4.0 * params * 6.0;
    // Caller-owned inputs and outputs (x, labels, params, momentum; updated params and momentum) plus
    // the step's own ledger.
    const int64_t owned = 4 * s.batch * s.features + 4 * s.batch + 4 * 4 * s.parameter_count();
    m.predicted_host_peak_bytes = owned + ref::predicted_peak_bytes(s, release);
#if GAUGE_HAS_CUDA
    // Inputs and outputs, plus the step's buffers (the cuBLASLt workspace excepted: it is chosen at run time).
    m.predicted_device_peak_bytes = owned + static_cast<int64_t>(optimized::optim::MlpSgdStep::device_bytes(s, release));
#endif
    return m;
  };
  // Parameters and gradient sums are below 1 in magnitude for this initialization (|w| <= 1/sqrt(in),
  // |x| <= 1, softmax gradient entries <= 1/batch). The longest chain of sums feeding one updated
  // element: the batch sum of dW plus the feature sums of every layer's dx above it.
  decl.tolerance = [](const Point& p) {
    const MlpShape s = shape_of(p);
    const int64_t depth = s.batch + (s.layers - 1) * s.hidden + s.classes + s.features;
    return tolerance::accumulation(DType::f32, DType::f32, depth, 1.0);
  };
  decl.inputs = make_inputs;
  decl.reference = [release](const Point& p, const std::vector<HostTensor>& in) {
    const MlpShape s = shape_of(p);
    ReferenceResult r;
    r.outputs.emplace_back("params", DType::f32, in[2].shape());
    r.outputs.emplace_back("momentum", DType::f32, in[3].shape());
    std::copy(in[2].view<float>().begin(), in[2].view<float>().end(), r.outputs[0].view<float>().begin());
    std::copy(in[3].view<float>().begin(), in[3].view<float>().end(), r.outputs[1].view<float>().begin());
    ref::mlp_sgd_step(s, sgd_momentum(), 1, kLearningRate, release, in[0].view<float>(), in[1].view<int32_t>(),
                      r.outputs[0].view<float>(), r.outputs[1].view<float>());
    return r;
  };
  decl.prepare = GAUGE_CUDA_ONLY([release](const OptimizedArgs& a) { return prepare_step(release, a); });
  decl.optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
    a.state<optimized::optim::MlpSgdStep>().step(1, kLearningRate, a.stream);
  });
  decl.params = [](const Point&) {
    return Params{{"optimizer", std::string("sgd")},     {"lr", kLearningRate},      {"momentum", 0.9},
                  {"weight_decay", 1e-4},                {"step", int64_t{1}},       {"activation", std::string("relu")},
                  {"loss", std::string("mean softmax cross-entropy")}};
  };
  return decl;
}

[[maybe_unused]] const bool registered = [] {
  register_case(declare(GradientRelease::after_backward));
  register_case(declare(GradientRelease::in_backward));
  return true;
}();

}  // namespace
}  // namespace gauge::suites::optim
