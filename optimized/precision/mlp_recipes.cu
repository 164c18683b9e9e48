// GPU mixed-precision MLP recipes (semantics: mlp_recipes.h).
//
// Napkin math: the model is tiny (~7.0e3 parameters, batch 32), one step is ~6 * 32 * 6.8e3 = 1.3
// MFLOP of GEMMs and ~0.3 MB of state traffic, so a step is bound by launch latency, not by the GPU:
// 6 linear launches (+ dbias reductions), 4 pointwise, 2 loss, up to 12 casts of the six tensors, the
// fused unscale and the fused Adam (one launch for all six tensors each, plus Adam's norm pre-pass,
// which keeps its step counter on the device): ~30 launches, ~2-5 us each, i.e. ~100 us per step.
// The only kernels written here are the two glue kernels below (the device-scaled fp16 store of
// dlogits and the fp32 -> fp64 loss copy), each one pass over a few hundred elements.
#include "optimized/precision/mlp_recipes.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "harness/dtype.h"
#include "harness/error.h"
#include "optimized/nn/layers.h"
#include "optimized/optim/multi_tensor.h"
#include "optimized/precision/casts.h"
#include "optimized/precision/loss_scale.h"
#include "reference/optim/config.h"

namespace gauge::optimized::precision {
namespace {

namespace nn = gauge::optimized::nn;
namespace optim = gauge::optimized::optim;
using gauge::reference::precision::MlpTask;
using gauge::reference::precision::Recipe;

constexpr int kTensors = 6;  // W1, b1, W2, b2, W3, b3
constexpr int kThreads = 256;
// Per-step slices of the batches, labels and losses start on 16-byte boundaries (optimized/nn needs
// 16-byte-aligned pointers): strides rounded up to 4 elements of 4 bytes.
constexpr int64_t kAlign4 = 4;
int64_t round4(int64_t n) { return (n + kAlign4 - 1) / kAlign4 * kAlign4; }

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RuntimeFailure(std::string("mlp recipe: ") + what + ": " + cudaGetErrorString(status));
}

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// dlogits16 = fp16(dlogits32 * scale): the loss scale read on the device, one RNE rounding.
__global__ void scale_to_f16_kernel(const float* __restrict__ in, const float* __restrict__ scale,
                                    __half* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2half_rn(in[i] * *scale);
}

// in: one loss per kAlign4 floats (the aligned per-step slots); out32 / out64: compact.
__global__ void widen_losses_kernel(const float* __restrict__ in, float* __restrict__ out32, double* __restrict__ out64,
                                    int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float loss = in[i * kAlign4];
    out32[i] = loss;
    out64[i] = static_cast<double>(loss);
  }
}

using gauge::reference::precision::compute_dtype;
using gauge::reference::precision::is_f16;

}  // namespace

struct MlpRecipeRunner::Impl {
  MlpTask task;
  Recipe recipe = Recipe::fp32;
  DType compute = DType::f32;
  size_t element_bytes = 4;
  int64_t in[3] = {};
  int64_t out[3] = {};
  int64_t sizes[kTensors] = {};

  std::unique_ptr<nn::LinearPlan> fc[3];
  void* linear_workspace = nullptr;
  std::unique_ptr<optim::StepPlan> step_plan;
  std::unique_ptr<UnscalePlan> unscale_plan;

  // Task data (device, copied from the case's tensors) and the initial scale the upload reads.
  float host_scale = 1.0f;
  int64_t x_stride = 0;       // round4(batch * inputs)
  int64_t label_stride = 0;   // round4(batch)
  float* batches = nullptr;   // [steps, x_stride]
  int32_t* labels = nullptr;  // [steps, label_stride]
  float* init[kTensors] = {};

  // Training state: fp32 weights or fp32 master, 16-bit weights, gradients, Adam states.
  float* weights32[kTensors] = {};  // fp32 weights (fp32) or master (bf16_master, f16_*)
  void* weights16[kTensors] = {};
  float* grads32[kTensors] = {};    // cuBLASLt / column-sum gradients, fp32
  void* grads16[kTensors] = {};     // the recipe's stored gradients
  float* widened[kTensors] = {};    // f16_*: fp32(fp16 g), unscaled in place
  void* m[kTensors] = {};
  void* v[kTensors] = {};

