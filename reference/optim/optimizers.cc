// Reference optimizer steps, element by element, in the plainest form: load one element's stored
// values into the math type, apply the algorithm's formulas exactly as written in optimizers.h, store
// each value back with its format's rounding. The same templates run in double (the truth) and in
// float (the faithful low-precision reference), so the two can only differ by rounding.
#include "reference/optim/optimizers.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <sstream>

#include "harness/error.h"
#include "reference/precision/casts.h"
#include "reference/precision/stochastic_rounding.h"

namespace gauge::reference::optim {
namespace {

namespace precision = gauge::reference::precision;
using gauge::optim::stochastic_rounding_tensor_id;

constexpr int kMaxStates = 3;
// PyTorch's clip_grad_norm_ adds this to the norm before dividing, so a zero gradient cannot divide by 0.
constexpr double kClipNormOffset = 1e-6;

std::string show(double value) {
  std::ostringstream out;
  out.precision(17);
  out << value;
  return out.str();
}

// ---- Validation -----------------------------------------------------------------------------------

template <class List>
void require_tensor_count(const char* member, const List& list, size_t expected) {
  if (list.size() != expected) {
    throw UsageError(std::string("optimizer step: ") + member + " lists " + std::to_string(list.size()) +
                     " tensors, the gradients " + std::to_string(expected));
  }
}

template <class List>
void require_empty(const char* member, const List& list, Precision p) {
  if (!list.empty()) {
    throw UsageError(std::string("optimizer step: ") + member + " must be empty for precision " +
                     gauge::optim::precision_name(p));
  }
}

void require_length(size_t tensor, const char* member, size_t length, size_t expected) {
  if (length != expected) {
    throw UsageError("optimizer step: tensor " + std::to_string(tensor) + ": " + member + " has " +
                     std::to_string(length) + " elements, its gradient " + std::to_string(expected));
  }
}

template <class States>
void require_states(const char* member, const States& states, size_t tensors, const Hyper& hyper) {
  const auto expected = static_cast<size_t>(gauge::optim::state_count(hyper));
  if (states.size() != expected) {
    throw UsageError(std::string("optimizer step: ") + member + " has " + std::to_string(states.size()) +
                     " states, " + gauge::optim::algorithm_name(hyper.algorithm) + " with these options keeps " +
                     std::to_string(expected));
  }
  for (size_t k = 0; k < states.size(); ++k) require_tensor_count(member, states[k], tensors);
}

// ---- Loading and storing one element --------------------------------------------------------------

template <class Real>
struct Element {
  Real param = 0;  // the fp32 parameter, the master weight, or the bf16 parameter's value
  Real grad = 0;
  std::array<Real, kMaxStates> state{};
};

double gradient_value(const TensorList& list, Precision p, size_t i, size_t j) {
  if (p == Precision::fp32) return list.grads_f32[i][j];
  return precision::bf16_to_f32(list.grads_bf16[i][j]);
}

size_t tensor_length(const TensorList& list, Precision p, size_t i) {
  return p == Precision::fp32 ? list.grads_f32[i].size() : list.grads_bf16[i].size();
}

template <class Real>
Element<Real> load(const TensorList& list, Precision p, int states, size_t i, size_t j) {
  Element<Real> e;
  e.grad = static_cast<Real>(gradient_value(list, p, i, j));  // fp32 and bf16 values are exact in float
  switch (p) {
    case Precision::fp32:
      e.param = list.params_f32[i][j];
      for (int k = 0; k < states; ++k) e.state[k] = list.states_f32[k][i][j];
      break;
    case Precision::bf16_master:
      e.param = list.master[i][j];
      for (int k = 0; k < states; ++k) e.state[k] = list.states_f32[k][i][j];
      break;
    case Precision::bf16_stochastic:
      e.param = precision::bf16_to_f32(list.params_bf16[i][j]);
      for (int k = 0; k < states; ++k) e.state[k] = precision::bf16_to_f32(list.states_bf16[k][i][j]);
      break;
  }
  return e;
}

// One rounding into each format: double -> float rounds to nearest even; float -> float is exact.
float round_to_f32(double x) { return static_cast<float>(x); }
float round_to_f32(float x) { return x; }
uint16_t round_to_bf16_stochastic(double x, uint32_t word) { return precision::f64_to_bf16_stochastic(x, word); }
uint16_t round_to_bf16_stochastic(float x, uint32_t word) { return precision::f32_to_bf16_stochastic(x, word); }

template <class Real>
void store(const TensorList& list, Precision p, int states, size_t i, size_t j, int64_t step, uint64_t seed,
           const Element<Real>& e) {
  switch (p) {
    case Precision::fp32:
      list.params_f32[i][j] = round_to_f32(e.param);
      for (int k = 0; k < states; ++k) list.states_f32[k][i][j] = round_to_f32(e.state[k]);
      break;
    case Precision::bf16_master:
      list.master[i][j] = round_to_f32(e.param);
      // The bf16 parameter is the RNE cast of the stored master, not of the unrounded value.
      list.params_bf16[i][j] = precision::f32_to_bf16(list.master[i][j]);
      for (int k = 0; k < states; ++k) list.states_f32[k][i][j] = round_to_f32(e.state[k]);
      break;
    case Precision::bf16_stochastic: {
      const auto tensor = static_cast<uint32_t>(i);
      const auto t = static_cast<uint64_t>(step);
      list.params_bf16[i][j] = round_to_bf16_stochastic(
          e.param, precision::stochastic_rounding_word(seed, stochastic_rounding_tensor_id(tensor, 0), j, t));
      for (int k = 0; k < states; ++k) {
        const uint32_t id = stochastic_rounding_tensor_id(tensor, 1 + static_cast<uint32_t>(k));
        list.states_bf16[k][i][j] = round_to_bf16_stochastic(e.state[k], precision::stochastic_rounding_word(seed, id, j, t));
      }
      break;
    }
  }
}

// ---- The algorithms, per element, exactly as written in optimizers.h ---------------------------------
// Hyper-parameters and per-step scalars are doubles (PyTorch's Python floats), converted to the math
// type where they are used; complements such as 1 - beta1 are formed in double first, as PyTorch
// forms them in Python before handing them to its kernels.

template <class Real>
Real as(double x) {
  return static_cast<Real>(x);
}

// The scalars of one step, computed once per step in double.
struct StepScalars {
  int64_t t = 1;
  double lr = 0.0;
  double adagrad_lr = 0.0;                // lr / (1 + (t - 1) * lr_decay)
  double adam_step_size = 0.0;            // lr / (1 - beta1^t)
  double adam_bias_correction2_sqrt = 0;  // sqrt(1 - beta2^t)
  double adamw_decay = 1.0;               // 1 - lr * weight_decay

