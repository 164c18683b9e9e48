#include "optimized/optim/step_in_backward.h"

#include <algorithm>
#include <string>
#include <vector>

#include "harness/dtype.h"
#include "harness/error.h"
#include "optimized/nn/layers.h"

namespace gauge::optimized::optim {

namespace nn = gauge::optimized::nn;

namespace {

constexpr size_t kAlignment = 256;  // the pool's own granularity; keeps every buffer 16-byte aligned
size_t padded(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }
size_t floats(int64_t n) { return static_cast<size_t>(n) * sizeof(float); }

int64_t largest_layer_parameters(const MlpShape& s) {
  int64_t largest = 0;
  for (int64_t l = 0; l < s.layers; ++l) largest = std::max(largest, s.out_of(l) * s.in_of(l) + s.out_of(l));
  return largest;
}

int64_t widest(const MlpShape& s) { return std::max({s.features, s.hidden, s.classes}); }

void check_shape(const MlpShape& s, const gauge::optim::Hyper& hyper) {
  if (s.batch < 1 || s.features < 1 || s.hidden < 1 || s.classes < 1 || s.layers < 2) {
    throw UsageError("MlpSgdStep: sizes must be positive and layers >= 2");
  }
  if (hyper.algorithm != gauge::optim::Algorithm::sgd) throw UsageError("MlpSgdStep: the optimizer must be SGD");
  if (s.features % 4 != 0 || s.hidden % 4 != 0) {
    throw UsageError("MlpSgdStep: features and hidden must be multiples of 4 (16-byte aligned weight slices), got " +
                     std::to_string(s.features) + " and " + std::to_string(s.hidden));
  }
}

// The sizes of every buffer, in allocation order; device_bytes() and the constructor both walk it.
struct BufferSizes {
  std::vector<size_t> pre_activations;  // z_l [batch, out_l], l = 0 .. L-1 (z_{L-1} are the logits)
  std::vector<size_t> activations;      // h_{l+1} = relu(z_l), l = 0 .. L-2
  size_t gradient_rotation = 0;         // three [batch, widest] buffers for dy, dx, dz
  size_t gradients = 0;                 // every parameter, or the largest layer's
  size_t row_losses = 0;
  size_t mean_loss = 0;
  size_t status = 0;  // one int per StepPlan: 1 when its step was skipped for a NaN/Inf gradient
};

BufferSizes buffer_sizes(const MlpShape& s, GradientRelease release) {
  BufferSizes b;
  for (int64_t l = 0; l < s.layers; ++l) b.pre_activations.push_back(floats(s.batch * s.out_of(l)));
  for (int64_t l = 0; l + 1 < s.layers; ++l) b.activations.push_back(floats(s.batch * s.out_of(l)));
  b.gradient_rotation = floats(s.batch * widest(s));
  b.gradients = floats(release == GradientRelease::after_backward ? s.parameter_count() : largest_layer_parameters(s));
  b.row_losses = floats(s.batch);
  b.mean_loss = floats(1);
  b.status = sizeof(int) * static_cast<size_t>(release == GradientRelease::after_backward ? 1 : s.layers);
  return b;
}

// The StepPlan workspace of a list of (W, b) tensor sizes.
size_t plan_bytes(const std::vector<int64_t>& sizes) { return StepPlan::workspace_bytes_bound(sizes); }

std::vector<int64_t> layer_sizes(const MlpShape& s, int64_t l) { return {s.out_of(l) * s.in_of(l), s.out_of(l)}; }

std::vector<int64_t> all_sizes(const MlpShape& s) {
  std::vector<int64_t> sizes;
  for (int64_t l = 0; l < s.layers; ++l) {
    for (int64_t n : layer_sizes(s, l)) sizes.push_back(n);
  }
  return sizes;
}

}  // namespace

struct MlpSgdStep::Impl {
  MlpShape shape;
  gauge::optim::Hyper hyper;
  GradientRelease release = GradientRelease::after_backward;
  const float* x = nullptr;
  const int32_t* labels = nullptr;
  const float* params = nullptr;  // read by the layers; the StepPlans write them
  std::vector<std::unique_ptr<nn::LinearPlan>> linear;
  void* linear_workspace = nullptr;
  std::vector<float*> z, h;
  float* rotation[3] = {nullptr, nullptr, nullptr};
  float* gradients = nullptr;
  float* row_losses = nullptr;
  float* mean_loss = nullptr;
  int* status = nullptr;        // [plans.size()]
  std::vector<StepPlan> plans;  // one over every tensor (after_backward) or one per layer (in_backward)