  // Activations (compute format) and loss scratch.
  void* x = nullptr;
  void *z1 = nullptr, *a1 = nullptr, *z2 = nullptr, *a2 = nullptr, *logits = nullptr, *dlogits = nullptr;
  void *da2 = nullptr, *dz2 = nullptr, *da1 = nullptr, *dz1 = nullptr;
  float* logits32 = nullptr;
  float* dlogits32 = nullptr;
  float* row_losses = nullptr;
  float* step_losses = nullptr;  // [steps, kAlign4]: the mean loss of step t at t * kAlign4
  float* losses32 = nullptr;
  float* scale = nullptr;
  float* scale_init = nullptr;
  int32_t* tracker = nullptr;
  float* found_inf = nullptr;
  int* status = nullptr;          // [steps]: 1 where step t's update was skipped (Inf/NaN gradient)
  int64_t* adam_steps = nullptr;  // Adam's t: steps applied so far (StepPlan::step_counted), zeroed by run()

  void enqueue_step(int64_t t, cudaStream_t stream) const;
};

MlpRecipeRunner::MlpRecipeRunner(cublasLtContext* blas, const MlpTask& task, Recipe recipe, const MlpTaskDevice& data,
                                 const Allocator& allocate, StreamHandle stream)
    : impl_(std::make_unique<Impl>()) {
  gauge::reference::precision::validate(task);
  Impl& s = *impl_;
  s.task = task;
  s.recipe = recipe;
  s.compute = compute_dtype(recipe);
  s.element_bytes = s.compute == DType::f32 ? 4 : 2;
  const int64_t in[3] = {task.inputs, task.hidden, task.hidden};
  const int64_t out[3] = {task.hidden, task.hidden, task.classes};
  for (int l = 0; l < 3; ++l) {
    s.in[l] = in[l];
    s.out[l] = out[l];
    s.sizes[2 * l] = out[l] * in[l];
    s.sizes[2 * l + 1] = out[l];
  }
  const auto take = [&](size_t bytes) -> void* {
    void* p = allocate((bytes + 255) / 256 * 256);
    if (p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 != 0) {
      throw RuntimeFailure("mlp recipe: the allocator returned a null or misaligned buffer");
    }
    return p;
  };
  const int64_t B = task.batch;

  // ---- Task data: the case's tensors, laid out per step on 16-byte boundaries ----
  if (data.batches == nullptr || data.labels == nullptr || data.initial == nullptr) {
    throw UsageError("mlp recipe: the task data (batches, labels, initial weights) must be device pointers");
  }
  const auto cs = static_cast<cudaStream_t>(stream);
  s.x_stride = round4(B * task.inputs);
  s.label_stride = round4(B);
  const auto rows_of = [](int64_t n, size_t element) { return static_cast<size_t>(n) * element; };
  s.batches = static_cast<float*>(take(rows_of(task.steps * s.x_stride, sizeof(float))));
  s.labels = static_cast<int32_t*>(take(rows_of(task.steps * s.label_stride, sizeof(int32_t))));
  check(cudaMemcpy2DAsync(s.batches, rows_of(s.x_stride, sizeof(float)), data.batches, rows_of(B * task.inputs, sizeof(float)),
                          rows_of(B * task.inputs, sizeof(float)), static_cast<size_t>(task.steps), cudaMemcpyDeviceToDevice,
                          cs),
        "lay out the batches");
  check(cudaMemcpy2DAsync(s.labels, rows_of(s.label_stride, sizeof(int32_t)), data.labels, rows_of(B, sizeof(int32_t)),
                          rows_of(B, sizeof(int32_t)), static_cast<size_t>(task.steps), cudaMemcpyDeviceToDevice, cs),
        "lay out the labels");
  {
    size_t offset = 0;
    for (int k = 0; k < kTensors; ++k) {
      // Own buffers per tensor: the flat input's offsets need not be 16-byte aligned.
      s.init[k] = static_cast<float*>(take(rows_of(s.sizes[k], sizeof(float))));
      check(cudaMemcpyAsync(s.init[k], data.initial + offset, rows_of(s.sizes[k], sizeof(float)), cudaMemcpyDeviceToDevice,
                            cs),
            "copy the initial weights");
      offset += static_cast<size_t>(s.sizes[k]);
    }
  }
  s.host_scale = recipe == Recipe::f16_scaled ? static_cast<float>(task.scaler.init_scale) : 1.0f;

  // ---- State ----
  const bool pure = recipe == Recipe::bf16_pure;
  for (int k = 0; k < kTensors; ++k) {
    const auto n = static_cast<size_t>(s.sizes[k]);
    s.grads32[k] = static_cast<float*>(take(n * 4));
    if (!pure) s.weights32[k] = static_cast<float*>(take(n * 4));
    if (recipe != Recipe::fp32) {
      s.weights16[k] = take(n * 2);
      s.grads16[k] = take(n * 2);
    }
    if (is_f16(recipe)) s.widened[k] = static_cast<float*>(take(n * 4));
    s.m[k] = take(n * (pure ? 2 : 4));
    s.v[k] = take(n * (pure ? 2 : 4));
  }
  const size_t eb = s.element_bytes;
  s.x = take(static_cast<size_t>(B * task.inputs) * eb);
  for (void** p : {&s.z1, &s.a1, &s.z2, &s.a2, &s.da2, &s.dz2, &s.da1, &s.dz1}) *p = take(static_cast<size_t>(B * task.hidden) * eb);
  s.logits = take(static_cast<size_t>(B * task.classes) * eb);
  s.dlogits = take(static_cast<size_t>(B * task.classes) * eb);
  if (recipe == Recipe::f16_scaled) {
    s.logits32 = static_cast<float*>(take(static_cast<size_t>(B * task.classes) * 4));
    s.dlogits32 = static_cast<float*>(take(static_cast<size_t>(B * task.classes) * 4));
  }
  s.row_losses = static_cast<float*>(take(static_cast<size_t>(B) * 4));
  s.step_losses = static_cast<float*>(take(static_cast<size_t>(task.steps * kAlign4) * 4));
  s.losses32 = static_cast<float*>(take(static_cast<size_t>(task.steps) * 4));
  s.scale = static_cast<float*>(take(4));
  s.scale_init = static_cast<float*>(take(4));
  s.tracker = static_cast<int32_t*>(take(4));
  s.found_inf = static_cast<float*>(take(4));
  s.status = static_cast<int*>(take(static_cast<size_t>(task.steps) * sizeof(int)));
  s.adam_steps = static_cast<int64_t*>(take(sizeof(int64_t)));
  check(cudaMemcpyAsync(s.scale_init, &s.host_scale, sizeof(float), cudaMemcpyHostToDevice, cs), "upload the loss scale");

  // ---- Plans ----
  size_t linear_bytes = 0;
  for (int l = 0; l < 3; ++l) {
    s.fc[l] = std::make_unique<nn::LinearPlan>(blas, nn::LinearShape{B, s.in[l], s.out[l]}, s.compute, /*has_bias=*/true);
    linear_bytes = std::max(linear_bytes, s.fc[l]->workspace_bytes());
  }
  if (linear_bytes > 0) s.linear_workspace = take(linear_bytes);

  optim::TensorList list;
  gauge::optim::Precision precision = gauge::optim::Precision::fp32;
  list.states.resize(2);
  for (int k = 0; k < kTensors; ++k) {
    list.sizes.push_back(s.sizes[k]);
    list.states[0].push_back(s.m[k]);
    list.states[1].push_back(s.v[k]);
    switch (recipe) {
      case Recipe::fp32:
        list.params.push_back(s.weights32[k]);
        list.grads.push_back(s.grads32[k]);
        break;
      case Recipe::bf16_master:
        precision = gauge::optim::Precision::bf16_master;
        list.params.push_back(s.weights16[k]);
        list.grads.push_back(s.grads16[k]);
        list.master.push_back(s.weights32[k]);
        break;
      case Recipe::bf16_pure:
        precision = gauge::optim::Precision::bf16_stochastic;
        list.params.push_back(s.weights16[k]);
        list.grads.push_back(s.grads16[k]);
        break;
      case Recipe::f16_scaled:
      case Recipe::f16_unscaled:
        list.params.push_back(s.weights32[k]);  // the fp32 master
        list.grads.push_back(s.widened[k]);
        break;
    }
  }
  gauge::optim::Hyper hyper;
  hyper.algorithm = gauge::optim::Algorithm::adam;
  hyper.lr = task.lr;
  hyper.beta1 = task.beta1;
  hyper.beta2 = task.beta2;
  hyper.eps = task.eps;
  hyper.weight_decay = 0.0;
  s.step_plan = std::make_unique<optim::StepPlan>(list, precision, hyper, optim::Allocator(take), stream);
  if (recipe == Recipe::f16_scaled) {
    UnscaleList unscale;
    unscale.dtype = DType::f32;
    for (int k = 0; k < kTensors; ++k) {
      unscale.in.push_back(s.widened[k]);
      unscale.out.push_back(s.widened[k]);
      unscale.sizes.push_back(s.sizes[k]);
    }
    s.unscale_plan = std::make_unique<UnscalePlan>(unscale, WorkspaceAllocator(take), stream);
  }
}

