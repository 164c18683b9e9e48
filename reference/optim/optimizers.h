// Reference optimizer steps over a list of parameter tensors: the definition of correct for gauge.
// Semantics are PyTorch's torch.optim (single-tensor code paths, maximize=False, PyTorch 2.x), written
// out here per element; d is the gradient after clipping, t the step number (1-based), lr the learning
// rate of this step (schedule applied, reference/optim/schedule.h).
//
// Coupled weight decay (SGD, AdaGrad, RMSprop, Adam):   d = d + weight_decay * p   (when non-zero:
// PyTorch skips the term for 0, so 0 * Inf never makes a NaN)
//
// SGD        if momentum != 0:
//              buf = d                                      at t = 1 (PyTorch clones the gradient)
//              buf = momentum * buf + (1 - dampening) * d   at t > 1
//              d = nesterov ? d + momentum * buf : buf
//            p = p - lr * d
// AdaGrad    clr = lr / (1 + (t - 1) * lr_decay)
//            sum = sum + d * d                   (sum starts at initial_accumulator_value)
//            p = p - clr * (d / (sqrt(sum) + eps))
// RMSprop    square_avg = alpha * square_avg + (1 - alpha) * d * d
//            centered:  grad_avg = alpha * grad_avg + (1 - alpha) * d   (PyTorch's lerp, same value)
//                       avg = sqrt(square_avg - grad_avg * grad_avg) + eps
//            otherwise: avg = sqrt(square_avg) + eps
//            momentum > 0:  buf = momentum * buf + d / avg;  p = p - lr * buf
//            otherwise:     p = p - lr * (d / avg)
// Adam       AdamW only, decoupled decay first:  p = p * (1 - lr * weight_decay)   (when non-zero)
//            m = beta1 * m + (1 - beta1) * d
//            v = beta2 * v + (1 - beta2) * d * d
//            amsgrad: v_max = max(v_max, v) (NaN if either is, as torch.maximum), v_max replaces v below
//            denom = sqrt(v) / sqrt(1 - beta2^t) + eps       (eps after the bias-corrected root)
//            p = p - (lr / (1 - beta1^t)) * (m / denom)
//
// Gradient clipping (StepOptions::max_grad_norm > 0), PyTorch's clip_grad_norm_: the global L2 norm
// over every gradient element of every tensor, coef = max_grad_norm / (norm + 1e-6), and every
// gradient is multiplied by coef when coef < 1 (or NaN, as torch.clamp propagates it). The clipped
// gradient lives only inside the step (fused); the gradient buffers are not written.
//
// Non-finite gradients: when any gradient element is NaN or Inf the step is skipped, nothing is
// written, and the report says where; with StepOptions::allow_nonfinite the step runs and the
// non-finite values propagate, as in PyTorch. A caller does not advance its step count for a skipped
// step (as torch.cuda.amp.GradScaler skips optimizer.step()).
//
// Precisions (gauge::optim::Precision) and what is stored:
//   fp32             p, d, states fp32.
//   bf16_master      p and gradients bf16; an fp32 master copy of p and fp32 states. The update reads
//                    and writes the master; then p = RNE bf16 of the stored master.
//   bf16_stochastic  p, gradients and states bf16; each stored value is written with the stochastic
//                    rounding of reference/precision/stochastic_rounding.h, keyed by (options.seed,
//                    gauge::optim::stochastic_rounding_tensor_id(tensor, slot), element, t).
// The update is computed from the stored values in registers (nothing intermediate is stored), and
// every stored value is rounded once per step into its format, with:
//   Math::fp64  every operation in double: the truth.
//   Math::fp32  every operation in float, in the order written above (per-step scalars such as
//               lr / (1 - beta1^t) are computed in double and converted once, as PyTorch computes
//               them in Python floats): the faithful low-precision reference. Its clipping norm is
//               a plain sequential fp32 sum of squares.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "reference/optim/config.h"

namespace gauge::reference::optim {

using gauge::optim::Algorithm;
using gauge::optim::Hyper;
using gauge::optim::Precision;
using gauge::optim::StepOptions;

enum class Math : uint8_t { fp64, fp32 };

// Host views of a parameter list, one entry per tensor; which members are used follows the precision
// (the others stay empty), element formats as in optimized/optim/multi_tensor.h. bf16 is carried as
// raw bits in uint16_t. States are indexed [state][tensor], in gauge::optim::state_names order.
struct TensorList {
  std::vector<std::span<float>> params_f32;                    // fp32
  std::vector<std::span<uint16_t>> params_bf16;                // bf16_master, bf16_stochastic
  std::vector<std::span<float>> master;                        // bf16_master
  std::vector<std::span<const float>> grads_f32;               // fp32
  std::vector<std::span<const uint16_t>> grads_bf16;           // bf16_master, bf16_stochastic
  std::vector<std::vector<std::span<float>>> states_f32;       // fp32, bf16_master
  std::vector<std::vector<std::span<uint16_t>>> states_bf16;   // bf16_stochastic
};

struct StepReport {
  bool applied = false;
  double grad_norm = 0.0;  // when clipping, the global L2 norm before clipping (as the step computed it); Inf/NaN when skipped
  double clip_coefficient = 1.0;  // the factor applied to every gradient (1 when not clipping)
  std::string skipped_because;    // one line, when !applied
};

// Throws gauge::UsageError (one line) when the list does not match the precision and the
// hyper-parameters: a missing or extra member, tensor counts that differ, a state count other than
// gauge::optim::state_count(hyper), or a tensor whose parameter, gradient, master and states differ
// in length.
void check_tensor_list(const TensorList& list, Precision precision, const Hyper& hyper);

// One optimizer step, number `step` (>= 1), with learning rate `lr` (schedule applied), in place.
// Validates everything first (gauge::optim::validate, lr, step, options, check_tensor_list) and
// throws gauge::UsageError for bad input.
StepReport step(const Hyper& hyper, Precision precision, Math math, const TensorList& list, int64_t step, double lr,
                const StepOptions& options);

// Gradient accumulation over k micro-batches (fp32, or bf16 widened exactly) into an fp32 buffer:
// mean = (g_1 + ... + g_k) / k, elementwise, computed in double and rounded once to fp32 (the mean PyTorch users get by scaling each
// micro-batch loss by 1/k; Megatron-style fp32 gradient buffers hold it for bf16 training too). Every
// micro-batch must have the mean's length; UsageError otherwise or when there is none.
void accumulate_mean(const std::vector<std::span<const float>>& micro_batches, std::span<float> mean);
void accumulate_mean(const std::vector<std::span<const uint16_t>>& micro_batches_bf16, std::span<float> mean);

}  // namespace gauge::reference::optim
