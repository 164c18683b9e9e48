#include "reference/optim/step_in_backward.h"

#include <algorithm>
#include <optional>
#include <string>

#include "harness/error.h"
#include "harness/memory.h"
#include "reference/nn/layers.h"
#include "reference/optim/optimizers.h"

namespace gauge::reference::optim {

namespace nn = gauge::reference::nn;

namespace {

size_t at(int64_t i) { return static_cast<size_t>(i); }

std::span<float> slice(std::span<float> s, int64_t offset, int64_t count) { return s.subspan(at(offset), at(count)); }

// One layer's gradient: dW [out, in] then db [out], in one buffer.
struct LayerGradient {
  mem::HostVector<float> values;
  int64_t weights = 0;
  std::span<float> dw() { return {values.data(), at(weights)}; }
  std::span<float> db() { return {values.data() + weights, values.size() - at(weights)}; }
};

// Steps `layers` together (one optimizer step over their tensors); false when it was skipped for a
// non-finite gradient.
bool step_layers(const MlpShape& shape, const Hyper& hyper, int64_t step, double lr, std::span<float> params,
                 std::span<float> momentum, const std::vector<int64_t>& layers, std::vector<std::optional<LayerGradient>>& grads) {
  TensorList list;
  if (hyper.momentum != 0.0) list.states_f32.resize(1);
  for (int64_t l : layers) {
    LayerGradient& g = *grads[at(l)];
    const int64_t w_count = shape.out_of(l) * shape.in_of(l);
    const int64_t b_count = shape.out_of(l);
    list.params_f32.push_back(slice(params, shape.weight_offset(l), w_count));
    list.params_f32.push_back(slice(params, shape.bias_offset(l), b_count));
    list.grads_f32.push_back(g.dw());
    list.grads_f32.push_back(g.db());
    if (hyper.momentum != 0.0) {
      list.states_f32[0].push_back(slice(momentum, shape.weight_offset(l), w_count));
      list.states_f32[0].push_back(slice(momentum, shape.bias_offset(l), b_count));
    }
  }
  StepOptions options;  // allow_nonfinite = false: a NaN/Inf gradient skips the step, untouched
  return gauge::reference::optim::step(hyper, Precision::fp32, Math::fp64, list, step, lr, options).applied;
}

}  // namespace

std::string shape_problem(const MlpShape& s) {
  if (s.batch < 1 || s.features < 1 || s.hidden < 1 || s.classes < 1) {
    return "MLP shape: batch, features, hidden and classes must be positive (got batch " + std::to_string(s.batch) +
           ", features " + std::to_string(s.features) + ", hidden " + std::to_string(s.hidden) + ", classes " +
           std::to_string(s.classes) + ")";
  }
  if (s.layers < 2) return "MLP shape: at least 2 Linear layers, got " + std::to_string(s.layers);
  return "";
}

void validate(const MlpShape& s) {
  const std::string problem = shape_problem(s);
  if (!problem.empty()) throw UsageError(problem);
}

MlpStepResult mlp_sgd_step(const MlpShape& shape, const Hyper& hyper, int64_t step, double lr,
                           GradientRelease release, std::span<const float> x, std::span<const int32_t> labels,
                           std::span<float> params, std::span<float> momentum) {
  validate(shape);
  if (hyper.algorithm != Algorithm::sgd) throw UsageError("mlp_sgd_step: the optimizer must be SGD");
  gauge::optim::validate(hyper);
  const int64_t L = shape.layers;
  if (static_cast<int64_t>(x.size()) != shape.batch * shape.features) {
    throw UsageError("mlp_sgd_step: x has " + std::to_string(x.size()) + " elements, expected batch x features = " +
                     std::to_string(shape.batch * shape.features));
  }
  if (static_cast<int64_t>(labels.size()) != shape.batch) throw UsageError("mlp_sgd_step: one label per row expected");
  if (static_cast<int64_t>(params.size()) != shape.parameter_count() ||
      (hyper.momentum != 0.0 && momentum.size() != params.size())) {
    throw UsageError("mlp_sgd_step: params and momentum must hold " + std::to_string(shape.parameter_count()) +
                     " elements");
  }
  const auto weights = [&](int64_t l) -> std::span<const float> {
    return slice(params, shape.weight_offset(l), shape.out_of(l) * shape.in_of(l));
  };
  const auto bias = [&](int64_t l) -> std::span<const float> {
    return slice(params, shape.bias_offset(l), shape.out_of(l));
  };

  // Forward: h[l] is the input of layer l (h[0] = x, not owned); h[L] holds the logits.
  std::vector<std::optional<mem::HostVector<float>>> h(at(L + 1));
  const auto input_of = [&](int64_t l) -> std::span<const float> {
    return l == 0 ? x : std::span<const float>(*h[at(l)]);
  };
  for (int64_t l = 0; l < L; ++l) {
    h[at(l + 1)].emplace(at(shape.batch * shape.out_of(l)));
    std::span<float> y(*h[at(l + 1)]);
    nn::linear_forward({shape.batch, shape.in_of(l), shape.out_of(l)}, input_of(l), weights(l), bias(l), y);
    if (l < L - 1) nn::activation_forward(nn::Activation::relu, y, y);
  }
  MlpStepResult result;
  result.loss = nn::softmax_cross_entropy_forward(shape.batch, shape.classes, *h[at(L)], labels, {});

  // Backward, last layer first.
  std::optional<mem::HostVector<float>> dy(std::in_place, at(shape.batch * shape.classes));
  nn::softmax_cross_entropy_backward(shape.batch, shape.classes, *h[at(L)], labels, 1.0f, *dy);
  std::vector<std::optional<LayerGradient>> grads(at(L));
  for (int64_t l = L - 1; l >= 0; --l) {
    const int64_t w_count = shape.out_of(l) * shape.in_of(l);
    grads[at(l)].emplace(LayerGradient{mem::HostVector<float>(at(w_count + shape.out_of(l))), w_count});
    std::optional<mem::HostVector<float>> dx;
    if (l > 0) dx.emplace(at(shape.batch * shape.in_of(l)));
    nn::linear_backward({shape.batch, shape.in_of(l), shape.out_of(l)}, input_of(l), weights(l), *dy,
                        dx ? std::span<float>(*dx) : std::span<float>(), grads[at(l)]->dw(), grads[at(l)]->db());
    // relu'(z) = [z > 0] = [h > 0] with h = relu(z): the stored output stands in for the input.
    if (dx) nn::activation_backward(nn::Activation::relu, *h[at(l)], *dx, *dx);
    dy = std::move(dx);
    h[at(l + 1)].reset();  // the output of layer l (the logits for the last) is no longer needed
    if (release == GradientRelease::in_backward) {
      // W_l was read by this layer's backward just above, so it may change now.
      if (!step_layers(shape, hyper, step, lr, params, momentum, {l}, grads)) result.skipped_layers.push_back(l);
      grads[at(l)].reset();
    }
  }
  if (release == GradientRelease::after_backward) {
    std::vector<int64_t> all;
    for (int64_t l = 0; l < L; ++l) all.push_back(l);
    if (!step_layers(shape, hyper, step, lr, params, momentum, all, grads)) result.skipped_layers = all;
  }
  std::sort(result.skipped_layers.begin(), result.skipped_layers.end());
  return result;
}

int64_t predicted_peak_bytes(const MlpShape& s, GradientRelease release) {
  validate(s);
  // reference/nn's linear_backward holds max(in, rows) doubles of row sums while it runs.
  const auto linear_backward_scratch = [&](int64_t l) { return 8 * std::max(s.in_of(l), s.batch); };
  int64_t live = 0, peak = 0;
  const auto allocate = [&](int64_t bytes) { live += bytes; peak = std::max(peak, live); };
  const auto transient = [&](int64_t bytes) { peak = std::max(peak, live + bytes); };
  for (int64_t l = 0; l < s.layers; ++l) allocate(4 * s.batch * s.out_of(l));  // h_1 .. h_{L-1}, logits
  allocate(4 * s.batch * s.classes);                                             // dlogits
  int64_t dy_bytes = 4 * s.batch * s.classes;
  for (int64_t l = s.layers - 1; l >= 0; --l) {
    const int64_t grad_bytes = 4 * (s.out_of(l) * s.in_of(l) + s.out_of(l));
    allocate(grad_bytes);
    const int64_t dx_bytes = l > 0 ? 4 * s.batch * s.in_of(l) : 0;
    allocate(dx_bytes);
    transient(linear_backward_scratch(l));
    live -= dy_bytes;                  // dy replaced by dx
    dy_bytes = dx_bytes;
    live -= 4 * s.batch * s.out_of(l);  // h_{l+1} (or the logits)
    if (release == GradientRelease::in_backward) live -= grad_bytes;
  }
  return peak;
}

}  // namespace gauge::reference::optim