MlpRecipeRunner::~MlpRecipeRunner() = default;

const float* MlpRecipeRunner::losses_f32() const { return impl_->losses32; }
const int* MlpRecipeRunner::skipped_device() const { return impl_->status; }
const int64_t* MlpRecipeRunner::adam_steps_device() const { return impl_->adam_steps; }

void MlpRecipeRunner::Impl::enqueue_step(int64_t t, cudaStream_t stream) const {
  const int64_t B = task.batch;
  const bool f32 = recipe == Recipe::fp32;
  const bool f16 = is_f16(recipe);
  const float* x32 = batches + t * x_stride;
  const int32_t* y = labels + t * label_stride;
  const void* w[kTensors];
  for (int k = 0; k < kTensors; ++k) w[k] = f32 ? static_cast<const void*>(weights32[k]) : weights16[k];

  // Forward, every stored activation in the compute format.
  const void* input = x32;
  if (!f32) {
    const auto n = B * task.inputs;
    if (f16) {
      cast_f32_to_f16(x32, static_cast<uint16_t*>(x), n, stream);
    } else {
      cast_f32_to_bf16(x32, static_cast<uint16_t*>(x), n, stream);
    }
    input = x;
  }
  fc[0]->forward(input, w[0], w[1], z1, linear_workspace, stream);
  nn::bias_activation_forward(nn::Activation::gelu_tanh, {B, task.hidden}, compute, z1, nullptr, a1, stream);
  fc[1]->forward(a1, w[2], w[3], z2, linear_workspace, stream);
  nn::bias_activation_forward(nn::Activation::gelu_tanh, {B, task.hidden}, compute, z2, nullptr, a2, stream);
  fc[2]->forward(a2, w[4], w[5], logits, linear_workspace, stream);
  nn::softmax_cross_entropy_forward(B, task.classes, compute, logits, y, row_losses, step_losses + t * kAlign4, stream);

  // Backward from loss_weight * scale * loss.
  const auto loss_weight = static_cast<float>(task.loss_weight);
  if (recipe == Recipe::f16_scaled) {
    // The scale lives on the device: the fp32 gradient of loss_weight * loss, then one scaled fp16 store.
    cast_f16_to_f32(static_cast<const uint16_t*>(logits), logits32, B * task.classes, stream);
    nn::softmax_cross_entropy_backward(B, task.classes, DType::f32, logits32, y, loss_weight, dlogits32, stream);
    scale_to_f16_kernel<<<blocks_for(B * task.classes), kThreads, 0, stream>>>(dlogits32, scale,
                                                                              static_cast<__half*>(dlogits), B * task.classes);
    check(cudaGetLastError(), "scaled dlogits");
  } else {
    nn::softmax_cross_entropy_backward(B, task.classes, compute, logits, y, loss_weight, dlogits, stream);
  }
  fc[2]->backward(a2, w[4], dlogits, da2, grads32[4], grads32[5], linear_workspace, stream);
  nn::activation_backward(nn::Activation::gelu_tanh, B * task.hidden, compute, z2, da2, dz2, stream);
  fc[1]->backward(a1, w[2], dz2, da1, grads32[2], grads32[3], linear_workspace, stream);
  nn::activation_backward(nn::Activation::gelu_tanh, B * task.hidden, compute, z1, da1, dz1, stream);
  fc[0]->backward(input, w[0], dz1, nullptr, grads32[0], grads32[1], linear_workspace, stream);

  // The recipe's stored gradients, then the update.
  gauge::optim::StepOptions options;
  options.seed = task.seed;
  options.allow_nonfinite = recipe != Recipe::f16_scaled;  // only the scaled recipe skips steps
  for (int k = 0; k < kTensors; ++k) {
    if (f16) {
      cast_f32_to_f16(grads32[k], static_cast<uint16_t*>(grads16[k]), sizes[k], stream);
      cast_f16_to_f32(static_cast<const uint16_t*>(grads16[k]), widened[k], sizes[k], stream);
    } else if (!f32) {
      cast_f32_to_bf16(grads32[k], static_cast<uint16_t*>(grads16[k]), sizes[k], stream);
    }
  }
  if (recipe == Recipe::f16_scaled) {
    check(cudaMemsetAsync(found_inf, 0, sizeof(float), stream), "clear found_inf");
    unscale_plan->unscale_and_check(scale, found_inf, stream);
  }
  // Adam's t from the device counter: t = applied steps + 1, and the counter stays put when the
  // pre-pass skips the step. Only f16_scaled skips; the other recipes run with allow_nonfinite, never
  // skip, and get t = step + 1 as before. Nothing else here depends on Adam's t: the host step number
  // only picks the step's batch, labels and loss slot above, which are per training step, skipped or
  // not (as the reference's make_batch(step)). The pure-bf16 recipe's stochastic-rounding keys are
  // the optimizer's (seed, tensor 4 i + slot, element, Adam's t), as they always were; that recipe
  // never skips, so they are the same keys as before.
  step_plan->step_counted(adam_steps, task.lr, options, status + t, nullptr, stream);
  if (f16) {
    for (int k = 0; k < kTensors; ++k) cast_f32_to_f16(weights32[k], static_cast<uint16_t*>(weights16[k]), sizes[k], stream);
  }
  if (recipe == Recipe::f16_scaled) update_scale(scale, tracker, found_inf, task.scaler, stream);
}

