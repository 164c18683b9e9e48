// Optimizer configuration: plain data and its validation, shared by the reference and the optimized
// side (no arithmetic lives here). Semantics follow PyTorch's torch.optim; each algorithm's update is
// written out in reference/optim/optimizers.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gauge::optim {

enum class Algorithm : uint8_t { sgd, adagrad, rmsprop, adam, adamw };

// How parameters, gradients and optimizer states are stored.
enum class Precision : uint8_t {
  fp32,                  // fp32 parameters, gradients and states
  bf16_master,           // bf16 parameters and gradients; fp32 master weights and fp32 states
  bf16_stochastic,       // bf16 parameters, gradients and states, written back with stochastic rounding
};

struct Hyper {
  Algorithm algorithm = Algorithm::adamw;
  double lr = 1e-3;
  double weight_decay = 0.0;  // coupled (L2 added to the gradient) except for AdamW (decoupled)
  // SGD
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  // AdaGrad
  double lr_decay = 0.0;
  double initial_accumulator_value = 0.0;
  // RMSprop (alpha, centered; momentum above)
  double alpha = 0.99;
  bool centered = false;
  // Adam / AdamW
  double beta1 = 0.9;
  double beta2 = 0.999;
  bool amsgrad = false;
  double eps = 1e-8;  // AdaGrad default 1e-10, RMSprop 1e-8, Adam 1e-8
};

enum class ScheduleShape : uint8_t { constant, linear, cosine };

// Linear warm-up from 0 over `warmup_steps`, then constant, or linear / cosine decay from the base
// learning rate to `floor_lr` at `total_steps`.
struct Schedule {
  int64_t warmup_steps = 0;
  ScheduleShape after_warmup = ScheduleShape::constant;
  int64_t total_steps = 0;
  double floor_lr = 0.0;
};

struct StepOptions {
  double max_grad_norm = 0.0;    // > 0: clip by the global L2 norm over all tensors (PyTorch clip_grad_norm_)
  bool allow_nonfinite = false;  // false: a NaN/Inf gradient is reported and the step is skipped
  uint64_t seed = 0;             // stochastic rounding stream (bf16_stochastic)
};

// Number of fp32-equivalent state tensors the algorithm keeps per parameter tensor (momentum buffer,
// exp_avg, exp_avg_sq, max_exp_avg_sq, grad_avg, ...), given its options.
int state_count(const Hyper& h);

// Throws gauge::UsageError with one line naming the bad value: a negative or non-finite lr or eps,
// a beta or alpha outside [0, 1), momentum or dampening outside [0, 1], nesterov without momentum or
// with dampening, a negative weight decay, lr_decay or initial accumulator value, a schedule whose
// warm-up exceeds its total.
void validate(const Hyper& h);
void validate(const Schedule& s);

std::string algorithm_name(Algorithm a);
std::string precision_name(Precision p);

// Names of the states in the order of TensorList::states (optimized/optim/multi_tensor.h) and of the
// reference (reference/optim/optimizers.h), PyTorch's state keys:
//   sgd      momentum_buffer (only when momentum != 0)
//   adagrad  sum
//   rmsprop  square_avg, momentum_buffer (momentum > 0), grad_avg (centered)
//   adam(w)  exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad)
// Initial values: zero, except AdaGrad's sum = initial_accumulator_value.
std::vector<std::string> state_names(const Hyper& h);

// Stochastic rounding keys (bf16_stochastic). Every stored value of a step draws its own Philox word,
// as defined in reference/precision/stochastic_rounding.h, keyed by (StepOptions::seed, tensor id,
// element index within the tensor, step), with the tensor id numbering the stored quantities of
// parameter tensor i: slot 0 is the parameter, slot 1 + k is state k (in state_names order).
inline constexpr uint32_t kStochasticRoundingSlots = 4;
constexpr uint32_t stochastic_rounding_tensor_id(uint32_t tensor_index, uint32_t slot) {
  return tensor_index * kStochasticRoundingSlots + slot;
}

}  // namespace gauge::optim
