// Optimizer configuration: names, state lists and validation. No arithmetic on tensors lives here.
#include "reference/optim/config.h"

#include <cmath>
#include <sstream>

#include "harness/error.h"

namespace gauge::optim {
namespace {

// Shortest decimal that reads back as the same double, so the message shows the value the user gave.
std::string show(double value) {
  std::ostringstream out;
  out.precision(17);
  out << value;
  return out.str();
}

[[noreturn]] void reject(const std::string& what, const std::string& name, double value, const std::string& rule) {
  throw UsageError(what + ": " + name + " = " + show(value) + " " + rule);
}

void require_finite_non_negative(const std::string& what, const std::string& name, double value) {
  if (!std::isfinite(value)) reject(what, name, value, "is not finite");
  if (value < 0.0) reject(what, name, value, "is negative");
}

// PyTorch's betas, RMSprop's alpha: a decay factor must leave some weight for the new value.
void require_unit_interval_open_above(const std::string& what, const std::string& name, double value) {
  if (!(value >= 0.0 && value < 1.0)) reject(what, name, value, "is outside [0, 1)");
}

void require_unit_interval(const std::string& what, const std::string& name, double value) {
  if (!(value >= 0.0 && value <= 1.0)) reject(what, name, value, "is outside [0, 1]");
}

}  // namespace

int state_count(const Hyper& h) { return static_cast<int>(state_names(h).size()); }

std::vector<std::string> state_names(const Hyper& h) {
  switch (h.algorithm) {
    case Algorithm::sgd:
      if (h.momentum != 0.0) return {"momentum_buffer"};
      return {};
    case Algorithm::adagrad: return {"sum"};
    case Algorithm::rmsprop: {
      std::vector<std::string> names = {"square_avg"};
      if (h.momentum > 0.0) names.push_back("momentum_buffer");
      if (h.centered) names.push_back("grad_avg");
      return names;
    }
    case Algorithm::adam:
    case Algorithm::adamw: {
      std::vector<std::string> names = {"exp_avg", "exp_avg_sq"};
      if (h.amsgrad) names.push_back("max_exp_avg_sq");
      return names;
    }
  }
  throw UsageError("unknown optimizer algorithm " + std::to_string(static_cast<int>(h.algorithm)));
}

void validate(const Hyper& h) {
  const std::string what = "optimizer " + algorithm_name(h.algorithm);
  require_finite_non_negative(what, "lr", h.lr);
  require_finite_non_negative(what, "eps", h.eps);
  require_finite_non_negative(what, "weight_decay", h.weight_decay);
  switch (h.algorithm) {
    case Algorithm::sgd:
      require_unit_interval(what, "momentum", h.momentum);
      require_unit_interval(what, "dampening", h.dampening);
      if (h.nesterov && (h.momentum == 0.0 || h.dampening != 0.0)) {
        throw UsageError(what + ": nesterov needs momentum > 0 and dampening = 0 (momentum = " + show(h.momentum) +
                         ", dampening = " + show(h.dampening) + ")");
      }
      break;
    case Algorithm::adagrad:
      require_finite_non_negative(what, "lr_decay", h.lr_decay);
      require_finite_non_negative(what, "initial_accumulator_value", h.initial_accumulator_value);
      break;
    case Algorithm::rmsprop:
      require_unit_interval_open_above(what, "alpha", h.alpha);
      require_unit_interval(what, "momentum", h.momentum);
      break;
    case Algorithm::adam:
    case Algorithm::adamw:
      require_unit_interval_open_above(what, "beta1", h.beta1);
      require_unit_interval_open_above(what, "beta2", h.beta2);
      break;
  }
}

void validate(const Schedule& s) {
  if (s.warmup_steps < 0) throw UsageError("lr schedule: warmup_steps = " + std::to_string(s.warmup_steps) + " is negative");
  if (s.total_steps < 0) throw UsageError("lr schedule: total_steps = " + std::to_string(s.total_steps) + " is negative");
  require_finite_non_negative("lr schedule", "floor_lr", s.floor_lr);
  // A constant schedule never reaches its total; a decaying one must not end before warm-up does.
  if (s.after_warmup != ScheduleShape::constant && s.warmup_steps > s.total_steps) {
    throw UsageError("lr schedule: warmup_steps = " + std::to_string(s.warmup_steps) + " exceeds total_steps = " +
                     std::to_string(s.total_steps));
  }
}

std::string algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::sgd: return "sgd";
    case Algorithm::adagrad: return "adagrad";
    case Algorithm::rmsprop: return "rmsprop";
    case Algorithm::adam: return "adam";
    case Algorithm::adamw: return "adamw";
  }
  return "algorithm#" + std::to_string(static_cast<int>(a));
}

std::string precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::bf16_master: return "bf16_master";
    case Precision::bf16_stochastic: return "bf16_stochastic";
  }
  return "precision#" + std::to_string(static_cast<int>(p));
}

}  // namespace gauge::optim
