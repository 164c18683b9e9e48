// The per-step scalars of the update kernels, computed on the host in double and rounded once to
// fp32 (plain C++: the CPU tests and the GPU test's emulator use the very same function).
#pragma once

#include <cmath>
#include <cstdint>

#include "optimized/optim/multi_tensor.h"
#include "reference/optim/config.h"

namespace gauge::optimized::optim {

struct StepScalars {
  float lr = 0;
  float weight_decay = 0;
  float eps = 0;
  // SGD / RMSprop momentum
  float momentum = 0;
  float dampening_complement = 1;  // 1 - dampening
  // AdaGrad: lr / (1 + (t - 1) lr_decay)
  float clr = 0;
  // RMSprop
  float alpha = 0;
  float one_minus_alpha = 0;
  // Adam / AdamW
  float beta1 = 0;
  float one_minus_beta1 = 0;
  float beta2 = 0;
  float one_minus_beta2 = 0;
  float step_size = 0;     // lr / (1 - b1^t)
  float bc2_sqrt = 1;      // sqrt(1 - b2^t)
  float decay_factor = 1;  // AdamW: 1 - lr wd
  // Launch-uniform switches (never per-element decisions).
  int use_weight_decay = 0;  // weight_decay != 0 (PyTorch skips the term entirely otherwise)
  int use_momentum = 0;      // SGD: momentum != 0; RMSprop: momentum > 0
  int nesterov = 0;
  int first_step = 0;  // SGD: step == 1, the momentum buffer is set to the gradient
  int centered = 0;
  int amsgrad = 0;
  int decoupled = 0;       // AdamW
  int momentum_slot = -1;  // RMSprop state slots
  int grad_avg_slot = -1;
};

inline StepScalars step_scalars(const gauge::optim::Hyper& h, int64_t step, double lr) {
  using gauge::optim::Algorithm;
  StepScalars s;
  const auto f = [](double x) { return static_cast<float>(x); };
  const double t = static_cast<double>(step);
  s.lr = f(lr);
  s.weight_decay = f(h.weight_decay);
  s.use_weight_decay = h.weight_decay != 0.0 ? 1 : 0;
  s.eps = f(h.eps);
  const StateIndex slots = state_index(h);
  switch (h.algorithm) {
    case Algorithm::sgd:
      s.momentum = f(h.momentum);
      s.dampening_complement = f(1.0 - h.dampening);
      s.use_momentum = h.momentum != 0.0 ? 1 : 0;
      s.nesterov = h.nesterov ? 1 : 0;
      s.first_step = step == 1 ? 1 : 0;
      break;
    case Algorithm::adagrad:
      s.clr = f(lr / (1.0 + (t - 1.0) * h.lr_decay));
      break;
    case Algorithm::rmsprop:
      s.alpha = f(h.alpha);
      s.one_minus_alpha = f(1.0 - h.alpha);
      s.momentum = f(h.momentum);
      s.use_momentum = h.momentum > 0.0 ? 1 : 0;
      s.centered = h.centered ? 1 : 0;
      s.momentum_slot = slots.momentum_buffer;
      s.grad_avg_slot = slots.grad_avg;
      break;
    case Algorithm::adam:
    case Algorithm::adamw: {
      const double bc1 = 1.0 - std::pow(h.beta1, t);
      const double bc2 = 1.0 - std::pow(h.beta2, t);
      s.beta1 = f(h.beta1);
      s.one_minus_beta1 = f(1.0 - h.beta1);
      s.beta2 = f(h.beta2);
      s.one_minus_beta2 = f(1.0 - h.beta2);
      s.step_size = f(lr / bc1);
      s.bc2_sqrt = f(std::sqrt(bc2));
      s.amsgrad = h.amsgrad ? 1 : 0;
      s.decoupled = h.algorithm == Algorithm::adamw ? 1 : 0;
      s.decay_factor = f(1.0 - lr * h.weight_decay);
      break;
    }
  }
  return s;
}

}  // namespace gauge::optimized::optim
