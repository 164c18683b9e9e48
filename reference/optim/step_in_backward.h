// One training step of a small MLP with the optimizer step either after the whole backward pass or
// fused into it: the reference for "step-in-backward" (issue: optimizers). With the fusion, each
// layer's parameters are stepped as soon as its gradient is complete and the gradient buffer is freed
// at once, so at most one layer's gradient is ever live instead of all of them.
//
// The network (layers >= 2 Linear layers, PyTorch weight layout [out, in]):
//     h_0 = x [batch, features];  h_{l+1} = relu(h_l W_l^T + b_l) for l < layers - 1  (width `hidden`);
//     logits = h_{L-1} W_{L-1}^T + b_{L-1}  [batch, classes];  loss = mean softmax cross-entropy.
// Forward and backward use reference/nn (fp64 accumulation, fp32 storage); the optimizer is SGD with
// momentum (PyTorch semantics, reference/optim/optimizers.h, Math::fp64), chosen because its update
// is linear in the gradient, so the CUDA side's accumulation error maps straight into the parameters
// (with Adam, m / sqrt(v) turns a tiny gradient error near zero into an lr-sized jump).
//
// Both orders give bit-identical parameters and momenta: the update of one tensor depends only on
// that tensor's gradient. (Global-norm clipping cannot be fused this way, since the norm needs every
// gradient before any step; the step takes no clipping option.)
//
// Buffers, all from the counting allocator, in the order the ledger model (predicted_peak_bytes)
// walks them: forward keeps h_1 .. h_{L-1} and the logits; backward allocates dlogits, then per layer
// l = L-1 .. 0: the gradient of (W_l, b_l), dh_l (l > 0) = dy W_l masked by relu'(h_l); then frees
// dy and h_l (the logits for l = L-1). after_backward keeps every gradient until the single step at
// the end; in_backward steps layer l and frees its gradient before moving to l - 1.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "reference/optim/config.h"

namespace gauge::reference::optim {

using gauge::optim::Algorithm;
using gauge::optim::Hyper;

struct MlpShape {
  int64_t batch = 0;
  int64_t features = 0;
  int64_t hidden = 0;
  int64_t classes = 0;
  int64_t layers = 0;  // Linear layers, >= 2

  int64_t in_of(int64_t layer) const { return layer == 0 ? features : hidden; }
  int64_t out_of(int64_t layer) const { return layer == layers - 1 ? classes : hidden; }
  // Offsets of W_l and b_l in the flat parameter buffer: W_0, b_0, W_1, b_1, ... (plain layout, used
  // by the CUDA side too).
  int64_t weight_offset(int64_t layer) const {
    int64_t offset = 0;
    for (int64_t l = 0; l < layer; ++l) offset += out_of(l) * in_of(l) + out_of(l);
    return offset;
  }
  int64_t bias_offset(int64_t layer) const { return weight_offset(layer) + out_of(layer) * in_of(layer); }
  int64_t parameter_count() const { return weight_offset(layers); }
  int64_t gradient_bytes() const { return parameter_count() * 4; }
};
// One line naming the problem (a non-positive size, fewer than 2 layers), or empty when the shape is
// valid; validate() throws it as gauge::UsageError.
std::string shape_problem(const MlpShape& shape);
void validate(const MlpShape& shape);

enum class GradientRelease : uint8_t {
  after_backward,  // every gradient kept until one optimizer step at the end (the usual loop)
  in_backward,     // each layer stepped as soon as its gradient is complete, then its gradient freed
};

struct MlpStepResult {
  double loss = 0;  // before the step
  // Layers left untouched (parameters and momentum) because a gradient they would be stepped with
  // holds a NaN or +-Inf, in increasing order. after_backward is all or nothing: one non-finite
  // gradient anywhere skips every layer, as one optimizer.step() over all parameters does.
  // in_backward decides per layer, when that layer's gradient is complete: layers stepped before a
  // later (closer to the input) layer shows a NaN cannot be taken back, as with PyTorch's per-parameter
  // step hooks. A NaN in the forward pass poisons every gradient of this network, and both orders
  // then skip every layer; they differ only when some gradients are finite and others are not.
  std::vector<int64_t> skipped_layers;
};

// One step, in place on `params` and `momentum` (flat, MlpShape offsets). `hyper` must be SGD
// (momentum may be 0); `step` is the optimizer step number (1: momentum buffer = gradient). A
// non-finite gradient skips layers as MlpStepResult says; it is reported, not an error.
MlpStepResult mlp_sgd_step(const MlpShape& shape, const Hyper& hyper, int64_t step, double lr,
                           GradientRelease release, std::span<const float> x, std::span<const int32_t> labels,
                           std::span<float> params, std::span<float> momentum);

// The ledger model: the largest number of bytes the step holds at once above what the caller owns
// (x, labels, params, momentum), walking the buffer sequence documented above.
int64_t predicted_peak_bytes(const MlpShape& shape, GradientRelease release);

}  // namespace gauge::reference::optim