  // Where layer l's dW and db go.
  float* dw(int64_t l) const {
    return release == GradientRelease::after_backward ? gradients + shape.weight_offset(l) : gradients;
  }
  float* db(int64_t l) const {
    return release == GradientRelease::after_backward ? gradients + shape.bias_offset(l)
                                                      : gradients + shape.out_of(l) * shape.in_of(l);
  }
};

MlpSgdStep::MlpSgdStep(cublasLtContext* handle, const MlpShape& shape, const gauge::optim::Hyper& hyper,
                       GradientRelease release, const float* x, const int32_t* labels, float* params,
                       float* momentum, const Allocator& allocate, StreamHandle stream)
    : impl_(std::make_unique<Impl>()) {
  check_shape(shape, hyper);
  Impl& m = *impl_;
  m.shape = shape;
  m.hyper = hyper;
  m.release = release;
  m.x = x;
  m.labels = labels;
  m.params = params;
  size_t linear_workspace = 0;
  for (int64_t l = 0; l < shape.layers; ++l) {
    m.linear.push_back(std::make_unique<nn::LinearPlan>(
        handle, nn::LinearShape{shape.batch, shape.in_of(l), shape.out_of(l)}, DType::f32, /*has_bias=*/true));
    linear_workspace = std::max(linear_workspace, m.linear.back()->workspace_bytes());
  }
  const auto take = [&](size_t bytes) { return static_cast<float*>(allocate(padded(bytes))); };
  m.linear_workspace = allocate(padded(std::max<size_t>(linear_workspace, 1)));
  const BufferSizes sizes = buffer_sizes(shape, release);
  for (size_t bytes : sizes.pre_activations) m.z.push_back(take(bytes));
  for (size_t bytes : sizes.activations) m.h.push_back(take(bytes));
  for (float*& r : m.rotation) r = take(sizes.gradient_rotation);
  m.gradients = take(sizes.gradients);
  m.row_losses = take(sizes.row_losses);
  m.mean_loss = take(sizes.mean_loss);
  m.status = static_cast<int*>(allocate(padded(sizes.status)));

  const bool with_momentum = hyper.momentum != 0.0;
  const auto add_layer = [&](TensorList& list, int64_t l) {
    const int64_t w_count = shape.out_of(l) * shape.in_of(l);
    list.params.push_back(params + shape.weight_offset(l));
    list.params.push_back(params + shape.bias_offset(l));
    list.grads.push_back(m.dw(l));
    list.grads.push_back(m.db(l));
    if (with_momentum) {
      list.states[0].push_back(momentum + shape.weight_offset(l));
      list.states[0].push_back(momentum + shape.bias_offset(l));
    }
    list.sizes.push_back(w_count);
    list.sizes.push_back(shape.out_of(l));
  };
  const auto new_list = [&] {
    TensorList list;
    list.states.resize(with_momentum ? 1 : 0);
    return list;
  };
  if (release == GradientRelease::after_backward) {
    TensorList list = new_list();
    for (int64_t l = 0; l < shape.layers; ++l) add_layer(list, l);
    m.plans.emplace_back(list, gauge::optim::Precision::fp32, hyper, allocate, stream);
  } else {
    for (int64_t l = 0; l < shape.layers; ++l) {
      TensorList list = new_list();
      add_layer(list, l);
      m.plans.emplace_back(list, gauge::optim::Precision::fp32, hyper, allocate, stream);
    }
  }
}

MlpSgdStep::~MlpSgdStep() = default;

const float* MlpSgdStep::loss_device() const { return impl_->mean_loss; }
const int* MlpSgdStep::skipped_device() const { return impl_->status; }
int64_t MlpSgdStep::skip_flags() const { return static_cast<int64_t>(impl_->plans.size()); }

void MlpSgdStep::step(int64_t step, double lr, StreamHandle stream) const {
  const Impl& m = *impl_;
  const MlpShape& s = m.shape;
  const int64_t L = s.layers;
  const gauge::optim::StepOptions options;  // NaN/Inf gradients skip the step, as the reference
  const auto weights = [&](int64_t l) { return m.params + s.weight_offset(l); };
  const auto bias = [&](int64_t l) { return m.params + s.bias_offset(l); };
  const auto input_of = [&](int64_t l) -> const void* { return l == 0 ? static_cast<const void*>(m.x) : m.h[static_cast<size_t>(l - 1)]; };

  // Forward: z_l = h_l W_l^T + b_l (bias fused), h_{l+1} = relu(z_l).
  for (int64_t l = 0; l < L; ++l) {
    m.linear[static_cast<size_t>(l)]->forward(input_of(l), weights(l), bias(l), m.z[static_cast<size_t>(l)],
                                              m.linear_workspace, stream);
    if (l + 1 < L) {
      nn::bias_activation_forward(nn::Activation::relu, {s.batch, s.out_of(l)}, DType::f32, m.z[static_cast<size_t>(l)],
                                  nullptr, m.h[static_cast<size_t>(l)], stream);
    }
  }
  const float* logits = m.z[static_cast<size_t>(L - 1)];
  nn::softmax_cross_entropy_forward(s.batch, s.classes, DType::f32, logits, m.labels, m.row_losses, m.mean_loss, stream);

  // Backward through three rotating buffers: dy (into this layer), dx (out of its Linear), dz (dx
  // through the previous layer's relu), which becomes the next dy.
  int dy = 0;
  nn::softmax_cross_entropy_backward(s.batch, s.classes, DType::f32, logits, m.labels, 1.0f, m.rotation[dy], stream);
  for (int64_t l = L - 1; l >= 0; --l) {
    const int dx = (dy + 1) % 3, dz = (dy + 2) % 3;
    m.linear[static_cast<size_t>(l)]->backward(input_of(l), weights(l), m.rotation[dy], l > 0 ? m.rotation[dx] : nullptr,
                                               m.dw(l), m.db(l), m.linear_workspace, stream);
    if (l > 0) {
      // relu'(z_{l-1}) on the stored pre-activation.
      nn::activation_backward(nn::Activation::relu, s.batch * s.in_of(l), DType::f32, m.z[static_cast<size_t>(l - 1)],
                              m.rotation[dx], m.rotation[dz], stream);
    }
    // W_l has been read by its backward just above (stream order), so it may change now; layer
    // l - 1 then overwrites the same gradient buffer.
    if (m.release == GradientRelease::in_backward) {
      m.plans[static_cast<size_t>(l)].step(step, lr, options, m.status + l, nullptr, stream);
    }
    dy = dz;
  }
  if (m.release == GradientRelease::after_backward) m.plans[0].step(step, lr, options, m.status, nullptr, stream);
}

size_t MlpSgdStep::device_bytes(const MlpShape& s, GradientRelease release) {
  size_t total = 0;
  const BufferSizes sizes = buffer_sizes(s, release);
  for (size_t bytes : sizes.pre_activations) total += padded(bytes);
  for (size_t bytes : sizes.activations) total += padded(bytes);
  total += 3 * padded(sizes.gradient_rotation) + padded(sizes.gradients) + padded(sizes.row_losses) +
           padded(sizes.mean_loss) + padded(sizes.status);
  if (release == GradientRelease::after_backward) {
    total += plan_bytes(all_sizes(s));
  } else {
    for (int64_t l = 0; l < s.layers; ++l) total += plan_bytes(layer_sizes(s, l));
  }
  return total;  // plus the Linear workspace, known only once cuBLASLt has picked its algorithms
}

}  // namespace gauge::optimized::optim