void MlpRecipeRunner::run(double* losses_f64, StreamHandle stream) const {
  const Impl& s = *impl_;
  const auto cs = static_cast<cudaStream_t>(stream);
  // Reset: weights / master from the initial draw, zero Adam states, the initial loss scale.
  for (int k = 0; k < kTensors; ++k) {
    const auto n = static_cast<size_t>(s.sizes[k]);
    if (s.weights32[k] != nullptr) {
      check(cudaMemcpyAsync(s.weights32[k], s.init[k], n * 4, cudaMemcpyDeviceToDevice, cs), "reset weights");
    }
    if (s.recipe == Recipe::bf16_master || s.recipe == Recipe::bf16_pure) {
      cast_f32_to_bf16(s.init[k], static_cast<uint16_t*>(s.weights16[k]), s.sizes[k], stream);
    } else if (is_f16(s.recipe)) {
      cast_f32_to_f16(s.init[k], static_cast<uint16_t*>(s.weights16[k]), s.sizes[k], stream);
    }
    const size_t state_bytes = n * (s.recipe == Recipe::bf16_pure ? 2 : 4);
    check(cudaMemsetAsync(s.m[k], 0, state_bytes, cs), "reset m");
    check(cudaMemsetAsync(s.v[k], 0, state_bytes, cs), "reset v");
  }
  check(cudaMemcpyAsync(s.scale, s.scale_init, sizeof(float), cudaMemcpyDeviceToDevice, cs), "reset the loss scale");
  check(cudaMemsetAsync(s.tracker, 0, sizeof(int32_t), cs), "reset the growth tracker");
  check(cudaMemsetAsync(s.adam_steps, 0, sizeof(int64_t), cs), "reset Adam's step counter");
  for (int64_t t = 0; t < s.task.steps; ++t) s.enqueue_step(t, cs);
  widen_losses_kernel<<<blocks_for(s.task.steps), kThreads, 0, cs>>>(s.step_losses, s.losses32, losses_f64, s.task.steps);
  check(cudaGetLastError(), "loss copy");
}

}  // namespace gauge::optimized::precision