  StepScalars(const Hyper& h, int64_t step, double learning_rate) : t(step), lr(learning_rate) {
    const auto steps = static_cast<double>(step);
    adagrad_lr = lr / (1.0 + (steps - 1.0) * h.lr_decay);
    adam_step_size = lr / (1.0 - std::pow(h.beta1, steps));
    adam_bias_correction2_sqrt = std::sqrt(1.0 - std::pow(h.beta2, steps));
    adamw_decay = 1.0 - lr * h.weight_decay;
  }
};

// torch.maximum: NaN if either is NaN (std::max would keep v_max when v is NaN).
template <class Real>
Real nan_propagating_max(Real a, Real b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<Real>::quiet_NaN();
  return std::max(a, b);
}

template <class Real>
Real coupled_decay(const Hyper& h, const Element<Real>& e) {
  if (h.weight_decay == 0.0) return e.grad;
  return e.grad + as<Real>(h.weight_decay) * e.param;
}

template <class Real>
void sgd(const Hyper& h, const StepScalars& s, Element<Real>& e) {
  Real d = coupled_decay(h, e);
  if (h.momentum != 0.0) {
    const Real momentum = as<Real>(h.momentum);
    Real& buf = e.state[0];
    if (s.t == 1) {
      buf = d;
    } else {
      buf = momentum * buf + as<Real>(1.0 - h.dampening) * d;
    }
    d = h.nesterov ? d + momentum * buf : buf;
  }
  e.param = e.param - as<Real>(s.lr) * d;
}

template <class Real>
void adagrad(const Hyper& h, const StepScalars& s, Element<Real>& e) {
  const Real d = coupled_decay(h, e);
  const Real clr = as<Real>(s.adagrad_lr);
  Real& sum = e.state[0];
  sum = sum + d * d;
  const Real std_dev = std::sqrt(sum) + as<Real>(h.eps);
  e.param = e.param - clr * (d / std_dev);
}

template <class Real>
void rmsprop(const Hyper& h, const StepScalars& s, Element<Real>& e) {
  const Real d = coupled_decay(h, e);
  const Real alpha = as<Real>(h.alpha);
  const Real one_minus_alpha = as<Real>(1.0 - h.alpha);
  // State slots in gauge::optim::state_names order: square_avg, [momentum_buffer], [grad_avg].
  const bool has_momentum = h.momentum > 0.0;
  const int momentum_slot = 1;
  const int grad_avg_slot = has_momentum ? 2 : 1;
  Real& square_avg = e.state[0];

  square_avg = alpha * square_avg + one_minus_alpha * d * d;
  Real avg;
  if (h.centered) {
    Real& grad_avg = e.state[grad_avg_slot];
    grad_avg = alpha * grad_avg + one_minus_alpha * d;
    avg = std::sqrt(square_avg - grad_avg * grad_avg) + as<Real>(h.eps);
  } else {
    avg = std::sqrt(square_avg) + as<Real>(h.eps);
  }
  if (has_momentum) {
    Real& momentum_buffer = e.state[momentum_slot];
    momentum_buffer = as<Real>(h.momentum) * momentum_buffer + d / avg;
    e.param = e.param - as<Real>(s.lr) * momentum_buffer;
  } else {
    e.param = e.param - as<Real>(s.lr) * (d / avg);
  }
}

template <class Real>
void adam(const Hyper& h, const StepScalars& s, Element<Real>& e) {
  Real d = e.grad;
  if (h.algorithm == Algorithm::adamw) {
    if (h.weight_decay != 0.0) e.param = e.param * as<Real>(s.adamw_decay);
  } else {
    d = coupled_decay(h, e);
  }
  Real& m = e.state[0];
  Real& v = e.state[1];
  Real& v_max = e.state[2];
  m = as<Real>(h.beta1) * m + as<Real>(1.0 - h.beta1) * d;
  v = as<Real>(h.beta2) * v + as<Real>(1.0 - h.beta2) * d * d;
  Real v_used = v;
  if (h.amsgrad) {
    v_max = nan_propagating_max(v_max, v);
    v_used = v_max;
  }
  const Real denom = std::sqrt(v_used) / as<Real>(s.adam_bias_correction2_sqrt) + as<Real>(h.eps);
  e.param = e.param - as<Real>(s.adam_step_size) * (m / denom);
}

template <class Real>
void update(const Hyper& h, const StepScalars& s, Element<Real>& e) {
  switch (h.algorithm) {
    case Algorithm::sgd: sgd(h, s, e); break;
    case Algorithm::adagrad: adagrad(h, s, e); break;
    case Algorithm::rmsprop: rmsprop(h, s, e); break;
    case Algorithm::adam:
    case Algorithm::adamw: adam(h, s, e); break;
  }
}

template <class Real>
void update_all(const Hyper& h, Precision p, const TensorList& list, int64_t t, double lr, std::optional<Real> clip,
                uint64_t seed) {
  const int states = gauge::optim::state_count(h);
  const StepScalars scalars(h, t, lr);
  const size_t tensors = p == Precision::fp32 ? list.grads_f32.size() : list.grads_bf16.size();
  for (size_t i = 0; i < tensors; ++i) {
    const size_t n = tensor_length(list, p, i);
    for (size_t j = 0; j < n; ++j) {
      Element<Real> e = load<Real>(list, p, states, i, j);
      if (clip) e.grad = e.grad * *clip;
      update(h, scalars, e);
      store(list, p, states, i, j, t, seed, e);
    }
  }
}

// ---- Gradient checks and the global norm ----------------------------------------------------------

struct NonFinite {
  size_t tensor;
  size_t element;
  double value;
};

std::optional<NonFinite> first_nonfinite(const TensorList& list, Precision p) {
  const size_t tensors = p == Precision::fp32 ? list.grads_f32.size() : list.grads_bf16.size();
  for (size_t i = 0; i < tensors; ++i) {
    const size_t n = tensor_length(list, p, i);
    for (size_t j = 0; j < n; ++j) {
      const double g = gradient_value(list, p, i, j);
      if (!std::isfinite(g)) return NonFinite{i, j, g};
    }
  }
  return std::nullopt;
}

// Sum of squares of every gradient element, accumulated in Real in list order: in double for the
// truth, and in float, plainly and sequentially, for the faithful reference.
template <class Real>
Real sum_of_squares(const TensorList& list, Precision p) {
  Real sum = 0;
  const size_t tensors = p == Precision::fp32 ? list.grads_f32.size() : list.grads_bf16.size();
  for (size_t i = 0; i < tensors; ++i) {
    const size_t n = tensor_length(list, p, i);
    for (size_t j = 0; j < n; ++j) {
      const auto g = static_cast<Real>(gradient_value(list, p, i, j));
      sum = sum + g * g;
    }
  }
  return sum;
}

template <class Real>
StepReport run_step(const Hyper& h, Precision p, const TensorList& list, int64_t t, double lr,
                    const StepOptions& options) {
  StepReport report;
  const std::optional<NonFinite> bad = first_nonfinite(list, p);
  if (bad && !options.allow_nonfinite) {
    report.grad_norm = std::isnan(bad->value) ? bad->value : std::fabs(bad->value);
    report.skipped_because = "gradient of tensor " + std::to_string(bad->tensor) + " element " +
                             std::to_string(bad->element) + " is " + show(bad->value) +
                             ": step skipped, parameters and states unchanged";
    return report;
  }
  std::optional<Real> clip;
  if (options.max_grad_norm > 0.0) {
    const Real norm = std::sqrt(sum_of_squares<Real>(list, p));
    report.grad_norm = static_cast<double>(norm);
    const Real coefficient = as<Real>(options.max_grad_norm) / (norm + as<Real>(kClipNormOffset));
    if (coefficient < Real(1) || std::isnan(coefficient)) {
      clip = coefficient;
      report.clip_coefficient = static_cast<double>(coefficient);
    }
  }
  update_all<Real>(h, p, list, t, lr, clip, options.seed);
  report.applied = true;
  return report;
}

// ---- Gradient accumulation -------------------------------------------------------------------------

double gradient_as_double(float g) { return g; }
double gradient_as_double(uint16_t bf16) { return precision::bf16_to_f32(bf16); }  // exact

template <class T>
void accumulate(const std::vector<std::span<const T>>& micro_batches, std::span<float> mean) {
  if (micro_batches.empty()) throw UsageError("gradient accumulation: no micro-batches");
  for (size_t b = 0; b < micro_batches.size(); ++b) {
    if (micro_batches[b].size() != mean.size()) {
      throw UsageError("gradient accumulation: micro-batch " + std::to_string(b) + " has " +
                       std::to_string(micro_batches[b].size()) + " elements, the mean " + std::to_string(mean.size()));
    }
  }
  const auto k = static_cast<double>(micro_batches.size());
  for (size_t j = 0; j < mean.size(); ++j) {
    double sum = 0.0;  // its roundings are 2^-29 of an fp32 ulp: the fp32 rounding below is the one that counts
    for (const auto& batch : micro_batches) sum += gradient_as_double(batch[j]);
    mean[j] = static_cast<float>(sum / k);
  }
}

}  // namespace

void check_tensor_list(const TensorList& list, Precision p, const Hyper& hyper) {
  const bool fp32 = p == Precision::fp32;
  const size_t n = fp32 ? list.grads_f32.size() : list.grads_bf16.size();
  if (fp32) {
    require_empty("grads_bf16", list.grads_bf16, p);
    require_empty("params_bf16", list.params_bf16, p);
    require_empty("master", list.master, p);
    require_empty("states_bf16", list.states_bf16, p);
    require_tensor_count("params_f32", list.params_f32, n);
    require_states("states_f32", list.states_f32, n, hyper);
  } else {
    require_empty("grads_f32", list.grads_f32, p);
    require_empty("params_f32", list.params_f32, p);
    require_tensor_count("params_bf16", list.params_bf16, n);
    if (p == Precision::bf16_master) {
      require_tensor_count("master", list.master, n);
      require_empty("states_bf16", list.states_bf16, p);
      require_states("states_f32", list.states_f32, n, hyper);
    } else {
      require_empty("master", list.master, p);
      require_empty("states_f32", list.states_f32, p);
      require_states("states_bf16", list.states_bf16, n, hyper);
    }
  }
  // Stochastic rounding numbers the stored tensors of each parameter tensor within 32 bits.
  if (n > UINT32_MAX / gauge::optim::kStochasticRoundingSlots) {
    throw UsageError("optimizer step: " + std::to_string(n) + " tensors are too many to key stochastic rounding");
  }
  for (size_t i = 0; i < n; ++i) {
    const size_t length = tensor_length(list, p, i);
    if (fp32) {
      require_length(i, "the parameter", list.params_f32[i].size(), length);
    } else {
      require_length(i, "the parameter", list.params_bf16[i].size(), length);
    }
    if (p == Precision::bf16_master) require_length(i, "the master copy", list.master[i].size(), length);
    for (const auto& state : list.states_f32) require_length(i, "a state", state[i].size(), length);
    for (const auto& state : list.states_bf16) require_length(i, "a state", state[i].size(), length);
  }
}

StepReport step(const Hyper& hyper, Precision precision, Math math, const TensorList& list, int64_t step, double lr,
                const StepOptions& options) {
  gauge::optim::validate(hyper);
  if (!std::isfinite(lr) || lr < 0.0) {
    throw UsageError("optimizer step: lr = " + show(lr) + " is negative or not finite");
  }
  if (step < 1) throw UsageError("optimizer step: step " + std::to_string(step) + " is below 1 (steps count from 1)");
  if (!std::isfinite(options.max_grad_norm) || options.max_grad_norm < 0.0) {
    throw UsageError("optimizer step: max_grad_norm = " + show(options.max_grad_norm) + " is negative or not finite");
  }
  check_tensor_list(list, precision, hyper);
  if (math == Math::fp64) return run_step<double>(hyper, precision, list, step, lr, options);
  return run_step<float>(hyper, precision, list, step, lr, options);
}

void accumulate_mean(const std::vector<std::span<const float>>& micro_batches, std::span<float> mean) {
  accumulate(micro_batches, mean);
}

void accumulate_mean(const std::vector<std::span<const uint16_t>>& micro_batches_bf16, std::span<float> mean) {
  accumulate(micro_batches_bf16, mean);
}

}  // namespace gauge::reference::optim
